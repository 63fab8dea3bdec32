//! Evaluation of frozen representations, beside two baselines computed by
//! the same code: the raw input features (node features; for graphs their
//! sum over nodes) and the same encoder with random weights.
//!
//! The labelled samples are split once into a fixed **validation part**
//! (`[eval] validation_fraction` of them, stratified by class, drawn with
//! `[eval] split_seed`: core's [`by_sample`]) and the rest, the pool that
//! `[eval] splits` seeded random train/test splits are drawn from. No
//! validation sample is ever a training or test sample of any split.
//!
//! - classification (node or graph classes): core's linear probe
//!   (logistic regression on standardised features) trained on a split's
//!   training part, scored on the validation part and on the split's test
//!   part; mean and standard deviation over the splits;
//! - regression (QM9 properties): ridge regression on standardised
//!   features fitted on a split's training part, its penalty picked from a
//!   grid on the validation part; validation and test mean absolute error.
//!
//! Every per-epoch figure ([`GraphEpochEval`]) is a validation figure (the
//! first `[eval] epoch_splits` splits' training parts, scored on the
//! validation part): the test parts are read only by [`evaluate`], once, at
//! the end.
use crate::encoders::Readout;
use crate::graph::View;
use crate::methods::GraphMethod;
use crate::readers::Targets;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use selfsup_core::eval::finetune::FinetuneConfig;
use selfsup_core::eval::split::by_sample;
use selfsup_core::eval::{linear_probe_top1, LinearProbeConfig};
use selfsup_core::trainer::{EpochEval, EpochEvaluator};
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// `[eval]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Random train/test splits averaged in the final evaluation.
    pub splits: usize,
    /// Splits of the quick (validation) evaluation after every trainer
    /// epoch (0: none).
    pub epoch_splits: usize,
    /// Fraction of the samples left after the validation part used for
    /// training the probe (the rest is a split's test part).
    pub train_fraction: f64,
    /// Fraction of the labelled samples set aside, once, as the validation
    /// part (stratified by class), in `(0, 1)`.
    pub validation_fraction: f64,
    /// Seed of the validation part and of the splits (independent of the
    /// training seed).
    pub split_seed: u64,
    pub probe: LinearProbeConfig,
    /// `[eval.finetune]`: `selfsup eval finetune` ([`crate::finetune`]; not
    /// written into stored configs while it has its defaults).
    #[serde(skip_serializing_if = "FinetuneConfig::is_default")]
    pub finetune: FinetuneConfig,
    /// `[eval.link]`: link prediction on held-out edges, which the run then
    /// trains without ([`crate::link`]); none when left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkConfig>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            splits: 10,
            epoch_splits: 2,
            train_fraction: 0.5,
            validation_fraction: 0.2,
            split_seed: 0,
            probe: LinearProbeConfig::default(),
            finetune: FinetuneConfig::default(),
            link: None,
        }
    }
}

/// `[eval.link]`: the held-out edges of link prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkConfig {
    /// Share of the undirected edges held out as validation positives.
    pub validation_fraction: f64,
    /// Share of the undirected edges held out as test positives.
    pub test_fraction: f64,
    /// Seed of the held-out edges and of the negatives (independent of the
    /// training seed).
    pub seed: u64,
}

impl Default for LinkConfig {
    /// GAE's split: 5% validation, 10% test.
    fn default() -> Self {
        Self {
            validation_fraction: 0.05,
            test_fraction: 0.1,
            seed: 0,
        }
    }
}

impl LinkConfig {
    /// Both fractions in `(0, 1)` and together below 1; the message names
    /// the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (key, f) in [
            ("validation_fraction", self.validation_fraction),
            ("test_fraction", self.test_fraction),
        ] {
            if !(f.is_finite() && f > 0.0 && f < 1.0) {
                return Err(format!(
                    "[eval.link] {key} = {f}: give a fraction of the edges in (0, 1)"
                ));
            }
        }
        if self.validation_fraction + self.test_fraction >= 1.0 {
            return Err(format!(
                "[eval.link] validation_fraction + test_fraction = {}: nothing would be left to \
                 train on; keep their sum below 1",
                self.validation_fraction + self.test_fraction
            ));
        }
        Ok(())
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

/// The validation figures of the representation and both baselines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ValidationScores {
    pub pretrained: Score,
    pub random_weights: Score,
    pub raw_features: Score,
}

/// One evaluation row: the representation and both baselines, on the test
/// parts (`pretrained`, `random_weights`, `raw_features`) and on the
/// validation part (`validation`).
#[derive(Debug, Clone, Serialize)]
pub struct EvalRow {
    /// `accuracy` or `mae (<unit>)`.
    pub metric: String,
    /// Test figures.
    pub pretrained: Score,
    pub random_weights: Score,
    pub raw_features: Score,
    /// Validation figures (the probes of the same splits).
    pub validation: ValidationScores,
    pub train_examples: usize,
    pub validation_examples: usize,
    pub test_examples: usize,
}

impl EvalRow {
    /// The figures as the terminal shows them: a heading line and one line
    /// per representation (validation, then test).
    pub fn lines(&self) -> Vec<String> {
        let pct = self.metric == "accuracy";
        let f = |s: Score| {
            if pct {
                format!("{:.2}% +- {:.2}", s.mean * 100.0, s.std * 100.0)
            } else {
                format!("{:.4} +- {:.4}", s.mean, s.std)
            }
        };
        let mut lines = vec![format!(
            "  {} on frozen embeddings ({} train / {} validation / {} test, mean +- std over \
             splits; validation fixed, test read once):",
            self.metric, self.train_examples, self.validation_examples, self.test_examples
        )];
        for (name, val, test) in [
            ("pre-trained", self.validation.pretrained, self.pretrained),
            (
                "random weights",
                self.validation.random_weights,
                self.random_weights,
            ),
            (
                "raw features",
                self.validation.raw_features,
                self.raw_features,
            ),
        ] {
            lines.push(format!(
                "    {name:<15} validation {:>18}   test {:>18}",
                f(val),
                f(test)
            ));
        }
        lines
    }
}

/// Sample indices of an evaluation: the fixed validation part, and per
/// split its training and test parts (drawn from the other samples).
#[derive(Debug, Clone, PartialEq)]
pub struct EvalSplits {
    pub validation: Vec<i64>,
    /// `(train, test)` per split.
    pub parts: Vec<(Vec<i64>, Vec<i64>)>,
}

/// Number of labelled samples of `target`.
pub fn sample_count(target: &Targets) -> usize {
    match target {
        Targets::Classes { ids, .. } => ids.len(),
        Targets::Values { values, .. } => values.len(),
    }
}

/// The validation part of `target`'s samples (stratified by class; values
/// are not stratified) and `count` seeded train/test splits of the rest.
/// Errors when no validation part can be drawn or fewer than 2 samples
/// would remain for a split.
pub fn eval_splits(target: &Targets, cfg: &EvalConfig, count: usize) -> Result<EvalSplits> {
    selfsup_core::eval::split::check_fraction(
        "[eval] validation_fraction",
        cfg.validation_fraction,
    )
    .map_err(Error::Config)?;
    let strata = match target {
        Targets::Classes { ids, .. } => ids.clone(),
        Targets::Values { values, .. } => vec![0; values.len()],
    };
    let v = by_sample(&strata, cfg.validation_fraction, cfg.split_seed).map_err(|e| {
        Error::Data(format!(
            "[eval] validation_fraction = {}: {e}",
            cfg.validation_fraction
        ))
    })?;
    let n = v.train.len();
    if n < 2 {
        return Err(Error::Data(format!(
            "{} labelled sample(s), {} of them in the validation part ([eval] \
             validation_fraction = {}): {n} left, fewer than the 2 a train/test split needs; give \
             more labelled samples or lower validation_fraction",
            strata.len(),
            v.validation.len(),
            cfg.validation_fraction
        )));
    }
    let t = ((n as f64 * cfg.train_fraction).round() as usize).clamp(1, n - 1);
    let pool: Vec<i64> = v.train.iter().map(|&i| i as i64).collect();
    let parts = (0..count)
        .map(|k| {
            let mut order = pool.clone();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(
                cfg.split_seed.wrapping_add(k as u64 * 7919),
            ));
            let test = order.split_off(t);
            (order, test)
        })
        .collect();
    Ok(EvalSplits {
        validation: v.validation.iter().map(|&i| i as i64).collect(),
        parts,
    })
}

/// Scores `feats` `[N, D]` against `target` over `splits`: the validation
/// figure, and with `test` the test figure (else `None`: no test sample is
/// read).
pub fn score(
    feats: &Tensor,
    target: &Targets,
    cfg: &EvalConfig,
    splits: &EvalSplits,
    test: bool,
) -> Result<(Score, Option<Score>)> {
    let feats = feats.to_device(tch::Device::Cpu).to_kind(Kind::Float);
    let val = Tensor::from_slice(&splits.validation);
    let (mut vals, mut tests) = (Vec::new(), Vec::new());
    for (tr, te) in &splits.parts {
        let tr = Tensor::from_slice(tr);
        let te = test.then(|| Tensor::from_slice(te));
        match target {
            Targets::Classes { ids, names } => {
                let y = Tensor::from_slice(ids);
                let (xtr, ytr) = (feats.index_select(0, &tr), y.index_select(0, &tr));
                let probe = |rows: &Tensor| {
                    linear_probe_top1(
                        &xtr,
                        &ytr,
                        &feats.index_select(0, rows),
                        &y.index_select(0, rows),
                        names.len() as i64,
                        &cfg.probe,
                    )
                };
                vals.push(probe(&val)?);
                if let Some(te) = &te {
                    tests.push(probe(te)?);
                }
            }
            Targets::Values { values, .. } => {
                let y = Tensor::from_slice(values).to_kind(Kind::Float);
                let (v, t) = ridge_mae(&feats, &y, &tr, &val, te.as_ref());
                vals.push(v);
                tests.extend(t);
            }
        }
    }
    Ok((Score::of(&vals), test.then(|| Score::of(&tests))))
}

/// The ridge penalties tried, picked by validation error.
pub const RIDGE_PENALTIES: [f64; 5] = [1e-4, 1e-3, 1e-2, 1e-1, 1.0];

/// Ridge regression on standardised features fitted on the rows `tr`, for
/// every penalty of [`RIDGE_PENALTIES`]; the one of least mean absolute
/// error on the rows `val` is kept. Returns its validation error and, with
/// `te`, its error on those rows.
pub fn ridge_mae(
    x: &Tensor,
    y: &Tensor,
    tr: &Tensor,
    val: &Tensor,
    te: Option<&Tensor>,
) -> (f64, Option<f64>) {
    let xt = x.index_select(0, tr);
    let yt = y.index_select(0, tr);
    let mean = xt.mean_dim([0i64].as_slice(), true, Kind::Float);
    let std = xt.std_dim([0i64].as_slice(), false, true);
    let std = std.where_self(&std.gt(1e-6), &std.ones_like());
    let xs = (&xt - &mean) / &std;
    let ym = yt.mean(Kind::Float);
    let d = xs.size()[1];
    let gram = xs.tr().matmul(&xs);
    let rhs = xs.tr().matmul(&(&yt - &ym).unsqueeze(1));
    let fit = |lambda: f64| {
        let a = &gram + Tensor::eye(d, (Kind::Float, x.device())) * (lambda * xs.size()[0] as f64);
        Tensor::linalg_solve(&a, &rhs, true)
    };
    let mae = |w: &Tensor, rows: &Tensor| {
        let pred = ((x.index_select(0, rows) - &mean) / &std)
            .matmul(w)
            .squeeze_dim(1)
            + &ym;
        (pred - y.index_select(0, rows))
            .abs()
            .mean(Kind::Float)
            .double_value(&[])
    };
    let mut best: Option<(f64, Tensor)> = None;
    for lambda in RIDGE_PENALTIES {
        let w = fit(lambda);
        let m = mae(&w, val);
        // NaN (a singular fit) never wins over a number.
        if best.as_ref().is_none_or(|(b, _)| m < *b || b.is_nan()) {
            best = Some((m, w));
        }
    }
    match best {
        Some((m, w)) => (m, te.map(|te| mae(&w, te))),
        None => (f64::NAN, te.map(|_| f64::NAN)),
    }
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

/// The final evaluation: pre-trained, random-weights, raw features, each
/// scored on the validation part and on the test parts of `[eval] splits`
/// splits.
pub fn evaluate(
    trained: &dyn GraphMethod,
    random: &dyn GraphMethod,
    base: &View,
    graph_level: bool,
    target: &Targets,
    cfg: &EvalConfig,
) -> Result<EvalRow> {
    let splits = eval_splits(target, cfg, cfg.splits)?;
    let both = |feats: &Tensor| -> Result<(Score, Score)> {
        let (v, t) = score(feats, target, cfg, &splits, true)?;
        Ok((v, t.unwrap_or_default()))
    };
    let pretrained = both(&trained.represent(base))?;
    let random_weights = both(&random.represent(base))?;
    let raw = both(&raw_features(base, graph_level))?;
    let (train_examples, test_examples) = splits
        .parts
        .first()
        .map_or((0, 0), |(tr, te)| (tr.len(), te.len()));
    Ok(EvalRow {
        metric: match target {
            Targets::Classes { .. } => "accuracy".into(),
            Targets::Values { unit, .. } => format!("mae ({unit})"),
        },
        pretrained: pretrained.1,
        random_weights: random_weights.1,
        raw_features: raw.1,
        validation: ValidationScores {
            pretrained: pretrained.0,
            random_weights: random_weights.0,
            raw_features: raw.0,
        },
        train_examples,
        validation_examples: splits.validation.len(),
        test_examples,
    })
}

/// The per-epoch metric's name: `val_probe_accuracy` or `val_ridge_mae`.
pub fn epoch_metric(target: &Targets) -> &'static str {
    match target {
        Targets::Classes { .. } => "val_probe_accuracy",
        Targets::Values { .. } => "val_ridge_mae",
    }
}

/// After every trainer epoch: a quick validation score on the evaluated
/// target (when there is one and `[eval] epoch_splits` > 0: the first
/// `epoch_splits` splits' training parts, scored on the validation part; no
/// test sample is read) and the collapse monitors on two fixed augmented
/// views.
pub struct GraphEpochEval {
    base: View,
    /// The target and the splits of the quick score.
    quick: Option<(Targets, EvalSplits)>,
    cfg: EvalConfig,
    /// Two fixed views of the evaluated samples.
    views: (View, View),
}

impl GraphEpochEval {
    /// The evaluator of `base` (on the training device), `target` (when the
    /// dataset has one) under `cfg`, monitoring the two fixed `views`.
    pub fn new(
        base: View,
        target: Option<Targets>,
        cfg: EvalConfig,
        views: (View, View),
    ) -> Result<Self> {
        let quick = match target {
            Some(t) if cfg.epoch_splits > 0 => {
                let s = eval_splits(&t, &cfg, cfg.epoch_splits)?;
                Some((t, s))
            }
            _ => None,
        };
        Ok(Self {
            base,
            quick,
            cfg,
            views,
        })
    }

    /// The splits the per-epoch figure is computed on (`None`: no figure).
    pub fn splits(&self) -> Option<&EvalSplits> {
        self.quick.as_ref().map(|(_, s)| s)
    }
}

impl<M: GraphMethod + ?Sized> EpochEvaluator<M> for GraphEpochEval {
    fn evaluate(&mut self, method: &M, _epoch: usize) -> Result<EpochEval> {
        let mut metrics = Vec::new();
        if let Some((t, splits)) = &self.quick {
            let (s, _) = score(&method.represent(&self.base), t, &self.cfg, splits, false)?;
            metrics.push((epoch_metric(t).to_string(), s.mean));
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

#[cfg(test)]
#[path = "eval/tests.rs"]
mod tests;
