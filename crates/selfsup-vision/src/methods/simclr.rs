//! SimCLR (Chen et al. 2020, arXiv:2002.05709): two augmented views of each
//! image, an encoder and an MLP projection head, NT-Xent over the batch.
//!
//! Each view goes through the encoder on its own (batch norm statistics per
//! view, as lightly and solo-learn do; `joint_forward` runs both as one
//! batch instead), then the NT-Xent loss from core, through the shared
//! [`TwoView`] method; the mean cosine of the positive pairs is logged
//! (`positive_cosine`).
use super::two_view::{TwoView, TwoViewSpec};
use crate::models::EncoderConfig;
use selfsup_core::head::HeadConfig;
use selfsup_core::loss::{InfoNce, InfoNceConfig};
use selfsup_core::target::TargetKind;
use serde::{Deserialize, Serialize};

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

/// The SimCLR method: encoder under `encoder.`, head under `head.`, NT-Xent.
pub type SimClr = TwoView<InfoNce>;

impl SimClr {
    /// Builds the encoder and head on `device`.
    pub fn new(
        device: tch::Device,
        encoder: &EncoderConfig,
        in_channels: i64,
        cfg: &SimClrConfig,
    ) -> Self {
        TwoView::build(
            device,
            encoder,
            in_channels,
            &cfg.head,
            InfoNce::new(cfg.loss.clone()),
            TwoViewSpec {
                name: "simclr",
                title: "SimCLR",
                target: TargetKind::OtherView,
                projector_prefix: "head",
                joint_forward: cfg.joint_forward,
            },
        )
    }
}
