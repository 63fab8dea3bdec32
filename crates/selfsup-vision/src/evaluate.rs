//! Frozen-encoder evaluation on images: the labelled data it scores
//! ([`EvalData`]: kNN, linear probe, raw-pixel baselines), its caps, and the
//! per-epoch evaluator of a run (kNN on the test split, views for the
//! collapse monitors).
use crate::config::{DataFormat, VisionRunConfig, DEFAULT_FOLDER_EVAL_IMAGES};
use crate::data::{ImageDataset, Normalize};
use crate::load::{load_data, spread};
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

/// Test rows scored per raw-pixel kNN call (bounds the test features held).
const RAW_KNN_TEST_CHUNK: usize = 1024;

/// The labelled images evaluation uses: (a spread of) the pre-training
/// train split as the kNN memory bank / probe training set, the test split
/// to score. Images stay bytes; float tensors are made chunk by chunk.
pub struct EvalData {
    pub train: ImageDataset,
    pub train_y: Tensor,
    pub test: ImageDataset,
    pub test_y: Tensor,
    pub classes: i64,
    pub norm: Normalize,
}

impl EvalData {
    /// Every image of both splits.
    pub fn new(train: &ImageDataset, test: &ImageDataset, norm: &Normalize) -> Result<Self> {
        Self::capped(train, test, norm, None, None)
    }

    /// At most `max_train` / `max_test` images of each split, evenly spread.
    pub fn capped(
        train: &ImageDataset,
        test: &ImageDataset,
        norm: &Normalize,
        max_train: Option<usize>,
        max_test: Option<usize>,
    ) -> Result<Self> {
        let pick = |d: &ImageDataset, cap: Option<usize>| match cap {
            Some(k) if k < d.len() => d.subset(&spread(d.len(), k)),
            _ => d.clone(),
        };
        let (train, test) = (pick(train, max_train), pick(test, max_test));
        let labels = |d: &ImageDataset| {
            d.labels_tensor().ok_or_else(|| {
                Error::Config(format!(
                    "{}: evaluation needs labels and this split has none",
                    d.name
                ))
            })
        };
        Ok(Self {
            train_y: labels(&train)?,
            test_y: labels(&test)?,
            classes: train.classes.len().max(1) as i64,
            norm: norm.clone(),
            train,
            test,
        })
    }

    /// Loads both splits as a run config describes them (an image folder
    /// needs its `test_path`).
    pub fn load(cfg: &VisionRunConfig, data_dir: &Path) -> Result<Self> {
        let loaded = load_data(cfg, data_dir, &mut selfsup_core::trainer::Silent)?;
        let test = loaded.test.ok_or_else(|| {
            Error::Config(format!(
                "cannot evaluate: {}",
                loaded.evaluation.trim_start_matches("skipped: ")
            ))
        })?;
        let norm = Normalize::for_channels(loaded.train.channels);
        let (max_train, max_test) = eval_caps(cfg);
        Self::capped(&loaded.train, &test, &norm, max_train, max_test)
    }

    /// Frozen encoder features of both splits (computed once, used by every protocol).
    pub fn features<M: Method + ?Sized>(&self, method: &M) -> Features {
        Features {
            train: dataset_features(method, &self.train, &self.norm, 512),
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
            test: all(&self.test),
        }
    }

    /// Weighted kNN top-1 of the raw pixels, the test images scored a chunk
    /// at a time (the same figure as `knn(&raw_features())`, without holding
    /// the test split's floats).
    pub fn raw_knn(&self, cfg: &KnnConfig) -> Result<f64> {
        let bank = self
            .train
            .to_tensor(&(0..self.train.len()).collect::<Vec<_>>(), &self.norm)
            .flatten(1, -1);
        let n = self.test.len();
        let mut correct = 0.0;
        let mut start = 0;
        while start < n {
            let idx: Vec<usize> = (start..(start + RAW_KNN_TEST_CHUNK).min(n)).collect();
            let x = self.test.to_tensor(&idx, &self.norm).flatten(1, -1);
            let y = self.test_y.narrow(0, start as i64, idx.len() as i64);
            let acc = knn_top1(&bank, &self.train_y, &x, &y, self.classes, cfg)?;
            correct += acc * idx.len() as f64;
            start += idx.len();
        }
        Ok(if n == 0 { 0.0 } else { correct / n as f64 })
    }

    /// Weighted kNN top-1 on the test split.
    pub fn knn(&self, f: &Features, cfg: &KnnConfig) -> Result<f64> {
        knn_top1(
            &f.train,
            &self.train_y,
            &f.test,
            &self.test_y,
            self.classes,
            cfg,
        )
    }

    /// Linear-probe top-1 on the test split.
    pub fn linear(&self, f: &Features, cfg: &LinearProbeConfig) -> Result<f64> {
        linear_probe_top1(
            &f.train,
            &self.train_y,
            &f.test,
            &self.test_y,
            self.classes,
            cfg,
        )
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

/// Features of the train and test splits under one representation.
pub struct Features {
    pub train: Tensor,
    pub test: Tensor,
}

/// The most train / test images evaluation uses (the config's, or the image
/// folder defaults).
pub fn eval_caps(cfg: &VisionRunConfig) -> (Option<usize>, Option<usize>) {
    let default =
        (cfg.data.format == DataFormat::ImageFolder).then_some(DEFAULT_FOLDER_EVAL_IMAGES);
    (
        cfg.eval.knn_train_images.or(default),
        cfg.eval.test_images.or(default),
    )
}

/// Per-epoch kNN on the test split (when there is one) and views for the
/// collapse monitors.
pub(crate) struct VisionEvaluator {
    pub(crate) data: Option<EvalData>,
    pub(crate) monitor_views: Option<(Tensor, Tensor)>,
    pub(crate) knn: KnnConfig,
    pub(crate) every_epoch: bool,
    pub(crate) raw_knn: Option<f64>,
}

impl<M: Method + ?Sized> EpochEvaluator<M> for VisionEvaluator {
    fn evaluate(&mut self, method: &M, _epoch: usize) -> Result<EpochEval> {
        let mut metrics = Vec::new();
        if let Some(r) = self.raw_knn {
            metrics.push(("baseline: raw-pixel kNN".to_string(), r));
        }
        if let (true, Some(data)) = (self.every_epoch, &self.data) {
            let f = data.features(method);
            metrics.push(("kNN top-1".into(), data.knn(&f, &self.knn)?));
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
