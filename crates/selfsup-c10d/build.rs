//! Compiles the C++ shim against the libtorch that torch-sys links (its lib
//! folder arrives as `DEP_TCH_LIBTORCH_LIB`) and gloo's headers, which the
//! PyPI wheel lacks: `SELFSUP_GLOO_INCLUDE` (what `cargo xtask` sets, from
//! Debian's libgloo-dev unpacked into ~/.cache/selfsup) or /usr/include.
//! NCCL is compiled, into `libselfsup_c10d_nccl.so` (loaded at run time, only
//! by runs that ask for NCCL), when libtorch_cuda and the NCCL and CUDA headers
//! of the wheel's nvidia packages are present, unless `SELFSUP_NO_NCCL=1`.
use std::path::{Path, PathBuf};

fn main() {
    for var in [
        "DEP_TCH_LIBTORCH_LIB",
        "SELFSUP_GLOO_INCLUDE",
        "SELFSUP_NO_NCCL",
        "LIBTORCH_CXX11_ABI",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    for f in ["cpp/c10d_shim.cpp", "cpp/c10d_nccl.cpp", "cpp/c10d_shim.h"] {
        println!("cargo:rerun-if-changed={f}");
    }
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys did not report its libtorch lib folder (DEP_TCH_LIBTORCH_LIB)"),
    );
    let root = lib
        .parent()
        .expect("libtorch lib folder has a parent")
        .to_path_buf();
    let gloo = gloo_include();
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());

    let base = || {
        let mut build = cc::Build::new();
        build
            .cpp(true)
            .pic(true)
            .warnings(false)
            .include(root.join("include"))
            .include(root.join("include/torch/csrc/api/include"))
            .include(&gloo)
            .flag("-std=c++17")
            .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
            .flag("-DGLOG_USE_GLOG_EXPORT")
            .define("USE_C10D_GLOO", None);
        build
    };
    // NCCL lives in a shared library of its own, dlopen'ed when a run asks for
    // it: linking libtorch_cuda into the binaries would make every binary need
    // libnccl.so.2 and the CUDA runtime just to start.
    if let Some(dirs) = nccl_includes(&lib) {
        let mut nccl = base();
        nccl.define("USE_C10D_NCCL", None)
            .define("USE_CUDA", None)
            .file("cpp/c10d_nccl.cpp");
        for d in dirs {
            nccl.include(d);
        }
        let objects = nccl.compile_intermediates();
        let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        let so = out_dir.join("libselfsup_c10d_nccl.so");
        let status = nccl
            .get_compiler()
            .to_command()
            .arg("-shared")
            .args(&objects)
            .arg("-o")
            .arg(&so)
            .arg(format!("-L{}", lib.display()))
            .arg("-Wl,--no-as-needed")
            .args(["-ltorch_cuda", "-lc10_cuda", "-ltorch_cpu", "-lc10"])
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .status()
            .expect("running the C++ compiler to link libselfsup_c10d_nccl.so");
        assert!(status.success(), "linking {} failed", so.display());
        println!("cargo:rustc-env=SELFSUP_C10D_NCCL_LIB={}", so.display());
        println!("cargo:rustc-cfg=selfsup_nccl");
    }
    println!("cargo::rustc-check-cfg=cfg(selfsup_nccl)");
    base().file("cpp/c10d_shim.cpp").compile("selfsup_c10d");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=torch_cpu");
    println!("cargo:rustc-link-lib=c10");
}

fn gloo_include() -> PathBuf {
    let candidates: Vec<PathBuf> = std::env::var_os("SELFSUP_GLOO_INCLUDE")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/usr/include")])
        .collect();
    for dir in &candidates {
        if dir.join("gloo/allreduce.h").exists() {
            return dir.clone();
        }
    }
    panic!(
        "selfsup-c10d needs gloo's headers (gloo/allreduce.h), looked in {candidates:?}. \
         `cargo xtask setup` unpacks Debian's libgloo-dev into ~/.cache/selfsup and sets \
         SELFSUP_GLOO_INCLUDE; or install it (apt-get install libgloo-dev)."
    );
}

/// The include folders NCCL's process group needs, when this libtorch has CUDA.
fn nccl_includes(lib: &Path) -> Option<Vec<PathBuf>> {
    if std::env::var("SELFSUP_NO_NCCL").is_ok_and(|v| v == "1") {
        return None;
    }
    if !lib.join("libtorch_cuda.so").exists() {
        return None;
    }
    // The PyPI wheel: site-packages/torch/lib -> site-packages/nvidia/...
    let site = lib.parent()?.parent()?;
    let nccl = site.join("nvidia/nccl/include");
    let cuda = std::fs::read_dir(site.join("nvidia"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("include")))
        .find(|p| p.join("cuda_runtime.h").exists())?;
    // The wheel's runtime headers lack these two; `cargo xtask` installs the
    // nvidia-cuda-crt and nvidia-cuda-cccl packages that hold them.
    let complete = cuda.join("crt/host_config.h").exists() && cuda.join("nv/target").exists();
    if !complete {
        println!(
            "cargo:warning=selfsup-c10d: building without NCCL: {} lacks crt/host_config.h or \
             nv/target (pip install nvidia-cuda-crt nvidia-cuda-cccl, as `cargo xtask` does)",
            cuda.display()
        );
    }
    (complete && nccl.join("nccl.h").exists()).then(|| vec![nccl, cuda])
}
