//! `selfsup`: pre-train, evaluate and export self-supervised encoders.
//!
//! ```text
//! selfsup pretrain --config configs/vision/simclr-cpu.toml --data ~/.cache/selfsup/datasets/fashion-mnist
//! selfsup pretrain --config configs/text/mlm-cpu.toml --data ~/.cache/selfsup/datasets
//! selfsup eval knn --checkpoint runs/simclr-cpu/checkpoint.safetensors --data DIR
//! selfsup export --checkpoint runs/simclr-cpu/checkpoint.safetensors --out DIR
//! selfsup pretrain --config configs/multimodal/clip-cpu.toml --data ~/.cache/selfsup/datasets
//! selfsup embed --checkpoint runs/clip-cpu/export --images DIR --out images.jsonl
//! ```
mod audio;
mod clip;
mod distributed;
mod graph;
mod progress;
mod restore;
mod text_summary;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use selfsup_core::metrics::peak_rss_mb;
use selfsup_text::pretrain::TextRunConfig;
use selfsup_vision::pretrain::{pretrain, RunOptions, VisionRunConfig};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "selfsup",
    version,
    about = "Self-supervised pre-training on libtorch"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pre-train from a TOML run config, evaluate, export.
    Pretrain {
        #[arg(long)]
        config: PathBuf,
        /// Dataset folder (overrides [data] path); for text configs the data
        /// root the sources are relative to (default ~/.cache/selfsup/datasets).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Run folder for checkpoints, metrics, curves, export (default: runs/<config name>).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Continue from the run folder's last checkpoint.
        #[arg(long)]
        resume: bool,
        #[arg(long)]
        epochs: Option<usize>,
        /// cpu, cuda or auto.
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        batch_size: Option<usize>,
        #[arg(long)]
        threads: Option<usize>,
        /// Stop early as if interrupted after this many steps (testing resume).
        #[arg(long, hide = true)]
        stop_after: Option<u64>,
        /// c10d backend of a data-parallel run (started by torchrun, srun or
        /// `cargo xtask pretrain-vision --nproc N`).
        #[arg(long, value_enum, default_value = "auto")]
        backend: distributed::BackendChoice,
        /// Seconds a collective may wait for the other ranks before failing.
        #[arg(long, default_value_t = 1800)]
        dist_timeout: u64,
    },
    /// Evaluate a checkpoint's frozen encoder on the test split.
    Eval {
        protocol: Protocol,
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long)]
        device: Option<String>,
    },
    /// Export a checkpoint's encoder as safetensors + config.json.
    Export {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Embed images or texts with a CLIP export folder or run checkpoint
    /// (one JSON line per item: {"id", "embedding"}, unit vectors).
    Embed {
        /// An export folder (runs/<name>/export) or a run's checkpoint.safetensors.
        #[arg(long)]
        checkpoint: PathBuf,
        /// A folder of png / jpg images.
        #[arg(long, conflicts_with = "texts")]
        images: Option<PathBuf>,
        /// A text file, one text per line.
        #[arg(long)]
        texts: Option<PathBuf>,
        /// Output JSON Lines file.
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        device: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Protocol {
    Knn,
    Linear,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// A run config of either modality, told apart by `[method] name`.
enum AnyConfig {
    Vision(Box<VisionRunConfig>),
    Text(Box<TextRunConfig>),
    Clip(Box<selfsup_multimodal::pretrain::ClipRunConfig>),
    Graph(Box<selfsup_graph::pretrain::GraphRunConfig>),
    Audio(Box<selfsup_audio::pretrain::AudioRunConfig>),
}

fn read_config(path: &Path) -> Result<AnyConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    let value: toml::Value =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let method = value
        .get("method")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str());
    if method.is_some_and(|m| graph::GRAPH_METHODS.contains(&m)) {
        return Ok(AnyConfig::Graph(Box::new(
            selfsup_graph::pretrain::GraphRunConfig::from_toml(&text, path)?,
        )));
    }
    if method.is_some_and(|m| audio::AUDIO_METHODS.contains(&m)) {
        return Ok(AnyConfig::Audio(Box::new(
            selfsup_audio::pretrain::AudioRunConfig::from_toml(&text, path)?,
        )));
    }
    if method == Some("clip") {
        Ok(AnyConfig::Clip(Box::new(
            selfsup_multimodal::pretrain::ClipRunConfig::from_toml(&text, path)?,
        )))
    } else if method == Some("mlm") {
        Ok(AnyConfig::Text(Box::new(TextRunConfig::from_toml(
            &text, path,
        )?)))
    } else {
        Ok(AnyConfig::Vision(Box::new(VisionRunConfig::from_toml(
            &text, path,
        )?)))
    }
}

/// `~/.cache/selfsup/datasets`, where `cargo xtask fetch` puts datasets.
fn default_data_root() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache/selfsup/datasets")
}

fn install_ctrlc(stop: &Arc<AtomicBool>) -> Result<()> {
    let handler_flag = stop.clone();
    ctrlc::set_handler(move || {
        if handler_flag.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond interrupt: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: finishing the current step and writing a checkpoint (Ctrl-C again to quit now)");
    })
    .context("installing the Ctrl-C handler")
}

fn write_summary(run_dir: &Path, summary: &impl serde::Serialize) -> Result<()> {
    let mut json = serde_json::to_value(summary)?;
    json["peak_rss_mb"] = serde_json::json!(peak_rss_mb());
    let path = run_dir.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", path.display()))
}

struct Overrides {
    epochs: Option<usize>,
    device: Option<String>,
    batch_size: Option<usize>,
    threads: Option<usize>,
}

impl Overrides {
    /// Writes the given flags over a run config's `[trainer] epochs` and
    /// `[run] device / batch_size / threads` (the same four in every modality).
    fn apply(
        &self,
        trainer: &mut selfsup_core::trainer::TrainerConfig,
        device: &mut selfsup_core::device::DeviceChoice,
        batch_size: &mut usize,
        threads: &mut Option<usize>,
    ) -> Result<()> {
        if let Some(e) = self.epochs {
            trainer.epochs = e;
        }
        if let Some(d) = &self.device {
            *device = d.parse()?;
        }
        if let Some(b) = self.batch_size {
            *batch_size = b;
        }
        if let Some(t) = self.threads {
            *threads = Some(t);
        }
        Ok(())
    }
}

fn pretrain_text(
    mut cfg: TextRunConfig,
    o: Overrides,
    data: Option<PathBuf>,
    run_dir: PathBuf,
    resume: bool,
    stop_after: Option<u64>,
    dist: Option<selfsup_core::distributed::Distributed>,
) -> Result<()> {
    o.apply(
        &mut cfg.trainer,
        &mut cfg.run.device,
        &mut cfg.run.batch_size,
        &mut cfg.run.threads,
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    install_ctrlc(&stop)?;
    let primary = dist.as_ref().is_none_or(|d| d.is_primary());
    let mut observer = progress::Bars::new(stop.clone(), stop_after)
        .with_unit(cfg.model.max_len as f64, "tokens/s")
        .quiet(!primary);
    let mut log = |line: &str| {
        if primary {
            eprintln!("{line}")
        }
    };
    let summary = selfsup_text::pretrain::pretrain(
        &cfg,
        selfsup_text::pretrain::RunOptions {
            data_root: data.unwrap_or_else(default_data_root),
            run_dir: run_dir.clone(),
            resume,
            observer: &mut observer,
            stop,
            git_commit: git_commit(),
            log: &mut log,
            distributed: dist,
        },
    );
    observer.finish();
    let summary = summary?;
    if !primary {
        return Ok(());
    }
    write_summary(&run_dir, &summary)?;
    text_summary::print_text_summary(&summary, peak_rss_mb(), &run_dir);
    Ok(())
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Pretrain {
            config,
            data,
            run_dir,
            resume,
            epochs,
            device,
            batch_size,
            threads,
            stop_after,
            backend,
            dist_timeout,
        } => {
            let name = config
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_else(|| "run".into());
            let run_dir = run_dir.unwrap_or_else(|| PathBuf::from("runs").join(name));
            let mut cfg = match read_config(&config)? {
                AnyConfig::Vision(cfg) => *cfg,
                AnyConfig::Text(cfg) => {
                    let choice = match &device {
                        Some(d) => d.parse()?,
                        None => cfg.run.device,
                    };
                    let dist = distributed::join(
                        choice,
                        backend,
                        std::time::Duration::from_secs(dist_timeout),
                    )?;
                    let o = Overrides {
                        epochs,
                        device,
                        batch_size,
                        threads,
                    };
                    return pretrain_text(*cfg, o, data, run_dir, resume, stop_after, dist);
                }
                AnyConfig::Graph(cfg) => {
                    let o = Overrides {
                        epochs,
                        device,
                        batch_size,
                        threads,
                    };
                    return graph::pretrain_graph(*cfg, o, data, run_dir, resume, stop_after);
                }
                AnyConfig::Audio(cfg) => {
                    let o = Overrides {
                        epochs,
                        device,
                        batch_size,
                        threads,
                    };
                    return audio::pretrain_audio(*cfg, o, data, run_dir, resume, stop_after);
                }
                AnyConfig::Clip(cfg) => {
                    let o = Overrides {
                        epochs,
                        device,
                        batch_size,
                        threads,
                    };
                    return clip::pretrain_clip(*cfg, o, data, run_dir, resume, stop_after);
                }
            };
            Overrides {
                epochs,
                device,
                batch_size,
                threads,
            }
            .apply(
                &mut cfg.trainer,
                &mut cfg.run.device,
                &mut cfg.run.batch_size,
                &mut cfg.run.threads,
            )?;
            let dist = distributed::join(
                cfg.run.device,
                backend,
                std::time::Duration::from_secs(dist_timeout),
            )?;
            let primary = dist.as_ref().is_none_or(|d| d.is_primary());
            let stop = Arc::new(AtomicBool::new(false));
            install_ctrlc(&stop)?;
            let mut observer = progress::Bars::new(stop.clone(), stop_after).quiet(!primary);
            let summary = pretrain(
                &cfg,
                RunOptions {
                    data_dir: data,
                    run_dir: run_dir.clone(),
                    resume,
                    observer: &mut observer,
                    stop,
                    git_commit: git_commit(),
                    distributed: dist,
                },
            );
            observer.finish();
            let summary = summary?;
            if primary {
                write_summary(&run_dir, &summary)?;
                progress::print_summary(&summary, peak_rss_mb());
            }
            Ok(())
        }
        Cmd::Eval {
            protocol,
            checkpoint,
            data,
            device,
        } => {
            let loaded = restore::load(&checkpoint, device.as_deref())?;
            let (name, acc) = match protocol {
                Protocol::Knn => ("kNN top-1", loaded.knn(data)?),
                Protocol::Linear => ("linear probe top-1", loaded.linear(data)?),
            };
            println!("{name} on the test split: {:.2}%", acc * 100.0);
            Ok(())
        }
        Cmd::Export { checkpoint, out } => {
            let loaded = restore::load(&checkpoint, Some("cpu"))?;
            loaded.export(&out)?;
            println!("exported the encoder to {}", out.display());
            Ok(())
        }
        Cmd::Embed {
            checkpoint,
            images,
            texts,
            out,
            device,
        } => clip::embed(&checkpoint, images, texts, &out, device),
    }
}
