//! Collapse monitors: cheap statistics of a batch of embeddings that reveal
//! the failure modes of self-supervised learning before the loss does.
//!
//! * **Complete collapse** (every input maps to the same point): the
//!   per-dimension spread of the l2-normalised embeddings goes to zero
//!   ([`CollapseStats::std_ratio`], the signal lightly logs).
//! * **Dimensional collapse** (embeddings span only a few directions):
//!   the effective rank of the embedding matrix drops
//!   ([`CollapseStats::rankme`], Garrido et al. 2023, "RankMe",
//!   arXiv:2210.02885).
//! * Alignment and uniformity on the hypersphere (Wang & Isola 2020,
//!   arXiv:2005.10242) describe how close positive pairs are and how evenly
//!   the embeddings spread.
//!
//! [`CollapseThresholds::warnings`] turns the statistics into human-readable
//! warnings; the defaults were chosen on synthetic embeddings (see
//! [`CollapseThresholds`]).
use serde::{Deserialize, Deserializer, Serialize};
use tch::{Kind, Tensor};

/// `eps` added to the normalised singular values in RankMe (as in the paper).
const RANKME_EPS: f64 = 1e-7;
/// Rows used for the (quadratic) uniformity estimate.
const UNIFORMITY_MAX_ROWS: i64 = 2048;

/// Collapse statistics of `N` embeddings of dimension `D` (see the module
/// docs). Undefined figures (fewer than two samples, non-finite embeddings)
/// are NaN, which JSON stores as `null` and reads back as NaN.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CollapseStats {
    /// Number of embeddings `N`.
    pub samples: i64,
    /// Embedding dimension `D`.
    pub dim: i64,
    /// Mean over dimensions of the (unbiased) per-dimension standard
    /// deviation of the l2-normalised embeddings: about `1/sqrt(D)` when they
    /// spread evenly on the sphere, 0 when collapsed.
    #[serde(deserialize_with = "nan_if_null")]
    pub std_normalized: f64,
    /// `std_normalized * sqrt(D)`: 1 for an even spread, 0 for collapse.
    #[serde(deserialize_with = "nan_if_null")]
    pub std_ratio: f64,
    /// RankMe effective rank: `exp(-sum p_k log p_k)` with
    /// `p_k = s_k / sum(s) + 1e-7` over the singular values `s` of the
    /// (uncentred) embedding matrix; between ~1 and `min(N, D)`, 0 for an
    /// all-zero matrix.
    #[serde(deserialize_with = "nan_if_null")]
    pub rankme: f64,
    /// `rankme / min(N, D)`: 1 when every direction is used equally.
    #[serde(deserialize_with = "nan_if_null")]
    pub rank_ratio: f64,
    /// Mean squared distance between the normalised embeddings of the two
    /// views (0 = perfectly aligned, at most 4); `None` without a second view
    /// or when the views' shapes differ.
    pub alignment: Option<f64>,
    /// `log mean exp(-2 ||u - v||^2)` over distinct pairs of normalised
    /// embeddings (at most 2048 evenly spaced rows): 0 when all points
    /// coincide, about -4 for points spread uniformly on a high-dimensional
    /// sphere.
    #[serde(deserialize_with = "nan_if_null")]
    pub uniformity: f64,
    /// Whether the embeddings contained NaN or infinite values (then every
    /// other figure is NaN).
    pub non_finite: bool,
}

fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Collapse statistics of embeddings `za` `[N, D]` and, optionally, `zb`
/// `[N, D]`, the embeddings of a second augmented view of the same samples
/// (used for alignment only). Works on any device and float kind; computes
/// in `f64` without gradient and never touches the random state. Never
/// panics on odd input: undefined figures are NaN (see [`CollapseStats`]).
///
/// Cost: a `D x D` (or `N x N`, whichever is smaller) Gram matrix and its
/// eigenvalues, and a pairwise-distance matrix of at most 2048 rows.
pub fn collapse_stats(za: &Tensor, zb: Option<&Tensor>) -> CollapseStats {
    tch::no_grad(|| compute(za, zb))
}

fn compute(za: &Tensor, zb: Option<&Tensor>) -> CollapseStats {
    let size = za.size();
    let (n, d) = match size.as_slice() {
        [n, d] => (*n, *d),
        // Anything else: flatten trailing dimensions, or treat a vector as one sample.
        [] => (1, 1),
        [d] => (1, *d),
        [n, rest @ ..] => (*n, rest.iter().product()),
    };
    let mut stats = CollapseStats {
        samples: n,
        dim: d,
        std_normalized: f64::NAN,
        std_ratio: f64::NAN,
        rankme: f64::NAN,
        rank_ratio: f64::NAN,
        alignment: None,
        uniformity: f64::NAN,
        non_finite: false,
    };
    if n == 0 || d == 0 || za.is_complex() {
        return stats;
    }
    let z = za.detach().reshape([n, d]).to_kind(Kind::Double);
    if z.isfinite().all().int64_value(&[]) == 0 {
        stats.non_finite = true;
        return stats;
    }
    let u = normalize(&z);

    if n >= 2 {
        let std = u
            .std_dim([0i64].as_slice(), true, false)
            .mean(Kind::Double)
            .double_value(&[]);
        stats.std_normalized = std;
        stats.std_ratio = std * (d as f64).sqrt();
    }

    stats.rankme = rankme(&z);
    stats.rank_ratio = stats.rankme / n.min(d) as f64;

    stats.alignment = zb.and_then(|zb| {
        if zb.numel() as i64 != n * d || zb.is_complex() {
            return None;
        }
        let v = normalize(
            &zb.detach()
                .reshape([n, d])
                .to_kind(Kind::Double)
                .to_device(z.device()),
        );
        let a = (&u - v)
            .square()
            .sum_dim_intlist([1i64].as_slice(), false, Kind::Double)
            .mean(Kind::Double)
            .double_value(&[]);
        Some(a)
    });

    if n >= 2 {
        stats.uniformity = uniformity(&u);
    }
    stats
}

/// Rows scaled to unit l2 norm (zero rows stay zero).
fn normalize(z: &Tensor) -> Tensor {
    z / z.norm_scalaropt_dim(2.0, [1], true).clamp_min(1e-12)
}

/// RankMe of a finite `[N, D]` `f64` matrix. The singular values are the
/// square roots of the eigenvalues of the smaller Gram matrix (cheaper than
/// an SVD of the tall matrix and, in `f64`, accurate to ~1e-8 of the largest
/// singular value, far below what moves the entropy).
fn rankme(z: &Tensor) -> f64 {
    let (n, d) = (z.size()[0], z.size()[1]);
    let gram = if n >= d {
        z.tr().matmul(z)
    } else {
        z.matmul(&z.tr())
    };
    let eig = match gram.f_linalg_eigvalsh("L") {
        Ok(e) => e,
        Err(_) => return f64::NAN,
    };
    let s = eig.clamp_min(0.0).sqrt();
    let total = s.sum(Kind::Double).double_value(&[]);
    if total <= 0.0 {
        return 0.0;
    }
    let p = s / total + RANKME_EPS;
    let entropy = -(&p * p.log()).sum(Kind::Double).double_value(&[]);
    entropy.exp()
}

/// Uniformity of l2-normalised rows (at least two), on at most
/// [`UNIFORMITY_MAX_ROWS`] evenly spaced rows.
fn uniformity(u: &Tensor) -> f64 {
    let n = u.size()[0];
    let u = if n > UNIFORMITY_MAX_ROWS {
        let idx: Vec<i64> = (0..UNIFORMITY_MAX_ROWS)
            .map(|i| i * n / UNIFORMITY_MAX_ROWS)
            .collect();
        u.index_select(0, &Tensor::from_slice(&idx).to_device(u.device()))
    } else {
        u.shallow_clone()
    };
    let m = u.size()[0];
    // ||a - b||^2 = |a|^2 + |b|^2 - 2 a.b, exact for zero rows too.
    let sq_norm = u
        .square()
        .sum_dim_intlist([1i64].as_slice(), true, Kind::Double);
    let dist = (&sq_norm + sq_norm.tr() - u.matmul(&u.tr()) * 2.0).clamp_min(0.0);
    let mut logits = dist * -2.0;
    let _ = logits.fill_diagonal_(f64::NEG_INFINITY, false);
    let lse = logits
        .reshape([-1])
        .logsumexp([0i64].as_slice(), false)
        .double_value(&[]);
    lse - ((m * (m - 1)) as f64).ln()
}

/// When collapse statistics deserve a warning (the `collapse` table of the
/// trainer config).
///
/// Defaults, from synthetic embeddings (N = 512, D = 128 unless noted;
/// `std_ratio` / `rank_ratio`):
///
/// | embeddings                                   | std_ratio | rank_ratio | RankMe |
/// |----------------------------------------------|-----------|------------|--------|
/// | Gaussian 512x128 / 256x256 / 2048x2048       | 1.00      | 0.97 / 0.81 / 0.81 | |
/// | Gaussian + mean offset of 3 std              | 0.32      | 0.57       | 73     |
/// | ReLU(Gaussian)                               | 0.83      | 0.90       | 115    |
/// | singular values ~ 1/k                        | 0.46      | 0.35       | 45     |
/// | singular values ~ 1/k^2                      | 0.18      | 0.04       | 4.9    |
/// | rank 8 / rank 4 / rank 1 (exact)             | 0.98 / 0.93 / 0.83 | 0.06 / 0.03 / 0.008 | 7.9 / 4.0 / 1.0 |
/// | rank 1 + noise 1e-2                          | 0.82      | 0.017      | 2.1    |
/// | constant + noise 1e-1 / 1e-2 / 1e-3          | 0.084 / 0.011 / 0.001 | 0.16 / 0.018 / 0.009 | 20 / 2.3 / 1.1 |
///
/// `std_ratio < 0.1` means an average pairwise cosine above ~0.99 when the
/// spread is even over dimensions: the points have merged. `rank_ratio <
/// 0.05` flags embeddings that use fewer than one direction in twenty (rank
/// 4 of 128, steeply decaying spectra) while leaving healthy but
/// anisotropic embeddings (offsets, ReLU, 1/k spectra) alone; `rankme < 1.5`
/// catches a single direction in small dimensions where the ratio cannot.
/// `uniformity > -0.2` flags embeddings crowded into a tight cap of the
/// sphere (the mean Gaussian potential `exp(-2 |u - v|^2)` above 0.82, mean
/// squared distance about 0.1): spread embeddings sit near -2 to -4 (SimCLR
/// on Fashion-MNIST: -2.7 to -3.2), post-ReLU features with a shared offset
/// near -0.4 to -0.5, a collapsed batch at 0. It catches collapse that batch norm at the end of a
/// projector hides from the std and rank (SimSiam without stop-gradient,
/// BYOL without predictor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollapseThresholds {
    /// Whether to warn at all (the statistics are computed regardless).
    pub enabled: bool,
    /// Warn of complete collapse below this [`CollapseStats::std_ratio`].
    pub min_std_ratio: f64,
    /// Warn of dimensional collapse below this [`CollapseStats::rank_ratio`].
    pub min_rank_ratio: f64,
    /// Warn of dimensional collapse below this absolute RankMe.
    pub min_rankme: f64,
    /// Warn when [`CollapseStats::uniformity`] is above this (0 = one point).
    pub max_uniformity: f64,
}

impl Default for CollapseThresholds {
    fn default() -> Self {
        Self {
            enabled: true,
            min_std_ratio: 0.1,
            min_rank_ratio: 0.05,
            min_rankme: 1.5,
            max_uniformity: -0.2,
        }
    }
}

impl CollapseThresholds {
    /// Human-readable warnings for `stats` (empty when healthy or disabled).
    pub fn warnings(&self, stats: &CollapseStats) -> Vec<String> {
        self.warnings_since(stats, None)
    }

    /// Like [`CollapseThresholds::warnings`], judged against `init`, the
    /// statistics of the same inputs before the first training step.
    ///
    /// A figure past its threshold that was already past it at
    /// initialisation, and is no worse now, is worded as what it is: the
    /// encoder never spread its features ("... since initialisation"), which
    /// is as useless as a collapse but did not come from a spread state. Any
    /// other warning keeps "possible collapse" and quotes the figure at
    /// initialisation.
    /// "No worse" allows 10 % on the std ratio and RankMe and 0.05 on the
    /// uniformity, their step-to-step noise on 1 024 samples.
    pub fn warnings_since(
        &self,
        stats: &CollapseStats,
        init: Option<&CollapseStats>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        if !self.enabled {
            return out;
        }
        if stats.non_finite {
            out.push("embeddings contain NaN or infinite values".to_string());
            return out;
        }
        let init = init.filter(|i| !i.non_finite);
        // What `init` said of the figure: (flagged then, no worse now), and
        // the figure itself for the message.
        let judge = |flagged: &dyn Fn(&CollapseStats) -> bool,
                     no_worse: &dyn Fn(&CollapseStats) -> bool,
                     shown: &dyn Fn(&CollapseStats) -> String,
                     low: &str,
                     collapse: String|
         -> String {
            match init {
                Some(i) if flagged(i) && no_worse(i) => format!(
                    "{low} since initialisation: {collapse}, {} before the first step; training has not spread the features",
                    shown(i)
                ),
                Some(i) => format!(
                    "possible collapse: {collapse}, {} before the first step",
                    shown(i)
                ),
                None => format!("possible collapse: {collapse}"),
            }
        };
        let std_flagged =
            |c: &CollapseStats| c.std_ratio.is_finite() && c.std_ratio < self.min_std_ratio;
        if std_flagged(stats) {
            out.push(judge(
                &std_flagged,
                &|i| stats.std_ratio >= 0.9 * i.std_ratio,
                &|i| format!("{:.3}", i.std_ratio),
                "nearly identical embeddings",
                format!(
                    "embeddings are nearly identical (std of l2-normalised embeddings is {:.3} x 1/sqrt({}), below {})",
                    stats.std_ratio, stats.dim, self.min_std_ratio
                ),
            ));
        }
        let rank_flagged = |c: &CollapseStats| {
            c.rankme.is_finite()
                && (c.rank_ratio < self.min_rank_ratio || c.rankme < self.min_rankme)
        };
        if rank_flagged(stats) {
            out.push(judge(
                &rank_flagged,
                &|i| stats.rankme >= 0.9 * i.rankme,
                &|i| format!("{:.1}", i.rankme),
                "low effective rank",
                format!(
                    "effective rank {:.1} of {} dims (RankMe; {} samples, rank ratio {:.3}, warning below {} or rank {})",
                    stats.rankme,
                    stats.samples.min(stats.dim),
                    stats.samples,
                    stats.rank_ratio,
                    self.min_rank_ratio,
                    self.min_rankme
                ),
            ));
        }
        let crowd_flagged =
            |c: &CollapseStats| c.uniformity.is_finite() && c.uniformity > self.max_uniformity;
        if crowd_flagged(stats) {
            out.push(judge(
                &crowd_flagged,
                &|i| stats.uniformity <= i.uniformity + 0.05,
                &|i| format!("{:.3}", i.uniformity),
                "crowded embeddings",
                format!(
                    "embeddings crowd together (uniformity {:.3}, warning above {}; spread embeddings sit near -2 to -4)",
                    stats.uniformity, self.max_uniformity
                ),
            ));
        }
        out
    }
}

impl CollapseStats {
    /// The warnings `thresholds` raise for these statistics
    /// (same as [`CollapseThresholds::warnings`]).
    pub fn warnings(&self, thresholds: &CollapseThresholds) -> Vec<String> {
        thresholds.warnings(self)
    }
}

/// Test data from a seeded generator of our own: libtorch's global generator
/// is shared by the test threads, so `tch::manual_seed` alone does not make
/// concurrently running tests reproducible.
#[cfg(test)]
pub(crate) mod testing {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use tch::Tensor;

    /// A seeded source of random CPU tensors.
    pub(crate) struct TestRng(ChaCha8Rng);

    impl TestRng {
        pub(crate) fn new(seed: u64) -> Self {
            Self(ChaCha8Rng::seed_from_u64(seed))
        }

        /// Standard normal `f32` samples (Box-Muller).
        pub(crate) fn randn(&mut self, shape: &[i64]) -> Tensor {
            let n: i64 = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    let u1: f64 = 1.0 - self.0.gen::<f64>();
                    let u2: f64 = self.0.gen();
                    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
                })
                .collect();
            Tensor::from_slice(&v).reshape(shape)
        }

        /// Uniform integers in `[0, high)`, `Int64`.
        pub(crate) fn randint(&mut self, high: i64, n: i64) -> Tensor {
            let v: Vec<i64> = (0..n).map(|_| self.0.gen_range(0..high)).collect();
            Tensor::from_slice(&v)
        }
    }
}

#[cfg(test)]
mod tests;
