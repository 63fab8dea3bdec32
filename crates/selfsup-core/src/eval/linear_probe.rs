//! Linear probe: a single linear layer trained with softmax cross-entropy on
//! frozen features, the standard measure of how linearly separable a
//! representation makes the classes.
//!
//! Features are standardised with the training set's per-dimension mean and
//! standard deviation, the layer starts at zero (the problem is convex, so
//! no random initialisation is needed) and is trained with Adam on shuffled
//! mini-batches under a cosine learning-rate decay, with an L2 penalty
//! `weight_decay / 2 * ||W||^2` on the weights. The shuffling comes from a
//! ChaCha generator seeded with [`LinearProbeConfig::seed`]: results depend
//! on the seed only, and libtorch's global random state is left untouched.
use super::check_split;
use crate::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Kind, Tensor};

/// Linear-probe settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinearProbeConfig {
    /// Passes over the training features.
    pub epochs: usize,
    /// Peak Adam learning rate (decayed to 0 with a cosine).
    pub lr: f64,
    /// L2 penalty on the weights (not the bias), added to the loss.
    pub weight_decay: f64,
    /// Mini-batch size (clamped to the training set size).
    pub batch_size: i64,
    /// Seed of the mini-batch shuffling.
    pub seed: u64,
}

impl LinearProbeConfig {
    /// Refuses zero epochs or batch size, a learning rate that is not
    /// positive and a negative weight decay; `key` is the config table.
    pub fn validate(&self, key: &str) -> std::result::Result<(), String> {
        if self.epochs == 0 {
            return Err(format!("{key}.epochs = 0: give at least 1"));
        }
        if self.batch_size < 1 {
            return Err(format!(
                "{key}.batch_size = {}: give at least 1",
                self.batch_size
            ));
        }
        crate::trainer::positive(&format!("{key}.lr"), self.lr)?;
        crate::trainer::non_negative(&format!("{key}.weight_decay"), self.weight_decay)
    }
}

impl Default for LinearProbeConfig {
    fn default() -> Self {
        Self {
            epochs: 100,
            lr: 1e-2,
            weight_decay: 1e-4,
            batch_size: 1024,
            seed: 0,
        }
    }
}

/// Test top-1 accuracy in `[0, 1]` of a linear classifier trained on
/// `train_feats` (see the [module docs](self)): [`LinearProbe::fit`] then
/// [`LinearProbe::top1`].
///
/// `*_feats` are `[N, D]` (any float kind, any device: training runs on the
/// device of `train_feats`), `*_labels` integer `[N]` in `[0, num_classes)`.
/// The features are detached, so the encoder that produced them is never
/// touched; gradient is enabled for the probe itself even when the caller
/// runs under `tch::no_grad`.
pub fn linear_probe_top1(
    train_feats: &Tensor,
    train_labels: &Tensor,
    test_feats: &Tensor,
    test_labels: &Tensor,
    num_classes: i64,
    cfg: &LinearProbeConfig,
) -> Result<f64> {
    LinearProbe::fit(train_feats, train_labels, num_classes, cfg)?.top1(test_feats, test_labels)
}

/// A linear classifier fitted on frozen training features, with their
/// standardisation: score it on as many test sets as needed (the clean and
/// every corrupted test set of a robustness table) without refitting.
pub struct LinearProbe {
    mean: Tensor,
    std: Tensor,
    linear: nn::Linear,
    num_classes: i64,
    /// Keeps the layer's variables alive.
    _vs: nn::VarStore,
}

impl LinearProbe {
    /// Trains the probe on `train_feats` `[N, D]` / `train_labels` `[N]`
    /// (labels in `[0, num_classes)`), on the features' device.
    pub fn fit(
        train_feats: &Tensor,
        train_labels: &Tensor,
        num_classes: i64,
        cfg: &LinearProbeConfig,
    ) -> Result<Self> {
        if cfg.epochs == 0 {
            return Err(Error::Eval(
                "linear probe: epochs must be at least 1".into(),
            ));
        }
        if cfg.batch_size < 1 {
            return Err(Error::Eval(format!(
                "linear probe: batch_size must be at least 1, got {}",
                cfg.batch_size
            )));
        }
        if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
            return Err(Error::Eval(format!(
                "linear probe: lr must be positive, got {}",
                cfg.lr
            )));
        }
        if !(cfg.weight_decay.is_finite() && cfg.weight_decay >= 0.0) {
            return Err(Error::Eval(format!(
                "linear probe: weight_decay must be non-negative, got {}",
                cfg.weight_decay
            )));
        }
        let (train, train_y) = check_split("train", train_feats, train_labels, num_classes)?;
        let device = train.device();
        let (n, dim) = (train.size()[0], train.size()[1]);

        let (mean, std) = tch::no_grad(|| {
            let mean = train.mean_dim([0i64].as_slice(), true, Kind::Float);
            let std = train.std_dim([0i64].as_slice(), false, true);
            // Dimensions constant on the training set are only centred.
            let std = std.where_self(&std.gt(1e-6), &std.ones_like());
            (mean, std)
        });
        let train = tch::no_grad(|| (&train - &mean) / &std);

        let vs = nn::VarStore::new(device);
        let zero = nn::LinearConfig {
            ws_init: nn::Init::Const(0.0),
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        let linear = nn::linear(vs.root(), dim, num_classes, zero);
        let mut opt = nn::Adam::default().build(&vs, cfg.lr)?;

        let batch = cfg.batch_size.min(n);
        let steps_per_epoch = (n + batch - 1) / batch;
        let total_steps = (steps_per_epoch * cfg.epochs as i64) as f64;
        let mut order: Vec<i64> = (0..n).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut step = 0usize;
        tch::with_grad(|| -> Result<()> {
            for _ in 0..cfg.epochs {
                order.shuffle(&mut rng);
                let perm = Tensor::from_slice(&order).to_device(device);
                let mut start = 0;
                while start < n {
                    let len = batch.min(n - start);
                    let idx = perm.narrow(0, start, len);
                    let x = train.index_select(0, &idx);
                    let y = train_y.index_select(0, &idx);
                    let lr = cfg.lr
                        * 0.5
                        * (1.0 + (std::f64::consts::PI * step as f64 / total_steps).cos());
                    opt.set_lr(lr);
                    let mut loss = linear.forward(&x).cross_entropy_for_logits(&y);
                    if cfg.weight_decay > 0.0 {
                        loss += linear.ws.square().sum(Kind::Float) * (0.5 * cfg.weight_decay);
                    }
                    opt.backward_step(&loss);
                    start += len;
                    step += 1;
                }
            }
            Ok(())
        })?;
        Ok(Self {
            mean,
            std,
            linear,
            num_classes,
            _vs: vs,
        })
    }

    /// Top-1 accuracy in `[0, 1]` on `test_feats` `[M, D]` / `test_labels`
    /// `[M]`, standardised as the training features were.
    pub fn top1(&self, test_feats: &Tensor, test_labels: &Tensor) -> Result<f64> {
        let (test, test_y) = check_split("test", test_feats, test_labels, self.num_classes)?;
        let dim = self.mean.size().last().copied().unwrap_or(0);
        if test.size()[1] != dim {
            return Err(Error::Eval(format!(
                "train features have {dim} dimensions but test features have {}",
                test.size()[1]
            )));
        }
        let device = self.mean.device();
        let correct = tch::no_grad(|| {
            let x = (test.to_device(device) - &self.mean) / &self.std;
            self.linear
                .forward(&x)
                .argmax(1, false)
                .eq_tensor(&test_y.to_device(device))
                .sum(Kind::Int64)
                .int64_value(&[])
        });
        Ok(correct as f64 / test_y.size()[0] as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::testing::TestRng;
    use std::time::Instant;
    use tch::Device;

    /// A linearly separable-ish problem: labels from a random linear teacher,
    /// features with very different scales per dimension.
    fn teacher_problem(seed: u64, n: i64, dim: i64, classes: i64) -> (Tensor, Tensor) {
        let mut g = TestRng::new(seed);
        let x = g.randn(&[n, dim]);
        let teacher = g.randn(&[dim, classes]);
        let y = x.matmul(&teacher).argmax(1, false);
        let scales = Tensor::logspace(-2.0, 2.0, dim, 10.0, (Kind::Float, Device::Cpu));
        (x * scales + 5.0, y)
    }

    #[test]
    fn learns_a_linear_teacher_fast() {
        let (x, y) = teacher_problem(0, 30_000, 256, 10);
        let (xtr, ytr) = (x.narrow(0, 0, 20_000), y.narrow(0, 0, 20_000));
        let (xte, yte) = (x.narrow(0, 20_000, 10_000), y.narrow(0, 20_000, 10_000));
        let t = Instant::now();
        let acc =
            linear_probe_top1(&xtr, &ytr, &xte, &yte, 10, &LinearProbeConfig::default()).unwrap();
        let secs = t.elapsed().as_secs_f64();
        eprintln!("linear probe 20k x 256, 10 classes: top-1 {acc:.4} in {secs:.2}s");
        assert!(acc > 0.9, "accuracy {acc}");
    }

    /// One fitted probe scores several test sets exactly as refitting for
    /// each would; a test set of another width is refused.
    #[test]
    fn a_fitted_probe_scores_many_test_sets_as_refitting_would() {
        let (x, y) = teacher_problem(3, 1_500, 16, 4);
        let (xtr, ytr) = (x.narrow(0, 0, 1_000), y.narrow(0, 0, 1_000));
        let cfg = LinearProbeConfig {
            epochs: 5,
            ..LinearProbeConfig::default()
        };
        let probe = LinearProbe::fit(&xtr, &ytr, 4, &cfg).unwrap();
        for (start, noise) in [(1_000, 0.0), (1_250, 3.0)] {
            let xte = x.narrow(0, start, 250)
                + Tensor::randn([250, 16], (Kind::Float, Device::Cpu)) * noise;
            let yte = y.narrow(0, start, 250);
            let refit = linear_probe_top1(&xtr, &ytr, &xte, &yte, 4, &cfg).unwrap();
            assert_eq!(probe.top1(&xte, &yte).unwrap(), refit);
        }
        let err = probe
            .top1(&x.narrow(1, 0, 8).narrow(0, 0, 10), &y.narrow(0, 0, 10))
            .unwrap_err()
            .to_string();
        assert!(err.contains("16 dimensions") && err.contains("8"), "{err}");
    }

    #[test]
    fn depends_on_its_own_seed_only() {
        let (x, y) = teacher_problem(3, 600, 16, 3);
        let (xtr, ytr, xte, yte) = (
            x.narrow(0, 0, 400),
            y.narrow(0, 0, 400),
            x.narrow(0, 400, 200),
            y.narrow(0, 400, 200),
        );
        let cfg = LinearProbeConfig {
            epochs: 5,
            batch_size: 32,
            ..Default::default()
        };
        // No libtorch random state is involved: two runs agree exactly.
        let a = linear_probe_top1(&xtr, &ytr, &xte, &yte, 3, &cfg).unwrap();
        let b = linear_probe_top1(&xtr, &ytr, &xte, &yte, 3, &cfg).unwrap();
        assert_eq!(a, b);
        assert!(a > 0.7, "accuracy {a}");
        // Another shuffling seed gives a (slightly) different classifier.
        let c = linear_probe_top1(
            &xtr,
            &ytr,
            &xte,
            &yte,
            3,
            &LinearProbeConfig { seed: 1, ..cfg },
        )
        .unwrap();
        assert!(c > 0.7, "accuracy {c}");
    }

    #[test]
    fn trains_under_no_grad_without_touching_the_features() {
        let (x, y) = teacher_problem(4, 300, 8, 2);
        let x = x.set_requires_grad(true);
        let cfg = LinearProbeConfig {
            epochs: 10,
            batch_size: 64,
            ..Default::default()
        };
        let acc = tch::no_grad(|| linear_probe_top1(&x, &y, &x, &y, 2, &cfg)).unwrap();
        assert!(acc > 0.8, "accuracy {acc}");
        assert!(!x.grad().defined(), "no gradient may reach the features");
    }

    #[test]
    fn constant_dimensions_and_tiny_sets_are_fine() {
        let x = Tensor::from_slice2(&[[1.0f32, 7.0], [2.0, 7.0], [-1.0, 7.0], [-2.0, 7.0]]);
        let y = Tensor::from_slice(&[1i64, 1, 0, 0]);
        let xte = Tensor::from_slice2(&[[3.0f32, 100.0], [-3.0, -100.0]]);
        let yte = Tensor::from_slice(&[1i64, 0]);
        let acc = linear_probe_top1(&x, &y, &xte, &yte, 2, &LinearProbeConfig::default()).unwrap();
        assert_eq!(acc, 1.0);
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        let x = TestRng::new(5).randn(&[10, 4]);
        let y = Tensor::zeros([10], (Kind::Int64, Device::Cpu));
        let msg = |cfg: &LinearProbeConfig, y2: &Tensor| {
            linear_probe_top1(&x, &y, &x, y2, 2, cfg)
                .unwrap_err()
                .to_string()
        };
        let d = LinearProbeConfig::default();
        assert!(msg(
            &LinearProbeConfig {
                epochs: 0,
                ..d.clone()
            },
            &y
        )
        .contains("epochs"));
        assert!(msg(
            &LinearProbeConfig {
                batch_size: 0,
                ..d.clone()
            },
            &y
        )
        .contains("batch_size"));
        assert!(msg(
            &LinearProbeConfig {
                lr: -1.0,
                ..d.clone()
            },
            &y
        )
        .contains("lr"));
        assert!(msg(&d, &(&y + 5)).contains("test labels range over [5, 5]"));
        assert!(msg(&d, &y.narrow(0, 0, 3)).contains("10 feature rows but 3 labels"));
        assert!(toml::from_str::<LinearProbeConfig>("epoch = 3").is_err());
        assert_eq!(
            toml::from_str::<LinearProbeConfig>("epochs = 3")
                .unwrap()
                .epochs,
            3
        );
    }
}
