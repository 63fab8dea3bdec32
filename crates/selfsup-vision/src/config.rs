//! A vision run's config: one TOML file (see `configs/vision/`) with the
//! tables `[run]`, `[data]`, `[model]`, `[method]`, `[augment]`,
//! `[trainer]` and `[eval]`, parsed and checked before any data is read.
use crate::augment::AugmentConfig;
use crate::data::emoji::{EmojiOptions, EmojiSet, DEFAULT_EMOJI_SIDE, DEFAULT_TEST_FRACTION};
use crate::data::folder_cache::{default_cache_root, FolderOptions, MAX_CACHE_SIDE};
use crate::methods::MethodConfig;
use crate::models::EncoderConfig;
use selfsup_core::eval::{FewShotConfig, KnnConfig, LinearProbeConfig};
use selfsup_core::run::{BatchDefault, RunSettings};
use selfsup_core::trainer::TrainerConfig;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
    /// The emoji of `cargo xtask fetch emoji-google` / `emoji-twitter`
    /// (`emoji.json` + `img/*.png`), labelled by category and split into
    /// train and test by emoji ([`crate::data::emoji`]).
    Emoji,
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
    /// `fashion-mnist` (default), `cifar10`, `cifar100`, `image-folder` or `emoji`.
    pub format: DataFormat,
    /// Folder of the dataset; `--data` overrides it.
    pub path: Option<PathBuf>,
    /// Pre-train on the first N training images only (all when absent); on an
    /// image folder, N images evenly spread over the sorted files (so every
    /// class keeps its share).
    pub train_images: Option<usize>,
    /// image-folder and emoji: side of the square images, in pixels, at most
    /// 1024 (image folder: default 64; emoji: default 32, the packages draw
    /// 64). Each image's largest centred square is cut out (the
    /// shorter side kept whole) and resized to this side: torchvision's
    /// `Resize(s)` + `CenterCrop(s)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,
    /// image-folder and emoji: 1 (grey) or 3 (RGB, default). Grey, RGBA (over white),
    /// palette and 16-bit images are converted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
    /// image-folder: a labelled folder (the training folder's class names)
    /// scored by kNN and the linear probe. Without it, evaluation is skipped
    /// and the summary says why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_path: Option<PathBuf>,
    /// image-folder and emoji: skip unreadable images and count them
    /// (default false: the first one is an error naming it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_bad: Option<bool>,
    /// emoji: `google` (default) or `twitter`, the rendering read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Option<EmojiSet>,
    /// emoji: share of each category's emoji in the test split (default 0.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_fraction: Option<f64>,
    /// emoji: seed of the train / test split (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_seed: Option<u64>,
    /// image-folder: where decoded images are cached (default
    /// `$SELFSUP_CACHE_DIR`, else `~/.cache/selfsup/image-cache`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
}

impl DataConfig {
    /// Colour channels of the images this config reads.
    pub fn channels(&self) -> i64 {
        match self.format {
            DataFormat::ImageFolder | DataFormat::Emoji => {
                self.channels.unwrap_or(DEFAULT_FOLDER_CHANNELS) as i64
            }
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

    /// How the emoji are read and split (set, side, channels, skip_bad, split).
    pub fn emoji_options(&self) -> EmojiOptions {
        EmojiOptions {
            set: self.set.unwrap_or_default(),
            side: self.image_size.unwrap_or(DEFAULT_EMOJI_SIDE),
            channels: self.channels.unwrap_or(DEFAULT_FOLDER_CHANNELS),
            skip_bad: self.skip_bad.unwrap_or(false),
            test_fraction: self.test_fraction.unwrap_or(DEFAULT_TEST_FRACTION),
            split_seed: self.split_seed.unwrap_or(0),
        }
    }

    /// The `[data]` keys valid for the format, and their ranges.
    pub fn check(&self) -> Result<()> {
        if self.train_images == Some(0) {
            return Err(Error::Config(
                "[data] train_images = 0: leave it out to use every training image".into(),
            ));
        }
        let name = serde_json::to_value(self.format)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let emoji = self.format == DataFormat::Emoji;
        if emoji || self.format != DataFormat::ImageFolder {
            // (key, given, formats it belongs to).
            let set = [
                (
                    "image_size",
                    self.image_size.is_some(),
                    "image-folder and emoji",
                ),
                (
                    "channels",
                    self.channels.is_some(),
                    "image-folder and emoji",
                ),
                (
                    "skip_bad",
                    self.skip_bad.is_some(),
                    "image-folder and emoji",
                ),
                ("test_path", self.test_path.is_some(), "image-folder"),
                ("cache_dir", self.cache_dir.is_some(), "image-folder"),
                ("set", self.set.is_some(), "emoji"),
                ("test_fraction", self.test_fraction.is_some(), "emoji"),
                ("split_seed", self.split_seed.is_some(), "emoji"),
            ];
            let misplaced = set
                .iter()
                .find(|(_, on, of)| *on && !(emoji && of.contains("emoji")));
            if let Some((key, _, of)) = misplaced {
                let why = if emoji {
                    "emoji makes its own test split and decodes without a cache".to_string()
                } else {
                    format!("{name} has fixed image sizes, channels and splits")
                };
                return Err(Error::Config(format!(
                    "[data] {key}: only for format = {of}; {why} (remove the key)"
                )));
            }
            if !emoji {
                return Ok(());
            }
            if let Some(f) = self.test_fraction {
                if !(f > 0.0 && f < 1.0) {
                    return Err(Error::Config(format!(
                        "[data] test_fraction = {f}: give a share in (0, 1), e.g. \
                         {DEFAULT_TEST_FRACTION}"
                    )));
                }
            }
        } else if self.set.is_some() || self.test_fraction.is_some() || self.split_seed.is_some() {
            return Err(Error::Config(format!(
                "[data] set / test_fraction / split_seed: only for format = emoji; {name} reads \
                 no emoji (remove the key)"
            )));
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
    /// Run kNN on the validation part after every epoch (else only at the
    /// end); the test split is never read during training.
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
    /// At most this many test images (evenly spread) are scored, and at
    /// most this many validation images. Default: all of them, except on an
    /// image folder: 5000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_images: Option<usize>,
    /// The share of the labelled training images set aside, stratified by
    /// class, as the validation part (default 0.1): held out of the kNN bank
    /// and the probes' training set, it is what the per-epoch kNN reads and
    /// what choices are made on, so that the test split is read once, at the
    /// end. Pre-training itself still uses every training image (it reads no
    /// labels). Not written into stored configs while it has its default.
    #[serde(skip_serializing_if = "is_default_fraction")]
    pub validation_fraction: f64,
    /// Seed of the validation draw (default 0), independent of
    /// `[trainer] seed`: runs with other training seeds share one split.
    #[serde(skip_serializing_if = "is_zero")]
    pub split_seed: u64,
    /// The random-weights control: the same encoder, initialised from
    /// `[trainer] seed` XOR core's random-weights seed and never trained,
    /// through the same kNN, probe and few-shot code.
    pub random_weights: bool,
    /// N-way K-shot episodes on the frozen test features (pre-trained,
    /// random weights, raw pixels on the same episodes).
    pub few_shot: FewShotConfig,
    /// `selfsup eval finetune`: the pre-trained encoder fine-tuned end to
    /// end on a fraction of the labels beside the same network from scratch
    /// (not written into stored configs while it has its defaults).
    #[serde(skip_serializing_if = "FinetuneConfig::is_default")]
    pub finetune: FinetuneConfig,
    /// `selfsup eval robustness`: the corruptions and severities of the
    /// test images (not written into stored configs while it has its
    /// defaults).
    #[serde(skip_serializing_if = "crate::augment::corrupt::RobustnessConfig::is_default")]
    pub robustness: crate::augment::corrupt::RobustnessConfig,
}

/// `[eval.finetune]`: core's label-efficiency settings (one struct for every
/// modality), its TOML keys unchanged.
pub use selfsup_core::eval::finetune::{FinetuneConfig, MAX_FINETUNE_SEEDS};

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
            validation_fraction: DEFAULT_VALIDATION_FRACTION,
            split_seed: 0,
            random_weights: true,
            few_shot: FewShotConfig::default(),
            finetune: FinetuneConfig::default(),
            robustness: Default::default(),
        }
    }
}

/// `[eval] validation_fraction` when the key is not given.
pub const DEFAULT_VALIDATION_FRACTION: f64 = 0.1;

/// Whether a validation fraction is the default (then it is not written).
fn is_default_fraction(f: &f64) -> bool {
    *f == DEFAULT_VALIDATION_FRACTION
}

/// Whether a seed is 0, the default (then it is not written).
fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Vision's default `[run] batch_size`: 256 images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Images;

impl BatchDefault for Images {
    const BATCH: usize = 256;
}

/// `[run]`: device, batch (images per process), threads; core's table with
/// vision's default batch.
pub type RunConfig = RunSettings<Images>;

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
        self.run
            .refuse_steps_per_epoch("vision")
            .map_err(Error::Config)?;
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
        selfsup_core::eval::split::check_fraction(
            "[eval] validation_fraction",
            self.eval.validation_fraction,
        )
        .map_err(Error::Config)?;
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
        self.eval
            .few_shot
            .validate("[eval.few_shot]")
            .map_err(Error::Config)?;
        self.eval.finetune.validate().map_err(Error::Config)?;
        self.eval.robustness.validate().map_err(Error::Config)?;
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

impl DataFormat {
    /// Colour channels of the images (an image folder: its default, see
    /// [`DataConfig::channels`]).
    pub fn channels(self) -> i64 {
        match self {
            Self::FashionMnist => 1,
            Self::Cifar10 | Self::Cifar100 => 3,
            Self::ImageFolder | Self::Emoji => DEFAULT_FOLDER_CHANNELS as i64,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A preset of `configs/vision/`, parsed, checked and round-tripped
    /// through its resolved TOML.
    pub(crate) fn preset(name: &str) -> VisionRunConfig {
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
            (
                with("eval", "validation_fraction = 0.0"),
                "[eval] validation_fraction must be a fraction in (0, 1)",
            ),
            (
                with("eval", "validation_fraction = 1.0"),
                "[eval] validation_fraction must be a fraction in (0, 1) of the training data, \
                 got 1",
            ),
            (
                with("eval", "validation_fraction = -0.1"),
                "[eval] validation_fraction",
            ),
            (with("eval", "validation_fraction = nan"), "got NaN"),
            (with("eval.linear", "epochs = 0"), "epochs = 0"),
            (with("method.head", "layers = 0"), "layers = 0"),
            (
                with("eval.finetune", "fractions = [0.1, 0.0]"),
                "[eval.finetune] fractions: 0 ",
            ),
            (
                with("eval.finetune", "fractions = [1.5]"),
                "[eval.finetune] fractions: 1.5",
            ),
            (with("eval.finetune", "seeds = 0"), "seeds = 0"),
            (with("eval.finetune", "steps = 0"), "steps = 0"),
            (with("eval.finetune", "batch_size = 1"), "batch_size = 1"),
            (
                with("eval.finetune.optimizer", "lr = 0.0"),
                "[eval.finetune] optimizer.lr",
            ),
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

    #[test]
    fn run_table_defaults_to_256_images_and_refuses_steps_per_epoch() {
        let cfg = VisionRunConfig::from_toml("", Path::new("empty.toml")).unwrap();
        assert_eq!(cfg.run.batch_size, 256);
        assert!(!cfg.to_toml().contains("steps_per_epoch"));
        // The validation part's defaults, left out of stored configs (so a
        // run begun before the keys existed still resumes); other values are
        // written and read back.
        assert_eq!(
            (cfg.eval.validation_fraction, cfg.eval.split_seed),
            (0.1, 0)
        );
        let stored = cfg.to_toml();
        assert!(
            !stored.contains("validation_fraction") && !stored.contains("split_seed"),
            "{stored}"
        );
        let set = VisionRunConfig::from_toml(
            "[eval]\nvalidation_fraction = 0.25\nsplit_seed = 7\n",
            Path::new("v.toml"),
        )
        .unwrap();
        let back = VisionRunConfig::from_toml(&set.to_toml(), Path::new("back.toml")).unwrap();
        assert_eq!(
            (back.eval.validation_fraction, back.eval.split_seed),
            (0.25, 7)
        );
        let err = VisionRunConfig::from_toml("[run]\nsteps_per_epoch = 5\n", Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("s.toml") && err.contains("steps_per_epoch = 5") && err.contains("vision"),
            "{err}"
        );
    }
}
