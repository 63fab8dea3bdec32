//! The vision pre-training workflow: data -> views -> method -> evaluator ->
//! trainer -> evaluation -> export, on core's run skeleton
//! ([`selfsup_core::run::Run`]: threads, device, `config.toml`, the trainer,
//! `summary.json`). The `selfsup` binary and the examples call this; it
//! reads no argv or environment and draws nothing.
//!
//! The config, the method builder, the data, the evaluation and the summary
//! live in their own modules; their items are re-exported here, where
//! callers have always found them.
use crate::augment::Augmenter;
use crate::data::Normalize;
use crate::loader::ViewLoader;
use crate::methods::DataFacts;
use selfsup_core::device::describe;
use selfsup_core::run::{Run, RunOptions};
use selfsup_core::{Error, Result};
use std::sync::Arc;

pub use crate::config::{
    DataConfig, DataFormat, EvalConfig, Images, RunConfig, VisionRunConfig,
    DEFAULT_FOLDER_CHANNELS, DEFAULT_FOLDER_EVAL_IMAGES, DEFAULT_IMAGE_SIZE,
};
pub use crate::evaluate::{
    dataset_features, eval_caps, features, EvalData, EvalSettings, Features, Part,
};
pub use crate::load::{load_data, spread, LoadedData};
pub use crate::summary::{FewShotRows, RunSummary};
pub use crate::vision_method::{build_method, export, EncoderInput, VisionMethod};
use selfsup_core::eval::few_shot;

use crate::evaluate::VisionEvaluator;

/// What the workflow is called in errors (a data-parallel launch is allowed).
const WHAT: &str = "vision pre-training";

/// Pre-trains, evaluates and exports; writes `config.toml` and
/// `summary.json` into the run folder (`opts.data`: `--data`, else
/// `[data] path`). In a data-parallel run every rank trains its shard of
/// each global batch; rank 0 alone evaluates, writes the run folder and
/// exports (the other ranks' summaries carry `None` for the evaluations).
pub fn pretrain(cfg: &VisionRunConfig, opts: RunOptions<'_>) -> Result<RunSummary> {
    cfg.check()?;
    let data_dir = opts
        .data
        .clone()
        .or_else(|| cfg.data.path.clone())
        .ok_or_else(|| Error::Config("no dataset folder: give --data DIR or [data] path".into()))?;
    let mut run = Run::start(WHAT, &cfg.run, &cfg.trainer, cfg.to_toml(), true, opts)?;
    let (device, primary) = (run.device, run.primary);
    let loaded = load_data(cfg, &data_dir, run.observer)?;
    let (skipped_files, skipped_examples) = loaded.skipped.clone();
    if skipped_files > 0 {
        let names: Vec<&str> = skipped_examples
            .iter()
            .take(5)
            .map(|s| s.file.as_str())
            .collect();
        run.observer.phase(
            &format!(
                "skipped {skipped_files} unreadable image(s) (skip_bad = true): {}{}",
                names.join(", "),
                if skipped_files > names.len() {
                    ", ..."
                } else {
                    ""
                }
            ),
            0,
            0,
        );
    }
    let train = loaded.train;
    let norm = Normalize::for_channels(train.channels);
    let in_channels = train.channels as i64;
    // The validation part is held out of the kNN bank / probe training set
    // only: pre-training reads no labels and trains on every training image.
    let data = match &loaded.test {
        Some(test) if primary => Some(EvalData::build(
            &train,
            test,
            &norm,
            &EvalSettings::of(cfg),
        )?),
        _ => None,
    };
    drop(loaded.test);
    if primary && data.is_none() {
        run.observer
            .phase(&format!("evaluation {}", loaded.evaluation), 0, 0);
    }
    cfg.method.validate(
        &cfg.model,
        &cfg.augment,
        &DataFacts {
            images: train.len(),
            side: train.height,
            channels: train.channels,
            batch_size: cfg.run.batch_size,
        },
    )?;
    let train = Arc::new(train);

    let augmenter = Augmenter::new(
        cfg.augment.clone(),
        train.channels,
        train.height,
        norm.clone(),
    )?;
    let shard = run.shard;
    let ranks = shard.world_size;
    let loader = ViewLoader::new(
        train.clone(),
        augmenter,
        cfg.run.batch_size,
        cfg.trainer.seed,
    )
    .with_shard(shard);
    selfsup_core::run::seed_weights(cfg.trainer.seed);
    let mut method = build_method(cfg, device, in_channels)?;

    // The raw-pixel kNN of the test split (the summary's baseline) and,
    // when kNN runs every epoch, of the validation part (the curve's).
    const RAW: &str = "raw-pixel kNN baseline";
    let every_epoch = cfg.eval.knn_every_epoch;
    let (raw_knn, raw_validation_knn) = match &data {
        Some(d) => {
            let parts = 1 + usize::from(every_epoch);
            run.observer.phase(RAW, 0, parts);
            let test = d.raw_knn(Part::Test, &cfg.eval.knn)?;
            run.observer.phase(RAW, 1, parts);
            let validation = match every_epoch {
                true => Some(d.raw_knn(Part::Validation, &cfg.eval.knn)?),
                false => None,
            };
            run.observer.phase(RAW, parts, parts);
            (Some(test), validation)
        }
        None => (None, None),
    };
    let monitor_n = cfg.eval.monitor_images.min(train.len());
    let monitor_views = (monitor_n > 1).then(|| {
        // An image folder is sorted by class: its monitor images are spread
        // over it (the other formats keep their first images).
        let idx: Vec<usize> = if cfg.data.format == DataFormat::ImageFolder {
            spread(train.len(), monitor_n)
        } else {
            (0..monitor_n).collect()
        };
        let v = loader.views_of(&idx, cfg.trainer.seed ^ 0x5EED);
        // Single-view methods: the second view comes from another seed.
        let second = match v.get(1) {
            Some(b) => b.shallow_clone(),
            None => loader.views_of(&idx, cfg.trainer.seed ^ 0x5EED ^ 1)[0].shallow_clone(),
        };
        (v[0].shallow_clone(), second)
    });
    let mut evaluator = VisionEvaluator {
        data,
        monitor_views,
        knn: cfg.eval.knn.clone(),
        every_epoch,
        raw_validation_knn,
    };

    let trainer = run.trainer(cfg.trainer.clone());
    let summary = trainer.fit(
        method.as_mut(),
        &loader,
        &mut evaluator,
        run.observer,
        run.resume,
    )?;

    // Final evaluation on frozen features (rank 0 of a data-parallel run).
    // The validation and test figures come from the same bank and the same
    // probe settings, reported separately.
    let (mut knn, mut linear, mut raw_linear, mut trained_feats) = (None, None, None, None);
    let (mut knn_val, mut linear_val) = (None, None);
    if let Some(data) = &evaluator.data {
        run.observer.phase("features", 0, 1);
        let feats = data.features(method.as_ref());
        run.observer.phase("features", 1, 1);
        run.observer.phase("kNN", 0, 1);
        knn_val = Some(data.knn_on(Part::Validation, &feats, &cfg.eval.knn)?);
        knn = Some(data.knn(&feats, &cfg.eval.knn)?);
        run.observer.phase("kNN", 1, 1);
        if cfg.eval.linear_probe {
            const PROBE: &str = "linear probes (encoder: validation, test; raw pixels)";
            run.observer.phase(PROBE, 0, 3);
            linear_val = Some(data.linear_on(Part::Validation, &feats, &cfg.eval.linear)?);
            run.observer.phase(PROBE, 1, 3);
            linear = Some(data.linear(&feats, &cfg.eval.linear)?);
            run.observer.phase(PROBE, 2, 3);
            raw_linear = Some(data.linear(&data.raw_features(), &cfg.eval.linear)?);
            run.observer.phase(PROBE, 3, 3);
        }
        trained_feats = Some(feats);
    }
    let method_report = evaluator
        .data
        .as_ref()
        .and_then(|d| method.method_report(d));
    let export_dir = run.run_dir.join("export");
    if primary {
        run.observer.phase("export", 0, 1);
        let extra = serde_json::json!({"dataset": train.name, "image_size": train.height, "knn_top1": knn, "linear_top1": linear});
        export(cfg, method.as_ref(), in_channels, &export_dir, extra)?;
        run.observer.phase("export", 1, 1);
    }
    // The controls come after the trained model's figures, so building the
    // untrained encoder draws nothing those figures depend on.
    let controls = match (&evaluator.data, &trained_feats) {
        (Some(data), Some(feats)) => Some(controls(
            cfg,
            data,
            feats,
            device,
            in_channels,
            run.observer,
        )?),
        _ => None,
    };

    let (test_images, eval_train_images, validation_images, knn_k) = match &evaluator.data {
        Some(d) => (
            d.test.len(),
            d.train.len(),
            d.validation.len(),
            Some(cfg.eval.knn.k.min(d.train.len() as i64)),
        ),
        None => (0, 0, 0, None),
    };
    let evaluation = match &evaluator.data {
        Some(d) => format!(
            "{} ({} test images; kNN bank and probe training set: {} of the {} training \
             images; validation part: {} other training images, [eval] validation_fraction \
             {} split_seed {}, read by the per-epoch kNN)",
            loaded.evaluation,
            d.test.len(),
            d.train.len(),
            train.len(),
            d.validation.len(),
            cfg.eval.validation_fraction,
            cfg.eval.split_seed
        ),
        None if !primary => "on rank 0".to_string(),
        None => loaded.evaluation.clone(),
    };
    let out = RunSummary {
        method: method.name().to_string(),
        dataset: train.name.clone(),
        device: describe(device),
        train_images: train.len(),
        test_images,
        eval_train_images,
        validation_images,
        batch_size: cfg.run.batch_size,
        ranks,
        epochs: cfg.trainer.epochs,
        steps: summary.steps,
        final_loss: summary.final_loss,
        train_seconds: summary.train_seconds,
        train_images_per_s: summary.samples_per_s,
        wall_seconds: run.seconds(),
        knn_k,
        knn_k_configured: cfg.eval.knn.k,
        knn_top1: knn,
        linear_top1: linear,
        knn_val_top1: knn_val,
        linear_val_top1: linear_val,
        raw_knn_top1: raw_knn,
        raw_linear_top1: raw_linear,
        random_knn_top1: controls.as_ref().and_then(|c| c.knn),
        random_linear_top1: controls.as_ref().and_then(|c| c.linear),
        random_knn_val_top1: controls.as_ref().and_then(|c| c.knn_val),
        random_linear_val_top1: controls.as_ref().and_then(|c| c.linear_val),
        few_shot: controls.and_then(|c| c.few_shot),
        evaluation,
        collapse_warnings: [summary.warnings.clone(), method.method_warnings()].concat(),
        method_report,
        collapse_monitors: cfg.trainer.collapse.enabled,
        image_cache: loaded.cache,
        skipped_files,
        skipped_examples,
        run_dir: run.run_dir.clone(),
        export_dir,
        curves: run.run_dir.join(selfsup_core::trainer::PLOT_FILE),
        train: Some(summary),
    };
    run.finish(out)
}

/// The random-weights control (test split and validation part) and the
/// few-shot rows.
struct Controls {
    knn: Option<f64>,
    linear: Option<f64>,
    knn_val: Option<f64>,
    linear_val: Option<f64>,
    few_shot: Option<FewShotRows>,
}

/// The untrained encoder's figures: kNN and (test, validation) probe.
struct RandomWeights {
    knn: f64,
    knn_val: f64,
    linear: Option<(f64, f64)>,
    features: Features,
}

/// The same encoder untrained (seeded by core's random-weights seed)
/// through the same kNN and probe code, and N-way K-shot episodes for the
/// pre-trained (`trained`: the final evaluation's features), untrained and
/// raw-pixel features.
fn controls(
    cfg: &VisionRunConfig,
    data: &EvalData,
    trained: &Features,
    device: tch::Device,
    in_channels: i64,
    observer: &mut dyn selfsup_core::trainer::Observer,
) -> Result<Controls> {
    const RANDOM: &str = "random-weights control";
    let random = if cfg.eval.random_weights {
        observer.phase(RANDOM, 0, 1);
        selfsup_core::run::seed_random_weights(cfg.trainer.seed);
        let m = build_method(cfg, device, in_channels)?;
        let f = data.features(m.as_ref());
        let knn = data.knn(&f, &cfg.eval.knn)?;
        let knn_val = data.knn_on(Part::Validation, &f, &cfg.eval.knn)?;
        let linear = match cfg.eval.linear_probe {
            true => Some((
                data.linear(&f, &cfg.eval.linear)?,
                data.linear_on(Part::Validation, &f, &cfg.eval.linear)?,
            )),
            false => None,
        };
        observer.phase(RANDOM, 1, 1);
        Some(RandomWeights {
            knn,
            knn_val,
            linear,
            features: f,
        })
    } else {
        None
    };
    const FEW: &str = "few-shot episodes";
    let few_shot_rows = match cfg.eval.few_shot.fitted_to(&data.test_y) {
        Some(fs) => {
            observer.phase(FEW, 0, 3);
            let pretrained = few_shot(&trained.test, &data.test_y, &fs)?;
            observer.phase(FEW, 1, 3);
            let random_weights = match &random {
                Some(r) => few_shot(&r.features.test, &data.test_y, &fs)?,
                None => Vec::new(),
            };
            observer.phase(FEW, 2, 3);
            let raw_pixels = few_shot(&data.raw_features().test, &data.test_y, &fs)?;
            observer.phase(FEW, 3, 3);
            Some(FewShotRows {
                pretrained,
                random_weights,
                raw_pixels,
            })
        }
        None => {
            observer.phase(
                "few-shot episodes skipped: fewer than 2 test classes have enough images \
                 (max shots + queries each)",
                0,
                0,
            );
            None
        }
    };
    Ok(Controls {
        knn: random.as_ref().map(|r| r.knn),
        linear: random.as_ref().and_then(|r| r.linear.map(|l| l.0)),
        knn_val: random.as_ref().map(|r| r.knn_val),
        linear_val: random.as_ref().and_then(|r| r.linear.map(|l| l.1)),
        few_shot: few_shot_rows,
    })
}
