//! Progress bars and the end-of-run summary.
use indicatif::{ProgressBar, ProgressStyle};
use selfsup_core::monitor::CollapseStats;
use selfsup_core::trainer::{EpochReport, Observer, StepReport};
use selfsup_vision::pretrain::RunSummary;
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

/// The summary a user reads at the end of `pretrain`.
pub fn print_summary(s: &RunSummary, peak_rss_mb: Option<f64>, knn_k: i64) {
    println!();
    println!(
        "selfsup {} on {} ({} train / {} test images, {})",
        s.method, s.dataset, s.train_images, s.test_images, s.device
    );
    println!(
        "  epochs {}, steps {}, batch {}, final loss {:.4}",
        s.epochs,
        s.steps,
        if s.ranks > 1 {
            format!(
                "{} ({} ranks x {})",
                s.batch_size * s.ranks,
                s.ranks,
                s.batch_size
            )
        } else {
            s.batch_size.to_string()
        },
        s.final_loss
    );
    println!(
        "  training {:.1} s ({:.0} images/s), whole run {:.1} s, peak memory {}",
        s.train_seconds,
        s.train_images_per_s,
        s.wall_seconds,
        peak_rss_mb.map_or("n/a".into(), |m| format!("{m:.0} MB"))
    );
    match (s.knn_top1, s.raw_knn_top1) {
        (Some(knn), Some(raw)) => {
            println!("{}", knn_line(knn_k, s.eval_train_images, knn));
            if let Some(l) = s.linear_top1 {
                println!(
                    "  linear probe top-1 (test split):           {:.2}%",
                    l * 100.0
                );
            }
            println!(
                "  raw-pixel kNN baseline:                     {:.2}%",
                raw * 100.0
            );
            if let Some(l) = s.raw_linear_top1 {
                println!(
                    "  raw-pixel linear probe baseline:            {:.2}%",
                    l * 100.0
                );
            }
            let gain = (knn - raw) * 100.0;
            print!("  pre-training bought {gain:+.2} points of kNN accuracy over raw pixels");
            match (s.linear_top1, s.raw_linear_top1) {
                (Some(l), Some(r)) => {
                    println!(", {:+.2} points of linear-probe accuracy", (l - r) * 100.0)
                }
                _ => println!(),
            }
            println!("  evaluated on: {}", s.evaluation);
        }
        _ => println!("  evaluation {}", s.evaluation),
    }
    if let Some(c) = &s.image_cache {
        println!(
            "  image cache: {} ({})",
            if c.hit {
                "hit, nothing decoded".to_string()
            } else {
                format!("built in {:.1} s", c.build_seconds)
            },
            c.pixels_file.display()
        );
    }
    if s.skipped_files > 0 {
        let names: Vec<&str> = s
            .skipped_examples
            .iter()
            .take(5)
            .map(|f| f.file.as_str())
            .collect();
        println!(
            "  skipped {} unreadable image(s) (skip_bad): {}",
            s.skipped_files,
            names.join(", ")
        );
    }
    if s.collapse_warnings.is_empty() {
        println!("  collapse monitors: no warning");
    } else {
        println!(
            "  collapse monitors: {} warning(s):",
            s.collapse_warnings.len()
        );
        for w in &s.collapse_warnings {
            println!("    - {w}");
        }
    }
    println!(
        "  run folder: {} (metrics.jsonl, curves.svg, checkpoint.safetensors)",
        s.run_dir.display()
    );
    println!("  exported encoder: {}", s.export_dir.display());
}

/// The summary's kNN line with the configured k (and the k used, when the
/// training set is smaller).
fn knn_line(k: i64, train_images: usize, top1: f64) -> String {
    let used = k.min(i64::try_from(train_images).unwrap_or(i64::MAX));
    let k = if used < k {
        format!("k={used} of {k}")
    } else {
        format!("k={k}")
    };
    let label = format!("kNN top-1 ({k}, test split, final epoch):");
    format!("  {label:<43} {:.2}%", top1 * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_knn_line_shows_the_configured_k() {
        let l = knn_line(20, 1000, 0.5);
        assert!(l.contains("k=20,") && l.contains("50.00%"), "{l}");
        assert!(!l.contains("200"), "{l}");
        assert!(knn_line(200, 64, 0.5).contains("k=64 of 200"));
        // The old layout for the default k.
        assert_eq!(
            knn_line(200, 60000, 0.25),
            "  kNN top-1 (k=200, test split, final epoch): 25.00%"
        );
    }
}
