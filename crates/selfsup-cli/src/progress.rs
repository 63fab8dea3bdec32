//! Progress bars and the end-of-run summary.
use indicatif::{ProgressBar, ProgressStyle};
use selfsup_core::monitor::CollapseStats;
use selfsup_core::trainer::{EpochReport, Observer, StepReport};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The phase being shown: its name, its bar (hidden when stderr is not a
/// terminal) and when it started.
struct Phase {
    name: String,
    bar: ProgressBar,
    started: Instant,
}

/// Draws one bar over the whole run: epoch, step, loss, images/s, ETA.
pub struct Bars {
    bar: Option<ProgressBar>,
    stop: Arc<AtomicBool>,
    stop_after: Option<u64>,
    smoothed_rate: f64,
    /// Samples/s are shown times `scale` in `unit` (images, or tokens for text).
    scale: f64,
    unit: &'static str,
    /// Draws and prints nothing (ranks other than 0 of a data-parallel run).
    quiet: bool,
    phase: Option<Phase>,
}

impl Bars {
    pub fn new(stop: Arc<AtomicBool>, stop_after: Option<u64>) -> Self {
        Self {
            bar: None,
            stop,
            stop_after,
            smoothed_rate: 0.0,
            scale: 1.0,
            unit: "img/s",
            quiet: false,
            phase: None,
        }
    }

    /// Keeps the bar's bookkeeping (and `stop_after`) but shows nothing.
    pub fn quiet(mut self, quiet: bool) -> Self {
        self.quiet = quiet;
        self
    }

    /// Shows throughput as `samples/s * scale` in `unit` (e.g. tokens/s).
    pub fn with_unit(mut self, scale: f64, unit: &'static str) -> Self {
        self.scale = scale;
        self.unit = unit;
        self
    }

    /// A line above the bar; printed plainly when the bar is hidden (not a terminal).
    fn println(&self, line: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(b) if !b.is_hidden() => b.println(line),
            _ => eprintln!("{line}"),
        }
    }

    pub fn finish(&mut self) {
        if let Some(p) = self.phase.take() {
            p.bar.finish_and_clear();
        }
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Observer for Bars {
    /// A bar per phase on a terminal (cleared at the end, then one line with
    /// its time); off a terminal, only that line when the phase ends. Notes
    /// (`total == 0`) are one line.
    fn phase(&mut self, name: &str, done: usize, total: usize) {
        if self.quiet {
            return;
        }
        if total == 0 {
            self.println(name);
            return;
        }
        if self.phase.as_ref().is_none_or(|p| p.name != name) {
            if let Some(p) = self.phase.take() {
                p.bar.finish_and_clear();
            }
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(name.to_string());
            self.phase = Some(Phase {
                name: name.to_string(),
                bar,
                started: Instant::now(),
            });
        }
        if let Some(p) = &self.phase {
            p.bar.set_length(total as u64);
            p.bar.set_position(done as u64);
        }
        if done >= total {
            if let Some(p) = self.phase.take() {
                p.bar.finish_and_clear();
                let what = if total > 2 {
                    format!(" ({total})")
                } else {
                    String::new()
                };
                self.println(&format!(
                    "{name}{what}: {:.1} s",
                    p.started.elapsed().as_secs_f64()
                ));
            }
        }
    }

    fn on_start(&mut self, start_step: u64, total_steps: u64) {
        let bar = if self.quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(total_steps)
        };
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] step {pos}/{len} {msg} ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_position(start_step);
        bar.reset_eta();
        self.bar = Some(bar);
        if start_step > 0 {
            self.println(&format!("resuming at step {start_step} of {total_steps}"));
        }
    }

    fn on_init(&mut self, c: &CollapseStats) {
        self.println(&format!(
            "before training: std ratio {:.2}, rank ratio {:.2} (RankMe {:.1} of {} dims)",
            c.std_ratio,
            c.rank_ratio,
            c.rankme,
            c.samples.min(c.dim)
        ));
    }

    fn on_step(&mut self, r: &StepReport) {
        self.smoothed_rate = if self.smoothed_rate == 0.0 {
            r.samples_per_s
        } else {
            0.9 * self.smoothed_rate + 0.1 * r.samples_per_s
        };
        if let Some(b) = &self.bar {
            b.set_prefix(format!("epoch {}/{}", r.epoch + 1, r.epochs));
            b.set_message(format!(
                "loss {:.4} lr {:.3e} {:.0} {}",
                r.loss,
                r.lr,
                self.smoothed_rate * self.scale,
                self.unit
            ));
            b.set_position(r.step + 1);
        }
        if self.stop_after.is_some_and(|s| r.step + 1 >= s) {
            self.stop.store(true, Ordering::SeqCst);
        }
    }

    fn on_epoch(&mut self, r: &EpochReport) {
        let metrics: Vec<String> = r
            .metrics
            .iter()
            .map(|(k, v)| {
                if k.contains("perplexity") {
                    format!("{k} {v:.2}")
                } else {
                    format!("{k} {:.2}%", v * 100.0)
                }
            })
            .collect();
        let collapse = r
            .collapse
            .as_ref()
            .map(|c| {
                format!(
                    " | std ratio {:.2}, rank ratio {:.2}",
                    c.std_ratio, c.rank_ratio
                )
            })
            .unwrap_or_default();
        // No metrics (an unlabelled image folder): no dangling separator.
        let metrics = if metrics.is_empty() {
            String::new()
        } else {
            format!(", {}", metrics.join(", "))
        };
        let line = format!(
            "epoch {:>3}: loss {:.4}, {:.0} {}{metrics}{collapse}",
            r.epoch + 1,
            r.mean_loss,
            r.samples_per_s * self.scale,
            self.unit,
        );
        self.println(&line);
        for w in &r.warnings {
            tracing::warn!("{w}");
            self.println(&format!("WARNING {w}"));
        }
    }
}
