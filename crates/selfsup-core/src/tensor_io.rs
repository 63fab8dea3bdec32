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
    let bytes = safetensors::serialize(views, &None)
        .map_err(|e| Error::Config(format!("safetensors: {e}")))?;
    match metadata {
        Some(m) => with_sorted_metadata(bytes, &m),
        None => Ok(bytes),
    }
}

/// Puts `metadata` into the header of safetensors `bytes` written without
/// any, as `__metadata__` with its keys sorted (safetensors itself writes a
/// `HashMap` in its random order, so the same tensors would not give the
/// same bytes twice). The layout is safetensors' own: `__metadata__` first,
/// the header padded with spaces to a multiple of 8 bytes.
fn with_sorted_metadata(bytes: Vec<u8>, metadata: &HashMap<String, String>) -> Result<Vec<u8>> {
    let broken = || Error::Config("safetensors: unexpected header layout".into());
    let n = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(broken)?;
    let end = n
        .checked_add(8)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(broken)?;
    let header = std::str::from_utf8(&bytes[8..end])
        .map_err(|_| broken())?
        .trim_end();
    let rest = header.strip_prefix('{').ok_or_else(broken)?;
    let sorted: BTreeMap<&String, &String> = metadata.iter().collect();
    let meta_json =
        serde_json::to_string(&sorted).map_err(|e| Error::Config(format!("metadata: {e}")))?;
    let sep = if rest.trim_start().starts_with('}') {
        ""
    } else {
        ","
    };
    let mut new_header = format!("{{\"__metadata__\":{meta_json}{sep}{rest}").into_bytes();
    new_header.resize(new_header.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + new_header.len() + bytes.len() - end);
    out.extend_from_slice(&(new_header.len() as u64).to_le_bytes());
    out.extend_from_slice(&new_header);
    out.extend_from_slice(&bytes[end..]);
    Ok(out)
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

/// The size of `path`, which must be a regular file: a device or a pipe
/// (`/dev/zero`) would be read without end.
fn regular_file(path: &Path) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            reason: "not a regular file".into(),
        });
    }
    Ok(meta.len())
}

/// The most header bytes [`read_metadata`] reads (safetensors' own limit).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Reads only the string metadata of a safetensors file: its header, at
/// most [`MAX_HEADER_BYTES`], not the tensors.
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    use std::io::Read;
    let bad = |reason: String| Error::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let len = regular_file(path)?;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|_| bad("not a readable safetensors file (shorter than 8 bytes)".into()))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER_BYTES || n > len.saturating_sub(8) {
        return Err(bad(format!(
            "not a readable safetensors file (header of {n} bytes in a file of {len}, \
             at most {MAX_HEADER_BYTES})"
        )));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let v: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("not a readable safetensors file (header: {e})")))?;
    let Some(meta) = v.get("__metadata__") else {
        return Ok(HashMap::new());
    };
    serde_json::from_value(meta.clone()).map_err(|e| {
        bad(format!(
            "not a readable safetensors file (__metadata__: {e})"
        ))
    })
}

/// Reads a safetensors file; a truncated or foreign file is an error naming it.
pub fn load(path: &Path) -> Result<Loaded> {
    let bad = |reason: String| Error::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    regular_file(path)?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
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
        let shape = view
            .shape()
            .iter()
            .map(|&d| i64::try_from(d))
            .collect::<std::result::Result<Vec<i64>, _>>()
            .map_err(|_| {
                bad(format!(
                    "tensor {name}: shape {:?} out of range",
                    view.shape()
                ))
            })?;
        let t = Tensor::f_from_data_size(view.data(), &shape, kind)
            .map_err(|e| bad(format!("tensor {name}: {e}")))?;
        tensors.insert(name, t);
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

    /// The same tensors and metadata give the same bytes, whatever order the
    /// metadata map was filled in (safetensors alone writes it in `HashMap`
    /// order), and the file is still one PyTorch and selfsup read back.
    #[test]
    fn same_tensors_and_metadata_give_identical_bytes() {
        let t = || {
            vec![
                ("b".to_string(), Tensor::from_slice(&[1.0f32, 2.0])),
                ("a".to_string(), Tensor::from_slice(&[3i64])),
            ]
        };
        let keys: Vec<String> = (0..24).map(|i| format!("key{i:02}")).collect();
        let forward: HashMap<String, String> =
            keys.iter().map(|k| (k.clone(), format!("v{k}"))).collect();
        let mut backward = HashMap::new();
        for k in keys.iter().rev() {
            backward.insert(k.clone(), format!("v{k}"));
        }
        let one = to_safetensors_bytes(&t(), Some(forward)).unwrap();
        let two = to_safetensors_bytes(&t(), Some(backward.clone())).unwrap();
        assert_eq!(one, two);
        // Sorted keys in the header, 8-byte aligned data.
        let n = u64::from_le_bytes(one[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let header = std::str::from_utf8(&one[8..8 + n]).unwrap();
        let pos: Vec<usize> = keys
            .iter()
            .map(|k| header.find(k.as_str()).unwrap())
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{header}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        write_atomic(&path, &one).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.metadata, backward);
        assert!(loaded.tensors["b"].equal(&Tensor::from_slice(&[1.0f32, 2.0])));
        // No metadata and no tensors still round-trip.
        let empty = to_safetensors_bytes(&[], Some(HashMap::new())).unwrap();
        write_atomic(&path, &empty).unwrap();
        assert!(load(&path).unwrap().tensors.is_empty());
    }

    /// A header claiming a dimension beyond i64 (another dimension 0, so the
    /// byte count still checks out) is an error, not a panic in libtorch.
    #[test]
    fn a_shape_beyond_i64_is_a_named_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("evil.safetensors");
        let header = format!(
            r#"{{"a":{{"dtype":"F32","shape":[0,{}],"data_offsets":[0,0]}}}}"#,
            u64::MAX
        );
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("evil.safetensors"), "{err}");
        // A header length beyond the file.
        let mut bytes = (1u64 << 40).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        std::fs::write(&path, &bytes).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("evil.safetensors"), "{err}");
        let err = read_metadata(&path).unwrap_err().to_string();
        assert!(err.contains("evil.safetensors"), "{err}");
        // Not a file at all (a folder here; /dev/zero would never end).
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
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
