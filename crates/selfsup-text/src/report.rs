//! The summary a user reads at the end of a text run, as lines.
use crate::config::TextRunConfig;
use crate::pretrain::TextRunSummary;
use crate::tokenizer::TextTokenizer;
use selfsup_core::method::Method;
use selfsup_core::{Error, Result};
use std::path::Path;
use tch::Device;

/// The end-of-run summary of `s` (a blank line first): corpus, model,
/// training, validation beside the unigram baseline, the downstream probes
/// beside random weights and bag of words, warnings, where things are.
/// `peak_rss_mb`: the process's peak memory at the end.
pub fn summary_lines(s: &TextRunSummary, peak_rss_mb: Option<f64>, run_dir: &Path) -> Vec<String> {
    let mb = |m: Option<f64>| m.map_or("n/a".into(), |m| format!("{m:.0} MB"));
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
            "  BERT {} layers, hidden {}, {} heads ({:.2} M parameters), vocabulary {}, sequences of {}",
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
            "  validation: masked-token accuracy {:.2}%, perplexity {:.1} ({} predicted tokens)",
            v.masked_acc * 100.0,
            v.perplexity,
            v.predicted_tokens
        ));
    }
    out.push(format!(
        "  unigram baseline:  masked-token accuracy {:.2}%, perplexity {:.1}",
        s.unigram.masked_acc * 100.0,
        s.unigram.perplexity
    ));
    if !s.downstream.is_empty() {
        out.push(
            "  downstream linear probes (frozen mean-pooled features, test split by document):"
                .into(),
        );
        out.extend(probe_table(&s.downstream));
    }
    let c = &s.corpus;
    out.push(format!(
        "  corpus: {} files, {} empty skipped, {} decoded lossily; {} lines longer than a sequence split across sequences",
        c.files,
        c.empty_skipped,
        c.lossy_files,
        s.train.long_lines + s.validation.long_lines
    ));
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
        "  exported BertForMaskedLM: {}",
        s.export_dir.display()
    ));
    out
}

/// The downstream table: a header and one row per task, in percent.
pub fn probe_table(rows: &[crate::eval::ProbeRow]) -> Vec<String> {
    let mut out = vec![format!(
        "    {:<16} {:>11} {:>15} {:>13}",
        "task", "pre-trained", "random weights", "bag of words"
    )];
    out.extend(rows.iter().map(|r| {
        format!(
            "    {:<16} {:>10.2}% {:>14.2}% {:>12.2}%",
            r.task,
            r.pretrained * 100.0,
            r.random_weights * 100.0,
            r.bag_of_words * 100.0
        )
    }));
    out
}

/// `eval linear` on a text checkpoint: [`crate::pretrain::downstream_probes`] as lines; a
/// config without `[[eval.downstream]]` is an error naming `checkpoint`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn probe_lines<M: Method>(
    cfg: &TextRunConfig,
    model: &M,
    random_weights: impl FnOnce() -> M,
    tok: &TextTokenizer,
    root: &Path,
    device: Device,
    checkpoint: &Path,
) -> Result<Vec<String>> {
    if cfg.eval.downstream.is_empty() {
        return Err(Error::Config(format!(
            "{}: its config has no [[eval.downstream]] set to probe (eval validation needs none)",
            checkpoint.display()
        )));
    }
    let rows = crate::pretrain::downstream_probes(
        cfg,
        model,
        random_weights,
        tok,
        root,
        device,
        &mut |_: &str| {},
    )?;
    let mut out = vec![
        "downstream linear probes (frozen mean-pooled features, test split by document):".into(),
    ];
    out.extend(probe_table(&rows));
    Ok(out)
}
