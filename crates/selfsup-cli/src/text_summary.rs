//! The summary a user reads at the end of a text run.
use selfsup_text::pretrain::TextRunSummary;

pub fn print_text_summary(s: &TextRunSummary, peak_rss_mb: Option<f64>, run_dir: &std::path::Path) {
    println!();
    println!(
        "selfsup {} on {} documents ({} train / {} validation, split by document; {})",
        s.method,
        s.train_documents + s.validation_documents,
        s.train_documents,
        s.validation_documents,
        s.device
    );
    println!(
        "  BERT {} layers, hidden {}, {} heads ({:.2} M parameters), vocabulary {}, sequences of {}",
        s.model.layers,
        s.model.hidden,
        s.model.heads,
        s.model.parameters as f64 / 1e6,
        s.vocab_size,
        s.max_len
    );
    println!(
        "  epochs {}, steps {}, batch {}, final loss {:.4}",
        s.epochs, s.steps, s.batch_size, s.final_loss
    );
    println!(
        "  training {:.1} s ({:.0} tokens/s), tokenizer + packing {:.1} s, whole run {:.1} s, peak memory {} ({} when training ended)",
        s.train_seconds,
        s.train_tokens_per_s,
        s.tokenizer_seconds,
        s.wall_seconds,
        peak_rss_mb.map_or("n/a".into(), |m| format!("{m:.0} MB")),
        s.train_peak_rss_mb.map_or("n/a".into(), |m| format!("{m:.0} MB"))
    );
    if let Some(v) = &s.val {
        println!(
            "  validation: masked-token accuracy {:.2}%, perplexity {:.1} ({} predicted tokens)",
            v.masked_acc * 100.0,
            v.perplexity,
            v.predicted_tokens
        );
    }
    println!(
        "  unigram baseline:  masked-token accuracy {:.2}%, perplexity {:.1}",
        s.unigram.masked_acc * 100.0,
        s.unigram.perplexity
    );
    if !s.downstream.is_empty() {
        println!(
            "  downstream linear probes (frozen mean-pooled features, test split by document):"
        );
        println!(
            "    {:<16} {:>11} {:>15} {:>13}",
            "task", "pre-trained", "random weights", "bag of words"
        );
        for r in &s.downstream {
            println!(
                "    {:<16} {:>10.2}% {:>14.2}% {:>12.2}%",
                r.task,
                r.pretrained * 100.0,
                r.random_weights * 100.0,
                r.bag_of_words * 100.0
            );
        }
    }
    let c = &s.corpus;
    println!(
        "  corpus: {} files, {} empty skipped, {} decoded lossily; {} lines longer than a sequence split across sequences",
        c.files,
        c.empty_skipped,
        c.lossy_files,
        s.train.long_lines + s.validation.long_lines
    );
    if s.warnings.is_empty() {
        println!("  collapse monitors: no warning");
    } else {
        println!("  collapse monitors: {} warning(s):", s.warnings.len());
        for w in &s.warnings {
            println!("    - {w}");
        }
    }
    println!(
        "  run folder: {} (metrics.jsonl, curves.svg, checkpoint.safetensors, tokenizer/)",
        run_dir.display()
    );
    println!("  exported BertForMaskedLM: {}", s.export_dir.display());
}
