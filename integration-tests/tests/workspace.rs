//! Tests across crates: every shipped config parses and validates; every
//! vision method trains a few steps on a tiny fixture with a falling loss and
//! embeddings the collapse monitors call healthy.
use selfsup_core::distributed::SingleProcess;
use selfsup_core::ema::EmaConfig;
use selfsup_core::head::HeadConfig;
use selfsup_core::loss::InfoNceConfig;
use selfsup_core::method::{Batch, Method, StepCtx};
use selfsup_core::monitor::{collapse_stats, CollapseStats};
use selfsup_core::optim::OptimConfig;
use selfsup_core::schedule::LrSchedule;
use selfsup_core::trainer::{NoEval, Silent, Trainer, TrainerConfig};
use selfsup_vision::augment::{
    AugmentConfig, Augmenter, ColorJitter, LocalCrops, RandomGrayscale, RandomResizedCrop,
};
use selfsup_vision::data::{ImageDataset, Normalize};
use selfsup_vision::loader::ViewLoader;
use selfsup_vision::methods::jigsaw::PermutationSelection;
use selfsup_vision::methods::{
    BarlowTwinsMethodConfig, ByolConfig, ColorizationConfig, ContextConfig, DataFacts, DinoConfig,
    DinoHeadConfig, JigsawConfig, MethodConfig, MocoV2Config, MocoV3Config, SimSiamConfig,
    SwavConfig, VicRegMethodConfig,
};
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

/// How a method is trained on the tiny fixture.
struct Case {
    method: MethodConfig,
    channels: usize,
    augment: AugmentConfig,
    optimizer: OptimConfig,
    epochs: usize,
    warmup_epochs: f64,
}

impl Case {
    fn new(method: MethodConfig) -> Self {
        Self {
            method,
            channels: 1,
            augment: AugmentConfig::default(),
            optimizer: OptimConfig {
                lr: 0.3,
                ..Default::default()
            },
            epochs: 8,
            warmup_epochs: 0.0,
        }
    }
    /// One augmented view per image, as the pretext tasks train, with the
    /// presets' milder crops (at least half the image).
    fn one_view(mut self) -> Self {
        self.augment.views = 1;
        self.augment.crop = RandomResizedCrop {
            scale: (0.5, 1.0),
            ..Default::default()
        };
        self
    }
    fn multi_crop(mut self) -> Self {
        self.augment.local_crops = LocalCrops {
            count: 2,
            size: 12,
            ..Default::default()
        };
        self
    }
}

/// A head small enough for the fixture.
fn head(layers: usize, out_dim: i64, last_batch_norm: bool) -> HeadConfig {
    HeadConfig {
        hidden_dim: 64,
        out_dim,
        layers,
        batch_norm: true,
        last_batch_norm,
    }
}

/// Trains `case` on the tiny fixture; returns the method's name, the mean
/// loss of the first and last epochs and the collapse warnings on fixed views.
fn train(case: Case) -> (String, f64, f64, Vec<String>) {
    let (name, losses, warnings, stats) = train_full(case);
    eprintln!("{name}: epoch losses {losses:?}; {stats:?}");
    (name, losses[0], *losses.last().unwrap(), warnings)
}

/// libtorch's generator is global to the process: training runs take turns
/// so that each one's seeded initialisation (and so its outcome) is the same
/// in every test run, whatever runs beside it.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// [`train`] with every epoch's mean loss and the monitor statistics.
fn train_full(case: Case) -> (String, Vec<f64>, Vec<String>, CollapseStats) {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let channels = case.channels;
    let data = Arc::new(tiny_dataset(channels));
    let norm = Normalize::for_channels(channels);
    let aug = Augmenter::new(case.augment.clone(), channels, 28, norm.clone()).unwrap();
    let loader = ViewLoader::try_new(data.clone(), aug, 32, 1).unwrap();
    let cfg = VisionRunConfig {
        model: EncoderConfig::SmallCnn {
            channels: vec![8, 16, 16, 32],
        },
        method: case.method,
        augment: case.augment,
        ..Default::default()
    };
    let facts = DataFacts {
        images: 128,
        side: 28,
        channels,
        batch_size: 32,
    };
    cfg.method
        .validate(&cfg.model, &cfg.augment, &facts)
        .unwrap();
    tch::manual_seed(1);
    let mut method = build_method(&cfg, tch::Device::Cpu, channels as i64).unwrap();
    let trainer_cfg = TrainerConfig {
        epochs: case.epochs,
        seed: 1,
        optimizer: case.optimizer,
        schedule: LrSchedule {
            warmup_epochs: case.warmup_epochs,
            final_lr_ratio: 0.1,
            ..Default::default()
        },
        ..Default::default()
    };
    let all: Vec<usize> = (0..128).collect();
    let views = loader.views_of(&all, 99);
    // Single-view methods: the second view comes from another seed.
    let second = match views.get(1) {
        Some(v) => v.shallow_clone(),
        None => loader.views_of(&all, 100).remove(0),
    };
    let monitor = |method: &dyn Method| {
        let (za, zb) = tch::no_grad(|| (method.project(&views[0]), method.project(&second)));
        collapse_stats(&za, Some(&zb))
    };
    let init = monitor(method.as_ref());
    let dir = tempfile::tempdir().unwrap();
    let trainer = Trainer::new(trainer_cfg, dir.path(), tch::Device::Cpu);
    let s = trainer
        .fit(method.as_mut(), &loader, &mut NoEval, &mut Silent, false)
        .unwrap();
    assert_eq!(s.steps, 4 * case.epochs as u64);
    let losses: Vec<f64> = s.epochs.iter().map(|e| e.mean_loss).collect();
    let stats = monitor(method.as_ref());
    let warnings =
        selfsup_core::monitor::CollapseThresholds::default().warnings_since(&stats, Some(&init));
    (method.name().to_string(), losses, warnings, stats)
}

/// Training lowers the loss by at least `min_drop` (relative) and the
/// monitors find the embeddings healthy.
fn trains_without_collapse(case: Case, min_drop: f64) {
    let (name, first, last, warnings) = train(case);
    assert!(
        last < first - min_drop * first.abs(),
        "{name}: loss did not fall: {first} -> {last}"
    );
    assert!(warnings.is_empty(), "{name}: {warnings:?}");
}

#[test]
fn simclr_trains_and_does_not_collapse() {
    trains_without_collapse(Case::new(MethodConfig::Simclr(Default::default())), 0.02);
}

#[test]
fn moco_v2_trains_and_does_not_collapse() {
    // The fixture has 128 images: a 32-key queue, and a key encoder that
    // follows within the 32 steps (0.9; MoCo's 0.999 is for 100k+ steps).
    let m = MocoV2Config {
        projector: head(2, 32, false),
        queue_size: 32,
        loss: InfoNceConfig { temperature: 0.5 },
        ema: EmaConfig {
            base: 0.9,
            end: 0.9,
        },
        symmetric: true,
    };
    let (name, losses, warnings, _) = train_full(Case::new(MethodConfig::MocoV2(m)));
    // Epoch 0 contrasts against the random initial queue; compare from epoch 1.
    let (first, last) = (losses[1], *losses.last().unwrap());
    assert!(last < first * 0.98, "{name}: loss did not fall: {losses:?}");
    assert!(warnings.is_empty(), "{name}: {warnings:?}");
}

#[test]
fn moco_v3_trains_and_does_not_collapse() {
    let m = MocoV3Config {
        projector: head(3, 32, true),
        predictor: head(2, 32, false),
        loss: InfoNceConfig { temperature: 0.2 },
        ..Default::default()
    };
    trains_without_collapse(Case::new(MethodConfig::MocoV3(m)), 0.02);
}

#[test]
fn byol_trains_and_does_not_collapse() {
    let m = ByolConfig {
        projector: head(2, 32, false),
        predictor: head(2, 32, false),
        ..Default::default()
    };
    trains_without_collapse(Case::new(MethodConfig::Byol(m)), 0.02);
}

#[test]
fn simsiam_trains_and_does_not_collapse() {
    let m = SimSiamConfig {
        projector: head(3, 32, true),
        predictor: HeadConfig {
            hidden_dim: 16,
            ..head(2, 32, false)
        },
        ..Default::default()
    };
    trains_without_collapse(Case::new(MethodConfig::Simsiam(m)), 0.02);
}

#[test]
fn dino_trains_and_does_not_collapse() {
    let m = DinoConfig {
        head: DinoHeadConfig {
            layers: 3,
            hidden_dim: 64,
            bottleneck_dim: 32,
            out_dim: 128,
            batch_norm: true,
        },
        freeze_last_layer_epochs: 1.0,
        ..Default::default()
    };
    // Two global views: on this 8-pattern fixture 12-px local crops of noise
    // leave too little to distil within 48 steps (multi-crop is exercised
    // below and by SwAV's test).
    let mut case = Case::new(MethodConfig::Dino(m.clone()));
    case.optimizer.lr = 0.05;
    case.epochs = 16;
    trains_without_collapse(case, 0.02);

    // One step on a multi-crop batch: the teacher sees the 2 global views,
    // the student all 4.
    let cfg = VisionRunConfig {
        model: EncoderConfig::SmallCnn {
            channels: vec![8, 16, 16, 32],
        },
        method: MethodConfig::Dino(m),
        ..Default::default()
    };
    let mut method = build_method(&cfg, tch::Device::Cpu, 1).unwrap();
    let opts = (tch::Kind::Float, tch::Device::Cpu);
    let batch = Batch {
        views: vec![
            tch::Tensor::randn([8, 1, 28, 28], opts),
            tch::Tensor::randn([8, 1, 28, 28], opts),
            tch::Tensor::randn([8, 1, 12, 12], opts),
            tch::Tensor::randn([8, 1, 12, 12], opts),
        ],
    };
    let comm = SingleProcess;
    let ctx = StepCtx {
        step: 0,
        total_steps: 10,
        epoch: 0,
        steps_per_epoch: 10,
        comm: &comm,
    };
    let out = method.step(&batch, &ctx).unwrap();
    assert!(out.loss.double_value(&[]).is_finite());
}

#[test]
fn barlow_twins_trains_and_does_not_collapse() {
    // lambda ~ 1/d: the paper's 0.0051 is for an 8192-d projector; with 64
    // dimensions the redundancy term needs more weight to act within 32 steps.
    let m = BarlowTwinsMethodConfig {
        projector: head(3, 64, false),
        loss: selfsup_core::loss::BarlowTwinsConfig { lambda: 0.05 },
    };
    trains_without_collapse(Case::new(MethodConfig::BarlowTwins(m)), 0.02);
}

#[test]
fn vicreg_trains_and_does_not_collapse() {
    let m = VicRegMethodConfig {
        projector: head(3, 64, false),
        ..Default::default()
    };
    trains_without_collapse(Case::new(MethodConfig::Vicreg(m)), 0.02);
}

#[test]
fn swav_trains_and_does_not_collapse() {
    let m = SwavConfig {
        projector: head(2, 32, false),
        prototypes: 16,
        freeze_prototypes_steps: 4,
        ..Default::default()
    };
    trains_without_collapse(Case::new(MethodConfig::Swav(m)).multi_crop(), 0.02);
}

/// The paper's ablation: SimSiam without its stop-gradient collapses, and
/// the monitors must say so.
#[test]
fn simsiam_without_stop_gradient_is_flagged() {
    let m = SimSiamConfig {
        projector: head(3, 32, true),
        predictor: HeadConfig {
            hidden_dim: 16,
            ..head(2, 32, false)
        },
        stop_gradient: false,
    };
    // SGD at lr 1.0 for 240 steps: the projector's batch norm hides the
    // collapse from std and rank, uniformity sees it (about -0.14 here, against
    // -1.2 to -2.4 for the healthy methods on this fixture).
    let case = |stop_gradient: bool| {
        let mut case = Case::new(MethodConfig::Simsiam(SimSiamConfig {
            stop_gradient,
            ..m.clone()
        }));
        case.optimizer.lr = 1.0;
        case.epochs = 60;
        case
    };
    ablation_is_flagged_and_control_is_not(case(false), case(true));
}

/// The test of a collapse ablation, made able to fail: the ablation must be
/// flagged, and the healthy method under the very same fixture, optimiser
/// and steps must not be (so neither the fixture nor the starting point
/// alone can satisfy the monitors).
fn ablation_is_flagged_and_control_is_not(ablation: Case, control: Case) {
    let (name, _, last, warnings) = train(ablation);
    assert!(
        !warnings.is_empty(),
        "{name}: collapse not flagged (final loss {last})"
    );
    // Judged against the figures before the first step, which it quotes.
    assert!(
        warnings.iter().all(|w| w.contains("before the first step")),
        "{name}: {warnings:?}"
    );
    let (name, _, last, warnings) = train(control);
    assert!(
        warnings.is_empty(),
        "{name} (healthy control, same steps): flagged although it should not collapse \
         (final loss {last}): {warnings:?}"
    );
}

/// BYOL without its predictor collapses (Grill et al., table 5b); flagged.
#[test]
fn byol_without_predictor_is_flagged() {
    let m = ByolConfig {
        projector: head(2, 32, false),
        predictor: head(2, 32, false),
        use_predictor: false,
        ema: EmaConfig {
            base: 0.99,
            end: 1.0,
        },
    };
    // 240 steps at lr 1.0 with momentum 0.99 (the paper's 0.996 is for
    // 100k+ steps): uniformity about -0.12.
    let case = |use_predictor: bool| {
        let mut case = Case::new(MethodConfig::Byol(ByolConfig {
            use_predictor,
            ..m.clone()
        }));
        case.optimizer.lr = 1.0;
        case.epochs = 60;
        case
    };
    ablation_is_flagged_and_control_is_not(case(false), case(true));
}

#[test]
fn incompatible_configs_are_refused_before_training() {
    let facts = DataFacts {
        images: 1000,
        side: 28,
        channels: 1,
        batch_size: 256,
    };
    let model = EncoderConfig::default();
    let big_queue = MethodConfig::MocoV2(MocoV2Config {
        queue_size: 4096,
        ..Default::default()
    });
    let e = big_queue
        .validate(&model, &AugmentConfig::default(), &facts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("queue_size") && e.contains("1000"), "{e}");
    let mut local = AugmentConfig {
        local_crops: LocalCrops {
            count: 2,
            size: 40,
            ..Default::default()
        },
        ..Default::default()
    };
    let e = MethodConfig::Dino(DinoConfig::default())
        .validate(&model, &local, &facts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("local_crops.size"), "{e}");
    local.local_crops.size = 12;
    let e = MethodConfig::Byol(ByolConfig::default())
        .validate(&model, &local, &facts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("multi-crop"), "{e}");
}

#[test]
fn rotation_trains_and_does_not_collapse() {
    trains_without_collapse(
        Case::new(MethodConfig::Rotation(Default::default())).one_view(),
        0.05,
    );
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
    trains_without_collapse(Case::new(MethodConfig::Context(cfg)).one_view(), 0.05);
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
    trains_without_collapse(Case::new(MethodConfig::Jigsaw(cfg)).one_view(), 0.05);
}

#[test]
fn colorization_trains_on_colour_and_refuses_grey() {
    let cfg = ColorizationConfig {
        out_size: 4,
        ..Default::default()
    };
    let mut case = Case::new(MethodConfig::Colorization(cfg.clone())).one_view();
    case.channels = 3;
    case.augment.color_jitter = ColorJitter {
        p: 0.0,
        ..Default::default()
    };
    case.augment.grayscale = RandomGrayscale { p: 0.0 };
    trains_without_collapse(case, 0.05);
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
            steps_per_epoch: 1,
            comm: &comm,
        };
        let err = m.step(&batch, &ctx).unwrap_err().to_string();
        assert!(err.contains("views = 1"), "{}: {err}", m.name());
    }
}
