//! The CLIP workflow on core's [`Run`]: pairs -> tokenizer -> dual encoder
//! -> trainer (validation figures after every epoch) -> zero-shot and
//! retrieval on the test sets, once (trained and random weights), and on
//! the validation sets -> export. The `selfsup` binary calls this (through [`crate::workflow`]);
//! it reads no argv or environment and draws nothing.
use crate::captions::{as_documents, tokenize_all};
use crate::data::{build_suite, read_data};
use crate::eval::ClipEvaluator;
use crate::export::export_clip;
use crate::loader::PairBatches;
use crate::method::Clip;
use crate::model::{ClipModelConfig, TEXT_PREFIX, VISION_PREFIX};
use crate::pairs::SkipReport;
use selfsup_core::device::describe;
use selfsup_core::method::Method;
use selfsup_core::run::{seed_random_weights, seed_weights, Run};
use selfsup_core::trainer::TrainSummary;
use selfsup_core::{Error, Result};
use selfsup_text::tokenizer::TextTokenizer;
use selfsup_vision::augment::Augmenter;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

pub use crate::config::{
    image_normalize, ClipRunConfig, DataConfig, EvalConfig, PairSource, Pairs, RunConfig,
};
pub use crate::data::RunData;
pub use selfsup_core::run::RunOptions;

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
    /// Fashion-MNIST classes never trained on (`held_out_classes`).
    pub held_out_classes: Vec<String>,
    /// Training images of other sources dropped for a caption naming one.
    pub dropped_naming_held_out: usize,
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
    /// Trained weights: zero-shot top-1 and Recall@K per test set (read
    /// once, here).
    pub metrics: Vec<(String, f64)>,
    /// The same figures for random weights.
    pub random_weights: Vec<(String, f64)>,
    /// Guessing accuracy of each zero-shot test set.
    pub chance: Vec<(String, f64)>,
    /// `[data] validation_fraction`.
    pub validation_fraction: f64,
    /// Training images set aside for validation (never trained on).
    pub validation_images: usize,
    /// Trained weights on the validation sets (what the per-epoch
    /// evaluation reads), at the end.
    pub validation: Vec<(String, f64)>,
    /// Guessing accuracy of each zero-shot validation set.
    pub validation_chance: Vec<(String, f64)>,
    pub warnings: Vec<String>,
    pub run_dir: PathBuf,
    pub export_dir: PathBuf,
    pub curves: PathBuf,
    pub train: Option<TrainSummary>,
}

/// Exported parameters of one tower (variables under `prefix`; BERT's
/// unused MLM head is not exported, so not counted).
pub(crate) fn params(vs: &tch::nn::VarStore, prefix: &str) -> i64 {
    vs.variables()
        .iter()
        .filter(|(k, _)| k.starts_with(prefix) && crate::export::is_exported(k))
        .map(|(_, v)| v.numel() as i64)
        .sum()
}

/// The dual encoder with random weights: the architecture of `cfg`,
/// initialised from core's random-weights seed (never from
/// `[model] vision_init`), never trained.
pub fn random_weights(
    cfg: &ClipRunConfig,
    text: &selfsup_text::model::BertConfig,
    device: tch::Device,
) -> Result<Clip> {
    seed_random_weights(cfg.trainer.seed);
    let model = ClipModelConfig {
        vision_init: None,
        ..cfg.model.clone()
    };
    Clip::new(&model, cfg.method.clip(), text, device)
}

/// Pre-trains, evaluates and exports as `cfg` says; writes `config.toml`
/// and `summary.json` into the run folder.
pub fn pretrain(cfg: &ClipRunConfig, opts: RunOptions) -> Result<ClipRunSummary> {
    cfg.validate()?;
    let mut run = Run::start(
        "CLIP pre-training",
        &cfg.run,
        &cfg.trainer,
        cfg.to_toml(),
        false,
        opts,
    )?;
    let device = run.device;
    if device == tch::Device::Cpu && crate::allocator::keep_freed_memory() {
        run.log("CPU: freed memory is kept for reuse between steps (glibc mallopt)");
    }
    let seed = cfg.trainer.seed;
    let root = run.data_root();
    run.log(&format!(
        "reading {} pair source(s) from {}",
        cfg.data.sources.len(),
        root.display()
    ));
    let data = read_data(cfg, &root)?;
    let train = &data.train;
    if !data.held_out_classes.is_empty() {
        run.log(&format!(
            "held out of training: {} (their images, and {} other training image(s) with a \
             caption naming one)",
            data.held_out_classes.join(", "),
            data.dropped_naming_held_out
        ));
    }
    if train.len() < cfg.run.batch_size {
        return Err(Error::Data(format!(
            "{} training images, fewer than one batch of {} (lower [run] batch_size or add pairs)",
            train.len(),
            cfg.run.batch_size
        )));
    }
    run.log(&format!(
        "{} training images with {} captions; {} pairs skipped; test (read once, at the end): \
         {}; validation (every epoch, never trained on): {}",
        train.len(),
        train.pair_count(),
        train.report.total(),
        data.test.describe().join(", "),
        if data.validation.is_empty() {
            "none ([data] validation_fraction = 0)".to_string()
        } else {
            data.validation.describe().join(", ")
        }
    ));
    let tok_dir = run.run_dir.join("tokenizer");
    let tok = if run.resume && tok_dir.join("tokenizer.json").exists() {
        TextTokenizer::from_file(&tok_dir.join("tokenizer.json"))?
    } else {
        let t = TextTokenizer::build(&cfg.tokenizer, &root, &as_documents(&train.captions))?;
        t.save(&tok_dir)?;
        t
    };
    let text_cfg = cfg.text_tower(&tok)?;
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
    let test = build_suite(&data.test, &tok, max_len, &norm)?;
    let validation = build_suite(&data.validation, &tok, max_len, &norm)?;

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

    seed_weights(seed);
    let mut clip = Clip::new(&cfg.model, cfg.method.clip(), &text_cfg, device)?;
    let random_weights = test.evaluate(&random_weights(cfg, &text_cfg, device)?.model, device);
    let monitor_n = cfg.eval.monitor_pairs.min(train.len());
    let monitor = (monitor_n > 1).then(|| {
        let idx: Vec<usize> = (0..monitor_n).collect();
        (
            images.to_tensor(&idx, &norm),
            idx.iter().map(|&i| tokens[i][0].clone()).collect(),
        )
    });
    let mut evaluator = ClipEvaluator {
        validation,
        every_epoch: cfg.eval.every_epoch,
        monitor,
    };
    let trainer = run.trainer(cfg.trainer.clone());
    run.log(&format!(
        "training: {} steps",
        loader_steps(&loader, cfg.trainer.epochs)
    ));
    let summary = trainer.fit(&mut clip, &loader, &mut evaluator, run.observer, run.resume)?;

    let metrics = test.evaluate(&clip.model, device);
    let validation = evaluator.validation.evaluate(&clip.model, device);
    let export_dir = run.run_dir.join("export");
    export_clip(&clip, &tok, &cfg.export_meta(&text_cfg), &export_dir)?;
    let vs = clip.var_store();
    let wall_seconds = run.seconds();
    let run_dir = run.run_dir.clone();
    run.finish(ClipRunSummary {
        method: clip.name().to_string(),
        device: describe(device),
        threads: cfg.run.threads,
        sources: data.names.clone(),
        train_images: train.len(),
        train_pairs: train.pair_count(),
        held_out_classes: data.held_out_classes.clone(),
        dropped_naming_held_out: data.dropped_naming_held_out,
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
        wall_seconds,
        metrics,
        random_weights,
        chance: chance(&test),
        validation_fraction: cfg.data.validation_fraction,
        validation_images: data.validation_images,
        validation,
        validation_chance: chance(&evaluator.validation),
        warnings: summary.warnings.clone(),
        export_dir,
        curves: run_dir.join(selfsup_core::trainer::PLOT_FILE),
        run_dir,
        train: Some(summary),
    })
}

/// Guessing accuracy of each zero-shot set of `suite`.
fn chance(suite: &crate::eval::EvalSuite) -> Vec<(String, f64)> {
    suite
        .zero_shot
        .iter()
        .map(|z| (z.name.clone(), z.chance))
        .collect()
}

fn loader_steps(loader: &PairBatches, epochs: usize) -> usize {
    use selfsup_core::source::BatchSource;
    loader.batches_per_epoch() * epochs
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use selfsup_core::trainer::Silent;
    use std::path::Path;

    /// A run config on a tiny emoji-datasource folder written under `root`
    /// (48 coloured squares, named and categorised by colour): one short
    /// epoch of a small image tower and a one-layer text tower.
    pub(crate) fn tiny(root: &Path) -> ClipRunConfig {
        const COLOURS: [(&str, [u8; 3]); 6] = [
            ("red", [220, 30, 30]),
            ("green", [30, 200, 40]),
            ("blue", [30, 40, 220]),
            ("yellow", [230, 220, 30]),
            ("purple", [150, 40, 180]),
            ("black", [15, 15, 15]),
        ];
        let dir = root.join("emoji-tiny");
        std::fs::create_dir_all(dir.join("img")).unwrap();
        let mut entries = Vec::new();
        for k in 0..8u32 {
            for (c, (name, rgb)) in COLOURS.iter().enumerate() {
                let file = format!("{k}-{c}.png");
                let side = 6 + k % 8;
                let img = image::RgbaImage::from_fn(16, 16, |x, y| {
                    if x < side && y < side {
                        image::Rgba([rgb[0], rgb[1], rgb[2], 255])
                    } else {
                        image::Rgba([128, 128, 128, 255])
                    }
                });
                img.save(dir.join("img").join(&file)).unwrap();
                entries.push(serde_json::json!({
                    "name": format!("{name} square number {k}"),
                    "short_names": [format!("{name}")],
                    "image": file,
                    "category": name,
                }));
            }
        }
        std::fs::write(
            dir.join("emoji.json"),
            serde_json::to_string(&entries).unwrap(),
        )
        .unwrap();
        let text = r#"
            [run]
            device = "cpu"
            batch_size = 8
            [data]
            image_size = 16
            held_out = 0.25
            [[data.sources]]
            format = "emoji"
            path = "emoji-tiny"
            [tokenizer]
            kind = "train-wordpiece"
            vocab_size = 200
            min_frequency = 1
            lowercase = true
            [model]
            embed_dim = 16
            [model.vision]
            arch = "small_cnn"
            channels = [8, 16]
            [model.text]
            size = "tiny"
            layers = 1
            hidden = 32
            heads = 2
            intermediate = 64
            max_len = 12
            max_position = 16
            dropout = 0.0
            [method]
            name = "clip"
            [trainer]
            epochs = 1
            seed = 0
            [eval]
            monitor_pairs = 16
            emoji_templates = ["an emoji of {}", "{}"]
        "#;
        ClipRunConfig::from_toml(text, Path::new("tiny.toml")).unwrap()
    }

    fn options<'a>(
        data: &Path,
        run_dir: &Path,
        observer: &'a mut Silent,
        log: &'a mut dyn FnMut(&str),
    ) -> RunOptions<'a> {
        RunOptions {
            data: Some(data.to_path_buf()),
            run_dir: run_dir.to_path_buf(),
            resume: false,
            observer,
            stop: Default::default(),
            git_commit: None,
            log,
            distributed: None,
        }
    }

    #[test]
    fn pretrain_writes_the_config_and_the_summary_through_the_run() {
        let _rng = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let cfg = tiny(dir.path());
        let run_dir = dir.path().join("run");
        let (mut obs, mut log) = (Silent, |_: &str| {});
        let s = pretrain(&cfg, options(dir.path(), &run_dir, &mut obs, &mut log)).unwrap();
        let written =
            std::fs::read_to_string(run_dir.join(selfsup_core::run::CONFIG_FILE)).unwrap();
        assert_eq!(
            ClipRunConfig::from_toml(&written, Path::new("config.toml")).unwrap(),
            cfg
        );
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(run_dir.join(selfsup_core::run::SUMMARY_FILE)).unwrap(),
        )
        .unwrap();
        assert_eq!(json["method"], "clip");
        assert_eq!(json["steps"].as_u64(), Some(s.steps));
        assert_eq!(s.steps as usize, s.train_images / 8);
        assert!(
            s.train_images > 24 && s.train_images < 48,
            "{}",
            s.train_images
        );
        assert!(s.final_loss.is_finite() && s.final_loss > 0.0);
        assert_eq!(json["final_loss"].as_f64(), Some(s.final_loss));
        let names: Vec<&str> = s.metrics.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(names.len(), 1 + 6, "{names:?}");
        assert_eq!(names[0], "emoji-tiny held-out categories zero-shot top-1");
        assert_eq!(names[1], "emoji-tiny held-out i->t R@1");
        assert_eq!(s.random_weights.len(), s.metrics.len());
        assert_eq!(s.chance, vec![(names[0].to_string(), 1.0 / 6.0)]);
        assert!(s.metrics.iter().all(|m| (0.0..=1.0).contains(&m.1)));
        // The per-epoch evaluation reads the validation sets (training
        // emoji set aside: one of each colour), never the test sets; the
        // end reads both, reported apart.
        assert_eq!(s.validation_images, 6);
        assert_eq!(s.validation_fraction, 0.05);
        let val: Vec<&str> = s.validation.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(val.len(), 1 + 6, "{val:?}");
        assert_eq!(val[0], "emoji-tiny validation categories zero-shot top-1");
        assert_eq!(val[1], "emoji-tiny validation i->t R@1");
        assert_eq!(s.validation_chance, vec![(val[0].to_string(), 1.0 / 6.0)]);
        let epochs = &s.train.as_ref().unwrap().epochs;
        assert_eq!(epochs.len(), 1);
        let per_epoch: Vec<&str> = epochs[0].metrics.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(per_epoch, val);
        assert!(json["validation"].as_array().unwrap().len() == 7);
        assert!(run_dir.join("tokenizer/tokenizer.json").is_file());
        assert!(run_dir.join("export/model.safetensors").is_file());
    }

    #[test]
    fn pretrain_checks_the_trainer_before_reading_data() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/multimodal/clip-cpu.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut cfg = ClipRunConfig::from_toml(&text, &path).unwrap();
        cfg.trainer.epochs = 0;
        let dir = tempfile::tempdir().unwrap();
        let (mut obs, mut log) = (Silent, |_: &str| {});
        let opts = options(
            &dir.path().join("no-such-root"),
            &dir.path().join("run"),
            &mut obs,
            &mut log,
        );
        let err = pretrain(&cfg, opts).err().unwrap().to_string();
        assert!(err.contains("epochs = 0"), "{err}");
        assert!(!dir.path().join("run").exists());
    }

    #[test]
    fn a_missing_source_names_the_file_the_root_and_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = tiny(dir.path());
        cfg.data.sources = vec![PairSource::Captions {
            file: "nowhere/captions.csv".into(),
            images: None,
        }];
        let (mut obs, mut log) = (Silent, |_: &str| {});
        let err = pretrain(
            &cfg,
            options(dir.path(), &dir.path().join("run"), &mut obs, &mut log),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("nowhere/captions.csv") && err.contains("--data"),
            "{err}"
        );
    }
}
