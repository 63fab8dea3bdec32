//! The video run config: one TOML file (see `configs/video/`), its `[run]`
//! table core's [`RunSettings`].
use crate::augment::AugmentConfig;
use crate::methods::VideoMethodConfig;
use crate::model::{Pooling, VitConfig};
use crate::moving::Motion;
use selfsup_core::eval::linear_probe::LinearProbeConfig;
use selfsup_core::run::{BatchDefault, RunSettings};
use selfsup_core::trainer::TrainerConfig;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The video modality's default `[run] batch_size`: 32 clips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Clips;

impl BatchDefault for Clips {
    const BATCH: usize = 32;
}

/// `[data] kind = "moving-fashion-mnist"`: clips generated from
/// Fashion-MNIST (see [`crate::moving`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MovingData {
    /// Fashion-MNIST's folder under the data root.
    pub fashion_mnist: String,
    /// Training clips (garments of Fashion-MNIST's training split).
    pub train_clips: usize,
    /// Test clips (garments of its test split), read once at the end.
    pub test_clips: usize,
    /// Seed of the generator (the clips are a function of it).
    pub seed: u64,
    /// Garments per clip.
    pub objects: usize,
    /// Speed range, pixels per frame.
    pub speed: (f64, f64),
    /// Sectors of the direction label.
    pub direction_bins: usize,
}

impl Default for MovingData {
    fn default() -> Self {
        let m = Motion::default();
        Self {
            fashion_mnist: "fashion-mnist".into(),
            train_clips: 4000,
            test_clips: 1000,
            seed: 0,
            objects: m.objects,
            speed: m.speed,
            direction_bins: m.direction_bins,
        }
    }
}

impl MovingData {
    /// The generator's motion settings.
    pub fn motion(&self) -> Motion {
        Motion {
            objects: self.objects,
            speed: self.speed,
            direction_bins: self.direction_bins,
        }
    }
}

/// `[data] kind = "frames"`: the user's clips as folders of frames (see
/// [`crate::frames`]); unlabelled, so no probe runs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FramesData {
    /// The folder of clip folders, under the data root (or absolute).
    pub folder: String,
}

/// `[data]`: where the clips come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DataConfig {
    MovingFashionMnist(MovingData),
    Frames(FramesData),
}

impl Default for DataConfig {
    fn default() -> Self {
        Self::MovingFashionMnist(MovingData::default())
    }
}

/// `[eval]`: the probes on frozen features (Moving Fashion-MNIST only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// The first this many training clips are the probes' labelled
    /// training set (validation carved from them).
    pub probe_clips: usize,
    /// Fraction of the probe clips set aside for validation (stratified by
    /// the first garment's class).
    pub validation_fraction: f64,
    /// Seed of that split.
    pub split_seed: u64,
    /// The probe's L2 penalties tried; the one best on validation is read
    /// on the test clips.
    pub weight_decays: Vec<f64>,
    /// The probe's other settings (its `weight_decay` is overridden).
    pub probe: LinearProbeConfig,
    /// How the encoder's final tokens are pooled for the probes (method
    /// and random weights alike): `mean` over every token, `time` (the mean
    /// of each time step, concatenated: keeps the order of time) or
    /// `mean-std`. The raw-frames baseline keeps every frame either way.
    pub pooling: Pooling,
    /// Raw-frames baseline: frames average-pooled by this factor per side.
    pub raw_pool: i64,
    /// Validation clips whose two augmented views feed the collapse monitors.
    pub monitor_clips: usize,
    /// Probe clips the per-epoch validation probe trains on (0: none).
    pub epoch_probe_clips: usize,
    /// Clips per forward pass when computing features.
    pub batch: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            probe_clips: 2000,
            validation_fraction: 0.2,
            split_seed: 0,
            weight_decays: vec![1e-4, 1e-2],
            probe: LinearProbeConfig::default(),
            pooling: Pooling::Mean,
            raw_pool: 4,
            monitor_clips: 256,
            epoch_probe_clips: 512,
            batch: 64,
        }
    }
}

/// A whole video run, as one TOML file (see `configs/video/`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoRunConfig {
    pub run: RunSettings<Clips>,
    pub data: DataConfig,
    pub augment: AugmentConfig,
    pub model: VitConfig,
    pub method: VideoMethodConfig,
    pub trainer: TrainerConfig,
    pub eval: EvalConfig,
}

impl VideoRunConfig {
    /// Parses a config; unknown keys and impossible values are errors
    /// naming the file.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let cfg: Self = toml::from_str(text)
            .map_err(|e| Error::Config(format!("{}: {e}", origin.display())))?;
        cfg.validate()
            .map_err(|m| Error::Config(format!("{}: {m}", origin.display())))?;
        Ok(cfg)
    }

    /// Every range and combination that would train or evaluate nonsense;
    /// the message names the key and says what to give.
    pub fn validate(&self) -> std::result::Result<(), String> {
        selfsup_core::run::common_ranges(&self.trainer, self.run.threads)?;
        self.run.check()?;
        self.run.refuse_steps_per_epoch("video")?;
        self.augment.validate()?;
        self.model.validate()?;
        self.method.validate(&self.model)?;
        let e = &self.eval;
        selfsup_core::eval::split::check_fraction(
            "[eval] validation_fraction",
            e.validation_fraction,
        )?;
        if e.weight_decays.is_empty() || e.weight_decays.len() > 16 {
            return Err(format!(
                "[eval] weight_decays = {:?}: give 1 to 16 penalties",
                e.weight_decays
            ));
        }
        for &wd in &e.weight_decays {
            selfsup_core::trainer::non_negative("[eval] weight_decays", wd)?;
        }
        e.probe.validate("[eval.probe]")?;
        if e.raw_pool < 1 || self.model.image_size % e.raw_pool != 0 {
            return Err(format!(
                "[eval] raw_pool = {}: give a divisor of [model] image_size = {}",
                e.raw_pool, self.model.image_size
            ));
        }
        if e.batch == 0 || e.batch > 4096 {
            return Err(format!("[eval] batch = {}: give 1 to 4096", e.batch));
        }
        if let DataConfig::MovingFashionMnist(m) = &self.data {
            m.motion().validate()?;
            if m.train_clips > 1_000_000 || m.test_clips > 1_000_000 {
                return Err(format!(
                    "[data] train_clips = {}, test_clips = {}: at most 1000000 each",
                    m.train_clips, m.test_clips
                ));
            }
            if m.train_clips < self.run.batch_size {
                return Err(format!(
                    "[data] train_clips = {} is fewer than one batch ([run] batch_size = {})",
                    m.train_clips, self.run.batch_size
                ));
            }
            if m.test_clips == 0 {
                return Err("[data] test_clips = 0: give at least 1 test clip".into());
            }
            if e.probe_clips < 10 || e.probe_clips > m.train_clips {
                return Err(format!(
                    "[eval] probe_clips = {}: give 10 to [data] train_clips = {}",
                    e.probe_clips, m.train_clips
                ));
            }
            if self.model.image_size <= 28 {
                return Err(format!(
                    "[model] image_size = {}: Moving Fashion-MNIST needs a canvas larger than its \
                     28x28 garments; give at least 29 (64 is the protocol's)",
                    self.model.image_size
                ));
            }
        }
        if let DataConfig::Frames(f) = &self.data {
            if f.folder.trim().is_empty() {
                return Err(
                    "[data] folder = \"\": give the folder of clip folders (or --data)".into(),
                );
            }
        }
        Ok(())
    }

    /// The resolved config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# unserialisable config: {e}"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A preset of `configs/video/`: its text and path.
    pub(crate) fn preset(name: &str) -> (String, PathBuf) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../configs/video")
            .join(name);
        (std::fs::read_to_string(&path).unwrap(), path)
    }

    #[test]
    fn presets_parse_and_round_trip() {
        for name in [
            "vjepa-cpu.toml",
            "vjepa-gpu.toml",
            "temporal-order-cpu.toml",
            "vjepa-future-cpu.toml",
        ] {
            let (text, path) = preset(name);
            let cfg =
                VideoRunConfig::from_toml(&text, &path).unwrap_or_else(|e| panic!("{name}: {e}"));
            let again = VideoRunConfig::from_toml(&cfg.to_toml(), &path).unwrap();
            assert_eq!(again, cfg, "{name}");
        }
    }

    #[test]
    fn unknown_keys_and_impossible_values_are_refused_naming_the_file_and_key() {
        let (text, path) = preset("vjepa-cpu.toml");
        let e = VideoRunConfig::from_toml(&text.replace("train_clips", "train_clip"), &path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("vjepa-cpu.toml") && e.contains("train_clip"),
            "{e}"
        );
        for (from, to, want) in [
            ("patch_size = 16", "patch_size = 12", "patch_size = 12"),
            ("objects = 2", "objects = 0", "objects = 0"),
            ("raw_pool = 4", "raw_pool = 3", "raw_pool = 3"),
            ("epochs = ", "epochs = 0 #", "epochs = 0"),
        ] {
            assert!(text.contains(from), "{from}");
            let e = VideoRunConfig::from_toml(&text.replacen(from, to, 1), &path)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
    }
}
