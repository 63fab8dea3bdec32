//! Frozen-encoder evaluation on images: the labelled data it scores
//! ([`EvalData`]: the kNN bank / probe training set, the validation part
//! carved from the training images, the test split; kNN, linear probe,
//! raw-pixel baselines), its caps, and the per-epoch evaluator of a run (kNN
//! on the validation part, views for the collapse monitors). Choices are
//! made on the validation part; the test split is read once, at the end.
use crate::config::{DataFormat, VisionRunConfig, DEFAULT_FOLDER_EVAL_IMAGES};
use crate::data::{ImageDataset, Normalize};
use crate::load::{load_data, spread};
use selfsup_core::eval::split::by_sample;
use selfsup_core::eval::{knn_top1, linear_probe_top1, KnnConfig, LinearProbeConfig};
use selfsup_core::method::Method;
use selfsup_core::trainer::{EpochEval, EpochEvaluator};
use selfsup_core::{Error, Result};
use std::path::Path;
use tch::Tensor;

/// Encoder features of `xs` in chunks, on the method's device, returned on the CPU.
pub fn features<M: Method + ?Sized>(method: &M, xs: &Tensor, chunk: i64) -> Tensor {
    let device = method.var_store().device();
    let n = xs.size()[0];
    tch::no_grad(|| {
        let parts: Vec<Tensor> = (0..n)
            .step_by(chunk as usize)
            .map(|s| {
                method
                    .embed(&xs.narrow(0, s, chunk.min(n - s)).to_device(device))
                    .to_device(tch::Device::Cpu)
            })
            .collect();
        Tensor::cat(&parts, 0)
    })
}

/// Rows scored per raw-pixel kNN call (bounds the scored features held).
const RAW_KNN_CHUNK: usize = 1024;

/// The per-epoch kNN figure's name in `metrics.jsonl`, the curves and
/// TensorBoard (it reads the validation part, never the test split; runs
/// before the validation part logged `kNN top-1`, on the test split).
pub const EPOCH_KNN: &str = "kNN top-1 (validation)";

/// The raw-pixel kNN of the validation part, the per-epoch curve's
/// reference line (`baseline: raw-pixel kNN`, on the test split, before).
pub const EPOCH_RAW_KNN: &str = "baseline: raw-pixel kNN (validation)";

/// Which labelled images a figure scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The validation part of the training images: what the per-epoch kNN
    /// reads and choices are made on.
    Validation,
    /// The test split: read at the end, reported separately.
    Test,
}

/// What [`EvalData::build`] takes from `[eval]`: the validation part's
/// fraction and seed, and the caps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalSettings {
    /// `[eval] validation_fraction`.
    pub validation_fraction: f64,
    /// `[eval] split_seed`.
    pub split_seed: u64,
    /// At most this many images in the kNN bank / probe training set.
    pub max_train: Option<usize>,
    /// At most this many images in the validation part, and in the test split.
    pub max_held_out: Option<usize>,
}

impl EvalSettings {
    /// The settings of a run config (its caps: [`eval_caps`]).
    pub fn of(cfg: &VisionRunConfig) -> Self {
        let (max_train, max_held_out) = eval_caps(cfg);
        Self {
            validation_fraction: cfg.eval.validation_fraction,
            split_seed: cfg.eval.split_seed,
            max_train,
            max_held_out,
        }
    }
}

/// The labelled images evaluation uses. The training images are split,
/// stratified by class and seeded ([`selfsup_core::eval::split::by_sample`]),
/// into the kNN memory bank / probe training set and a disjoint validation
/// part; the test split is scored at the end. Every part is capped (evenly
/// spread). Images stay bytes; float tensors are made chunk by chunk.
pub struct EvalData {
    /// The kNN memory bank and the probes' training set.
    pub train: ImageDataset,
    /// Labels of `train`.
    pub train_y: Tensor,
    /// The validation part (none of it in `train`).
    pub validation: ImageDataset,
    /// Labels of `validation`.
    pub validation_y: Tensor,
    /// The test split, read at the end only.
    pub test: ImageDataset,
    /// Labels of `test`.
    pub test_y: Tensor,
    /// Indices into the training images of `train`'s images (sorted).
    pub train_indices: Vec<usize>,
    /// Indices into the training images of `validation`'s images (sorted).
    pub validation_indices: Vec<usize>,
    pub classes: i64,
    pub norm: Normalize,
}

impl EvalData {
    /// Splits `train` into the bank and the validation part and caps every
    /// part as `s` says. A training set with no class of two or more
    /// images cannot give a validation part: an error naming
    /// `[eval] validation_fraction` and the fix.
    pub fn build(
        train: &ImageDataset,
        test: &ImageDataset,
        norm: &Normalize,
        s: &EvalSettings,
    ) -> Result<Self> {
        let labels = train.labels.as_deref().ok_or_else(|| unlabelled(train))?;
        let split = by_sample(labels, s.validation_fraction, s.split_seed).map_err(|e| {
            Error::Config(format!(
                "{}: {} labelled training image(s) are too few to set a validation part aside \
                 ([eval] validation_fraction = {}): {e}; give more training images (a larger \
                 [data] train_images, or more images per class folder), each class with at \
                 least 2",
                train.name,
                labels.len(),
                s.validation_fraction
            ))
        })?;
        let train_indices = capped(&split.train, s.max_train);
        let validation_indices = capped(&split.validation, s.max_held_out);
        let test_indices = capped(&(0..test.len()).collect::<Vec<_>>(), s.max_held_out);
        let bank = train.subset(&train_indices);
        let mut validation = train.subset(&validation_indices);
        validation.name = format!("{} (validation part)", train.name);
        let test = if test_indices.len() < test.len() {
            test.subset(&test_indices)
        } else {
            test.clone()
        };
        let labels = |d: &ImageDataset| d.labels_tensor().ok_or_else(|| unlabelled(d));
        Ok(Self {
            train_y: labels(&bank)?,
            validation_y: labels(&validation)?,
            test_y: labels(&test)?,
            classes: train.classes.len().max(1) as i64,
            norm: norm.clone(),
            train: bank,
            validation,
            test,
            train_indices,
            validation_indices,
        })
    }

    /// Loads both splits as a run config describes them (an image folder
    /// needs its `test_path`) and builds the parts with its `[eval]` settings.
    pub fn load(cfg: &VisionRunConfig, data_dir: &Path) -> Result<Self> {
        let loaded = load_data(cfg, data_dir, &mut selfsup_core::trainer::Silent)?;
        let test = loaded.test.ok_or_else(|| {
            Error::Config(format!(
                "cannot evaluate: {}",
                loaded.evaluation.trim_start_matches("skipped: ")
            ))
        })?;
        let norm = Normalize::for_channels(loaded.train.channels);
        Self::build(&loaded.train, &test, &norm, &EvalSettings::of(cfg))
    }

    /// Frozen encoder features of the three parts (computed once, used by
    /// every protocol).
    pub fn features<M: Method + ?Sized>(&self, method: &M) -> Features {
        Features {
            train: dataset_features(method, &self.train, &self.norm, 512),
            validation: dataset_features(method, &self.validation, &self.norm, 512),
            test: dataset_features(method, &self.test, &self.norm, 512),
        }
    }

    /// The raw pixels as features: the baseline pre-training has to beat.
    pub fn raw_features(&self) -> Features {
        let all = |d: &ImageDataset| {
            d.to_tensor(&(0..d.len()).collect::<Vec<_>>(), &self.norm)
                .flatten(1, -1)
        };
        Features {
            train: all(&self.train),
            validation: all(&self.validation),
            test: all(&self.test),
        }
    }

    /// The images and labels of a part.
    fn part(&self, part: Part) -> (&ImageDataset, &Tensor) {
        match part {
            Part::Validation => (&self.validation, &self.validation_y),
            Part::Test => (&self.test, &self.test_y),
        }
    }

    /// Weighted kNN top-1 of the raw pixels on `part`, its images scored a
    /// chunk at a time (the same figure as kNN on [`EvalData::raw_features`],
    /// without holding the part's floats).
    pub fn raw_knn(&self, part: Part, cfg: &KnnConfig) -> Result<f64> {
        let (scored, scored_y) = self.part(part);
        let bank = self
            .train
            .to_tensor(&(0..self.train.len()).collect::<Vec<_>>(), &self.norm)
            .flatten(1, -1);
        let n = scored.len();
        let mut correct = 0.0;
        let mut start = 0;
        while start < n {
            let idx: Vec<usize> = (start..(start + RAW_KNN_CHUNK).min(n)).collect();
            let x = scored.to_tensor(&idx, &self.norm).flatten(1, -1);
            let y = scored_y.narrow(0, start as i64, idx.len() as i64);
            let acc = knn_top1(&bank, &self.train_y, &x, &y, self.classes, cfg)?;
            correct += acc * idx.len() as f64;
            start += idx.len();
        }
        Ok(if n == 0 { 0.0 } else { correct / n as f64 })
    }

    /// Weighted kNN top-1 on the test split.
    pub fn knn(&self, f: &Features, cfg: &KnnConfig) -> Result<f64> {
        self.knn_on(Part::Test, f, cfg)
    }

    /// Linear-probe top-1 on the test split.
    pub fn linear(&self, f: &Features, cfg: &LinearProbeConfig) -> Result<f64> {
        self.linear_on(Part::Test, f, cfg)
    }

    /// Weighted kNN top-1 on `part`, the bank being `f.train`.
    pub fn knn_on(&self, part: Part, f: &Features, cfg: &KnnConfig) -> Result<f64> {
        let (x, y) = (f.of(part), self.part(part).1);
        knn_top1(&f.train, &self.train_y, x, y, self.classes, cfg)
    }

    /// Linear-probe top-1 on `part`. The probe is trained on `f.train` alone
    /// with its own seed, so the validation and test figures score the same
    /// probe (it is trained once for each).
    pub fn linear_on(&self, part: Part, f: &Features, cfg: &LinearProbeConfig) -> Result<f64> {
        let (x, y) = (f.of(part), self.part(part).1);
        linear_probe_top1(&f.train, &self.train_y, x, y, self.classes, cfg)
    }

    /// Weighted kNN top-1 of `method`'s features on the validation part:
    /// the per-epoch figure. Only the bank and the validation part are
    /// embedded; the test split is not read.
    pub fn validation_knn<M: Method + ?Sized>(&self, method: &M, cfg: &KnnConfig) -> Result<f64> {
        let bank = dataset_features(method, &self.train, &self.norm, 512);
        let validation = dataset_features(method, &self.validation, &self.norm, 512);
        knn_top1(
            &bank,
            &self.train_y,
            &validation,
            &self.validation_y,
            self.classes,
            cfg,
        )
    }
}

/// The error of a split without labels.
fn unlabelled(d: &ImageDataset) -> Error {
    Error::Config(format!(
        "{}: evaluation needs labels and this split has none",
        d.name
    ))
}

/// At most `cap` of `idx`, evenly spread ([`spread`]); all of them without a cap.
fn capped(idx: &[usize], cap: Option<usize>) -> Vec<usize> {
    match cap {
        Some(k) if k < idx.len() => spread(idx.len(), k)
            .into_iter()
            .filter_map(|i| idx.get(i).copied())
            .collect(),
        _ => idx.to_vec(),
    }
}

/// Encoder features of every image of `d`, `chunk` images at a time (only one
/// chunk of float images exists at once), returned on the CPU.
pub fn dataset_features<M: Method + ?Sized>(
    method: &M,
    d: &ImageDataset,
    norm: &Normalize,
    chunk: usize,
) -> Tensor {
    let device = method.var_store().device();
    let n = d.len();
    let chunk = chunk.max(1);
    tch::no_grad(|| {
        let parts: Vec<Tensor> = (0..n)
            .step_by(chunk)
            .map(|s| {
                let idx: Vec<usize> = (s..(s + chunk).min(n)).collect();
                method
                    .embed(&d.to_tensor(&idx, norm).to_device(device))
                    .to_device(tch::Device::Cpu)
            })
            .collect();
        if parts.is_empty() {
            Tensor::zeros([0, 0], (tch::Kind::Float, tch::Device::Cpu))
        } else {
            Tensor::cat(&parts, 0)
        }
    })
}

/// Features of the bank, the validation part and the test split under one
/// representation.
pub struct Features {
    pub train: Tensor,
    pub validation: Tensor,
    pub test: Tensor,
}

impl Features {
    /// The features of a scored part.
    pub fn of(&self, part: Part) -> &Tensor {
        match part {
            Part::Validation => &self.validation,
            Part::Test => &self.test,
        }
    }
}

/// The most bank / held-out images evaluation uses (the config's, or the
/// image folder defaults): `[eval] knn_train_images`, and `test_images`,
/// which caps the test split and the validation part alike.
pub fn eval_caps(cfg: &VisionRunConfig) -> (Option<usize>, Option<usize>) {
    let default =
        (cfg.data.format == DataFormat::ImageFolder).then_some(DEFAULT_FOLDER_EVAL_IMAGES);
    (
        cfg.eval.knn_train_images.or(default),
        cfg.eval.test_images.or(default),
    )
}

/// Per-epoch kNN on the validation part (when there is one; the test split
/// is never read here) and views for the collapse monitors.
pub(crate) struct VisionEvaluator {
    pub(crate) data: Option<EvalData>,
    pub(crate) monitor_views: Option<(Tensor, Tensor)>,
    pub(crate) knn: KnnConfig,
    pub(crate) every_epoch: bool,
    /// The raw-pixel kNN of the validation part, the curve's reference line.
    pub(crate) raw_validation_knn: Option<f64>,
}

impl<M: Method + ?Sized> EpochEvaluator<M> for VisionEvaluator {
    fn evaluate(&mut self, method: &M, _epoch: usize) -> Result<EpochEval> {
        let mut metrics = Vec::new();
        if let Some(r) = self.raw_validation_knn {
            metrics.push((EPOCH_RAW_KNN.to_string(), r));
        }
        if let (true, Some(data)) = (self.every_epoch, &self.data) {
            metrics.push((EPOCH_KNN.into(), data.validation_knn(method, &self.knn)?));
        }
        let views = EpochEvaluator::<M>::monitor_views(self, method)?;
        Ok(EpochEval { metrics, views })
    }
    fn monitor_views(&mut self, method: &M) -> Result<Option<(Tensor, Tensor)>> {
        Ok(self.monitor_views.as_ref().map(|(a, b)| {
            let device = method.var_store().device();
            tch::no_grad(|| {
                (
                    method
                        .project(&a.to_device(device))
                        .to_device(tch::Device::Cpu),
                    method
                        .project(&b.to_device(device))
                        .to_device(tch::Device::Cpu),
                )
            })
        }))
    }
}

#[cfg(test)]
#[path = "evaluate/tests.rs"]
mod tests;
