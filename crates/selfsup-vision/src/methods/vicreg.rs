//! VICReg (Bardes, Ponce & LeCun 2022, arXiv:2105.04906): invariance between
//! the two views' projections, plus variance and covariance regularisers
//! that keep the batch of projections spread out (the loss lives in core;
//! the wiring is the shared [`TwoView`] method).
use super::two_view::{TwoView, TwoViewSpec};
use crate::models::EncoderConfig;
use selfsup_core::head::HeadConfig;
use selfsup_core::loss::{VicReg as VicRegLoss, VicRegConfig};
use selfsup_core::target::TargetKind;
use serde::{Deserialize, Serialize};

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
pub type VicReg = TwoView<VicRegLoss>;

impl VicReg {
    /// Builds the network on `device`.
    pub fn new(
        device: tch::Device,
        encoder: &EncoderConfig,
        in_channels: i64,
        cfg: &VicRegMethodConfig,
    ) -> Self {
        TwoView::build(
            device,
            encoder,
            in_channels,
            &cfg.projector,
            VicRegLoss::new(cfg.loss.clone()),
            TwoViewSpec {
                name: "vicreg",
                title: "VICReg",
                target: TargetKind::Redundancy,
                projector_prefix: "projector",
                joint_forward: false,
            },
        )
    }
}
