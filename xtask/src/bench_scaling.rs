//! `cargo xtask bench --scaling`: data-parallel scaling of the default
//! SimCLR preset on this machine's cores (c10d Gloo ranks on loopback).
//!
//! Three runs of `configs/vision/simclr-cpu.toml`, one epoch each, the same
//! per-rank batch `b` (half the preset's):
//! 1. one process on one core (one libtorch and one augmentation thread), batch `b`;
//! 2. two ranks, one core each likewise, batch `b` each (global batch `2b`);
//! 3. one process, two threads of each kind, batch `2b`: the other way to use
//!    two cores.
//!
//! Scaling efficiency = (2) / (2 x (1)). Training images/s come from each
//! run's `summary.json` (rank 0's counts the global batch). The peer is
//! lightly's SimCLR on PyTorch DDP (`benchmarks/lightly_simclr.py` under
//! `torch.distributed.run`, Gloo), runs (1) and (2), same settings.
use crate::bench::{ensure_bench_venv, json_of, PeerSettings};
use crate::paths::{target_dir, workspace_root};
use crate::{fetch, launch, selfsup_pretrain, torch_env, PretrainArgs};
use anyhow::{Context, Result};
use serde_json::Value;
use std::path::Path;

fn images_per_s(run_dir: &Path) -> Result<f64> {
    let path = run_dir.join("summary.json");
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    v["train_images_per_s"]
        .as_f64()
        .with_context(|| format!("{} has no train_images_per_s", path.display()))
}

pub fn bench(epochs: Option<usize>) -> Result<()> {
    let env = torch_env::ensure()?;
    let data = fetch::fetch("fashion-mnist", false)?;
    let bin = crate::build_cli(&env)?;
    let config = workspace_root().join("configs/vision/simclr-cpu.toml");
    let cfg: toml::Value = toml::from_str(&std::fs::read_to_string(&config)?)?;
    let preset_batch = cfg["run"]["batch_size"].as_integer().unwrap_or(256) as usize;
    let b = (preset_batch / 2).max(1);
    let out = target_dir().join("bench/scaling");
    std::fs::create_dir_all(&out)?;
    let args = PretrainArgs {
        epochs: Some(epochs.unwrap_or(1)),
        overwrite: true,
        ..Default::default()
    };
    let pretrain = |run: &str, batch: usize| {
        let mut cmd = selfsup_pretrain(&bin, &config, &data, &out.join(run), &args);
        cmd.arg("--batch-size").arg(batch.to_string());
        env.apply(&mut cmd);
        cmd
    };

    eprintln!("xtask: 1 process, 1 thread, batch {b}");
    let mut one = pretrain("one-rank-1-thread", b);
    one.args(["--threads", "1"])
        .env("OMP_NUM_THREADS", "1")
        .env("RAYON_NUM_THREADS", "1");
    crate::run(&mut one)?;
    eprintln!("xtask: 2 ranks, 1 thread each, batch {b} each");
    launch::run_local_ranks(2, Some(1), |_| pretrain("two-ranks", b))?;
    eprintln!("xtask: 1 process, 2 threads, batch {}", 2 * b);
    let mut wide = pretrain("one-rank-2-threads", 2 * b);
    wide.args(["--threads", "2"])
        .env("OMP_NUM_THREADS", "2")
        .env("RAYON_NUM_THREADS", "2");
    crate::run(&mut wide)?;

    let py = ensure_bench_venv()?;
    let peer = PeerSettings::from_config(&config)?;
    let script = workspace_root().join("benchmarks/lightly_simclr.py");
    let epochs_s = epochs.unwrap_or(1).to_string();
    let b_s = b.to_string();
    let tail = [
        "--threads",
        "1",
        "--epochs",
        epochs_s.as_str(),
        "--batch",
        b_s.as_str(),
    ];
    eprintln!("xtask: lightly, 1 process, 1 thread, batch {b}");
    let p1 = json_of(
        std::process::Command::new(&py)
            .arg(&script)
            .arg("--data")
            .arg(&data)
            .args(peer.args())
            .args(tail)
            .env("OMP_NUM_THREADS", "1"),
    )?;
    eprintln!("xtask: lightly on DDP, 2 ranks, 1 thread each, batch {b} each");
    let p2 = json_of(
        std::process::Command::new(&py)
            .args(["-m", "torch.distributed.run", "--nproc-per-node", "2"])
            .arg(&script)
            .arg("--data")
            .arg(&data)
            .args(peer.args())
            .args(tail)
            .env("OMP_NUM_THREADS", "1"),
    )?;
    let peer_rate = |v: &Value| v["images_per_s"].as_f64().unwrap_or(f64::NAN);
    let (l1, l2) = (peer_rate(&p1), peer_rate(&p2));

    let r1 = images_per_s(&out.join("one-rank-1-thread"))?;
    let r2 = images_per_s(&out.join("two-ranks"))?;
    let w = images_per_s(&out.join("one-rank-2-threads"))?;
    let report = format!(
        "| run | selfsup images/s | lightly (PyTorch DDP) images/s | ratio |\n|---|---|---|---|\n\
         | 1 process, 1 core, batch {b} | {r1:.0} | {l1:.0} | {:.2}x |\n\
         | 2 ranks (Gloo, loopback), 1 core each, batch {b} each | {r2:.0} | {l2:.0} | {:.2}x |\n\
         | 1 process, 2 cores, batch {} | {w:.0} | | |\n\n\
         Scaling efficiency at 2 ranks (2 ranks / (2 x 1 rank)): selfsup {:.1} %, \
         lightly on DDP {:.1} %. selfsup's 2 ranks / its 1 process with 2 threads: {:.2}x. \
         selfsup synchronises batch norm across ranks; PyTorch's SyncBatchNorm is GPU-only, \
         so the peer's ranks normalise their own shares.\n",
        r1 / l1,
        r2 / l2,
        2 * b,
        100.0 * r2 / (2.0 * r1),
        100.0 * l2 / (2.0 * l1),
        r2 / w
    );
    println!("\n{report}");
    let md = target_dir().join("bench/scaling.md");
    std::fs::write(&md, &report)?;
    println!("written to {}", md.display());
    Ok(())
}
