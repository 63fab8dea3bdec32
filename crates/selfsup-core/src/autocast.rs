//! The dtype of libtorch's CUDA autocast.
//!
//! tch 0.24 turns autocast on and off but cannot choose its dtype, which
//! defaults to float16 (and float16 without loss scaling can underflow).
//! libtorch exports `at::autocast::set_autocast_dtype(DeviceType, ScalarType)`
//! and its getter; both take and return one-byte enums, so they are called
//! here through `dlsym` on their mangled names. No C++ shim, no extra link
//! step: the symbols live in `libtorch_cpu.so`, which every selfsup binary
//! loads.
use crate::{Error, Result};
use std::ffi::CStr;

/// `c10::DeviceType::CUDA`.
const DEVICE_CUDA: i8 = 1;

/// The dtypes autocast can compute in (values of `c10::ScalarType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum AutocastDtype {
    Float16 = 5,
    BFloat16 = 15,
}

const SET: &CStr = c"_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE";
const GET: &CStr = c"_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE";

fn symbol(name: &CStr) -> Result<*mut libc::c_void> {
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

/// Makes CUDA autocast compute in `dtype`.
pub fn set_cuda_autocast_dtype(dtype: AutocastDtype) -> Result<()> {
    // Make sure libtorch is loaded before looking it up.
    let _ = tch::Cuda::is_available();
    let f = symbol(SET)?;
    // SAFETY: the symbol is `void set_autocast_dtype(c10::DeviceType, c10::ScalarType)`;
    // both enums are `int8_t`-based and passed in integer registers like `i8`.
    let f: extern "C" fn(i8, i8) = unsafe { std::mem::transmute(f) };
    f(DEVICE_CUDA, dtype as i8);
    Ok(())
}

/// The dtype CUDA autocast computes in now (as a `c10::ScalarType` value).
pub fn cuda_autocast_dtype() -> Result<i8> {
    let _ = tch::Cuda::is_available();
    let f = symbol(GET)?;
    // SAFETY: the symbol is `c10::ScalarType get_autocast_dtype(c10::DeviceType)`.
    let f: extern "C" fn(i8) -> i8 = unsafe { std::mem::transmute(f) };
    Ok(f(DEVICE_CUDA))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
