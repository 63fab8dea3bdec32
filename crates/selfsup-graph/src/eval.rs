//! Evaluation of frozen representations, beside two baselines computed by
//! the same code: the raw input features (node features; for graphs their
//! sum over nodes) and the same encoder with random weights.
//!
//! - classification (node or graph classes): core's linear probe
//!   (logistic regression on standardised features), mean and standard
//!   deviation of test accuracy over `splits` seeded random splits;
//! - regression (QM9 properties): ridge regression on standardised
//!   features, its penalty picked from a grid on a held-out fifth of the
//!   training part, test mean absolute error, over the same splits.
use crate::encoders::Readout;
use crate::graph::View;
use crate::methods::GraphMethod;
use crate::readers::Targets;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use selfsup_core::eval::{linear_probe_top1, LinearProbeConfig};
use selfsup_core::trainer::{EpochEval, EpochEvaluator};
use selfsup_core::Result;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// `[eval]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Random splits averaged in the final evaluation.
    pub splits: usize,
    /// Splits of the quick evaluation after every trainer epoch (0: none).
    pub epoch_splits: usize,
    /// Fraction of labelled samples used for training the probe.
    pub train_fraction: f64,
    /// Seed of the splits (independent of the training seed).
    pub split_seed: u64,
    pub probe: LinearProbeConfig,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            splits: 10,
            epoch_splits: 2,
            train_fraction: 0.5,
            split_seed: 0,
            probe: LinearProbeConfig::default(),
        }
    }
}

/// Mean and standard deviation over splits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Score {
    pub mean: f64,
    pub std: f64,
}

impl Score {
    fn of(xs: &[f64]) -> Score {
        let n = xs.len().max(1) as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        Score {
            mean,
            std: var.sqrt(),
        }
    }
}

/// One evaluation row: the representation and both baselines.
#[derive(Debug, Clone, Serialize)]
pub struct EvalRow {
    /// `accuracy` or `mae (<unit>)`.
    pub metric: String,
    pub pretrained: Score,
    pub random_weights: Score,
    pub raw_features: Score,
    pub train_examples: usize,
    pub test_examples: usize,
}

fn split(n: usize, train_fraction: f64, seed: u64, k: usize) -> (Tensor, Tensor) {
    let mut order: Vec<i64> = (0..n as i64).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(
        seed.wrapping_add(k as u64 * 7919),
    ));
    let t = ((n as f64 * train_fraction).round() as usize).clamp(1, n - 1);
    (
        Tensor::from_slice(&order[..t]),
        Tensor::from_slice(&order[t..]),
    )
}

/// Scores `feats` `[N, D]` against `target` over `splits` splits.
pub fn score(feats: &Tensor, target: &Targets, cfg: &EvalConfig, splits: usize) -> Result<Score> {
    let feats = feats.to_device(tch::Device::Cpu).to_kind(Kind::Float);
    let n = feats.size()[0] as usize;
    let mut out = Vec::new();
    for k in 0..splits {
        let (tr, te) = split(n, cfg.train_fraction, cfg.split_seed, k);
        match target {
            Targets::Classes { ids, names } => {
                let y = Tensor::from_slice(ids);
                out.push(linear_probe_top1(
                    &feats.index_select(0, &tr),
                    &y.index_select(0, &tr),
                    &feats.index_select(0, &te),
                    &y.index_select(0, &te),
                    names.len() as i64,
                    &cfg.probe,
                )?);
            }
            Targets::Values { values, .. } => {
                let y = Tensor::from_slice(values).to_kind(Kind::Float);
                out.push(ridge_mae(&feats, &y, &tr, &te));
            }
        }
    }
    Ok(Score::of(&out))
}

/// Ridge regression fitted on `tr`, its penalty chosen on the last fifth of
/// `tr`, refitted on all of `tr`; mean absolute error on `te`.
pub fn ridge_mae(x: &Tensor, y: &Tensor, tr: &Tensor, te: &Tensor) -> f64 {
    let fit = |rows: &Tensor, lambda: f64| -> Box<dyn Fn(&Tensor) -> Tensor> {
        let xt = x.index_select(0, rows);
        let yt = y.index_select(0, rows);
        let mean = xt.mean_dim([0i64].as_slice(), true, Kind::Float);
        let std = xt.std_dim([0i64].as_slice(), false, true);
        let std = std.where_self(&std.gt(1e-6), &std.ones_like());
        let xs = (&xt - &mean) / &std;
        let ym = yt.mean(Kind::Float);
        let d = xs.size()[1];
        let a = xs.tr().matmul(&xs)
            + Tensor::eye(d, (Kind::Float, x.device())) * (lambda * xs.size()[0] as f64);
        let w = Tensor::linalg_solve(&a, &xs.tr().matmul(&(&yt - &ym).unsqueeze(1)), true);
        Box::new(move |q: &Tensor| ((q - &mean) / &std).matmul(&w).squeeze_dim(1) + &ym)
    };
    let mae = |pred: Tensor, rows: &Tensor| {
        (pred - y.index_select(0, rows))
            .abs()
            .mean(Kind::Float)
            .double_value(&[])
    };
    let n = tr.size()[0];
    let cut = (n * 4 / 5).max(1);
    let (fit_rows, val_rows) = (tr.narrow(0, 0, cut), tr.narrow(0, cut, n - cut));
    let lambda = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
        .into_iter()
        .map(|l| {
            let m = if n - cut > 0 {
                mae(fit(&fit_rows, l)(&x.index_select(0, &val_rows)), &val_rows)
            } else {
                0.0
            };
            (l, m)
        })
        .fold(
            (1e-2, f64::INFINITY),
            |best, c| if c.1 < best.1 { c } else { best },
        )
        .0;
    mae(fit(tr, lambda)(&x.index_select(0, te)), te)
}

/// Raw input features of the evaluated samples: node features, or for
/// graph-level work each graph's node features summed.
pub fn raw_features(base: &View, graph_level: bool) -> Tensor {
    if graph_level {
        Readout::Sum.apply(&base.x.to_kind(Kind::Float), &base.batch, base.num_graphs)
    } else {
        base.x.to_kind(Kind::Float)
    }
}

/// The final evaluation: pre-trained, random-weights, raw features.
pub fn evaluate(
    trained: &dyn GraphMethod,
    random: &dyn GraphMethod,
    base: &View,
    graph_level: bool,
    target: &Targets,
    cfg: &EvalConfig,
) -> Result<EvalRow> {
    let n = match target {
        Targets::Classes { ids, .. } => ids.len(),
        Targets::Values { values, .. } => values.len(),
    };
    let t = ((n as f64 * cfg.train_fraction).round() as usize).clamp(1, n.max(2) - 1);
    Ok(EvalRow {
        metric: match target {
            Targets::Classes { .. } => "accuracy".into(),
            Targets::Values { unit, .. } => format!("mae ({unit})"),
        },
        pretrained: score(&trained.represent(base), target, cfg, cfg.splits)?,
        random_weights: score(&random.represent(base), target, cfg, cfg.splits)?,
        raw_features: score(&raw_features(base, graph_level), target, cfg, cfg.splits)?,
        train_examples: t,
        test_examples: n - t,
    })
}

/// After every trainer epoch: a quick score on the evaluated target (when
/// there is one) and the collapse monitors on two fixed augmented views.
pub struct GraphEpochEval {
    pub base: View,
    pub target: Option<Targets>,
    pub cfg: EvalConfig,
    /// Two fixed views of the evaluated samples.
    pub views: (View, View),
}

impl<M: GraphMethod + ?Sized> EpochEvaluator<M> for GraphEpochEval {
    fn evaluate(&mut self, method: &M, _epoch: usize) -> Result<EpochEval> {
        let mut metrics = Vec::new();
        if let (Some(t), true) = (&self.target, self.cfg.epoch_splits > 0) {
            let s = score(
                &method.represent(&self.base),
                t,
                &self.cfg,
                self.cfg.epoch_splits,
            )?;
            let name = match t {
                Targets::Classes { .. } => "probe_accuracy",
                Targets::Values { .. } => "ridge_mae",
            };
            metrics.push((name.to_string(), s.mean));
        }
        Ok(EpochEval {
            metrics,
            views: EpochEvaluator::<M>::monitor_views(self, method)?,
        })
    }

    fn monitor_views(&mut self, method: &M) -> Result<Option<(Tensor, Tensor)>> {
        // Centred on their common mean: post-ReLU GCN / GIN outputs share a
        // large positive offset that the uncentred monitors read as collapse
        // (the text crate does the same for pooled BERT embeddings).
        let a = method.represent(&self.views.0).to_device(tch::Device::Cpu);
        let b = method.represent(&self.views.1).to_device(tch::Device::Cpu);
        let mean = Tensor::cat(&[&a, &b], 0).mean_dim([0i64].as_slice(), true, Kind::Float);
        Ok(Some((a - &mean, b - &mean)))
    }
}
