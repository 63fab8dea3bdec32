//! Weighted k-nearest-neighbour classification on frozen features, the
//! protocol of Wu et al. 2018 ("Unsupervised Feature Learning via
//! Non-Parametric Instance Discrimination", arXiv:1805.01978) as used to track
//! self-supervised runs.
//!
//! Features are l2-normalised; each test sample finds its `k` most
//! cosine-similar training samples, each neighbour votes for its label with
//! weight `exp(sim / T)`, and the class with the largest total wins.
//!
//! ```
//! use selfsup_core::eval::{knn_top1, KnnConfig};
//! use tch::Tensor;
//! let feats = Tensor::from_slice2(&[[1.0f32, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]);
//! let labels = Tensor::from_slice(&[0i64, 0, 1, 1]);
//! let test = Tensor::from_slice2(&[[1.0f32, 0.05], [0.05, 1.0]]);
//! let test_labels = Tensor::from_slice(&[0i64, 1]);
//! let cfg = KnnConfig { k: 2, temperature: 0.1 };
//! let acc = knn_top1(&feats, &labels, &test, &test_labels, 2, &cfg).unwrap();
//! assert_eq!(acc, 1.0);
//! ```
use super::{check_same_dim, check_split};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// kNN settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnnConfig {
    /// Number of neighbours (clamped to the size of the training set).
    pub k: i64,
    /// Temperature of the neighbour weights `exp(sim / T)`.
    pub temperature: f64,
}

impl KnnConfig {
    /// Refuses k < 1 and a temperature that is not positive; `key` is the
    /// config table.
    pub fn validate(&self, key: &str) -> std::result::Result<(), String> {
        if self.k < 1 {
            return Err(format!("{key}.k = {}: give at least 1 neighbour", self.k));
        }
        crate::trainer::positive(&format!("{key}.temperature"), self.temperature)
    }
}

impl Default for KnnConfig {
    fn default() -> Self {
        Self {
            k: 200,
            temperature: 0.1,
        }
    }
}

/// Upper bound on the entries of one test-chunk x train similarity block.
const MAX_BLOCK_ELEMENTS: i64 = 1 << 25;
/// Upper bound on the test rows of one chunk.
const MAX_CHUNK_ROWS: i64 = 1024;

/// Top-1 accuracy in `[0, 1]` of weighted kNN classification of
/// `test_feats` against `train_feats`.
///
/// `*_feats` are `[N, D]` (any float kind, any device: everything runs on the
/// device of `train_feats`), `*_labels` are integer `[N]` in
/// `[0, num_classes)`. Test rows are processed in chunks so that at most
/// 2^25 similarities exist at once. Ties between classes go to the lower
/// class index. Runs without gradient.
pub fn knn_top1(
    train_feats: &Tensor,
    train_labels: &Tensor,
    test_feats: &Tensor,
    test_labels: &Tensor,
    num_classes: i64,
    cfg: &KnnConfig,
) -> Result<f64> {
    knn_top1_blocked(
        train_feats,
        train_labels,
        test_feats,
        test_labels,
        num_classes,
        cfg,
        MAX_BLOCK_ELEMENTS,
    )
}

/// [`knn_top1`] with at most `max_block` similarities materialised at once.
fn knn_top1_blocked(
    train_feats: &Tensor,
    train_labels: &Tensor,
    test_feats: &Tensor,
    test_labels: &Tensor,
    num_classes: i64,
    cfg: &KnnConfig,
    max_block: i64,
) -> Result<f64> {
    if cfg.k < 1 {
        return Err(Error::Eval(format!(
            "kNN: k must be at least 1, got {}",
            cfg.k
        )));
    }
    if !(cfg.temperature.is_finite() && cfg.temperature > 0.0) {
        return Err(Error::Eval(format!(
            "kNN: temperature must be positive and finite, got {}",
            cfg.temperature
        )));
    }
    let (train, train_y) = check_split("train", train_feats, train_labels, num_classes)?;
    let (test, test_y) = check_split("test", test_feats, test_labels, num_classes)?;
    check_same_dim(&train, &test)?;
    let device = train.device();
    let n_train = train.size()[0];
    let n_test = test.size()[0];
    let k = cfg.k.min(n_train);
    let chunk = (max_block / n_train).clamp(1, MAX_CHUNK_ROWS);

    let correct = tch::no_grad(|| {
        let train_t = l2_normalize(&train).tr();
        let test = l2_normalize(&test.to_device(device));
        let test_y = test_y.to_device(device);
        let mut correct = Tensor::zeros([], (Kind::Int64, device));
        let mut start = 0;
        while start < n_test {
            let len = chunk.min(n_test - start);
            let sim = test.narrow(0, start, len).matmul(&train_t);
            let (top_sim, top_idx) = sim.topk(k, 1, true, true);
            // Subtracting the row maximum rescales a row's weights by one
            // constant: the vote is unchanged and exp cannot overflow.
            let shifted = &top_sim - top_sim.narrow(1, 0, 1);
            let weights = (shifted / cfg.temperature).exp();
            let neighbour_y = train_y
                .index_select(0, &top_idx.reshape([-1]))
                .reshape([len, k]);
            let scores = Tensor::zeros([len, num_classes], (Kind::Float, device)).scatter_add(
                1,
                &neighbour_y,
                &weights,
            );
            let pred = scores.argmax(1, false);
            correct += pred
                .eq_tensor(&test_y.narrow(0, start, len))
                .sum(Kind::Int64);
            start += len;
        }
        correct.int64_value(&[])
    });
    Ok(correct as f64 / n_test as f64)
}

/// Rows scaled to unit l2 norm (zero rows stay zero).
pub(crate) fn l2_normalize(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2.0, [1], true).clamp_min(1e-12)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::testing::TestRng;
    use tch::Device;

    /// `n` points per class around `classes` well-separated random centres.
    fn blobs(g: &mut TestRng, classes: i64, n: i64, dim: i64, noise: f64) -> (Tensor, Tensor) {
        let centres = g.randn(&[classes, dim]) * 3.0;
        let labels = Tensor::arange(classes, (Kind::Int64, Device::Cpu))
            .repeat_interleave_self_int(n, 0, None);
        let feats = centres.index_select(0, &labels) + g.randn(&[classes * n, dim]) * noise;
        (feats, labels)
    }

    fn split(x: &Tensor, y: &Tensor) -> (Tensor, Tensor, Tensor, Tensor) {
        let n = x.size()[0];
        let idx_train = Tensor::arange_start_step(0, n, 2, (Kind::Int64, Device::Cpu));
        let idx_test = Tensor::arange_start_step(1, n, 2, (Kind::Int64, Device::Cpu));
        (
            x.index_select(0, &idx_train),
            y.index_select(0, &idx_train),
            x.index_select(0, &idx_test),
            y.index_select(0, &idx_test),
        )
    }

    #[test]
    fn separable_blobs_are_classified_perfectly() {
        let mut g = TestRng::new(0);
        let (x, y) = blobs(&mut g, 5, 100, 32, 0.3);
        let (xtr, ytr, xte, yte) = split(&x, &y);
        let acc = knn_top1(&xtr, &ytr, &xte, &yte, 5, &KnnConfig::default()).unwrap();
        assert_eq!(acc, 1.0);
    }

    #[test]
    fn random_labels_give_chance_accuracy() {
        let mut g = TestRng::new(1);
        let x = g.randn(&[4000, 16]);
        let y = g.randint(4, 4000);
        let (xtr, ytr, xte, yte) = split(&x, &y);
        let acc = knn_top1(
            &xtr,
            &ytr,
            &xte,
            &yte,
            4,
            &KnnConfig {
                k: 20,
                temperature: 0.1,
            },
        )
        .unwrap();
        assert!((acc - 0.25).abs() < 0.05, "accuracy {acc}");
    }

    #[test]
    fn matches_a_direct_computation_and_chunking_is_invisible() {
        let mut g = TestRng::new(2);
        let (x, y) = blobs(&mut g, 3, 200, 8, 3.0);
        let (xtr, ytr, xte, yte) = split(&x, &y);
        let cfg = KnnConfig {
            k: 7,
            temperature: 0.07,
        };
        let acc = knn_top1(&xtr, &ytr, &xte, &yte, 3, &cfg).unwrap();
        // Direct: one-hot votes on the full similarity matrix (as solo-learn writes it).
        let a = l2_normalize(&xtr);
        let b = l2_normalize(&xte);
        let (s, i) = b.matmul(&a.tr()).topk(7, 1, true, true);
        let w = (s / 0.07).exp();
        let onehot = ytr
            .index_select(0, &i.reshape([-1]))
            .one_hot(3)
            .reshape([-1, 7, 3])
            .to_kind(Kind::Float);
        let scores =
            (onehot * w.unsqueeze(-1)).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
        let expected = scores
            .argmax(1, false)
            .eq_tensor(&yte)
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[]);
        assert!(acc > 0.5 && acc < 1.0, "a non-trivial problem, got {acc}");
        assert!((acc - expected).abs() < 1e-12, "{acc} vs {expected}");
        // Chunks of 7 test rows (300 = 42 * 7 + 6) give the same answer.
        let n_train = xtr.size()[0];
        let chunked = knn_top1_blocked(&xtr, &ytr, &xte, &yte, 3, &cfg, 7 * n_train).unwrap();
        assert!(
            (chunked - expected).abs() < 1e-12,
            "{chunked} vs {expected}"
        );
    }

    #[test]
    fn k_is_clamped_and_temperature_only_reweights() {
        let xtr = Tensor::from_slice2(&[[1.0f32, 0.0], [0.0, 1.0], [0.0, 0.9]]);
        let ytr = Tensor::from_slice(&[0i64, 1, 1]);
        let xte = Tensor::from_slice2(&[[1.0f32, 0.2]]);
        let yte = Tensor::from_slice(&[0i64]);
        // k = 1: the nearest neighbour is class 0.
        assert_eq!(
            knn_top1(
                &xtr,
                &ytr,
                &xte,
                &yte,
                2,
                &KnnConfig {
                    k: 1,
                    temperature: 0.1
                }
            )
            .unwrap(),
            1.0
        );
        // k = 200 clamps to 3; a sharp temperature lets the closest point win over two far ones.
        assert_eq!(
            knn_top1(
                &xtr,
                &ytr,
                &xte,
                &yte,
                2,
                &KnnConfig {
                    k: 200,
                    temperature: 0.05
                }
            )
            .unwrap(),
            1.0
        );
        // A flat temperature makes it a plain majority vote: class 1 wins.
        assert_eq!(
            knn_top1(
                &xtr,
                &ytr,
                &xte,
                &yte,
                2,
                &KnnConfig {
                    k: 200,
                    temperature: 1e3
                }
            )
            .unwrap(),
            0.0
        );
        // A tiny temperature does not overflow.
        assert_eq!(
            knn_top1(
                &xtr,
                &ytr,
                &xte,
                &yte,
                2,
                &KnnConfig {
                    k: 3,
                    temperature: 1e-4
                }
            )
            .unwrap(),
            1.0
        );
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        let mut g = TestRng::new(3);
        let x = g.randn(&[10, 4]);
        let y = Tensor::zeros([10], (Kind::Int64, Device::Cpu));
        let cfg = KnnConfig::default();
        let msg = |r: Result<f64>| r.unwrap_err().to_string();
        assert!(msg(knn_top1(&x, &y.narrow(0, 0, 9), &x, &y, 2, &cfg))
            .contains("10 feature rows but 9 labels"));
        assert!(msg(knn_top1(&x, &(&y + 2), &x, &y, 2, &cfg)).contains("outside [0, 2)"));
        assert!(msg(knn_top1(&x, &(&y - 1), &x, &y, 2, &cfg)).contains("outside [0, 2)"));
        let empty = Tensor::zeros([0, 4], (Kind::Float, Device::Cpu));
        let no_labels = Tensor::zeros([0], (Kind::Int64, Device::Cpu));
        assert!(msg(knn_top1(&x, &y, &empty, &no_labels, 2, &cfg)).contains("test set is empty"));
        assert!(msg(knn_top1(&empty, &no_labels, &x, &y, 2, &cfg)).contains("train set is empty"));
        let narrow = g.randn(&[10, 3]);
        assert!(msg(knn_top1(&x, &y, &narrow, &y, 2, &cfg))
            .contains("4 dimensions but test features have 3"));
        assert!(msg(knn_top1(&x, &y.to_kind(Kind::Float), &x, &y, 2, &cfg))
            .contains("must be integers"));
        assert!(msg(knn_top1(
            &x,
            &y,
            &x,
            &y,
            2,
            &KnnConfig {
                k: 0,
                temperature: 0.1
            }
        ))
        .contains("k must be"));
        assert!(msg(knn_top1(
            &x,
            &y,
            &x,
            &y,
            2,
            &KnnConfig {
                k: 5,
                temperature: 0.0
            }
        ))
        .contains("temperature"));
        let nan = x.copy().fill_(f64::NAN);
        assert!(msg(knn_top1(&x, &y, &nan, &y, 2, &cfg)).contains("NaN"));
    }

    #[test]
    fn config_rejects_unknown_fields_and_defaults_missing_ones() {
        let cfg: KnnConfig = toml::from_str("k = 20").unwrap();
        assert_eq!(
            cfg,
            KnnConfig {
                k: 20,
                temperature: 0.1
            }
        );
        assert!(toml::from_str::<KnnConfig>("kk = 20").is_err());
    }
}
