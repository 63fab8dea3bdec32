//! The CPC network (van den Oord et al. 2018, arXiv:1807.03748): the
//! strided conv encoder of wav2vec 2.0 ([`FeatureEncoder`]: raw waveform ->
//! one latent frame per 20 ms with the presets' strides), a layer norm over
//! each frame (`z_t`), a causal GRU context network (`c_t` summarises
//! `z_1 .. z_t`) and one linear predictor per future step
//! (`W_k c_t` predicts `z_{t+k}`, `k = 1 .. K`).
//!
//! Variable names (also the export's, and PyTorch's for the same modules):
//! `encoder.conv_layers.{i}.conv.weight` (and `.bias` with `conv_bias`),
//! `encoder.conv_layers.0.layer_norm.{weight,bias}` (`feat_extract_norm =
//! "group"`: a GroupNorm with one group per channel) or
//! `encoder.conv_layers.{i}.layer_norm.{weight,bias}` (`"layer"`: a
//! LayerNorm over each frame's channels), `feature_norm.{weight,bias}`,
//! `context.{weight_ih,weight_hh,bias_ih,bias_hh}_l{n}` (`torch.nn.GRU`,
//! `batch_first`), `predictors.{k-1}.{weight,bias}`.
use super::{FeatExtractNorm, FeatureEncoder, Wav2Vec2Config};
use crate::batch::attention_mask;
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, RNN};
use tch::{Device, Kind, Tensor};

/// The architecture of a CPC network: what `config.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpcArch {
    /// Normalisation of the conv encoder (`"group"`, the default of earlier
    /// exports, or `"layer"`).
    #[serde(default)]
    pub feat_extract_norm: FeatExtractNorm,
    /// A bias on every conv of the encoder (default `false`).
    #[serde(default)]
    pub conv_bias: bool,
    /// Channels of each conv layer of the encoder.
    pub conv_dim: Vec<i64>,
    pub conv_kernel: Vec<i64>,
    pub conv_stride: Vec<i64>,
    /// Epsilon of the frame layer norm.
    pub layer_norm_eps: f64,
    /// Width of the GRU's hidden state (`c_t`).
    pub context_dim: i64,
    /// Stacked GRU layers.
    pub context_layers: i64,
    /// `K`: future frames predicted from each context.
    pub prediction_steps: i64,
}

impl CpcArch {
    /// The encoder's conv layers as a [`Wav2Vec2Config`] (the other fields
    /// are unused by CPC).
    pub fn conv_config(&self) -> Wav2Vec2Config {
        Wav2Vec2Config {
            feat_extract_norm: self.feat_extract_norm,
            conv_bias: self.conv_bias,
            conv_dim: self.conv_dim.clone(),
            conv_kernel: self.conv_kernel.clone(),
            conv_stride: self.conv_stride.clone(),
            layer_norm_eps: self.layer_norm_eps,
            ..Wav2Vec2Config::default()
        }
    }

    /// Latent frames of `samples` input samples.
    pub fn frames(&self, samples: i64) -> i64 {
        self.conv_config().frames(samples)
    }

    /// Width of `z_t` (the last conv layer's channels).
    pub fn latent_dim(&self) -> i64 {
        self.conv_dim.last().copied().unwrap_or(1)
    }

    /// The fewest samples that give `prediction_steps + 1` frames (the
    /// shortest clip with one context and its farthest target), or `None`
    /// past an hour of audio.
    pub fn min_samples(&self) -> Option<i64> {
        let need = self.prediction_steps.saturating_add(1);
        let (mut lo, mut hi) = (1i64, 16_000 * 3600);
        if self.frames(hi) < need {
            return None;
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.frames(mid) >= need {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Some(lo)
    }

    /// `config.json`: this struct plus `model_type = "cpc"` and the fixed
    /// choices (GELU convs, GRU).
    pub fn config_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.insert("model_type".into(), "cpc".into());
            m.insert("architectures".into(), serde_json::json!(["CPC"]));
            m.insert("feat_extract_activation".into(), "gelu".into());
            m.insert("context_network".into(), "gru".into());
            m.insert("sampling_rate".into(), 16_000.into());
        }
        v
    }
}

/// What one forward pass produced.
#[derive(Debug)]
pub struct CpcForward {
    /// `[B, T, C]` layer-normed latent frames `z_t`.
    pub z: Tensor,
    /// `[B, T, H]` contexts `c_t` (the GRU's outputs).
    pub c: Tensor,
    /// `[B, T]` valid frames.
    pub valid: Tensor,
    /// Valid frames per row.
    pub frame_lens: Vec<usize>,
}

/// Encoder, context network and predictors.
#[derive(Debug)]
pub struct CpcModel {
    pub arch: CpcArch,
    encoder: FeatureEncoder,
    feature_norm: nn::LayerNorm,
    context: nn::GRU,
    predictors: Vec<nn::Linear>,
}

impl CpcModel {
    /// Builds the network under `p` (the var store root).
    pub fn new(p: &nn::Path, arch: &CpcArch) -> Self {
        let c = arch.latent_dim();
        let ln = nn::LayerNormConfig {
            eps: arch.layer_norm_eps,
            ..Default::default()
        };
        let gru = nn::RNNConfig {
            num_layers: arch.context_layers,
            batch_first: true,
            ..Default::default()
        };
        Self {
            arch: arch.clone(),
            encoder: FeatureEncoder::new(&(p / "encoder"), &arch.conv_config()),
            feature_norm: nn::layer_norm(p / "feature_norm", vec![c], ln),
            context: nn::gru(p / "context", c, arch.context_dim, gru),
            predictors: (0..arch.prediction_steps)
                .map(|k| {
                    nn::linear(
                        p / "predictors" / k,
                        arch.context_dim,
                        c,
                        Default::default(),
                    )
                })
                .collect(),
        }
    }

    /// Encodes `[B, L]` waveforms with `lengths` valid samples.
    ///
    /// With `feat_extract_norm = "group"` a padded row is encoded alone on
    /// its valid samples: the first conv layer's group norm takes its
    /// statistics over time, so zeros after
    /// the clip would shift every one of its frames, and a clip would then
    /// be encoded differently in a padded training batch than alone (as the
    /// probes read it). Its frames are zero-padded to the batch's `T` after
    /// the encoder; the GRU is causal, so that padding changes none of its
    /// valid contexts.
    pub fn forward(&self, wave: &Tensor, lengths: &Tensor) -> CpcForward {
        let (b, l) = (wave.size()[0], wave.size().get(1).copied().unwrap_or(0));
        let ls = Vec::<i64>::try_from(lengths.to_device(Device::Cpu)).unwrap_or_default();
        let padded = ls.len() as i64 == b && ls.iter().any(|&n| n < l);
        let conv = if padded && self.encoder.mixes_time() {
            let t = self.arch.frames(l);
            let rows: Vec<Tensor> = ls
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let row = wave.narrow(0, i as i64, 1);
                    let n = n.clamp(0, l);
                    let valid = self.arch.frames(n);
                    if valid < 1 {
                        let c = self.arch.latent_dim();
                        return Tensor::zeros([1, c, t], (wave.kind(), wave.device()));
                    }
                    let enc = self.encoder.forward(&row.narrow(1, 0, n));
                    enc.constant_pad_nd([0, t - valid])
                })
                .collect();
            Tensor::cat(&rows, 0)
        } else {
            self.encoder.forward(wave)
        };
        let t = conv.size()[2];
        let z = self.feature_norm.forward(&conv.transpose(1, 2));
        let (c, _) = self.context.seq(&z);
        let frame_lens: Vec<usize> = ls
            .iter()
            .map(|&l| self.arch.frames(l).clamp(0, t) as usize)
            .collect();
        let f: Vec<i64> = frame_lens.iter().map(|&n| n as i64).collect();
        let valid = attention_mask(&Tensor::from_slice(&f).to_device(wave.device()), t);
        CpcForward {
            z,
            c,
            valid,
            frame_lens,
        }
    }

    /// `W_k c` for every context: `K` tensors `[B, T, C]` (`k = 1 .. K`).
    pub fn predictions(&self, c: &Tensor) -> Vec<Tensor> {
        self.predictors.iter().map(|w| w.forward(c)).collect()
    }

    /// Mean over valid frames of `z` and of `c`, `[B, C]` and `[B, H]` (the
    /// probes summarise the same two layers by their frames' mean and
    /// spread, `eval::pool_frames`).
    pub fn pooled_layers(&self, wave: &Tensor, lengths: &Tensor) -> Vec<Tensor> {
        let out = self.forward(wave, lengths);
        let m = out.valid.to_kind(Kind::Float).unsqueeze(-1);
        let count = m.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0);
        [&out.z, &out.c]
            .iter()
            .map(|h| (h.to_kind(Kind::Float) * &m).sum_dim_intlist(1, false, Kind::Float) / &count)
            .collect()
    }
}
