//! Embeddings on disk: one writer for every modality's `selfsup embed`.
//!
//! [`write_embeddings`] picks the format from the output's extension:
//!
//! - `.jsonl`: one `{"id": ..., "embedding": [...]}` object per line, in row
//!   order;
//! - `.npy`: a float32 `[N, D]` array in C order (NumPy format 1.0, what
//!   `numpy.load` reads); the ids go beside it, one per line, in
//!   `<stem>.ids.txt` (`out.npy` -> `out.ids.txt`);
//! - `.safetensors`: one float32 tensor `embeddings` `[N, D]`, metadata
//!   `format = pt`, `ids_file` (the sidecar's file name) and `count`; the ids
//!   go beside it in `<stem>.ids.txt` as for `.npy`.
//!
//! Row `i` of the array is the item on line `i + 1` of the ids file. An id
//! holding a line break cannot be written one per line: such ids are
//! refused for `.npy` and `.safetensors` (JSON Lines escapes them). Every
//! file is written atomically (a temporary file, then a rename); the ids
//! file is written first, so a complete array always has its ids.
use crate::tensor_io;
use crate::{Error, Result};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// The extensions [`write_embeddings`] writes.
pub const FORMATS: [&str; 3] = ["jsonl", "npy", "safetensors"];

/// Name of the tensor in a `.safetensors` output.
pub const TENSOR_NAME: &str = "embeddings";

/// What one `selfsup embed` run produced: one id per row of `embeddings`
/// (`[N, D]` float32 on the CPU), and the inputs skipped (not of a kind the
/// modality reads).
pub struct Embedded {
    /// One id per row: a file name, a text, a node id.
    pub ids: Vec<String>,
    /// `[N, D]` float32.
    pub embeddings: Tensor,
    /// Inputs that were skipped, in the order met.
    pub skipped: Vec<PathBuf>,
}

/// The output format of a path, told by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON Lines.
    Jsonl,
    /// NumPy `.npy` plus `<stem>.ids.txt`.
    Npy,
    /// safetensors plus `<stem>.ids.txt`.
    Safetensors,
}

impl Format {
    /// The format of `path`, or an error naming the path and the three
    /// extensions written.
    pub fn of(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        match ext.as_str() {
            "jsonl" => Ok(Format::Jsonl),
            "npy" => Ok(Format::Npy),
            "safetensors" => Ok(Format::Safetensors),
            _ => Err(Error::Data(format!(
                "{}: unknown output format '{ext}': give a file ending in .{}",
                path.display(),
                FORMATS.join(", .")
            ))),
        }
    }
}

/// The ids file written beside a `.npy` or `.safetensors` output:
/// `<stem>.ids.txt` in the same folder.
pub fn ids_path(out: &Path) -> PathBuf {
    let stem = out.file_stem().unwrap_or_default().to_string_lossy();
    out.with_file_name(format!("{stem}.ids.txt"))
}

/// Writes a `.npy` (format 1.0, little-endian, C order) of a float32,
/// float64 or int64 tensor, atomically.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    tensor_io::write_atomic(path, &npy_bytes(t)?)
}

/// The bytes of a `.npy` file (format 1.0) holding `t`.
pub fn npy_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let t = t.detach().to_device(tch::Device::Cpu).contiguous();
    let (descr, data): (&str, Vec<u8>) = match t.kind() {
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
    let len = u16::try_from(header.len()).map_err(|_| {
        Error::Config(format!(
            "npy: a header of {} bytes does not fit format 1.0 (a tensor of {} dimensions)",
            header.len(),
            t.dim()
        ))
    })?;
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    Ok(out)
}

/// Refuses ids that cannot be written one per line.
fn check_ids_one_per_line(out: &Path, ids: &[String]) -> Result<()> {
    match ids
        .iter()
        .position(|id| id.contains('\n') || id.contains('\r'))
    {
        Some(i) => Err(Error::Data(format!(
            "{}: id {} ({:?}) holds a line break and cannot be written one per line to {}: \
             write .jsonl instead",
            out.display(),
            i + 1,
            ids[i],
            ids_path(out).display()
        ))),
        None => Ok(()),
    }
}

fn ids_text(ids: &[String]) -> String {
    let mut s = String::with_capacity(ids.iter().map(|i| i.len() + 1).sum());
    for id in ids {
        s.push_str(id);
        s.push('\n');
    }
    s
}

/// Writes `embeddings` (`[N, D]`, converted to float32) with one id per row
/// to `path`, in the format its extension names (see the module
/// documentation); returns the files written (the output first). An
/// unknown extension, a count of ids other than `N`, or a tensor that is not
/// two-dimensional is an error naming the path.
pub fn write_embeddings(path: &Path, ids: &[String], embeddings: &Tensor) -> Result<Vec<PathBuf>> {
    let format = Format::of(path)?;
    let size = embeddings.size();
    let &[n, d] = size.as_slice() else {
        return Err(Error::Config(format!(
            "{}: embeddings must be [N, D], got {size:?}",
            path.display()
        )));
    };
    if usize::try_from(n).ok() != Some(ids.len()) {
        return Err(Error::Config(format!(
            "{}: {} ids for {n} embeddings",
            path.display(),
            ids.len()
        )));
    }
    let emb = embeddings
        .detach()
        .to_device(tch::Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    match format {
        Format::Jsonl => {
            let flat = Vec::<f32>::try_from(emb.view([-1]))?;
            let mut buf: Vec<u8> = Vec::new();
            let width = usize::try_from(d).unwrap_or(0);
            for (i, id) in ids.iter().enumerate() {
                let row = flat.get(i * width..(i + 1) * width).unwrap_or(&[]);
                let line = serde_json::json!({"id": id, "embedding": row});
                writeln!(buf, "{line}").map_err(|e| Error::io(path, e))?;
            }
            tensor_io::write_atomic(path, &buf)?;
            Ok(vec![path.to_path_buf()])
        }
        Format::Npy | Format::Safetensors => {
            check_ids_one_per_line(path, ids)?;
            let ids_file = ids_path(path);
            tensor_io::write_atomic(&ids_file, ids_text(ids).as_bytes())?;
            if format == Format::Npy {
                write_npy(path, &emb)?;
            } else {
                let name = ids_file
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                let meta = HashMap::from([
                    ("format".to_string(), "pt".to_string()),
                    ("ids_file".to_string(), name),
                    ("count".to_string(), n.to_string()),
                ]);
                tensor_io::save(path, &[(TENSOR_NAME.to_string(), emb)], Some(meta))?;
            }
            Ok(vec![path.to_path_buf(), ids_file])
        }
    }
}

/// The largest `config.json` an export folder may hold (16 MiB).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Reads `dir/config.json` of an export folder as JSON; a missing, oversized
/// or unparsable file is an error naming it and saying what is expected.
pub fn read_export_config(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join("config.json");
    let meta = std::fs::metadata(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Data(format!(
                "{}: no such file: an export folder (runs/<name>/export) holds config.json \
                 beside its weights",
                path.display()
            ))
        } else {
            Error::io(&path, e)
        }
    })?;
    if !meta.is_file() || meta.len() > MAX_CONFIG_BYTES {
        return Err(Error::Data(format!(
            "{}: not a regular file of at most {} MiB",
            path.display(),
            MAX_CONFIG_BYTES >> 20
        )));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Data(format!("{}: not JSON: {e}", path.display())))
}

/// Copies the tensors of a weights file into `vs`, strictly: a variable
/// missing from the file, a tensor the model does not have, or a shape that
/// differs is an error naming `file` and the tensors.
pub fn load_strict(
    vs: &tch::nn::VarStore,
    tensors: &std::collections::BTreeMap<String, Tensor>,
    file: &Path,
) -> Result<()> {
    crate::checkpoint::copy_into(vs, tensors)
        .map_err(|reason| Error::Data(format!("{}: {reason}", file.display())))
}

/// The entries of `dir` (not its sub-folders' contents), sorted by name,
/// split into the files `accept` takes and everything else (other files,
/// sub-folders), which embedding skips and counts. A folder that cannot be
/// read is an error naming it.
pub fn list_folder(
    dir: &Path,
    accept: impl Fn(&Path) -> bool,
) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        all.push(entry.map_err(|e| Error::io(dir, e))?.path());
    }
    all.sort();
    Ok(all.into_iter().partition(|p| p.is_file() && accept(p)))
}

/// The file name of `path` as an id.
pub fn file_id(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string()
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

    #[test]
    fn the_format_is_told_by_the_extension() {
        assert_eq!(Format::of(Path::new("a/b.JSONL")).unwrap(), Format::Jsonl);
        assert_eq!(Format::of(Path::new("b.npy")).unwrap(), Format::Npy);
        assert_eq!(
            Format::of(Path::new("b.safetensors")).unwrap(),
            Format::Safetensors
        );
        let e = Format::of(Path::new("x/out.csv")).unwrap_err().to_string();
        assert!(
            e.contains("x/out.csv") && e.contains(".jsonl, .npy, .safetensors"),
            "{e}"
        );
        assert_eq!(ids_path(Path::new("d/e.npy")), Path::new("d/e.ids.txt"));
    }

    #[test]
    fn wrong_counts_and_line_breaks_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.npy");
        let t = Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu));
        let e = write_embeddings(&p, &["a".into()], &t).unwrap_err();
        assert!(e.to_string().contains("1 ids for 2"), "{e}");
        let e = write_embeddings(&p, &["a".into(), "b\nc".into()], &t).unwrap_err();
        assert!(
            e.to_string().contains("o.npy") && e.to_string().contains(".jsonl"),
            "{e}"
        );
        assert!(!p.exists());
        // JSON Lines escapes the line break.
        let j = dir.path().join("o.jsonl");
        write_embeddings(&j, &["a".into(), "b\nc".into()], &t).unwrap();
        let text = std::fs::read_to_string(&j).unwrap();
        assert_eq!(text.lines().count(), 2);
        let v: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(v["id"], "b\nc");
    }
}
