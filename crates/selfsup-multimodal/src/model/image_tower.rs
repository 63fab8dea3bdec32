//! The image tower: any selfsup-vision encoder under `vision_model.`, its
//! variables named as in torchvision / timm below that prefix, optionally
//! initialised from a selfsup vision export (`model.safetensors`).
use crate::tower::Tower;
use selfsup_core::encoder::Encoder;
use selfsup_core::Result;
use selfsup_vision::export::load_encoder_weights;
use selfsup_vision::models::{build_encoder, EncoderConfig};
use std::path::Path;
use tch::{nn, Tensor};

/// Var-store prefix of the image tower (HF `CLIPModel`'s name).
pub const VISION_PREFIX: &str = "vision_model";

/// A selfsup vision encoder on RGB images.
pub struct ImageTower {
    encoder: Box<dyn Encoder>,
}

impl ImageTower {
    /// Builds the encoder `cfg` describes under `root / vision_model`.
    pub fn new(root: &nn::Path, cfg: &EncoderConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            encoder: build_encoder(&(root / VISION_PREFIX), cfg, 3),
        })
    }

    /// Width of the features.
    pub fn out_dim(&self) -> i64 {
        self.encoder.out_dim()
    }

    /// Features `[B, out_dim]` of normalised images `[B, 3, S, S]`.
    pub fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        self.encoder.forward_t(xs, train)
    }
}

impl Tower for ImageTower {
    const INPUTS: usize = 1;
    const PROJECTION: &'static str = "visual_projection";

    fn out_dim(&self) -> i64 {
        self.encoder.out_dim()
    }

    fn forward(&self, inputs: &[Tensor], train: bool) -> Tensor {
        match inputs.first() {
            Some(xs) => self.encoder.forward_t(xs, train),
            None => Tensor::zeros(
                [0, self.encoder.out_dim()],
                (tch::Kind::Float, tch::Device::Cpu),
            ),
        }
    }
}

/// Loads a selfsup vision export (an RGB encoder of the same architecture)
/// into the image tower of `vs`; the error lists what does not fit.
pub fn load_pretrained(vs: &mut nn::VarStore, file: &Path) -> Result<()> {
    load_encoder_weights(vs, VISION_PREFIX, file)
}
