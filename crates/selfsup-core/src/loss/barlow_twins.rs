//! Barlow Twins (Zbontar et al. 2021, arXiv:2103.03230): the cross-correlation
//! matrix of the batch-standardised embeddings of two views is pulled towards
//! the identity: `sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2`.
//!
//! The embeddings are standardised over the *global* batch (as the paper's
//! `BatchNorm1d(affine=False)`, biased variance, eps 1e-5), gathered through
//! the [`Collective`].
//!
//! ```
//! use selfsup_core::{distributed::SingleProcess, loss::{BarlowTwins, BarlowTwinsConfig}};
//! let z = tch::Tensor::randn([16, 8], (tch::Kind::Float, tch::Device::Cpu));
//! let out = BarlowTwins::new(BarlowTwinsConfig::default()).loss(&z, &z, &SingleProcess);
//! assert!(out.on_diagonal < 1e-3); // identical views correlate perfectly
//! ```
use super::pair::PairLoss;
use crate::distributed::Collective;
use crate::method::LossOut;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Barlow Twins settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BarlowTwinsConfig {
    /// Weight of the off-diagonal (redundancy) term (paper: 5e-3; 0.0051 in its code).
    pub lambda: f64,
}

impl BarlowTwinsConfig {
    /// Refuses a negative redundancy weight; `key` is the config table.
    pub fn validate(&self, key: &str) -> std::result::Result<(), String> {
        crate::trainer::non_negative(&format!("{key}.lambda"), self.lambda)
    }
}

impl Default for BarlowTwinsConfig {
    fn default() -> Self {
        Self { lambda: 0.0051 }
    }
}

/// The loss and its two terms (detached, for the logs).
#[derive(Debug)]
pub struct BarlowTwinsOut {
    pub loss: Tensor,
    pub on_diagonal: f64,
    pub off_diagonal: f64,
}

/// The Barlow Twins loss.
#[derive(Debug, Clone)]
pub struct BarlowTwins {
    cfg: BarlowTwinsConfig,
}

fn standardise(z: &Tensor) -> Tensor {
    let mean = z.mean_dim([0i64].as_slice(), true, Kind::Float);
    let var = z.var_dim([0i64].as_slice(), false, true);
    (z - mean) / (var + 1e-5).sqrt()
}

impl BarlowTwins {
    /// A loss with the given settings.
    pub fn new(cfg: BarlowTwinsConfig) -> Self {
        Self { cfg }
    }

    /// The loss of embeddings `z1`, `z2` (`[n, d]`) of two views.
    pub fn loss(&self, z1: &Tensor, z2: &Tensor, comm: &dyn Collective) -> BarlowTwinsOut {
        let a = standardise(&comm.all_gather_with_grad(&z1.to_kind(Kind::Float)));
        let b = standardise(&comm.all_gather_with_grad(&z2.to_kind(Kind::Float)));
        let n = a.size()[0] as f64;
        let c = a.tr().matmul(&b) / n;
        let diag = c.diagonal(0, 0, 1);
        let on = (&diag - 1.0).square().sum(Kind::Float);
        let off = c.square().sum(Kind::Float) - diag.square().sum(Kind::Float);
        let loss = &on + &off * self.cfg.lambda;
        BarlowTwinsOut {
            on_diagonal: on.double_value(&[]),
            off_diagonal: off.double_value(&[]),
            loss,
        }
    }
}

/// [`BarlowTwins::loss`], logging `on_diagonal` and `off_diagonal`; the
/// monitors see the projections standardised over the batch, as the loss
/// does (it ignores each dimension's offset and scale, so the raw
/// projections may carry a large common offset that hides their rank).
impl PairLoss for BarlowTwins {
    fn name(&self) -> &'static str {
        "barlow_twins"
    }
    fn pair(&self, z1: &Tensor, z2: &Tensor, comm: &dyn Collective) -> LossOut {
        let out = self.loss(z1, z2, comm);
        LossOut {
            loss: out.loss,
            terms: vec![
                ("on_diagonal", out.on_diagonal),
                ("off_diagonal", out.off_diagonal),
            ],
        }
    }
    fn monitored(&self, z: Tensor) -> Tensor {
        let mean = z.mean_dim([0i64].as_slice(), true, Kind::Float);
        let std = z.std_dim([0i64].as_slice(), false, true);
        (z - mean) / (std + 1e-5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::SingleProcess;
    use crate::loss::test_fixture::fixture;

    // PyTorch 2.11.0 (the paper's pseudo-code, lambda 0.0051):
    //   bn = lambda z: (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)
    //   c = bn(z1).T @ bn(z2) / n
    //   on = (torch.diagonal(c) - 1).pow(2).sum(); off = (c - torch.diag(torch.diagonal(c))).pow(2).sum()
    //   on + 0.0051 * off  -> 0.010446252301335335 (on 0.007048635743558407, off 0.6661992073059082)
    #[test]
    fn matches_pytorch_and_is_symmetric() {
        let (z1, z2) = fixture();
        let bt = BarlowTwins::new(BarlowTwinsConfig::default());
        let out = bt.loss(&z1, &z2, &SingleProcess);
        assert!((out.loss.double_value(&[]) - 0.010_446_252_301_335_335).abs() < 1e-6);
        assert!((out.on_diagonal - 0.007_048_635_743_558_407).abs() < 1e-6);
        assert!((out.off_diagonal - 0.666_199_207_305_908_2).abs() < 1e-5);
        let swapped = bt.loss(&z2, &z1, &SingleProcess).loss.double_value(&[]);
        assert!((swapped - out.loss.double_value(&[])).abs() < 1e-6);
    }

    #[test]
    fn pair_form_is_the_loss_with_its_terms() {
        let (z1, z2) = fixture();
        let bt = BarlowTwins::new(BarlowTwinsConfig { lambda: 0.02 });
        let direct = bt.loss(&z1, &z2, &SingleProcess);
        let out = PairLoss::pair(&bt, &z1, &z2, &SingleProcess);
        assert_eq!(bt.name(), "barlow_twins");
        assert_eq!(
            out.loss.double_value(&[]).to_bits(),
            direct.loss.double_value(&[]).to_bits()
        );
        assert_eq!(
            out.terms,
            vec![
                ("on_diagonal", direct.on_diagonal),
                ("off_diagonal", direct.off_diagonal)
            ]
        );
        // The monitors see each column at mean 0 and (biased) std ~1.
        let m = bt.monitored(&z1 * 3.0 + 7.0);
        let mean = m.mean_dim([0i64].as_slice(), false, Kind::Float);
        let std = m.std_dim([0i64].as_slice(), false, false);
        assert!(mean.abs().max().double_value(&[]) < 1e-5);
        assert!((std - 1.0).abs().max().double_value(&[]) < 1e-4);
    }
}
