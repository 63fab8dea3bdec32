//! The next-token workflow (`[method] name = "next_token"`): the same
//! corpus, split, WordPiece tokenizer and packing as MLM's
//! ([`crate::pretrain`]), a GPT-2 decoder ([`crate::model::Gpt2`]) trained on
//! next-token cross-entropy, validation perplexity every epoch beside the
//! unigram and bigram (add-k, interpolated) baselines ([`crate::ngram`]),
//! the downstream linear probes of MLM on the decoder's mean-pooled
//! features (beside random weights and bag of words), a few generated
//! continuations, and the `GPT2LMHeadModel` export. It also answers `eval
//! validation` / `eval test` / `eval linear` and `export` on a next-token
//! checkpoint ([`evaluate`], [`export_checkpoint`]). The test split
//! ([`test_documents`]) is the validation documents the validation
//! sequences never reach: read once, for the final choice of settings.
use crate::causal_eval::{validate_lm, LmValidation, NextTokenEpochEval};
use crate::config::TextRunConfig;
use crate::corpus::{Document, ReadReport};
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
use selfsup_core::run::{seed_weights, trainable_parameters, Run};
use selfsup_core::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    /// Input tokens per second (`max_len - 1` per sequence).
    pub train_tokens_per_s: f64,
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

/// The test documents of a next-token run: the validation documents that
/// none of the first `val_sequences` packed validation sequences (the
/// validation set of every epoch, on which settings are chosen) contains a
/// token of. Packing fills its sequences in document order, so when
/// `docs[..j]` alone packs into more than `val_sequences` sequences,
/// `docs[j..]` starts at sequence `val_sequences` or later; this is the
/// smallest such `j`. `Err` when every validation document reaches the
/// validation sequences.
pub fn test_documents<'a>(
    docs: &'a [Document],
    tok: &TextTokenizer,
    max_len: usize,
    val_sequences: usize,
) -> Result<&'a [Document]> {
    let packed = |j: usize| -> Result<usize> { Ok(pack(&docs[..j], tok, max_len)?.len()) };
    let all = packed(docs.len())?;
    if all <= val_sequences {
        return Err(Error::Config(format!(
            "eval {TEST}: the {} validation documents pack into {all} sequence(s), all of them \
             validation sequences ([eval] val_sequences = {val_sequences}): no document is left \
             for a test split (raise [data] validation_fraction or lower [eval] val_sequences)",
            docs.len()
        )));
    }
    // Smallest j with packed(j) > val_sequences: packed(0) = 0 and
    // packed(len) > val_sequences, and packed only grows with j.
    let (mut lo, mut hi) = (0, docs.len());
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if packed(mid)? > val_sequences {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let rest = &docs[hi..];
    if rest.is_empty() {
        return Err(Error::Config(format!(
            "eval {TEST}: the last of the {} validation documents already reaches the \
             {val_sequences} validation sequences ([eval] val_sequences): no document is left \
             for a test split (raise [data] validation_fraction or lower [eval] val_sequences)",
            docs.len()
        )));
    }
    Ok(rest)
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
        val_all,
        tokenizer_seconds,
    } = prepare(cfg, &mut run)?;
    let max_len = cfg.model.max_len;
    let val = val_all.take(cfg.eval.val_sequences);
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
        monitor: val_all.take(cfg.eval.monitor_sequences),
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
    let summary = trainer.fit(
        &mut model,
        &batches,
        &mut evaluator,
        &mut *run.observer,
        run.resume,
    )?;
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
        validation: val_all.stats.clone(),
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
        train_tokens_per_s: summary.samples_per_s * (max_len as f64 - 1.0),
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
            "  training {:.1} s ({:.0} tokens/s), tokenizer + packing {:.1} s, whole run {:.1} s, peak memory {} ({} when training ended)",
            s.train_seconds,
            s.train_tokens_per_s,
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
            let val = pack(&split.val, &tok, max_len)?.take(cfg.eval.val_sequences);
            subsample(&mut train, cfg.data.max_train_sequences, cfg.trainer.seed);
            let b = baselines(&train, &val, &tok);
            let v = validate_lm(&model, &val, cfg.run.batch_size, device);
            Ok(vec![
                format!(
                    "validation ({} sequences of {} documents): loss {:.4}, next-token accuracy {:.2}%, perplexity {:.1} ({} predicted tokens)",
                    val.len(),
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
            let docs = test_documents(&split.val, &tok, max_len, cfg.eval.val_sequences)?;
            let mut train = pack(&split.train, &tok, max_len)?;
            let val = pack(&split.val, &tok, max_len)?.take(cfg.eval.val_sequences);
            let test = pack(docs, &tok, max_len)?;
            subsample(&mut train, cfg.data.max_train_sequences, cfg.trainer.seed);
            let counts = NgramCounts::fit(&train, tok.vocab_size, tok.pad_id, tok.sep_id);
            let on_val = fit_bigram_k(&counts, &val, tok.pad_id, tok.sep_id);
            let b = test_baselines(&counts, &on_val, &test, tok.pad_id, tok.sep_id);
            let v = validate_lm(&model, &test, cfg.run.batch_size, device);
            Ok(vec![
                format!(
                    "test ({} sequences of the {} validation documents that no validation \
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

    #[test]
    fn test_documents_never_reach_the_validation_sequences() {
        let (docs, tok, ids) = corpus();
        let max_len = 8;
        let all = pack(&docs, &tok, max_len).unwrap();
        assert!(all.len() > 30, "{} sequences", all.len());
        for n in 1..all.len() {
            let seen: HashSet<i64> = (0..n).flat_map(|r| all.row(r).to_vec()).collect();
            let unseen = ids.iter().filter(|i| !seen.contains(i)).count();
            match test_documents(&docs, &tok, max_len, n) {
                Ok(test) => {
                    let first = docs.len() - test.len();
                    for (k, id) in ids.iter().enumerate().skip(first) {
                        assert!(
                            !seen.contains(id),
                            "n = {n}: test document {k} is in validation"
                        );
                    }
                    // At most the one document starting right at sequence n is given up.
                    assert!(
                        test.len() + 1 >= unseen,
                        "n = {n}: {} of {unseen}",
                        test.len()
                    );
                }
                Err(e) => {
                    assert!(unseen <= 1, "n = {n}: {unseen} unseen documents, yet {e}");
                    assert!(e.to_string().contains("val_sequences"), "{e}");
                }
            }
        }
        assert_eq!(test_documents(&docs, &tok, max_len, 1).unwrap().len(), 9);
        let err = test_documents(&docs, &tok, max_len, all.len()).unwrap_err();
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
