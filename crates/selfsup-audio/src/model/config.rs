//! The `[model]` table: transformers' `Wav2Vec2Config` field names, so the
//! export's `config.json` is this struct plus the fixed architecture fields
//! (post-norm transformer, GELU).
use serde::{Deserialize, Serialize};

/// How the feature encoder's conv layers are normalised: transformers'
/// `feat_extract_norm`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatExtractNorm {
    /// wav2vec 2.0 BASE: a GroupNorm with one group per channel after the
    /// first conv only. Its statistics run over the time of one clip, so
    /// each channel comes out at unit energy whatever the clip's spectrum:
    /// which channels are loud over the clip is divided away.
    #[default]
    Group,
    /// wav2vec 2.0 LARGE-LV60: a LayerNorm over the channels of each frame
    /// after every conv. Each frame keeps the relative energy of its
    /// channels (its spectral shape); only its overall level is divided
    /// away.
    Layer,
}

/// The most distractors per masked frame (`num_negatives`).
pub const MAX_NEGATIVES: i64 = 10_000;

/// Architecture and pre-training hyper-parameters of wav2vec 2.0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Wav2Vec2Config {
    /// Normalisation of the conv feature encoder (`"group"` or `"layer"`).
    pub feat_extract_norm: FeatExtractNorm,
    /// A bias on every conv of the feature encoder (transformers'
    /// `conv_bias`; wav2vec 2.0 LARGE-LV60 sets it with the `"layer"` norm:
    /// without it a silent or padded frame is all zeros, and a layer norm
    /// over zeros multiplies its gradient by `1 / sqrt(eps)`).
    pub conv_bias: bool,
    pub conv_dim: Vec<i64>,
    pub conv_kernel: Vec<i64>,
    pub conv_stride: Vec<i64>,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    pub num_conv_pos_embeddings: i64,
    pub num_conv_pos_embedding_groups: i64,
    pub hidden_dropout: f64,
    pub attention_dropout: f64,
    pub activation_dropout: f64,
    pub feat_proj_dropout: f64,
    pub feat_quantizer_dropout: f64,
    pub layer_norm_eps: f64,
    /// transformers' `mask_time_prob` (0.65 = the paper's p = 0.065 per start).
    pub mask_time_prob: f64,
    pub mask_time_length: i64,
    pub mask_time_min_masks: i64,
    pub num_codevector_groups: i64,
    pub num_codevectors_per_group: i64,
    pub codevector_dim: i64,
    pub proj_codevector_dim: i64,
    pub num_negatives: i64,
    pub contrastive_logits_temperature: f64,
    pub diversity_loss_weight: f64,
}

impl Default for Wav2Vec2Config {
    /// The tiny CPU model.
    fn default() -> Self {
        Self {
            feat_extract_norm: FeatExtractNorm::Group,
            conv_bias: false,
            conv_dim: vec![64; 7],
            conv_kernel: vec![10, 3, 3, 3, 3, 2, 2],
            conv_stride: vec![5, 2, 2, 2, 2, 2, 2],
            hidden_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 512,
            num_conv_pos_embeddings: 32,
            num_conv_pos_embedding_groups: 4,
            hidden_dropout: 0.1,
            attention_dropout: 0.1,
            activation_dropout: 0.0,
            feat_proj_dropout: 0.0,
            feat_quantizer_dropout: 0.0,
            layer_norm_eps: 1e-5,
            mask_time_prob: 0.65,
            mask_time_length: 10,
            mask_time_min_masks: 2,
            num_codevector_groups: 2,
            num_codevectors_per_group: 64,
            codevector_dim: 64,
            proj_codevector_dim: 64,
            num_negatives: 50,
            contrastive_logits_temperature: 0.1,
            diversity_loss_weight: 0.1,
        }
    }
}

impl Wav2Vec2Config {
    /// Refuses configurations the model cannot be built from, naming the key
    /// and its range.
    pub fn validate(&self) -> Result<(), String> {
        use selfsup_core::trainer::{non_negative, positive};
        let n = self.conv_dim.len();
        if n == 0 || self.conv_kernel.len() != n || self.conv_stride.len() != n {
            return Err(format!(
                "[model] conv_dim, conv_kernel and conv_stride must have the same non-zero length (got {}, {}, {})",
                n,
                self.conv_kernel.len(),
                self.conv_stride.len()
            ));
        }
        for (key, values) in [
            ("conv_dim", &self.conv_dim),
            ("conv_kernel", &self.conv_kernel),
            ("conv_stride", &self.conv_stride),
        ] {
            if let Some(v) = values.iter().find(|&&v| v < 1) {
                return Err(format!(
                    "[model] {key} holds {v}: every entry must be at least 1"
                ));
            }
        }
        for (key, v, min) in [
            ("hidden_size", self.hidden_size, 1),
            ("num_hidden_layers", self.num_hidden_layers, 1),
            ("num_attention_heads", self.num_attention_heads, 1),
            ("intermediate_size", self.intermediate_size, 1),
            ("num_conv_pos_embeddings", self.num_conv_pos_embeddings, 1),
            (
                "num_conv_pos_embedding_groups",
                self.num_conv_pos_embedding_groups,
                1,
            ),
            ("mask_time_length", self.mask_time_length, 1),
            ("mask_time_min_masks", self.mask_time_min_masks, 0),
            ("num_codevector_groups", self.num_codevector_groups, 1),
            (
                "num_codevectors_per_group",
                self.num_codevectors_per_group,
                2,
            ),
            ("codevector_dim", self.codevector_dim, 1),
            ("proj_codevector_dim", self.proj_codevector_dim, 1),
            ("num_negatives", self.num_negatives, 1),
        ] {
            if v < min {
                return Err(format!("[model] {key} = {v}: must be at least {min}"));
            }
        }
        for (key, v) in [
            ("hidden_dropout", self.hidden_dropout),
            ("attention_dropout", self.attention_dropout),
            ("activation_dropout", self.activation_dropout),
            ("feat_proj_dropout", self.feat_proj_dropout),
            ("feat_quantizer_dropout", self.feat_quantizer_dropout),
        ] {
            selfsup_core::trainer::unit_interval(&format!("[model] {key}"), v)?;
        }
        if self.num_negatives > MAX_NEGATIVES {
            return Err(format!(
                "[model] num_negatives = {}: at most {MAX_NEGATIVES} distractors per masked frame (the paper: 100)",
                self.num_negatives
            ));
        }
        positive("[model] layer_norm_eps", self.layer_norm_eps)?;
        positive(
            "[model] contrastive_logits_temperature",
            self.contrastive_logits_temperature,
        )?;
        non_negative("[model] diversity_loss_weight", self.diversity_loss_weight)?;
        if !(self.mask_time_prob.is_finite() && (0.0..=1.0).contains(&self.mask_time_prob)) {
            return Err(format!(
                "[model] mask_time_prob = {}: must be in [0, 1] (the fraction of frames masked)",
                self.mask_time_prob
            ));
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(format!(
                "[model] hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.hidden_size % self.num_conv_pos_embedding_groups != 0 {
            return Err(format!(
                "[model] hidden_size {} is not a multiple of num_conv_pos_embedding_groups {}",
                self.hidden_size, self.num_conv_pos_embedding_groups
            ));
        }
        if self.codevector_dim % self.num_codevector_groups != 0 {
            return Err(format!(
                "[model] codevector_dim {} is not a multiple of num_codevector_groups {}",
                self.codevector_dim, self.num_codevector_groups
            ));
        }
        Ok(())
    }

    /// Samples one feature frame sees (400 for the standard encoder).
    pub fn receptive_field(&self) -> i64 {
        let mut field = 1;
        let mut jump = 1;
        for (k, s) in self.conv_kernel.iter().zip(&self.conv_stride) {
            field += (k - 1) * jump;
            jump *= s;
        }
        field
    }

    /// Feature frames of `samples` input samples (transformers'
    /// `_get_feat_extract_output_lengths`).
    pub fn frames(&self, samples: i64) -> i64 {
        self.conv_kernel
            .iter()
            .zip(&self.conv_stride)
            .fold(
                samples,
                |len, (k, s)| {
                    if len < *k {
                        0
                    } else {
                        (len - k) / s + 1
                    }
                },
            )
    }

    /// transformers' `config.json` for `Wav2Vec2ForPreTraining`.
    pub fn hf_config_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        let fixed = serde_json::json!({
            "architectures": ["Wav2Vec2ForPreTraining"],
            "model_type": "wav2vec2",
            "feat_extract_activation": "gelu",
            "hidden_act": "gelu",
            "do_stable_layer_norm": false,
            "num_feat_extract_layers": self.conv_dim.len(),
            "feat_extract_dropout": 0.0,
            "final_dropout": 0.0,
            "layerdrop": 0.0,
            "apply_spec_augment": true,
            "mask_feature_prob": 0.0,
            "initializer_range": 0.02,
            "vocab_size": 32,
            "pad_token_id": 0,
            "torch_dtype": "float32",
        });
        if let (Some(dst), Some(src)) = (v.as_object_mut(), fixed.as_object()) {
            for (k, x) in src {
                dst.insert(k.clone(), x.clone());
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_encoder_sees_400_samples_and_strides_320() {
        let c = Wav2Vec2Config::default();
        assert_eq!(c.receptive_field(), 400);
        assert_eq!(c.frames(400), 1);
        assert_eq!(c.frames(399), 0);
        assert_eq!(c.frames(16_000), 49);
        assert_eq!(c.frames(720), 2);
    }

    #[test]
    fn impossible_sizes_probabilities_and_temperatures_name_the_key() {
        let ok = Wav2Vec2Config::default();
        assert!(ok.validate().is_ok());
        let cases: Vec<(Wav2Vec2Config, &str)> = vec![
            (
                Wav2Vec2Config {
                    num_attention_heads: 0,
                    ..ok.clone()
                },
                "num_attention_heads = 0",
            ),
            (
                Wav2Vec2Config {
                    num_conv_pos_embedding_groups: 0,
                    ..ok.clone()
                },
                "num_conv_pos_embedding_groups = 0",
            ),
            (
                Wav2Vec2Config {
                    num_codevector_groups: 0,
                    ..ok.clone()
                },
                "num_codevector_groups = 0",
            ),
            (
                Wav2Vec2Config {
                    num_codevectors_per_group: 1,
                    ..ok.clone()
                },
                "num_codevectors_per_group = 1",
            ),
            (
                Wav2Vec2Config {
                    num_negatives: 0,
                    ..ok.clone()
                },
                "num_negatives = 0",
            ),
            (
                Wav2Vec2Config {
                    num_negatives: 1 << 40,
                    ..ok.clone()
                },
                "at most 10000",
            ),
            (
                Wav2Vec2Config {
                    mask_time_prob: 1.5,
                    ..ok.clone()
                },
                "mask_time_prob = 1.5",
            ),
            (
                Wav2Vec2Config {
                    mask_time_prob: f64::NAN,
                    ..ok.clone()
                },
                "mask_time_prob = NaN",
            ),
            (
                Wav2Vec2Config {
                    contrastive_logits_temperature: 0.0,
                    ..ok.clone()
                },
                "contrastive_logits_temperature = 0",
            ),
            (
                Wav2Vec2Config {
                    hidden_dropout: 1.0,
                    ..ok.clone()
                },
                "hidden_dropout = 1",
            ),
            (
                Wav2Vec2Config {
                    conv_stride: vec![5, 2, 2, 0, 2, 2, 2],
                    ..ok.clone()
                },
                "conv_stride holds 0",
            ),
            (
                Wav2Vec2Config {
                    layer_norm_eps: -1.0,
                    ..ok.clone()
                },
                "layer_norm_eps = -1",
            ),
        ];
        for (cfg, want) in cases {
            let err = cfg.validate().unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
        }
    }
}
