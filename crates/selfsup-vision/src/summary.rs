//! What a vision run produced: `summary.json`, and the lines the terminal
//! shows at the end of a run.
use crate::data::folder_cache::{CacheReport, SkippedFile};
use selfsup_core::eval::FewShotScore;
use selfsup_core::trainer::TrainSummary;
use selfsup_core::workflow::Report;
use serde::Serialize;
use std::path::PathBuf;

/// N-way K-shot scores of the three feature sets, on the same episodes.
#[derive(Debug, Clone, Serialize)]
pub struct FewShotRows {
    pub pretrained: Vec<FewShotScore>,
    /// Empty when `[eval] random_weights = false`.
    pub random_weights: Vec<FewShotScore>,
    pub raw_pixels: Vec<FewShotScore>,
}

/// What a run produced (also written as `summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub method: String,
    pub dataset: String,
    pub device: String,
    pub train_images: usize,
    /// Test images scored (0 when evaluation was skipped).
    pub test_images: usize,
    /// Training images in the kNN bank / probe training set.
    pub eval_train_images: usize,
    /// Training images in the validation part (held out of the bank; 0
    /// when evaluation was skipped).
    pub validation_images: usize,
    /// Images per batch per rank.
    pub batch_size: usize,
    /// Data-parallel ranks (1: one process).
    pub ranks: usize,
    pub epochs: usize,
    pub steps: u64,
    pub final_loss: f64,
    pub train_seconds: f64,
    pub train_images_per_s: f64,
    pub wall_seconds: f64,
    /// Neighbours of the kNN figures (`[eval.knn] k`, clamped to the
    /// training images); `None` when evaluation was skipped.
    pub knn_k: Option<i64>,
    /// `[eval.knn] k` as configured (the summary's kNN line shows it beside
    /// the `k` used); not written to `summary.json`.
    #[serde(skip)]
    pub knn_k_configured: i64,
    /// Test split figures. `None`: evaluation skipped (see `evaluation`),
    /// or a rank other than 0.
    pub knn_top1: Option<f64>,
    pub linear_top1: Option<f64>,
    /// The same figures on the validation part of the training images.
    pub knn_val_top1: Option<f64>,
    pub linear_val_top1: Option<f64>,
    /// The baselines and controls are test split figures.
    pub raw_knn_top1: Option<f64>,
    pub raw_linear_top1: Option<f64>,
    /// The random-weights control (`[eval] random_weights`): the same
    /// encoder untrained, through the same code.
    pub random_knn_top1: Option<f64>,
    pub random_linear_top1: Option<f64>,
    /// The random-weights control on the validation part (what a choice
    /// between a method and its control is made on).
    pub random_knn_val_top1: Option<f64>,
    pub random_linear_val_top1: Option<f64>,
    /// N-way K-shot on the test features; `None` when evaluation was skipped.
    pub few_shot: Option<FewShotRows>,
    /// What the figures were measured on, or why there are none.
    pub evaluation: String,
    pub collapse_warnings: Vec<String>,
    /// Figures a method measures itself (the VQ tokenizer's PSNR and
    /// codebook usage on the validation part); absent for the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method_report: Option<serde_json::Value>,
    /// Whether collapse warnings were on (`[trainer.collapse] enabled`).
    pub collapse_monitors: bool,
    /// Image folders: the decoded-image cache of the training folder.
    pub image_cache: Option<CacheReport>,
    /// Image folders with `skip_bad`: unreadable files skipped (train + test).
    pub skipped_files: usize,
    /// The first of them (relative path and reason).
    pub skipped_examples: Vec<SkippedFile>,
    pub run_dir: PathBuf,
    pub export_dir: PathBuf,
    pub curves: PathBuf,
    #[serde(skip)]
    pub train: Option<TrainSummary>,
}

impl RunSummary {
    /// The summary a reader sees at the end of `pretrain`, a line each
    /// (the first one empty); `peak_rss_mb`: the process's peak memory.
    pub fn lines_with_memory(&self, peak_rss_mb: Option<f64>) -> Vec<String> {
        let s = self;
        let mut out = vec![
            String::new(),
            format!(
                "selfsup {} on {} ({} train / {} test images, {})",
                s.method, s.dataset, s.train_images, s.test_images, s.device
            ),
            format!(
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
            ),
            format!(
                "  training {:.1} s ({:.0} images/s), whole run {:.1} s, peak memory {}",
                s.train_seconds,
                s.train_images_per_s,
                s.wall_seconds,
                peak_rss_mb.map_or("n/a".into(), |m| format!("{m:.0} MB"))
            ),
        ];
        match (s.knn_top1, s.raw_knn_top1) {
            (Some(knn), Some(raw)) => {
                out.push(knn_line(s.knn_k_configured, s.eval_train_images, knn));
                if let Some(v) = s.knn_val_top1 {
                    out.push(knn_validation_line(
                        s.knn_k_configured,
                        s.eval_train_images,
                        v,
                    ));
                }
                if let Some(l) = s.linear_top1 {
                    out.push(format!(
                        "  linear probe top-1 (test split):           {:.2}%",
                        l * 100.0
                    ));
                }
                if let Some(l) = s.linear_val_top1 {
                    out.push(format!(
                        "  linear probe top-1 (validation part):      {:.2}%",
                        l * 100.0
                    ));
                }
                out.push(format!(
                    "  raw-pixel kNN baseline:                     {:.2}%",
                    raw * 100.0
                ));
                if let Some(l) = s.raw_linear_top1 {
                    out.push(format!(
                        "  raw-pixel linear probe baseline:            {:.2}%",
                        l * 100.0
                    ));
                }
                let gain = (knn - raw) * 100.0;
                let mut line = format!(
                    "  pre-training bought {gain:+.2} points of kNN accuracy over raw pixels"
                );
                if let (Some(l), Some(r)) = (s.linear_top1, s.raw_linear_top1) {
                    line.push_str(&format!(
                        ", {:+.2} points of linear-probe accuracy",
                        (l - r) * 100.0
                    ));
                }
                out.push(line);
                if let Some(k) = s.random_knn_top1 {
                    let mut line = format!(
                        "  random-weights control (same encoder, untrained): kNN {:.2}%",
                        k * 100.0
                    );
                    if let Some(l) = s.random_linear_top1 {
                        line.push_str(&format!(", linear probe {:.2}%", l * 100.0));
                    }
                    if let Some(k) = s.random_knn_val_top1 {
                        line.push_str(&format!(" (validation part: kNN {:.2}%", k * 100.0));
                        if let Some(l) = s.random_linear_val_top1 {
                            line.push_str(&format!(", linear probe {:.2}%", l * 100.0));
                        }
                        line.push(')');
                    }
                    out.push(line);
                }
                if let Some(f) = &s.few_shot {
                    out.extend(few_shot_lines(f));
                }
                out.push(format!("  evaluated on: {}", s.evaluation));
            }
            _ => out.push(format!("  evaluation {}", s.evaluation)),
        }
        if let Some(r) = &s.method_report {
            out.push(format!("  {} report: {r}", s.method));
        }
        if let Some(c) = &s.image_cache {
            out.push(format!(
                "  image cache: {} ({})",
                if c.hit {
                    "hit, nothing decoded".to_string()
                } else {
                    format!("built in {:.1} s", c.build_seconds)
                },
                c.pixels_file.display()
            ));
        }
        if s.skipped_files > 0 {
            let names: Vec<&str> = s
                .skipped_examples
                .iter()
                .take(5)
                .map(|f| f.file.as_str())
                .collect();
            out.push(format!(
                "  skipped {} unreadable image(s) (skip_bad): {}",
                s.skipped_files,
                names.join(", ")
            ));
        }
        if s.collapse_warnings.is_empty() {
            out.push("  collapse monitors: no warning".into());
        } else {
            out.push(format!(
                "  collapse monitors: {} warning(s):",
                s.collapse_warnings.len()
            ));
            out.extend(s.collapse_warnings.iter().map(|w| format!("    - {w}")));
        }
        out.push(format!(
            "  run folder: {} (metrics.jsonl, curves.svg, checkpoint.safetensors)",
            s.run_dir.display()
        ));
        out.push(format!("  exported encoder: {}", s.export_dir.display()));
        out
    }
}

impl Report for RunSummary {
    /// [`RunSummary::lines_with_memory`] with this process's peak memory.
    fn lines(&self) -> Vec<String> {
        self.lines_with_memory(selfsup_core::metrics::peak_rss_mb())
    }
}

/// One line per shot count: pre-trained, random weights and raw pixels,
/// each with its 95 % interval.
fn few_shot_lines(f: &FewShotRows) -> Vec<String> {
    let cell = |row: &[FewShotScore], i: usize| {
        row.get(i).map_or("-".to_string(), |s| {
            format!("{:.2} +- {:.2}%", s.mean * 100.0, s.ci95 * 100.0)
        })
    };
    f.pretrained
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "  {}-way {}-shot ({} episodes): pre-trained {}, random weights {}, raw pixels {}",
                s.ways,
                s.shots,
                s.episodes,
                cell(&f.pretrained, i),
                cell(&f.random_weights, i),
                cell(&f.raw_pixels, i)
            )
        })
        .collect()
}

/// The summary's test-split kNN line with the configured k (and the k
/// used, when the training set is smaller).
fn knn_line(k: i64, train_images: usize, top1: f64) -> String {
    let label = format!(
        "kNN top-1 ({}, test split, final epoch):",
        k_used(k, train_images)
    );
    format!("  {label:<43} {:.2}%", top1 * 100.0)
}

/// The same line for the validation part.
fn knn_validation_line(k: i64, train_images: usize, top1: f64) -> String {
    let label = format!("kNN top-1 ({}, validation part):", k_used(k, train_images));
    format!("  {label:<43} {:.2}%", top1 * 100.0)
}

/// `k=K`, or `k=USED of K` when the bank is smaller than k.
fn k_used(k: i64, train_images: usize) -> String {
    let used = k.min(i64::try_from(train_images).unwrap_or(i64::MAX));
    if used < k {
        format!("k={used} of {k}")
    } else {
        format!("k={k}")
    }
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
        assert_eq!(
            knn_validation_line(200, 54000, 0.25),
            "  kNN top-1 (k=200, validation part):         25.00%"
        );
        assert!(knn_validation_line(200, 64, 0.5).contains("(k=64 of 200, validation part)"));
    }

    fn summary() -> RunSummary {
        RunSummary {
            method: "simclr".into(),
            dataset: "fashion-mnist/train".into(),
            device: "cpu".into(),
            train_images: 1000,
            test_images: 500,
            eval_train_images: 64,
            validation_images: 100,
            batch_size: 128,
            ranks: 2,
            epochs: 1,
            steps: 3,
            final_loss: 5.25,
            train_seconds: 2.0,
            train_images_per_s: 500.0,
            wall_seconds: 3.5,
            knn_k: Some(64),
            knn_k_configured: 200,
            knn_top1: Some(0.75),
            linear_top1: Some(0.8),
            knn_val_top1: Some(0.74),
            linear_val_top1: Some(0.79),
            raw_knn_top1: Some(0.7),
            raw_linear_top1: Some(0.78),
            random_knn_top1: None,
            random_linear_top1: None,
            random_knn_val_top1: None,
            random_linear_val_top1: None,
            few_shot: None,
            evaluation: "test split".into(),
            collapse_warnings: vec!["rank ratio 0.01".into()],
            method_report: None,
            collapse_monitors: true,
            image_cache: None,
            skipped_files: 0,
            skipped_examples: Vec::new(),
            run_dir: PathBuf::from("runs/a"),
            export_dir: PathBuf::from("runs/a/export"),
            curves: PathBuf::from("runs/a/curves.svg"),
            train: None,
        }
    }

    /// The lines the `selfsup` binary printed before they moved here.
    #[test]
    fn the_summary_lines_are_the_terminal_s() {
        let lines = summary().lines_with_memory(Some(812.4));
        let want = [
            "",
            "selfsup simclr on fashion-mnist/train (1000 train / 500 test images, cpu)",
            "  epochs 1, steps 3, batch 256 (2 ranks x 128), final loss 5.2500",
            "  training 2.0 s (500 images/s), whole run 3.5 s, peak memory 812 MB",
            "  kNN top-1 (k=64 of 200, test split, final epoch): 75.00%",
            "  kNN top-1 (k=64 of 200, validation part):   74.00%",
            "  linear probe top-1 (test split):           80.00%",
            "  linear probe top-1 (validation part):      79.00%",
            "  raw-pixel kNN baseline:                     70.00%",
            "  raw-pixel linear probe baseline:            78.00%",
            "  pre-training bought +5.00 points of kNN accuracy over raw pixels, +2.00 points of \
             linear-probe accuracy",
            "  evaluated on: test split",
            "  collapse monitors: 1 warning(s):",
            "    - rank ratio 0.01",
            "  run folder: runs/a (metrics.jsonl, curves.svg, checkpoint.safetensors)",
            "  exported encoder: runs/a/export",
        ];
        assert_eq!(lines, want);
        // The controls, when measured, sit before "evaluated on".
        let score = |shots, mean| FewShotScore {
            ways: 5,
            shots,
            episodes: 600,
            mean,
            ci95: 0.0125,
        };
        let with_controls = RunSummary {
            random_knn_top1: Some(0.5),
            random_linear_top1: Some(0.6),
            random_knn_val_top1: Some(0.45),
            random_linear_val_top1: Some(0.55),
            few_shot: Some(FewShotRows {
                pretrained: vec![score(1, 0.7), score(5, 0.9)],
                random_weights: vec![score(1, 0.5), score(5, 0.6)],
                raw_pixels: vec![score(1, 0.55)],
            }),
            ..summary()
        };
        let lines = with_controls.lines_with_memory(None);
        assert_eq!(
            &lines[11..14],
            [
                "  random-weights control (same encoder, untrained): kNN 50.00%, linear probe 60.00% (validation part: kNN 45.00%, linear probe 55.00%)",
                "  5-way 1-shot (600 episodes): pre-trained 70.00 +- 1.25%, random weights 50.00 +- 1.25%, raw pixels 55.00 +- 1.25%",
                "  5-way 5-shot (600 episodes): pre-trained 90.00 +- 1.25%, random weights 60.00 +- 1.25%, raw pixels -",
            ]
        );
        // summary.json carries both parts, the test figures under the keys
        // they always had.
        let json = serde_json::to_value(summary()).unwrap();
        assert_eq!(
            (
                json["knn_top1"].as_f64(),
                json["knn_val_top1"].as_f64(),
                json["linear_top1"].as_f64(),
                json["linear_val_top1"].as_f64(),
                json["validation_images"].as_u64()
            ),
            (Some(0.75), Some(0.74), Some(0.8), Some(0.79), Some(100))
        );
        // Without validation figures (no probe), only the test lines.
        let test_only = RunSummary {
            knn_val_top1: None,
            linear_top1: None,
            linear_val_top1: None,
            raw_linear_top1: None,
            ..summary()
        };
        let lines = test_only.lines_with_memory(None);
        assert!(!lines.iter().any(|l| l.contains("validation")), "{lines:?}");
        assert!(
            !lines.iter().any(|l| l.contains("linear probe")),
            "{lines:?}"
        );
        let skipped = RunSummary {
            knn_top1: None,
            raw_knn_top1: None,
            ranks: 1,
            collapse_warnings: Vec::new(),
            evaluation: "skipped: no test folder".into(),
            ..summary()
        };
        let lines = skipped.lines_with_memory(None);
        assert_eq!(
            lines[2],
            "  epochs 1, steps 3, batch 128, final loss 5.2500"
        );
        assert!(lines[3].ends_with("peak memory n/a"), "{}", lines[3]);
        assert_eq!(lines[4], "  evaluation skipped: no test folder");
        assert_eq!(lines[5], "  collapse monitors: no warning");
    }
}
