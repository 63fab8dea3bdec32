//! Export: the embeddings as `embeddings.safetensors` and `embeddings.npy`
//! (float32 `[N, D]`, rows in the dataset's node / graph order), the
//! encoder's weights as `encoder.safetensors` (PyG's variable names, the
//! `encoder.` prefix dropped), and `config.json` (method, encoder config).
//! `labels.npy` (int64) or `targets.npy` (float64) when the dataset has them.
use selfsup_core::tensor_io;
use selfsup_core::{Error, Result};
use std::path::Path;
use tch::{nn, Kind, Tensor};

/// Writes a `.npy` (format 1.0) of a float32, float64 or int64 tensor.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    let t = t.to_device(tch::Device::Cpu).contiguous();
    let (descr, bytes): (&str, Vec<u8>) = match t.kind() {
        Kind::Float => (
            "<f4",
            Vec::<f32>::try_from(t.view([-1]))?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        Kind::Double => (
            "<f8",
            Vec::<f64>::try_from(t.view([-1]))?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        Kind::Int64 => (
            "<i8",
            Vec::<i64>::try_from(t.view([-1]))?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        k => {
            return Err(Error::Config(format!(
                "npy export of {k:?} tensors is not supported"
            )))
        }
    };
    let shape = t.size().iter().map(|d| format!("{d},")).collect::<String>();
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({shape}), }}");
    // Magic (6) + version (2) + length (2) + header + '\n', padded to 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&bytes);
    tensor_io::write_atomic(path, &out)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_data_follows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        write_npy(
            &p,
            &Tensor::from_slice(&[1.5f32, 2.0, 3.0, 4.0, 5.0, 6.0]).view([2, 3]),
        )
        .unwrap();
        let b = std::fs::read(&p).unwrap();
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + hl]).unwrap();
        assert!(
            header.contains("'shape': (2,3,)") && header.contains("<f4"),
            "{header}"
        );
        assert_eq!(&b[10 + hl..10 + hl + 4], &1.5f32.to_le_bytes());
        assert_eq!(b.len(), 10 + hl + 24);
    }
}
