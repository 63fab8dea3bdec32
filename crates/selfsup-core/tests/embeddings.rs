//! `write_embeddings` read back by readers that share no code with it: a
//! `.npy` parser written here from the NumPy format spec (and `numpy.load`
//! when `SELFSUP_PYTHON` names a Python with numpy), the `safetensors` crate,
//! serde_json.
use selfsup_core::embeddings::{ids_path, write_embeddings};
use std::path::Path;
use tch::Tensor;

fn sample() -> (Vec<String>, Vec<f32>, Tensor) {
    let ids: Vec<String> = ["cat.png", "dog é.jpg", "x y"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let values: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
    let t = Tensor::from_slice(&values).view([3, 4]);
    (ids, values, t)
}

/// Parses a NumPy 1.0 file: magic, version, header dict, data.
fn parse_npy(bytes: &[u8]) -> (String, bool, Vec<usize>, Vec<f32>) {
    assert_eq!(&bytes[..6], b"\x93NUMPY", "magic");
    assert_eq!((bytes[6], bytes[7]), (1, 0), "version 1.0");
    let hl = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + hl) % 64, 0, "the data starts 64-byte aligned");
    let header = std::str::from_utf8(&bytes[10..10 + hl]).unwrap();
    assert!(header.ends_with('\n'));
    let field = |key: &str| -> String {
        let at = header.find(&format!("'{key}': ")).unwrap() + key.len() + 4;
        header[at..].to_string()
    };
    let descr = field("descr");
    let descr = descr.trim_start_matches('\'').split('\'').next().unwrap();
    let fortran = field("fortran_order").starts_with("True");
    let shape_text = field("shape");
    let inner = &shape_text[1..shape_text.find(')').unwrap()];
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let data: Vec<f32> = bytes[10 + hl..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (descr.to_string(), fortran, shape, data)
}

fn ids_of(out: &Path) -> Vec<String> {
    std::fs::read_to_string(ids_path(out))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn npy_reads_back_by_hand_and_with_numpy() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("emb.npy");
    let (ids, values, t) = sample();
    let written = write_embeddings(&out, &ids, &t).unwrap();
    assert_eq!(written, vec![out.clone(), dir.path().join("emb.ids.txt")]);
    let (descr, fortran, shape, data) = parse_npy(&std::fs::read(&out).unwrap());
    assert_eq!(descr, "<f4");
    assert!(!fortran);
    assert_eq!(shape, vec![3, 4]);
    assert_eq!(data, values);
    assert_eq!(ids_of(&out), ids);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());

    if let Ok(python) = std::env::var("SELFSUP_PYTHON") {
        let script = format!(
            "import numpy as np\na = np.load({:?})\nassert a.dtype == np.float32 and a.shape == (3, 4), (a.dtype, a.shape)\n\
             assert a.flags['C_CONTIGUOUS']\nassert (a.ravel() == np.arange(12, dtype=np.float32) * 0.25 - 1.0).all(), a\nprint('ok')",
            out.display().to_string()
        );
        let o = std::process::Command::new(python)
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("ok"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn safetensors_reads_back_with_the_safetensors_crate() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("emb.safetensors");
    let (ids, values, t) = sample();
    write_embeddings(&out, &ids, &t).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.names(), vec!["embeddings"]);
    let view = st.tensor("embeddings").unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::F32);
    assert_eq!(view.shape(), &[3, 4]);
    let data: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(data, values);
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["ids_file"], "emb.ids.txt");
    assert_eq!(meta["count"], "3");
    assert_eq!(ids_of(&out), ids);
}

#[test]
fn jsonl_holds_one_object_per_row() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("emb.jsonl");
    let (ids, values, t) = sample();
    write_embeddings(&out, &ids, &t).unwrap();
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["id"], ids[i].as_str());
        let e: Vec<f32> = serde_json::from_value(r["embedding"].clone()).unwrap();
        assert_eq!(e, values[i * 4..(i + 1) * 4]);
    }
    assert!(!ids_path(&out).exists(), "JSON Lines carries its ids");
}
