//! `cargo xtask gpu-kit`: the GPU kit, one folder (at most 64 MiB) that checks
//! selfsup on a lent GPU machine in one command with no Rust there: the
//! stripped release binary, the presets it derives its runs from, small data,
//! the PyTorch peers and `run.sh` (benchmarks/gpu/). The assembly itself is
//! `benchmarks/gpu/make_bundle.py` (standard-library Python), which the
//! selfsup-cli test `gpu_kit` runs too, so what CI tests is what ships.
use crate::paths::{cache_dir, target_dir, workspace_root};
use crate::{build_cli, fetch, run, torch_env};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::process::Command;

/// The registry datasets the kit takes its slices from.
pub(crate) const KIT_DATASETS: [&str; 6] = [
    "fashion-mnist",
    "sotu",
    "brown",
    "klettres",
    "graspologic",
    "emoji-google",
];

/// The flags of `cargo xtask gpu-kit`.
#[derive(Args)]
pub struct GpuKitArgs {
    /// Folder to assemble the kit in (replaced; default target/gpu-kit).
    #[arg(long)]
    out: Option<PathBuf>,
    /// A `selfsup` binary to ship instead of building the release one.
    #[arg(long)]
    binary: Option<PathBuf>,
}

/// Fetches the kit's datasets, builds (or takes) the binary and assembles
/// the kit; errors when it would exceed 64 MiB (make_bundle.py lists the
/// biggest parts).
pub fn gpu_kit(a: GpuKitArgs) -> Result<()> {
    for name in KIT_DATASETS {
        fetch::fetch(name, false)?;
    }
    let binary = match a.binary {
        Some(b) => b,
        None => build_cli(&torch_env::ensure()?)?,
    };
    let out = a.out.unwrap_or_else(|| target_dir().join("gpu-kit"));
    let script = workspace_root().join("benchmarks/gpu/make_bundle.py");
    run(Command::new(crate::venv::system_python())
        .arg(&script)
        .arg("--out")
        .arg(&out)
        .arg("--binary")
        .arg(&binary)
        .arg("--datasets")
        .arg(cache_dir().join("datasets")))
    .with_context(|| {
        format!(
            "assembling the GPU kit in {} from {}",
            out.display(),
            binary.display()
        )
    })?;
    let shown = out
        .strip_prefix(workspace_root())
        .map(PathBuf::from)
        .unwrap_or_else(|_| out.clone());
    println!(
        "on the GPU machine (carry {0}): bash {0}/run.sh $OUT --device cuda\n\
         here, a tiny CPU pass:          bash {0}/run.sh target/gpu-kit-out --device cpu --tiny",
        shown.display()
    );
    Ok(())
}
