//! `selfsup`: pre-train, evaluate and export self-supervised encoders.
//!
//! ```text
//! selfsup pretrain --config configs/vision/simclr-cpu.toml --data ~/.cache/selfsup/datasets/fashion-mnist
//! selfsup pretrain --config configs/text/mlm-cpu.toml --data ~/.cache/selfsup/datasets
//! selfsup eval knn --checkpoint runs/simclr-cpu/checkpoint.safetensors --data DIR
//! selfsup export --checkpoint runs/simclr-cpu/checkpoint.safetensors --out DIR
//! selfsup pretrain --config configs/multimodal/clip-cpu.toml --data ~/.cache/selfsup/datasets
//! selfsup embed --checkpoint runs/clip-cpu/export --images DIR --out images.jsonl
//! selfsup generate runs/next-token-cpu --prompt "the president said that" --top-k 1
//! ```
//!
//! The binary knows no method: every modality crate registers itself
//! ([`REGISTRY`]) and owns its `[method] name`s, configs, evaluations and
//! exports.
mod config_file;
mod distributed;
mod embed;
mod generate;
mod pretrain;
mod progress;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use selfsup_core::device::DeviceChoice;
use selfsup_core::workflow::{self as wf, EvalRequest, Modality, Overrides};
use std::path::{Path, PathBuf};

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
    /// Evaluate a checkpoint's encoder, frozen or fine-tuned (its modality
    /// says which evaluations it offers; an unknown one is refused, listing them).
    Eval {
        /// vision: knn (k-nearest-neighbour vote), linear (a linear probe
        /// on the frozen features), finetune (end to end on 1/10/100 % of
        /// the labels against the same network from scratch, [eval.finetune])
        /// or robustness (probes fitted on clean features, scored on noisy,
        /// blurred and low-contrast test images, [eval.robustness]); graph:
        /// linear, finetune (node classes) or link (held-out edges, runs with
        /// [eval.link]); text: linear, validation or finetune (MLM), validation
        /// or test (next-token: perplexity beside the n-gram baselines, the
        /// test documents read once); audio: linear or finetune (spoken
        /// letters); video: linear; CLIP: zero-shot or retrieval.
        protocol: String,
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
        /// Override one value of the checkpoint's [eval] tables, KEY=VALUE, e.g.
        /// --set eval.finetune.steps=300 --set 'eval.finetune.scored_on="validation"'
        /// (repeatable; keys outside eval. describe how the checkpoint was
        /// trained and are refused).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Export a checkpoint's encoder as safetensors + config.json in the layout
    /// its library loads (on the CPU, whatever device it was trained on).
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
    /// Continue a prompt with a next-token (GPT-2) run: greedy (--top-k 1
    /// or --temperature 0) or seeded top-k sampling; the prompt and its
    /// continuation are printed on one line.
    Generate {
        /// A next-token run folder (the --run-dir of `selfsup pretrain`) or
        /// its checkpoint.safetensors.
        run: PathBuf,
        /// The text to continue.
        #[arg(long)]
        prompt: String,
        /// The most tokens to add (1 to 4096); generation stops earlier where
        /// the model ends the document.
        #[arg(long, default_value_t = 50)]
        max_new_tokens: usize,
        /// Draw from the k most likely tokens (1 = greedy).
        #[arg(long, default_value_t = 40)]
        top_k: usize,
        /// Softmax temperature of the draw (0 = greedy).
        #[arg(long, default_value_t = 1.0)]
        temperature: f64,
        /// Seed of the draw: the same seed gives the same text.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// cpu, cuda, cuda:N or auto.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
}

/// Every modality, in the order errors list them. A new modality is one
/// line here; a new method of a modality is no line here.
pub const REGISTRY: [&dyn Modality; 6] = [
    selfsup_vision::MODALITY,
    selfsup_text::MODALITY,
    selfsup_graph::MODALITY,
    selfsup_audio::MODALITY,
    selfsup_multimodal::MODALITY,
    selfsup_video::MODALITY,
];

/// The modality that owns a `[method] name`.
pub fn modality_of(method: &str) -> Option<&'static dyn Modality> {
    wf::find(&REGISTRY, method)
}

/// Every modality's method names, one modality a line.
pub fn method_names() -> String {
    wf::method_list(&REGISTRY)
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

/// A checkpoint's modality, method and stored config; a method no modality
/// owns is an error naming the file.
fn checkpoint_owner(path: &Path) -> Result<(&'static dyn Modality, String, String)> {
    let (method, config) = wf::checkpoint_method(path)?;
    let owner = modality_of(&method).with_context(|| {
        format!(
            "{}: a checkpoint of method '{method}', which this selfsup does not know; the \
             methods are:\n{}",
            path.display(),
            method_names()
        )
    })?;
    Ok((owner, method, config))
}

/// `--device` for eval / export: the flag, else `auto` (never the
/// checkpoint's `[run] device`: a GPU run's checkpoint must load on a
/// machine without one).
fn device_choice(flag: Option<&str>) -> Result<DeviceChoice> {
    Ok(match flag {
        Some(d) => d.parse::<DeviceChoice>()?,
        None => DeviceChoice::Auto,
    })
}

fn eval(
    protocol: &str,
    checkpoint: &Path,
    data: Option<&Path>,
    device: Option<&str>,
    sets: &[String],
) -> Result<()> {
    let (owner, method, config) = checkpoint_owner(checkpoint)?;
    let config = with_eval_sets(&config, sets)
        .with_context(|| format!("{}: its stored config", checkpoint.display()))?;
    let offered = owner.evaluations();
    if !offered.contains(&protocol) {
        let run_dir = checkpoint
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let what = if offered.is_empty() {
            "no evaluation on a checkpoint".to_string()
        } else {
            format!("`selfsup eval {}`", offered.join("|"))
        };
        anyhow::bail!(
            "{} is a {} checkpoint (method '{method}'): it offers {what}, not '{protocol}'; its \
             pretrain run's evaluations are in {}",
            checkpoint.display(),
            owner.name(),
            run_dir.join(selfsup_core::run::SUMMARY_FILE).display()
        );
    }
    let lines = owner.evaluate(&EvalRequest {
        protocol,
        checkpoint,
        config_toml: &config,
        data,
        device: device_choice(device)?,
    })?;
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// The stored config with `selfsup eval --set` applied: only keys under
/// `eval.` (the rest says how the checkpoint was trained); unchanged text
/// when there is none.
fn with_eval_sets(config: &str, sets: &[String]) -> Result<String> {
    if sets.is_empty() {
        return Ok(config.to_string());
    }
    let mut value: toml::Value = toml::from_str(config).context("parsing it as TOML")?;
    for set in sets {
        if !set.starts_with("eval.") {
            anyhow::bail!(
                "--set {set}: selfsup eval changes only the [eval] tables (keys starting with \
                 eval., e.g. --set eval.finetune.steps=300); the other settings describe how \
                 the checkpoint was trained"
            );
        }
        config_file::apply_set(&mut value, set)?;
    }
    toml::to_string(&value).context("writing it back as TOML")
}

fn export(checkpoint: &Path, out: &Path) -> Result<()> {
    let (owner, _, config) = checkpoint_owner(checkpoint)?;
    println!("{}", owner.export(checkpoint, &config, out)?);
    Ok(())
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
        } => pretrain::run(pretrain::Args {
            config,
            set,
            data,
            recordings,
            run_dir,
            resume,
            resume_auto,
            overwrite,
            allow_config_change,
            overrides: Overrides {
                epochs,
                device: device.as_deref().map(str::parse).transpose()?,
                batch_size,
                threads,
            },
            stop_after,
            backend,
            dist_timeout,
        }),
        Cmd::Eval {
            protocol,
            checkpoint,
            data,
            device,
            set,
        } => eval(
            &protocol,
            &checkpoint,
            data.as_deref(),
            device.as_deref(),
            &set,
        ),
        Cmd::Export { checkpoint, out } => export(&checkpoint, &out),
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
        Cmd::Generate {
            run,
            prompt,
            max_new_tokens,
            top_k,
            temperature,
            seed,
            device,
        } => generate::run(generate::Args {
            run,
            prompt,
            max_new_tokens,
            top_k,
            temperature,
            seed,
            device,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without `--device`, eval / export resolve `auto` whatever the
    /// checkpoint's config says, so a GPU run's checkpoint loads on a CPU.
    #[test]
    fn eval_and_export_default_to_auto_not_the_checkpoint_device() {
        assert_eq!(device_choice(None).unwrap(), DeviceChoice::Auto);
        assert_eq!(device_choice(Some("cpu")).unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            device_choice(Some("cuda:1")).unwrap(),
            DeviceChoice::CudaIndex(1)
        );
        assert!(device_choice(Some("gpu")).is_err());
        device_choice(None).unwrap().resolve().unwrap();
    }

    /// `selfsup eval --set` changes [eval] values of the stored config and
    /// refuses every other key, naming it.
    #[test]
    fn eval_sets_change_only_the_eval_tables() {
        let stored = "[method]\nname = \"simclr\"\n\n[eval.finetune]\nsteps = 100\n";
        assert_eq!(with_eval_sets(stored, &[]).unwrap(), stored);
        let changed = with_eval_sets(
            stored,
            &[
                "eval.finetune.steps=300".into(),
                "eval.finetune.scored_on=\"validation\"".into(),
            ],
        )
        .unwrap();
        let v: toml::Value = toml::from_str(&changed).unwrap();
        assert_eq!(v["eval"]["finetune"]["steps"].as_integer(), Some(300));
        assert_eq!(
            v["eval"]["finetune"]["scored_on"].as_str(),
            Some("validation")
        );
        assert_eq!(v["method"]["name"].as_str(), Some("simclr"));
        for bad in ["method.name=byol", "trainer.epochs=3", "evaluate.x=1"] {
            let err = with_eval_sets(stored, &[bad.into()])
                .unwrap_err()
                .to_string();
            assert!(err.contains(bad) && err.contains("[eval]"), "{err}");
        }
    }

    /// Every modality's methods are owned by exactly one registry entry.
    #[test]
    fn each_method_name_has_one_owner() {
        let mut seen = std::collections::BTreeMap::new();
        for m in REGISTRY {
            assert!(!m.methods().is_empty(), "{}", m.name());
            for name in m.methods() {
                assert!(seen.insert(*name, m.name()).is_none(), "{name} twice");
            }
        }
        for name in ["simclr", "mlm", "grace", "wav2vec2", "clip"] {
            assert!(modality_of(name).is_some(), "{name}");
        }
    }
}
