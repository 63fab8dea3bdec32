//! The next-token workflow (`[method] name = "next_token"`): the same
//! corpus, split, WordPiece tokenizer and packing as MLM's
//! ([`crate::pretrain`]), a GPT-2 decoder ([`crate::model::Gpt2`]) trained on
//! next-token cross-entropy, validation perplexity every epoch beside the
//! unigram and bigram (add-k, interpolated) baselines ([`crate::ngram`]),
//! the downstream linear probes of MLM on the decoder's mean-pooled
//! features (beside random weights and bag of words), a few generated
//! continuations, and the `GPT2LMHeadModel` export. It also answers `eval
//! validation` / `eval test` / `eval linear` and `export` on a next-token
//! checkpoint ([`evaluate`], [`export_checkpoint`]). The held-out documents
//! are split in two ([`held_out`]): the validation sequences are drawn from
//! the packing of one half, the test split ([`test_documents`]) is the other
//! half, which no validation sequence reaches: read once, for the final
//! choice of settings.
use crate::causal_eval::{validate_lm, LmValidation, NextTokenEpochEval};
use crate::config::TextRunConfig;
use crate::corpus::{stable_hash, Document, ReadReport};
use crate::eval::ProbeRow;
use crate::export_gpt2::export_gpt2;
use crate::generate::{generate, model_config, restore, Sampling};
use crate::methods::{CausalBatches, NextToken};
use crate::ngram::{fit_bigram_k, score, NgramBaselines, NgramCounts};
use crate::packing::{pack, PackStats, Packed};
use crate::pretrain::{
    check_sources, downstream_probes, prepare, read_split, subsample, ModelSummary, Prepared,
    RunOptions,
};
use crate::tokenizer::TextTokenizer;
use selfsup_core::device::describe;
use selfsup_core::method::Method;
use selfsup_core::monitor::CollapseStats;
use selfsup_core::run::{seed_weights, trainable_parameters, Run};
use selfsup_core::trainer::{EpochReport, Observer, StepReport};
use selfsup_core::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tch::Device;

/// The prompts every run continues (greedy and top-k) in its summary.
pub const PROMPTS: &[&str] = &["the president said that", "it was a dark night and"];

/// Tokens generated per prompt in the summary.
const SAMPLE_TOKENS: usize = 24;

/// One generated continuation of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub prompt: String,
    /// `greedy` or `top-k (k = .., temperature = .., seed = ..)`.
    pub sampling: String,
    pub text: String,
}

/// What a next-token run produced (also written as `summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct NextTokenRunSummary {
    pub method: String,
    pub device: String,
    pub threads: Option<usize>,
    pub corpus: ReadReport,
    pub train_documents: usize,
    /// The held-out documents (validation and test).
    pub validation_documents: usize,
    /// The held-out documents no validation sequence reaches ([`HeldOut`]).
    pub test_documents: usize,
    pub train: PackStats,
    /// The packing of the validation documents ([`HeldOut::val_packed`]).
    pub validation: PackStats,
    /// The validation sequences drawn from it ([`HeldOut::val`]).
    pub validation_sequences: PackStats,
    pub vocab_size: usize,
    pub max_len: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub model: ModelSummary,
    pub epochs: usize,
    pub steps: u64,
    pub final_loss: f64,
    pub tokenizer_seconds: f64,
    /// Seconds of the training epochs: every step with its batching,
    /// logging and checkpoints; the per-epoch validation excluded.
    pub train_seconds: f64,
    pub train_sequences_per_s: f64,
    /// Input tokens per second (`max_len - 1` per sequence) over
    /// `train_seconds`.
    pub train_tokens_per_s: f64,
    /// Input tokens per second of the median training step (one batch:
    /// batching, forward, backward, clipping, the optimiser, logging; the
    /// steps that also wrote a checkpoint are the slow tail the median
    /// leaves out). The figure to set beside a timed-steps benchmark.
    pub step_tokens_per_s: f64,
    /// Seconds of the whole training loop (`Trainer::fit`: the epochs, the
    /// per-epoch validation and collapse monitors, the checkpoints).
    pub loop_seconds: f64,
    /// Input tokens trained per second of `loop_seconds`.
    pub loop_tokens_per_s: f64,
    pub train_peak_rss_mb: Option<f64>,
    pub wall_seconds: f64,
    pub val: Option<LmValidation>,
    pub baselines: NgramBaselines,
    pub downstream: Vec<ProbeRow>,
    pub samples: Vec<Sample>,
    pub warnings: Vec<String>,
    pub export_dir: PathBuf,
}

/// The baselines' perplexities and smoothing values, as one phrase.
pub fn baseline_text(b: &NgramBaselines) -> String {
    format!(
        "unigram perplexity {:.1}, bigram (add-{}) perplexity {:.1}, interpolated bigram \
         (lambda = {}) perplexity {:.1}",
        b.unigram_perplexity,
        b.bigram_add_k,
        b.bigram_perplexity,
        b.interpolated_lambda,
        b.interpolated_perplexity
    )
}

/// The baselines of `train`'s counts on `val`.
fn baselines(train: &Packed, val: &Packed, tok: &TextTokenizer) -> NgramBaselines {
    let counts = NgramCounts::fit(train, tok.vocab_size, tok.pad_id, tok.sep_id);
    fit_bigram_k(&counts, val, tok.pad_id, tok.sep_id)
}

/// `eval test`: perplexity on the test documents ([`test_documents`]).
pub const TEST: &str = "test";

/// The share of the held-out documents that validation draws its sequences
/// from; the others are the test documents.
pub const VALIDATION_DOCUMENT_SHARE: f64 = 0.5;

/// Seeds the partition of the held-out documents and the draw of the
/// validation sequences. Fixed, not `[trainer] seed`: the validation and
/// test sets stay the same when only the training seed changes.
const HELD_OUT_SEED: u64 = 0x7E57_5EED;

/// The held-out documents of a next-token run as validation and test. The
/// held-out documents are ranked by a seeded hash of their ids (so the
/// partition never depends on their order or on the other documents);
/// the first [`VALIDATION_DOCUMENT_SHARE`] of them (at least one, and at
/// least one left for test when there are two or more) are the validation
/// documents, the rest the test documents. The validation sequences are
/// `val_sequences` rows drawn (seeded) from the packing of the validation
/// documents alone, so they spread over all of them, and no validation
/// sequence holds a token of a test document.
#[derive(Debug, Clone)]
pub struct HeldOut {
    /// The validation documents, in their corpus order.
    pub val_documents: Vec<Document>,
    /// The test documents, in their corpus order: `eval test` reads them once.
    pub test_documents: Vec<Document>,
    /// Every packed sequence of the validation documents (the collapse
    /// monitors read its first rows).
    pub val_packed: Packed,
    /// The validation sequences: every epoch's validation, the targets the
    /// baselines' smoothing is chosen on. All of `val_packed` when it has at
    /// most `val_sequences` rows, else that many rows drawn from it, kept in
    /// packed order.
    pub val: Packed,
}

/// Splits the held-out documents `docs` into validation and test
/// ([`HeldOut`]) and packs the validation documents into sequences of
/// `max_len`.
pub fn held_out(
    docs: &[Document],
    tok: &TextTokenizer,
    max_len: usize,
    val_sequences: usize,
) -> Result<HeldOut> {
    let n = docs.len();
    let n_val = if n < 2 {
        n
    } else {
        ((n as f64 * VALIDATION_DOCUMENT_SHARE).round() as usize).clamp(1, n - 1)
    };
    let mut ranked: Vec<(u64, usize)> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| (stable_hash(&format!("{HELD_OUT_SEED}:{}", d.id)), i))
        .collect();
    ranked.sort_unstable();
    let mut is_val = vec![false; n];
    for &(_, i) in ranked.iter().take(n_val) {
        is_val[i] = true;
    }
    let pick = |val: bool| -> Vec<Document> {
        docs.iter()
            .zip(&is_val)
            .filter(|(_, &v)| v == val)
            .map(|(d, _)| d.clone())
            .collect()
    };
    let (val_documents, test_documents) = (pick(true), pick(false));
    let val_packed = pack(&val_documents, tok, max_len)?;
    let val = if val_packed.len() <= val_sequences {
        val_packed.clone()
    } else {
        let mut rows = crate::packing::epoch_order(val_packed.len(), HELD_OUT_SEED, 0x7A1, 0);
        rows.truncate(val_sequences);
        rows.sort_unstable();
        select_rows(&val_packed, &rows, tok)
    };
    Ok(HeldOut {
        val_documents,
        test_documents,
        val_packed,
        val,
    })
}

/// Rows `rows` (each below `p.len()`) of `p`. Sequences, text tokens and
/// unknown tokens are counted on those rows; `documents` and `long_lines`
/// stay those of the whole of `p`.
fn select_rows(p: &Packed, rows: &[usize], tok: &TextTokenizer) -> Packed {
    let mut ids = Vec::with_capacity(rows.len() * p.max_len);
    for &r in rows {
        ids.extend_from_slice(p.row(r));
    }
    let special = |t: i64| {
        usize::try_from(t)
            .ok()
            .and_then(|t| tok.is_special.get(t))
            .copied()
            .unwrap_or(true)
    };
    let stats = PackStats {
        sequences: rows.len(),
        text_tokens: ids.iter().filter(|&&t| !special(t)).count(),
        unknown_tokens: ids.iter().filter(|&&t| t == tok.unk_id).count(),
        ..p.stats.clone()
    };
    Packed {
        ids,
        max_len: p.max_len,
        stats,
    }
}

/// The test documents of `held` ([`HeldOut::test_documents`]): the
/// held-out documents no validation sequence holds a token of. `Err` when
/// there is none (fewer than two held-out documents).
pub fn test_documents(held: &HeldOut) -> Result<&[Document]> {
    if held.test_documents.is_empty() {
        return Err(Error::Config(format!(
            "eval {TEST}: the {} held-out document(s) are all validation documents: no \
             document is left for a test split (raise [data] validation_fraction)",
            held.val_documents.len()
        )));
    }
    Ok(&held.test_documents)
}

/// The baselines of `counts` on the test targets `test`, with the add-k and
/// interpolation weight chosen on the validation targets (`on_val`): the
/// test split chooses nothing.
pub fn test_baselines(
    counts: &NgramCounts,
    on_val: &NgramBaselines,
    test: &Packed,
    pad_id: i64,
    sep_id: i64,
) -> NgramBaselines {
    score(
        counts,
        test,
        pad_id,
        sep_id,
        on_val.bigram_add_k,
        on_val.interpolated_lambda,
    )
}

/// An observer that passes everything on to `inner` and keeps each step's
/// rate (sequences per second, [`StepReport::samples_per_s`]).
struct StepClock<'a> {
    inner: &'a mut dyn Observer,
    rates: Vec<f64>,
}

impl Observer for StepClock<'_> {
    fn on_start(&mut self, start_step: u64, total_steps: u64) {
        self.inner.on_start(start_step, total_steps);
    }
    fn on_init(&mut self, collapse: &CollapseStats) {
        self.inner.on_init(collapse);
    }
    fn on_step(&mut self, r: &StepReport) {
        self.rates.push(r.samples_per_s);
        self.inner.on_step(r);
    }
    fn on_epoch(&mut self, r: &EpochReport) {
        self.inner.on_epoch(r);
    }
    fn phase(&mut self, name: &str, done: usize, total: usize) {
        self.inner.phase(name, done, total);
    }
}

/// The median of `v` (the mean of the middle two for an even count; 0 when
/// empty); sorts `v`.
fn median(v: &mut [f64]) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Greedy and top-k continuations of [`PROMPTS`].
fn samples(
    model: &NextToken,
    tok: &TextTokenizer,
    seed: u64,
    device: Device,
) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for &prompt in PROMPTS {
        for sampling in [
            Sampling::Greedy,
            Sampling::TopK {
                k: 40,
                temperature: 1.0,
                seed,
            },
        ] {
            let g = generate(model, tok, prompt, SAMPLE_TOKENS, sampling, device)?;
            out.push(Sample {
                prompt: prompt.into(),
                sampling: sampling.describe(),
                text: g.text,
            });
        }
    }
    Ok(out)
}

/// Pre-trains, evaluates and exports a next-token model as `cfg` says;
/// writes `config.toml` and `summary.json` into the run folder.
pub fn pretrain(cfg: &TextRunConfig, opts: RunOptions) -> Result<NextTokenRunSummary> {
    cfg.check()?;
    check_sources(cfg)?;
    let mut run = Run::start(
        "text pre-training (next token)",
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
        val_all: _,
        tokenizer_seconds,
    } = prepare(cfg, &mut run)?;
    let max_len = cfg.model.max_len;
    let held = held_out(&split.val, &tok, max_len, cfg.eval.val_sequences)?;
    run.log(&format!(
        "validation: {} sequences drawn from the {} of {} of the {} held-out documents; test: the \
         other {} documents",
        held.val.len(),
        held.val_packed.len(),
        held.val_documents.len(),
        split.val.len(),
        held.test_documents.len()
    ));
    let val = held.val.clone();
    let base = baselines(&train, &val, &tok);
    run.log(&format!(
        "baselines on {} validation targets: {}",
        base.targets,
        baseline_text(&base)
    ));
    let gpt_cfg = model_config(cfg, &tok)?;
    seed_weights(seed);
    let mut model = NextToken::new(&gpt_cfg, device);
    let params = trainable_parameters(model.var_store());
    let train = Arc::new(train);
    let batches = CausalBatches::new(
        train.clone(),
        cfg.run.batch_size,
        seed,
        tok.pad_id,
        tok.sep_id,
    )
    .with_shard(run.shard);
    let mut evaluator = NextTokenEpochEval {
        val,
        monitor: held.val_packed.take(cfg.eval.monitor_sequences),
        batch: cfg.run.batch_size,
        device,
        baselines: base,
        last: None,
    };
    let trainer = run.trainer(cfg.trainer.clone());
    run.log(&format!(
        "training next_token: GPT-2 {} layers, hidden {}, {} heads, {:.2} M parameters, on {}",
        gpt_cfg.layers,
        gpt_cfg.hidden,
        gpt_cfg.heads,
        params as f64 / 1e6,
        describe(device)
    ));
    let loop_started = Instant::now();
    let mut clock = StepClock {
        inner: &mut *run.observer,
        rates: Vec::new(),
    };
    let summary = trainer.fit(&mut model, &batches, &mut evaluator, &mut clock, run.resume)?;
    let step_sequences_per_s = median(&mut clock.rates);
    let loop_seconds = loop_started.elapsed().as_secs_f64();
    let tokens_per_sequence = max_len as f64 - 1.0;
    let trained_sequences = summary.samples_per_s * summary.train_seconds;
    let train_peak_rss_mb = selfsup_core::metrics::peak_rss_mb();
    let (downstream, samples) = if primary {
        let random = || NextToken::new(&model.gpt.cfg, device);
        let rows = downstream_probes(cfg, &model, random, &tok, &root, device, &mut |l: &str| {
            run.log(l)
        })?;
        (rows, samples(&model, &tok, seed, device)?)
    } else {
        (Vec::new(), Vec::new())
    };
    let export_dir = run.run_dir.join("export");
    if primary {
        export_gpt2(&model, &tok, max_len, &export_dir)?;
    }
    let out = NextTokenRunSummary {
        method: cfg.method.name().into(),
        device: describe(device),
        threads: cfg.run.threads,
        corpus: split.report,
        train_documents: split.train.len(),
        validation_documents: split.val.len(),
        train: train.stats.clone(),
        validation: held.val_packed.stats.clone(),
        validation_sequences: held.val.stats.clone(),
        test_documents: held.test_documents.len(),
        vocab_size: tok.vocab_size,
        max_len,
        batch_size: cfg.run.batch_size,
        lr: cfg.trainer.optimizer.scaled_lr(cfg.run.batch_size),
        model: ModelSummary {
            layers: gpt_cfg.layers,
            hidden: gpt_cfg.hidden,
            heads: gpt_cfg.heads,
            intermediate: gpt_cfg.intermediate,
            parameters: params,
        },
        epochs: cfg.trainer.epochs,
        steps: summary.steps,
        final_loss: summary.final_loss,
        tokenizer_seconds,
        train_seconds: summary.train_seconds,
        train_sequences_per_s: summary.samples_per_s,
        train_tokens_per_s: summary.samples_per_s * tokens_per_sequence,
        step_tokens_per_s: step_sequences_per_s * tokens_per_sequence,
        loop_seconds,
        loop_tokens_per_s: trained_sequences * tokens_per_sequence / loop_seconds.max(1e-9),
        train_peak_rss_mb,
        wall_seconds: run.seconds(),
        val: evaluator.last,
        baselines: base,
        downstream,
        samples,
        warnings: summary.warnings,
        export_dir,
    };
    run.finish(out)
}

/// The end-of-run summary of `s` as lines (a blank line first).
pub fn summary_lines(
    s: &NextTokenRunSummary,
    peak_rss_mb: Option<f64>,
    run_dir: &Path,
) -> Vec<String> {
    let mb = |m: Option<f64>| m.map_or("n/a".into(), |m| format!("{m:.0} MB"));
    let b = &s.baselines;
    let mut out = vec![
        String::new(),
        format!(
            "selfsup {} on {} documents ({} train / {} validation, split by document; {})",
            s.method,
            s.train_documents + s.validation_documents,
            s.train_documents,
            s.validation_documents,
            s.device
        ),
        format!(
            "  GPT-2 {} layers, hidden {}, {} heads ({:.2} M parameters), vocabulary {}, sequences of {}",
            s.model.layers,
            s.model.hidden,
            s.model.heads,
            s.model.parameters as f64 / 1e6,
            s.vocab_size,
            s.max_len
        ),
        format!(
            "  epochs {}, steps {}, batch {}, final loss {:.4}",
            s.epochs, s.steps, s.batch_size, s.final_loss
        ),
        format!(
            "  tokens/s: median training step {:.0}; training epochs {:.0} ({:.1} s: batching, \
             logging, checkpoints; validation excluded); whole training loop {:.0} ({:.1} s: \
             per-epoch validation included)",
            s.step_tokens_per_s,
            s.train_tokens_per_s,
            s.train_seconds,
            s.loop_tokens_per_s,
            s.loop_seconds
        ),
        format!(
            "  tokenizer + packing {:.1} s, whole run {:.1} s, peak memory {} ({} when training ended)",
            s.tokenizer_seconds,
            s.wall_seconds,
            mb(peak_rss_mb),
            mb(s.train_peak_rss_mb)
        ),
    ];
    if let Some(v) = &s.val {
        out.push(format!(
            "  validation: next-token accuracy {:.2}%, perplexity {:.1} ({} predicted tokens)",
            v.token_acc * 100.0,
            v.perplexity,
            v.predicted_tokens
        ));
    }
    out.push(format!(
        "  baselines on the same targets: {}",
        baseline_text(b)
    ));
    if !s.downstream.is_empty() {
        out.push(
            "  downstream linear probes (frozen mean-pooled features, test split by document):"
                .into(),
        );
        out.extend(crate::report::probe_table(&s.downstream));
    }
    for g in &s.samples {
        out.push(format!("  {}: {:?} -> {:?}", g.sampling, g.prompt, g.text));
    }
    if s.warnings.is_empty() {
        out.push("  collapse monitors: no warning".into());
    } else {
        out.push(format!(
            "  collapse monitors: {} warning(s):",
            s.warnings.len()
        ));
        out.extend(s.warnings.iter().map(|w| format!("    - {w}")));
    }
    out.push(format!(
        "  run folder: {} (metrics.jsonl, curves.svg, checkpoint.safetensors, tokenizer/)",
        run_dir.display()
    ));
    out.push(format!(
        "  exported GPT2LMHeadModel: {}",
        s.export_dir.display()
    ));
    out
}

/// `eval validation` (perplexity beside the baselines, on the run's split),
/// `eval test` (the same on the test documents, [`test_documents`], the
/// baselines' smoothing chosen on validation) or `eval linear` (the
/// downstream probes) on a next-token checkpoint.
pub fn evaluate(
    protocol: &str,
    cfg: &TextRunConfig,
    checkpoint: &Path,
    root: &Path,
    device: Device,
) -> Result<Vec<String>> {
    let (model, tok) = restore(checkpoint, cfg, device)?;
    match protocol {
        "validation" => {
            let split = read_split(cfg, root, &mut |_: &str| {})?;
            let max_len = cfg.model.max_len;
            let mut train = pack(&split.train, &tok, max_len)?;
            let held = held_out(&split.val, &tok, max_len, cfg.eval.val_sequences)?;
            let val = held.val;
            subsample(&mut train, cfg.data.max_train_sequences, cfg.trainer.seed);
            let b = baselines(&train, &val, &tok);
            let v = validate_lm(&model, &val, cfg.run.batch_size, device);
            Ok(vec![
                format!(
                    "validation ({} sequences drawn from {} of the {} held-out documents): loss \
                     {:.4}, next-token accuracy {:.2}%, perplexity {:.1} ({} predicted tokens)",
                    val.len(),
                    held.val_documents.len(),
                    split.val.len(),
                    v.loss,
                    v.token_acc * 100.0,
                    v.perplexity,
                    v.predicted_tokens
                ),
                format!("baselines on the same targets: {}", baseline_text(&b)),
            ])
        }
        TEST => {
            let split = read_split(cfg, root, &mut |_: &str| {})?;
            let max_len = cfg.model.max_len;
            let held = held_out(&split.val, &tok, max_len, cfg.eval.val_sequences)?;
            let docs = test_documents(&held)?;
            let mut train = pack(&split.train, &tok, max_len)?;
            let val = &held.val;
            let test = pack(docs, &tok, max_len)?;
            subsample(&mut train, cfg.data.max_train_sequences, cfg.trainer.seed);
            let counts = NgramCounts::fit(&train, tok.vocab_size, tok.pad_id, tok.sep_id);
            let on_val = fit_bigram_k(&counts, val, tok.pad_id, tok.sep_id);
            let b = test_baselines(&counts, &on_val, &test, tok.pad_id, tok.sep_id);
            let v = validate_lm(&model, &test, cfg.run.batch_size, device);
            Ok(vec![
                format!(
                    "test ({} sequences of the {} held-out documents that no validation \
                     sequence reaches, of {}): loss {:.4}, next-token accuracy {:.2}%, \
                     perplexity {:.1} ({} predicted tokens)",
                    test.len(),
                    docs.len(),
                    split.val.len(),
                    v.loss,
                    v.token_acc * 100.0,
                    v.perplexity,
                    v.predicted_tokens
                ),
                format!(
                    "baselines on the same targets (add-k and lambda chosen on validation): {}",
                    baseline_text(&b)
                ),
            ])
        }
        "linear" => {
            let random = || NextToken::new(&model.gpt.cfg, device);
            crate::report::probe_lines(cfg, &model, random, &tok, root, device, checkpoint)
        }
        other => Err(Error::Config(format!(
            "eval {other}: a next_token checkpoint offers validation, {TEST}, linear"
        ))),
    }
}

/// `export` of a next-token checkpoint: the `GPT2LMHeadModel` layout.
pub fn export_checkpoint(checkpoint: &Path, cfg: &TextRunConfig, out: &Path) -> Result<String> {
    let (model, tok) = restore(checkpoint, cfg, Device::Cpu)?;
    export_gpt2(&model, &tok, cfg.model.max_len, out)?;
    Ok(format!(
        "exported GPT2LMHeadModel and its tokenizer (transformers layout) to {}",
        out.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const WORDS: [&str; 10] = [
        "apple", "brick", "cloud", "delta", "eagle", "flint", "grape", "house", "igloo", "jelly",
    ];

    /// Ten documents, each one word repeated (21 tokens), and their word's id.
    fn corpus() -> (Vec<Document>, TextTokenizer, Vec<i64>) {
        let docs: Vec<Document> = WORDS
            .iter()
            .enumerate()
            .map(|(k, w)| Document {
                id: format!("d{k}"),
                text: vec![[*w; 7].join(" "); 3].join("\n"),
                label: None,
            })
            .collect();
        let tok = TextTokenizer::train(&docs, 120, 1, true).unwrap();
        let ids = WORDS
            .iter()
            .map(|w| {
                let ids = tok.encode(w).unwrap();
                assert_eq!(ids.len(), 1, "{w} is one piece");
                i64::from(ids[0])
            })
            .collect();
        (docs, tok, ids)
    }

    /// The word ids a packed set holds.
    fn words_in(p: &Packed, ids: &[i64]) -> HashSet<i64> {
        let held: HashSet<i64> = p.ids.iter().copied().collect();
        ids.iter().copied().filter(|i| held.contains(i)).collect()
    }

    #[test]
    fn validation_spreads_over_half_the_held_out_documents_and_never_reaches_test() {
        let (docs, tok, ids) = corpus();
        let word = |d: &Document| ids[WORDS.iter().position(|w| d.text.starts_with(w)).unwrap()];
        let max_len = 8;
        let all = held_out(&docs, &tok, max_len, usize::MAX).unwrap();
        assert_eq!(all.val_documents.len(), 5);
        assert_eq!(all.test_documents.len(), 5);
        let val_words: HashSet<i64> = all.val_documents.iter().map(word).collect();
        let test_words: HashSet<i64> = all.test_documents.iter().map(word).collect();
        assert_eq!(
            val_words.len() + test_words.len(),
            docs.len(),
            "a partition"
        );
        assert!(val_words.is_disjoint(&test_words));
        // Every validation sequence of every size holds validation words only.
        assert_eq!(all.val.len(), all.val_packed.len());
        assert!(
            all.val_packed.len() > 16,
            "{} sequences",
            all.val_packed.len()
        );
        for n in 1..=all.val_packed.len() + 2 {
            let h = held_out(&docs, &tok, max_len, n).unwrap();
            assert_eq!(h.val.len(), n.min(all.val_packed.len()), "n = {n}");
            assert!(words_in(&h.val, &ids).is_subset(&val_words), "n = {n}");
            assert!(!words_in(&h.val, &ids).is_empty(), "n = {n}");
            assert_eq!(test_documents(&h).unwrap().len(), 5);
            // Drawn rows are rows of the validation packing, in its order.
            let rows: Vec<usize> = (0..h.val.len())
                .map(|r| {
                    (0..h.val_packed.len())
                        .find(|&k| h.val_packed.row(k) == h.val.row(r))
                        .unwrap()
                })
                .collect();
            assert!(rows.windows(2).all(|w| w[0] <= w[1]), "n = {n}: {rows:?}");
        }
        // Eight drawn sequences reach more validation documents than the
        // first eight sequences do (the old validation set's shortfall).
        let eight = held_out(&docs, &tok, max_len, 8).unwrap();
        let first = all.val_packed.take(8);
        assert!(
            words_in(&eight.val, &ids).len() > words_in(&first, &ids).len(),
            "{} against {}",
            words_in(&eight.val, &ids).len(),
            words_in(&first, &ids).len()
        );
        // The partition depends on the ids, not on their order.
        let mut reversed = docs.clone();
        reversed.reverse();
        let r = held_out(&reversed, &tok, max_len, 8).unwrap();
        let r_words: HashSet<i64> = r.val_documents.iter().map(word).collect();
        assert_eq!(r_words, val_words);
        // One held-out document: validation only, and eval test refuses.
        let one = held_out(&docs[..1], &tok, max_len, 8).unwrap();
        assert_eq!(one.val_documents.len(), 1);
        let err = test_documents(&one).unwrap_err();
        assert!(err.to_string().contains("no document is left"), "{err}");
    }

    #[test]
    fn test_baselines_keep_the_smoothing_chosen_on_validation() {
        let (docs, tok, _) = corpus();
        let train = pack(&docs[..6], &tok, 8).unwrap();
        let val = pack(&docs[6..8], &tok, 8).unwrap();
        let test = pack(&docs[8..], &tok, 8).unwrap();
        let counts = NgramCounts::fit(&train, tok.vocab_size, tok.pad_id, tok.sep_id);
        let on_val = fit_bigram_k(&counts, &val, tok.pad_id, tok.sep_id);
        let b = test_baselines(&counts, &on_val, &test, tok.pad_id, tok.sep_id);
        assert_eq!(b.bigram_add_k, on_val.bigram_add_k);
        assert_eq!(b.interpolated_lambda, on_val.interpolated_lambda);
        assert!(b.targets > 0);
        // Refitting on the test targets would choose differently (its words
        // are unseen in training: the smallest bigram weight wins there).
        let refit = fit_bigram_k(&counts, &test, tok.pad_id, tok.sep_id);
        assert!(refit.interpolated_perplexity <= b.interpolated_perplexity);
        let again = score(
            &counts,
            &test,
            tok.pad_id,
            tok.sep_id,
            on_val.bigram_add_k,
            on_val.interpolated_lambda,
        );
        assert_eq!(b.interpolated_perplexity, again.interpolated_perplexity);
    }
}
