//! Losses between the projections of two views of the same samples, behind
//! one trait: NT-Xent ([`InfoNce`](super::InfoNce)), Barlow Twins and VICReg.
//!
//! A two-view method runs both views through one network and hands the two
//! projections to a [`PairLoss`]; the loss returns what the method
//! minimises and logs, so the method's wiring is written once whatever the
//! loss.
//!
//! ```
//! use selfsup_core::{distributed::SingleProcess, loss::{PairLoss, VicReg, VicRegConfig}};
//! let z = tch::Tensor::randn([8, 4], (tch::Kind::Float, tch::Device::Cpu));
//! let loss: &dyn PairLoss = &VicReg::new(VicRegConfig::default());
//! let out = loss.pair(&z, &z, &SingleProcess);
//! assert_eq!(loss.name(), "vicreg");
//! assert_eq!(out.terms[0], ("invariance", 0.0)); // identical views
//! ```
use crate::distributed::Collective;
use crate::method::LossOut;
use tch::Tensor;

/// A loss comparing `z1[i]` and `z2[i]`, the projections of two views of
/// sample `i` (`[n, d]` each; statistics over the global batch go through
/// the [`Collective`]).
pub trait PairLoss {
    /// Short name of the loss (`nt_xent`, `barlow_twins`, `vicreg`).
    fn name(&self) -> &'static str;

    /// The loss of the two views' projections, with its named terms or
    /// diagnostics (detached) for the logs.
    fn pair(&self, z1: &Tensor, z2: &Tensor, comm: &dyn Collective) -> LossOut;

    /// The projections `z` (`[n, d]`) as the collapse monitors should see
    /// them: what the loss compares (default: `z` itself).
    fn monitored(&self, z: Tensor) -> Tensor {
        z
    }
}
