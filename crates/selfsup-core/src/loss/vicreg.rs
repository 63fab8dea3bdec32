//! VICReg (Bardes et al. 2022, arXiv:2105.04906): invariance (mean squared
//! error between the two views' embeddings), variance (a hinge keeping the
//! standard deviation of every dimension above 1) and covariance (the squared
//! off-diagonal covariances, divided by the dimension).
//!
//! Variance and covariance are statistics of the *global* batch, gathered
//! through the [`Collective`].
//!
//! ```
//! use selfsup_core::{distributed::SingleProcess, loss::{VicReg, VicRegConfig}};
//! let z = tch::Tensor::zeros([8, 4], (tch::Kind::Float, tch::Device::Cpu));
//! let out = VicReg::new(VicRegConfig::default()).loss(&z, &z, &SingleProcess);
//! assert!(out.variance > 0.99); // a collapsed batch pays the full variance hinge
//! ```
use super::pair::PairLoss;
use crate::distributed::Collective;
use crate::method::LossOut;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// VICReg weights (the paper's defaults: 25, 25, 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VicRegConfig {
    /// Weight of the invariance (MSE) term, lambda.
    pub sim_coeff: f64,
    /// Weight of the variance term, mu.
    pub std_coeff: f64,
    /// Weight of the covariance term, nu.
    pub cov_coeff: f64,
    /// Added to the variance before the square root.
    pub eps: f64,
}

impl VicRegConfig {
    /// Refuses negative weights (they reward what the loss should punish)
    /// and an epsilon that is not positive; `key` is the config table.
    pub fn validate(&self, key: &str) -> std::result::Result<(), String> {
        crate::trainer::non_negative(&format!("{key}.sim_coeff"), self.sim_coeff)?;
        crate::trainer::non_negative(&format!("{key}.std_coeff"), self.std_coeff)?;
        crate::trainer::non_negative(&format!("{key}.cov_coeff"), self.cov_coeff)?;
        crate::trainer::positive(&format!("{key}.eps"), self.eps)
    }
}

impl Default for VicRegConfig {
    fn default() -> Self {
        Self {
            sim_coeff: 25.0,
            std_coeff: 25.0,
            cov_coeff: 1.0,
            eps: 1e-4,
        }
    }
}

/// The weighted loss and its three unweighted terms (detached).
#[derive(Debug)]
pub struct VicRegOut {
    pub loss: Tensor,
    pub invariance: f64,
    pub variance: f64,
    pub covariance: f64,
}

/// The VICReg loss.
#[derive(Debug, Clone)]
pub struct VicReg {
    cfg: VicRegConfig,
}

impl VicReg {
    /// A loss with the given weights.
    pub fn new(cfg: VicRegConfig) -> Self {
        Self { cfg }
    }

    /// The loss of embeddings `x`, `y` (`[n, d]`) of two views.
    pub fn loss(&self, x: &Tensor, y: &Tensor, comm: &dyn Collective) -> VicRegOut {
        let (x, y) = (x.to_kind(Kind::Float), y.to_kind(Kind::Float));
        let invariance = x.mse_loss(&y, tch::Reduction::Mean);
        let gx = comm.all_gather_with_grad(&x);
        let gy = comm.all_gather_with_grad(&y);
        let variance = (self.std_hinge(&gx) + self.std_hinge(&gy)) / 2.0;
        let covariance = off_diagonal_cov(&gx) + off_diagonal_cov(&gy);
        let loss = &invariance * self.cfg.sim_coeff
            + &variance * self.cfg.std_coeff
            + &covariance * self.cfg.cov_coeff;
        VicRegOut {
            invariance: invariance.double_value(&[]),
            variance: variance.double_value(&[]),
            covariance: covariance.double_value(&[]),
            loss,
        }
    }

    /// `mean_j relu(1 - sqrt(var_j + eps))` (unbiased variance).
    fn std_hinge(&self, z: &Tensor) -> Tensor {
        let std = (z.var_dim([0i64].as_slice(), true, false) + self.cfg.eps).sqrt();
        let hinge: Tensor = 1.0 - std;
        hinge.relu().mean(Kind::Float)
    }
}

/// [`VicReg::loss`], logging its three unweighted terms.
impl PairLoss for VicReg {
    fn name(&self) -> &'static str {
        "vicreg"
    }
    fn pair(&self, z1: &Tensor, z2: &Tensor, comm: &dyn Collective) -> LossOut {
        let out = self.loss(z1, z2, comm);
        LossOut {
            loss: out.loss,
            terms: vec![
                ("invariance", out.invariance),
                ("variance", out.variance),
                ("covariance", out.covariance),
            ],
        }
    }
}

/// `sum_{i != j} cov_ij^2 / d` of the centred batch `z`.
fn off_diagonal_cov(z: &Tensor) -> Tensor {
    let (n, d) = (z.size()[0], z.size()[1]);
    let zc = z - z.mean_dim([0i64].as_slice(), true, Kind::Float);
    let cov = zc.tr().matmul(&zc) / (n - 1).max(1) as f64;
    let diag = cov.diagonal(0, 0, 1);
    (cov.square().sum(Kind::Float) - diag.square().sum(Kind::Float)) / d as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::SingleProcess;
    use crate::loss::test_fixture::fixture;

    // PyTorch 2.11.0, the paper's Algorithm 1 (25 / 25 / 1, eps 1e-4):
    //   repr = F.mse_loss(x, y); x = x - x.mean(0); y = y - y.mean(0)
    //   std = relu(1 - sqrt(x.var(0) + 1e-4)).mean()/2 + relu(1 - sqrt(y.var(0) + 1e-4)).mean()/2
    //   cov = offdiag(x.T @ x / (n-1)).pow(2).sum()/d + offdiag(y.T @ y / (n-1)).pow(2).sum()/d
    //   -> loss 10.633452415466309, repr 0.034166667610406876, std 0.3884332776069641, cov 0.06845369935035706
    #[test]
    fn matches_pytorch_and_is_symmetric() {
        let (z1, z2) = fixture();
        let v = VicReg::new(VicRegConfig::default());
        let out = v.loss(&z1, &z2, &SingleProcess);
        assert!((out.loss.double_value(&[]) - 10.633_452_415_466_309).abs() < 1e-4);
        assert!((out.invariance - 0.034_166_667_610_406_876).abs() < 1e-6);
        assert!((out.variance - 0.388_433_277_606_964_1).abs() < 1e-6);
        assert!((out.covariance - 0.068_453_699_350_357_06).abs() < 1e-6);
        let swapped = v.loss(&z2, &z1, &SingleProcess).loss.double_value(&[]);
        assert!((swapped - out.loss.double_value(&[])).abs() < 1e-5);
    }

    #[test]
    fn pair_form_is_the_loss_with_its_terms() {
        let (z1, z2) = fixture();
        let v = VicReg::new(VicRegConfig {
            sim_coeff: 10.0,
            std_coeff: 5.0,
            cov_coeff: 2.0,
            eps: 1e-3,
        });
        let direct = v.loss(&z1, &z2, &SingleProcess);
        let out = PairLoss::pair(&v, &z1, &z2, &SingleProcess);
        assert_eq!(v.name(), "vicreg");
        assert_eq!(
            out.loss.double_value(&[]).to_bits(),
            direct.loss.double_value(&[]).to_bits()
        );
        assert_eq!(
            out.terms,
            vec![
                ("invariance", direct.invariance),
                ("variance", direct.variance),
                ("covariance", direct.covariance)
            ]
        );
        assert!(v.monitored(z1.shallow_clone()).equal(&z1));
    }
}
