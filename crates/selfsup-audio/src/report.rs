//! The summary a user reads at the end of an audio run, as lines.
use crate::eval::{layer_name, ProbeRow};
use crate::pretrain::AudioRunSummary;

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

/// The end-of-run summary of `s` (a blank line first): what was read, the
/// model and training, codebook use, the probes beside random weights and
/// log-mel (validation per layer, test of the chosen layer), warnings, the export. `peak_rss_mb`: the process's peak memory
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
            "  reading {:.1} s, training {:.1} s ({:.1} s of audio per s, padding not counted), whole run {:.1} s, peak memory {}",
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
    if !ppl.is_empty() {
        out.push(format!(
            "  codebook perplexity (monitor clips, hard choices): [{}] of {} entries per codebook",
            ppl.join(", "),
            s.codebook_entries
        ));
    }
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
    let layout = if s.method == "cpc" {
        "CPC: model.safetensors + config.json, benchmarks/cpc_reference.py loads it"
    } else {
        "transformers Wav2Vec2ForPreTraining"
    };
    out.push(format!("  exported ({layout}): {}", s.export_dir.display()));
    out
}

/// One probe task: its sizes, then per layer the validation accuracy
/// (pre-trained beside random weights; `*` marks the layer chosen there)
/// and the log-mel baseline's, then the test accuracy of each chosen layer.
pub fn probe_lines(p: &ProbeRow) -> Vec<String> {
    let mut out = vec![
        format!(
            "  linear probe {} ({} classes; validation: {} clips of {} (speakers kept out of \
             the probe), probe trained on {} clips of the others, majority {}; test: {} clips of \
             unseen speakers, probe trained on all {} training clips, majority {}):",
            p.name,
            p.classes,
            p.validation_clips,
            p.validation_speakers.join(", "),
            p.fit_clips,
            pct(p.validation_majority),
            p.test_clips,
            p.train_clips,
            pct(p.majority)
        ),
        "    validation accuracy      pre-trained  random weights".into(),
    ];
    let mark = |c: &crate::eval::LayerChoice, i: usize| if c.chosen_layer == i { "*" } else { " " };
    let name = |i: usize| p.layers.get(i).cloned().unwrap_or_else(|| layer_name(i));
    for (i, (a, b)) in p
        .pretrained
        .validation
        .iter()
        .zip(&p.random_weights.validation)
        .enumerate()
    {
        out.push(format!(
            "    {:<24} {:>10}{}  {:>13}{}",
            name(i),
            pct(*a),
            mark(&p.pretrained, i),
            pct(*b),
            mark(&p.random_weights, i)
        ));
    }
    out.push(format!(
        "    log-mel filterbank       {:>10}",
        p.logmel
            .validation
            .first()
            .map_or("n/a".into(), |v| pct(*v))
    ));
    out.push(format!(
        "    test accuracy (layer * chosen on validation, read once): pre-trained {} ({}), random \
         weights {} ({}), log-mel {}",
        pct(p.pretrained.test),
        name(p.pretrained.chosen_layer),
        pct(p.random_weights.test),
        name(p.random_weights.chosen_layer),
        pct(p.logmel.test)
    ));
    out
}
