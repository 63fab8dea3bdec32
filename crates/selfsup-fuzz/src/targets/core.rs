//! Core readers: safetensors files (exports, checkpoints) and checkpoint
//! metadata. They take a path, so the input is written to a scratch file in
//! /dev/shm first.
use crate::engine::{scratch_file, Target};
use safetensors::tensor::{Dtype, TensorView};
use selfsup_core::checkpoint;
use selfsup_core::tensor_io;
use std::collections::HashMap;

const DICT: &[&[u8]] = &[
    b"\"dtype\"",
    b"\"shape\"",
    b"\"data_offsets\"",
    b"\"__metadata__\"",
    b"\"F32\"",
    b"\"F64\"",
    b"\"F16\"",
    b"\"BF16\"",
    b"\"I64\"",
    b"\"U8\"",
    b"\"BOOL\"",
    b"\"F8_E4M3\"",
    b"\"selfsup.checkpoint\"",
    b"null",
    b"[]",
    b"{}",
];

pub const TARGETS: [Target; 3] = [
    Target {
        name: "safetensors",
        about: "selfsup_core::tensor_io::load (header, then tensors into libtorch)",
        run: run_load,
        seeds: seeds_safetensors,
        dict: DICT,
        max_len: 64 << 10,
    },
    Target {
        name: "safetensors-header",
        about: "selfsup_core::tensor_io::read_metadata (header only)",
        run: run_read_metadata,
        seeds: seeds_safetensors,
        dict: DICT,
        max_len: 64 << 10,
    },
    Target {
        name: "checkpoint",
        about: "selfsup_core::checkpoint::read_meta (checkpoint metadata)",
        run: run_checkpoint,
        seeds: seeds_checkpoint,
        dict: DICT,
        max_len: 64 << 10,
    },
];

fn run_load(data: &[u8]) -> Result<(), String> {
    let p = scratch_file("fuzz.safetensors", data)?;
    let loaded = tensor_io::load(&p).map_err(|e| e.to_string())?;
    for t in loaded.tensors.values() {
        let _ = t.numel();
    }
    Ok(())
}

fn run_read_metadata(data: &[u8]) -> Result<(), String> {
    let p = scratch_file("fuzz-header.safetensors", data)?;
    tensor_io::read_metadata(&p)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn run_checkpoint(data: &[u8]) -> Result<(), String> {
    let p = scratch_file("fuzz-checkpoint.safetensors", data)?;
    checkpoint::read_meta(&p)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A safetensors file of `tensors` (dtype, shape, bytes) with `meta`.
pub fn safetensors_file(
    tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)],
    meta: Option<HashMap<String, String>>,
) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .filter_map(|(n, d, s, b)| {
            TensorView::new(*d, s.clone(), b)
                .ok()
                .map(|v| (n.to_string(), v))
        })
        .collect();
    safetensors::serialize(views, &meta).unwrap_or_default()
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn seeds_safetensors() -> Vec<Vec<u8>> {
    let mut out = vec![
        safetensors_file(
            &[
                ("a", Dtype::F32, vec![2, 2], f32s(&[1.5, -2.0, 3.25, 0.0])),
                (
                    "b",
                    Dtype::I64,
                    vec![2],
                    [7i64, 9].iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
            ],
            Some(HashMap::from([("format".to_string(), "pt".to_string())])),
        ),
        safetensors_file(
            &[
                ("u", Dtype::U8, vec![3], vec![1, 2, 3]),
                ("h", Dtype::F16, vec![1, 2], vec![0, 60, 0, 188]),
                ("bf", Dtype::BF16, vec![1], vec![128, 63]),
                ("z", Dtype::F32, vec![0, 4], Vec::new()),
                ("s", Dtype::F64, vec![], 2.5f64.to_le_bytes().to_vec()),
                ("q", Dtype::BOOL, vec![2], vec![0, 1]),
            ],
            None,
        ),
    ];
    out.extend(seeds_checkpoint());
    out.retain(|v| !v.is_empty());
    out
}

fn seeds_checkpoint() -> Vec<Vec<u8>> {
    // Built as JSON (not as `CheckpointMeta`) so new optional fields do not
    // break the seeds.
    let meta = serde_json::json!({
        "step": 12,
        "steps_per_epoch": 4,
        "seed": 0,
        "method": "simclr",
        "config": "[method]\nname = \"simclr\"\n",
        "git_commit": "0123abc",
        "loss": 4.25,
        "samples_per_step": 256,
    });
    let json = serde_json::to_string(&meta).unwrap_or_default();
    vec![safetensors_file(
        &[
            (
                "model.encoder.weight",
                Dtype::F32,
                vec![2, 3],
                f32s(&[0.5; 6]),
            ),
            (
                "optim.step",
                Dtype::I64,
                vec![1],
                12i64.to_le_bytes().to_vec(),
            ),
        ],
        Some(HashMap::from([("selfsup.checkpoint".to_string(), json)])),
    )]
}
