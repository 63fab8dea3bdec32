//! SimCLR (Chen et al. 2020, arXiv:2002.05709): two augmented views of each
//! image, an encoder and an MLP projection head, NT-Xent over the batch.
//!
//! Each view goes through the encoder on its own (batch norm statistics per
//! view, as lightly and solo-learn do; `joint_forward` runs both as one
//! batch instead), then the NT-Xent loss from core.
use crate::models::{build_encoder, EncoderConfig};
use selfsup_core::encoder::Encoder;
use selfsup_core::head::{HeadConfig, MlpHead};
use selfsup_core::loss::{InfoNce, InfoNceConfig};
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// SimCLR settings (the `[method]` table with `name = "simclr"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimClrConfig {
    /// Projection head (SimCLR: 2 layers, 128-d output).
    pub head: HeadConfig,
    /// NT-Xent temperature.
    pub loss: InfoNceConfig,
    /// Run both views through the encoder as one batch (batch norm sees 2N
    /// images) instead of one pass per view (batch norm per view, as lightly
    /// and solo-learn do).
    pub joint_forward: bool,
}

impl Default for SimClrConfig {
    fn default() -> Self {
        Self {
            head: HeadConfig::default(),
            loss: InfoNceConfig { temperature: 0.5 },
            joint_forward: false,
        }
    }
}

/// The SimCLR method: encoder under `encoder.`, head under `head.`.
pub struct SimClr {
    vs: nn::VarStore,
    encoder: Box<dyn Encoder>,
    head: MlpHead,
    loss: InfoNce,
    joint_forward: bool,
}

impl SimClr {
    /// Builds the encoder and head on `device`.
    pub fn new(
        device: tch::Device,
        encoder: &EncoderConfig,
        in_channels: i64,
        cfg: &SimClrConfig,
    ) -> Self {
        let vs = nn::VarStore::new(device);
        let enc = build_encoder(&(vs.root() / "encoder"), encoder, in_channels);
        let head = MlpHead::new(&(vs.root() / "head"), enc.out_dim(), &cfg.head);
        Self {
            vs,
            encoder: enc,
            head,
            loss: InfoNce::new(cfg.loss.clone()),
            joint_forward: cfg.joint_forward,
        }
    }

    /// The variable prefix of the encoder (what gets exported).
    pub const ENCODER_PREFIX: &'static str = "encoder";
}

impl Method for SimClr {
    fn name(&self) -> &'static str {
        "simclr"
    }
    fn target(&self) -> TargetKind {
        TargetKind::OtherView
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<LossOut> {
        if batch.views.len() != 2 {
            return Err(Error::Config(format!(
                "SimCLR needs exactly 2 views per image, got {}",
                batch.views.len()
            )));
        }
        let project = |x: &Tensor| self.encoder.forward_t(x, true).apply_t(&self.head, true);
        let (z1, z2) = if self.joint_forward {
            let n = batch.len();
            let z = project(&Tensor::cat(&batch.views, 0));
            (z.narrow(0, 0, n), z.narrow(0, n, n))
        } else {
            (project(&batch.views[0]), project(&batch.views[1]))
        };
        let loss = self.loss.nt_xent(&z1, &z2, ctx.comm);
        let pos_cos = tch::no_grad(|| {
            Tensor::cosine_similarity(&z1, &z2, 1, 1e-8)
                .mean(Kind::Float)
                .double_value(&[])
        });
        Ok(LossOut {
            loss,
            terms: vec![("positive_cosine", pos_cos)],
        })
    }
    fn embed(&self, xs: &Tensor) -> Tensor {
        self.encoder.forward_t(xs, false)
    }
    fn project(&self, xs: &Tensor) -> Tensor {
        self.embed(xs).apply_t(&self.head, false)
    }
}
