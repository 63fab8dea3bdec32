//! Barlow Twins (Zbontar et al. 2021, arXiv:2103.03230): the two views'
//! projections should correlate perfectly dimension by dimension and not at
//! all across dimensions (the loss lives in core; the wiring is the shared
//! [`TwoView`] method).
//!
//! The collapse monitors see the projections standardised over the batch,
//! as the loss sees them (the loss ignores each dimension's offset and
//! scale, so the raw projections may carry a large common offset that hides
//! their rank).
use super::two_view::{TwoView, TwoViewSpec};
use crate::models::EncoderConfig;
use selfsup_core::head::HeadConfig;
use selfsup_core::loss::{BarlowTwins as BarlowTwinsLoss, BarlowTwinsConfig};
use selfsup_core::target::TargetKind;
use serde::{Deserialize, Serialize};

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
pub type BarlowTwins = TwoView<BarlowTwinsLoss>;

impl BarlowTwins {
    /// Builds the network on `device`.
    pub fn new(
        device: tch::Device,
        encoder: &EncoderConfig,
        in_channels: i64,
        cfg: &BarlowTwinsMethodConfig,
    ) -> Self {
        TwoView::build(
            device,
            encoder,
            in_channels,
            &cfg.projector,
            BarlowTwinsLoss::new(cfg.loss.clone()),
            TwoViewSpec {
                name: "barlow_twins",
                title: "Barlow Twins",
                target: TargetKind::Redundancy,
                projector_prefix: "projector",
                joint_forward: false,
            },
        )
    }
}
