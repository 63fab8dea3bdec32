//! The video workflow: clips (Moving Fashion-MNIST generated from
//! Fashion-MNIST, or the user's frame folders) -> clip-consistent
//! augmentation -> V-JEPA or temporal order -> trainer (per-epoch
//! validation probes and collapse monitors) -> garment and direction probes
//! beside random weights, raw frames and the best constant guess -> export,
//! on core's [`Run`] (threads, device, `config.toml`, the trainer,
//! `summary.json`). Reads no argv or environment and draws nothing.
use crate::batches::VideoBatches;
use crate::clips::{DataReport, VideoSet};
pub use crate::config::VideoRunConfig;
use crate::config::{DataConfig, MovingData};
use crate::eval::{
    encoder_features, probe_table, raw_features, FeatureSet, ProbeRow, ProbeSplit, VideoEpochEval,
};
use crate::export::export_encoder;
use crate::methods::{build, VideoMethod};
use crate::moving::{generate_set, MovingLabels, TEST_STREAM, TRAIN_STREAM};
use selfsup_core::device::describe;
use selfsup_core::eval::split::{by_sample, Split};
use selfsup_core::run::{seed_random_weights, seed_weights, trainable_parameters, Run, RunOptions};
use selfsup_core::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::Device;

/// What a video run produced (also written as `summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct VideoRunSummary {
    pub method: String,
    pub device: String,
    pub threads: Option<usize>,
    pub data: DataReport,
    pub frames: i64,
    pub image_size: i64,
    pub tokens: i64,
    pub batch_size: usize,
    pub parameters: i64,
    pub epochs: usize,
    pub steps: u64,
    pub final_loss: f64,
    pub train_seconds: f64,
    pub clips_per_s: f64,
    pub wall_seconds: f64,
    /// Probe clips split: train part, validation part, test clips.
    pub probe_sizes: Option<(usize, usize, usize)>,
    pub probes: Vec<ProbeRow>,
    /// Why there is no probe (frame folders carry no labels).
    pub probe_note: Option<String>,
    pub warnings: Vec<String>,
    pub export_dir: PathBuf,
}

/// The labelled side of Moving Fashion-MNIST.
pub struct Labelled {
    /// Labels of the probe clips (the first `[eval] probe_clips` training clips).
    pub probe_labels: MovingLabels,
    pub test: VideoSet,
    pub test_labels: MovingLabels,
    /// Probe clips: train and validation parts (indices into the training set).
    pub split: Split,
    /// Garment classes, direction bins.
    pub classes: [i64; 2],
}

/// The clips of a run.
pub struct Loaded {
    pub train: Arc<VideoSet>,
    pub labelled: Option<Labelled>,
    pub report: DataReport,
}

fn fashion_dir(m: &MovingData, root: &Path) -> PathBuf {
    root.join(&m.fashion_mnist)
}

fn frames_dir(folder: &str, root: &Path) -> PathBuf {
    root.join(folder)
}

/// The data folder `cfg` reads must be there (before the run folder is
/// written): an error naming it, the key and the data root.
pub fn check_data(cfg: &VideoRunConfig, root: &Path) -> Result<()> {
    let (dir, key) = match &cfg.data {
        DataConfig::MovingFashionMnist(m) => (fashion_dir(m, root), "[data] fashion_mnist"),
        DataConfig::Frames(f) => (frames_dir(&f.folder, root), "[data] folder"),
    };
    if !dir.is_dir() {
        return Err(Error::Data(format!(
            "{key}: {} is not a folder under the data root {} (check the spelling, fetch \
             Fashion-MNIST with `cargo xtask fetch fashion-mnist`, or pass --data)",
            dir.display(),
            root.display()
        )));
    }
    Ok(())
}

/// Reads or generates the clips of `cfg` under the data root `root`.
pub fn load(cfg: &VideoRunConfig, root: &Path) -> Result<Loaded> {
    let (size, frames) = (cfg.model.image_size as usize, cfg.model.frames as usize);
    match &cfg.data {
        DataConfig::Frames(f) => {
            let (set, report) =
                crate::frames::read_folder(&frames_dir(&f.folder, root), size, frames)?;
            Ok(Loaded {
                train: Arc::new(set),
                labelled: None,
                report,
            })
        }
        DataConfig::MovingFashionMnist(m) => {
            let dir = fashion_dir(m, root);
            let motion = m.motion();
            let train_src = crate::idx::read_split(&dir, "train")?;
            let test_src = crate::idx::read_split(&dir, "t10k")?;
            let (train, mut train_labels) = generate_set(
                &train_src,
                &motion,
                size,
                frames,
                m.seed,
                TRAIN_STREAM,
                m.train_clips,
            )?;
            let (test, test_labels) = generate_set(
                &test_src,
                &motion,
                size,
                frames,
                m.seed,
                TEST_STREAM,
                m.test_clips,
            )?;
            let n = cfg.eval.probe_clips.min(train.len());
            train_labels.garments.truncate(n);
            train_labels.directions.truncate(n);
            let first: Vec<i64> = train_labels
                .garments
                .iter()
                .map(|g| g.first().copied().unwrap_or(0))
                .collect();
            let split = by_sample(&first, cfg.eval.validation_fraction, cfg.eval.split_seed)?;
            let names = |tag: &str, n: usize| (0..n).map(|i| format!("{tag}-{i}")).collect();
            let report = DataReport {
                name: format!("moving-fashion-mnist ({})", dir.display()),
                train_clips: train.len(),
                test_clips: test.len(),
                ..DataReport::default()
            };
            Ok(Loaded {
                train: Arc::new(VideoSet {
                    size,
                    names: names("train", train.len()),
                    clips: train,
                }),
                labelled: Some(Labelled {
                    probe_labels: train_labels,
                    test: VideoSet {
                        size,
                        names: names("test", test.len()),
                        clips: test,
                    },
                    test_labels,
                    split,
                    classes: [10, m.direction_bins as i64],
                }),
                report,
            })
        }
    }
}

/// The trained method's architecture with the run's random weights
/// (`seed ^ RANDOM_WEIGHTS_SEED`).
pub fn random_weights(cfg: &VideoRunConfig, device: Device) -> Result<Box<dyn VideoMethod>> {
    seed_random_weights(cfg.trainer.seed);
    build(&cfg.method, &cfg.model, cfg.trainer.seed, device)
}

/// The final probe table of `method` beside random weights, raw frames and
/// the constant guess.
pub fn final_probes(
    cfg: &VideoRunConfig,
    method: &dyn VideoMethod,
    random: &dyn VideoMethod,
    data: &Loaded,
    lab: &Labelled,
    device: Device,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<ProbeRow>> {
    let frames = cfg.model.frames as usize;
    let all_test: Vec<usize> = (0..lab.test.len()).collect();
    let (tr, va) = (&lab.split.train, &lab.split.validation);
    let mut features = Vec::new();
    for (name, m) in [
        (method.name().to_string(), method),
        ("random weights".to_string(), random),
    ] {
        log(&format!("features: {name}"));
        let f = |set: &VideoSet, idx: &[usize]| {
            encoder_features(
                m,
                set,
                idx,
                frames,
                cfg.eval.batch,
                cfg.eval.pooling,
                device,
            )
        };
        features.push(FeatureSet {
            name,
            train: f(&data.train, tr),
            validation: f(&data.train, va),
            test: f(&lab.test, &all_test),
        });
    }
    let pool = cfg.eval.raw_pool;
    features.push(FeatureSet {
        name: "raw frames".into(),
        train: raw_features(&data.train, tr, frames, pool),
        validation: raw_features(&data.train, va, frames, pool),
        test: raw_features(&lab.test, &all_test, frames, pool),
    });
    // The split indices index the probe clips' labels directly (they are the
    // first training clips), so the labels are picked by the same indices.
    let split = ProbeSplit {
        train: tr,
        validation: va,
        probe_labels: &lab.probe_labels,
        test_labels: &lab.test_labels,
        classes: lab.classes,
    };
    probe_table(&split, &features, &cfg.eval, log)
}

/// Pre-trains, evaluates and exports as `cfg` says; writes `config.toml`
/// and `summary.json` into the run folder.
pub fn pretrain(cfg: &VideoRunConfig, opts: RunOptions) -> Result<VideoRunSummary> {
    cfg.validate().map_err(Error::Config)?;
    opts.single_process("video pre-training")?;
    let root = opts.data_root();
    check_data(cfg, &root)?;
    let mut run = Run::start(
        "video pre-training",
        &cfg.run,
        &cfg.trainer,
        cfg.to_toml(),
        false,
        opts,
    )?;
    let device = run.device;
    let seed = cfg.trainer.seed;
    run.log(&format!("reading clips under {}", root.display()));
    let data = load(cfg, &root)?;
    if data.train.len() < cfg.run.batch_size {
        return Err(Error::Data(format!(
            "{}: {} clip(s), fewer than one batch of [run] batch_size = {}: lower it or add clips",
            data.report.name,
            data.train.len(),
            cfg.run.batch_size
        )));
    }
    run.log(&format!(
        "{}: {} training clips, {} test clips, {} frames read, {} clips resized",
        data.report.name,
        data.report.train_clips,
        data.report.test_clips,
        data.report.frames_read,
        data.report.resized_clips
    ));
    let frames = cfg.model.frames as usize;
    let batches = VideoBatches::new(
        data.train.clone(),
        frames,
        cfg.run.batch_size,
        seed,
        cfg.augment.clone(),
    );
    seed_weights(seed);
    let mut method = build(&cfg.method, &cfg.model, seed, device)?;
    let parameters = trainable_parameters(method.var_store());
    let (fit_idx, val_idx, monitor_idx, labels, classes) = match &data.labelled {
        Some(l) => (
            l.split
                .train
                .iter()
                .copied()
                .take(cfg.eval.epoch_probe_clips)
                .collect(),
            l.split.validation.clone(),
            l.split
                .validation
                .iter()
                .copied()
                .take(cfg.eval.monitor_clips)
                .collect(),
            Some(l.probe_labels.clone()),
            l.classes,
        ),
        None => (
            Vec::new(),
            Vec::new(),
            (0..data.train.len().min(cfg.eval.monitor_clips)).collect(),
            None,
            [0, 0],
        ),
    };
    let mut evaluator = VideoEpochEval {
        set: data.train.clone(),
        frames,
        batch: cfg.eval.batch,
        pooling: cfg.eval.pooling,
        device,
        fit_idx,
        val_idx,
        labels,
        classes,
        probe: selfsup_core::eval::linear_probe::LinearProbeConfig {
            weight_decay: cfg.eval.weight_decays.first().copied().unwrap_or(0.0),
            ..cfg.eval.probe.clone()
        },
        monitor_idx,
        augment: cfg.augment.clone(),
        seed,
    };
    let trainer = run.trainer(cfg.trainer.clone());
    run.log(&format!(
        "training {}: tubelet ViT {}x{}x{} on {} frames of {}x{} ({} tokens), width {}, depth {}, \
         {:.2} M parameters, on {}",
        cfg.method.name(),
        cfg.model.tubelet,
        cfg.model.patch_size,
        cfg.model.patch_size,
        cfg.model.frames,
        cfg.model.image_size,
        cfg.model.image_size,
        cfg.model.tokens(),
        cfg.model.embed_dim,
        cfg.model.depth,
        parameters as f64 / 1e6,
        describe(device)
    ));
    let summary = trainer.fit(
        method.as_mut(),
        &batches,
        &mut evaluator,
        &mut *run.observer,
        run.resume,
    )?;
    let (probes, probe_sizes, probe_note) = match &data.labelled {
        Some(lab) => {
            let random = random_weights(cfg, device)?;
            let rows = final_probes(
                cfg,
                method.as_ref(),
                random.as_ref(),
                &data,
                lab,
                device,
                &mut |l: &str| run.log(l),
            )?;
            (
                rows,
                Some((
                    lab.split.train.len(),
                    lab.split.validation.len(),
                    lab.test.len(),
                )),
                None,
            )
        }
        None => (
            Vec::new(),
            None,
            Some("frame folders carry no labels: the probes run on Moving Fashion-MNIST".into()),
        ),
    };
    let export_dir = run.run_dir.join("export");
    if run.primary {
        export_encoder(method.as_ref(), &cfg.model, &export_dir)?;
    }
    let out = VideoRunSummary {
        method: cfg.method.name().into(),
        device: describe(device),
        threads: cfg.run.threads,
        data: data.report.clone(),
        frames: cfg.model.frames,
        image_size: cfg.model.image_size,
        tokens: cfg.model.tokens(),
        batch_size: cfg.run.batch_size,
        parameters,
        epochs: cfg.trainer.epochs,
        steps: summary.steps,
        final_loss: summary.final_loss,
        train_seconds: summary.train_seconds,
        clips_per_s: summary.samples_per_s,
        wall_seconds: run.seconds(),
        probe_sizes,
        probes,
        probe_note,
        warnings: summary.warnings.clone(),
        export_dir,
    };
    run.finish(out)
}
