//! Export: the embeddings as `embeddings.safetensors` and `embeddings.npy`
//! (float32 `[N, D]`, rows in the dataset's node / graph order), the
//! encoder's weights as `encoder.safetensors` (PyG's variable names, the
//! `encoder.` prefix dropped), and `config.json` (method, encoder config).
//! `labels.npy` (int64) or `targets.npy` (float64) when the dataset has them.
use selfsup_core::tensor_io;
use selfsup_core::{Error, Result};
use std::path::Path;
use tch::{nn, Kind, Tensor};

pub use selfsup_core::embeddings::write_npy;

/// Writes the export folder.
pub fn export(
    dir: &Path,
    embeddings: &Tensor,
    vs: &nn::VarStore,
    config_json: &serde_json::Value,
    labels: Option<&Tensor>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let emb = embeddings
        .to_device(tch::Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    tensor_io::save(
        &dir.join("embeddings.safetensors"),
        &[("embeddings".to_string(), emb.shallow_clone())],
        None,
    )?;
    write_npy(&dir.join("embeddings.npy"), &emb)?;
    let mut enc: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("encoder.")
                .map(|s| (s.to_string(), v.to_device(tch::Device::Cpu).contiguous()))
        })
        .collect();
    enc.sort_by(|a, b| a.0.cmp(&b.0));
    tensor_io::save(&dir.join("encoder.safetensors"), &enc, None)?;
    if let Some(l) = labels {
        let name = if l.kind() == Kind::Int64 {
            "labels.npy"
        } else {
            "targets.npy"
        };
        write_npy(&dir.join(name), l)?;
    }
    let text =
        serde_json::to_string_pretty(config_json).map_err(|e| Error::Config(e.to_string()))?;
    tensor_io::write_atomic(&dir.join("config.json"), text.as_bytes())
}
