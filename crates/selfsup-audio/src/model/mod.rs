//! wav2vec 2.0 with transformers' `Wav2Vec2ForPreTraining` variable names:
//! the var store *is* the export (`wav2vec2.feature_extractor.*`,
//! `wav2vec2.feature_projection.*`, `wav2vec2.masked_spec_embed`,
//! `wav2vec2.encoder.*`, `quantizer.*`, `project_hid`, `project_q`).
mod config;
mod cpc;
mod feature_encoder;
mod quantizer;
mod transformer;

pub use config::{FeatExtractNorm, Wav2Vec2Config};
pub use cpc::{CpcArch, CpcForward, CpcModel};
pub use feature_encoder::{FeatureEncoder, FeatureProjection};
pub use quantizer::{Quantized, Quantizer};
pub use transformer::{PosConvEmbed, Transformer};

use crate::batch::attention_mask;
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// What one forward pass of the encoder produced.
#[derive(Debug)]
pub struct Forward {
    /// `[B, C, T]` conv features before any normalisation (the feature penalty).
    pub conv_features: Tensor,
    /// `[B, T, C]` layer-normed features (the quantizer's input).
    pub extract_features: Tensor,
    /// Every hidden state (`num_hidden_layers + 1` tensors, `[B, T, H]`).
    pub hidden_states: Vec<Tensor>,
    /// `[B, T]` valid frames.
    pub valid: Tensor,
}

/// The whole pre-training model.
#[derive(Debug)]
pub struct Wav2Vec2 {
    pub cfg: Wav2Vec2Config,
    feature_extractor: FeatureEncoder,
    feature_projection: FeatureProjection,
    masked_spec_embed: Tensor,
    encoder: Transformer,
    pub quantizer: Quantizer,
    project_hid: nn::Linear,
    project_q: nn::Linear,
}

impl Wav2Vec2 {
    /// Builds the model under `p` (the var store root).
    pub fn new(p: &nn::Path, cfg: &Wav2Vec2Config) -> Self {
        let w = p / "wav2vec2";
        let lin = nn::LinearConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        Self {
            cfg: cfg.clone(),
            feature_extractor: FeatureEncoder::new(&(&w / "feature_extractor"), cfg),
            feature_projection: FeatureProjection::new(&(&w / "feature_projection"), cfg),
            masked_spec_embed: w.var(
                "masked_spec_embed",
                &[cfg.hidden_size],
                nn::Init::Uniform { lo: 0.0, up: 1.0 },
            ),
            encoder: Transformer::new(&(&w / "encoder"), cfg),
            quantizer: Quantizer::new(&(p / "quantizer"), cfg),
            project_hid: nn::linear(
                p / "project_hid",
                cfg.hidden_size,
                cfg.proj_codevector_dim,
                lin,
            ),
            project_q: nn::linear(
                p / "project_q",
                cfg.codevector_dim,
                cfg.proj_codevector_dim,
                lin,
            ),
        }
    }

    /// The valid frames `[B, T]` of inputs with `lengths` samples.
    pub fn frame_mask(&self, lengths: &Tensor, frames: i64) -> Tensor {
        let ls = Vec::<i64>::try_from(lengths.to_device(tch::Device::Cpu)).unwrap_or_default();
        let f: Vec<i64> = ls.iter().map(|&l| self.cfg.frames(l).min(frames)).collect();
        attention_mask(&Tensor::from_slice(&f).to_device(lengths.device()), frames)
    }

    /// Encodes `[B, L]` waveforms with `lengths` valid samples; `mask`
    /// (`[B, T]` bool) replaces those frames by `masked_spec_embed` before
    /// the transformer.
    pub fn forward_t(
        &self,
        wave: &Tensor,
        lengths: &Tensor,
        mask: Option<&Tensor>,
        train: bool,
    ) -> Forward {
        let conv_features = self.feature_extractor.forward(wave);
        let t = conv_features.size()[2];
        let valid = self.frame_mask(lengths, t);
        let feats = conv_features.transpose(1, 2);
        let (mut hidden, extract_features) = self.feature_projection.forward_t(&feats, train);
        if let Some(m) = mask {
            let embed = self
                .masked_spec_embed
                .to_kind(hidden.kind())
                .view([1, 1, -1]);
            hidden = hidden.where_self(&m.logical_not().unsqueeze(-1), &embed);
        }
        let all_valid = valid.all().int64_value(&[]) != 0;
        let hidden_states = self
            .encoder
            .forward_t(&hidden, (!all_valid).then_some(&valid), train);
        Forward {
            conv_features,
            extract_features,
            hidden_states,
            valid,
        }
    }

    /// `project_hid` of the last hidden state.
    pub fn project_hidden(&self, last: &Tensor) -> Tensor {
        self.project_hid.forward(last)
    }

    /// `project_q` of quantized vectors.
    pub fn project_quantized(&self, q: &Tensor) -> Tensor {
        self.project_q.forward(q)
    }

    /// Mean over valid frames of the feature encoder's (layer-normed) output
    /// and of every hidden state: `num_hidden_layers + 2` tensors `[B, C]`
    /// then `[B, H]` (inference mode).
    pub fn pooled_layers(&self, wave: &Tensor, lengths: &Tensor) -> Vec<Tensor> {
        let out = self.forward_t(wave, lengths, None, false);
        let m = out.valid.to_kind(Kind::Float).unsqueeze(-1);
        let count = m.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0);
        std::iter::once(&out.extract_features)
            .chain(&out.hidden_states)
            .map(|h| (h.to_kind(Kind::Float) * &m).sum_dim_intlist(1, false, Kind::Float) / &count)
            .collect()
    }
}
