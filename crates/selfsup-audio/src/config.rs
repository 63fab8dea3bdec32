//! The audio run's config file: `[run]`, `[data]`, `[model]`, `[method]`,
//! `[trainer]`, `[eval]` (see `configs/audio/`), parsed and checked before
//! any data is read; `--recordings` applied to it.
use crate::methods::{CpcMethodConfig, Wav2Vec2MethodConfig};
use crate::model::Wav2Vec2Config;
use crate::read::DEFAULT_MAX_SECONDS;
use crate::resample::TARGET_RATE;
use selfsup_core::eval::finetune::{settings_over, FinetuneConfig};
use selfsup_core::eval::LinearProbeConfig;
use selfsup_core::optim::{OptimConfig, OptimKind};
use selfsup_core::run::{BatchDefault, RunSettings};
use selfsup_core::schedule::LrSchedule;
use selfsup_core::trainer::TrainerConfig;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize};
use std::path::Path;

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
    /// Share of each task's training speakers (folders) set aside, whole,
    /// as the validation part every layer is scored on (the layer reported
    /// on the test speakers is the best there), in `(0, 1)`; at least one.
    pub validation_fraction: f64,
    /// Seed of the validation speakers' draw.
    pub split_seed: u64,
    /// `[eval.finetune]`: `selfsup eval finetune` ([`crate::finetune`]);
    /// audio's own defaults ([`default_settings`]), a key
    /// left out keeps its audio default.
    #[serde(
        deserialize_with = "deserialize_settings",
        skip_serializing_if = "is_default_settings"
    )]
    pub finetune: FinetuneConfig,
    /// The `[[eval.tasks]]` name `selfsup eval finetune` trains on (the
    /// first task when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finetune_task: Option<String>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            probe: LinearProbeConfig::default(),
            tasks: Vec::new(),
            max_seconds: 4.0,
            validation_fraction: 0.2,
            split_seed: 0,
            finetune: default_settings(),
            finetune_task: None,
        }
    }
}

/// Audio's default `[run] batch_size`: 16 crops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Crops;

impl BatchDefault for Crops {
    const BATCH: usize = 16;
}

/// `[run]`: core's run settings, batches of crops.
pub type RunConfig = RunSettings<Crops>;

/// `[method]`: the audio methods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum AudioMethodConfig {
    /// wav2vec 2.0.
    Wav2vec2(Wav2Vec2MethodConfig),
    /// Contrastive Predictive Coding (the encoder's conv layers are `[model]`'s).
    Cpc(CpcMethodConfig),
}

impl Default for AudioMethodConfig {
    fn default() -> Self {
        AudioMethodConfig::Wav2vec2(Wav2Vec2MethodConfig::default())
    }
}

impl AudioMethodConfig {
    /// Every `[method] name` of the audio methods (one per variant).
    pub const NAMES: &'static [&'static str] = &["wav2vec2", "cpc"];

    /// This method's `[method] name`.
    pub fn name(&self) -> &'static str {
        match self {
            AudioMethodConfig::Wav2vec2(_) => "wav2vec2",
            AudioMethodConfig::Cpc(_) => "cpc",
        }
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
        match &cfg.method {
            AudioMethodConfig::Wav2vec2(method) => method.validate()?,
            AudioMethodConfig::Cpc(method) => {
                method.validate()?;
                method.check_crops(&cfg.model, cfg.data.crop_seconds, cfg.run.batch_size)?;
            }
        }
        positive("[data] crop_seconds", cfg.data.crop_seconds)?;
        positive("[data] max_seconds", cfg.data.max_seconds)?;
        positive("[eval] max_seconds", cfg.eval.max_seconds)?;
        if cfg.run.batch_size < 1 {
            return Err("[run] batch_size = 0: give at least 1 crop per batch".into());
        }
        cfg.run.check()?;
        cfg.run.refuse_steps_per_epoch("audio")?;
        if cfg.data.max_clips == Some(0) {
            return Err(
                "[data] max_clips = 0: give at least 1 (or leave it out for all clips)".into(),
            );
        }
        cfg.eval.probe.validate("[eval.probe]")?;
        selfsup_core::eval::split::check_fraction(
            "[eval] validation_fraction",
            cfg.eval.validation_fraction,
        )?;
        if let Some(t) = cfg.eval.tasks.iter().find(|t| t.train.len() < 2) {
            return Err(format!(
                "[[eval.tasks]] {}: train = {:?} lists {} folder(s): the probe's layer is chosen \
                 on validation speakers kept out of its training, so give at least two training \
                 folders (one speaker each)",
                t.name,
                t.train,
                t.train.len()
            ));
        }
        cfg.eval.finetune.validate()?;
        if let Some(name) = &cfg.eval.finetune_task {
            if !cfg.eval.tasks.iter().any(|t| &t.name == name) {
                return Err(format!(
                    "[eval] finetune_task = {name:?} names no [[eval.tasks]] (the tasks: {}); give \
                     one of their names, or leave it out for the first",
                    cfg.eval
                        .tasks
                        .iter()
                        .map(|t| format!("{:?}", t.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        selfsup_core::run::common_ranges(&cfg.trainer, cfg.run.threads)?;
        let crop = (cfg.data.crop_seconds * TARGET_RATE as f64) as i64;
        let wav2vec2 = matches!(cfg.method, AudioMethodConfig::Wav2vec2(_));
        if wav2vec2 && cfg.model.frames(crop) < cfg.model.mask_time_length.saturating_mul(2) {
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

    /// `--recordings DIR`: every `.wav` / `.ogg` below `dir` is pre-trained
    /// on instead of the config's sources (`dir` becomes the data root), and
    /// the probe tasks whose folders are not under it are dropped, as the
    /// returned note says. Asked for by its own flag: a `--data` root whose
    /// sources are missing is an error naming them, never a silent
    /// fall-back to the whole tree.
    pub fn use_recordings(&mut self, dir: &Path) -> Result<String> {
        if !dir.is_dir() {
            return Err(Error::Data(format!(
                "--recordings {}: no such folder",
                dir.display()
            )));
        }
        let sources = self.data.sources.join(", ");
        self.data.sources = vec![".".into()];
        let before = self.eval.tasks.len();
        self.eval
            .tasks
            .retain(|t| t.train.iter().chain(&t.test).all(|f| dir.join(f).is_dir()));
        Ok(format!(
            "--recordings {}: pre-training on every recording below it instead of the config's sources ({sources}); {} probe task(s) dropped (their folders are not there)",
            dir.display(),
            before - self.eval.tasks.len()
        ))
    }
}

/// Audio's `[eval.finetune]` defaults, sized for the `cpu` preset's model
/// on a CPU (18 models of 40 steps of 16 clips on the spoken letters):
/// fractions 1 %, 10 %, 100 %; 3 seeds; 40 steps of 16 clips; AdamW (lr 0.016 for a batch of
/// 256, i.e. 1e-3 at 16, weight decay 0.01, betas 0.9 / 0.98, eps 1e-6: the
/// pre-training optimiser of the presets); no warm-up, cosine to 0;
/// augmentation on.
pub fn default_settings() -> FinetuneConfig {
    FinetuneConfig {
        fractions: vec![0.01, 0.1, 1.0],
        seeds: 3,
        steps: 40,
        batch_size: 16,
        max_images: 10_000,
        optimizer: OptimConfig {
            kind: OptimKind::AdamW,
            lr: 0.016,
            weight_decay: 0.01,
            betas: (0.9, 0.98),
            eps: 1e-6,
            ..OptimConfig::default()
        },
        schedule: LrSchedule {
            warmup_epochs: 0.0,
            ..LrSchedule::default()
        },
        augment: true,
        ..FinetuneConfig::default()
    }
}

/// Whether `ft` is [`default_settings`] (then a stored config leaves the
/// table out).
pub fn is_default_settings(ft: &FinetuneConfig) -> bool {
    *ft == default_settings()
}

/// Reads `[eval.finetune]` over [`default_settings`] (core's
/// [`settings_over`]): the keys given replace audio's defaults, an unknown
/// key is refused.
pub fn deserialize_settings<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<FinetuneConfig, D::Error> {
    use serde::de::Error as _;
    settings_over(&default_settings(), toml::Table::deserialize(d)?).map_err(D::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

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
    fn the_method_names_are_the_method_table_s() {
        for &name in AudioMethodConfig::NAMES {
            let m: AudioMethodConfig = toml::from_str(&format!("name = \"{name}\"")).unwrap();
            assert_eq!(m.name(), name);
        }
        let cfg: AudioRunConfig = toml::from_str("[run]\ndevice = \"cpu\"").unwrap();
        assert_eq!(cfg.run.batch_size, 16);
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
            (
                "batch_size = 16",
                "batch_size = 16\nsteps_per_epoch = 3",
                "[run] steps_per_epoch = 3: audio trains in mini-batches",
            ),
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
            (
                "[eval]\n",
                "[eval]\nvalidation_fraction = 1.0\n",
                "[eval] validation_fraction must be a fraction in (0, 1) of the training data, got 1",
            ),
            (
                "[eval]\n",
                "[eval]\nvalidation_fraction = -0.5\n",
                "[eval] validation_fraction must be a fraction in (0, 1) of the training data, got -0.5",
            ),
            (
                "train = [\"klettres/es/syllab\", \"klettres/it/syllab\", \"klettres/ru/syllab\", \"klettres/uk/syllab\", \"klettres/tn/syllab\"]",
                "train = [\"klettres/es/syllab\"]",
                "[[eval.tasks]] syllable-vowel: train = [\"klettres/es/syllab\"] lists 1 folder(s)",
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

    #[test]
    fn recordings_replace_the_sources_and_drop_the_tasks_not_under_them() {
        let (text, path) = preset("cpu.toml");
        let mut cfg = AudioRunConfig::from_toml(&text, &path).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = cfg
            .use_recordings(&dir.path().join("nowhere"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--recordings") && err.contains("nowhere"),
            "{err}"
        );
        // Every folder of the first task is there, not of the second.
        let first = cfg.eval.tasks[0].clone();
        for f in first.train.iter().chain(&first.test) {
            std::fs::create_dir_all(dir.path().join(f)).unwrap();
        }
        let note = cfg.use_recordings(dir.path()).unwrap();
        assert_eq!(cfg.data.sources, vec![".".to_string()]);
        assert_eq!(cfg.eval.tasks, vec![first]);
        assert!(note.contains("1 probe task(s) dropped"), "{note}");
    }
}
