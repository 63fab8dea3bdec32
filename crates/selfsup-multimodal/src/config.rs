//! The CLIP run config: one TOML file (see `configs/multimodal/`), its
//! `[run]` table core's [`RunSettings`].
use crate::export::ExportMeta;
use crate::method::ClipMethodConfig;
use crate::model::ClipModelConfig;
use selfsup_core::run::{BatchDefault, RunSettings};
use selfsup_core::trainer::TrainerConfig;
use selfsup_core::{Error, Result};
use selfsup_text::model::BertConfig;
use selfsup_text::tokenizer::{TextTokenizer, TokenizerConfig};
use selfsup_vision::augment::{AugmentConfig, ColorJitter, RandomGrayscale, RandomResizedCrop};
use selfsup_vision::data::Normalize;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// CLIP's default `[run] batch_size`: 256 image-caption pairs per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pairs;

impl BatchDefault for Pairs {
    const BATCH: usize = 256;
}

/// `[run]`: core's run settings with CLIP's default batch (pairs per batch,
/// per process); `steps_per_epoch` is refused (an epoch is one pass).
pub type RunConfig = RunSettings<Pairs>;

/// The normalisation of the RGB images of every run.
pub fn image_normalize() -> Normalize {
    Normalize::for_channels(3)
}

fn fashion_captions() -> Vec<String> {
    vec!["a photo of a {}".into()]
}
fn two_thousand() -> usize {
    2000
}

/// One source of pairs (`[[data.sources]]`), tagged by `format`; paths are
/// relative to the data root (`--data`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PairSource {
    /// A captions file (`.csv` or `.jsonl`: image, caption) and its images
    /// (relative to `images`, by default the captions file's folder).
    Captions {
        file: PathBuf,
        #[serde(default)]
        images: Option<PathBuf>,
    },
    /// An emoji-datasource folder (`emoji.json`, `img/`): names and short
    /// names as captions; the held-out emoji are zero-shot classified by
    /// category.
    Emoji { path: PathBuf },
    /// Fashion-MNIST captioned from its class names (`captions` templates),
    /// from the first `train_images` of its training split. The classes of
    /// `held_out_classes` (Fashion-MNIST class names, any case) are never
    /// trained on: their images leave the training pairs, and so does every
    /// training pair of any source with a caption naming one (see
    /// [`crate::held_out`]). On the first `test_images` of the test split:
    /// seen-class caption classification (the trained classes, `[eval]
    /// photo_templates`) and, when classes are held out, held-out-class
    /// zero-shot (their images only, among their names, `[eval]
    /// held_out_templates`).
    FashionMnist {
        path: PathBuf,
        #[serde(default)]
        train_images: Option<usize>,
        #[serde(default = "two_thousand")]
        test_images: usize,
        #[serde(default = "fashion_captions")]
        captions: Vec<String>,
        #[serde(default)]
        held_out_classes: Vec<String>,
    },
}

/// `[data]`: the pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Side of the square RGB images every source is brought to.
    pub image_size: usize,
    /// Skip (and count) bad pairs instead of stopping at the first.
    pub skip_bad: bool,
    /// Fraction of the images of captions and emoji sources held out for
    /// retrieval (by a stable hash of the image's name): the test pairs,
    /// read once, at the end.
    pub held_out: f64,
    /// Fraction of each source's *training* images set aside, never trained
    /// on, for the per-epoch evaluation and the validation figures
    /// (stratified by class where the source has classes, seeded by
    /// `[trainer] seed`; see [`crate::data`]). 0 trains on every pair and
    /// turns the validation figures off.
    pub validation_fraction: f64,
    pub sources: Vec<PairSource>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            image_size: 32,
            skip_bad: false,
            held_out: 0.1,
            validation_fraction: 0.05,
            sources: Vec::new(),
        }
    }
}

/// `[eval]`: zero-shot and retrieval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// A second rendering of the emoji (an emoji-datasource folder, e.g.
    /// `emoji-twitter`): never trained on; retrieval and zero-shot on its
    /// held-out emoji, and retrieval on its rendering of training emoji.
    pub second_rendering: Option<PathBuf>,
    /// Training emoji in the second rendering's retrieval set.
    pub seen_images: usize,
    /// Prompts of the emoji categories.
    pub emoji_templates: Vec<String>,
    /// Prompts of the trained Fashion-MNIST classes (seen-class caption
    /// classification: a training template, as a rule).
    pub photo_templates: Vec<String>,
    /// Prompts of the held-out Fashion-MNIST classes: none may be a training
    /// template (`captions` of the fashion-mnist source).
    pub held_out_templates: Vec<String>,
    /// Evaluate the validation sets after every epoch (else only at the
    /// end); the test sets are read once, at the end, either way.
    pub every_epoch: bool,
    /// Training pairs whose image / caption embeddings feed the collapse monitors.
    pub monitor_pairs: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            second_rendering: None,
            seen_images: 500,
            emoji_templates: vec!["an emoji of {}".into()],
            photo_templates: vec!["a photo of a {}".into()],
            held_out_templates: vec!["a picture of a {}.".into(), "an image showing a {}".into()],
            every_epoch: true,
            monitor_pairs: 512,
        }
    }
}

/// A whole CLIP run, as one TOML file (see `configs/multimodal/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClipRunConfig {
    pub run: RunConfig,
    pub data: DataConfig,
    pub tokenizer: TokenizerConfig,
    pub model: ClipModelConfig,
    pub method: ClipMethodConfig,
    pub augment: AugmentConfig,
    pub trainer: TrainerConfig,
    pub eval: EvalConfig,
}

impl Default for ClipRunConfig {
    fn default() -> Self {
        Self {
            run: RunConfig::default(),
            data: DataConfig::default(),
            tokenizer: TokenizerConfig::TrainWordpiece {
                vocab_size: 2048,
                min_frequency: 1,
                lowercase: true,
            },
            model: ClipModelConfig::default(),
            method: ClipMethodConfig::default(),
            // One view; no hue shift or grayscale: captions name colours.
            augment: AugmentConfig {
                views: 1,
                crop: RandomResizedCrop {
                    scale: (0.5, 1.0),
                    ..RandomResizedCrop::default()
                },
                color_jitter: ColorJitter {
                    p: 0.5,
                    brightness: 0.2,
                    contrast: 0.2,
                    saturation: 0.0,
                    hue: 0.0,
                },
                grayscale: RandomGrayscale { p: 0.0 },
                ..AugmentConfig::default()
            },
            trainer: TrainerConfig::default(),
            eval: EvalConfig::default(),
        }
    }
}

impl ClipRunConfig {
    /// Parses a config; unknown keys and impossible values are errors that
    /// name the file and the key.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let cfg: Self = toml::from_str(text)
            .map_err(|e| Error::Config(format!("{}: {e}", origin.display())))?;
        cfg.check()
            .map_err(|e| Error::Config(format!("{}: {e}", origin.display())))?;
        Ok(cfg)
    }

    /// The resolved config as TOML (saved beside every checkpoint).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# unserialisable config: {e}"))
    }

    /// Checks what serde cannot (every range, before any data is read).
    pub fn validate(&self) -> Result<()> {
        self.augment.validate()?;
        self.model.vision.validate()?;
        self.check().map_err(Error::Config)
    }

    fn check(&self) -> std::result::Result<(), String> {
        use crate::image_file::MAX_OUTPUT_SIZE;
        use selfsup_core::trainer::positive;
        if self.augment.views != 1 || self.augment.local_crops.count != 0 {
            return Err(
                "[augment] CLIP takes one view per image: views = 1, no local_crops".into(),
            );
        }
        let min_size = self.model.vision.min_input_size();
        if (self.data.image_size as i64) < min_size || self.data.image_size > MAX_OUTPUT_SIZE {
            return Err(format!(
                "[data] image_size = {}: must be in {min_size}..={MAX_OUTPUT_SIZE} (the image tower takes at least {min_size})",
                self.data.image_size
            ));
        }
        if !(0.0..1.0).contains(&self.data.held_out) {
            return Err(format!(
                "[data] held_out must be in [0, 1), got {}",
                self.data.held_out
            ));
        }
        let v = self.data.validation_fraction;
        if !(0.0..1.0).contains(&v) {
            return Err(format!(
                "[data] validation_fraction must be in [0, 1) (0: no validation part), got {v}"
            ));
        }
        if self.data.sources.is_empty() {
            return Err(
                "[data] has no sources (add [[data.sources]] format = \"captions\", file = ...)"
                    .into(),
            );
        }
        for src in &self.data.sources {
            if let PairSource::FashionMnist {
                test_images,
                captions,
                train_images,
                held_out_classes,
                ..
            } = src
            {
                if *test_images < 1 || *train_images == Some(0) {
                    return Err("[[data.sources]] fashion-mnist: train_images and test_images must be at least 1".into());
                }
                if captions.is_empty() {
                    return Err("[[data.sources]] fashion-mnist: captions needs at least one template (\"a photo of a {}\")".into());
                }
                if !crate::held_out::held_out_indices(held_out_classes)?.is_empty() {
                    crate::held_out::check_templates(&self.eval.held_out_templates, captions)?;
                }
            }
        }
        for (key, t) in [
            ("[eval] emoji_templates", &self.eval.emoji_templates),
            ("[eval] photo_templates", &self.eval.photo_templates),
            ("[eval] held_out_templates", &self.eval.held_out_templates),
        ] {
            if t.is_empty() {
                return Err(format!(
                    "{key} is empty: give at least one prompt template (\"a photo of a {{}}\")"
                ));
            }
        }
        if self.run.batch_size < 2 {
            return Err("[run] batch_size must be at least 2 (in-batch negatives)".into());
        }
        if self.model.embed_dim < 1 {
            return Err(format!(
                "[model] embed_dim = {}: must be at least 1",
                self.model.embed_dim
            ));
        }
        let t = &self.model.text;
        for (key, v) in [
            ("hidden", t.hidden),
            ("layers", t.layers),
            ("heads", t.heads),
            ("intermediate", t.intermediate),
        ] {
            if let Some(v) = v.filter(|&v| v < 1) {
                return Err(format!("[model.text] {key} = {v}: must be at least 1"));
            }
        }
        // The vocabulary is not known yet; the rest of the text tower's checks.
        t.resolve(2, 0)?;
        let clip = self.method.clip();
        positive("[method] init_temperature", clip.init_temperature)?;
        positive("[method] max_logit_scale", clip.max_logit_scale)?;
        if clip.max_logit_scale < 1.0 || 1.0 / clip.init_temperature > clip.max_logit_scale {
            return Err(format!(
                "[method] need 1 <= 1 / init_temperature <= max_logit_scale, got init_temperature = {} and max_logit_scale = {}",
                clip.init_temperature, clip.max_logit_scale
            ));
        }
        selfsup_core::run::common_ranges(&self.trainer, self.run.threads)?;
        self.run.refuse_steps_per_epoch("CLIP")?;
        Ok(())
    }

    /// The text tower of this config for the tokenizer `tok` (its
    /// vocabulary and padding id).
    pub fn text_tower(&self, tok: &TextTokenizer) -> Result<BertConfig> {
        self.model
            .text
            .resolve(tok.vocab_size, tok.pad_id)
            .map_err(Error::Config)
    }

    /// What the export records to rebuild the model.
    pub fn export_meta(&self, text: &BertConfig) -> ExportMeta {
        ExportMeta {
            vision: self.model.vision.clone(),
            text: text.clone(),
            embed_dim: self.model.embed_dim,
            image_size: self.data.image_size,
            normalize: image_normalize(),
            max_len: self.model.text.max_len,
            clip: self.method.clip().clone(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `configs/multimodal/clip-cpu.toml`: its text and path.
    pub(crate) fn preset() -> (String, PathBuf) {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/multimodal/clip-cpu.toml");
        (std::fs::read_to_string(&path).unwrap(), path)
    }

    #[test]
    fn out_of_range_settings_are_refused_at_parse_naming_the_key() {
        let (text, path) = preset();
        for (from, to, want) in [
            (
                "init_temperature = 0.07",
                "init_temperature = 0.0",
                "init_temperature = 0",
            ),
            (
                "init_temperature = 0.07",
                "init_temperature = -0.5",
                "init_temperature = -0.5",
            ),
            (
                "init_temperature = 0.07",
                "init_temperature = 0.001",
                "max_logit_scale",
            ),
            ("batch_size = 128", "batch_size = 0", "batch_size"),
            (
                "image_size = 32",
                "image_size = 100000",
                "image_size = 100000",
            ),
            ("held_out = 0.1", "held_out = 1.5", "held_out"),
            (
                "held_out = 0.1",
                "held_out = 0.1\nvalidation_fraction = 1.0",
                "validation_fraction must be in [0, 1)",
            ),
            (
                "held_out = 0.1",
                "held_out = 0.1\nvalidation_fraction = -0.1",
                "got -0.1",
            ),
        ] {
            assert!(text.contains(from), "{from}");
            let err = ClipRunConfig::from_toml(&text.replacen(from, to, 1), &path)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("clip-cpu.toml") && err.contains(want),
                "{want}: {err}"
            );
        }
    }

    #[test]
    fn the_presets_hold_out_five_classes_with_prompts_training_never_used() {
        for name in ["clip-cpu.toml", "clip-gpu.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../configs/multimodal")
                .join(name);
            let cfg =
                ClipRunConfig::from_toml(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
            let Some(PairSource::FashionMnist {
                held_out_classes,
                captions,
                ..
            }) = cfg
                .data
                .sources
                .iter()
                .find(|s| matches!(s, PairSource::FashionMnist { .. }))
            else {
                panic!("{name}: no fashion-mnist source");
            };
            assert_eq!(
                held_out_classes,
                &["trouser", "sandal", "sneaker", "bag", "ankle boot"],
                "{name}"
            );
            assert!(!cfg.eval.held_out_templates.is_empty());
            for t in &cfg.eval.held_out_templates {
                assert!(!captions.contains(t), "{name}: {t}");
            }
            assert!(cfg
                .eval
                .photo_templates
                .iter()
                .all(|t| captions.contains(t)));
        }
    }

    #[test]
    fn bad_held_out_classes_and_templates_are_refused_at_parse() {
        let (text, path) = preset();
        let from = r#"held_out_classes = ["trouser", "sandal", "sneaker", "bag", "ankle boot"]"#;
        assert!(text.contains(from));
        let all = r#"held_out_classes = ["T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]"#;
        for (to, want) in [
            (
                r#"held_out_classes = ["sandal", "boots"]"#,
                vec![
                    "held_out_classes",
                    "\"boots\"",
                    "\"ankle boot\"",
                    "\"t-shirt/top\"",
                ],
            ),
            (all, vec!["held_out_classes", "10 of the 10"]),
            (
                r#"held_out_classes = ["shirt", "bag"]"#,
                vec!["held_out_classes", "\"t-shirt/top\" names it"],
            ),
        ] {
            let err = ClipRunConfig::from_toml(&text.replacen(from, to, 1), &path)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("clip-cpu.toml") && want.iter().all(|w| err.contains(w)),
                "{want:?}: {err}"
            );
        }
        let bad = text.replacen(
            r#"held_out_templates = ["a picture of a {}.", "an image showing a {}"]"#,
            r#"held_out_templates = ["a picture of a {}.", "A photo of a {}."]"#,
            1,
        );
        assert_ne!(bad, text);
        let err = ClipRunConfig::from_toml(&bad, &path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("held_out_templates") && err.contains("\"a photo of a {}\""),
            "{err}"
        );
        // Without held-out classes the templates are not compared.
        let none = bad.replacen(from, "held_out_classes = []", 1);
        assert!(ClipRunConfig::from_toml(&none, &path).is_ok());
    }

    #[test]
    fn steps_per_epoch_is_refused_naming_clip() {
        let (text, path) = preset();
        let bad = text.replacen("[run]\n", "[run]\nsteps_per_epoch = 5\n", 1);
        assert_ne!(bad, text);
        let err = ClipRunConfig::from_toml(&bad, &path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("clip-cpu.toml")
                && err.contains("steps_per_epoch = 5")
                && err.contains("CLIP"),
            "{err}"
        );
        let cfg = ClipRunConfig::from_toml(&text, &path).unwrap();
        assert_eq!(
            ClipRunConfig::from_toml(&cfg.to_toml(), &path).unwrap(),
            cfg
        );
        assert_eq!(ClipRunConfig::default().run.batch_size, 256);
    }
}
