//! VICReg (Bardes, Ponce & LeCun 2022, arXiv:2105.04906): invariance between
//! the two views' projections, plus variance and covariance regularisers
//! that keep the batch of projections spread out (the loss lives in core).
use super::branch::Branch;
use super::check_views;
use crate::models::EncoderConfig;
use selfsup_core::head::HeadConfig;
use selfsup_core::loss::{VicReg as VicRegLoss, VicRegConfig};
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::Result;
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// VICReg settings (the `[method]` table with `name = "vicreg"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VicRegMethodConfig {
    /// Expander (paper: 3 layers of 8192, batch norm on the hidden ones).
    pub projector: HeadConfig,
    /// The loss weights.
    pub loss: VicRegConfig,
}

impl Default for VicRegMethodConfig {
    fn default() -> Self {
        Self {
            projector: HeadConfig {
                hidden_dim: 8192,
                out_dim: 8192,
                layers: 3,
                batch_norm: true,
                last_batch_norm: false,
            },
            loss: VicRegConfig::default(),
        }
    }
}

/// The VICReg method: `encoder.`, `projector.`.
pub struct VicReg {
    vs: nn::VarStore,
    branch: Branch,
    loss: VicRegLoss,
}

impl VicReg {
    /// Builds the network on `device`.
    pub fn new(
        device: tch::Device,
        encoder: &EncoderConfig,
        in_channels: i64,
        cfg: &VicRegMethodConfig,
    ) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let branch = Branch::new(
            &(&root / "encoder"),
            &(&root / "projector"),
            encoder,
            in_channels,
            &cfg.projector,
        );
        Self {
            vs,
            branch,
            loss: VicRegLoss::new(cfg.loss.clone()),
        }
    }
}

impl Method for VicReg {
    fn name(&self) -> &'static str {
        "vicreg"
    }
    fn target(&self) -> TargetKind {
        TargetKind::Redundancy
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<LossOut> {
        check_views("VICReg", batch, 2, 2)?;
        let z1 = self.branch.forward_t(&batch.views[0], true);
        let z2 = self.branch.forward_t(&batch.views[1], true);
        let out = self.loss.loss(&z1, &z2, ctx.comm);
        Ok(LossOut {
            loss: out.loss,
            terms: vec![
                ("invariance", out.invariance),
                ("variance", out.variance),
                ("covariance", out.covariance),
            ],
        })
    }
    fn embed(&self, xs: &Tensor) -> Tensor {
        self.branch.embed(xs, false)
    }
    fn project(&self, xs: &Tensor) -> Tensor {
        self.branch.forward_t(xs, false)
    }
}
