//! The CLIP workflow: pairs -> tokenizer -> dual encoder -> trainer ->
//! zero-shot and retrieval (trained and random weights) -> export. The
//! `selfsup` binary calls this; it reads no argv or environment and draws
//! nothing.
use crate::captions::{as_documents, fill, tokenize_all};
use crate::embed::image_normalize;
use crate::eval::{ClipEvaluator, EvalSuite, RetrievalSet, ZeroShotSet};
use crate::export::{export_clip, ExportMeta};
use crate::loader::PairBatches;
use crate::method::{Clip, ClipMethodConfig};
use crate::model::{ClipModelConfig, TEXT_PREFIX, VISION_PREFIX};
use crate::pairs::{read_captions, PairSet, ReadOptions, SkipReport};
use crate::registry::{fashion_mnist_pairs, read_emoji};
use selfsup_core::device::{describe, DeviceChoice};
use selfsup_core::method::Method;
use selfsup_core::trainer::{TrainSummary, Trainer, TrainerConfig};
use selfsup_core::{Error, Result};
use selfsup_text::model::BertConfig;
use selfsup_text::tokenizer::{TextTokenizer, TokenizerConfig};
use selfsup_vision::augment::{
    AugmentConfig, Augmenter, ColorJitter, RandomGrayscale, RandomResizedCrop,
};
use selfsup_vision::data::{Normalize, Split};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

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
    /// Fashion-MNIST captioned from its class names (`captions` templates);
    /// zero-shot on the first `test_images` of its test split.
    FashionMnist {
        path: PathBuf,
        #[serde(default)]
        train_images: Option<usize>,
        #[serde(default = "two_thousand")]
        test_images: usize,
        #[serde(default = "fashion_captions")]
        captions: Vec<String>,
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
    /// retrieval (by a stable hash of the image's name).
    pub held_out: f64,
    pub sources: Vec<PairSource>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            image_size: 32,
            skip_bad: false,
            held_out: 0.1,
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
    /// Prompts of the Fashion-MNIST classes.
    pub photo_templates: Vec<String>,
    /// Evaluate after every epoch (else only at the end).
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
            every_epoch: true,
            monitor_pairs: 512,
        }
    }
}

/// `[run]`: device, batch, threads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    pub device: DeviceChoice,
    /// Pairs per batch (per process).
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
                ..
            } = src
            {
                if *test_images < 1 || *train_images == Some(0) {
                    return Err("[[data.sources]] fashion-mnist: train_images and test_images must be at least 1".into());
                }
                if captions.is_empty() {
                    return Err("[[data.sources]] fashion-mnist: captions needs at least one template (\"a photo of a {}\")".into());
                }
            }
        }
        for (key, t) in [
            ("[eval] emoji_templates", &self.eval.emoji_templates),
            ("[eval] photo_templates", &self.eval.photo_templates),
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
        Ok(())
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

/// Architecture figures of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct ClipModelSummary {
    pub vision_arch: String,
    pub vision_params: i64,
    pub text_layers: i64,
    pub text_hidden: i64,
    pub text_heads: i64,
    pub text_intermediate: i64,
    pub text_params: i64,
    pub embed_dim: i64,
}

/// What a CLIP run produced (also written as `summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct ClipRunSummary {
    pub method: String,
    pub device: String,
    pub threads: Option<usize>,
    pub sources: Vec<String>,
    pub train_images: usize,
    pub train_pairs: usize,
    pub skipped: SkipReport,
    pub vocab_size: usize,
    pub image_size: usize,
    pub max_len: usize,
    /// Mean tokens per training caption, `[CLS]` and `[SEP]` included.
    pub mean_caption_tokens: f64,
    /// Tokens of the longest training caption (after the cut to `max_len`).
    pub max_caption_tokens: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub model: ClipModelSummary,
    pub epochs: usize,
    pub steps: u64,
    pub final_loss: f64,
    pub logit_scale: f64,
    pub train_seconds: f64,
    pub train_pairs_per_s: f64,
    pub wall_seconds: f64,
    /// Trained weights: zero-shot top-1 and Recall@K per set.
    pub metrics: Vec<(String, f64)>,
    /// The same figures for random weights.
    pub random_weights: Vec<(String, f64)>,
    /// Guessing accuracy of each zero-shot set.
    pub chance: Vec<(String, f64)>,
    pub warnings: Vec<String>,
    pub run_dir: PathBuf,
    pub export_dir: PathBuf,
    pub curves: PathBuf,
    pub train: Option<TrainSummary>,
}

pub use selfsup_core::run::RunOptions;

/// Pairs to train on and to evaluate with, read from the sources.
pub struct RunData {
    pub train: PairSet,
    pub names: Vec<String>,
    /// Named retrieval sets (held-out pairs).
    pub retrieval: Vec<(String, PairSet)>,
    /// Named labelled sets with their prompt templates.
    pub zero_shot: Vec<(String, PairSet, Vec<String>)>,
}

fn resolve(root: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    }
}

/// Reads every source and splits it into training and evaluation sets.
pub fn read_data(cfg: &ClipRunConfig, root: &Path) -> Result<RunData> {
    let opts = ReadOptions {
        image_size: cfg.data.image_size,
        skip_bad: cfg.data.skip_bad,
    };
    let mut train = Vec::new();
    let mut names = Vec::new();
    let mut retrieval: Vec<(String, PairSet)> = Vec::new();
    let mut zero_shot: Vec<(String, PairSet, Vec<String>)> = Vec::new();
    for src in &cfg.data.sources {
        match src {
            PairSource::Captions { file, images } => {
                let file = resolve(root, file);
                let images = images.as_ref().map(|p| resolve(root, p));
                let set = read_captions(&file, images.as_deref(), opts)?;
                let (tr, ho) = set.split(cfg.data.held_out);
                let name = file
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                if !ho.is_empty() {
                    retrieval.push((format!("{name} held-out"), set.subset(&ho)));
                }
                names.push(file.display().to_string());
                train.push(set.subset(&tr));
            }
            PairSource::Emoji { path } => {
                let dir = resolve(root, path);
                let name = dir
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                let set = read_emoji(&dir, &name, opts)?;
                let (tr, ho) = set.split(cfg.data.held_out);
                if !ho.is_empty() {
                    let held = set.subset(&ho);
                    retrieval.push((format!("{name} held-out"), held.clone()));
                    if cfg.eval.second_rendering.is_none() {
                        zero_shot.push((
                            format!("{name} held-out categories"),
                            held,
                            cfg.eval.emoji_templates.clone(),
                        ));
                    }
                }
                names.push(dir.display().to_string());
                train.push(set.subset(&tr));
            }
            PairSource::FashionMnist {
                path,
                train_images,
                test_images,
                captions,
            } => {
                let dir = resolve(root, path);
                let s = cfg.data.image_size;
                train.push(fashion_mnist_pairs(
                    &dir,
                    Split::Train,
                    *train_images,
                    s,
                    captions,
                )?);
                let test = fashion_mnist_pairs(&dir, Split::Test, Some(*test_images), s, captions)?;
                zero_shot.push((
                    "fashion-mnist test".into(),
                    test,
                    cfg.eval.photo_templates.clone(),
                ));
                names.push(dir.display().to_string());
            }
        }
    }
    if let Some(second) = &cfg.eval.second_rendering {
        let dir = resolve(root, second);
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let set = read_emoji(&dir, &name, opts)?;
        let (tr, ho) = set.split(cfg.data.held_out);
        if !ho.is_empty() {
            let held = set.subset(&ho);
            retrieval.push((format!("{name} held-out emoji"), held.clone()));
            zero_shot.push((
                format!("{name} held-out categories"),
                held,
                cfg.eval.emoji_templates.clone(),
            ));
        }
        let seen: Vec<usize> = tr.into_iter().take(cfg.eval.seen_images).collect();
        if !seen.is_empty() {
            retrieval.push((format!("{name} training emoji"), set.subset(&seen)));
        }
    }
    Ok(RunData {
        train: PairSet::concat("train", &train)?,
        names,
        retrieval,
        zero_shot,
    })
}

/// The evaluation suite of `data` for tokenizer `tok`.
pub fn build_suite(
    data: &RunData,
    tok: &TextTokenizer,
    max_len: usize,
    norm: &Normalize,
) -> Result<EvalSuite> {
    let mut retrieval = Vec::new();
    for (name, set) in &data.retrieval {
        let mut texts = Vec::new();
        let mut text_image = Vec::new();
        for (i, caps) in set.captions.iter().enumerate() {
            texts.extend(caps.iter().cloned());
            text_image.extend(std::iter::repeat_n(i as i64, caps.len()));
        }
        retrieval.push(RetrievalSet {
            name: name.clone(),
            images: set
                .images
                .to_tensor(&(0..set.len()).collect::<Vec<_>>(), norm),
            texts: tokenize_all(tok, &texts, max_len)?,
            text_image,
        });
    }
    let mut zero_shot = Vec::new();
    for (name, set, templates) in &data.zero_shot {
        let labels = set
            .images
            .labels_tensor()
            .ok_or_else(|| Error::Config(format!("{name}: zero-shot needs class labels")))?;
        let prompts = set
            .images
            .classes
            .iter()
            .map(|c| {
                let texts: Vec<String> = templates.iter().map(|t| fill(t, c)).collect();
                tokenize_all(tok, &texts, max_len)
            })
            .collect::<Result<Vec<_>>>()?;
        zero_shot.push(ZeroShotSet {
            name: name.clone(),
            images: set
                .images
                .to_tensor(&(0..set.len()).collect::<Vec<_>>(), norm),
            labels,
            chance: 1.0 / set.images.classes.len().max(1) as f64,
            prompts,
        });
    }
    Ok(EvalSuite {
        retrieval,
        zero_shot,
        pad_id: tok.pad_id,
    })
}

fn params(vs: &tch::nn::VarStore, prefix: &str) -> i64 {
    vs.variables()
        .iter()
        .filter(|(k, _)| k.starts_with(prefix) && crate::export::is_exported(k))
        .map(|(_, v)| v.numel() as i64)
        .sum()
}

/// Pre-trains, evaluates and exports as `cfg` says.
pub fn pretrain(cfg: &ClipRunConfig, opts: RunOptions) -> Result<ClipRunSummary> {
    selfsup_core::run::check_common(&cfg.trainer, cfg.run.threads)?;
    cfg.validate()?;
    opts.single_process("CLIP pre-training")?;
    let wall = Instant::now();
    if let Some(t) = cfg.run.threads {
        tch::set_num_threads(t as i32);
    }
    let device = cfg.run.device.resolve()?;
    let seed = cfg.trainer.seed;
    (opts.log)(&format!(
        "reading {} pair source(s) from {}",
        cfg.data.sources.len(),
        opts.data_root.display()
    ));
    let data = read_data(cfg, &opts.data_root)?;
    let train = &data.train;
    if train.len() < cfg.run.batch_size {
        return Err(Error::Data(format!(
            "{} training images, fewer than one batch of {} (lower [run] batch_size or add pairs)",
            train.len(),
            cfg.run.batch_size
        )));
    }
    (opts.log)(&format!(
        "{} training images with {} captions; {} pairs skipped; evaluation: {}",
        train.len(),
        train.pair_count(),
        train.report.total(),
        data.retrieval
            .iter()
            .map(|(n, s)| format!("{n} ({} images)", s.len()))
            .chain(
                data.zero_shot
                    .iter()
                    .map(|(n, s, _)| format!("{n} ({} images)", s.len()))
            )
            .collect::<Vec<_>>()
            .join(", ")
    ));
    std::fs::create_dir_all(&opts.run_dir).map_err(|e| Error::io(&opts.run_dir, e))?;
    let tok_dir = opts.run_dir.join("tokenizer");
    let tok = if opts.resume && tok_dir.join("tokenizer.json").exists() {
        TextTokenizer::from_file(&tok_dir.join("tokenizer.json"))?
    } else {
        let t = TextTokenizer::build(
            &cfg.tokenizer,
            &opts.data_root,
            &as_documents(&train.captions),
        )?;
        t.save(&tok_dir)?;
        t
    };
    let text_cfg = cfg
        .model
        .text
        .resolve(tok.vocab_size, tok.pad_id)
        .map_err(Error::Config)?;
    let max_len = cfg.model.text.max_len;
    let tokens: Vec<Vec<Vec<i64>>> = train
        .captions
        .iter()
        .map(|c| tokenize_all(&tok, c, max_len))
        .collect::<Result<_>>()?;
    let n_rows: usize = tokens.iter().map(Vec::len).sum();
    let mean_tokens =
        tokens.iter().flatten().map(Vec::len).sum::<usize>() as f64 / n_rows.max(1) as f64;
    let norm = image_normalize();
    let suite = build_suite(&data, &tok, max_len, &norm)?;

    let augmenter = Augmenter::new(cfg.augment.clone(), 3, cfg.data.image_size, norm.clone())?;
    let images = Arc::new(train.images.clone());
    let loader = PairBatches::new(
        images.clone(),
        Arc::new(tokens.clone()),
        augmenter,
        cfg.run.batch_size,
        seed,
        tok.pad_id,
    );

    tch::manual_seed(seed as i64);
    let mut clip = Clip::new(&cfg.model, cfg.method.clip(), &text_cfg, device)?;
    // Random weights: the same architecture, freshly initialised, never trained.
    let random_weights = {
        tch::manual_seed(seed as i64 ^ 0x5EED);
        let model = ClipModelConfig {
            vision_init: None,
            ..cfg.model.clone()
        };
        let fresh = Clip::new(&model, cfg.method.clip(), &text_cfg, device)?;
        suite.evaluate(&fresh.model, device)
    };
    let monitor_n = cfg.eval.monitor_pairs.min(train.len());
    let monitor = (monitor_n > 1).then(|| {
        let idx: Vec<usize> = (0..monitor_n).collect();
        (
            images.to_tensor(&idx, &norm),
            idx.iter().map(|&i| tokens[i][0].clone()).collect(),
        )
    });
    let mut evaluator = ClipEvaluator {
        suite,
        every_epoch: cfg.eval.every_epoch,
        monitor,
    };
    let trainer = Trainer::new(cfg.trainer.clone(), &opts.run_dir, device)
        .with_stop_flag(opts.stop.clone())
        .with_provenance(cfg.to_toml(), opts.git_commit.clone());
    selfsup_core::tensor_io::write_atomic(
        &opts.run_dir.join("config.toml"),
        cfg.to_toml().as_bytes(),
    )?;
    (opts.log)(&format!(
        "training: {} steps",
        loader_steps(&loader, cfg.trainer.epochs)
    ));
    let summary = trainer.fit(
        &mut clip,
        &loader,
        &mut evaluator,
        opts.observer,
        opts.resume,
    )?;

    let metrics = evaluator.suite.evaluate(&clip.model, device);
    let export_dir = opts.run_dir.join("export");
    export_clip(&clip, &tok, &cfg.export_meta(&text_cfg), &export_dir)?;
    let vs = clip.var_store();
    Ok(ClipRunSummary {
        method: clip.name().to_string(),
        device: describe(device),
        threads: cfg.run.threads,
        sources: data.names.clone(),
        train_images: train.len(),
        train_pairs: train.pair_count(),
        skipped: train.report.clone(),
        vocab_size: tok.vocab_size,
        image_size: cfg.data.image_size,
        max_len,
        mean_caption_tokens: mean_tokens,
        max_caption_tokens: tokens.iter().flatten().map(Vec::len).max().unwrap_or(0),
        batch_size: cfg.run.batch_size,
        lr: cfg.trainer.optimizer.scaled_lr(cfg.run.batch_size),
        model: ClipModelSummary {
            vision_arch: cfg.model.vision.arch().to_string(),
            vision_params: params(vs, &format!("{VISION_PREFIX}.")),
            text_layers: text_cfg.layers,
            text_hidden: text_cfg.hidden,
            text_heads: text_cfg.heads,
            text_intermediate: text_cfg.intermediate,
            text_params: params(vs, &format!("{TEXT_PREFIX}.")),
            embed_dim: cfg.model.embed_dim,
        },
        epochs: cfg.trainer.epochs,
        steps: summary.steps,
        final_loss: summary.final_loss,
        logit_scale: clip.model.scale_value(),
        train_seconds: summary.train_seconds,
        train_pairs_per_s: summary.samples_per_s,
        wall_seconds: wall.elapsed().as_secs_f64(),
        metrics,
        random_weights,
        chance: evaluator
            .suite
            .zero_shot
            .iter()
            .map(|z| (format!("{} zero-shot top-1", z.name), z.chance))
            .collect(),
        warnings: summary.warnings.clone(),
        run_dir: opts.run_dir.clone(),
        export_dir,
        curves: opts.run_dir.join(selfsup_core::trainer::PLOT_FILE),
        train: Some(summary),
    })
}

fn loader_steps(loader: &PairBatches, epochs: usize) -> usize {
    use selfsup_core::source::BatchSource;
    loader.batches_per_epoch() * epochs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset() -> (String, PathBuf) {
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
    fn pretrain_checks_the_trainer_before_reading_data() {
        let (text, path) = preset();
        let mut cfg = ClipRunConfig::from_toml(&text, &path).unwrap();
        cfg.trainer.epochs = 0;
        let dir = tempfile::tempdir().unwrap();
        let mut obs = selfsup_core::trainer::Silent;
        let mut log = |_: &str| {};
        let opts = RunOptions {
            data_root: dir.path().join("no-such-root"),
            run_dir: dir.path().join("run"),
            resume: false,
            observer: &mut obs,
            stop: Default::default(),
            git_commit: None,
            log: &mut log,
            distributed: None,
        };
        let err = pretrain(&cfg, opts).err().unwrap().to_string();
        assert!(err.contains("epochs = 0"), "{err}");
    }
}
