//! MoCo v2 (He et al. 2019, arXiv:1911.05722; Chen et al. 2020,
//! arXiv:2003.04297): a query encoder is trained with InfoNCE against the key
//! of the other view from a momentum encoder (EMA, 0.999) and a queue of keys
//! from earlier batches as negatives.
//!
//! The queue and its write position are variables of the method (buffers
//! without gradient), so checkpoints carry them and resume is exact. Keys
//! are enqueued in the after-step hook, gathered over all processes. Batch
//! norm runs per view (the role of MoCo's shuffled BN across GPUs).
use super::branch::Branch;
use super::check_views;
use crate::models::EncoderConfig;
use selfsup_core::ema::{EmaConfig, EmaTeacher};
use selfsup_core::head::HeadConfig;
use selfsup_core::loss::info_nce::normalize;
use selfsup_core::loss::{InfoNce, InfoNceConfig};
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// MoCo v2 settings (the `[method]` table with `name = "moco_v2"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MocoV2Config {
    /// Projection head (MoCo v2: 2048 hidden, 128 out, no batch norm).
    pub projector: HeadConfig,
    /// InfoNCE temperature (0.2).
    pub loss: InfoNceConfig,
    /// Keys kept as negatives (65536 on ImageNet); at most the number of training images.
    pub queue_size: usize,
    /// Momentum of the key encoder (constant 0.999).
    pub ema: EmaConfig,
    /// Also use the second view as query (symmetric loss, as MoCo v3 and lightly do).
    pub symmetric: bool,
}

impl Default for MocoV2Config {
    fn default() -> Self {
        Self {
            projector: HeadConfig {
                hidden_dim: 2048,
                out_dim: 128,
                layers: 2,
                batch_norm: false,
                last_batch_norm: false,
            },
            loss: InfoNceConfig { temperature: 0.2 },
            queue_size: 65536,
            ema: EmaConfig {
                base: 0.999,
                end: 0.999,
            },
            symmetric: false,
        }
    }
}

impl MocoV2Config {
    /// The queue must hold fewer keys than there are images (else it holds
    /// stale copies of the positives) and at least one batch.
    pub fn validate(&self, train_images: usize, batch_size: usize) -> Result<()> {
        if self.queue_size == 0 {
            return Err(Error::Config("method.queue_size must be at least 1".into()));
        }
        if self.queue_size >= train_images {
            return Err(Error::Config(format!(
                "method.queue_size {} is not smaller than the {train_images} training images: the queue would hold keys of the very images it contrasts against; use at most {}",
                self.queue_size,
                train_images.saturating_sub(batch_size).max(1)
            )));
        }
        Ok(())
    }
}

/// The MoCo v2 method: query `encoder.` / `projector.`, key `teacher.`,
/// buffers `queue` and `queue_ptr`.
pub struct MocoV2 {
    vs: nn::VarStore,
    query: Branch,
    key: Branch,
    ema: EmaTeacher,
    loss: InfoNce,
    queue: Tensor,
    queue_ptr: Tensor,
    symmetric: bool,
    pending: Option<Tensor>,
}

impl MocoV2 {
    /// Builds both encoders and a queue of random unit keys on `device`.
    pub fn new(
        device: tch::Device,
        encoder: &EncoderConfig,
        in_channels: i64,
        cfg: &MocoV2Config,
    ) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let query = Branch::new(
            &(&root / "encoder"),
            &(&root / "projector"),
            encoder,
            in_channels,
            &cfg.projector,
        );
        let t = &root / "teacher";
        let key = Branch::new(
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
        let dim = cfg.projector.out_dim;
        let queue = root.zeros_no_train("queue", &[cfg.queue_size as i64, dim]);
        let queue_ptr = root
            .var("queue_ptr", &[1], nn::Init::Const(0.))
            .set_requires_grad(false);
        tch::no_grad(|| {
            let init = normalize(&Tensor::randn(
                [cfg.queue_size as i64, dim],
                (Kind::Float, device),
            ));
            queue.shallow_clone().copy_(&init);
        });
        Ok(Self {
            vs,
            query,
            key,
            ema,
            loss: InfoNce::new(cfg.loss.clone()),
            queue,
            queue_ptr,
            symmetric: cfg.symmetric,
            pending: None,
        })
    }
}

impl Method for MocoV2 {
    fn name(&self) -> &'static str {
        "moco_v2"
    }
    fn target(&self) -> TargetKind {
        TargetKind::OtherView
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, _ctx: &StepCtx) -> Result<LossOut> {
        check_views("MoCo v2", batch, 2, 2)?;
        let (v1, v2) = (&batch.views[0], &batch.views[1]);
        let q1 = self.query.forward_t(v1, true);
        let k2 = tch::no_grad(|| normalize(&self.key.forward_t(v2, true)));
        let (loss, keys) = if self.symmetric {
            let q2 = self.query.forward_t(v2, true);
            let k1 = tch::no_grad(|| normalize(&self.key.forward_t(v1, true)));
            let l = (self.loss.with_queue(&q1, &k2, &self.queue)
                + self.loss.with_queue(&q2, &k1, &self.queue))
                / 2.0;
            (l, Tensor::cat(&[k2, k1], 0))
        } else {
            (self.loss.with_queue(&q1, &k2, &self.queue), k2)
        };
        self.pending = Some(keys);
        Ok(LossOut {
            loss,
            terms: vec![],
        })
    }
    fn after_step(&mut self, ctx: &StepCtx) {
        self.ema.update(ctx.step, ctx.total_steps);
        let Some(keys) = self.pending.take() else {
            return;
        };
        tch::no_grad(|| {
            let keys = ctx.comm.all_gather_with_grad(&keys);
            let k = self.queue.size()[0];
            let n = keys.size()[0].min(k);
            let keys = keys.narrow(0, 0, n).to_kind(self.queue.kind());
            let ptr = self.queue_ptr.double_value(&[0]) as i64;
            let idx = (Tensor::arange(n, (Kind::Int64, keys.device())) + ptr).remainder(k);
            let _ = self.queue.index_copy_(0, &idx, &keys);
            let _ = self.queue_ptr.fill_(((ptr + n) % k) as f64);
        });
    }
    fn embed(&self, xs: &Tensor) -> Tensor {
        self.query.embed(xs, false)
    }
    fn project(&self, xs: &Tensor) -> Tensor {
        self.query.forward_t(xs, false)
    }
}
