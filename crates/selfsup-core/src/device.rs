//! Device selection (`cpu`, `cuda`, `auto`).
//!
//! Rust links with `--as-needed`, so nothing in a binary references
//! `libtorch_cuda.so` and the dynamic loader never loads it: libtorch then
//! reports no CUDA even on a GPU machine. [`DeviceChoice::resolve`] therefore
//! `dlopen`s the library (with `RTLD_GLOBAL`, so its kernels register with
//! the dispatcher) before the first CUDA query. On a CPU-only machine, or with a
//! CPU-only libtorch, the `dlopen` simply fails and nothing changes.
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// Where to train, as written in configs and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    Cpu,
    Cuda,
    /// CUDA when a GPU is visible, otherwise CPU.
    #[default]
    Auto,
}

impl std::str::FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            "auto" => Ok(Self::Auto),
            other => Err(Error::Config(format!(
                "unknown device '{other}' (expected cpu, cuda or auto)"
            ))),
        }
    }
}

static CUDA_LOADED: OnceLock<bool> = OnceLock::new();

/// Loads libtorch's CUDA library into the process, once. Returns whether it is loaded.
pub fn load_cuda_library() -> bool {
    *CUDA_LOADED.get_or_init(|| {
        [c"libtorch_cuda.so", c"libtorch_cuda.dylib"]
            .iter()
            .any(|name| {
                // SAFETY: dlopen with a valid NUL-terminated name; the handle is kept
                // for the life of the process on purpose (never dlclose'd).
                let handle =
                    unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
                !handle.is_null()
            })
    })
}

impl DeviceChoice {
    /// Resolves the choice to a libtorch device; `cuda` without a GPU is an error.
    pub fn resolve(self) -> Result<tch::Device> {
        self.resolve_on(0)
    }

    /// As [`DeviceChoice::resolve`], on GPU `local_rank` (modulo the GPU
    /// count) for rank `local_rank` of a data-parallel run on one host.
    pub fn resolve_on(self, local_rank: usize) -> Result<tch::Device> {
        if self == Self::Cpu {
            return Ok(tch::Device::Cpu);
        }
        load_cuda_library();
        let available = tch::Cuda::is_available();
        match (self, available) {
            (Self::Cuda, true) | (Self::Auto, true) => Ok(tch::Device::Cuda(
                local_rank % tch::Cuda::device_count().max(1) as usize,
            )),
            (Self::Auto, false) => Ok(tch::Device::Cpu),
            (Self::Cuda, false) => Err(Error::Device(
                "--device cuda was asked for, but libtorch sees no CUDA device \
                 (is this a GPU machine with a CUDA build of libtorch on LD_LIBRARY_PATH?)"
                    .into(),
            )),
            (Self::Cpu, _) => unreachable!("handled above"),
        }
    }
}

/// A one-line description of a device for logs and summaries.
pub fn describe(device: tch::Device) -> String {
    match device {
        tch::Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_resolves_cpu() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert!("tpu".parse::<DeviceChoice>().is_err());
        assert_eq!(DeviceChoice::Cpu.resolve().unwrap(), tch::Device::Cpu);
        // auto never fails: it falls back to the CPU.
        DeviceChoice::Auto.resolve().unwrap();
    }
}
