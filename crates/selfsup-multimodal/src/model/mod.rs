//! The dual encoder: image tower, text tower, linear projections (no bias)
//! into a shared space and a learnable logit scale, with HF `CLIPModel`'s
//! names for the parts CLIP defines itself: `visual_projection.weight`
//! `[E, D_image]`, `text_projection.weight` `[E, D_text]`, `logit_scale` (a
//! scalar, the log of the inverse temperature, initialised at `ln(1/0.07)`
//! and kept at most `ln(100)` as in the paper).
pub mod audio_tower;
pub mod image_tower;
pub mod logmel_tower;
pub mod text_tower;

pub use audio_tower::{AudioTower, AudioTowerConfig, SpeechTower, AUDIO_PREFIX};
pub use image_tower::{ImageTower, VISION_PREFIX};
pub use text_tower::{TextTower, TEXT_PREFIX};

use crate::tower::Tower;

use selfsup_core::{Error, Result};
use selfsup_text::model::{BertConfig, ModelConfig};
use selfsup_vision::models::EncoderConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tch::{nn, Kind, Tensor};

/// `[model]`: the two towers and the shared space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClipModelConfig {
    /// `[model.vision]`: any selfsup-vision encoder (`arch = "small_cnn"`, ...).
    pub vision: EncoderConfig,
    /// A selfsup vision export (`.../export/model.safetensors`) of an RGB
    /// encoder of the same architecture to start the image tower from.
    pub vision_init: Option<PathBuf>,
    /// `[model.text]`: the BERT text tower (`max_len` = caption tokens).
    pub text: ModelConfig,
    /// Width of the shared space (HF `projection_dim`).
    pub embed_dim: i64,
}

impl Default for ClipModelConfig {
    fn default() -> Self {
        Self {
            vision: EncoderConfig::default(),
            vision_init: None,
            text: ModelConfig {
                max_len: 32,
                max_position: 64,
                ..ModelConfig::default()
            },
            embed_dim: 128,
        }
    }
}

/// How the logit scale starts and how far it may grow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleSpec {
    /// Initial temperature (CLIP: 0.07).
    pub init_temperature: f64,
    /// Largest `exp(logit_scale)` (CLIP: 100).
    pub max_logit_scale: f64,
    /// Whether the scale is learned.
    pub learn: bool,
}

/// Towers, projections and logit scale.
/// Two towers (`A` then `B`, each a [`Tower`]), their projections and the
/// logit scale: image-text CLIP is `ClipModel<ImageTower, TextTower>` (the
/// default), speech-text `ClipModel<AudioTower, TextTower>`.
pub struct ClipModel<A: Tower = ImageTower, B: Tower = TextTower> {
    /// The first tower (images, or speech).
    pub tower: A,
    pub text: B,
    tower_projection: Tensor,
    text_projection: Tensor,
    logit_scale: Tensor,
    max_log_scale: f64,
}

impl ClipModel {
    /// Builds every part of image-text CLIP under `root`.
    pub fn new(
        root: &nn::Path,
        vision: &EncoderConfig,
        text: &BertConfig,
        embed_dim: i64,
        scale: ScaleSpec,
    ) -> Result<Self> {
        check_space(embed_dim, scale)?;
        let image = ImageTower::new(root, vision)?;
        let text = TextTower::new(root, text);
        Self::with_towers(root, image, text, embed_dim, scale)
    }

    /// Image embeddings `[B, E]` (not normalised).
    pub fn encode_image(&self, xs: &Tensor, train: bool) -> Tensor {
        self.encode_tower(std::slice::from_ref(xs), train)
    }
}

impl<A: Tower> ClipModel<A, TextTower> {
    /// Text embeddings `[B, E]` (not normalised).
    pub fn encode_text(&self, ids: &Tensor, attention: &Tensor, train: bool) -> Tensor {
        self.text
            .forward(ids, attention, train)
            .matmul(&self.text_projection.tr())
    }
}

/// Refuses a shared space or a logit scale that cannot work.
fn check_space(embed_dim: i64, scale: ScaleSpec) -> Result<()> {
    if embed_dim < 1 {
        return Err(Error::Config(format!(
            "model.embed_dim must be positive, got {embed_dim}"
        )));
    }
    if !(scale.init_temperature > 0.0
        && scale.max_logit_scale >= 1.0
        && 1.0 / scale.init_temperature <= scale.max_logit_scale)
    {
        return Err(Error::Config(format!(
                "method: need 0 < init_temperature and 1 <= 1 / init_temperature <= max_logit_scale, got {} and {}",
                scale.init_temperature, scale.max_logit_scale
            )));
    }
    Ok(())
}

impl<A: Tower, B: Tower> ClipModel<A, B> {
    /// The projections and the logit scale under `root` around two built
    /// towers (each built under its own prefix of the same `root`).
    pub fn with_towers(
        root: &nn::Path,
        tower: A,
        text: B,
        embed_dim: i64,
        scale: ScaleSpec,
    ) -> Result<Self> {
        check_space(embed_dim, scale)?;
        let proj = |name: &str, d: i64| {
            (root / name).var(
                "weight",
                &[embed_dim, d],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: (d as f64).powf(-0.5),
                },
            )
        };
        let tower_projection = proj(A::PROJECTION, tower.out_dim());
        let text_projection = proj(B::PROJECTION, text.out_dim());
        let init = (1.0 / scale.init_temperature).ln();
        let logit_scale = if scale.learn {
            root.var("logit_scale", &[], nn::Init::Const(init))
        } else {
            let t = root.zeros_no_train("logit_scale", &[]);
            tch::no_grad(|| {
                let _ = t.shallow_clone().fill_(init);
            });
            t
        };
        Ok(Self {
            tower,
            text,
            tower_projection,
            text_projection,
            logit_scale,
            max_log_scale: scale.max_logit_scale.ln(),
        })
    }

    /// First-tower embeddings `[B, E]` (not normalised) of its
    /// [`Tower::INPUTS`] tensors.
    pub fn encode_tower(&self, inputs: &[Tensor], train: bool) -> Tensor {
        self.tower
            .forward(inputs, train)
            .matmul(&self.tower_projection.tr())
    }

    /// Second-tower embeddings `[B, E]` (not normalised) of its
    /// [`Tower::INPUTS`] tensors.
    pub fn encode_second(&self, inputs: &[Tensor], train: bool) -> Tensor {
        self.text
            .forward(inputs, train)
            .matmul(&self.text_projection.tr())
    }

    /// The logit scale the loss uses: the variable clamped to `[0, ln max]`.
    pub fn log_scale(&self) -> Tensor {
        self.logit_scale.clamp(0.0, self.max_log_scale)
    }

    /// `exp(logit_scale)` as a number (the inverse temperature).
    pub fn scale_value(&self) -> f64 {
        self.log_scale()
            .exp()
            .to_kind(Kind::Double)
            .double_value(&[])
    }

    /// Clamps the variable itself into `[0, ln max]` (after each optimiser step).
    pub fn clamp_scale_(&self) {
        tch::no_grad(|| {
            let _ = self
                .logit_scale
                .shallow_clone()
                .clamp_(0.0, self.max_log_scale);
        });
    }
}
