//! The text run's config file: `[run]`, `[data]`, `[tokenizer]`,
//! `[masking]`, `[model]`, `[method]`, `[trainer]`, `[eval]` (see
//! `configs/text/`), parsed and checked before any data is read.
use crate::corpus::SourceConfig;
use crate::masking::MaskingConfig;
use crate::model::ModelConfig;
use crate::tokenizer::TokenizerConfig;
use selfsup_core::eval::finetune::{settings_over, FinetuneConfig};
use selfsup_core::eval::LinearProbeConfig;
use selfsup_core::optim::{OptimConfig, OptimKind};
use selfsup_core::run::{BatchDefault, RunSettings};
use selfsup_core::schedule::{Decay, LrSchedule};
use selfsup_core::trainer::TrainerConfig;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize};
use std::path::Path;

/// `[data]`: the corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Where the text comes from; relative paths are taken from `--data`.
    pub sources: Vec<SourceConfig>,
    /// Fraction of documents held out for validation.
    pub validation_fraction: f64,
    /// Replace invalid UTF-8 (counted) instead of stopping with an error.
    pub lossy_utf8: bool,
    /// Pre-train on N sequences drawn from the training split (all when absent).
    pub max_train_sequences: Option<usize>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            validation_fraction: 0.05,
            lossy_utf8: false,
            max_train_sequences: None,
        }
    }
}

/// One labelled set for a downstream linear probe (`[[eval.downstream]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownstreamConfig {
    pub name: String,
    /// The labelled documents (a format with labels: `brown`, `spam-assassin`).
    pub source: SourceConfig,
    /// Sequences taken from each document (1: its beginning).
    #[serde(default = "one")]
    pub chunks_per_doc: usize,
}

fn one() -> usize {
    1
}

/// `[eval]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Validation sequences scored every epoch (the first N).
    pub val_sequences: usize,
    /// Validation sequences whose pooled embeddings feed the collapse monitors.
    pub monitor_sequences: usize,
    /// The `[[eval.downstream]]` sets `selfsup eval finetune` trains on, by
    /// name (left out: every one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finetune_sets: Vec<String>,
    pub probe: LinearProbeConfig,
    /// `[eval.finetune]`: `selfsup eval finetune` (core's label-efficiency
    /// settings; a key left out takes text's default,
    /// [`crate::finetune::default_settings`]).
    #[serde(
        default = "default_settings",
        skip_serializing_if = "is_default_settings",
        deserialize_with = "settings_over_defaults"
    )]
    pub finetune: FinetuneConfig,
    pub downstream: Vec<DownstreamConfig>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            val_sequences: 512,
            monitor_sequences: 256,
            finetune_sets: Vec::new(),
            probe: LinearProbeConfig::default(),
            finetune: default_settings(),
            downstream: Vec::new(),
        }
    }
}

/// Text's default `[run] batch_size`: 32 sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sequences;

impl BatchDefault for Sequences {
    const BATCH: usize = 32;
}

/// `[run]`: core's run settings, batches of sequences (per process).
pub type RunConfig = RunSettings<Sequences>;

/// `[method]`: the text methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum TextMethodConfig {
    /// BERT's masked language modelling.
    #[default]
    Mlm,
    /// GPT-style next-token prediction (`crate::pretrain_next_token`).
    NextToken,
}

impl TextMethodConfig {
    /// Every `[method] name` of the text methods (one per variant).
    pub const NAMES: &'static [&'static str] = &["mlm", "next_token"];

    /// This method's `[method] name`.
    pub fn name(&self) -> &'static str {
        match self {
            TextMethodConfig::Mlm => "mlm",
            TextMethodConfig::NextToken => "next_token",
        }
    }
}

/// The largest `[run] batch_size` accepted.
pub const MAX_BATCH: usize = 1 << 20;

/// A whole text run, as one TOML file (see `configs/text/`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextRunConfig {
    pub run: RunConfig,
    pub data: DataConfig,
    pub tokenizer: TokenizerConfig,
    pub masking: MaskingConfig,
    pub model: ModelConfig,
    pub method: TextMethodConfig,
    pub trainer: TrainerConfig,
    pub eval: EvalConfig,
}

impl TextRunConfig {
    /// Parses a config; unknown keys and values out of range are errors
    /// that name the file and the key.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let cfg: Self = toml::from_str(text)
            .map_err(|e| Error::Config(format!("{}: {e}", origin.display())))?;
        cfg.check().map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", origin.display())),
            other => other,
        })?;
        Ok(cfg)
    }

    /// Every check that needs no data: the trainer's and thread ranges
    /// ([`selfsup_core::run::check_common`]), then [`Self::validate`].
    pub fn check(&self) -> Result<()> {
        selfsup_core::run::check_common(&self.trainer, self.run.threads)?;
        self.validate().map_err(Error::Config)
    }

    /// The ranges of the text settings (`Err` names the key and the range).
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(1..=MAX_BATCH).contains(&self.run.batch_size) {
            return Err(format!(
                "[run] batch_size = {}: must be from 1 to {MAX_BATCH}",
                self.run.batch_size
            ));
        }
        self.run.check()?;
        self.run.refuse_steps_per_epoch("text")?;
        let f = self.data.validation_fraction;
        if !(f.is_finite() && f > 0.0 && f < 1.0) {
            return Err(format!(
                "[data] validation_fraction = {f}: must be above 0 and below 1 (validation needs documents, and so does training)"
            ));
        }
        if self.data.max_train_sequences == Some(0) {
            return Err(
                "[data] max_train_sequences = 0: must be at least 1 (remove it to train on every sequence)"
                    .into(),
            );
        }
        for src in &self.data.sources {
            if let SourceConfig::Jsonl { text_field, .. } = src {
                if text_field.is_empty() {
                    return Err(
                        "[[data.sources]] text_field = \"\": name the field that holds the text"
                            .into(),
                    );
                }
            }
        }
        self.tokenizer.validate()?;
        self.masking.validate()?;
        self.model.validate()?;
        if self.eval.val_sequences < 1 {
            return Err("[eval] val_sequences = 0: must be at least 1".into());
        }
        if self.eval.monitor_sequences < 2 {
            return Err(format!(
                "[eval] monitor_sequences = {}: must be at least 2 (the monitors compare sequences)",
                self.eval.monitor_sequences
            ));
        }
        self.eval.probe.validate("[eval] probe")?;
        check_settings(&self.eval)?;
        for d in &self.eval.downstream {
            if d.name.trim().is_empty() {
                return Err("[[eval.downstream]] name = \"\": give the task a name".into());
            }
            if d.chunks_per_doc < 1 {
                return Err(format!(
                    "[[eval.downstream]] {}: chunks_per_doc = 0: must be at least 1",
                    d.name
                ));
            }
        }
        Ok(())
    }

    /// The resolved config as TOML (saved beside every checkpoint).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# unserialisable config: {e}"))
    }
}

/// Text's `[eval.finetune]` defaults, sized for the CPU preset (BERT-tiny,
/// sequences of 128) on 2 cores: per labelled set, 3 fractions (1 %, 10 %,
/// 100 %) x 3 seeds x 2 arms, each model 30 steps of 16 sequences (480
/// sequences, about a tenth of SpamAssassin's training mails) and one pass
/// over the scored sequences; AdamW at 8e-3 for a batch of 256 (5e-4 at 16,
/// scaled linearly), weight decay 0.01 off biases and norms, no warm-up,
/// linear decay to 0, no augmentation (text has none).
pub fn default_settings() -> FinetuneConfig {
    FinetuneConfig {
        fractions: vec![0.01, 0.1, 1.0],
        seeds: 3,
        steps: 30,
        batch_size: 16,
        max_images: 10_000,
        optimizer: OptimConfig {
            kind: OptimKind::AdamW,
            lr: 8e-3,
            weight_decay: 0.01,
            betas: (0.9, 0.999),
            eps: 1e-6,
            exclude_bias_and_norm: true,
            ..OptimConfig::default()
        },
        schedule: LrSchedule {
            warmup_epochs: 0.0,
            final_lr_ratio: 0.0,
            decay: Decay::Linear,
        },
        augment: false,
        ..FinetuneConfig::default()
    }
}

/// Whether `ft` is text's default (then the stored config leaves the table
/// out, so configs written before it existed compare equal).
pub fn is_default_settings(ft: &FinetuneConfig) -> bool {
    *ft == default_settings()
}

/// Reads `[eval.finetune]` over [`default_settings`] (core's
/// [`settings_over`]): a key left out keeps text's default, not core's.
pub fn settings_over_defaults<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<FinetuneConfig, D::Error> {
    use serde::de::Error as _;
    settings_over(&default_settings(), toml::Table::deserialize(d)?).map_err(D::Error::custom)
}

/// What `[eval]` asks of fine-tuning beyond core's ranges: no augmentation
/// (text has none), and `finetune_sets` naming `[[eval.downstream]]` sets.
pub fn check_settings(eval: &EvalConfig) -> std::result::Result<(), String> {
    eval.finetune.validate()?;
    if eval.finetune.augment {
        return Err(
            "[eval.finetune] augment = true: text fine-tuning has no augmentation; remove the key \
             (or set it to false)"
                .into(),
        );
    }
    for name in &eval.finetune_sets {
        if !eval.downstream.iter().any(|d| &d.name == name) {
            return Err(format!(
                "[eval] finetune_sets: no [[eval.downstream]] set is named {name:?}; give one of \
                 {} (or leave finetune_sets out to fine-tune on every set)",
                names(&eval.downstream)
            ));
        }
    }
    Ok(())
}

pub(crate) fn names(sets: &[DownstreamConfig]) -> String {
    match sets.is_empty() {
        true => "none (the config has no [[eval.downstream]] set)".into(),
        false => sets
            .iter()
            .map(|d| format!("{:?}", d.name))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn preset(name: &str) -> (String, PathBuf) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../configs/text")
            .join(name);
        (std::fs::read_to_string(&path).unwrap(), path)
    }

    #[test]
    fn presets_parse_and_round_trip() {
        for name in ["mlm-cpu.toml", "mlm-gpu.toml"] {
            let (text, path) = preset(name);
            let cfg = TextRunConfig::from_toml(&text, &path).unwrap();
            assert_eq!(cfg.data.sources.len(), 4, "{name}");
            assert_eq!(cfg.eval.downstream.len(), 2, "{name}");
            let again = TextRunConfig::from_toml(&cfg.to_toml(), &path).unwrap();
            assert_eq!(again, cfg);
        }
    }

    #[test]
    fn the_method_names_are_the_method_table_s() {
        for &name in TextMethodConfig::NAMES {
            let m: TextMethodConfig = toml::from_str(&format!("name = \"{name}\"")).unwrap();
            assert_eq!(m.name(), name);
        }
        assert!(toml::from_str::<TextMethodConfig>("name = \"simclr\"").is_err());
        let cfg: TextRunConfig = toml::from_str("[run]\ndevice = \"cpu\"").unwrap();
        assert_eq!(cfg.run.batch_size, 32);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_naming_the_file() {
        let (text, path) = preset("mlm-cpu.toml");
        let bad = text.replace("mask_prob = 0.15", "mask_prob = 0.15\nmask_rate = 0.2");
        let err = TextRunConfig::from_toml(&bad, &path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mlm-cpu.toml") && err.contains("mask_rate"),
            "{err}"
        );
        let bad = text.replace(
            "format = \"brown\"\npath",
            "format = \"brown\"\nfolder = \"x\"\npath",
        );
        let err = TextRunConfig::from_toml(&bad, &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("folder"), "{err}");
        let bad = text.replace("mask_token = 0.8", "mask_token = 0.95");
        let err = TextRunConfig::from_toml(&bad, &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sum to at most 1"), "{err}");
    }

    #[test]
    fn impossible_settings_are_refused_before_any_data_naming_the_key() {
        let (text, path) = preset("mlm-cpu.toml");
        let cases = [
            (
                "max_len = 128",
                "max_len = 2",
                "[model] max_len = 2: must be from 8",
            ),
            ("max_len = 128", "max_len = 600", "max_len = 600"),
            (
                "max_len = 128",
                "max_len = 128\nmax_position = 64",
                "max_position (64)",
            ),
            (
                "max_len = 128",
                "max_len = 128\nheads = 3",
                "multiple of heads (3)",
            ),
            (
                "max_len = 128",
                "max_len = 128\nlayers = 0",
                "[model] layers = 0: must be from 1",
            ),
            (
                "max_len = 128",
                "max_len = 128\nhidden = 0",
                "[model] hidden = 0",
            ),
            (
                "max_len = 128",
                "max_len = 128\nintermediate = -4",
                "intermediate = -4",
            ),
            (
                "max_len = 128",
                "max_len = 128\ndropout = 1.0",
                "dropout = 1",
            ),
            (
                "vocab_size = 8192",
                "vocab_size = 3",
                "vocab_size = 3: must be from 6",
            ),
            (
                "min_frequency = 2",
                "min_frequency = 0",
                "min_frequency = 0",
            ),
            ("mask_prob = 0.15", "mask_prob = 0.0", "mask_prob"),
            ("mask_prob = 0.15", "mask_prob = 1.5", "mask_prob"),
            ("batch_size = 32", "batch_size = 0", "[run] batch_size = 0"),
            (
                "batch_size = 32",
                "batch_size = 32\nsteps_per_epoch = 4",
                "[run] steps_per_epoch = 4: text trains in mini-batches",
            ),
            ("threads = 2", "threads = 0", "threads"),
            ("epochs = 1", "epochs = 0", "epochs = 0"),
            (
                "validation_fraction = 0.05",
                "validation_fraction = 0.0",
                "validation_fraction = 0",
            ),
            (
                "validation_fraction = 0.05",
                "validation_fraction = 1.0",
                "validation_fraction = 1",
            ),
            (
                "# max_train_sequences = 16000",
                "max_train_sequences = 0",
                "max_train_sequences = 0",
            ),
            (
                "val_sequences = 512",
                "val_sequences = 0",
                "val_sequences = 0",
            ),
            (
                "monitor_sequences = 256",
                "monitor_sequences = 1",
                "monitor_sequences = 1",
            ),
            (
                "probe = { epochs = 100",
                "probe = { epochs = 0",
                "[eval] probe.epochs = 0",
            ),
            (
                "chunks_per_doc = 8",
                "chunks_per_doc = 0",
                "chunks_per_doc = 0",
            ),
        ];
        for (from, to, want) in cases {
            assert!(text.contains(from), "{from}");
            let bad = text.replacen(from, to, 1);
            let err = TextRunConfig::from_toml(&bad, &path)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("mlm-cpu.toml") && err.contains(want),
                "{to}: {err}"
            );
        }
    }
}
