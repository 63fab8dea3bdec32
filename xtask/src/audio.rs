//! `cargo xtask pretrain-audio`: runs `selfsup pretrain` on
//! `configs/audio/<preset>.toml` (default `cpu`: wav2vec 2.0 tiny on the
//! KLettres and KTuberling recordings), fetching both Debian packages'
//! recordings unless `--data` names a root, or on the user's own folder of
//! recordings with `--recordings DIR`.
//!
//! `cargo xtask bench --audio` runs the `cpu` preset (threads 2) into
//! `target/bench/audio-run`, then transformers' `Wav2Vec2ForPreTraining` with
//! the same `[model]`, batch, crop, optimiser and threads
//! (`benchmarks/hf_wav2vec2.py`), and prints seconds of audio per second of
//! both (also `target/bench/audio.md` and `audio.json`).
use crate::bench::{ensure_bench_venv, json_of};
use crate::{
    build_cli, fetch, paths, preset_config, run, selfsup_pretrain, torch_env, PretrainArgs,
};
use anyhow::{Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Options of `cargo xtask pretrain-audio`.
#[derive(clap::Args)]
pub struct PretrainAudioArgs {
    /// configs/audio/<preset>.toml: cpu (default, ~10 minutes on 2 cores) or gpu.
    #[arg(long, default_value = "cpu")]
    preset: String,
    /// wav2vec2 (default: configs/audio/<preset>.toml) or cpc
    /// (configs/audio/cpc-<preset>.toml).
    #[arg(long, default_value = "wav2vec2", value_parser = ["wav2vec2", "cpc"])]
    method: String,
    /// A data root holding the preset's source folders (default:
    /// ~/.cache/selfsup/datasets, fetched as needed); a missing source folder
    /// is an error naming it.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Your own folder of .wav / .ogg recordings: pre-trained on instead of
    /// the preset's sources (the KLettres probes are dropped).
    #[arg(long, conflicts_with = "data")]
    recordings: Option<PathBuf>,
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
}

/// The registry datasets of the audio presets.
const DATASETS: [&str; 2] = ["klettres", "ktuberling"];

/// Runs `selfsup pretrain` on `configs/audio/<preset>.toml`; returns the config path.
fn pretrain(
    preset: &str,
    data: Option<PathBuf>,
    run_dir: &Path,
    opts: &PretrainArgs,
) -> Result<PathBuf> {
    let config = preset_config(&format!("audio/{preset}.toml"))?;
    let env = torch_env::ensure()?;
    let data = match data {
        Some(d) => d,
        None => {
            for name in DATASETS {
                fetch::fetch(name, false)?;
            }
            paths::cache_dir().join("datasets")
        }
    };
    let bin = build_cli(&env)?;
    let mut cmd = selfsup_pretrain(&bin, &config, &data, run_dir, opts);
    env.apply(&mut cmd);
    run(&mut cmd)?;
    Ok(config)
}

/// `cargo xtask pretrain-audio`.
pub fn pretrain_audio(a: PretrainAudioArgs) -> Result<()> {
    let run_dir = a.run_dir.unwrap_or_else(|| {
        paths::workspace_root()
            .join("runs")
            .join(format!("{}-{}", a.method, a.preset))
    });
    let preset = match a.method.as_str() {
        "wav2vec2" => a.preset.clone(),
        m => format!("{m}-{}", a.preset),
    };
    let opts = PretrainArgs {
        epochs: a.epochs,
        device: a.device,
        threads: None,
        resume: a.resume,
        overwrite: a.overwrite,
        recordings: a.recordings.is_some(),
    };
    pretrain(&preset, a.recordings.or(a.data), &run_dir, &opts).map(|_| ())
}

/// `cargo xtask bench --audio`.
pub fn bench(epochs: Option<usize>) -> Result<()> {
    let py = ensure_bench_venv()?;
    let out_dir = paths::target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let run_dir = out_dir.join("audio-run");
    let _ = std::fs::remove_dir_all(&run_dir);
    let threads = 2;
    let opts = PretrainArgs {
        epochs,
        device: Some("cpu".into()),
        threads: Some(threads),
        resume: false,
        overwrite: true,
        recordings: false,
    };
    let config = pretrain("cpu", None, &run_dir, &opts)?;
    let summary_path = run_dir.join("summary.json");
    let ours: Value = serde_json::from_str(
        &std::fs::read_to_string(&summary_path)
            .with_context(|| format!("reading {}", summary_path.display()))?,
    )
    .with_context(|| format!("parsing {}", summary_path.display()))?;
    let script = paths::workspace_root().join("benchmarks/hf_wav2vec2.py");
    let hf = json_of(
        Command::new(&py)
            .arg(&script)
            .arg("--config")
            .arg(&config)
            .args(["--steps", "30", "--threads", &threads.to_string()])
            .env("OMP_NUM_THREADS", threads.to_string()),
    )?;
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let (ours_aps, hf_aps) = (
        f(&ours, "audio_seconds_per_s"),
        f(&hf, "audio_seconds_per_s"),
    );
    let transformers = hf["transformers"].as_str().unwrap_or("?");
    let mut md = format!(
        "wav2vec 2.0 pre-training on the CPU ({}), {} parameters, batch {} x {} samples, {threads} threads, float32.\n\n",
        config.display(),
        ours["parameters"],
        ours["batch_size"],
        hf["crop_samples"],
    );
    md += "| | audio s / s | peak RSS MB | wall s |\n|---|---|---|---|\n";
    md += &format!(
        "| selfsup | {ours_aps:.1} | {:.0} | {:.0} |\n",
        f(&ours, "peak_rss_mb"),
        f(&ours, "wall_seconds")
    );
    md += &format!(
        "| transformers {transformers} Wav2Vec2ForPreTraining | {hf_aps:.1} | {:.0} | {:.0} |\n",
        f(&hf, "peak_rss_mb"),
        f(&hf, "seconds")
    );
    md += &format!(
        "| ratio selfsup / transformers | {:.2}x | | |\n",
        ours_aps / hf_aps
    );
    md += &format!(
        "\nselfsup: over its whole training on the KLettres + KTuberling crops (wall time of the whole run: decoding, training, probes, export), counting the audio actually in each crop: a clip shorter than the {} s crop counts its own length (mean {:.3} s per crop), though its batch is padded. transformers: {} timed steps on noise crops of the full length, no padding (benchmarks/hf_wav2vec2.py), so its audio s / s counts every sample it computes on while selfsup's does not count its padding.\n",
        ours["crop_seconds"],
        f(&ours, "mean_crop_seconds"),
        hf["steps"]
    );
    println!("\n{md}");
    std::fs::write(out_dir.join("audio.md"), &md)?;
    std::fs::write(
        out_dir.join("audio.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "selfsup": ours,
            "transformers": hf,
            "ratio_audio_seconds_per_s": ours_aps / hf_aps,
        }))?,
    )?;
    println!("written {}", out_dir.join("audio.md").display());
    Ok(())
}
