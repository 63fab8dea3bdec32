//! What `selfsup-c10d` compiles against beside libtorch: gloo's headers
//! (the PyPI wheel has c10d's but not gloo's) and, for its NCCL process
//! group, the CUDA headers the wheel's nvidia packages leave out.
use crate::paths::cache_dir;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's package with gloo's headers.
const GLOO_PACKAGE: &str = "libgloo-dev";
/// The CUDA 13.0 header packages that complete the wheel's `nvidia/cu13/include`
/// (host_config.h and `nv/target`), pinned to the runtime torch 2.11.0 ships.
pub const CUDA_HEADER_PACKAGES: [&str; 2] =
    ["nvidia-cuda-crt==13.0.88", "nvidia-cuda-cccl==13.0.85"];

/// `None` when the system has gloo's headers, else the include folder of
/// Debian's libgloo-dev unpacked (once) under the cache.
pub fn ensure_gloo_headers() -> Result<Option<PathBuf>> {
    if Path::new("/usr/include/gloo/allreduce.h").exists() {
        return Ok(None);
    }
    let root = cache_dir().join("gloo-headers");
    let include = root.join("usr/include");
    if include.join("gloo/allreduce.h").exists() {
        return Ok(Some(include));
    }
    eprintln!(
        "xtask: unpacking {GLOO_PACKAGE} (gloo's headers) into {}",
        root.display()
    );
    let work = cache_dir().join("downloads/gloo");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let download = || {
        Command::new("apt-get")
            .args(["download", "-q", GLOO_PACKAGE])
            .current_dir(&work)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !download() {
        let updated = Command::new("apt-get")
            .args(["update", "-q"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !updated || !download() {
            bail!(
                "selfsup-c10d needs gloo's headers: `apt-get download {GLOO_PACKAGE}` failed \
                 (Debian/Ubuntu with apt-get; or install {GLOO_PACKAGE}, or set \
                 SELFSUP_GLOO_INCLUDE to a folder holding gloo/allreduce.h)"
            );
        }
    }
    let deb = std::fs::read_dir(&work)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", work.display()))?;
    crate::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
    if !include.join("gloo/allreduce.h").exists() {
        bail!("{} has no gloo/allreduce.h", deb.display());
    }
    Ok(Some(include))
}

/// Installs [`CUDA_HEADER_PACKAGES`] into the libtorch venv when its CUDA
/// headers are incomplete. When that fails, selfsup-c10d builds without NCCL
/// (build.rs checks the same files) and says so.
pub fn ensure_cuda_headers(venv: &Path) -> Result<()> {
    let Some(include) = cu13_include(venv) else {
        return Ok(()); // not a CUDA wheel: no NCCL to build
    };
    if include.join("crt/host_config.h").exists() && include.join("nv/target").exists() {
        return Ok(());
    }
    eprintln!(
        "xtask: adding CUDA 13.0 headers to {} (for NCCL)",
        venv.display()
    );
    let ok = crate::venv::pip_install(venv, &CUDA_HEADER_PACKAGES.map(String::from));
    if let Err(e) = ok {
        eprintln!("xtask: {e:#}; selfsup-c10d will build without NCCL (Gloo only)");
    }
    Ok(())
}

fn cu13_include(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    lib.filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/nvidia/cu13/include"))
        .find(|p| p.join("cuda_runtime.h").exists())
}
