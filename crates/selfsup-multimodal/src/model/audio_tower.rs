//! The audio tower: selfsup-audio's wav2vec 2.0 encoder without its
//! pre-training parts (no quantizer, no masked-frame embedding): the
//! convolutional feature encoder, the feature projection and the
//! transformer, under `audio_model.` with transformers' `Wav2Vec2Model`
//! names below it (`audio_model.feature_extractor.conv_layers.0.conv.weight`,
//! ...), pooled by the mean of the last hidden state over the valid frames.
//! It may start from a selfsup-audio export ([`load_wav2vec2_export`]).
//!
//! [`AudioTowerConfig`] (`[model.audio]`, tagged by `kind`) chooses between
//! it (`kind = "wav2vec2"`, the default) and the log-mel tower
//! ([`crate::model::logmel_tower`], `kind = "log_mel"`); [`SpeechTower`] is
//! the one audio [`Tower`] speech-text CLIP is written over.
use crate::model::logmel_tower::{LogMelConfig, LogMelTower};
use crate::tower::Tower;
use selfsup_audio::batch::attention_mask;
use selfsup_audio::model::{FeatureEncoder, FeatureProjection, Transformer, Wav2Vec2Config};
use selfsup_core::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize};
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

/// `[model.audio]`: which audio tower, tagged by `kind`; the keys of the
/// other kind are refused.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind")]
pub enum AudioTowerConfig {
    /// selfsup-audio's wav2vec 2.0 sizes (the encoder only).
    #[serde(rename = "wav2vec2")]
    Wav2Vec2(Wav2Vec2Config),
    /// Log-mel frames and a conv stack ([`LogMelConfig`]).
    #[serde(rename = "log_mel")]
    LogMel(LogMelConfig),
}

impl Default for AudioTowerConfig {
    fn default() -> Self {
        AudioTowerConfig::Wav2Vec2(Wav2Vec2Config::default())
    }
}

impl<'de> Deserialize<'de> for AudioTowerConfig {
    /// `kind` absent: `"wav2vec2"` (configs written before the log-mel tower).
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut table = toml::Table::deserialize(d)?;
        let kind = match table.remove("kind") {
            None => "wav2vec2".to_string(),
            Some(toml::Value::String(k)) => k,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "[model.audio] kind = {other}: give \"wav2vec2\" or \"log_mel\""
                )))
            }
        };
        let rest = toml::Value::Table(table);
        let why = |e: toml::de::Error| {
            D::Error::custom(format!(
                "[model.audio] (kind = \"{kind}\"): {}",
                e.message()
            ))
        };
        match kind.as_str() {
            "wav2vec2" => rest.clone().try_into().map(Self::Wav2Vec2).map_err(why),
            "log_mel" => rest.clone().try_into().map(Self::LogMel).map_err(why),
            other => Err(D::Error::custom(format!(
                "[model.audio] kind = \"{other}\": give \"wav2vec2\" or \"log_mel\""
            ))),
        }
    }
}

impl AudioTowerConfig {
    /// Refuses sizes the tower cannot be built from, naming the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        match self {
            AudioTowerConfig::Wav2Vec2(c) => c
                .validate()
                .map_err(|e| e.replacen("[model]", "[model.audio]", 1)),
            AudioTowerConfig::LogMel(c) => c.validate(),
        }
    }

    /// Samples a clip needs for one feature frame.
    pub fn receptive_field(&self) -> i64 {
        match self {
            AudioTowerConfig::Wav2Vec2(c) => c.receptive_field(),
            AudioTowerConfig::LogMel(c) => c.receptive_field(),
        }
    }

    /// What the tower is, in words.
    pub fn describe(&self) -> &'static str {
        match self {
            AudioTowerConfig::Wav2Vec2(_) => "wav2vec 2.0 encoder",
            AudioTowerConfig::LogMel(_) => "log-mel conv encoder",
        }
    }
}

/// The audio tower of a speech-text model: either kind.
pub enum SpeechTower {
    Wav2Vec2(Box<AudioTower>),
    LogMel(LogMelTower),
}

impl SpeechTower {
    /// Builds the tower `cfg` describes under `root / audio_model`.
    pub fn new(root: &nn::Path, cfg: &AudioTowerConfig) -> Result<Self> {
        Ok(match cfg {
            AudioTowerConfig::Wav2Vec2(c) => {
                SpeechTower::Wav2Vec2(Box::new(AudioTower::new(root, c)?))
            }
            AudioTowerConfig::LogMel(c) => SpeechTower::LogMel(LogMelTower::new(root, c)?),
        })
    }
}

impl Tower for SpeechTower {
    const INPUTS: usize = 2;
    const PROJECTION: &'static str = "audio_projection";

    fn out_dim(&self) -> i64 {
        match self {
            SpeechTower::Wav2Vec2(t) => t.out_dim(),
            SpeechTower::LogMel(t) => t.out_dim(),
        }
    }

    fn forward(&self, inputs: &[Tensor], train: bool) -> Tensor {
        match self {
            SpeechTower::Wav2Vec2(t) => t.forward(inputs, train),
            SpeechTower::LogMel(t) => t.forward(inputs, train),
        }
    }
}

/// Var-store prefix of the audio tower.
pub const AUDIO_PREFIX: &str = "audio_model";

/// wav2vec 2.0's encoder with mean pooling.
pub struct AudioTower {
    cfg: Wav2Vec2Config,
    features: FeatureEncoder,
    projection: FeatureProjection,
    encoder: Transformer,
}

impl AudioTower {
    /// Builds the encoder `cfg` describes under `root / audio_model`
    /// (refusing a config the model cannot be built from, naming the key).
    pub fn new(root: &nn::Path, cfg: &Wav2Vec2Config) -> Result<Self> {
        cfg.validate()
            .map_err(|e| Error::Config(e.replacen("[model]", "[model.audio]", 1)))?;
        let p = root / AUDIO_PREFIX;
        Ok(Self {
            cfg: cfg.clone(),
            features: FeatureEncoder::new(&(&p / "feature_extractor"), cfg),
            projection: FeatureProjection::new(&(&p / "feature_projection"), cfg),
            encoder: Transformer::new(&(&p / "encoder"), cfg),
        })
    }

    /// Samples one feature frame sees: a shorter clip has no frame.
    pub fn receptive_field(&self) -> i64 {
        self.cfg.receptive_field()
    }

    /// Mean of the last hidden state over the valid frames of `[B, L]`
    /// waveforms with `lengths` `[B]` valid samples each.
    pub fn pooled(&self, wave: &Tensor, lengths: &Tensor, train: bool) -> Tensor {
        let conv = self.features.forward(wave);
        let t = conv.size().get(2).copied().unwrap_or(0);
        let ls = Vec::<i64>::try_from(lengths.to_device(Device::Cpu).to_kind(Kind::Int64))
            .unwrap_or_default();
        let frames: Vec<i64> = ls.iter().map(|&l| self.cfg.frames(l).min(t)).collect();
        let valid = attention_mask(&Tensor::from_slice(&frames).to_device(wave.device()), t);
        let (hidden, _) = self.projection.forward_t(&conv.transpose(1, 2), train);
        let all_valid = valid.all().int64_value(&[]) != 0;
        let states = self
            .encoder
            .forward_t(&hidden, (!all_valid).then_some(&valid), train);
        let Some(last) = states.last() else {
            return Tensor::zeros(
                [ls.len() as i64, self.cfg.hidden_size],
                (Kind::Float, wave.device()),
            );
        };
        let m = valid.to_kind(last.kind()).unsqueeze(-1);
        (last * &m).sum_dim_intlist(1, false, last.kind())
            / m.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0)
    }
}

impl Tower for AudioTower {
    const INPUTS: usize = 2;
    const PROJECTION: &'static str = "audio_projection";

    fn out_dim(&self) -> i64 {
        self.cfg.hidden_size
    }

    /// Waveforms `[B, L]` and their lengths `[B]` (waveforms alone: every
    /// sample valid).
    fn forward(&self, inputs: &[Tensor], train: bool) -> Tensor {
        match inputs {
            [wave, lengths, ..] => self.pooled(wave, lengths, train),
            [wave] => {
                let size = wave.size();
                let (b, l) = (
                    size.first().copied().unwrap_or(0),
                    size.get(1).copied().unwrap_or(0),
                );
                let lengths = Tensor::full([b], l, (Kind::Int64, wave.device()));
                self.pooled(wave, &lengths, train)
            }
            [] => Tensor::zeros([0, self.cfg.hidden_size], (Kind::Float, Device::Cpu)),
        }
    }
}

/// Loads a selfsup-audio export (`model.safetensors`, transformers'
/// `Wav2Vec2ForPreTraining` names) into the audio tower of `vs`: every
/// `audio_model.X` variable from the file's `wav2vec2.X`, shapes checked;
/// the file's pre-training parts (quantizer, `project_*`,
/// `masked_spec_embed`) are not used. The error names the file and lists
/// what does not fit.
pub fn load_wav2vec2_export(vs: &mut nn::VarStore, file: &Path) -> Result<()> {
    let loaded = selfsup_core::tensor_io::load(file)?.tensors;
    let prefix = format!("{AUDIO_PREFIX}.");
    let vars = vs.variables();
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    let mut pairs = Vec::new();
    for (name, var) in &vars {
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let key = format!("wav2vec2.{rest}");
        match loaded.get(&key) {
            None => missing.push(key),
            Some(t) if t.size() != var.size() => wrong.push(format!(
                "{key}: file {:?}, model {:?}",
                t.size(),
                var.size()
            )),
            Some(t) => pairs.push((var.shallow_clone(), t)),
        }
    }
    if !missing.is_empty() || !wrong.is_empty() || pairs.is_empty() {
        return Err(Error::Checkpoint {
            path: file.to_path_buf(),
            reason: format!(
                "not a selfsup-audio wav2vec 2.0 export of the [model.audio] architecture \
                 (missing {missing:?}; other shapes {wrong:?}): export one with `selfsup export` \
                 of an audio checkpoint, or give [model.audio] its config.json's sizes"
            ),
        });
    }
    tch::no_grad(|| {
        for (mut v, t) in pairs {
            v.f_copy_(&t.to_kind(v.kind()))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Wav2Vec2Config {
        Wav2Vec2Config {
            conv_dim: vec![8, 8],
            conv_kernel: vec![10, 3],
            conv_stride: vec![5, 2],
            hidden_size: 16,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            intermediate_size: 32,
            num_conv_pos_embeddings: 4,
            num_conv_pos_embedding_groups: 2,
            hidden_dropout: 0.0,
            attention_dropout: 0.0,
            ..Wav2Vec2Config::default()
        }
    }

    /// The waveform alone is the whole clip; a clip's pool does not depend
    /// on the other clips of its batch when it is not padded (the first
    /// conv layer's group norm sees the padding of a padded one, so
    /// evaluation embeds clips one at a time); the lengths cut the pool.
    #[test]
    fn the_pool_reads_the_valid_frames_of_each_clip() {
        let _rng = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let tower = AudioTower::new(&vs.root(), &tiny()).unwrap();
        assert_eq!(tower.receptive_field(), 20);
        let short = Tensor::randn([1, 300], (Kind::Float, Device::Cpu));
        let long = Tensor::randn([1, 900], (Kind::Float, Device::Cpu));
        let alone = tower.forward(&[long.shallow_clone()], false);
        let full = tower.forward(
            &[long.shallow_clone(), Tensor::from_slice(&[900i64])],
            false,
        );
        assert!(alone.equal(&full));
        let padded = Tensor::cat(
            &[short, Tensor::zeros([1, 600], (Kind::Float, Device::Cpu))],
            1,
        );
        let batch = Tensor::cat(&[padded, long], 0);
        let both = tower.forward(
            &[batch.shallow_clone(), Tensor::from_slice(&[300i64, 900])],
            false,
        );
        assert_eq!(both.size(), [2, 16]);
        let diff = (both.get(1) - alone.get(0)).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "{diff}");
        let all = tower.forward(&[batch, Tensor::from_slice(&[900i64, 900])], false);
        let diff = (both.get(0) - all.get(0)).abs().max().double_value(&[]);
        assert!(diff > 1e-3, "the padded frames must leave the pool: {diff}");
    }

    /// An export's `wav2vec2.*` weights land in `audio_model.*`; a file of
    /// another architecture is refused naming it.
    #[test]
    fn a_wav2vec2_export_initialises_the_tower() {
        let _rng = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.safetensors");
        let src = nn::VarStore::new(Device::Cpu);
        let _w = selfsup_audio::model::Wav2Vec2::new(&src.root(), &tiny());
        selfsup_core::tensor_io::save_pytorch_weights(&file, &src, |_| true).unwrap();
        let mut vs = nn::VarStore::new(Device::Cpu);
        let _t = AudioTower::new(&vs.root(), &tiny()).unwrap();
        load_wav2vec2_export(&mut vs, &file).unwrap();
        let want = &src.variables()["wav2vec2.encoder.layers.0.attention.q_proj.weight"];
        let got = &vs.variables()["audio_model.encoder.layers.0.attention.q_proj.weight"];
        assert!(want.equal(got));
        let mut other = nn::VarStore::new(Device::Cpu);
        let _t = AudioTower::new(
            &other.root(),
            &Wav2Vec2Config {
                hidden_size: 32,
                ..tiny()
            },
        )
        .unwrap();
        let err = load_wav2vec2_export(&mut other, &file)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model.safetensors") && err.contains("[model.audio]"),
            "{err}"
        );
    }
}
