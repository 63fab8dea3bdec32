//! Image encoders: a small CNN for quick CPU runs and ResNet-18/50 whose
//! variables carry exactly torchvision's names (`conv1.weight`,
//! `layer1.0.bn1.running_mean`, `layer2.0.downsample.0.weight`, ...), so an
//! exported encoder loads into `torchvision.models.resnet18()` with
//! `strict=True` (see [`crate::export`]), and Vision Transformers with
//! timm's names ([`vit`]).
//!
//! Every CNN ends at the global average pool: it has no `fc` and returns
//! `[batch, out_dim]` features. A ViT returns its final-normed class token,
//! `[batch, embed_dim]`.
//!
//! The `[model]` table of a run config selects one:
//!
//! ```toml
//! [model]
//! arch = "resnet18"   # or "resnet50", "small_cnn"
//! stem = "cifar"      # or "imagenet" (the default, torchvision's own)
//! ```
//!
//! ```toml
//! [model]
//! arch = "small_cnn"
//! channels = [32, 64, 128, 256]   # the default
//! ```
//!
//! ```toml
//! [model]
//! arch = "vit_tiny"   # or "vit_small"; timm's names (see models::vit)
//! patch_size = 4
//! image_size = 28     # the size pos_embed is built for
//! depth = 4           # optional overrides: embed_dim, depth, heads
//! ```
//!
//! The number of input channels is not part of the table: it follows from the
//! data (1 for Fashion-MNIST, 3 for CIFAR) and is passed to [`build_encoder`].
//! With 1 input channel `conv1.weight` is `[64, 1, k, k]`, so the torchvision
//! model that loads it must have its `conv1` replaced by a one-channel
//! convolution (`export/config.json` spells out how).
pub mod resnet;
pub mod small_cnn;
pub mod vit;

pub use resnet::{resnet18, resnet50, BlockKind, ResNet};
pub use small_cnn::{small_cnn, SmallCnn};
pub use vit::{PosEmbedInit, Vit, VitOptions, VitSpec};

use selfsup_core::batch_norm::{batch_norm2d, BatchNorm};
use selfsup_core::encoder::Encoder;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, init::FanInOut, init::NonLinearity, init::NormalOrUniform, Init};

/// The first layers of a ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stem {
    /// torchvision's: 7x7 stride-2 `conv1` (padding 3), then a 3x3 stride-2
    /// max-pool (padding 1). Divides the resolution by 4 before `layer1`.
    #[default]
    Imagenet,
    /// The usual variant for 32x32 images (solo-learn, lightly): 3x3 stride-1
    /// `conv1` (padding 1) and no max-pool. In torchvision: replace `conv1` by
    /// `Conv2d(in_channels, 64, 3, 1, 1, bias=False)` and `maxpool` by
    /// `Identity()`.
    Cifar,
}

impl Stem {
    /// The name used in configs and `config.json` (`"imagenet"` / `"cifar"`).
    pub fn name(self) -> &'static str {
        match self {
            Stem::Imagenet => "imagenet",
            Stem::Cifar => "cifar",
        }
    }
}

/// Default channels of [`EncoderConfig::SmallCnn`]: 32-64-128-256.
pub const SMALL_CNN_CHANNELS: [i64; 4] = [32, 64, 128, 256];

fn default_small_cnn_channels() -> Vec<i64> {
    SMALL_CNN_CHANNELS.to_vec()
}

/// The `[model]` table: which encoder to build. Tagged by `arch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "snake_case", deny_unknown_fields)]
pub enum EncoderConfig {
    /// `arch = "small_cnn"`: one block (3x3 conv, batch norm, ReLU) per entry
    /// of `channels`, a 2x2 max-pool after every block but the last, then the
    /// global average pool; `out_dim` is the last entry.
    SmallCnn {
        /// Output channels of each block (default 32-64-128-256).
        #[serde(default = "default_small_cnn_channels")]
        channels: Vec<i64>,
    },
    /// `arch = "resnet18"`: BasicBlock, [2, 2, 2, 2], `out_dim` 512.
    Resnet18 {
        /// `"imagenet"` (default) or `"cifar"`.
        #[serde(default)]
        stem: Stem,
    },
    /// `arch = "resnet50"`: Bottleneck (stride on the 3x3 conv, torchvision's
    /// "v1.5"), [3, 4, 6, 3], `out_dim` 2048.
    Resnet50 {
        /// `"imagenet"` (default) or `"cifar"`.
        #[serde(default)]
        stem: Stem,
    },
    /// `arch = "vit_tiny"`: timm's ViT-Ti (D 192, depth 12, 3 heads) unless
    /// overridden; `out_dim` is D (the final-normed class token).
    VitTiny(VitOptions),
    /// `arch = "vit_small"`: timm's ViT-S (D 384, depth 12, 6 heads) unless
    /// overridden; `out_dim` is D.
    VitSmall(VitOptions),
}

/// `(embed_dim, depth, heads)` of timm's `vit_tiny_*`.
pub const VIT_TINY: (i64, i64, i64) = (192, 12, 3);
/// `(embed_dim, depth, heads)` of timm's `vit_small_*`.
pub const VIT_SMALL: (i64, i64, i64) = (384, 12, 6);

impl Default for EncoderConfig {
    /// The small CNN with its default channels (fast enough for a CPU run).
    fn default() -> Self {
        EncoderConfig::SmallCnn {
            channels: default_small_cnn_channels(),
        }
    }
}

impl EncoderConfig {
    /// The `arch` value: `"small_cnn"`, `"resnet18"` or `"resnet50"`.
    pub fn arch(&self) -> &'static str {
        match self {
            EncoderConfig::SmallCnn { .. } => "small_cnn",
            EncoderConfig::Resnet18 { .. } => "resnet18",
            EncoderConfig::Resnet50 { .. } => "resnet50",
            EncoderConfig::VitTiny(_) => "vit_tiny",
            EncoderConfig::VitSmall(_) => "vit_small",
        }
    }

    /// The ResNet stem, `None` for the small CNN and the ViTs.
    pub fn stem(&self) -> Option<Stem> {
        match self {
            EncoderConfig::SmallCnn { .. }
            | EncoderConfig::VitTiny(_)
            | EncoderConfig::VitSmall(_) => None,
            EncoderConfig::Resnet18 { stem } | EncoderConfig::Resnet50 { stem } => Some(*stem),
        }
    }

    /// The resolved shape of a ViT (`None` for the CNNs).
    pub fn vit_spec(&self) -> Option<VitSpec> {
        match self {
            EncoderConfig::VitTiny(o) => Some(VitSpec::resolve(VIT_TINY, o)),
            EncoderConfig::VitSmall(o) => Some(VitSpec::resolve(VIT_SMALL, o)),
            _ => None,
        }
    }

    /// Whether the encoder is a Vision Transformer (what MAE and I-JEPA need).
    pub fn is_vit(&self) -> bool {
        self.vit_spec().is_some()
    }

    /// Width of the features the encoder returns.
    pub fn out_dim(&self) -> i64 {
        match self {
            EncoderConfig::SmallCnn { channels } => channels.last().copied().unwrap_or(0),
            EncoderConfig::Resnet18 { .. } => 512,
            EncoderConfig::Resnet50 { .. } => 2048,
            EncoderConfig::VitTiny(o) => o.embed_dim.unwrap_or(VIT_TINY.0),
            EncoderConfig::VitSmall(o) => o.embed_dim.unwrap_or(VIT_SMALL.0),
        }
    }

    /// The smallest square input side the encoder maps to features: the
    /// small CNN's unpadded 2x2 max-pools need `2^(blocks - 1)` pixels, the
    /// ResNets' padded strides take any size, a ViT one patch.
    pub fn min_input_size(&self) -> i64 {
        match self {
            EncoderConfig::SmallCnn { channels } => 1 << channels.len().saturating_sub(1),
            EncoderConfig::Resnet18 { .. } | EncoderConfig::Resnet50 { .. } => 1,
            // One patch at least (the position embedding is resampled to the grid).
            EncoderConfig::VitTiny(_) | EncoderConfig::VitSmall(_) => {
                self.vit_spec().map_or(1, |s| s.patch_size)
            }
        }
    }

    /// Checks what serde cannot: the small CNN needs at least one block and
    /// positive channel counts; a ViT needs positive sizes, `image_size`
    /// divisible by `patch_size` and `heads` dividing `embed_dim`.
    pub fn validate(&self) -> Result<()> {
        if let Some(spec) = self.vit_spec() {
            return spec.validate();
        }
        if let EncoderConfig::SmallCnn { channels } = self {
            if channels.is_empty() {
                return Err(Error::Config(
                    "model.channels: the small CNN needs at least one block".into(),
                ));
            }
            if let Some(c) = channels.iter().find(|&&c| c <= 0) {
                return Err(Error::Config(format!(
                    "model.channels: channel counts must be positive, got {c}"
                )));
            }
        }
        Ok(())
    }
}

/// Builds the encoder `cfg` describes under `p`, for images with `in_channels`
/// channels. The variables are created on `p`'s device, initialised like
/// torchvision (Kaiming-normal fan-out convolutions, batch norm weight 1 and
/// bias 0, momentum 0.1) or, for the ViTs, like timm (learned `pos_embed`).
///
/// # Panics
/// If `cfg` fails [`EncoderConfig::validate`] or `in_channels < 1`; callers
/// that read configs from users validate first.
pub fn build_encoder(p: &nn::Path, cfg: &EncoderConfig, in_channels: i64) -> Box<dyn Encoder> {
    if let Err(e) = cfg.validate() {
        panic!("build_encoder: {e}");
    }
    assert!(
        in_channels >= 1,
        "build_encoder: in_channels must be at least 1, got {in_channels}"
    );
    match cfg {
        EncoderConfig::SmallCnn { channels } => Box::new(small_cnn(p, channels, in_channels)),
        EncoderConfig::Resnet18 { stem } => Box::new(resnet18(p, *stem, in_channels)),
        EncoderConfig::Resnet50 { stem } => Box::new(resnet50(p, *stem, in_channels)),
        EncoderConfig::VitTiny(_) | EncoderConfig::VitSmall(_) => Box::new(Vit::new(
            p,
            cfg.vit_spec().expect("a ViT config has a spec"),
            in_channels,
            PosEmbedInit::Learned,
        )),
    }
}

/// torchvision's convolution init: `kaiming_normal_(mode="fan_out", nonlinearity="relu")`.
const CONV_INIT: Init = Init::Kaiming {
    dist: NormalOrUniform::Normal,
    fan: FanInOut::FanOut,
    non_linearity: NonLinearity::ReLU,
};

/// A bias-free `k`x`k` convolution with torchvision's init (leaf `weight`).
pub(crate) fn conv(
    p: nn::Path,
    c_in: i64,
    c_out: i64,
    k: i64,
    stride: i64,
    padding: i64,
) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding,
        bias: false,
        ws_init: CONV_INIT,
        ..Default::default()
    };
    nn::conv2d(p, c_in, c_out, k, cfg)
}

/// PyTorch's `BatchNorm2d(c)`: eps 1e-5, momentum 0.1, weight 1, bias 0
/// (leaves `weight`, `bias`, `running_mean`, `running_var`).
pub(crate) fn batch_norm(p: nn::Path, c: i64) -> BatchNorm {
    let cfg = nn::BatchNormConfig {
        eps: 1e-5,
        momentum: 0.1,
        ws_init: Init::Const(1.),
        bs_init: Init::Const(0.),
        ..Default::default()
    };
    batch_norm2d(p, c, cfg)
}

/// Global average pool to `[batch, channels]`, as torchvision's
/// `AdaptiveAvgPool2d((1, 1))` + `flatten(1)`.
pub(crate) fn global_avg_pool(xs: &tch::Tensor) -> tch::Tensor {
    xs.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
}

#[cfg(test)]
pub(crate) mod tests;
