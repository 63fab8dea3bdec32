//! Pre-trains, evaluates and exports one graph preset without the CLI and
//! prints the summary as JSON (the run folder gets `config.toml` and
//! `summary.json`, as from `selfsup pretrain`).
//!
//! ```text
//! cargo run --release -p selfsup-graph --example pretrain_graph -- \
//!     configs/graph/grace-karate-cpu.toml ~/.cache/selfsup/datasets runs/karate
//! ```
//! Expected (karate, 200 GRACE epochs, seconds on a CPU): "accuracy" rows for
//! the pre-trained encoder, random weights and raw features.
use selfsup_core::trainer::Silent;
use selfsup_graph::pretrain::{pretrain, GraphRunConfig, RunOptions};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 3 {
        return Err("usage: pretrain_graph <config.toml> <data root> <run dir>".into());
    }
    let path = PathBuf::from(&args[0]);
    let cfg = GraphRunConfig::from_toml(&std::fs::read_to_string(&path)?, &path)?;
    let mut log = |l: &str| eprintln!("{l}");
    let summary = pretrain(
        &cfg,
        RunOptions {
            data: Some(PathBuf::from(&args[1])),
            run_dir: PathBuf::from(&args[2]),
            resume: false,
            observer: &mut Silent,
            stop: Default::default(),
            git_commit: None,
            log: &mut log,
            distributed: None,
        },
    )?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
