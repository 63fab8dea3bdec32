//! libtorch's autocast: its dtype, and regions that must run in float32.
//!
//! tch 0.24 turns CUDA autocast on and off but cannot choose its dtype, which
//! defaults to float16 (and float16 without loss scaling can underflow), and
//! it cannot touch CPU autocast at all. libtorch exports
//! `at::autocast::{set,get}_autocast_dtype(DeviceType, ScalarType)`,
//! `at::autocast::{set,is}_autocast_enabled(DeviceType, bool)` and the nesting
//! / cache functions; they take and return one-byte enums and `bool`s, so they
//! are called here through `dlsym` on their mangled names. No C++ shim, no
//! extra link step: the symbols live in `libtorch_cpu.so`, which every selfsup
//! binary loads.
//!
//! [`full_precision`] runs a closure with autocast off on every device:
//! losses whose logits are cosine similarities divided by a small temperature
//! (InfoNCE, DINO, SwAV's Sinkhorn-Knopp), Gumbel noise and colour-space
//! targets are computed there, in float32, because bfloat16's 8-bit mantissa
//! makes them wrong by percents. [`with_autocast`] turns autocast on for one
//! device (the CPU too), which is how the tests prove that the float32 regions
//! hold on a machine without a GPU.
use crate::{Error, Result};
use std::ffi::CStr;
use std::sync::OnceLock;

/// `c10::DeviceType::CPU`.
const DEVICE_CPU: i8 = 0;
/// `c10::DeviceType::CUDA`.
const DEVICE_CUDA: i8 = 1;

/// The dtypes autocast can compute in (values of `c10::ScalarType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum AutocastDtype {
    Float16 = 5,
    BFloat16 = 15,
}

/// The devices whose autocast state [`with_autocast`] can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutocastDevice {
    Cpu,
    Cuda,
}

impl AutocastDevice {
    fn code(self) -> i8 {
        match self {
            Self::Cpu => DEVICE_CPU,
            Self::Cuda => DEVICE_CUDA,
        }
    }
}

const SET_DTYPE: &CStr = c"_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE";
const GET_DTYPE: &CStr = c"_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE";
const SET_ENABLED: &CStr = c"_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb";
const IS_ENABLED: &CStr = c"_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE";
const INCREMENT_NESTING: &CStr = c"_ZN2at8autocast17increment_nestingEv";
const DECREMENT_NESTING: &CStr = c"_ZN2at8autocast17decrement_nestingEv";
const CLEAR_CACHE: &CStr = c"_ZN2at8autocast11clear_cacheEv";

fn symbol(name: &CStr) -> Result<*mut libc::c_void> {
    // The symbols are libtorch_cpu's, which the binary links: nothing to load
    // (and no CUDA query here: CPU runs never load libtorch_cuda for this).
    // SAFETY: dlsym with the default handle and a valid NUL-terminated name.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    if p.is_null() {
        return Err(Error::Device(format!(
            "libtorch does not export {} (is this libtorch 2.11?)",
            name.to_string_lossy()
        )));
    }
    Ok(p)
}

/// libtorch's autocast functions, looked up once.
#[derive(Clone, Copy)]
struct Api {
    set_dtype: extern "C" fn(i8, i8),
    get_dtype: extern "C" fn(i8) -> i8,
    set_enabled: extern "C" fn(i8, bool),
    is_enabled: extern "C" fn(i8) -> bool,
    increment_nesting: extern "C" fn() -> i32,
    decrement_nesting: extern "C" fn() -> i32,
    clear_cache: extern "C" fn(),
}

fn lookup() -> std::result::Result<Api, String> {
    let get = |name: &CStr| symbol(name).map_err(|e| e.to_string());
    // SAFETY: each symbol is the libtorch function of that mangled name:
    // `void set_autocast_dtype(c10::DeviceType, c10::ScalarType)`,
    // `c10::ScalarType get_autocast_dtype(c10::DeviceType)`,
    // `void set_autocast_enabled(c10::DeviceType, bool)`,
    // `bool is_autocast_enabled(c10::DeviceType)`, `int increment_nesting()`,
    // `int decrement_nesting()` and `void clear_cache()`. Both enums are
    // `int8_t`-based and, like `bool`, passed in integer registers.
    unsafe {
        Ok(Api {
            set_dtype: std::mem::transmute::<*mut libc::c_void, extern "C" fn(i8, i8)>(get(
                SET_DTYPE,
            )?),
            get_dtype: std::mem::transmute::<*mut libc::c_void, extern "C" fn(i8) -> i8>(get(
                GET_DTYPE,
            )?),
            set_enabled: std::mem::transmute::<*mut libc::c_void, extern "C" fn(i8, bool)>(get(
                SET_ENABLED,
            )?),
            is_enabled: std::mem::transmute::<*mut libc::c_void, extern "C" fn(i8) -> bool>(get(
                IS_ENABLED,
            )?),
            increment_nesting: std::mem::transmute::<*mut libc::c_void, extern "C" fn() -> i32>(
                get(INCREMENT_NESTING)?,
            ),
            decrement_nesting: std::mem::transmute::<*mut libc::c_void, extern "C" fn() -> i32>(
                get(DECREMENT_NESTING)?,
            ),
            clear_cache: std::mem::transmute::<*mut libc::c_void, extern "C" fn()>(get(
                CLEAR_CACHE,
            )?),
        })
    }
}

fn api() -> Result<Api> {
    static API: OnceLock<std::result::Result<Api, String>> = OnceLock::new();
    API.get_or_init(lookup)
        .clone()
        .map_err(|m| Error::Device(m.trim_start_matches("device: ").to_string()))
}

/// Makes CUDA autocast compute in `dtype`.
pub fn set_cuda_autocast_dtype(dtype: AutocastDtype) -> Result<()> {
    (api()?.set_dtype)(DEVICE_CUDA, dtype as i8);
    Ok(())
}

/// The dtype CUDA autocast computes in now (as a `c10::ScalarType` value).
pub fn cuda_autocast_dtype() -> Result<i8> {
    Ok((api()?.get_dtype)(DEVICE_CUDA))
}

/// Whether autocast is on for `device` in this thread.
pub fn is_enabled(device: AutocastDevice) -> Result<bool> {
    Ok((api()?.is_enabled)(device.code()))
}

/// Puts back the autocast state a region changed, also when it unwinds.
struct Restore {
    api: Api,
    /// `(device, was enabled)` for every device whose state was changed.
    enabled: Vec<(i8, bool)>,
    /// `(device, dtype)` to put back.
    dtype: Option<(i8, i8)>,
    /// The region incremented the nesting count.
    nested: bool,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if self.nested && (self.api.decrement_nesting)() == 0 {
            // Leaving the outermost autocast region: the cached low-precision
            // copies of the weights are stale after the optimiser step.
            (self.api.clear_cache)();
        }
        for &(device, on) in &self.enabled {
            (self.api.set_enabled)(device, on);
        }
        if let Some((device, dtype)) = self.dtype {
            (self.api.set_dtype)(device, dtype);
        }
    }
}

/// Runs `f` with autocast off on the CPU and on CUDA, then puts the previous
/// state back (also when `f` panics). Tensors made inside still carry the
/// dtype their inputs had: cast bfloat16 inputs with `to_kind(Kind::Float)`.
/// Without libtorch's autocast symbols (never with libtorch 2.11) autocast
/// cannot have been turned on by selfsup either, and `f` simply runs.
pub fn full_precision<T>(f: impl FnOnce() -> T) -> T {
    let Ok(api) = api() else {
        return f();
    };
    let mut enabled = Vec::new();
    for device in [DEVICE_CPU, DEVICE_CUDA] {
        if (api.is_enabled)(device) {
            (api.set_enabled)(device, false);
            enabled.push((device, true));
        }
    }
    let _restore = Restore {
        api,
        enabled,
        dtype: None,
        nested: false,
    };
    f()
}

/// Runs `f` under autocast on `device`, computing in `dtype`, then puts the
/// previous state (enabled flag and dtype) back and, when this was the
/// outermost autocast region, clears libtorch's cache of cast weights.
pub fn with_autocast<T>(
    device: AutocastDevice,
    dtype: AutocastDtype,
    f: impl FnOnce() -> T,
) -> Result<T> {
    let api = api()?;
    let code = device.code();
    let restore = Restore {
        api,
        enabled: vec![(code, (api.is_enabled)(code))],
        dtype: Some((code, (api.get_dtype)(code))),
        nested: true,
    };
    (api.set_dtype)(code, dtype as i8);
    (api.set_enabled)(code, true);
    (api.increment_nesting)();
    let out = f();
    drop(restore);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn sets_and_reads_back_the_cuda_autocast_dtype() {
        set_cuda_autocast_dtype(AutocastDtype::BFloat16).unwrap();
        assert_eq!(
            cuda_autocast_dtype().unwrap(),
            AutocastDtype::BFloat16 as i8
        );
        set_cuda_autocast_dtype(AutocastDtype::Float16).unwrap();
        assert_eq!(cuda_autocast_dtype().unwrap(), AutocastDtype::Float16 as i8);
        set_cuda_autocast_dtype(AutocastDtype::BFloat16).unwrap();
    }

    #[test]
    fn cpu_autocast_computes_matmul_in_bf16_and_full_precision_undoes_it() {
        let a = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([8, 3], (Kind::Float, Device::Cpu));
        assert!(!is_enabled(AutocastDevice::Cpu).unwrap());
        let (low, full, inner_state) =
            with_autocast(AutocastDevice::Cpu, AutocastDtype::BFloat16, || {
                let low = a.matmul(&b);
                let (full, state) =
                    full_precision(|| (a.matmul(&b), is_enabled(AutocastDevice::Cpu).unwrap()));
                assert!(is_enabled(AutocastDevice::Cpu).unwrap(), "restored inside");
                (low, full, state)
            })
            .unwrap();
        assert_eq!(low.kind(), Kind::BFloat16);
        assert_eq!(full.kind(), Kind::Float);
        assert!(!inner_state);
        assert!(!is_enabled(AutocastDevice::Cpu).unwrap(), "restored after");
        let exact = a.matmul(&b);
        assert!(full.allclose(&exact, 0.0, 0.0, false));
    }

    #[test]
    fn full_precision_restores_autocast_after_a_panic() {
        with_autocast(AutocastDevice::Cpu, AutocastDtype::BFloat16, || {
            let r = std::panic::catch_unwind(|| full_precision(|| panic!("inside")));
            assert!(r.is_err());
            assert!(is_enabled(AutocastDevice::Cpu).unwrap());
        })
        .unwrap();
        assert!(!is_enabled(AutocastDevice::Cpu).unwrap());
    }
}
