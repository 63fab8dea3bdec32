//! The text workflow: corpus -> split by document -> tokenizer -> packed
//! sequences -> MLM -> trainer -> validation and downstream probes ->
//! export. The `selfsup` binary calls this; it reads no argv or environment
//! and draws nothing.
use crate::corpus::{
    read_source, source_path, split_documents, Document, ReadReport, SourceConfig,
};
use crate::eval::{
    probe, unigram_baseline, LabelledSet, MlmEpochEval, ProbeRow, ProbeSetup, UnigramBaseline,
    Validation,
};
use crate::export::export_mlm;
use crate::loader::{MaskVocab, MlmBatches};
use crate::masking::MaskingConfig;
use crate::methods::Mlm;
use crate::model::ModelConfig;
use crate::packing::{pack, PackStats};
use crate::tokenizer::{TextTokenizer, TokenizerConfig};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use selfsup_core::device::{describe, DeviceChoice};
use selfsup_core::distributed::{Distributed, Shard};
use selfsup_core::eval::LinearProbeConfig;
use selfsup_core::trainer::{Trainer, TrainerConfig};
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

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
    pub probe: LinearProbeConfig,
    pub downstream: Vec<DownstreamConfig>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            val_sequences: 512,
            monitor_sequences: 256,
            probe: LinearProbeConfig::default(),
            downstream: Vec::new(),
        }
    }
}

/// `[run]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    pub device: DeviceChoice,
    /// Sequences per batch (per process).
    pub batch_size: usize,
    /// libtorch intra-op threads (default: libtorch's choice).
    pub threads: Option<usize>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            device: DeviceChoice::Auto,
            batch_size: 32,
            threads: None,
        }
    }
}

/// `[method]`: the text methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum TextMethodConfig {
    /// BERT's masked language modelling.
    #[default]
    Mlm,
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

/// Architecture figures of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub layers: i64,
    pub hidden: i64,
    pub heads: i64,
    pub intermediate: i64,
    pub parameters: i64,
}

/// What a text run produced (also written as `summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct TextRunSummary {
    pub method: String,
    pub device: String,
    pub threads: Option<usize>,
    pub corpus: ReadReport,
    pub train_documents: usize,
    pub validation_documents: usize,
    pub train: PackStats,
    pub validation: PackStats,
    pub vocab_size: usize,
    pub max_len: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub model: ModelSummary,
    pub epochs: usize,
    pub steps: u64,
    pub final_loss: f64,
    pub tokenizer_seconds: f64,
    pub train_seconds: f64,
    pub train_sequences_per_s: f64,
    pub train_tokens_per_s: f64,
    /// Peak resident memory when training ended (before the downstream probes), MB.
    pub train_peak_rss_mb: Option<f64>,
    pub wall_seconds: f64,
    pub val: Option<Validation>,
    pub unigram: UnigramBaseline,
    pub downstream: Vec<ProbeRow>,
    pub warnings: Vec<String>,
    pub export_dir: PathBuf,
}

pub use selfsup_core::run::RunOptions;

fn read_all(
    sources: &[SourceConfig],
    root: &Path,
    lossy: bool,
) -> Result<(Vec<Document>, ReadReport)> {
    let mut docs = Vec::new();
    let mut report = ReadReport::default();
    for src in sources {
        let (d, r) = read_source(src, root, lossy)?;
        docs.extend(d);
        report.merge(&r);
    }
    Ok((docs, report))
}

/// Pre-trains, evaluates and exports as `cfg` says.
pub fn pretrain(cfg: &TextRunConfig, mut opts: RunOptions) -> Result<TextRunSummary> {
    let wall = Instant::now();
    selfsup_core::run::check_common(&cfg.trainer, cfg.run.threads)?;
    cfg.validate().map_err(Error::Config)?;
    if let Some(t) = cfg.run.threads {
        tch::set_num_threads(t as i32);
    }
    let dist = opts.distributed.take();
    let primary = dist.as_ref().is_none_or(Distributed::is_primary);
    let device = cfg
        .run
        .device
        .resolve_on(dist.as_ref().map_or(0, |d| d.local_rank))?;
    if cfg.data.sources.is_empty() {
        return Err(Error::Config(
            "[data] has no sources (add [[data.sources]] format = \"text\", path = ...)".into(),
        ));
    }
    // The downstream sets are read after training: a wrong path must not
    // wait for it.
    for d in cfg.eval.downstream.iter().filter(|_| primary) {
        source_path(&d.source, &opts.data_root)?;
    }
    let seed = cfg.trainer.seed;
    (opts.log)(&format!(
        "reading {} corpus source(s) from {}",
        cfg.data.sources.len(),
        opts.data_root.display()
    ));
    let (docs, corpus) = read_all(&cfg.data.sources, &opts.data_root, cfg.data.lossy_utf8)?;
    let (train_docs, val_docs) = split_documents(docs, cfg.data.validation_fraction, seed);
    if train_docs.is_empty() || val_docs.is_empty() {
        return Err(Error::Data(format!(
            "the corpus has {} document(s): training and validation need at least one each (add documents, or change [data] validation_fraction)",
            train_docs.len() + val_docs.len()
        )));
    }
    (opts.log)(&format!(
        "{} documents ({} train / {} validation, split by document); {} empty skipped, {} decoded lossily",
        corpus.documents, train_docs.len(), val_docs.len(), corpus.empty_skipped, corpus.lossy_files
    ));
    if corpus.duplicates_skipped > 0 {
        (opts.log)(&format!(
            "{} path(s) skipped because they lead to a file or folder already read (links; each file is read once), e.g. {}",
            corpus.duplicates_skipped,
            corpus.duplicate_examples.join(", ")
        ));
    }
    let t_tok = Instant::now();
    let tok_dir = opts.run_dir.join("tokenizer");
    let tok_file = tok_dir.join("tokenizer.json");
    let built = if primary && !(opts.resume && tok_file.exists()) {
        let t = TextTokenizer::build(&cfg.tokenizer, &opts.data_root, &train_docs)?;
        t.save(&tok_dir)?;
        Some(t)
    } else {
        None
    };
    if let Some(d) = &dist {
        // WordPiece training is not reproducible across processes: every
        // rank waits for rank 0's tokenizer file and loads it.
        d.comm.barrier();
        d.comm.check()?;
    }
    let tok = match built {
        Some(t) => t,
        None => TextTokenizer::from_file(&tok_file)?,
    };
    if let TokenizerConfig::TrainWordpiece { vocab_size, .. } = &cfg.tokenizer {
        if tok.vocab_size < *vocab_size {
            (opts.log)(&format!(
                "note: the trained vocabulary has {} pieces, fewer than [tokenizer] vocab_size = {vocab_size}: the training documents have no more pairs that occur min_frequency times",
                tok.vocab_size
            ));
        }
    }
    let max_len = cfg.model.max_len;
    let mut train = pack(&train_docs, &tok, max_len)?;
    let val_all = pack(&val_docs, &tok, max_len)?;
    let tokenizer_seconds = t_tok.elapsed().as_secs_f64();
    (opts.log)(&format!(
        "tokenizer: {} pieces; {} train sequences ({} tokens), {} validation sequences; {} lines longer than {} tokens split across sequences; {} unknown tokens ({:.1} s)",
        tok.vocab_size, train.len(), train.stats.text_tokens, val_all.len(), train.stats.long_lines + val_all.stats.long_lines,
        max_len - 2, train.stats.unknown_tokens + val_all.stats.unknown_tokens, tokenizer_seconds
    ));
    if let Some(n) = cfg.data.max_train_sequences.filter(|&n| n < train.len()) {
        let mut rows: Vec<usize> = (0..train.len()).collect();
        rows.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0xD474));
        rows.truncate(n);
        rows.sort_unstable();
        let mut ids = Vec::with_capacity(n * max_len);
        for r in rows {
            ids.extend_from_slice(train.row(r));
        }
        train.ids = ids;
        train.stats.sequences = n;
    }
    let vocab = MaskVocab::of(&tok);
    let unigram = unigram_baseline(
        &train,
        &val_all.take(cfg.eval.val_sequences),
        &vocab,
        &cfg.masking,
        tok.vocab_size,
    );
    let bert_cfg = cfg
        .model
        .resolve(tok.vocab_size, tok.pad_id)
        .map_err(Error::Config)?;
    tch::manual_seed(seed as i64);
    let mut mlm = Mlm::new(&bert_cfg, device);
    let params: i64 = selfsup_core::method::Method::var_store(&mlm)
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum();
    let train = Arc::new(train);
    let shard = dist
        .as_ref()
        .map_or(Shard::SINGLE, |d| Shard::of(d.comm.as_ref()));
    let batches = MlmBatches::new(
        train.clone(),
        Arc::new(vocab.clone()),
        cfg.masking.clone(),
        cfg.run.batch_size,
        seed,
    )
    .with_shard(shard);
    let mut evaluator = MlmEpochEval {
        val: val_all.take(cfg.eval.val_sequences),
        monitor: val_all.take(cfg.eval.monitor_sequences),
        vocab: vocab.clone(),
        masking: cfg.masking.clone(),
        batch: cfg.run.batch_size,
        device,
        unigram,
        last: None,
    };
    let mut trainer = Trainer::new(cfg.trainer.clone(), &opts.run_dir, device)
        .with_stop_flag(opts.stop)
        .with_provenance(cfg.to_toml(), opts.git_commit);
    if let Some(d) = dist {
        trainer = trainer.with_collective(d.comm);
    }
    (opts.log)(&format!(
        "training mlm: BERT {} layers, hidden {}, {} heads, {:.2} M parameters, on {}",
        bert_cfg.layers,
        bert_cfg.hidden,
        bert_cfg.heads,
        params as f64 / 1e6,
        describe(device)
    ));
    let summary = trainer.fit(
        &mut mlm,
        &batches,
        &mut evaluator,
        opts.observer,
        opts.resume,
    )?;
    let train_peak_rss_mb = selfsup_core::metrics::peak_rss_mb();

    let mut downstream = Vec::new();
    if primary && !cfg.eval.downstream.is_empty() {
        tch::manual_seed(seed as i64 ^ 0x0BAD_5EED);
        let random = Mlm::new(&bert_cfg, device);
        let setup = ProbeSetup {
            tok: &tok,
            vocab: &vocab,
            max_len,
            cfg: &cfg.eval.probe,
            seed,
            device,
        };
        for d in &cfg.eval.downstream {
            (opts.log)(&format!("downstream: linear probe on {}", d.name));
            let (docs, _) = read_source(&d.source, &opts.data_root, true)?;
            let set = LabelledSet {
                name: d.name.clone(),
                docs,
                chunks_per_doc: d.chunks_per_doc,
            };
            downstream.push(probe(&set, &mlm, &random, &setup)?);
        }
    }
    let export_dir = opts.run_dir.join("export");
    if primary {
        export_mlm(&mlm, &tok, max_len, &export_dir)?;
    }
    let tokens_per_seq = max_len as f64;
    Ok(TextRunSummary {
        method: "mlm".into(),
        device: describe(device),
        threads: cfg.run.threads,
        corpus,
        train_documents: train_docs.len(),
        validation_documents: val_docs.len(),
        train: train.stats.clone(),
        validation: val_all.stats.clone(),
        vocab_size: tok.vocab_size,
        max_len,
        batch_size: cfg.run.batch_size,
        lr: cfg.trainer.optimizer.scaled_lr(cfg.run.batch_size),
        model: ModelSummary {
            layers: bert_cfg.layers,
            hidden: bert_cfg.hidden,
            heads: bert_cfg.heads,
            intermediate: bert_cfg.intermediate,
            parameters: params,
        },
        epochs: cfg.trainer.epochs,
        steps: summary.steps,
        final_loss: summary.final_loss,
        tokenizer_seconds,
        train_seconds: summary.train_seconds,
        train_sequences_per_s: summary.samples_per_s,
        train_tokens_per_s: summary.samples_per_s * tokens_per_seq,
        train_peak_rss_mb,
        wall_seconds: wall.elapsed().as_secs_f64(),
        val: evaluator.last,
        unigram,
        downstream,
        warnings: summary.warnings,
        export_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_missing_corpus_is_named() {
        let (text, path) = preset("mlm-cpu.toml");
        let cfg = TextRunConfig::from_toml(&text, &path).unwrap();
        let root = tempfile::tempdir().unwrap();
        let err = read_all(&cfg.data.sources, root.path(), false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sotu") && err.contains("cargo xtask fetch"),
            "{err}"
        );
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

    #[test]
    fn pretrain_checks_the_config_before_reading_anything() {
        let (text, path) = preset("mlm-cpu.toml");
        let mut cfg = TextRunConfig::from_toml(&text, &path).unwrap();
        cfg.model.max_len = 2;
        let run = tempfile::tempdir().unwrap();
        // The data root does not exist: the config error must come first.
        let run_once = |cfg: &TextRunConfig| {
            let mut observer = selfsup_core::trainer::Silent;
            let mut log = |_: &str| {};
            let opts = RunOptions {
                data_root: run.path().join("no-data"),
                run_dir: run.path().join("run"),
                resume: false,
                observer: &mut observer,
                stop: Default::default(),
                git_commit: None,
                log: &mut log,
                distributed: None,
            };
            pretrain(cfg, opts).err().unwrap().to_string()
        };
        let err = run_once(&cfg);
        assert!(err.contains("max_len = 2"), "{err}");
        cfg.model.max_len = 128;
        cfg.trainer.epochs = 0;
        let err = run_once(&cfg);
        assert!(err.contains("epochs = 0"), "{err}");
        // A downstream set that is not there is named before the corpus is
        // read and the model trained, not after.
        cfg.trainer.epochs = 1;
        let err = run_once(&cfg);
        assert!(
            err.contains("spam-assassin") && err.contains("no such file"),
            "{err}"
        );
    }
}
