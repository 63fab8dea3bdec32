//! The text workflow: corpus -> split by document -> tokenizer -> packed
//! sequences -> MLM -> trainer -> validation and downstream probes ->
//! export, on core's [`Run`] (threads, device, `config.toml`, the trainer,
//! `summary.json`). The `selfsup` binary calls this through
//! [`crate::workflow`]; it reads no argv or environment and draws nothing.
pub use crate::config::{
    DataConfig, DownstreamConfig, EvalConfig, RunConfig, Sequences, TextMethodConfig,
    TextRunConfig, MAX_BATCH,
};
use crate::corpus::{
    read_source, source_path, split_documents, Document, ReadReport, SourceConfig,
};
use crate::eval::{
    probe, unigram_baseline, LabelledSet, MlmEpochEval, ProbeRow, ProbeSetup, UnigramBaseline,
    Validation,
};
use crate::export::export_mlm;
use crate::loader::{MaskVocab, MlmBatches};
use crate::methods::Mlm;
use crate::packing::{pack, PackStats, Packed};
use crate::tokenizer::{TextTokenizer, TokenizerConfig};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use selfsup_core::device::describe;
use selfsup_core::method::Method;
pub use selfsup_core::run::RunOptions;
use selfsup_core::run::{seed_random_weights, seed_weights, trainable_parameters, Run};
use selfsup_core::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tch::Device;

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

pub(crate) fn read_all(
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

/// The corpus of a config, read and split by document.
pub(crate) struct SplitCorpus {
    pub report: ReadReport,
    pub train: Vec<Document>,
    pub val: Vec<Document>,
}

/// A config with no `[data] sources` cannot run (refused before anything
/// is written or read).
pub(crate) fn check_sources(cfg: &TextRunConfig) -> Result<()> {
    if cfg.data.sources.is_empty() {
        return Err(Error::Config(
            "[data] has no sources (add [[data.sources]] format = \"text\", path = ...)".into(),
        ));
    }
    Ok(())
}

/// Reads `[data] sources` under `root` and splits them by document (both
/// sides must have a document); says what it read through `log`.
pub(crate) fn read_split(
    cfg: &TextRunConfig,
    root: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<SplitCorpus> {
    check_sources(cfg)?;
    log(&format!(
        "reading {} corpus source(s) from {}",
        cfg.data.sources.len(),
        root.display()
    ));
    let (docs, report) = read_all(&cfg.data.sources, root, cfg.data.lossy_utf8)?;
    let (train, val) = split_documents(docs, cfg.data.validation_fraction, cfg.trainer.seed);
    if train.is_empty() || val.is_empty() {
        return Err(Error::Data(format!(
            "the corpus has {} document(s): training and validation need at least one each (add documents, or change [data] validation_fraction)",
            train.len() + val.len()
        )));
    }
    log(&format!(
        "{} documents ({} train / {} validation, split by document); {} empty skipped, {} decoded lossily",
        report.documents, train.len(), val.len(), report.empty_skipped, report.lossy_files
    ));
    if report.duplicates_skipped > 0 {
        log(&format!(
            "{} path(s) skipped because they lead to a file or folder already read (links; each file is read once), e.g. {}",
            report.duplicates_skipped,
            report.duplicate_examples.join(", ")
        ));
    }
    Ok(SplitCorpus { report, train, val })
}

/// `[data] max_train_sequences`: keeps N training sequences drawn with the
/// run's seed, in corpus order.
pub(crate) fn subsample(train: &mut Packed, max: Option<usize>, seed: u64) {
    let Some(n) = max.filter(|&n| n < train.len()) else {
        return;
    };
    let mut rows: Vec<usize> = (0..train.len()).collect();
    rows.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0xD474));
    rows.truncate(n);
    rows.sort_unstable();
    let mut ids = Vec::with_capacity(n * train.max_len);
    for r in rows {
        ids.extend_from_slice(train.row(r));
    }
    train.ids = ids;
    train.stats.sequences = n;
}

/// The `[[eval.downstream]]` probes of `model`, beside the same
/// architecture with random weights (`random_weights` builds it after
/// [`seed_random_weights`]) and bag of words. Sets are read from `root`.
/// MLM and next-token runs and checkpoints all probe through here.
pub(crate) fn downstream_probes<M: Method>(
    cfg: &TextRunConfig,
    model: &M,
    random_weights: impl FnOnce() -> M,
    tok: &TextTokenizer,
    root: &Path,
    device: Device,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<ProbeRow>> {
    let seed = cfg.trainer.seed;
    seed_random_weights(seed);
    let random = random_weights();
    let vocab = MaskVocab::of(tok);
    let setup = ProbeSetup {
        tok,
        vocab: &vocab,
        max_len: cfg.model.max_len,
        cfg: &cfg.eval.probe,
        seed,
        device,
    };
    let mut rows = Vec::new();
    for d in &cfg.eval.downstream {
        log(&format!("downstream: linear probe on {}", d.name));
        let set = labelled_set(d, root)?;
        rows.push(probe(&set, model, &random, &setup)?);
    }
    Ok(rows)
}

/// What both text workflows read before their model: the corpus split by
/// document, the tokenizer, the packed training sequences (`[data]
/// max_train_sequences` of them) and every packed validation sequence.
pub(crate) struct Prepared {
    pub split: SplitCorpus,
    pub tok: TextTokenizer,
    pub train: Packed,
    pub val_all: Packed,
    pub tokenizer_seconds: f64,
}

/// Reads, splits, tokenizes and packs `cfg`'s corpus for `run` (the
/// downstream sets' paths checked first on the primary process: a wrong
/// path must not wait for training).
pub(crate) fn prepare(cfg: &TextRunConfig, run: &mut Run) -> Result<Prepared> {
    let root = run.data_root();
    for d in cfg.eval.downstream.iter().filter(|_| run.primary) {
        source_path(&d.source, &root)?;
    }
    let split = read_split(cfg, &root, &mut |l: &str| run.log(l))?;
    let t_tok = Instant::now();
    let tok = shared_tokenizer(cfg, run, &root, &split.train)?;
    let max_len = cfg.model.max_len;
    let mut train = pack(&split.train, &tok, max_len)?;
    let val_all = pack(&split.val, &tok, max_len)?;
    let tokenizer_seconds = t_tok.elapsed().as_secs_f64();
    run.log(&format!(
        "tokenizer: {} pieces; {} train sequences ({} tokens), {} validation sequences; {} lines longer than {} tokens split across sequences; {} unknown tokens ({:.1} s)",
        tok.vocab_size, train.len(), train.stats.text_tokens, val_all.len(), train.stats.long_lines + val_all.stats.long_lines,
        max_len - 2, train.stats.unknown_tokens + val_all.stats.unknown_tokens, tokenizer_seconds
    ));
    subsample(&mut train, cfg.data.max_train_sequences, cfg.trainer.seed);
    Ok(Prepared {
        split,
        tok,
        train,
        val_all,
        tokenizer_seconds,
    })
}

/// The run's tokenizer: built on the primary process (or read back on a
/// resume) and saved in `tokenizer/`. WordPiece training is not
/// reproducible across processes: every rank waits for rank 0's file and
/// loads it.
fn shared_tokenizer(
    cfg: &TextRunConfig,
    run: &mut Run,
    root: &Path,
    train_docs: &[Document],
) -> Result<TextTokenizer> {
    let tok_dir = run.run_dir.join("tokenizer");
    let tok_file = tok_dir.join("tokenizer.json");
    let built = if run.primary && !(run.resume && tok_file.exists()) {
        let t = TextTokenizer::build(&cfg.tokenizer, root, train_docs)?;
        t.save(&tok_dir)?;
        Some(t)
    } else {
        None
    };
    run.barrier()?;
    let tok = match built {
        Some(t) => t,
        None => TextTokenizer::from_file(&tok_file)?,
    };
    if let TokenizerConfig::TrainWordpiece { vocab_size, .. } = &cfg.tokenizer {
        if tok.vocab_size < *vocab_size {
            run.log(&format!(
                "note: the trained vocabulary has {} pieces, fewer than [tokenizer] vocab_size = {vocab_size}: the training documents have no more pairs that occur min_frequency times",
                tok.vocab_size
            ));
        }
    }
    Ok(tok)
}

/// One `[[eval.downstream]]` set read from `root` (invalid UTF-8 replaced):
/// what the probes and fine-tuning train on.
pub(crate) fn labelled_set(d: &DownstreamConfig, root: &Path) -> Result<LabelledSet> {
    let (docs, _) = read_source(&d.source, root, true)?;
    Ok(LabelledSet {
        name: d.name.clone(),
        docs,
        chunks_per_doc: d.chunks_per_doc,
    })
}

/// Pre-trains, evaluates and exports as `cfg` says; writes `config.toml`
/// and `summary.json` into the run folder (on the primary process).
pub fn pretrain(cfg: &TextRunConfig, opts: RunOptions) -> Result<TextRunSummary> {
    cfg.check()?;
    if cfg.method != TextMethodConfig::Mlm {
        return Err(Error::Config(format!(
            "[method] name = \"{}\": this is MLM's workflow (crate::pretrain_next_token::pretrain runs next_token)",
            cfg.method.name()
        )));
    }
    check_sources(cfg)?;
    let mut run = Run::start(
        "text pre-training",
        &cfg.run,
        &cfg.trainer,
        cfg.to_toml(),
        true,
        opts,
    )?;
    let (device, primary, root) = (run.device, run.primary, run.data_root());
    let seed = cfg.trainer.seed;
    let Prepared {
        split,
        tok,
        train,
        val_all,
        tokenizer_seconds,
    } = prepare(cfg, &mut run)?;
    let max_len = cfg.model.max_len;
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
    seed_weights(seed);
    let mut mlm = Mlm::new(&bert_cfg, device);
    let params = trainable_parameters(mlm.var_store());
    let train = Arc::new(train);
    let batches = MlmBatches::new(
        train.clone(),
        Arc::new(vocab.clone()),
        cfg.masking.clone(),
        cfg.run.batch_size,
        seed,
    )
    .with_shard(run.shard);
    let mut evaluator = MlmEpochEval {
        val: val_all.take(cfg.eval.val_sequences),
        monitor: val_all.take(cfg.eval.monitor_sequences),
        vocab,
        masking: cfg.masking.clone(),
        batch: cfg.run.batch_size,
        device,
        unigram,
        last: None,
    };
    let trainer = run.trainer(cfg.trainer.clone());
    run.log(&format!(
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
        &mut *run.observer,
        run.resume,
    )?;
    let train_peak_rss_mb = selfsup_core::metrics::peak_rss_mb();

    let downstream = if primary && !cfg.eval.downstream.is_empty() {
        let random = || Mlm::new(&mlm.bert.cfg, device);
        downstream_probes(cfg, &mlm, random, &tok, &root, device, &mut |l: &str| {
            run.log(l)
        })?
    } else {
        Vec::new()
    };
    let export_dir = run.run_dir.join("export");
    if primary {
        export_mlm(&mlm, &tok, max_len, &export_dir)?;
    }
    let tokens_per_seq = max_len as f64;
    let out = TextRunSummary {
        method: cfg.method.name().into(),
        device: describe(device),
        threads: cfg.run.threads,
        corpus: split.report,
        train_documents: split.train.len(),
        validation_documents: split.val.len(),
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
        wall_seconds: run.seconds(),
        val: evaluator.last,
        unigram,
        downstream,
        warnings: summary.warnings,
        export_dir,
    };
    run.finish(out)
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
    fn a_missing_corpus_is_named() {
        let (text, path) = preset("mlm-cpu.toml");
        let cfg = TextRunConfig::from_toml(&text, &path).unwrap();
        let root = tempfile::tempdir().unwrap();
        let err = read_all(&cfg.data.sources, root.path(), false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sotu") && err.contains("cargo xtask fetch") && err.contains("--data"),
            "{err}"
        );
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
                data: Some(run.path().join("no-data")),
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
