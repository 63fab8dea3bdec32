//! Embedding audio files with a saved wav2vec 2.0: an export folder
//! (`config.json` + `model.safetensors`, see [`crate::export`]) or a run's
//! `checkpoint.safetensors`.
//!
//! Every `.wav` / `.ogg` / `.oga` file directly in the folder (sorted by
//! name; other files and sub-folders are skipped and counted) is decoded to
//! mono, resampled to 16 kHz, normalised to zero mean and unit variance (the
//! export's `preprocessor_config.json`: `do_normalize`), and run through the
//! model alone (no padding, as for the probes in [`crate::eval`]). Its
//! embedding is the last transformer layer's hidden states averaged over
//! time: `Wav2Vec2Model(...).last_hidden_state.mean(1)` in transformers. A
//! file that cannot be decoded, or is shorter than the 400-sample receptive
//! field, is an error naming it.
use crate::dataset::load_clip;
use crate::methods::{Wav2Vec2Method, Wav2Vec2MethodConfig};
use crate::model::Wav2Vec2Config;
use crate::normalize::zero_mean_unit_var;
use crate::pretrain::{AudioMethodConfig, AudioRunConfig};
use crate::read::{is_audio, ReadLimits};
use selfsup_core::embeddings::{file_id, list_folder, load_strict, read_export_config, Embedded};
use selfsup_core::method::Method;
use selfsup_core::tensor_io;
use selfsup_core::{Error, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The largest model an export may describe (a corrupt `config.json` must
/// not allocate without bound): parameters, estimated from the widths.
pub const MAX_PARAMETERS: i64 = 1_000_000_000;

/// A saved wav2vec 2.0, ready to embed audio files.
pub struct AudioEmbedder {
    method: Wav2Vec2Method,
    device: Device,
}

/// Fixed architecture fields of the export's `config.json` that this model
/// implements, with the only value it takes.
fn fixed_fields() -> serde_json::Map<String, serde_json::Value> {
    let all = Wav2Vec2Config::default().hf_config_json();
    let own = serde_json::to_value(Wav2Vec2Config::default()).unwrap_or_default();
    all.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| own.get(k.as_str()).is_none())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Refuses a model larger than [`MAX_PARAMETERS`] (estimated).
pub(crate) fn check_size(c: &Wav2Vec2Config) -> std::result::Result<(), String> {
    let (h, i) = (c.hidden_size as i128, c.intermediate_size as i128);
    let conv: i128 = c
        .conv_dim
        .iter()
        .zip(&c.conv_kernel)
        .fold((1i128, 0i128), |(prev, acc), (&d, &k)| {
            (d as i128, acc + prev * d as i128 * k as i128)
        })
        .1;
    let groups = c.num_conv_pos_embedding_groups.max(1) as i128;
    let total = conv
        + c.num_hidden_layers as i128 * (4 * h * h + 2 * h * i)
        + h * h * c.num_conv_pos_embeddings as i128 / groups
        + c.num_codevector_groups as i128
            * c.num_codevectors_per_group as i128
            * c.codevector_dim as i128
        + c.conv_dim.len() as i128
        + h * c.proj_codevector_dim as i128;
    if c.conv_dim.len() > 64 || total > MAX_PARAMETERS as i128 {
        return Err(format!(
            "a model of about {total} parameters and {} conv layers: at most {MAX_PARAMETERS} and 64",
            c.conv_dim.len()
        ));
    }
    Ok(())
}

impl AudioEmbedder {
    /// Loads an export folder: `config.json` (transformers'
    /// `Wav2Vec2Config`) and `model.safetensors` (every tensor of the model,
    /// nothing else).
    pub fn load_export(dir: &Path, device: Device) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let bad = |what: String| Error::Data(format!("{}: {what}", cfg_path.display()));
        let mut v = read_export_config(dir)?;
        if v.get("model_type").and_then(|m| m.as_str()) != Some("wav2vec2") {
            return Err(bad(
                "model_type is not \"wav2vec2\": not an audio (wav2vec 2.0) export".into(),
            ));
        }
        let obj = v
            .as_object_mut()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        for (key, want) in fixed_fields() {
            let got = obj.remove(&key);
            let architectural = matches!(
                key.as_str(),
                "feat_extract_norm"
                    | "feat_extract_activation"
                    | "hidden_act"
                    | "conv_bias"
                    | "do_stable_layer_norm"
            );
            if architectural && got.as_ref().is_some_and(|g| *g != want) {
                return Err(bad(format!(
                    "{key} = {}: this model implements {key} = {want} only",
                    got.unwrap_or_default()
                )));
            }
        }
        let cfg: Wav2Vec2Config = serde_json::from_value(v).map_err(|e| bad(e.to_string()))?;
        cfg.validate().map_err(&bad)?;
        check_size(&cfg).map_err(&bad)?;
        let method = Wav2Vec2Method::new(&cfg, &Wav2Vec2MethodConfig::default(), 0, device);
        let file = dir.join("model.safetensors");
        load_strict(method.var_store(), &tensor_io::load(&file)?.tensors, &file)?;
        Ok(Self { method, device })
    }

    /// Loads a run's `checkpoint.safetensors` (its config is inside).
    pub fn load_checkpoint(path: &Path, device: Device) -> Result<Self> {
        let meta = selfsup_core::checkpoint::read_meta(path)?;
        let cfg = AudioRunConfig::from_toml(&meta.config, path)?;
        check_size(&cfg.model).map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
        let AudioMethodConfig::Wav2vec2(m) = &cfg.method else {
            return Err(Error::Config(format!(
                "{}: a {} checkpoint; embedding audio files is implemented for wav2vec2 checkpoints",
                path.display(),
                cfg.method.name()
            )));
        };
        let method = Wav2Vec2Method::new(&cfg.model, m, 0, device);
        selfsup_core::checkpoint::restore_model(path, method.var_store(), method.name())?;
        Ok(Self { method, device })
    }

    /// Width of the embeddings.
    pub fn dim(&self) -> i64 {
        self.method.model.cfg.hidden_size
    }

    /// The embedding `[1, H]` of 16 kHz samples (normalised here).
    pub fn embed_samples(&self, samples: &[f32]) -> Tensor {
        let mut x = samples.to_vec();
        zero_mean_unit_var(&mut x);
        let wave = Tensor::from_slice(&x).view([1, -1]).to_device(self.device);
        let lengths = Tensor::from_slice(&[x.len() as i64]).to_device(self.device);
        let layers = self.method.pooled_layers(&wave, &lengths);
        layers
            .last()
            .map(|t| t.to_kind(Kind::Float).to_device(Device::Cpu))
            .unwrap_or_else(|| Tensor::zeros([1, self.dim()], (Kind::Float, Device::Cpu)))
    }

    /// Embeds every audio file directly in `dir` (see the module
    /// documentation); ids are the file names.
    pub fn embed_folder(&self, dir: &Path) -> Result<Embedded> {
        let (files, skipped) = list_folder(dir, is_audio)?;
        if files.is_empty() {
            return Err(Error::Data(format!(
                "{}: no .wav / .ogg / .oga file to embed ({} other entries)",
                dir.display(),
                skipped.len()
            )));
        }
        let limits = ReadLimits::default();
        let mut rows = Vec::with_capacity(files.len());
        for f in &files {
            let (samples, _) = load_clip(f, &limits)?;
            rows.push(self.embed_samples(&samples));
        }
        Ok(Embedded {
            ids: files.iter().map(|f| file_id(f)).collect(),
            embeddings: Tensor::cat(&rows, 0),
            skipped,
        })
    }
}
