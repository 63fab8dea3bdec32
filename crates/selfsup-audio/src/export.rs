//! Export in transformers' layout: `config.json` (a `Wav2Vec2Config` with
//! `architectures = ["Wav2Vec2ForPreTraining"]`), `model.safetensors` (the
//! var store, whose names are already transformers' names) and
//! `preprocessor_config.json` (a `Wav2Vec2FeatureExtractor` at 16 kHz with
//! normalisation). `Wav2Vec2ForPreTraining.from_pretrained(dir)` loads it
//! with no missing or unexpected keys, and `Wav2Vec2Model` loads the
//! `wav2vec2.` part (checked by `benchmarks/check_hf_wav2vec2_export.py`).
use crate::methods::{CpcMethod, Wav2Vec2Method};
use selfsup_core::method::Method;
use selfsup_core::tensor_io;
use selfsup_core::{Error, Result};
use std::path::Path;

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::Config(e.to_string()))?;
    tensor_io::write_atomic(path, text.as_bytes())
}

/// Writes the model into `dir`.
pub fn export_wav2vec2(method: &Wav2Vec2Method, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    tensor_io::save_pytorch_weights(&dir.join("model.safetensors"), method.var_store(), |_| true)?;
    write_json(&dir.join("config.json"), &method.model.cfg.hf_config_json())?;
    write_json(
        &dir.join("preprocessor_config.json"),
        &serde_json::json!({
            "feature_extractor_type": "Wav2Vec2FeatureExtractor",
            "feature_size": 1,
            "sampling_rate": 16000,
            "padding_value": 0.0,
            "padding_side": "right",
            "do_normalize": true,
            "return_attention_mask": false
        }),
    )
}

/// Writes a CPC network into `dir`: `model.safetensors` (the var store,
/// PyTorch's names for the same modules), `config.json` ([`crate::model::CpcArch`]
/// with `model_type = "cpc"`) and the same `preprocessor_config.json`
/// (16 kHz, zero mean and unit variance per clip). `benchmarks/cpc_reference.py`
/// loads it strictly into a PyTorch module.
pub fn export_cpc(method: &CpcMethod, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    tensor_io::save_pytorch_weights(&dir.join("model.safetensors"), method.var_store(), |_| true)?;
    write_json(&dir.join("config.json"), &method.model.arch.config_json())?;
    write_json(
        &dir.join("preprocessor_config.json"),
        &serde_json::json!({
            "feature_size": 1,
            "sampling_rate": 16000,
            "padding_value": 0.0,
            "do_normalize": true
        }),
    )
}

/// Loads an export's `model.safetensors` into `method` (same architecture);
/// a missing or misshapen tensor is an error naming it.
pub fn load_export<M: Method>(method: &mut M, dir: &Path) -> Result<()> {
    let path = dir.join("model.safetensors");
    let loaded = tensor_io::load(&path)?;
    let vars = method.var_store().variables();
    for (name, var) in vars {
        let t = loaded.tensors.get(&name).ok_or_else(|| Error::Checkpoint {
            path: path.clone(),
            reason: format!("no tensor {name}"),
        })?;
        if t.size() != var.size() {
            return Err(Error::Checkpoint {
                path: path.clone(),
                reason: format!(
                    "{name} has shape {:?}, the model {:?}",
                    t.size(),
                    var.size()
                ),
            });
        }
        tch::no_grad(|| var.shallow_clone().copy_(t));
    }
    Ok(())
}
