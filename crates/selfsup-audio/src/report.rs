//! The summary a user reads at the end of an audio run, as lines.
use crate::eval::ProbeRow;
use crate::pretrain::AudioRunSummary;

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

/// The end-of-run summary of `s` (a blank line first): what was read, the
/// model and training, codebook use, the probes beside random weights and
/// log-mel, warnings, the export. `peak_rss_mb`: the process's peak memory
/// at the end.
pub fn summary_lines(s: &AudioRunSummary, peak_rss_mb: Option<f64>) -> Vec<String> {
    let d = &s.data;
    let mut out = vec![
        String::new(),
        format!(
            "selfsup {} on {} clips ({:.0} s of audio; {} train, {} monitor, {} of probe test speakers kept out; {})",
            s.method, d.clips, d.seconds, s.train_clips, s.monitor_clips, s.held_out_clips, s.device
        ),
        format!(
            "  {} files read, {} resampled to 16 kHz, {} skipped",
            d.files, d.resampled, d.skipped
        ),
        format!(
            "  {:.3} M parameters, epochs {}, steps {}, batch {} x {:.1} s crops, final loss {:.4}",
            s.parameters as f64 / 1e6,
            s.epochs,
            s.steps,
            s.batch_size,
            s.crop_seconds,
            s.final_loss
        ),
        format!(
            "  reading {:.1} s, training {:.1} s ({:.1} s of audio per s), whole run {:.1} s, peak memory {}",
            s.load_seconds,
            s.train_seconds,
            s.audio_seconds_per_s,
            s.wall_seconds,
            peak_rss_mb.map_or("n/a".into(), |m| format!("{m:.0} MB"))
        ),
    ];
    let ppl: Vec<String> = s
        .codebook_perplexity
        .iter()
        .map(|p| format!("{p:.1}"))
        .collect();
    out.push(format!(
        "  codebook perplexity (monitor clips, hard choices): [{}] of {} entries per codebook",
        ppl.join(", "),
        s.codebook_entries
    ));
    for p in &s.probes {
        out.extend(probe_lines(p));
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
        "  exported (transformers Wav2Vec2ForPreTraining): {}",
        s.export_dir.display()
    ));
    out
}

/// One probe task: its sizes, then one row per layer (pre-trained beside
/// random weights) and the log-mel baseline.
pub fn probe_lines(p: &ProbeRow) -> Vec<String> {
    let mut out = vec![
        format!(
            "  linear probe {} ({} classes, {} train / {} test clips of unseen speakers; majority {}):",
            p.name,
            p.classes,
            p.train_clips,
            p.test_clips,
            pct(p.majority)
        ),
        "    features (mean-pooled)   pre-trained  random weights".into(),
    ];
    for (i, (a, b)) in p.pretrained.iter().zip(&p.random_weights).enumerate() {
        let name = match i {
            0 => "conv feature encoder".to_string(),
            1 => "transformer input".to_string(),
            _ => format!("transformer layer {}", i - 1),
        };
        out.push(format!("    {name:<24} {:>11}  {:>14}", pct(*a), pct(*b)));
    }
    out.push(format!(
        "    log-mel filterbank       {:>11}",
        pct(p.logmel)
    ));
    out
}
