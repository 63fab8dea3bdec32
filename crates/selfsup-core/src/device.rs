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

/// Whether `libtorch_cuda` is loaded, or why it could not be.
static CUDA_LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// Loads libtorch's CUDA library into the process, once. Returns whether it is loaded.
///
/// libtorch decides whether CUDA exists at its first CUDA query: call this
/// (or, better, [`cuda_available`] / [`cuda_device_count`], which call it)
/// before anything asks libtorch about CUDA.
pub fn load_cuda_library() -> bool {
    CUDA_LOADED
        .get_or_init(|| {
            let mut errors = Vec::new();
            for name in [c"libtorch_cuda.so", c"libtorch_cuda.dylib"] {
                // SAFETY: dlopen with a valid NUL-terminated name; the handle is kept
                // for the life of the process on purpose (never dlclose'd).
                let handle =
                    unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
                if !handle.is_null() {
                    return Ok(());
                }
                // SAFETY: dlerror returns NULL or a NUL-terminated message owned by libc.
                let msg = unsafe { libc::dlerror() };
                if !msg.is_null() {
                    // SAFETY: non-null, NUL-terminated (checked above).
                    let msg = unsafe { std::ffi::CStr::from_ptr(msg) };
                    errors.push(msg.to_string_lossy().into_owned());
                }
            }
            Err(errors.first().cloned().unwrap_or_default())
        })
        .is_ok()
}

/// Why `libtorch_cuda` is not loaded (`dlerror`'s text), or `None` when it
/// is, or when no load was tried yet.
pub fn cuda_load_error() -> Option<String> {
    CUDA_LOADED.get().and_then(|r| r.clone().err())
}

/// Every CUDA query of selfsup goes through here: the CUDA library is loaded
/// first, so that libtorch's answer, fixed at the first query, counts it.
fn cuda_query<T>(query: impl FnOnce() -> T) -> T {
    load_cuda_library();
    query()
}

/// Whether libtorch sees a CUDA device (after loading `libtorch_cuda`).
/// Use this, never `tch::Cuda::is_available` or `tch::Device::cuda_if_available`.
pub fn cuda_available() -> bool {
    cuda_query(tch::Cuda::is_available)
}

/// How many CUDA devices libtorch sees (after loading `libtorch_cuda`).
/// Use this, never `tch::Cuda::device_count`.
pub fn cuda_device_count() -> usize {
    cuda_query(|| usize::try_from(tch::Cuda::device_count()).unwrap_or(0))
}

/// The GPU of local rank `local_rank` when `local_ranks` ranks run on this
/// host and it has `gpu_count` GPUs: GPU `local_rank`. More local ranks than
/// GPUs are refused (two NCCL ranks cannot share a GPU, and two ranks on one
/// GPU only compete for its memory), naming both fixes.
pub fn gpu_of_local_rank(local_rank: usize, local_ranks: usize, gpu_count: usize) -> Result<usize> {
    let local_ranks = local_ranks.max(local_rank + 1);
    if local_ranks > gpu_count {
        return Err(Error::Device(format!(
            "{local_ranks} ranks on this host but libtorch sees {gpu_count} CUDA device(s): \
             each rank needs a GPU of its own; start at most {gpu_count} rank(s) per host \
             (--nproc {gpu_count}) or train on the CPU with --device cpu"
        )));
    }
    Ok(local_rank)
}

impl DeviceChoice {
    /// Resolves the choice to a libtorch device; `cuda` without a GPU is an error.
    pub fn resolve(self) -> Result<tch::Device> {
        self.resolve_local(0, 1)
    }

    /// As [`DeviceChoice::resolve`], for rank `local_rank` of a data-parallel
    /// run on one host, with no more local ranks than `local_rank + 1` known.
    pub fn resolve_on(self, local_rank: usize) -> Result<tch::Device> {
        self.resolve_local(local_rank, local_rank + 1)
    }

    /// As [`DeviceChoice::resolve`], for rank `local_rank` of `local_ranks`
    /// data-parallel ranks on this host: `cuda` / `auto` (with a GPU) give
    /// rank `r` GPU `r`, and more local ranks than GPUs are an error
    /// ([`gpu_of_local_rank`]). `cuda:N` is GPU N whatever the rank.
    pub fn resolve_local(self, local_rank: usize, local_ranks: usize) -> Result<tch::Device> {
        if self == Self::Cpu {
            return Ok(tch::Device::Cpu);
        }
        let available = cuda_available();
        match (self, available) {
            (Self::Cuda, true) | (Self::Auto, true) => Ok(tch::Device::Cuda(gpu_of_local_rank(
                local_rank,
                local_ranks,
                cuda_device_count(),
            )?)),
            (Self::CudaIndex(i), true) => {
                let count = cuda_device_count();
                if i < count {
                    Ok(tch::Device::Cuda(i))
                } else {
                    Err(Error::Device(format!(
                        "--device cuda:{i} was asked for, but libtorch sees {count} CUDA device(s) \
                         (numbered from 0); use --device cuda:0 .. cuda:{} or --device cpu",
                        count.saturating_sub(1)
                    )))
                }
            }
            (Self::Auto, false) => Ok(tch::Device::Cpu),
            (Self::Cuda | Self::CudaIndex(_), false) => Err(no_cuda_error(self)),
            (Self::Cpu, _) => Ok(tch::Device::Cpu),
        }
    }
}

/// The one-line error for a CUDA device asked for where there is none.
fn no_cuda_error(choice: DeviceChoice) -> Error {
    let asked = String::from(choice);
    let cause = match cuda_load_error() {
        Some(why) => format!(
            "this libtorch has no CUDA (libtorch_cuda could not be loaded: {})",
            why.lines().next().unwrap_or("").trim()
        ),
        None => "libtorch sees no CUDA device (no GPU, no NVIDIA driver, or \
                 CUDA_VISIBLE_DEVICES hides them)"
            .into(),
    };
    Error::Device(format!(
        "\"{asked}\" was asked for (--device or the config's `device` key), but {cause}; \
         run with --device cpu (or auto), or on a GPU machine with a CUDA build of libtorch \
         on LD_LIBRARY_PATH"
    ))
}

/// The one-line error, naming cause and fix, for a libtorch failure that is
/// a device problem (the GPU out of memory, no usable CUDA), from libtorch's
/// message (a `TchError`'s text or a panic's payload); `None` for any other
/// failure. Long C++ messages and their backtraces are cut to the first line.
pub fn explain_torch_failure(message: &str) -> Option<String> {
    let lower = message.to_ascii_lowercase();
    let first: String = message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    let oom = lower.contains("cuda out of memory")
        || lower.contains("cuda error: out of memory")
        || lower.contains("cublas_status_alloc_failed");
    if oom {
        return Some(format!(
            "the GPU ran out of memory ({first}); use a smaller batch (--batch-size) or --device cpu"
        ));
    }
    let no_cuda = lower.contains("no cuda gpus are available")
        || lower.contains("found no nvidia driver")
        || lower.contains("torch not compiled with cuda")
        || lower.contains("cuda driver version is insufficient");
    no_cuda.then(|| {
        format!(
            "CUDA cannot be used ({first}); run with --device cpu (or auto), or fix the NVIDIA \
             driver / CUDA libtorch"
        )
    })
}

/// Runs `f`; a libtorch failure inside it that is a device problem (tch's
/// panicking calls panic with libtorch's text: the GPU out of memory, no
/// usable CUDA) becomes [`Error::Device`] with cause and fix
/// ([`explain_torch_failure`]). Any other panic unwinds on unchanged: it is
/// a bug, not a device problem.
pub fn guard_device_failure<T>(f: impl FnOnce() -> T) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => Ok(v),
        Err(payload) => match explain_torch_failure(
            &crate::error::panic_message(payload.as_ref()).unwrap_or_default(),
        ) {
            Some(line) => Err(Error::Device(line)),
            None => std::panic::resume_unwind(payload),
        },
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

    #[test]
    fn cuda_queries_load_the_cuda_library_first() {
        // The query runs after the loader has decided (loaded or not).
        assert!(cuda_query(|| CUDA_LOADED.get().is_some()));
        let _ = cuda_available();
        assert!(CUDA_LOADED.get().is_some());
    }

    /// No code of the workspace asks libtorch about CUDA except through
    /// `cuda_available` / `cuda_device_count` (which load the library first).
    #[test]
    fn no_direct_cuda_query_anywhere_in_the_workspace() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let forbidden = [
            ["Cuda::", "is_available"].concat(),
            ["Cuda::", "device_count"].concat(),
            ["Cuda::", "cudnn_is_available"].concat(),
            ["cuda_if", "_available"].concat(),
        ];
        let mut offenders = Vec::new();
        let mut dirs = vec![root.join("crates"), root.join("xtask")];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|x| x == "rs")
                    // device.rs holds the sanctioned calls.
                    && !path.ends_with("selfsup-core/src/device.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    for f in &forbidden {
                        if text.contains(f.as_str()) {
                            offenders.push(format!("{}: {f}", path.display()));
                        }
                    }
                }
            }
        }
        assert!(offenders.is_empty(), "direct CUDA queries: {offenders:?}");
    }

    #[test]
    fn device_failures_are_explained_in_one_line() {
        let oom = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity \
                   of 79.10 GiB of which 1.2 GiB is free.\nException raised from malloc at \
                   /pytorch/c10/cuda/CUDACachingAllocator.cpp:1000 (most recent call first):\n\
                   frame #0: c10::Error::Error(...)";
        let e = explain_torch_failure(oom).unwrap();
        assert!(
            e.contains("--batch-size") && e.contains("--device cpu"),
            "{e}"
        );
        assert!(e.contains("Tried to allocate 2.00 GiB"), "{e}");
        assert!(!e.contains('\n') && !e.contains("frame #0"), "{e}");
        let e = explain_torch_failure("CUDA error: no CUDA GPUs are available\nframe #1").unwrap();
        assert!(e.contains("--device cpu") && !e.contains('\n'), "{e}");
        assert!(explain_torch_failure("shape '[2, 3]' is invalid for input of size 5").is_none());
    }

    #[test]
    fn more_local_ranks_than_gpus_are_refused() {
        assert_eq!(gpu_of_local_rank(0, 1, 1).unwrap(), 0);
        assert_eq!(gpu_of_local_rank(1, 2, 2).unwrap(), 1);
        assert_eq!(gpu_of_local_rank(3, 4, 8).unwrap(), 3);
        for (rank, ranks, gpus) in [(0, 2, 1), (1, 2, 1), (0, 1, 0), (2, 1, 2)] {
            let e = gpu_of_local_rank(rank, ranks, gpus)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("--nproc {gpus}")), "{e}");
            assert!(e.contains("--device cpu"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    /// On a machine without a GPU (this test's), `cuda` fails with one line
    /// that names the cause and `--device cpu`; with a GPU it resolves.
    #[test]
    fn cuda_without_a_gpu_is_one_line_naming_the_fix() {
        for choice in [DeviceChoice::Cuda, DeviceChoice::CudaIndex(0)] {
            match choice.resolve() {
                Ok(d) => assert!(cuda_available() && d.is_cuda()),
                Err(e) => {
                    let e = e.to_string();
                    assert!(!cuda_available());
                    assert!(e.contains("--device cpu"), "{e}");
                    assert!(e.contains("no CUDA"), "{e}");
                    assert!(!e.contains('\n'), "{e}");
                }
            }
        }
    }
}
