//! Pre-trains, evaluates and exports one CLIP config without the CLI and
//! prints the summary (as `selfsup pretrain` does); the run folder gets
//! `config.toml` and `summary.json`.
//!
//! ```text
//! cargo run --release -p selfsup-multimodal --example pretrain_clip -- \
//!     configs/multimodal/clip-cpu.toml ~/.cache/selfsup/datasets runs/clip
//! ```
//! Expected (the CPU preset, minutes on 2 cores): a table of zero-shot
//! top-1 and Recall@K for the trained weights, random weights and chance.
use selfsup_core::trainer::Silent;
use selfsup_multimodal::MODALITY;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 3 {
        return Err("usage: pretrain_clip <config.toml> <data root> <run dir>".into());
    }
    let path = PathBuf::from(&args[0]);
    let plan = MODALITY.parse(&std::fs::read_to_string(&path)?, &path)?;
    let mut log = |l: &str| eprintln!("{l}");
    let report = plan.pretrain(selfsup_core::run::RunOptions {
        data: Some(PathBuf::from(&args[1])),
        run_dir: PathBuf::from(&args[2]),
        resume: false,
        observer: &mut Silent,
        stop: Default::default(),
        git_commit: None,
        log: &mut log,
        distributed: None,
    })?;
    for line in report.lines() {
        println!("{line}");
    }
    Ok(())
}
