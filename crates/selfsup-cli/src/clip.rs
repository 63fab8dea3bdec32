//! `selfsup pretrain` for `[method] name = "clip"` configs and its summary
//! (`selfsup embed` of a CLIP export or checkpoint: `embed.rs`).
use crate::{
    default_data_root, git_commit, install_ctrlc, prepare_run_dir, progress, write_summary,
    Overrides, RunDirFlags,
};
use anyhow::Result;
use selfsup_core::metrics::peak_rss_mb;
use selfsup_multimodal::pretrain::{pretrain, ClipRunConfig, ClipRunSummary, RunOptions};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Pre-trains a dual encoder as `cfg` says (data root: `--data` or the cache).
pub fn pretrain_clip(
    mut cfg: ClipRunConfig,
    o: Overrides,
    data: Option<PathBuf>,
    run_dir: PathBuf,
    resume: bool,
    flags: RunDirFlags,
    stop_after: Option<u64>,
) -> Result<()> {
    o.apply(
        &mut cfg.trainer,
        &mut cfg.run.device,
        &mut cfg.run.batch_size,
        &mut cfg.run.threads,
    )?;
    let _run = prepare_run_dir(&run_dir, &cfg.to_toml(), resume, flags, true)?;
    let stop = Arc::new(AtomicBool::new(false));
    install_ctrlc(&stop)?;
    let mut observer = progress::Bars::new(stop.clone(), stop_after).with_unit(1.0, "pairs/s");
    let mut log = |line: &str| eprintln!("{line}");
    let summary = pretrain(
        &cfg,
        RunOptions {
            data_root: data.unwrap_or_else(default_data_root),
            run_dir: run_dir.clone(),
            resume,
            observer: &mut observer,
            stop,
            git_commit: git_commit(),
            log: &mut log,
            distributed: None,
        },
    );
    observer.finish();
    let summary = summary?;
    write_summary(&run_dir, &summary)?;
    print_clip_summary(&summary, peak_rss_mb());
    Ok(())
}

fn print_clip_summary(s: &ClipRunSummary, peak_rss_mb: Option<f64>) {
    println!();
    println!(
        "selfsup clip on {} images with {} captions ({}; {} pairs skipped)",
        s.train_images,
        s.train_pairs,
        s.device,
        s.skipped.total()
    );
    println!(
        "  image tower {} ({:.2} M), text tower BERT {} layers / hidden {} ({:.2} M), shared space {}, vocabulary {}",
        s.model.vision_arch,
        s.model.vision_params as f64 / 1e6,
        s.model.text_layers,
        s.model.text_hidden,
        s.model.text_params as f64 / 1e6,
        s.model.embed_dim,
        s.vocab_size
    );
    println!(
        "  epochs {}, steps {}, batch {}, final loss {:.4}, logit scale {:.1}",
        s.epochs, s.steps, s.batch_size, s.final_loss, s.logit_scale
    );
    println!(
        "  training {:.1} s ({:.0} pairs/s), whole run {:.1} s, peak memory {}",
        s.train_seconds,
        s.train_pairs_per_s,
        s.wall_seconds,
        peak_rss_mb.map_or("n/a".into(), |m| format!("{m:.0} MB"))
    );
    println!(
        "  {:<52} {:>8} {:>8} {:>8}",
        "", "trained", "random", "chance"
    );
    for ((name, v), (_, r)) in s.metrics.iter().zip(&s.random_weights) {
        let chance = s
            .chance
            .iter()
            .find(|(n, _)| n == name)
            .map_or(String::new(), |(_, c)| format!("{:.2}%", c * 100.0));
        println!(
            "  {:<52} {:>7.2}% {:>7.2}% {:>8}",
            name,
            v * 100.0,
            r * 100.0,
            chance
        );
    }
    for w in &s.warnings {
        println!("  warning: {w}");
    }
    println!(
        "  curves {}, export {}",
        s.curves.display(),
        s.export_dir.display()
    );
}
