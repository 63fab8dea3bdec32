//! Every GPU preset (`configs/**/*-gpu.toml`, `configs/audio/gpu.toml`):
//! the learning rate the trainer actually uses (`[trainer.optimizer] lr`
//! scaled by `OptimConfig::scaled_lr`, i.e. x batch / 256) is the one its
//! recipe names, and the device is `cuda` (a GPU preset fails clearly without
//! a GPU instead of training on the CPU for days).
use selfsup_core::optim::OptimConfig;
use std::path::{Path, PathBuf};

/// `(preset, effective lr at the preset's batch, where the value comes from)`.
const EXPECTED: &[(&str, f64, &str)] = &[
    // SGD 0.06 per 256 images (the SimCLR preset's recipe, which the MoCo,
    // SimSiam and DINO presets share): 0.12 at batch 512.
    ("vision/simclr-gpu.toml", 0.12, "SGD 0.06 x 512/256"),
    ("vision/moco_v2-gpu.toml", 0.12, "SGD 0.06 x 512/256"),
    ("vision/moco_v3-gpu.toml", 0.12, "SGD 0.06 x 512/256"),
    ("vision/simsiam-gpu.toml", 0.12, "SGD 0.06 x 512/256"),
    ("vision/dino-gpu.toml", 0.12, "SGD 0.06 x 512/256"),
    // LARS, solo-learn's CIFAR recipes (lr per 256, scaled linearly).
    ("vision/byol-gpu.toml", 2.0, "LARS 1.0 x 512/256"),
    ("vision/barlow_twins-gpu.toml", 0.6, "LARS 0.3 x 512/256"),
    ("vision/vicreg-gpu.toml", 0.6, "LARS 0.3 x 512/256"),
    ("vision/swav-gpu.toml", 1.2, "LARS 0.6 x 512/256"),
    // DINOv2's base AdamW lr, 4e-3 per 1024 images (Oquab et al. 2023),
    // scaled linearly here (DINOv2 scales by the square root).
    ("vision/dinov2-gpu.toml", 2e-3, "AdamW 1e-3 x 512/256"),
    // BEiT's AdamW peak 1.5e-3 (Bao et al. 2021), taken per 256 images here.
    ("vision/beit-gpu.toml", 1.5e-3, "AdamW 1.5e-3 x 256/256"),
    // Not a paper's figure: the VQ tokenizer's AdamW 2e-3 per 256 images.
    ("vision/vq_tokenizer-gpu.toml", 2e-3, "AdamW 2e-3 x 256/256"),
    // Caron et al. 2018 (DeepCluster): SGD 0.05 per 256 images.
    ("vision/deepcluster-gpu.toml", 0.1, "SGD 0.05 x 512/256"),
    // AdamW peaks: BERT-style MLM, CLIP (Radford et al. 2021), wav2vec 2.0 BASE.
    ("text/mlm-gpu.toml", 5e-4, "AdamW 5e-4 at batch 256"),
    (
        "text/next-token-gpu.toml",
        6e-4,
        "GPT-3 Small's AdamW peak 6e-4 (Brown et al. 2020)",
    ),
    ("multimodal/clip-gpu.toml", 5e-4, "CLIP's AdamW peak 5e-4"),
    // Not a paper's figure: the CPU preset's AdamW 8e-3 per 256 pairs,
    // chosen on validation speakers for the log-mel tower.
    (
        "multimodal/speech-text-gpu.toml",
        4e-3,
        "AdamW 8e-3 x 128/256 (the CPU preset's)",
    ),
    // Not a paper's figure: the CPU preset's SGD (Zhang et al. 2016 used Adam
    // on ImageNet; the small CNN trains with the pretext presets' SGD).
    (
        "vision/colorization-gpu.toml",
        0.05,
        "SGD 0.05 x 256/256, the CPU preset's",
    ),
    // Not a paper's figure: selfsup-video's own AdamW 2e-3 per 256 clips
    // (V-JEPA's ViT-L recipe does not transfer to a 64-clip batch).
    ("video/vjepa-gpu.toml", 5e-4, "AdamW 2e-3 x 64/256"),
    ("audio/gpu.toml", 5e-4, "wav2vec 2.0 BASE's peak 5e-4"),
    (
        "audio/cpc-gpu.toml",
        2e-4,
        "CPC's Adam 2e-4 (van den Oord et al. 2018)",
    ),
    // Graph runs take full-graph steps and give the step's learning rate
    // (not scaled by a batch): Kipf & Welling 2016's Adam 0.01 for GAE.
    (
        "graph/gae-gpu.toml",
        0.01,
        "GAE's Adam 0.01 per full-graph step",
    ),
];

fn configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

fn gpu_presets() -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["vision", "text", "multimodal", "audio", "graph", "video"] {
        let Ok(dir) = std::fs::read_dir(configs().join(sub)) else {
            continue;
        };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with("-gpu.toml") || name == "gpu.toml" {
                out.push(format!("{sub}/{name}"));
            }
        }
    }
    out.sort();
    out
}

fn table<'a>(v: &'a toml::Value, key: &str, file: &str) -> &'a toml::Value {
    v.get(key)
        .unwrap_or_else(|| panic!("{file}: no [{key}] table"))
}

/// `(effective lr, device)` of one preset, through the trainer's own scaling
/// (graph presets: the step's learning rate as given).
fn effective(rel: &str) -> (f64, String) {
    let text = std::fs::read_to_string(configs().join(rel)).unwrap();
    let v: toml::Value = text.parse().unwrap();
    let run = table(&v, "run", rel);
    let device = run
        .get("device")
        .and_then(toml::Value::as_str)
        .unwrap_or("auto")
        .to_string();
    let optim: OptimConfig = table(table(&v, "trainer", rel), "optimizer", rel)
        .clone()
        .try_into()
        .unwrap_or_else(|e| panic!("{rel}: [trainer.optimizer]: {e}"));
    if rel.starts_with("graph/") {
        return (optim.lr, device);
    }
    let batch = run
        .get("batch_size")
        .and_then(toml::Value::as_integer)
        .unwrap_or_else(|| panic!("{rel}: no [run] batch_size"));
    (optim.scaled_lr(batch as usize), device)
}

#[test]
fn every_gpu_preset_trains_at_its_recipes_learning_rate_on_cuda() {
    let listed: Vec<&str> = EXPECTED.iter().map(|(p, _, _)| *p).collect();
    let found = gpu_presets();
    for p in &found {
        assert!(
            listed.contains(&p.as_str()),
            "{p}: a GPU preset missing from the table"
        );
    }
    let mut wrong = Vec::new();
    for (preset, want, source) in EXPECTED {
        let (lr, device) = effective(preset);
        if (lr - want).abs() > want * 1e-9 {
            wrong.push(format!(
                "{preset}: effective lr {lr}, recipe {want} ({source})"
            ));
        }
        if device != "cuda" {
            wrong.push(format!(
                "{preset}: device = \"{device}\", a GPU preset says \"cuda\""
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
