//! The `[model]` table: transformers' `Wav2Vec2Config` field names, so the
//! export's `config.json` is this struct plus the fixed architecture fields
//! (post-norm transformer, group-norm first conv layer, no conv bias, GELU).
use serde::{Deserialize, Serialize};

/// Architecture and pre-training hyper-parameters of wav2vec 2.0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Wav2Vec2Config {
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
    /// Refuses configurations the model cannot be built from.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.conv_dim.len();
        if n == 0 || self.conv_kernel.len() != n || self.conv_stride.len() != n {
            return Err(format!(
                "[model] conv_dim, conv_kernel and conv_stride must have the same non-zero length (got {}, {}, {})",
                n,
                self.conv_kernel.len(),
                self.conv_stride.len()
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
        if !(0.0..=1.0).contains(&(self.mask_time_prob / self.mask_time_length.max(1) as f64))
            || self.mask_time_length < 1
        {
            return Err(
                "[model] mask_time_length must be >= 1 and mask_time_prob in [0, mask_time_length]"
                    .into(),
            );
        }
        if self.num_negatives < 1 || self.contrastive_logits_temperature <= 0.0 {
            return Err(
                "[model] num_negatives must be >= 1 and contrastive_logits_temperature > 0".into(),
            );
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
            "feat_extract_norm": "group",
            "feat_extract_activation": "gelu",
            "hidden_act": "gelu",
            "conv_bias": false,
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
}
