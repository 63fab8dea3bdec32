//! Device selection (`cpu`, `cuda`, `cuda:N`, `auto`).
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
/// Written as `cpu`, `cuda`, `cuda:N` or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    Cpu,
    Cuda,
    /// GPU number N (`cuda:N`), whatever the process's rank.
    CudaIndex(usize),
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
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(Self::CudaIndex(i)),
                _ => Err(Error::Config(format!(
                    "unknown device '{other}' (expected cpu, cuda, cuda:N or auto)"
                ))),
            },
        }
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<DeviceChoice> for String {
    fn from(d: DeviceChoice) -> String {
        match d {
            DeviceChoice::Cpu => "cpu".into(),
            DeviceChoice::Cuda => "cuda".into(),
            DeviceChoice::CudaIndex(i) => format!("cuda:{i}"),
            DeviceChoice::Auto => "auto".into(),
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
            (Self::CudaIndex(i), true) => {
                let count = tch::Cuda::device_count();
                if i64::try_from(i).is_ok_and(|i| i < count) {
                    Ok(tch::Device::Cuda(i))
                } else {
                    Err(Error::Device(format!(
                        "--device cuda:{i} was asked for, but libtorch sees {count} CUDA device(s) \
                         (numbered from 0)"
                    )))
                }
            }
            (Self::Auto, false) => Ok(tch::Device::Cpu),
            (Self::Cuda | Self::CudaIndex(_), false) => Err(Error::Device(
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
        assert_eq!(
            "cuda:1".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::CudaIndex(1)
        );
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        assert!("cuda:".parse::<DeviceChoice>().is_err());
        for d in ["cpu", "cuda", "cuda:3", "auto"] {
            assert_eq!(String::from(d.parse::<DeviceChoice>().unwrap()), d);
        }
        assert_eq!(DeviceChoice::Cpu.resolve().unwrap(), tch::Device::Cpu);
        // auto never fails: it falls back to the CPU.
        DeviceChoice::Auto.resolve().unwrap();
    }
}
