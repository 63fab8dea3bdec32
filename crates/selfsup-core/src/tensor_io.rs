//! Reading and writing named tensors as safetensors, atomically.
//!
//! Checkpoints and exported weights both go through here: one file format,
//! readable by PyTorch (`safetensors.torch.load_file`) and by selfsup.
use crate::{Error, Result};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        _ => return None,
    })
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

/// Writes `path` through a temporary file in the same folder and a rename, so a
/// reader (or a crash) never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp: PathBuf = dir.join(tmp_name);
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Serialises named tensors (moved to the CPU, made contiguous) with string metadata.
pub fn to_safetensors_bytes(
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let mut raw: BTreeMap<&str, (Dtype, Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for (name, t) in tensors {
        let t = t.detach().to_device(tch::Device::Cpu).contiguous();
        let dtype = dtype_of(t.kind()).ok_or_else(|| {
            Error::Config(format!(
                "tensor {name}: kind {:?} cannot be saved",
                t.kind()
            ))
        })?;
        let numel = t.numel();
        let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.copy_data_u8(&mut bytes, numel);
        let shape = t.size().iter().map(|&d| d as usize).collect();
        if raw.insert(name, (dtype, shape, bytes)).is_some() {
            return Err(Error::Config(format!("tensor name {name} given twice")));
        }
    }
    let views = raw
        .iter()
        .map(|(name, (dtype, shape, bytes))| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.to_string(), v))
                .map_err(|e| Error::Config(format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, &metadata).map_err(|e| Error::Config(format!("safetensors: {e}")))
}

/// Writes named tensors and metadata to `path` atomically.
pub fn save(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let bytes = to_safetensors_bytes(tensors, metadata)?;
    write_atomic(path, &bytes)
}

/// Writes the variables of `vs` whose names pass `keep` as PyTorch reads
/// them from a safetensors export: float32 on the CPU, contiguous, sorted by
/// name, metadata `format = pt` (what transformers' loaders look for).
pub fn save_pytorch_weights(
    path: &Path,
    vs: &tch::nn::VarStore,
    keep: impl Fn(&str) -> bool,
) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| {
            let v = v
                .detach()
                .to_device(tch::Device::Cpu)
                .to_kind(tch::Kind::Float)
                .contiguous();
            (k, v)
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    save(path, &tensors, Some(meta))
}

/// Named tensors (on the CPU) and the metadata of a safetensors file.
#[derive(Debug)]
pub struct Loaded {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
}

/// Reads a safetensors file; a truncated or foreign file is an error naming it.
pub fn load(path: &Path) -> Result<Loaded> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |reason: String| Error::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("not a readable safetensors file ({e})")))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a readable safetensors file ({e})")))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let kind = kind_of(view.dtype()).ok_or_else(|| {
            bad(format!(
                "tensor {name}: unsupported dtype {:?}",
                view.dtype()
            ))
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        tensors.insert(name, Tensor::from_data_size(view.data(), &shape, kind));
    }
    Ok(Loaded {
        tensors,
        metadata: header.metadata().clone().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_values_kinds_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let a = Tensor::from_slice(&[1.5f32, -2.0, 3.25, 0.0]).reshape([2, 2]);
        let b = Tensor::from_slice(&[7i64, 9]);
        let meta = HashMap::from([("k".to_string(), "v".to_string())]);
        save(
            &path,
            &[
                ("a".into(), a.shallow_clone()),
                ("b".into(), b.shallow_clone()),
            ],
            Some(meta),
        )
        .unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.metadata["k"], "v");
        assert!(loaded.tensors["a"].equal(&a));
        assert!(loaded.tensors["b"].equal(&b));
        assert!(!dir.path().join("t.safetensors.tmp").exists());
    }

    #[test]
    fn truncated_file_is_a_named_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        save(
            &path,
            &[(
                "a".into(),
                Tensor::ones([8], (Kind::Float, tch::Device::Cpu)),
            )],
            None,
        )
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("t.safetensors"), "{err}");
    }
}
