//! MoCo v3 (Chen, Xie & He 2021, arXiv:2104.02057): no queue; queries
//! (encoder, projector, predictor) are contrasted with the momentum encoder's
//! keys of the other view over the global batch, symmetrised, each term
//! scaled by `2 tau`. Momentum 0.99 -> 1 on a cosine.
use super::branch::Branch;
use super::check_views;
use crate::models::EncoderConfig;
use selfsup_core::ema::{EmaConfig, EmaTeacher};
use selfsup_core::head::{HeadConfig, MlpHead};
use selfsup_core::loss::{InfoNce, InfoNceConfig};
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::Result;
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// MoCo v3 settings (the `[method]` table with `name = "moco_v3"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MocoV3Config {
    /// Projector (ResNet: 3 layers, 4096 hidden, 256 out, batch norm on every
    /// layer including the output's).
    pub projector: HeadConfig,
    /// Predictor (2 layers, 4096 hidden, 256 out).
    pub predictor: HeadConfig,
    /// Temperature (1.0 for ResNets, 0.2 for ViTs in the paper).
    pub loss: InfoNceConfig,
    /// Momentum schedule of the key encoder (0.99 -> 1).
    pub ema: EmaConfig,
}

impl Default for MocoV3Config {
    fn default() -> Self {
        Self {
            projector: HeadConfig {
                hidden_dim: 4096,
                out_dim: 256,
                layers: 3,
                batch_norm: true,
                last_batch_norm: true,
            },
            predictor: HeadConfig {
                hidden_dim: 4096,
                out_dim: 256,
                layers: 2,
                batch_norm: true,
                last_batch_norm: false,
            },
            loss: InfoNceConfig { temperature: 1.0 },
            ema: EmaConfig {
                base: 0.99,
                end: 1.0,
            },
        }
    }
}

/// The MoCo v3 method: `encoder.` / `projector.` / `predictor.`, momentum `teacher.`.
pub struct MocoV3 {
    vs: nn::VarStore,
    base: Branch,
    predictor: MlpHead,
    momentum: Branch,
    ema: EmaTeacher,
    loss: InfoNce,
}

impl MocoV3 {
    /// Builds both encoders on `device`.
    pub fn new(
        device: tch::Device,
        encoder: &EncoderConfig,
        in_channels: i64,
        cfg: &MocoV3Config,
    ) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let base = Branch::new(
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
        let t = &root / "teacher";
        let momentum = Branch::new(
            &(&t / "encoder"),
            &(&t / "projector"),
            encoder,
            in_channels,
            &cfg.projector,
        );
        let ema = EmaTeacher::with_prefixes(
            &vs,
            &[
                ("encoder", "teacher.encoder"),
                ("projector", "teacher.projector"),
            ],
            cfg.ema.clone(),
        )?;
        Ok(Self {
            vs,
            base,
            predictor,
            momentum,
            ema,
            loss: InfoNce::new(cfg.loss.clone()),
        })
    }
}

impl Method for MocoV3 {
    fn name(&self) -> &'static str {
        "moco_v3"
    }
    fn target(&self) -> TargetKind {
        TargetKind::OtherView
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<LossOut> {
        check_views("MoCo v3", batch, 2, 2)?;
        let (v1, v2) = (&batch.views[0], &batch.views[1]);
        let q1 = self.base.forward_t(v1, true).apply_t(&self.predictor, true);
        let q2 = self.base.forward_t(v2, true).apply_t(&self.predictor, true);
        let (k1, k2) = tch::no_grad(|| {
            (
                self.momentum.forward_t(v1, true),
                self.momentum.forward_t(v2, true),
            )
        });
        let scale = 2.0 * self.loss.config().temperature;
        let loss = (self.loss.cross_view(&q1, &k2, false, ctx.comm)
            + self.loss.cross_view(&q2, &k1, false, ctx.comm))
            * scale;
        Ok(LossOut {
            loss,
            terms: vec![("ema_momentum", self.ema.last_momentum())],
        })
    }
    fn after_step(&mut self, ctx: &StepCtx) {
        self.ema.update(ctx.step, ctx.total_steps);
    }
    fn embed(&self, xs: &Tensor) -> Tensor {
        self.base.embed(xs, false)
    }
    fn project(&self, xs: &Tensor) -> Tensor {
        self.base.forward_t(xs, false)
    }
}
