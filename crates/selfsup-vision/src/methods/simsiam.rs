//! SimSiam (Chen & He 2020, arXiv:2011.10566): a predictor on one branch
//! matches the other branch's projection, `-cos`, symmetrised, with a
//! stop-gradient on the target side and no EMA, no negatives. The
//! stop-gradient is what prevents collapse: `stop_gradient = false` is the
//! paper's ablation, which collapses within a few hundred steps and is
//! flagged by the collapse monitors.
use super::branch::Branch;
use super::check_views;
use crate::models::EncoderConfig;
use selfsup_core::head::{HeadConfig, MlpHead};
use selfsup_core::loss::NegativeCosine;
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::Result;
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// SimSiam settings (the `[method]` table with `name = "simsiam"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimSiamConfig {
    /// Projector (paper: 3 layers of 2048, batch norm on every layer, the
    /// output's without affine parameters).
    pub projector: HeadConfig,
    /// Predictor (paper: 2048 -> 512 -> 2048 bottleneck).
    pub predictor: HeadConfig,
    /// Stop the gradient through the target branch (off: the collapsing ablation).
    pub stop_gradient: bool,
}

impl Default for SimSiamConfig {
    fn default() -> Self {
        Self {
            projector: HeadConfig {
                hidden_dim: 2048,
                out_dim: 2048,
                layers: 3,
                batch_norm: true,
                last_batch_norm: true,
            },
            predictor: HeadConfig {
                hidden_dim: 512,
                out_dim: 2048,
                layers: 2,
                batch_norm: true,
                last_batch_norm: false,
            },
            stop_gradient: true,
        }
    }
}

/// The SimSiam method: `encoder.`, `projector.`, `predictor.`.
pub struct SimSiam {
    vs: nn::VarStore,
    branch: Branch,
    predictor: MlpHead,
    stop_gradient: bool,
}

impl SimSiam {
    /// Builds the network on `device`.
    pub fn new(
        device: tch::Device,
        encoder: &EncoderConfig,
        in_channels: i64,
        cfg: &SimSiamConfig,
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
        let predictor = MlpHead::new(
            &(&root / "predictor"),
            cfg.projector.out_dim,
            &cfg.predictor,
        );
        Self {
            vs,
            branch,
            predictor,
            stop_gradient: cfg.stop_gradient,
        }
    }
}

impl Method for SimSiam {
    fn name(&self) -> &'static str {
        "simsiam"
    }
    fn target(&self) -> TargetKind {
        TargetKind::Teacher
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, _ctx: &StepCtx) -> Result<LossOut> {
        check_views("SimSiam", batch, 2, 2)?;
        let z1 = self.branch.forward_t(&batch.views[0], true);
        let z2 = self.branch.forward_t(&batch.views[1], true);
        let p1 = z1.apply_t(&self.predictor, true);
        let p2 = z2.apply_t(&self.predictor, true);
        let (t1, t2) = if self.stop_gradient {
            (z1.detach(), z2.detach())
        } else {
            (z1, z2)
        };
        let loss = (NegativeCosine.loss(&p1, &t2) + NegativeCosine.loss(&p2, &t1)) / 2.0;
        Ok(LossOut {
            loss,
            terms: vec![],
        })
    }
    fn embed(&self, xs: &Tensor) -> Tensor {
        self.branch.embed(xs, false)
    }
    fn project(&self, xs: &Tensor) -> Tensor {
        self.branch.forward_t(xs, false)
    }
}
