//! Tests across crates: every shipped config parses and validates; every
//! vision method trains a few steps on a tiny fixture with a falling loss and
//! embeddings the collapse monitors call healthy.
use selfsup_core::monitor::collapse_stats;
use selfsup_core::optim::OptimConfig;
use selfsup_core::schedule::LrSchedule;
use selfsup_core::trainer::{NoEval, Silent, Trainer, TrainerConfig};
use selfsup_vision::augment::{AugmentConfig, Augmenter};
use selfsup_vision::data::{ImageDataset, Normalize};
use selfsup_vision::loader::ViewLoader;
use selfsup_vision::methods::MethodConfig;
use selfsup_vision::models::EncoderConfig;
use selfsup_vision::pretrain::{build_method, VisionRunConfig};
use std::path::PathBuf;
use std::sync::Arc;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn every_shipped_config_parses_and_validates() {
    let dir = workspace().join("configs/vision");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let cfg = VisionRunConfig::from_toml(&std::fs::read_to_string(&path).unwrap(), &path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            cfg.model.validate().unwrap();
            cfg.augment.validate().unwrap();
            // The resolved config (saved in checkpoints) parses back to the same thing.
            let again = VisionRunConfig::from_toml(&cfg.to_toml(), &path).unwrap();
            assert_eq!(again, cfg, "{}", path.display());
            n += 1;
        }
    }
    assert!(
        n >= 2,
        "expected the cpu and gpu presets in {}",
        dir.display()
    );
}

/// 128 grey 28x28 images of 8 distinct patterns (one bright square each) on noise.
fn tiny_dataset() -> ImageDataset {
    let mut state = 7u64;
    let mut pixels = Vec::with_capacity(128 * 784);
    let mut labels = Vec::new();
    for i in 0..128 {
        let c = i % 8;
        let (oy, ox) = ((c / 4) * 12 + 2, (c % 4) * 6 + 1);
        for y in 0..28 {
            for x in 0..28 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = ((state >> 33) % 50) as u8;
                let inside = (oy..oy + 12).contains(&y) && (ox..ox + 6).contains(&x);
                pixels.push(if inside { 200 + noise } else { noise });
            }
        }
        labels.push(c as i64);
    }
    ImageDataset::new(
        "tiny",
        28,
        28,
        1,
        pixels,
        Some(labels),
        (0..8).map(|c| c.to_string()).collect(),
    )
    .unwrap()
}

fn trains_without_collapse(method_cfg: MethodConfig) {
    let data = Arc::new(tiny_dataset());
    let norm = Normalize::for_channels(1);
    let aug = Augmenter::new(AugmentConfig::default(), 1, 28, norm.clone()).unwrap();
    let loader = ViewLoader::try_new(data.clone(), aug, 32, 1).unwrap();
    let cfg = VisionRunConfig {
        model: EncoderConfig::SmallCnn {
            channels: vec![8, 16, 16, 32],
        },
        method: method_cfg,
        ..Default::default()
    };
    let mut method = build_method(&cfg, tch::Device::Cpu, 1).unwrap();
    let trainer_cfg = TrainerConfig {
        epochs: 8,
        seed: 1,
        optimizer: OptimConfig {
            lr: 0.3,
            ..Default::default()
        },
        schedule: LrSchedule {
            warmup_epochs: 0.0,
            final_lr_ratio: 0.1,
        },
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let trainer = Trainer::new(trainer_cfg, dir.path(), tch::Device::Cpu);
    let s = trainer
        .fit(method.as_mut(), &loader, &mut NoEval, &mut Silent, false)
        .unwrap();
    assert_eq!(s.steps, 32);
    let first = s.epochs[0].mean_loss;
    let last = s.epochs.last().unwrap().mean_loss;
    assert!(
        last < first - 0.1,
        "{}: loss did not fall: {first} -> {last}",
        method.name()
    );

    let views = loader.views_of(&(0..128).collect::<Vec<_>>(), 99);
    let (za, zb) = tch::no_grad(|| (method.project(&views[0]), method.project(&views[1])));
    let stats = collapse_stats(&za, Some(&zb));
    let warnings = selfsup_core::monitor::CollapseThresholds::default().warnings(&stats);
    assert!(
        warnings.is_empty(),
        "{}: {warnings:?} ({stats:?})",
        method.name()
    );
}

#[test]
fn simclr_trains_and_does_not_collapse() {
    trains_without_collapse(MethodConfig::Simclr(Default::default()));
}
