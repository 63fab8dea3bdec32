//! The convolutional feature encoder (raw waveform -> one latent frame per
//! 20 ms) and the feature projection into the transformer's width, under
//! transformers' names: `feature_extractor.conv_layers.{i}.conv.weight`
//! (no bias), `conv_layers.0.layer_norm` (a GroupNorm with one group per
//! channel, `feat_extract_norm = "group"`), `feature_projection.{layer_norm,
//! projection}`.
use super::Wav2Vec2Config;
use tch::nn::{self, Module};
use tch::Tensor;

/// Seven (by default) 1-D convolutions with GELU.
#[derive(Debug)]
pub struct FeatureEncoder {
    convs: Vec<nn::Conv1D>,
    group_norm: nn::GroupNorm,
}

impl FeatureEncoder {
    pub fn new(p: &nn::Path, cfg: &Wav2Vec2Config) -> Self {
        let layers = p / "conv_layers";
        let mut convs = Vec::new();
        let mut in_dim = 1;
        for (i, ((&d, &k), &s)) in cfg
            .conv_dim
            .iter()
            .zip(&cfg.conv_kernel)
            .zip(&cfg.conv_stride)
            .enumerate()
        {
            let conv_cfg = nn::ConvConfig {
                stride: s,
                bias: false,
                ws_init: nn::init::DEFAULT_KAIMING_NORMAL,
                ..Default::default()
            };
            convs.push(nn::conv1d(&layers / i / "conv", in_dim, d, k, conv_cfg));
            in_dim = d;
        }
        let d0 = cfg.conv_dim[0];
        let group_norm = nn::group_norm(&layers / 0 / "layer_norm", d0, d0, Default::default());
        Self { convs, group_norm }
    }

    /// `[B, L]` waveforms -> `[B, C, T]` features.
    pub fn forward(&self, wave: &Tensor) -> Tensor {
        let mut x = wave.unsqueeze(1);
        for (i, conv) in self.convs.iter().enumerate() {
            x = conv.forward(&x);
            if i == 0 {
                x = self.group_norm.forward(&x);
            }
            x = x.gelu("none");
        }
        x
    }
}

/// Layer norm, linear projection to `hidden_size`, dropout.
#[derive(Debug)]
pub struct FeatureProjection {
    layer_norm: nn::LayerNorm,
    projection: nn::Linear,
    dropout: f64,
}

impl FeatureProjection {
    pub fn new(p: &nn::Path, cfg: &Wav2Vec2Config) -> Self {
        let c = *cfg.conv_dim.last().unwrap_or(&1);
        let ln = nn::LayerNormConfig {
            eps: cfg.layer_norm_eps,
            ..Default::default()
        };
        let bound = 1.0 / (c as f64).sqrt();
        let lin = nn::LinearConfig {
            ws_init: nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
            bs_init: Some(nn::Init::Uniform {
                lo: -bound,
                up: bound,
            }),
            bias: true,
        };
        Self {
            layer_norm: nn::layer_norm(p / "layer_norm", vec![c], ln),
            projection: nn::linear(p / "projection", c, cfg.hidden_size, lin),
            dropout: cfg.feat_proj_dropout,
        }
    }

    /// `[B, T, C]` features -> (`[B, T, H]` hidden states, the normalised
    /// features the quantizer reads).
    pub fn forward_t(&self, feats: &Tensor, train: bool) -> (Tensor, Tensor) {
        let normed = self.layer_norm.forward(feats);
        let hidden = self
            .projection
            .forward(&normed)
            .dropout(self.dropout, train);
        (hidden, normed)
    }
}
