//! Barlow Twins (Zbontar et al. 2021, arXiv:2103.03230): the two views'
//! projections should correlate perfectly dimension by dimension and not at
//! all across dimensions (the loss lives in core).
use super::branch::Branch;
use super::check_views;
use crate::models::EncoderConfig;
use selfsup_core::head::HeadConfig;
use selfsup_core::loss::{BarlowTwins as BarlowTwinsLoss, BarlowTwinsConfig};
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::Result;
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// Barlow Twins settings (the `[method]` table with `name = "barlow_twins"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BarlowTwinsMethodConfig {
    /// Projector (paper: 3 layers of 8192, batch norm on the hidden ones).
    pub projector: HeadConfig,
    /// The loss (lambda).
    pub loss: BarlowTwinsConfig,
}

impl Default for BarlowTwinsMethodConfig {
    fn default() -> Self {
        Self {
            projector: HeadConfig {
                hidden_dim: 8192,
                out_dim: 8192,
                layers: 3,
                batch_norm: true,
                last_batch_norm: false,
            },
            loss: BarlowTwinsConfig::default(),
        }
    }
}

/// The Barlow Twins method: `encoder.`, `projector.`.
pub struct BarlowTwins {
    vs: nn::VarStore,
    branch: Branch,
    loss: BarlowTwinsLoss,
}

impl BarlowTwins {
    /// Builds the network on `device`.
    pub fn new(
        device: tch::Device,
        encoder: &EncoderConfig,
        in_channels: i64,
        cfg: &BarlowTwinsMethodConfig,
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
            loss: BarlowTwinsLoss::new(cfg.loss.clone()),
        }
    }
}

impl Method for BarlowTwins {
    fn name(&self) -> &'static str {
        "barlow_twins"
    }
    fn target(&self) -> TargetKind {
        TargetKind::Redundancy
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<LossOut> {
        check_views("Barlow Twins", batch, 2, 2)?;
        let z1 = self.branch.forward_t(&batch.views[0], true);
        let z2 = self.branch.forward_t(&batch.views[1], true);
        let out = self.loss.loss(&z1, &z2, ctx.comm);
        Ok(LossOut {
            loss: out.loss,
            terms: vec![
                ("on_diagonal", out.on_diagonal),
                ("off_diagonal", out.off_diagonal),
            ],
        })
    }
    fn embed(&self, xs: &Tensor) -> Tensor {
        self.branch.embed(xs, false)
    }
    /// The projections standardised over the batch, as the loss sees them
    /// (the loss ignores each dimension's offset and scale, so the raw
    /// projections may carry a large common offset that hides their rank).
    fn project(&self, xs: &Tensor) -> Tensor {
        let z = self.branch.forward_t(xs, false);
        let mean = z.mean_dim([0i64].as_slice(), true, tch::Kind::Float);
        let std = z.std_dim([0i64].as_slice(), false, true);
        (z - mean) / (std + 1e-5)
    }
}
