//! The video methods, one per file, and the `[method]` table that names
//! them.
pub mod temporal_order;
pub mod vjepa;

use crate::model::{TubeletVit, VitConfig};
use selfsup_core::method::Method;
use selfsup_core::Result;
use serde::{Deserialize, Serialize};
use tch::Tensor;
pub use temporal_order::{TemporalOrder, TemporalOrderConfig};
pub use vjepa::{Vjepa, VjepaConfig};

/// `[method]`: the video methods, by `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum VideoMethodConfig {
    /// V-JEPA: predict EMA target features of masked spatio-temporal blocks.
    Vjepa(VjepaConfig),
    /// Shuffle and Learn: is a frame triple in temporal order?
    TemporalOrder(TemporalOrderConfig),
}

impl Default for VideoMethodConfig {
    fn default() -> Self {
        Self::Vjepa(VjepaConfig::default())
    }
}

impl VideoMethodConfig {
    /// Every `[method] name` of the video modality.
    pub const NAMES: [&'static str; 2] = ["vjepa", "temporal_order"];

    /// The `[method] name`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Vjepa(_) => "vjepa",
            Self::TemporalOrder(_) => "temporal_order",
        }
    }

    /// The ranges, as a message naming the key.
    pub fn validate(&self, model: &VitConfig) -> std::result::Result<(), String> {
        match self {
            Self::Vjepa(c) => c.validate(),
            Self::TemporalOrder(c) => c.validate(model),
        }
    }
}

/// A video method: the trainer's [`Method`] plus the encoder that is
/// probed and exported.
pub trait VideoMethod: Method {
    /// The encoder evaluation reads (mean final token) and export writes.
    fn encoder(&self) -> &TubeletVit;
    /// Its variables' prefix in the method's var store.
    fn encoder_prefix(&self) -> &'static str;
    /// A pretext task's accuracy on held-out `clips` (chunk `chunk` of the
    /// validation clips), with the metric's name; `None` (the default)
    /// for a method without a classification pretext.
    fn held_out_pretext(&self, _clips: &Tensor, _chunk: u64) -> Option<(&'static str, f64)> {
        None
    }
}

impl VideoMethod for Vjepa {
    fn encoder(&self) -> &TubeletVit {
        self.target_encoder()
    }
    fn encoder_prefix(&self) -> &'static str {
        Vjepa::ENCODER_PREFIX
    }
}

impl VideoMethod for TemporalOrder {
    fn encoder(&self) -> &TubeletVit {
        self.encoder_vit()
    }
    fn encoder_prefix(&self) -> &'static str {
        TemporalOrder::ENCODER_PREFIX
    }
    fn held_out_pretext(&self, clips: &Tensor, chunk: u64) -> Option<(&'static str, f64)> {
        Some(("val_order_accuracy", self.held_out_accuracy(clips, chunk)))
    }
}

/// The method `cfg` names, initialised from libtorch's generator as it
/// stands (the caller seeds it); `seed` keys its masks or frame draws.
pub fn build(
    cfg: &VideoMethodConfig,
    model: &VitConfig,
    seed: u64,
    device: tch::Device,
) -> Result<Box<dyn VideoMethod>> {
    Ok(match cfg {
        VideoMethodConfig::Vjepa(c) => Box::new(Vjepa::new(device, model, c, seed)?),
        VideoMethodConfig::TemporalOrder(c) => {
            Box::new(TemporalOrder::new(device, model, c, seed)?)
        }
    })
}
