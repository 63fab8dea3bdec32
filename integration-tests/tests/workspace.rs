//! Tests across crates: every shipped config parses and validates; every
//! vision method trains a few steps on a tiny fixture with a falling loss and
//! embeddings the collapse monitors call healthy.
use selfsup_core::distributed::SingleProcess;
use selfsup_core::method::{Batch, StepCtx};
use selfsup_core::monitor::collapse_stats;
use selfsup_core::optim::OptimConfig;
use selfsup_core::schedule::LrSchedule;
use selfsup_core::trainer::{NoEval, Silent, Trainer, TrainerConfig};
use selfsup_vision::augment::{
    AugmentConfig, Augmenter, ColorJitter, RandomGrayscale, RandomResizedCrop,
};
use selfsup_vision::data::{ImageDataset, Normalize};
use selfsup_vision::loader::ViewLoader;
use selfsup_vision::methods::jigsaw::PermutationSelection;
use selfsup_vision::methods::{ColorizationConfig, ContextConfig, JigsawConfig, MethodConfig};
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

/// 128 28x28 images of 8 distinct patterns (one bright square each) on noise;
/// with 3 channels the square also has a colour of its own per pattern.
fn tiny_dataset(channels: usize) -> ImageDataset {
    let mut state = 7u64;
    let mut pixels = Vec::with_capacity(128 * 784 * channels);
    let mut labels = Vec::new();
    for i in 0..128 {
        let c = i % 8;
        let (oy, ox) = ((c / 4) * 12 + 2, (c % 4) * 6 + 1);
        for y in 0..28 {
            for x in 0..28 {
                let inside = (oy..oy + 12).contains(&y) && (ox..ox + 6).contains(&x);
                for ch in 0..channels {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let noise = ((state >> 33) % 50) as u8;
                    // Colour: channel `ch` is lit when bit `ch` of the pattern (+1) is set.
                    let lit = channels == 1 || ((c + 1) >> ch) & 1 == 1;
                    pixels.push(if inside && lit { 200 + noise } else { noise });
                }
            }
        }
        labels.push(c as i64);
    }
    ImageDataset::new(
        "tiny",
        28,
        28,
        channels,
        pixels,
        Some(labels),
        (0..8).map(|c| c.to_string()).collect(),
    )
    .unwrap()
}

fn trains_without_collapse(method_cfg: MethodConfig) {
    trains_without_collapse_on(method_cfg, 1, AugmentConfig::default(), 8);
}

/// One augmented view per image, as the pretext tasks train, with the
/// presets' milder crops (at least half the image).
fn one_view() -> AugmentConfig {
    AugmentConfig {
        views: 1,
        crop: RandomResizedCrop {
            scale: (0.5, 1.0),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Trains `epochs` epochs of 4 batches on the tiny fixture with `channels` channels.
fn trains_without_collapse_on(
    method_cfg: MethodConfig,
    channels: usize,
    augment: AugmentConfig,
    epochs: usize,
) {
    let data = Arc::new(tiny_dataset(channels));
    let norm = Normalize::for_channels(channels);
    let aug = Augmenter::new(augment, channels, 28, norm.clone()).unwrap();
    let loader = ViewLoader::try_new(data.clone(), aug, 32, 1).unwrap();
    let cfg = VisionRunConfig {
        model: EncoderConfig::SmallCnn {
            channels: vec![8, 16, 16, 32],
        },
        method: method_cfg,
        ..Default::default()
    };
    let mut method = build_method(&cfg, tch::Device::Cpu, channels as i64).unwrap();
    let trainer_cfg = TrainerConfig {
        epochs,
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
    assert_eq!(s.steps, 4 * epochs as u64);
    let first = s.epochs[0].mean_loss;
    let last = s.epochs.last().unwrap().mean_loss;
    assert!(
        last < first - 0.1,
        "{}: loss did not fall: {first} -> {last}",
        method.name()
    );

    let all: Vec<usize> = (0..128).collect();
    let views = loader.views_of(&all, 99);
    // Single-view methods: the second view comes from another seed.
    let second = match views.get(1) {
        Some(v) => v.shallow_clone(),
        None => loader.views_of(&all, 100).remove(0),
    };
    let (za, zb) = tch::no_grad(|| (method.project(&views[0]), method.project(&second)));
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

#[test]
fn rotation_trains_and_does_not_collapse() {
    trains_without_collapse_on(MethodConfig::Rotation(Default::default()), 1, one_view(), 8);
}

#[test]
fn context_trains_and_does_not_collapse() {
    // 28 px: 6 px patches, resized to the 8 px the 4-block CNN needs. The
    // fixture's patches are mostly noise: the task takes more steps than the
    // others to rise above chance.
    let cfg = ContextConfig {
        jitter: 1.0,
        tile_size: Some(8),
        ..Default::default()
    };
    trains_without_collapse_on(MethodConfig::Context(cfg), 1, one_view(), 8);
}

#[test]
fn jigsaw_trains_and_does_not_collapse() {
    // The fixture's tiles are mostly noise: few, far-apart permutations and
    // no per-tile normalisation (which would blow the noise up) keep it
    // learnable in 32 steps.
    let cfg = JigsawConfig {
        permutations: 4,
        selection: PermutationSelection::Min,
        normalize_tiles: false,
        tile_size: Some(8),
        ..Default::default()
    };
    trains_without_collapse_on(MethodConfig::Jigsaw(cfg), 1, one_view(), 8);
}

#[test]
fn colorization_trains_on_colour_and_refuses_grey() {
    let augment = AugmentConfig {
        color_jitter: ColorJitter {
            p: 0.0,
            ..Default::default()
        },
        grayscale: RandomGrayscale { p: 0.0 },
        ..one_view()
    };
    let cfg = ColorizationConfig {
        out_size: 4,
        ..Default::default()
    };
    trains_without_collapse_on(MethodConfig::Colorization(cfg.clone()), 3, augment, 8);
    let run = VisionRunConfig {
        method: MethodConfig::Colorization(cfg),
        ..Default::default()
    };
    let err = build_method(&run, tch::Device::Cpu, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("Fashion-MNIST"), "{err}");
}

#[test]
fn pretext_methods_refuse_two_views() {
    for method in [
        MethodConfig::Rotation(Default::default()),
        MethodConfig::Context(Default::default()),
        MethodConfig::Jigsaw(JigsawConfig {
            permutations: 4,
            ..Default::default()
        }),
    ] {
        let cfg = VisionRunConfig {
            method,
            ..Default::default()
        };
        let mut m = build_method(&cfg, tch::Device::Cpu, 1).unwrap();
        let x = tch::Tensor::zeros([2, 1, 28, 28], (tch::Kind::Float, tch::Device::Cpu));
        let batch = Batch {
            views: vec![x.shallow_clone(), x],
        };
        let comm = SingleProcess;
        let ctx = StepCtx {
            step: 0,
            total_steps: 1,
            epoch: 0,
            comm: &comm,
        };
        let err = m.step(&batch, &ctx).unwrap_err().to_string();
        assert!(err.contains("views = 1"), "{}: {err}", m.name());
    }
}
