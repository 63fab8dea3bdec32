//! BYOL (Grill et al. 2020, arXiv:2006.07733): an online network (encoder,
//! projector, predictor) predicts the projection a slowly moving EMA copy of
//! itself (the target network, momentum 0.996 -> 1 on a cosine) gives the
//! other view; `2 - 2 cos`, symmetrised. No negatives: the predictor and the
//! EMA keep it from collapsing (`use_predictor = false` is the ablation that
//! collapses; the monitors flag it).
use super::branch::Branch;
use super::check_views;
use crate::models::EncoderConfig;
use selfsup_core::ema::{EmaConfig, EmaTeacher};
use selfsup_core::head::{HeadConfig, MlpHead};
use selfsup_core::loss::NegativeCosine;
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::Result;
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// BYOL settings (the `[method]` table with `name = "byol"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ByolConfig {
    /// Projector (paper: 4096 hidden, 256 out, batch norm).
    pub projector: HeadConfig,
    /// Predictor (paper: same shape as the projector).
    pub predictor: HeadConfig,
    /// Put the predictor on the online branch (turning it off collapses).
    pub use_predictor: bool,
    /// Target-network momentum schedule.
    pub ema: EmaConfig,
}

impl Default for ByolConfig {
    fn default() -> Self {
        let head = HeadConfig {
            hidden_dim: 4096,
            out_dim: 256,
            layers: 2,
            batch_norm: true,
            last_batch_norm: false,
        };
        Self {
            projector: head.clone(),
            predictor: head,
            use_predictor: true,
            ema: EmaConfig::default(),
        }
    }
}

/// The BYOL method: online `encoder.` / `projector.` / `predictor.`, target `teacher.`.
pub struct Byol {
    vs: nn::VarStore,
    online: Branch,
    predictor: Option<MlpHead>,
    target: Branch,
    ema: EmaTeacher,
}

impl Byol {
    /// Builds both networks on `device`; the target starts as a copy of the online one.
    pub fn new(
        device: tch::Device,
        encoder: &EncoderConfig,
        in_channels: i64,
        cfg: &ByolConfig,
    ) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let online = Branch::new(
            &(&root / "encoder"),
            &(&root / "projector"),
            encoder,
            in_channels,
            &cfg.projector,
        );
        let predictor = cfg.use_predictor.then(|| {
            MlpHead::new(
                &(&root / "predictor"),
                cfg.projector.out_dim,
                &cfg.predictor,
            )
        });
        let t = &root / "teacher";
        let target = Branch::new(
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
            online,
            predictor,
            target,
            ema,
        })
    }

    fn predict(&self, z: &Tensor) -> Tensor {
        match &self.predictor {
            Some(p) => z.apply_t(p, true),
            None => z.shallow_clone(),
        }
    }
}

impl Method for Byol {
    fn name(&self) -> &'static str {
        "byol"
    }
    fn target(&self) -> TargetKind {
        TargetKind::Teacher
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, _ctx: &StepCtx) -> Result<LossOut> {
        check_views("BYOL", batch, 2, 2)?;
        let (v1, v2) = (&batch.views[0], &batch.views[1]);
        let p1 = self.predict(&self.online.forward_t(v1, true));
        let p2 = self.predict(&self.online.forward_t(v2, true));
        let (t1, t2) = tch::no_grad(|| {
            (
                self.target.forward_t(v1, true),
                self.target.forward_t(v2, true),
            )
        });
        // mean of (2 - 2 cos(p1, t2)) and (2 - 2 cos(p2, t1)).
        let loss = NegativeCosine.loss(&p1, &t2) + NegativeCosine.loss(&p2, &t1) + 2.0;
        Ok(LossOut {
            loss,
            terms: vec![("ema_momentum", self.ema.last_momentum())],
        })
    }
    fn after_step(&mut self, ctx: &StepCtx) {
        self.ema.update(ctx.step, ctx.total_steps);
    }
    fn embed(&self, xs: &Tensor) -> Tensor {
        self.online.embed(xs, false)
    }
    fn project(&self, xs: &Tensor) -> Tensor {
        self.online.forward_t(xs, false)
    }
}
