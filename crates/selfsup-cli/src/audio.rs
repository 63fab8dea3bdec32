//! `selfsup pretrain` for audio configs (`[method] name = "wav2vec2"`):
//! overrides, progress, summary.
use crate::{
    default_data_root, git_commit, install_ctrlc, prepare_run_dir, progress, write_summary,
    Overrides, RunDirFlags,
};
use anyhow::Result;
use selfsup_audio::pretrain::{AudioRunConfig, AudioRunSummary, RunOptions};
use selfsup_core::metrics::peak_rss_mb;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The audio methods' `[method] name`s.
pub const AUDIO_METHODS: [&str; 1] = ["wav2vec2"];

/// Where an audio run's clips come from.
pub enum Data {
    /// `--data`: the root the config's sources are relative to (default
    /// ~/.cache/selfsup/datasets).
    Root(Option<PathBuf>),
    /// `--recordings`: the user's own folder of recordings.
    Recordings(PathBuf),
}

pub fn pretrain_audio(
    mut cfg: AudioRunConfig,
    o: Overrides,
    data: Data,
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
    let data_root = match data {
        Data::Recordings(dir) => {
            eprintln!("{}", use_as_recordings_folder(&mut cfg, &dir)?);
            dir
        }
        Data::Root(Some(dir)) => dir,
        Data::Root(None) => default_data_root(),
    };
    let _run = prepare_run_dir(&run_dir, &cfg.to_toml(), resume, flags, true)?;
    let stop = Arc::new(AtomicBool::new(false));
    install_ctrlc(&stop)?;
    let mut observer =
        progress::Bars::new(stop.clone(), stop_after).with_unit(cfg.data.crop_seconds, "audio s/s");
    let mut log = |line: &str| eprintln!("{line}");
    let summary = selfsup_audio::pretrain::pretrain(
        &cfg,
        RunOptions {
            data_root,
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
    print_summary(&summary);
    Ok(())
}

/// `--recordings DIR`: every `.wav` / `.ogg` below `dir` is pre-trained on
/// instead of the config's sources, and the probe tasks whose folders are
/// not under it are dropped (said in the returned note). Asked for by its
/// own flag: a `--data` root whose sources are missing is an error naming
/// them, never a silent fall-back to the whole tree.
fn use_as_recordings_folder(cfg: &mut AudioRunConfig, dir: &Path) -> Result<String> {
    if !dir.is_dir() {
        anyhow::bail!("--recordings {}: no such folder", dir.display());
    }
    let sources = cfg.data.sources.join(", ");
    cfg.data.sources = vec![".".into()];
    let before = cfg.eval.tasks.len();
    cfg.eval
        .tasks
        .retain(|t| t.train.iter().chain(&t.test).all(|f| dir.join(f).is_dir()));
    Ok(format!(
        "--recordings {}: pre-training on every recording below it instead of the config's sources ({sources}); {} probe task(s) dropped (their folders are not there)",
        dir.display(),
        before - cfg.eval.tasks.len()
    ))
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn print_summary(s: &AudioRunSummary) {
    let d = &s.data;
    println!();
    println!(
        "selfsup {} on {} clips ({:.0} s of audio; {} train, {} monitor, {} of probe test speakers kept out; {})",
        s.method, d.clips, d.seconds, s.train_clips, s.monitor_clips, s.held_out_clips, s.device
    );
    println!(
        "  {} files read, {} resampled to 16 kHz, {} skipped",
        d.files, d.resampled, d.skipped
    );
    println!(
        "  {:.3} M parameters, epochs {}, steps {}, batch {} x {:.1} s crops, final loss {:.4}",
        s.parameters as f64 / 1e6,
        s.epochs,
        s.steps,
        s.batch_size,
        s.crop_seconds,
        s.final_loss
    );
    println!(
        "  reading {:.1} s, training {:.1} s ({:.1} s of audio per s), whole run {:.1} s, peak memory {}",
        s.load_seconds,
        s.train_seconds,
        s.audio_seconds_per_s,
        s.wall_seconds,
        peak_rss_mb().map_or("n/a".into(), |m| format!("{m:.0} MB"))
    );
    let ppl: Vec<String> = s
        .codebook_perplexity
        .iter()
        .map(|p| format!("{p:.1}"))
        .collect();
    println!(
        "  codebook perplexity (monitor clips, hard choices): [{}] of {} entries per codebook",
        ppl.join(", "),
        s.codebook_entries
    );
    for p in &s.probes {
        println!(
            "  linear probe {} ({} classes, {} train / {} test clips of unseen speakers; majority {}):",
            p.name,
            p.classes,
            p.train_clips,
            p.test_clips,
            pct(p.majority)
        );
        println!("    features (mean-pooled)   pre-trained  random weights");
        for (i, (a, b)) in p.pretrained.iter().zip(&p.random_weights).enumerate() {
            let name = match i {
                0 => "conv feature encoder".to_string(),
                1 => "transformer input".to_string(),
                _ => format!("transformer layer {}", i - 1),
            };
            println!("    {name:<24} {:>11}  {:>14}", pct(*a), pct(*b));
        }
        println!("    log-mel filterbank       {:>11}", pct(p.logmel));
    }
    if s.warnings.is_empty() {
        println!("  collapse monitors: no warning");
    } else {
        println!("  collapse monitors: {} warning(s):", s.warnings.len());
        for w in &s.warnings {
            println!("    - {w}");
        }
    }
    println!(
        "  exported (transformers Wav2Vec2ForPreTraining): {}",
        s.export_dir.display()
    );
}
