//! The audio workflow: folders of recordings -> 16 kHz clips -> random crops
//! -> wav2vec 2.0 -> trainer -> collapse monitors and codebook perplexity
//! every epoch -> linear probes on held-out speakers beside random weights
//! and log-mel -> export. The `selfsup` binary calls this; it reads no argv
//! or environment and draws nothing.
use crate::batch::CropBatches;
use crate::dataset::{labelled_files, load_clips, unlabelled_files, Clip, LoadReport};
use crate::eval::{probe, AudioEpochEval, ProbeRow, ProbeTask};
use crate::export::export_wav2vec2;
use crate::methods::{Wav2Vec2Method, Wav2Vec2MethodConfig};
use crate::model::Wav2Vec2Config;
use crate::read::{ReadLimits, DEFAULT_MAX_SECONDS};
use crate::resample::TARGET_RATE;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use selfsup_core::device::{describe, DeviceChoice};
use selfsup_core::eval::LinearProbeConfig;
use selfsup_core::method::Method;
use selfsup_core::trainer::{Trainer, TrainerConfig};
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// `[data]`: the recordings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Folders of `.wav` / `.ogg` files (searched recursively), relative to
    /// the data root (`--data`).
    pub sources: Vec<String>,
    /// Length of the random training crops, seconds.
    pub crop_seconds: f64,
    /// Skip (and count) unreadable files instead of stopping.
    pub skip_bad: bool,
    /// Clips held out of training for the per-epoch monitors.
    pub monitor_clips: usize,
    /// Pre-train on at most N clips (all when absent).
    pub max_clips: Option<usize>,
    /// The longest clip a file may hold, seconds (checked from its header
    /// before decoding: a longer file is an error, or skipped with `skip_bad`).
    pub max_seconds: f64,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            crop_seconds: 1.0,
            skip_bad: false,
            monitor_clips: 128,
            max_clips: None,
            max_seconds: DEFAULT_MAX_SECONDS,
        }
    }
}

/// Where a probe clip's label comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LabelFrom {
    /// The labels CSV's label, or the lower-cased file stem (`A.ogg` -> `a`).
    #[default]
    Stem,
    /// The last character of that (`ba.ogg` -> `a`: the vowel of a CV syllable).
    StemLastChar,
}

/// One labelled probe task (`[[eval.tasks]]`): train and test folders of
/// different speakers. The test folders are also kept out of pre-training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeTaskConfig {
    pub name: String,
    pub train: Vec<String>,
    pub test: Vec<String>,
    /// A labels CSV inside every folder (`file,label`); without it a clip's
    /// label is its lower-cased file stem.
    #[serde(default)]
    pub labels_csv: Option<String>,
    #[serde(default)]
    pub label_from: LabelFrom,
    /// Keep only files whose stem has exactly this many characters
    /// (KLettres: 1 keeps the plain letters, 2 the CV syllables).
    #[serde(default)]
    pub stem_chars: Option<usize>,
    /// Keep only clips with one of these labels (all when absent).
    #[serde(default)]
    pub labels: Option<Vec<String>>,
}

/// `[eval]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    pub probe: LinearProbeConfig,
    pub tasks: Vec<ProbeTaskConfig>,
    /// Probe features use at most this many seconds of each clip.
    pub max_seconds: f64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            probe: LinearProbeConfig::default(),
            tasks: Vec::new(),
            max_seconds: 4.0,
        }
    }
}

/// `[run]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    pub device: DeviceChoice,
    /// Crops per batch.
    pub batch_size: usize,
    /// libtorch intra-op threads (default: libtorch's choice).
    pub threads: Option<usize>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            device: DeviceChoice::Auto,
            batch_size: 16,
            threads: None,
        }
    }
}

/// `[method]`: the audio methods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum AudioMethodConfig {
    /// wav2vec 2.0.
    Wav2vec2(Wav2Vec2MethodConfig),
}

impl Default for AudioMethodConfig {
    fn default() -> Self {
        AudioMethodConfig::Wav2vec2(Wav2Vec2MethodConfig::default())
    }
}

/// A whole audio run, as one TOML file (see `configs/audio/`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioRunConfig {
    pub run: RunConfig,
    pub data: DataConfig,
    pub model: Wav2Vec2Config,
    pub method: AudioMethodConfig,
    pub trainer: TrainerConfig,
    pub eval: EvalConfig,
}

impl AudioRunConfig {
    /// Parses a config; unknown keys and impossible values are errors naming the file.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let cfg: Self = toml::from_str(text)
            .map_err(|e| Error::Config(format!("{}: {e}", origin.display())))?;
        cfg.validate()
            .map_err(|e| Error::Config(format!("{}: {e}", origin.display())))?;
        Ok(cfg)
    }

    /// Checks what serde cannot (every range, before any data is read); the
    /// message names the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        use selfsup_core::trainer::positive;
        let cfg = self;
        cfg.model.validate()?;
        let AudioMethodConfig::Wav2vec2(method) = &cfg.method;
        method.validate()?;
        positive("[data] crop_seconds", cfg.data.crop_seconds)?;
        positive("[data] max_seconds", cfg.data.max_seconds)?;
        positive("[eval] max_seconds", cfg.eval.max_seconds)?;
        if cfg.run.batch_size < 1 {
            return Err("[run] batch_size = 0: give at least 1 crop per batch".into());
        }
        if cfg.data.max_clips == Some(0) {
            return Err(
                "[data] max_clips = 0: give at least 1 (or leave it out for all clips)".into(),
            );
        }
        cfg.eval.probe.validate("[eval.probe]")?;
        selfsup_core::run::common_ranges(&cfg.trainer, cfg.run.threads)?;
        let crop = (cfg.data.crop_seconds * TARGET_RATE as f64) as i64;
        if cfg.model.frames(crop) < cfg.model.mask_time_length.saturating_mul(2) {
            return Err(format!(
                "[data] crop_seconds = {} gives {} latent frames, fewer than two masked spans of {}",
                cfg.data.crop_seconds,
                cfg.model.frames(crop),
                cfg.model.mask_time_length
            ));
        }
        Ok(())
    }

    /// The resolved config as TOML (saved beside every checkpoint).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# unserialisable config: {e}"))
    }
}

/// What an audio run produced (also written as `summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct AudioRunSummary {
    pub method: String,
    pub device: String,
    pub threads: Option<usize>,
    pub data: LoadReport,
    pub train_clips: usize,
    pub monitor_clips: usize,
    /// Clips of probe test folders kept out of pre-training.
    pub held_out_clips: usize,
    pub crop_seconds: f64,
    pub batch_size: usize,
    pub parameters: i64,
    pub epochs: usize,
    pub steps: u64,
    pub final_loss: f64,
    pub load_seconds: f64,
    pub train_seconds: f64,
    /// Seconds of (cropped) audio trained on per second.
    pub audio_seconds_per_s: f64,
    pub wall_seconds: f64,
    /// Per-codebook perplexity (hard choices, monitor clips) at the last epoch.
    pub codebook_perplexity: Vec<f64>,
    pub codebook_entries: i64,
    pub probes: Vec<ProbeRow>,
    pub warnings: Vec<String>,
    pub export_dir: PathBuf,
}

pub use selfsup_core::run::RunOptions;

fn under_any(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| path.starts_with(r))
}

fn probe_clips(
    folders: &[String],
    t: &ProbeTaskConfig,
    root: &Path,
    skip_bad: bool,
    limits: &ReadLimits,
    report: &mut LoadReport,
) -> Result<Vec<Clip>> {
    let mut files = Vec::new();
    for f in folders {
        let dir = root.join(f);
        let csv = t.labels_csv.as_ref().map(|c| dir.join(c));
        files.extend(labelled_files(&dir, csv.as_deref(), skip_bad, report)?);
    }
    if let Some(n) = t.stem_chars {
        files.retain(|(p, _)| {
            p.file_stem()
                .is_some_and(|s| s.to_string_lossy().chars().count() == n)
        });
    }
    if t.label_from == LabelFrom::StemLastChar {
        for (_, label) in files.iter_mut() {
            *label = label
                .as_ref()
                .and_then(|l| l.chars().last())
                .map(String::from);
        }
    }
    if let Some(keep) = &t.labels {
        files.retain(|(_, l)| l.as_ref().is_some_and(|l| keep.contains(l)));
    }
    let (clips, r) = load_clips(&files, skip_bad, limits)?;
    report.merge(&r);
    Ok(clips)
}

/// Every source and probe folder of `cfg` must be a folder under `root`: a
/// mistyped one is an error naming it and the data root, before any file is
/// read (never a silent fallback to the whole tree).
fn check_folders(cfg: &AudioRunConfig, root: &Path) -> Result<()> {
    let folders = cfg
        .data
        .sources
        .iter()
        .map(|s| ("[data] sources", s))
        .chain(cfg.eval.tasks.iter().flat_map(|t| {
            t.train
                .iter()
                .map(|f| ("[[eval.tasks]] train", f))
                .chain(t.test.iter().map(|f| ("[[eval.tasks]] test", f)))
        }));
    for (key, f) in folders {
        let dir = root.join(f);
        if !dir.is_dir() {
            return Err(Error::Data(format!(
                "{key}: folder \"{f}\" is not there: {} is not a folder under the data root {} (check the spelling, fetch the data with `cargo xtask fetch <dataset>`, or pass --data)",
                dir.display(),
                root.display()
            )));
        }
    }
    Ok(())
}

/// Warnings the trainer's embedding monitors cannot give: codebooks
/// collapsing toward one entry, a loss that stopped moving.
fn codebook_and_loss_warnings(history: &[Vec<f64>], epoch_losses: &[f64]) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(last) = history.last() {
        for (g, &p) in last.iter().enumerate() {
            if p < 2.0 {
                out.push(format!(
                    "possible codebook collapse: codebook {g} uses about {p:.2} entries (perplexity of its hard choices on the monitor clips)"
                ));
            }
        }
    }
    if epoch_losses.len() >= 3 {
        let first = epoch_losses[0];
        let last = epoch_losses[epoch_losses.len() - 1];
        if (first - last).abs() < 0.01 * first.abs().max(1e-9) {
            out.push(format!(
                "the loss stopped moving: mean epoch loss {first:.4} at epoch 1, {last:.4} at the end"
            ));
        }
    }
    out
}

/// Pre-trains, evaluates and exports as `cfg` says.
pub fn pretrain(cfg: &AudioRunConfig, opts: RunOptions) -> Result<AudioRunSummary> {
    selfsup_core::run::check_common(&cfg.trainer, cfg.run.threads)?;
    cfg.validate().map_err(Error::Config)?;
    opts.single_process("audio pre-training")?;
    let wall = Instant::now();
    if cfg.data.sources.is_empty() {
        return Err(Error::Config(
            "[data] has no sources (add sources = [\"<folder of .wav/.ogg>\"])".into(),
        ));
    }
    let root = &opts.data_root;
    check_folders(cfg, root)?;
    if let Some(t) = cfg.run.threads {
        tch::set_num_threads(t as i32);
    }
    let device = cfg.run.device.resolve()?;
    let AudioMethodConfig::Wav2vec2(method_cfg) = &cfg.method;
    let seed = cfg.trainer.seed;
    let limits = ReadLimits {
        max_seconds: cfg.data.max_seconds,
    };
    let held_out: Vec<PathBuf> = cfg
        .eval
        .tasks
        .iter()
        .flat_map(|t| t.test.iter().map(|f| root.join(f)))
        .collect();
    let t_load = Instant::now();
    let mut files = Vec::new();
    for s in &cfg.data.sources {
        let dir = if s == "." {
            root.to_path_buf()
        } else {
            root.join(s)
        };
        files.extend(unlabelled_files(&dir)?);
    }
    let before = files.len();
    files.retain(|(p, _)| !under_any(p, &held_out));
    let held_out_clips = before - files.len();
    (opts.log)(&format!(
        "reading {} audio files from {} source(s) under {} ({} of probe test speakers kept out)",
        files.len(),
        cfg.data.sources.len(),
        root.display(),
        held_out_clips
    ));
    let (clips, mut report) = load_clips(&files, cfg.data.skip_bad, &limits)?;
    let mut order: Vec<usize> = (0..clips.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0xA0D10));
    let n_monitor = cfg.data.monitor_clips.min(clips.len() / 10);
    let monitor: Vec<Vec<f32>> = order[..n_monitor]
        .iter()
        .map(|&i| clips[i].samples.clone())
        .collect();
    let mut train_idx: Vec<usize> = order[n_monitor..].to_vec();
    if let Some(n) = cfg.data.max_clips {
        train_idx.truncate(n);
    }
    train_idx.sort_unstable();
    let train: Vec<Vec<f32>> = train_idx
        .iter()
        .map(|&i| clips[i].samples.clone())
        .collect();
    drop(clips);
    (opts.log)(&format!(
        "{} clips ({:.0} s of audio, {} resampled to 16 kHz, {} skipped): {} train, {} monitor ({:.1} s)",
        report.clips,
        report.seconds,
        report.resampled,
        report.skipped,
        train.len(),
        monitor.len(),
        t_load.elapsed().as_secs_f64()
    ));
    for w in &report.skipped_examples {
        (opts.log)(&format!("  skipped: {w}"));
    }
    if train.len() < cfg.run.batch_size {
        return Err(Error::Data(format!(
            "{} training clips under {} ({} read, {} skipped, {} monitor), fewer than one batch of {} (lower [run] batch_size or add recordings)",
            train.len(),
            root.display(),
            report.clips,
            report.skipped,
            monitor.len(),
            cfg.run.batch_size
        )));
    }
    let crop = (cfg.data.crop_seconds * TARGET_RATE as f64) as usize;
    let batches = CropBatches::new(Arc::new(train), crop, cfg.run.batch_size, seed);
    let train_clips = batches.len();
    tch::manual_seed(seed as i64);
    let mut method = Wav2Vec2Method::new(&cfg.model, method_cfg, seed, device);
    let parameters: i64 = method
        .var_store()
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum();
    let mut evaluator = AudioEpochEval {
        clips: monitor,
        crop,
        batch: cfg.run.batch_size,
        device,
        perplexity_history: Vec::new(),
    };
    let trainer = Trainer::new(cfg.trainer.clone(), &opts.run_dir, device)
        .with_stop_flag(opts.stop)
        .with_provenance(cfg.to_toml(), opts.git_commit);
    (opts.log)(&format!(
        "training wav2vec2: {} conv layers, {} transformer layers, hidden {}, {}x{} codebook, {:.2} M parameters, on {}",
        cfg.model.conv_dim.len(),
        cfg.model.num_hidden_layers,
        cfg.model.hidden_size,
        cfg.model.num_codevector_groups,
        cfg.model.num_codevectors_per_group,
        parameters as f64 / 1e6,
        describe(device)
    ));
    let load_seconds = t_load.elapsed().as_secs_f64();
    let summary = trainer.fit(
        &mut method,
        &batches,
        &mut evaluator,
        opts.observer,
        opts.resume,
    )?;
    let epoch_losses: Vec<f64> = summary.epochs.iter().map(|e| e.mean_loss).collect();
    let mut warnings = summary.warnings.clone();
    warnings.extend(codebook_and_loss_warnings(
        &evaluator.perplexity_history,
        &epoch_losses,
    ));

    let mut probes = Vec::new();
    if !cfg.eval.tasks.is_empty() {
        tch::manual_seed(seed as i64 ^ 0x0BAD_5EED);
        let random = Wav2Vec2Method::new(&cfg.model, method_cfg, seed, device);
        let max_samples = (cfg.eval.max_seconds * TARGET_RATE as f64) as usize;
        for t in &cfg.eval.tasks {
            (opts.log)(&format!("downstream: linear probes on {}", t.name));
            let task = ProbeTask {
                name: t.name.clone(),
                train: probe_clips(&t.train, t, root, cfg.data.skip_bad, &limits, &mut report)?,
                test: probe_clips(&t.test, t, root, cfg.data.skip_bad, &limits, &mut report)?,
            };
            probes.push(probe(
                &task,
                &method,
                &random,
                &cfg.eval.probe,
                max_samples,
                device,
            )?);
        }
    }
    let export_dir = opts.run_dir.join("export");
    export_wav2vec2(&method, &export_dir)?;
    Ok(AudioRunSummary {
        method: "wav2vec2".into(),
        device: describe(device),
        threads: cfg.run.threads,
        data: report,
        train_clips,
        monitor_clips: evaluator.clips.len(),
        held_out_clips,
        crop_seconds: cfg.data.crop_seconds,
        batch_size: cfg.run.batch_size,
        parameters,
        epochs: cfg.trainer.epochs,
        steps: summary.steps,
        final_loss: summary.final_loss,
        load_seconds,
        train_seconds: summary.train_seconds,
        audio_seconds_per_s: summary.samples_per_s * cfg.data.crop_seconds,
        wall_seconds: wall.elapsed().as_secs_f64(),
        codebook_perplexity: evaluator
            .perplexity_history
            .last()
            .cloned()
            .unwrap_or_default(),
        codebook_entries: cfg.model.num_codevectors_per_group,
        probes,
        warnings,
        export_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset(name: &str) -> (String, PathBuf) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../configs/audio")
            .join(name);
        (std::fs::read_to_string(&path).unwrap(), path)
    }

    #[test]
    fn presets_parse_and_round_trip() {
        for name in ["cpu.toml", "gpu.toml"] {
            let (text, path) = preset(name);
            let cfg = AudioRunConfig::from_toml(&text, &path).unwrap();
            assert_eq!(cfg.eval.tasks.len(), 2, "{name}");
            assert_eq!(cfg.model.receptive_field(), 400);
            let again = AudioRunConfig::from_toml(&cfg.to_toml(), &path).unwrap();
            assert_eq!(again, cfg);
        }
    }

    #[test]
    fn unknown_keys_and_impossible_values_are_refused_naming_the_file() {
        let (text, path) = preset("cpu.toml");
        let bad = text.replace(
            "[method]\nname = \"wav2vec2\"",
            "[method]\nname = \"wav2vec2\"\ntemprature = 1.0",
        );
        let err = AudioRunConfig::from_toml(&bad, &path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cpu.toml") && err.contains("temprature"),
            "{err}"
        );
        let bad = text.replace("crop_seconds = ", "crop_seconds = 0.1 #");
        let err = AudioRunConfig::from_toml(&bad, &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("crop_seconds"), "{err}");
        let bad = text.replace("name = \"wav2vec2\"", "name = \"hubert\"");
        assert!(AudioRunConfig::from_toml(&bad, &path).is_err());
    }

    #[test]
    fn out_of_range_settings_are_refused_before_any_data_naming_the_key() {
        let (text, path) = preset("cpu.toml");
        for (from, to, want) in [
            (
                "crop_seconds = 1.0",
                "crop_seconds = 0.0",
                "crop_seconds = 0",
            ),
            (
                "crop_seconds = 1.0",
                "crop_seconds = nan",
                "crop_seconds = NaN",
            ),
            ("batch_size = 16", "batch_size = 0", "batch_size = 0"),
            // Found by the fuzzer: `2 * mask_time_length` overflowed.
            (
                "mask_time_length = 10",
                "mask_time_length = 9223372036854775807",
                "fewer than two masked spans",
            ),
            (
                "gumbel_temperature_decay = 0.998",
                "gumbel_temperature_decay = 0.0",
                "gumbel_temperature_decay = 0",
            ),
            (
                "min_gumbel_temperature = 0.5",
                "min_gumbel_temperature = 3.0",
                "below min_gumbel_temperature",
            ),
            (
                "mask_time_prob = 0.65",
                "mask_time_prob = 2.0",
                "mask_time_prob = 2",
            ),
            (
                "max_seconds = 600.0",
                "max_seconds = -1.0",
                "[data] max_seconds = -1",
            ),
        ] {
            assert!(text.contains(from), "{from}");
            let bad = text.replacen(from, to, 1);
            let err = AudioRunConfig::from_toml(&bad, &path)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("cpu.toml") && err.contains(want),
                "{want}: {err}"
            );
        }
    }

    fn run_opts<'a>(
        data_root: &Path,
        run_dir: &Path,
        observer: &'a mut selfsup_core::trainer::Silent,
        log: &'a mut dyn FnMut(&str),
    ) -> RunOptions<'a> {
        RunOptions {
            data_root: data_root.to_path_buf(),
            run_dir: run_dir.to_path_buf(),
            resume: false,
            observer,
            stop: Default::default(),
            git_commit: None,
            log,
            distributed: None,
        }
    }

    #[test]
    fn a_missing_source_folder_is_an_error_naming_it_and_the_data_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("klettres")).unwrap();
        let (text, path) = preset("cpu.toml");
        let mut cfg = AudioRunConfig::from_toml(&text, &path).unwrap();
        cfg.data.sources = vec!["klettres".into(), "ktuberlin".into()];
        cfg.eval.tasks.clear();
        let mut obs = selfsup_core::trainer::Silent;
        let mut log = |_: &str| {};
        let err = pretrain(
            &cfg,
            run_opts(dir.path(), &dir.path().join("run"), &mut obs, &mut log),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Data(_)), "{err}");
        let err = err.to_string();
        assert!(
            err.contains("\"ktuberlin\"") && err.contains(&dir.path().display().to_string()),
            "{err}"
        );
        // The trainer's own ranges are checked first (check_common).
        cfg.trainer.epochs = 0;
        let err = pretrain(
            &cfg,
            run_opts(dir.path(), &dir.path().join("run"), &mut obs, &mut log),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("epochs = 0"), "{err}");
    }

    #[test]
    fn the_codebook_and_plateau_warnings_fire() {
        let w = codebook_and_loss_warnings(&[vec![30.0, 1.2]], &[3.0, 2.0, 1.0]);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("codebook 1"), "{w:?}");
        let w = codebook_and_loss_warnings(&[vec![30.0, 30.0]], &[3.0, 3.001, 2.999]);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("stopped moving"), "{w:?}");
        assert!(codebook_and_loss_warnings(&[vec![30.0, 30.0]], &[3.0, 2.5, 2.0]).is_empty());
    }
}
