//! SwAV (Caron et al. 2020, arXiv:2006.09882): online clustering. Each view's
//! l2-normalised projection is scored against `K` learnable prototypes;
//! Sinkhorn-Knopp turns the global views' scores into balanced codes, and
//! every other view (multi-crop included) predicts them (swapped
//! prediction, loss in core). Prototypes are re-normalised to unit rows in
//! the after-step hook and held fixed for the first
//! `freeze_prototypes_steps` steps.
use super::branch::Branch;
use super::check_views;
use crate::models::EncoderConfig;
use selfsup_core::head::HeadConfig;
use selfsup_core::loss::info_nce::normalize;
use selfsup_core::loss::{scores_f32, SwavLoss, SwavLossConfig};
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::Result;
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// SwAV settings (the `[method]` table with `name = "swav"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwavConfig {
    /// Projector (paper: 2048 hidden, 128 out, batch norm).
    pub projector: HeadConfig,
    /// Number of prototypes (3000 on ImageNet).
    pub prototypes: i64,
    /// Temperature, Sinkhorn epsilon and iterations.
    pub loss: SwavLossConfig,
    /// Steps during which the prototypes get no gradient (paper: 313).
    pub freeze_prototypes_steps: u64,
}

impl Default for SwavConfig {
    fn default() -> Self {
        Self {
            projector: HeadConfig {
                hidden_dim: 2048,
                out_dim: 128,
                layers: 2,
                batch_norm: true,
                last_batch_norm: false,
            },
            prototypes: 3000,
            loss: SwavLossConfig::default(),
            freeze_prototypes_steps: 313,
        }
    }
}

/// The SwAV method: `encoder.`, `projector.`, `prototypes.weight`.
pub struct Swav {
    vs: nn::VarStore,
    branch: Branch,
    prototypes: Tensor,
    loss: SwavLoss,
    freeze_steps: u64,
}

impl Swav {
    /// Builds the network and unit-norm prototypes on `device`.
    pub fn new(
        device: tch::Device,
        encoder: &EncoderConfig,
        in_channels: i64,
        cfg: &SwavConfig,
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
        let prototypes = (&root / "prototypes").var(
            "weight",
            &[cfg.prototypes, cfg.projector.out_dim],
            nn::Init::Uniform { lo: -1.0, up: 1.0 },
        );
        let me = Self {
            vs,
            branch,
            prototypes,
            loss: SwavLoss::new(cfg.loss.clone()),
            freeze_steps: cfg.freeze_prototypes_steps,
        };
        me.normalize_prototypes();
        me
    }

    fn normalize_prototypes(&self) {
        tch::no_grad(|| {
            let unit = normalize(&self.prototypes);
            self.prototypes.shallow_clone().copy_(&unit);
        });
    }

    fn scores(&self, xs: &Tensor, train: bool, freeze: bool) -> Tensor {
        let z = normalize(&self.branch.forward_t(xs, train));
        let w = if freeze {
            self.prototypes.detach()
        } else {
            self.prototypes.shallow_clone()
        };
        // In float32 whatever autocast says: Sinkhorn-Knopp takes exp(s / 0.05).
        scores_f32(&z, &w)
    }
}

impl Method for Swav {
    fn name(&self) -> &'static str {
        "swav"
    }
    fn target(&self) -> TargetKind {
        TargetKind::Prototypes
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<LossOut> {
        check_views("SwAV", batch, 2, usize::MAX)?;
        let freeze = ctx.step < self.freeze_steps;
        let scores: Vec<Tensor> = batch
            .views
            .iter()
            .map(|v| self.scores(v, true, freeze))
            .collect();
        let loss = self.loss.loss(&scores, &[0, 1], ctx.comm);
        Ok(LossOut {
            loss,
            terms: vec![],
        })
    }
    fn after_step(&mut self, _ctx: &StepCtx) {
        self.normalize_prototypes();
    }
    fn embed(&self, xs: &Tensor) -> Tensor {
        self.branch.embed(xs, false)
    }
    fn project(&self, xs: &Tensor) -> Tensor {
        self.branch.forward_t(xs, false)
    }
}
