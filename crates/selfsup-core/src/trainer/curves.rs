//! The curves plot (`curves.svg`): the training loss per step, the
//! evaluator's figures and the collapse monitors per epoch.
use super::records::{init_collapse_of, EpochRecord};
use super::EpochReport;
use crate::monitor::CollapseStats;
use crate::plot::{plot_curves, Panel, Series, SeriesStyle};
use crate::Result;
use serde_json::Value;
use std::path::Path;

/// What the curves plot shows, rebuilt from `metrics.jsonl` on resume.
#[derive(Default)]
pub(super) struct Curves {
    /// `(step, loss)` of every step.
    pub(super) loss: Vec<(f64, f64)>,
    /// Per-epoch series by name (`collapse:` ones go to their own panel).
    epoch_metrics: std::collections::BTreeMap<String, Vec<(f64, f64)>>,
}

impl Curves {
    /// The curves of the records a resumed log kept.
    pub(super) fn from_history(records: &[Value]) -> Self {
        let mut c = Self::default();
        for r in records {
            match r.get("kind").and_then(Value::as_str) {
                Some("step") => {
                    if let (Some(s), Some(l)) = (r["step"].as_f64(), r["loss"].as_f64()) {
                        c.loss.push((s, l));
                    }
                }
                Some("init") => {
                    if let Some(init) = init_collapse_of(std::slice::from_ref(r)) {
                        c.push_init(&init);
                    }
                }
                Some("epoch") => {
                    if let Ok(rep) = serde_json::from_value::<EpochRecord>(r.clone()) {
                        c.push((rep.epoch + 1) as f64, &rep.metrics, rep.collapse.as_ref());
                    }
                }
                _ => {}
            }
        }
        c
    }

    /// Adds an epoch's figures at x = epoch + 1.
    pub(super) fn push_epoch(&mut self, r: &EpochReport) {
        self.push((r.epoch + 1) as f64, &r.metrics, r.collapse.as_ref());
    }

    /// The monitors before the first step, at epoch 0 of the plot.
    pub(super) fn push_init(&mut self, c: &CollapseStats) {
        self.push(0.0, &[], Some(c));
    }

    fn push(&mut self, x: f64, metrics: &[(String, f64)], collapse: Option<&CollapseStats>) {
        for (k, v) in metrics {
            self.epoch_metrics
                .entry(k.clone())
                .or_default()
                .push((x, *v));
        }
        if let Some(c) = collapse {
            self.epoch_metrics
                .entry("collapse:std_ratio".into())
                .or_default()
                .push((x, c.std_ratio));
            self.epoch_metrics
                .entry("collapse:rank_ratio".into())
                .or_default()
                .push((x, c.rank_ratio));
        }
    }

    /// Draws the three panels into `path`.
    pub(super) fn plot(&self, path: &Path, title: &str) -> Result<()> {
        let series = |pred: &dyn Fn(&str) -> bool| -> Vec<Series> {
            self.epoch_metrics
                .iter()
                .filter(|(k, _)| pred(k))
                .map(|(k, pts)| Series {
                    name: k.trim_start_matches("collapse:").to_string(),
                    points: pts.clone(),
                    style: if k.starts_with("baseline") {
                        SeriesStyle::Reference
                    } else {
                        SeriesStyle::Line
                    },
                })
                .collect()
        };
        let panels = vec![
            Panel {
                title: "training loss".into(),
                x_label: "step".into(),
                series: vec![Series {
                    name: "loss".into(),
                    points: self.loss.clone(),
                    style: SeriesStyle::Smoothed,
                }],
            },
            Panel {
                title: "evaluation per epoch (validation data, never the test split)".into(),
                x_label: "epoch".into(),
                series: series(&|k| !k.starts_with("collapse:")),
            },
            Panel {
                title: "collapse monitors (1 = healthy spread, 0 = collapsed)".into(),
                x_label: "epoch".into(),
                series: series(&|k| k.starts_with("collapse:")),
            },
        ];
        plot_curves(path, title, &panels)
    }
}
