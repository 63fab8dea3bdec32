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
mod config_file;
mod distributed;
mod embed;
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
        /// The TOML run config (e.g. configs/vision/simclr-cpu.toml); it may
        /// `include = "base.toml"` (relative to itself) and override its tables.
        #[arg(long)]
        config: PathBuf,
        /// Override one config value, KEY=VALUE with a dotted key and a TOML
        /// value, e.g. --set trainer.optimizer.lr=0.1 --set eval.knn.k=20
        /// (repeatable; applied before the config is checked).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Dataset folder (overrides [data] path); for text configs the data
        /// root the sources are relative to (default ~/.cache/selfsup/datasets).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Audio configs: pre-train on every .wav / .ogg below this folder
        /// (your own recordings) instead of the config's `[data] sources`;
        /// probe tasks whose folders are not under it are dropped.
        #[arg(long, conflicts_with = "data")]
        recordings: Option<PathBuf>,
        /// Run folder for checkpoints, metrics, curves, export (default: runs/<config name>).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Continue from the run folder's last checkpoint.
        #[arg(long, conflicts_with = "overwrite", group = "resuming")]
        resume: bool,
        /// Continue from the run folder's checkpoint if it has one, else start
        /// afresh (says which on stderr).
        #[arg(long, conflicts_with_all = ["resume", "overwrite"], group = "resuming")]
        resume_auto: bool,
        /// Start afresh in a run folder that holds an earlier run: its
        /// checkpoint, metrics, curves, summary, config and export are removed first.
        #[arg(long)]
        overwrite: bool,
        /// With --resume or --resume-auto: continue although the config differs from the
        /// checkpoint's (seed, optimiser, schedule, method, model, data, ...;
        /// epochs, checkpoint_every, device, threads and batch_size may change freely).
        #[arg(long, requires = "resuming")]
        allow_config_change: bool,
        /// Epochs to train (default: the config's [trainer] epochs).
        #[arg(long)]
        epochs: Option<usize>,
        /// cpu, cuda, cuda:N or auto (default: the config's [run] device).
        #[arg(long)]
        device: Option<String>,
        /// Examples per step (default: the config's [run] batch_size).
        #[arg(long)]
        batch_size: Option<usize>,
        /// CPU threads (default: the config's [run] threads).
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
        /// knn: k-nearest-neighbour vote; linear: a linear probe trained on
        /// the frozen features.
        protocol: Protocol,
        /// A run's checkpoint.safetensors.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Dataset folder (default: the checkpoint's config's [data] path).
        #[arg(long)]
        data: Option<PathBuf>,
        /// cpu, cuda, cuda:N or auto (default: auto, a GPU when one is visible, else
        /// the CPU; the checkpoint's [run] device is not used).
        #[arg(long)]
        device: Option<String>,
    },
    /// Export a checkpoint's encoder as safetensors + config.json (on the CPU,
    /// whatever device the checkpoint was trained on).
    Export {
        /// A run's checkpoint.safetensors.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output folder for model.safetensors and config.json.
        #[arg(long)]
        out: PathBuf,
    },
    /// Embed images, texts, audio clips or a graph with an export folder or
    /// run checkpoint of any modality (vision, text, audio, graph, CLIP; its
    /// config says which). The output's extension picks the format: .jsonl
    /// (one {"id", "embedding"} a line), .npy or .safetensors (float32 [N, D];
    /// the ids one a line in <stem>.ids.txt beside it).
    Embed {
        /// An export folder (runs/<name>/export) or a run's checkpoint.safetensors.
        #[arg(long)]
        checkpoint: PathBuf,
        /// A folder of png / jpg / webp images, for vision and CLIP models
        /// (files directly in it; other files are skipped and counted).
        #[arg(long)]
        images: Option<PathBuf>,
        /// A text file, one text per line, for text (BERT) and CLIP models.
        #[arg(long)]
        texts: Option<PathBuf>,
        /// A folder of .wav / .ogg clips, for audio (wav2vec 2.0) models.
        #[arg(long)]
        audio: Option<PathBuf>,
        /// A graph file for graph models: an edge list ("u v [w]" lines), or
        /// an adjacency matrix if it ends in .csv; one embedding per node.
        #[arg(long)]
        graph: Option<PathBuf>,
        /// Output file: .jsonl, .npy or .safetensors.
        #[arg(long)]
        out: PathBuf,
        /// cpu, cuda, cuda:N or auto.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Images or texts per forward pass, for vision and text models (CLIP
        /// batches as its evaluation does; audio clips and graphs go one at a time).
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        /// Vision: side the images are resized to (default: the export's
        /// image_size, or the checkpoint's dataset's).
        #[arg(long)]
        image_size: Option<usize>,
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
    // A device failure inside libtorch (the GPU out of memory) panics in tch
    // and is turned into one error line by the trainer: keep the panic's
    // C++ dump off the terminal. Every other panic is reported as usual.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = selfsup_core::error::panic_message(info.payload()).unwrap_or_default();
        if selfsup_core::device::explain_torch_failure(&text).is_none() {
            report(info);
        }
    }));
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

/// The vision methods' `[method] name`s.
pub const VISION_METHODS: [&str; 15] = [
    "simclr",
    "moco_v2",
    "moco_v3",
    "byol",
    "simsiam",
    "dino",
    "barlow_twins",
    "vicreg",
    "swav",
    "rotation",
    "context",
    "jigsaw",
    "colorization",
    "mae",
    "ijepa",
];

/// Every modality with its `[method] name`s.
fn modalities() -> [(&'static str, &'static [&'static str]); 5] {
    [
        ("vision", &VISION_METHODS),
        ("text", &["mlm"]),
        ("graph", &graph::GRAPH_METHODS),
        ("audio", &audio::AUDIO_METHODS),
        ("image-text (CLIP)", &["clip"]),
    ]
}

/// The modality of a `[method] name`.
fn modality_of(method: &str) -> Option<&'static str> {
    modalities()
        .into_iter()
        .find(|(_, names)| names.contains(&method))
        .map(|(m, _)| m)
}

/// Every modality's method names, one modality a line.
fn method_names() -> String {
    modalities()
        .iter()
        .map(|(m, names)| format!("  {m}: {}", names.join(", ")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `[method] name` of a TOML config text.
fn method_name(value: &toml::Value) -> Option<&str> {
    value
        .get("method")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
}

fn read_config(path: &Path, sets: &[String]) -> Result<AnyConfig> {
    let config_file::Loaded { text, value } = config_file::load(path, sets)?;
    let method = method_name(&value);
    match method {
        None => anyhow::bail!(
            "{}: no [method] name: say what to train, e.g.\n\n[method]\nname = \"simclr\"\n\n\
             the methods are:\n{}\n(the presets in configs/ are complete examples)",
            path.display(),
            method_names()
        ),
        Some(m) if modality_of(m).is_none() => {
            let all = modalities()
                .into_iter()
                .flat_map(|(_, names)| names.iter().copied());
            let hint = config_file::nearest(m, all)
                .map(|n| format!(" (did you mean \"{n}\"?)"))
                .unwrap_or_default();
            anyhow::bail!(
                "{}: [method] name = \"{m}\" is not a method{hint}; the methods are:\n{}",
                path.display(),
                method_names()
            )
        }
        Some(_) => {}
    }
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

/// `--overwrite` and `--allow-config-change`.
#[derive(Clone, Copy)]
struct RunDirFlags {
    overwrite: bool,
    allow_config_change: bool,
}

/// Makes the run folder ready before any data is read (see
/// [`selfsup_core::run_dir::prepare`]) and says what it removed or accepted.
/// Hold the result until the run ends: it holds the folder's lock.
fn prepare_run_dir(
    run_dir: &Path,
    config_toml: &str,
    resume: bool,
    flags: RunDirFlags,
    primary: bool,
) -> Result<selfsup_core::run_dir::Prepared> {
    let p = selfsup_core::run_dir::prepare(
        run_dir,
        config_toml,
        selfsup_core::run_dir::Options {
            resume,
            overwrite: flags.overwrite,
            allow_config_change: flags.allow_config_change,
            primary,
        },
    )?;
    if primary {
        let names = |v: &[PathBuf]| {
            v.iter()
                .map(|f| f.strip_prefix(run_dir).unwrap_or(f).display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !p.removed.is_empty() {
            eprintln!(
                "--overwrite: removed the earlier run's {} from {}",
                names(&p.removed),
                run_dir.display()
            );
        }
        if !p.stale_tmp.is_empty() {
            eprintln!(
                "removed {} partial file(s) an interrupted run left in {}: {}",
                p.stale_tmp.len(),
                run_dir.display(),
                names(&p.stale_tmp)
            );
        }
        if !p.config_changes.is_empty() {
            eprintln!(
                "--allow-config-change: resuming with a config that differs from the checkpoint's:\n  {}",
                p.config_changes.join("\n  ")
            );
        }
    }
    Ok(p)
}

impl Overrides {
    /// Writes the given flags over a run config's `[trainer] epochs` and
    /// `[run] device / batch_size / threads` (the same four in every modality),
    /// then checks the trainer's and the thread settings, before any data is read.
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
        selfsup_core::run::check_common(trainer, *threads)?;
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn pretrain_text(
    mut cfg: TextRunConfig,
    o: Overrides,
    data: Option<PathBuf>,
    run_dir: PathBuf,
    resume: bool,
    flags: RunDirFlags,
    stop_after: Option<u64>,
    dist: Option<selfsup_core::distributed::Distributed>,
) -> Result<()> {
    o.apply(
        &mut cfg.trainer,
        &mut cfg.run.device,
        &mut cfg.run.batch_size,
        &mut cfg.run.threads,
    )?;
    let primary = dist.as_ref().is_none_or(|d| d.is_primary());
    let _run = prepare_run_dir(&run_dir, &cfg.to_toml(), resume, flags, primary)?;
    let stop = Arc::new(AtomicBool::new(false));
    install_ctrlc(&stop)?;
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

/// `--resume-auto`: whether the run folder holds a checkpoint to resume
/// from, said on stderr.
fn resume_auto_found(run_dir: &Path) -> bool {
    let checkpoint = run_dir.join(selfsup_core::trainer::CHECKPOINT_FILE);
    let found = checkpoint.is_file();
    if found {
        eprintln!("--resume-auto: resuming from {}", checkpoint.display());
    } else {
        eprintln!(
            "--resume-auto: no checkpoint in {}, starting afresh",
            run_dir.display()
        );
    }
    found
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Pretrain {
            config,
            set,
            data,
            recordings,
            run_dir,
            resume,
            resume_auto,
            overwrite,
            allow_config_change,
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
            let flags = RunDirFlags {
                overwrite,
                allow_config_change,
            };
            let cfg = read_config(&config, &set)?;
            let resume = resume || (resume_auto && resume_auto_found(&run_dir));
            if recordings.is_some() && !matches!(cfg, AnyConfig::Audio(_)) {
                anyhow::bail!(
                    "--recordings is for audio configs ([method] name = \"wav2vec2\"); {} is not one: give its data with --data",
                    config.display()
                );
            }
            let mut cfg = match cfg {
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
                    return pretrain_text(*cfg, o, data, run_dir, resume, flags, stop_after, dist);
                }
                AnyConfig::Graph(cfg) => {
                    let o = Overrides {
                        epochs,
                        device,
                        batch_size,
                        threads,
                    };
                    return graph::pretrain_graph(
                        *cfg, o, data, run_dir, resume, flags, stop_after,
                    );
                }
                AnyConfig::Audio(cfg) => {
                    let o = Overrides {
                        epochs,
                        device,
                        batch_size,
                        threads,
                    };
                    let data = match recordings {
                        Some(dir) => audio::Data::Recordings(dir),
                        None => audio::Data::Root(data),
                    };
                    return audio::pretrain_audio(
                        *cfg, o, data, run_dir, resume, flags, stop_after,
                    );
                }
                AnyConfig::Clip(cfg) => {
                    let o = Overrides {
                        epochs,
                        device,
                        batch_size,
                        threads,
                    };
                    return clip::pretrain_clip(*cfg, o, data, run_dir, resume, flags, stop_after);
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
            let _run = prepare_run_dir(&run_dir, &cfg.to_toml(), resume, flags, primary)?;
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
                progress::print_summary(&summary, peak_rss_mb(), cfg.eval.knn.k);
            }
            Ok(())
        }
        Cmd::Eval {
            protocol,
            checkpoint,
            data,
            device,
        } => {
            let loaded = restore::load(&checkpoint, device.as_deref(), "eval")?;
            let (name, acc) = match protocol {
                Protocol::Knn => ("kNN top-1", loaded.knn(data)?),
                Protocol::Linear => ("linear probe top-1", loaded.linear(data)?),
            };
            println!("{name} on the test split: {:.2}%", acc * 100.0);
            Ok(())
        }
        Cmd::Export { checkpoint, out } => {
            let loaded = restore::load(&checkpoint, Some("cpu"), "export")?;
            loaded.export(&out)?;
            println!("exported the encoder to {}", out.display());
            Ok(())
        }
        Cmd::Embed {
            checkpoint,
            images,
            texts,
            audio,
            graph,
            out,
            device,
            batch_size,
            image_size,
        } => embed::run(embed::Args {
            checkpoint,
            images,
            texts,
            audio,
            graph,
            out,
            device,
            batch_size,
            image_size,
        }),
    }
}
