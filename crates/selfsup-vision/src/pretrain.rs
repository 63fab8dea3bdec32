//! The vision pre-training workflow: data -> views -> method -> trainer ->
//! evaluation -> export. The `selfsup` binary and the examples call this; it
//! reads no argv or environment and draws nothing.
use crate::augment::{AugmentConfig, Augmenter};
use crate::data::folder_cache::{
    default_cache_root, load_image_folder, CacheReport, FolderOptions, SkippedFile, MAX_CACHE_SIDE,
};
use crate::data::{self, ImageDataset, Normalize, Split};
use crate::export::export_encoder;
use crate::loader::ViewLoader;
use crate::methods::{
    BarlowTwins, Byol, Colorization, Context, DataFacts, Dino, Ijepa, Jigsaw, Mae, MethodConfig,
    MocoV2, MocoV3, Rotation, SimClr, SimSiam, Swav, VicReg,
};
use crate::models::EncoderConfig;
use selfsup_core::device::{describe, DeviceChoice};
use selfsup_core::distributed::{Distributed, Shard};
use selfsup_core::eval::{knn_top1, linear_probe_top1, KnnConfig, LinearProbeConfig};
use selfsup_core::method::Method;
use selfsup_core::trainer::{
    EpochEval, EpochEvaluator, Observer, TrainSummary, Trainer, TrainerConfig,
};
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;
use tch::Tensor;

/// Which on-disk format the data folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataFormat {
    /// `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`.
    #[default]
    FashionMnist,
    /// CIFAR-10 binary batches.
    Cifar10,
    /// CIFAR-100 binary files.
    Cifar100,
    /// The user's own folder of PNG / JPEG / WebP images: class sub-folders
    /// (labelled, `root/<class>/**/<image>`) or images directly in the folder
    /// (unlabelled); decoded once into a memory-mapped cache
    /// ([`crate::data::folder_cache`]).
    ImageFolder,
}

/// Side of the square images of an image folder when `image_size` is not given.
pub const DEFAULT_IMAGE_SIZE: usize = 64;
/// Channels of an image folder's images when `channels` is not given.
pub const DEFAULT_FOLDER_CHANNELS: usize = 3;
/// Train and test images evaluation uses on an image folder when
/// `[eval] knn_train_images` / `test_images` are not given.
pub const DEFAULT_FOLDER_EVAL_IMAGES: usize = 5000;

/// `[data]`: where the images come from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// `fashion-mnist` (default), `cifar10`, `cifar100` or `image-folder`.
    pub format: DataFormat,
    /// Folder of the dataset; `--data` overrides it.
    pub path: Option<PathBuf>,
    /// Pre-train on the first N training images only (all when absent); on an
    /// image folder, N images evenly spread over the sorted files (so every
    /// class keeps its share).
    pub train_images: Option<usize>,
    /// image-folder: side of the square images, in pixels (default 64, at
    /// most 1024). Each image's largest centred square is cut out (the
    /// shorter side kept whole) and resized to this side: torchvision's
    /// `Resize(s)` + `CenterCrop(s)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,
    /// image-folder: 1 (grey) or 3 (RGB, default). Grey, RGBA (over white),
    /// palette and 16-bit images are converted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
    /// image-folder: a labelled folder (the training folder's class names)
    /// scored by kNN and the linear probe. Without it, evaluation is skipped
    /// and the summary says why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_path: Option<PathBuf>,
    /// image-folder: skip unreadable images and count them (default false:
    /// the first one is an error naming it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_bad: Option<bool>,
    /// image-folder: where decoded images are cached (default
    /// `$SELFSUP_CACHE_DIR`, else `~/.cache/selfsup/image-cache`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
}

impl DataConfig {
    /// Colour channels of the images this config reads.
    pub fn channels(&self) -> i64 {
        match self.format {
            DataFormat::ImageFolder => self.channels.unwrap_or(DEFAULT_FOLDER_CHANNELS) as i64,
            f => f.channels(),
        }
    }

    /// How an image folder is read (side, channels, skip_bad, cache).
    pub fn folder_options(&self) -> FolderOptions {
        FolderOptions {
            side: self.image_size.unwrap_or(DEFAULT_IMAGE_SIZE),
            channels: self.channels.unwrap_or(DEFAULT_FOLDER_CHANNELS),
            skip_bad: self.skip_bad.unwrap_or(false),
            cache_root: self.cache_dir.clone().unwrap_or_else(default_cache_root),
        }
    }

    /// The `[data]` keys valid for the format, and their ranges.
    pub fn check(&self) -> Result<()> {
        if self.train_images == Some(0) {
            return Err(Error::Config(
                "[data] train_images = 0: leave it out to use every training image".into(),
            ));
        }
        if self.format != DataFormat::ImageFolder {
            let set = [
                ("image_size", self.image_size.is_some()),
                ("channels", self.channels.is_some()),
                ("test_path", self.test_path.is_some()),
                ("skip_bad", self.skip_bad.is_some()),
                ("cache_dir", self.cache_dir.is_some()),
            ];
            if let Some((key, _)) = set.iter().find(|(_, on)| *on) {
                let name = serde_json::to_value(self.format)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                return Err(Error::Config(format!(
                    "[data] {key}: only for format = \"image-folder\"; {name} has fixed image \
                     sizes, channels and splits (remove the key)"
                )));
            }
            return Ok(());
        }
        if let Some(s) = self.image_size {
            if !(1..=MAX_CACHE_SIDE).contains(&s) {
                return Err(Error::Config(format!(
                    "[data] image_size = {s}: give a side in 1..={MAX_CACHE_SIDE} pixels"
                )));
            }
        }
        if let Some(c) = self.channels {
            if c != 1 && c != 3 {
                return Err(Error::Config(format!(
                    "[data] channels = {c}: give 1 (grey) or 3 (RGB)"
                )));
            }
        }
        if self
            .test_path
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
            || self
                .cache_dir
                .as_ref()
                .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(Error::Config(
                "[data] test_path / cache_dir = \"\": give a folder or leave the key out".into(),
            ));
        }
        Ok(())
    }
}

/// `[eval]`: how the representation is measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    pub knn: KnnConfig,
    pub linear: LinearProbeConfig,
    /// Run kNN on the test split after every epoch (else only at the end).
    pub knn_every_epoch: bool,
    /// Images whose two views feed the collapse monitors every epoch.
    pub monitor_images: usize,
    /// Also train the linear probe at the end.
    pub linear_probe: bool,
    /// At most this many training images (evenly spread) form the kNN
    /// memory bank and the probes' training set; bounds the memory of the
    /// raw-pixel baselines (N x H*W*C floats). Default: all of them, except
    /// on an image folder: 5000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knn_train_images: Option<usize>,
    /// At most this many test images (evenly spread) are scored. Default:
    /// all of them, except on an image folder: 5000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_images: Option<usize>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            knn: KnnConfig::default(),
            linear: LinearProbeConfig::default(),
            knn_every_epoch: true,
            monitor_images: 1024,
            linear_probe: true,
            knn_train_images: None,
            test_images: None,
        }
    }
}

/// `[run]`: device, batch, threads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    pub device: DeviceChoice,
    /// Images per batch (per process).
    pub batch_size: usize,
    /// libtorch intra-op threads (default: libtorch's choice).
    pub threads: Option<usize>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            device: DeviceChoice::Auto,
            batch_size: 256,
            threads: None,
        }
    }
}

/// A whole vision run, as one TOML file (see `configs/vision/`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VisionRunConfig {
    pub run: RunConfig,
    pub data: DataConfig,
    pub model: EncoderConfig,
    pub method: MethodConfig,
    pub augment: AugmentConfig,
    pub trainer: TrainerConfig,
    pub eval: EvalConfig,
}

impl VisionRunConfig {
    /// Parses a config; unknown keys and impossible values
    /// ([`VisionRunConfig::check`]) are errors that name the file and key.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let cfg: Self = toml::from_str(text)
            .map_err(|e| Error::Config(format!("{}: {e}", origin.display())))?;
        cfg.check().map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", origin.display())),
            other => other,
        })?;
        Ok(cfg)
    }

    /// The checks that need no data: the trainer's and the method's ranges,
    /// the encoder and the augmentations, batch size, evaluation settings
    /// (k >= 1, monitor images when the monitors are on). `pretrain` makes
    /// them again before reading anything, so flag overrides are covered.
    pub fn check(&self) -> Result<()> {
        selfsup_core::run::check_common(&self.trainer, self.run.threads)?;
        if self.run.batch_size == 0 {
            return Err(Error::Config(
                "[run] batch_size = 0: give at least 2 images per batch".into(),
            ));
        }
        self.data.check()?;
        for (key, v) in [
            ("knn_train_images", self.eval.knn_train_images),
            ("test_images", self.eval.test_images),
        ] {
            if v == Some(0) {
                return Err(Error::Config(format!(
                    "[eval] {key} = 0: leave it out to use the default"
                )));
            }
        }
        self.model.validate()?;
        self.augment.validate()?;
        self.method.check_ranges()?;
        self.eval
            .knn
            .validate("[eval.knn]")
            .map_err(Error::Config)?;
        if self.eval.linear_probe {
            self.eval
                .linear
                .validate("[eval.linear]")
                .map_err(Error::Config)?;
        }
        if self.eval.monitor_images < 2 && self.trainer.collapse.enabled {
            return Err(Error::Config(format!(
                "[eval] monitor_images = {}: the collapse monitors need at least 2 images \
                 (set [trainer.collapse] enabled = false to turn the warnings off)",
                self.eval.monitor_images
            )));
        }
        Ok(())
    }

    /// The resolved config as TOML (saved beside every checkpoint).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# unserialisable config: {e}"))
    }
}

/// What a run produced (also written as `summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub method: String,
    pub dataset: String,
    pub device: String,
    pub train_images: usize,
    /// Test images scored (0 when evaluation was skipped).
    pub test_images: usize,
    /// Training images in the kNN bank / probe training set.
    pub eval_train_images: usize,
    /// Images per batch per rank.
    pub batch_size: usize,
    /// Data-parallel ranks (1: one process).
    pub ranks: usize,
    pub epochs: usize,
    pub steps: u64,
    pub final_loss: f64,
    pub train_seconds: f64,
    pub train_images_per_s: f64,
    pub wall_seconds: f64,
    /// Neighbours of the kNN figures (`[eval.knn] k`, clamped to the
    /// training images); `None` when evaluation was skipped.
    pub knn_k: Option<i64>,
    /// `None`: evaluation skipped (see `evaluation`), or a rank other than 0.
    pub knn_top1: Option<f64>,
    pub linear_top1: Option<f64>,
    pub raw_knn_top1: Option<f64>,
    pub raw_linear_top1: Option<f64>,
    /// What the figures were measured on, or why there are none.
    pub evaluation: String,
    pub collapse_warnings: Vec<String>,
    /// Whether collapse warnings were on (`[trainer.collapse] enabled`).
    pub collapse_monitors: bool,
    /// Image folders: the decoded-image cache of the training folder.
    pub image_cache: Option<CacheReport>,
    /// Image folders with `skip_bad`: unreadable files skipped (train + test).
    pub skipped_files: usize,
    /// The first of them (relative path and reason).
    pub skipped_examples: Vec<SkippedFile>,
    pub run_dir: PathBuf,
    pub export_dir: PathBuf,
    pub curves: PathBuf,
    #[serde(skip)]
    pub train: Option<TrainSummary>,
}

impl DataFormat {
    /// Colour channels of the images (an image folder: its default, see
    /// [`DataConfig::channels`]).
    pub fn channels(self) -> i64 {
        match self {
            Self::FashionMnist => 1,
            Self::Cifar10 | Self::Cifar100 => 3,
            Self::ImageFolder => DEFAULT_FOLDER_CHANNELS as i64,
        }
    }
}

fn load_split(cfg: &DataConfig, dir: &Path, split: Split) -> Result<ImageDataset> {
    let ds = match cfg.format {
        DataFormat::FashionMnist => data::idx::read_fashion_mnist(dir, split),
        DataFormat::Cifar10 => data::cifar::read_cifar10(dir, split),
        DataFormat::Cifar100 => data::cifar::read_cifar100(dir, split),
        DataFormat::ImageFolder => {
            return Err(Error::Config(
                "an image folder has no built-in splits: give [data] test_path".into(),
            ))
        }
    };
    ds.map_err(Error::from)
}

/// Builds the method a config asks for, for images of `in_channels`
/// channels; fails when the method cannot train on such data (colorization
/// on grey images), the method and the encoder do not go together (MAE and
/// I-JEPA need a ViT) or a setting is invalid.
pub fn build_method(
    cfg: &VisionRunConfig,
    device: tch::Device,
    in_channels: i64,
) -> Result<Box<dyn VisionMethod>> {
    cfg.model.validate()?;
    let (m, c) = (&cfg.model, in_channels);
    Ok(match &cfg.method {
        MethodConfig::Simclr(x) => Box::new(SimClr::new(device, m, c, x)),
        MethodConfig::MocoV2(x) => Box::new(MocoV2::new(device, m, c, x)?),
        MethodConfig::MocoV3(x) => Box::new(MocoV3::new(device, m, c, x)?),
        MethodConfig::Byol(x) => Box::new(Byol::new(device, m, c, x)?),
        MethodConfig::Simsiam(x) => Box::new(SimSiam::new(device, m, c, x)),
        MethodConfig::Dino(x) => Box::new(Dino::new(device, m, c, x)?),
        MethodConfig::BarlowTwins(x) => Box::new(BarlowTwins::new(device, m, c, x)),
        MethodConfig::Vicreg(x) => Box::new(VicReg::new(device, m, c, x)),
        MethodConfig::Swav(x) => Box::new(Swav::new(device, m, c, x)),
        MethodConfig::Rotation(x) => Box::new(Rotation::new(device, m, c, x)?),
        MethodConfig::Context(x) => Box::new(Context::new(device, m, c, x)?),
        MethodConfig::Jigsaw(x) => Box::new(Jigsaw::new(device, m, c, x)?),
        MethodConfig::Mae(x) => Box::new(Mae::new(device, m, c, x)?),
        MethodConfig::Ijepa(x) => Box::new(Ijepa::new(device, m, c, x)?),
        MethodConfig::Colorization(x) => Box::new(Colorization::new(
            device,
            m,
            c,
            &Normalize::for_channels(in_channels.max(0) as usize),
            x,
        )?),
    })
}

/// What an exported encoder takes: channels, their normalisation and, when
/// the images are transformed before normalising, how.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderInput {
    /// Channels of the encoder's input.
    pub channels: i64,
    /// Per-channel mean/std applied to that input.
    pub normalize: Normalize,
    /// How the input is made from the images, when it is not the images themselves.
    pub preprocess: Option<String>,
}

impl EncoderInput {
    /// The images themselves, normalised with the default statistics.
    pub fn images(channels: i64) -> Self {
        Self {
            channels,
            normalize: Normalize::for_channels(channels as usize),
            preprocess: None,
        }
    }
}

/// A method whose encoder can be exported.
pub trait VisionMethod: Method {
    /// Variable prefix of the encoder inside the method's var store.
    fn encoder_prefix(&self) -> &'static str {
        "encoder"
    }
    /// What the encoder takes when the method trains on `data_channels`-channel
    /// images (default: those images).
    fn encoder_input(&self, data_channels: i64) -> EncoderInput {
        EncoderInput::images(data_channels)
    }
}

impl VisionMethod for SimClr {}
impl VisionMethod for MocoV2 {}
impl VisionMethod for MocoV3 {}
impl VisionMethod for Byol {}
impl VisionMethod for SimSiam {}
impl VisionMethod for Dino {}
impl VisionMethod for BarlowTwins {}
impl VisionMethod for VicReg {}
impl VisionMethod for Swav {}

impl VisionMethod for Rotation {
    fn encoder_prefix(&self) -> &'static str {
        Rotation::ENCODER_PREFIX
    }
}

impl VisionMethod for Jigsaw {
    fn encoder_prefix(&self) -> &'static str {
        Jigsaw::ENCODER_PREFIX
    }
}

impl VisionMethod for Colorization {
    fn encoder_prefix(&self) -> &'static str {
        Colorization::ENCODER_PREFIX
    }
    /// The lightness channel: 1 channel whatever the data has.
    fn encoder_input(&self, _data_channels: i64) -> EncoderInput {
        EncoderInput {
            channels: 1,
            normalize: Colorization::lightness_normalize(),
            preprocess: Some(
                "the CIE L* (lightness, D65) channel of the sRGB image in [0, 1] as \
                 skimage.color.rgb2lab computes it, divided by 100, then normalised with `normalize`"
                    .into(),
            ),
        }
    }
}

impl VisionMethod for Context {
    fn encoder_prefix(&self) -> &'static str {
        Context::ENCODER_PREFIX
    }
}

impl VisionMethod for Mae {
    fn encoder_prefix(&self) -> &'static str {
        Mae::ENCODER_PREFIX
    }
}

impl VisionMethod for Ijepa {
    fn encoder_prefix(&self) -> &'static str {
        Ijepa::ENCODER_PREFIX
    }
}

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

/// `k` indices evenly spread over `0..n` (all of them when `k >= n`).
pub fn spread(n: usize, k: usize) -> Vec<usize> {
    if k >= n {
        (0..n).collect()
    } else {
        (0..k).map(|i| i * n / k).collect()
    }
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

/// The data of a run: the training images, the test images when there are
/// any to evaluate on, and what evaluation will measure (or why it cannot).
pub struct LoadedData {
    pub train: ImageDataset,
    pub test: Option<ImageDataset>,
    /// "test split", "test folder DIR", or why evaluation is skipped.
    pub evaluation: String,
    /// Image folders: the training folder's cache.
    pub cache: Option<CacheReport>,
    /// Image folders: skipped files of both folders, and the first ones.
    pub skipped: (usize, Vec<SkippedFile>),
}

/// Train split (cut to `train_images`) and test split (an image folder's
/// `test_path`, when given).
pub fn load_data(cfg: &VisionRunConfig, dir: &Path, obs: &mut dyn Observer) -> Result<LoadedData> {
    let dc = &cfg.data;
    if dc.format != DataFormat::ImageFolder {
        obs.phase("reading data", 0, 2);
        let mut train = load_split(dc, dir, Split::Train)?;
        if let Some(n) = dc.train_images {
            train = train.prefix(n);
        }
        obs.phase("reading data", 1, 2);
        let test = load_split(dc, dir, Split::Test)?;
        obs.phase("reading data", 2, 2);
        return Ok(LoadedData {
            train,
            test: Some(test),
            evaluation: "test split".into(),
            cache: None,
            skipped: (0, Vec::new()),
        });
    }
    let opts = dc.folder_options();
    let (mut train, report) =
        load_image_folder(dir, &opts, &mut |d, t| obs.phase("reading images", d, t))?;
    if let Some(n) = dc.train_images {
        if n < train.len() {
            train = train.subset(&spread(train.len(), n));
        }
    }
    let mut skipped = (report.skipped_count, report.skipped.clone());
    let (test, evaluation) = match (&dc.test_path, train.labels.is_some()) {
        (_, false) => (
            None,
            format!(
                "skipped: {} is unlabelled (images directly in the folder, no class folders), \
                 so there is no kNN, linear probe or raw-pixel baseline; the collapse monitors \
                 still run",
                dir.display()
            ),
        ),
        (None, true) => (
            None,
            "skipped: no [data] test_path (a labelled folder with the same class folders) was \
             given, so there is no kNN, linear probe or raw-pixel baseline; the collapse \
             monitors still run"
                .to_string(),
        ),
        (Some(tp), true) => {
            let (mut test, tr) = load_image_folder(tp, &opts, &mut |d, t| {
                obs.phase("reading test images", d, t)
            })?;
            skipped.0 += tr.skipped_count;
            skipped.1.extend(tr.skipped);
            remap_test_labels(&train, &mut test, tp)?;
            (Some(test), format!("test folder {}", tp.display()))
        }
    };
    Ok(LoadedData {
        train,
        test,
        evaluation,
        cache: Some(report),
        skipped,
    })
}

/// Gives the test folder's images the training folder's label of their
/// class name; a class the training folder lacks (or an unlabelled test
/// folder) is an error naming it.
fn remap_test_labels(
    train: &ImageDataset,
    test: &mut ImageDataset,
    test_path: &Path,
) -> Result<()> {
    let Some(labels) = &test.labels else {
        return Err(Error::Config(format!(
            "[data] test_path = {}: the test folder must be labelled (class folders with the \
             training folder's class names), not a folder of images",
            test_path.display()
        )));
    };
    let mut map = Vec::with_capacity(test.classes.len());
    for name in &test.classes {
        let Some(i) = train.classes.iter().position(|c| c == name) else {
            return Err(Error::Config(format!(
                "[data] test_path = {}: class folder '{name}' is not a class of the training \
                 folder (its classes: {})",
                test_path.display(),
                train.classes.join(", ")
            )));
        };
        map.push(i as i64);
    }
    let remapped = labels
        .iter()
        .map(|&l| map.get(l as usize).copied().unwrap_or(0))
        .collect();
    test.labels = Some(remapped);
    test.classes = train.classes.clone();
    Ok(())
}

/// Exports a method's encoder with its config into `dir`; `in_channels` are
/// the channels of the training images (the encoder's own input may differ,
/// see [`VisionMethod::encoder_input`]).
pub fn export(
    cfg: &VisionRunConfig,
    method: &dyn VisionMethod,
    in_channels: i64,
    dir: &Path,
    extra: serde_json::Value,
) -> Result<()> {
    let input = method.encoder_input(in_channels);
    let mut info = serde_json::json!({
        "method": method.name(),
        "in_channels": input.channels,
        "model": cfg.model,
        "normalize": input.normalize,
    });
    if let (Some(obj), Some(how)) = (info.as_object_mut(), input.preprocess) {
        obj.insert("preprocess".into(), how.into());
    }
    if let (Some(dst), serde_json::Value::Object(src)) = (info.as_object_mut(), extra) {
        dst.extend(src);
    }
    export_encoder(method.var_store(), method.encoder_prefix(), dir, &info)?;
    Ok(())
}

/// Per-epoch kNN on the test split (when there is one) and views for the
/// collapse monitors.
struct VisionEvaluator {
    data: Option<EvalData>,
    monitor_views: Option<(Tensor, Tensor)>,
    knn: KnnConfig,
    every_epoch: bool,
    raw_knn: Option<f64>,
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

/// Everything `pretrain` needs besides the config.
pub struct RunOptions<'a> {
    pub data_dir: Option<PathBuf>,
    pub run_dir: PathBuf,
    pub resume: bool,
    pub observer: &'a mut dyn Observer,
    pub stop: Arc<AtomicBool>,
    pub git_commit: Option<String>,
    /// A data-parallel run's collective (`None`: one process). Every rank
    /// trains its shard of each global batch; rank 0 alone evaluates, writes
    /// the run folder and exports (the other ranks' summaries carry `None`
    /// for the evaluations).
    pub distributed: Option<Distributed>,
}

/// Pre-trains, evaluates and exports; writes `summary.json` into the run folder.
pub fn pretrain(cfg: &VisionRunConfig, mut opts: RunOptions<'_>) -> Result<RunSummary> {
    let wall = Instant::now();
    cfg.check()?;
    let dist = opts.distributed.take();
    let primary = dist.as_ref().is_none_or(Distributed::is_primary);
    let device = cfg
        .run
        .device
        .resolve_on(dist.as_ref().map_or(0, |d| d.local_rank))?;
    if let Some(t) = cfg.run.threads {
        tch::set_num_threads(t as i32);
    }
    let data_dir = opts
        .data_dir
        .clone()
        .or_else(|| cfg.data.path.clone())
        .ok_or_else(|| Error::Config("no dataset folder: give --data DIR or [data] path".into()))?;
    let loaded = load_data(cfg, &data_dir, opts.observer)?;
    let (skipped_files, skipped_examples) = loaded.skipped.clone();
    if skipped_files > 0 {
        let names: Vec<&str> = skipped_examples
            .iter()
            .take(5)
            .map(|s| s.file.as_str())
            .collect();
        opts.observer.phase(
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
    let (max_train, max_test) = eval_caps(cfg);
    let data = match &loaded.test {
        Some(test) if primary => Some(EvalData::capped(&train, test, &norm, max_train, max_test)?),
        _ => None,
    };
    drop(loaded.test);
    if primary && data.is_none() {
        opts.observer
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
    let shard = dist
        .as_ref()
        .map_or(Shard::SINGLE, |d| Shard::of(d.comm.as_ref()));
    let ranks = shard.world_size;
    let loader = ViewLoader::new(
        train.clone(),
        augmenter,
        cfg.run.batch_size,
        cfg.trainer.seed,
    )
    .with_shard(shard);
    tch::manual_seed(cfg.trainer.seed as i64);
    let mut method = build_method(cfg, device, in_channels)?;

    const RAW: &str = "raw-pixel kNN baseline";
    let raw_knn = match &data {
        Some(d) => {
            opts.observer.phase(RAW, 0, 1);
            let r = d.raw_knn(&cfg.eval.knn)?;
            opts.observer.phase(RAW, 1, 1);
            Some(r)
        }
        None => None,
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
        every_epoch: cfg.eval.knn_every_epoch,
        raw_knn,
    };

    let mut trainer = Trainer::new(cfg.trainer.clone(), &opts.run_dir, device)
        .with_stop_flag(opts.stop.clone())
        .with_provenance(cfg.to_toml(), opts.git_commit.clone());
    if let Some(d) = dist {
        trainer = trainer.with_collective(d.comm);
    }
    std::fs::create_dir_all(&opts.run_dir).map_err(|e| Error::io(&opts.run_dir, e))?;
    if primary {
        let config_path = opts.run_dir.join("config.toml");
        selfsup_core::tensor_io::write_atomic(&config_path, cfg.to_toml().as_bytes())?;
    }
    let summary = trainer.fit(
        method.as_mut(),
        &loader,
        &mut evaluator,
        opts.observer,
        opts.resume,
    )?;

    // Final evaluation on frozen features (rank 0 of a data-parallel run).
    let (mut knn, mut linear, mut raw_linear) = (None, None, None);
    if let Some(data) = &evaluator.data {
        opts.observer.phase("features", 0, 1);
        let feats = data.features(method.as_ref());
        opts.observer.phase("features", 1, 1);
        opts.observer.phase("kNN", 0, 1);
        knn = Some(data.knn(&feats, &cfg.eval.knn)?);
        opts.observer.phase("kNN", 1, 1);
        if cfg.eval.linear_probe {
            const PROBE: &str = "linear probes (encoder, raw pixels)";
            opts.observer.phase(PROBE, 0, 2);
            linear = Some(data.linear(&feats, &cfg.eval.linear)?);
            opts.observer.phase(PROBE, 1, 2);
            raw_linear = Some(data.linear(&data.raw_features(), &cfg.eval.linear)?);
            opts.observer.phase(PROBE, 2, 2);
        }
    }
    let export_dir = opts.run_dir.join("export");
    if primary {
        opts.observer.phase("export", 0, 1);
        let extra = serde_json::json!({"dataset": train.name, "image_size": train.height, "knn_top1": knn, "linear_top1": linear});
        export(cfg, method.as_ref(), in_channels, &export_dir, extra)?;
        opts.observer.phase("export", 1, 1);
    }

    let (test_images, eval_train_images, knn_k) = match &evaluator.data {
        Some(d) => (
            d.test.len(),
            d.train.len(),
            Some(cfg.eval.knn.k.min(d.train.len() as i64)),
        ),
        None => (0, 0, None),
    };
    let evaluation = match &evaluator.data {
        Some(d) => format!(
            "{} ({} test images; kNN bank and probe training set: {} of the {} training \
             images)",
            loaded.evaluation,
            d.test.len(),
            d.train.len(),
            train.len()
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
        batch_size: cfg.run.batch_size,
        ranks,
        epochs: cfg.trainer.epochs,
        steps: summary.steps,
        final_loss: summary.final_loss,
        train_seconds: summary.train_seconds,
        train_images_per_s: summary.samples_per_s,
        wall_seconds: wall.elapsed().as_secs_f64(),
        knn_k,
        knn_top1: knn,
        linear_top1: linear,
        raw_knn_top1: evaluator.raw_knn,
        raw_linear_top1: raw_linear,
        evaluation,
        collapse_warnings: summary.warnings.clone(),
        collapse_monitors: cfg.trainer.collapse.enabled,
        image_cache: loaded.cache,
        skipped_files,
        skipped_examples,
        run_dir: opts.run_dir.clone(),
        export_dir,
        curves: opts.run_dir.join(selfsup_core::trainer::PLOT_FILE),
        train: Some(summary),
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::{ColorizationConfig, RotationConfig};
    use serde_json::json;

    fn run_config(method: MethodConfig) -> VisionRunConfig {
        VisionRunConfig {
            model: EncoderConfig::SmallCnn {
                channels: vec![8, 16],
            },
            method,
            ..Default::default()
        }
    }

    fn exported(cfg: &VisionRunConfig, data_channels: i64) -> serde_json::Value {
        let method = build_method(cfg, tch::Device::Cpu, data_channels).unwrap();
        let dir = tempfile::tempdir().unwrap();
        export(cfg, method.as_ref(), data_channels, dir.path(), json!({})).unwrap();
        let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn colorization_exports_a_lightness_encoder() {
        let cfg = run_config(MethodConfig::Colorization(ColorizationConfig::default()));
        let info = exported(&cfg, 3);
        assert_eq!(info["method"], "colorization");
        assert_eq!(info["in_channels"], 1);
        assert_eq!(info["normalize"]["mean"], json!([0.5]));
        assert!(info["preprocess"].as_str().unwrap().contains("L*"));
        let err = build_method(&cfg, tch::Device::Cpu, 1)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("Fashion-MNIST"), "{err}");
    }

    #[test]
    fn other_methods_export_the_data_channels() {
        let cfg = run_config(MethodConfig::Rotation(RotationConfig::default()));
        let info = exported(&cfg, 3);
        assert_eq!(info["method"], "rotation");
        assert_eq!(info["in_channels"], 3);
        assert_eq!(info["normalize"]["mean"].as_array().unwrap().len(), 3);
        assert!(info.get("preprocess").is_none());
    }

    use crate::data::Normalize;

    fn preset(name: &str) -> VisionRunConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../configs/vision")
            .join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg = VisionRunConfig::from_toml(&text, &path).unwrap();
        cfg.augment.validate().unwrap();
        // The resolved config (saved in checkpoints) parses back to the same thing.
        assert_eq!(
            VisionRunConfig::from_toml(&cfg.to_toml(), &path).unwrap(),
            cfg
        );
        cfg
    }

    /// Every preset passes the data-free checks; each impossible value the
    /// reliability issue found trained silently is now refused by
    /// `from_toml`, naming the file and the key, before any data is read.
    #[test]
    fn impossible_settings_are_refused_before_data_naming_the_key() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/vision");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(e) = VisionRunConfig::from_toml(&text, &path) {
                panic!("{}: {e}", path.display());
            }
        }
        let base = std::fs::read_to_string(dir.join("simclr-cpu.toml")).unwrap();
        let with = |table: &str, line: &str| -> String {
            let mut v: toml::Value = toml::from_str(&base).unwrap();
            let patch: toml::Value = toml::from_str(line).unwrap();
            let mut t = &mut v;
            for part in table.split('.').filter(|p| !p.is_empty()) {
                t = t
                    .as_table_mut()
                    .unwrap()
                    .entry(part)
                    .or_insert(toml::Value::Table(Default::default()));
            }
            for (k, val) in patch.as_table().unwrap() {
                t.as_table_mut().unwrap().insert(k.clone(), val.clone());
            }
            toml::to_string(&v).unwrap()
        };
        let cases = [
            (with("trainer", "epochs = 0"), "epochs = 0"),
            (with("trainer.optimizer", "lr = -0.3"), "lr = -0.3"),
            (
                with("method.loss", "temperature = -0.5"),
                "temperature = -0.5",
            ),
            (with("method.loss", "temperature = 0.0"), "temperature = 0"),
            (with("run", "threads = 0"), "threads = 0"),
            (with("run", "batch_size = 0"), "batch_size = 0"),
            (with("eval", "monitor_images = 0"), "monitor_images = 0"),
            (with("eval.knn", "k = 0"), "k = 0"),
            (with("eval.linear", "epochs = 0"), "epochs = 0"),
            (with("method.head", "layers = 0"), "layers = 0"),
        ];
        let origin = Path::new("bad.toml");
        for (text, needle) in cases {
            let err = VisionRunConfig::from_toml(&text, origin)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("bad.toml") && err.contains(needle),
                "{needle}: {err}"
            );
        }
        // The monitors may be off, and then need no images.
        let off = with("trainer.collapse", "enabled = false");
        let off = {
            let mut v: toml::Value = toml::from_str(&off).unwrap();
            v["eval"]
                .as_table_mut()
                .unwrap()
                .insert("monitor_images".into(), toml::Value::Integer(0));
            toml::to_string(&v).unwrap()
        };
        VisionRunConfig::from_toml(&off, origin).unwrap();
        // A predictor whose output is not the projection's size would fail
        // inside the first step (a shape error); refused before data.
        for preset in ["byol-cpu.toml", "simsiam-cpu.toml", "moco_v3-cpu.toml"] {
            let text = std::fs::read_to_string(dir.join(preset)).unwrap();
            let mut v: toml::Value = toml::from_str(&text).unwrap();
            let method = v["method"].as_table_mut().unwrap();
            let out = method["projector"]["out_dim"].as_integer().unwrap();
            let mut pred = method
                .get("predictor")
                .cloned()
                .unwrap_or_else(|| method["projector"].clone());
            pred.as_table_mut()
                .unwrap()
                .insert("out_dim".into(), toml::Value::Integer(out + 1));
            method.insert("predictor".into(), pred);
            let err = VisionRunConfig::from_toml(&toml::to_string(&v).unwrap(), origin)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("bad.toml") && err.contains("predictor.out_dim"),
                "{preset}: {err}"
            );
        }
    }

    /// The ViT presets build their method, train on their own augmentations'
    /// image size, and export a timm ViT.
    #[test]
    fn vit_presets_build_step_and_export() {
        for (name, method) in [("mae-cpu.toml", "mae"), ("ijepa-cpu.toml", "ijepa")] {
            let cfg = preset(name);
            assert!(cfg.model.is_vit(), "{name}");
            let mut m = build_method(&cfg, tch::Device::Cpu, 1).unwrap();
            assert_eq!(m.name(), method);
            let xs = crate::methods::test_util::structured_images(4, 1, 28, 0);
            let batch = selfsup_core::method::Batch {
                views: vec![xs.shallow_clone(), xs.shallow_clone()],
            };
            let ctx = selfsup_core::method::StepCtx {
                step: 0,
                total_steps: 10,
                epoch: 0,
                steps_per_epoch: 1,
                comm: &selfsup_core::distributed::SingleProcess,
            };
            let out = m.step(&batch, &ctx).unwrap();
            assert!(out.loss.double_value(&[]).is_finite());
            assert_eq!(m.embed(&xs).size(), vec![4, cfg.model.out_dim()]);
            let dir = tempfile::tempdir().unwrap();
            export(&cfg, m.as_ref(), 1, dir.path(), serde_json::json!({})).unwrap();
            let written: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(dir.path().join("config.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(written["arch"], "vit_tiny");
            assert_eq!(written["heads"], 4);
            assert_eq!(written["method"], method);
            assert_eq!(
                written["normalize"],
                serde_json::to_value(Normalize::for_channels(1)).unwrap()
            );
        }
    }

    #[test]
    fn masked_methods_refuse_cnn_encoders() {
        for name in ["mae-cpu.toml", "ijepa-cpu.toml"] {
            let mut cfg = preset(name);
            cfg.model = EncoderConfig::Resnet18 {
                stem: crate::models::Stem::Cifar,
            };
            let err = build_method(&cfg, tch::Device::Cpu, 1).err().unwrap();
            assert!(err.to_string().contains("needs a ViT encoder"), "{err}");
        }
    }
}
