//! Speech-text CLIP: the CLIP method ([`crate::method::Clip`]) with an audio
//! tower ([`SpeechTower`]: selfsup-audio's wav2vec 2.0 encoder, or log-mel
//! frames through a conv stack) beside the text tower, trained on spoken letters, syllables and words paired with
//! their written form ([`crate::speech_pairs`]), evaluated on speakers it
//! never heard ([`crate::speech_eval`]).
//!
//! The config is a CLIP config whose `[model]` holds an `[model.audio]`
//! table (`kind = "log_mel"` and its sizes, or `kind = "wav2vec2"` and a
//! wav2vec 2.0 architecture whose pre-training keys are unused):
//! [`is_speech_config`] is how the CLIP modality tells the two apart, so
//! `[method] name = "clip"` stays the one method name.
//!
//! Held out: the speakers of `[data] test_speakers` (whole recording
//! folders: one speaker, one language each), read once at the end; the
//! validation speakers are `[data] validation_fraction` of the others,
//! whole (core's `by_group`, seeded by `[trainer] seed`), never trained on,
//! read after every epoch. The text tower reads characters
//! ([`CharVocab`], from the training forms): the forms are single letters,
//! syllables and short words, and characters let a form training never saw
//! be spelled (a WordPiece vocabulary of the training forms would make most
//! unseen forms `[UNK]`).
use crate::method::{Clip, ClipMethodConfig};
use crate::model::audio_tower::load_wav2vec2_export;
use crate::model::{AudioTowerConfig, SpeechTower, TextTower, AUDIO_PREFIX, TEXT_PREFIX};
use crate::pretrain::params;
use crate::speech_batches::SpeechBatches;
use crate::speech_eval::{CharVocab, SpeechEvaluator, SpeechSet, SpeechSuite};
use crate::speech_pairs::{
    eval_clip, read_pairs, split_by_speaker, PairReport, SpeakerSplit, SpeechPair, SpeechSource,
};
use selfsup_audio::read::ReadLimits;
use selfsup_audio::resample::TARGET_RATE;
use selfsup_core::device::describe;
use selfsup_core::method::Method;
use selfsup_core::run::{
    seed_random_weights, seed_weights, BatchDefault, Run, RunOptions, RunSettings,
};
use selfsup_core::trainer::{TrainSummary, TrainerConfig};
use selfsup_core::{Error, Result};
use selfsup_text::model::{BertConfig, ModelConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Speech-text CLIP's default `[run] batch_size`: 64 clip-form pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpeechPairs;

impl BatchDefault for SpeechPairs {
    const BATCH: usize = 64;
}

/// Whether a CLIP config is a speech-text one (its `[model]` has an
/// `[model.audio]` table).
pub fn is_speech_config(text: &str) -> bool {
    toml::from_str::<toml::Value>(text)
        .ok()
        .and_then(|v| v.get("model").and_then(|m| m.get("audio")).map(|_| ()))
        .is_some()
}

/// `[data]`: the pairs and who is held out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpeechDataConfig {
    pub sources: Vec<SpeechSource>,
    /// Speakers never trained on, read once at the end: `<source>/<folder>`
    /// (`klettres/en_GB`, `ktuberling/en`).
    pub test_speakers: Vec<String>,
    /// Share of the other speakers set aside, whole, for the per-epoch
    /// figures (0: none).
    pub validation_fraction: f64,
    /// Longest training crop, seconds (a random crop per clip and epoch).
    pub crop_seconds: f64,
    /// Evaluation reads the first `eval_seconds` of each clip.
    pub eval_seconds: f64,
    /// Longest file, seconds, checked from its header before decoding.
    pub max_seconds: f64,
    /// Skip and count bad files and pairs instead of stopping.
    pub skip_bad: bool,
}

impl Default for SpeechDataConfig {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            test_speakers: Vec::new(),
            validation_fraction: 0.15,
            crop_seconds: 1.5,
            eval_seconds: 3.0,
            max_seconds: 60.0,
            skip_bad: false,
        }
    }
}

/// `[model]`: the audio tower, the text tower and the shared space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpeechModelConfig {
    /// `[model.audio]`: the audio tower (`kind = "log_mel"` or `"wav2vec2"`).
    pub audio: AudioTowerConfig,
    /// A selfsup-audio wav2vec 2.0 export (`.../export/model.safetensors`)
    /// of the same architecture to start the audio tower from (`kind =
    /// "wav2vec2"` only).
    pub audio_init: Option<PathBuf>,
    /// `[model.text]`: the BERT text tower on characters.
    pub text: ModelConfig,
    pub embed_dim: i64,
}

impl Default for SpeechModelConfig {
    fn default() -> Self {
        Self {
            audio: AudioTowerConfig::default(),
            audio_init: None,
            text: ModelConfig {
                max_len: 24,
                max_position: 32,
                ..ModelConfig::default()
            },
            embed_dim: 128,
        }
    }
}

/// `[eval]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpeechEvalConfig {
    /// Prompts of the zero-shot forms (`{}` = the form).
    pub templates: Vec<String>,
    /// Evaluate the validation speakers after every epoch.
    pub every_epoch: bool,
    /// Training pairs for the collapse monitors.
    pub monitor_pairs: usize,
}

impl Default for SpeechEvalConfig {
    fn default() -> Self {
        Self {
            templates: vec!["{}".into()],
            every_epoch: true,
            monitor_pairs: 256,
        }
    }
}

/// A whole speech-text CLIP run, as one TOML file
/// (`configs/multimodal/speech-text-*.toml`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpeechRunConfig {
    pub run: RunSettings<SpeechPairs>,
    pub data: SpeechDataConfig,
    pub model: SpeechModelConfig,
    pub method: ClipMethodConfig,
    pub trainer: TrainerConfig,
    pub eval: SpeechEvalConfig,
}

impl SpeechRunConfig {
    /// Parses and checks a config, errors naming the file and the key.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let cfg: Self = toml::from_str(text)
            .map_err(|e| Error::Config(format!("{}: {e}", origin.display())))?;
        cfg.check()
            .map_err(|e| Error::Config(format!("{}: {e}", origin.display())))?;
        Ok(cfg)
    }

    /// The resolved config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# unserialisable config: {e}"))
    }

    fn check(&self) -> std::result::Result<(), String> {
        use selfsup_core::trainer::positive;
        let d = &self.data;
        if d.sources.is_empty() {
            return Err("[data] has no sources (add [[data.sources]] format = \"klettres\", path = \"klettres\")".into());
        }
        if d.test_speakers.is_empty() {
            return Err(
                "[data] test_speakers is empty: name the held-out speakers (\"klettres/en_GB\")"
                    .into(),
            );
        }
        if !(d.validation_fraction.is_finite() && (0.0..1.0).contains(&d.validation_fraction)) {
            return Err(format!(
                "[data] validation_fraction must be in [0, 1) (0: no validation speakers), got {}",
                d.validation_fraction
            ));
        }
        for (key, v, max) in [
            ("crop_seconds", d.crop_seconds, 30.0),
            ("eval_seconds", d.eval_seconds, 60.0),
            ("max_seconds", d.max_seconds, 3600.0),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= max) {
                return Err(format!("[data] {key} = {v}: must be in (0, {max}] seconds"));
            }
        }
        self.model.audio.validate()?;
        if let (Some(file), AudioTowerConfig::LogMel(_)) =
            (&self.model.audio_init, &self.model.audio)
        {
            return Err(format!(
                "[model] audio_init = {}: a wav2vec 2.0 export needs [model.audio] kind = \"wav2vec2\" (drop audio_init for the log-mel tower)",
                file.display()
            ));
        }
        let field = self.model.audio.receptive_field() as f64 / TARGET_RATE as f64;
        if d.crop_seconds < field || d.eval_seconds < field {
            return Err(format!(
                "[data] crop_seconds and eval_seconds must be at least the audio tower's receptive field ({field} s)"
            ));
        }
        if self.model.embed_dim < 1 {
            return Err(format!(
                "[model] embed_dim = {}: must be at least 1",
                self.model.embed_dim
            ));
        }
        self.model.text.resolve(5, 0)?;
        if self.eval.templates.is_empty() || self.eval.templates.iter().any(|t| !t.contains("{}")) {
            return Err("[eval] templates: give at least one prompt, each with {} for the form (\"{}\", \"the letter {}\")".into());
        }
        let clip = self.method.clip();
        positive("[method] init_temperature", clip.init_temperature)?;
        positive("[method] max_logit_scale", clip.max_logit_scale)?;
        if clip.max_logit_scale < 1.0 || 1.0 / clip.init_temperature > clip.max_logit_scale {
            return Err(format!(
                "[method] need 1 <= 1 / init_temperature <= max_logit_scale, got init_temperature = {} and max_logit_scale = {}",
                clip.init_temperature, clip.max_logit_scale
            ));
        }
        if self.run.batch_size < 2 {
            return Err("[run] batch_size must be at least 2 (in-batch negatives)".into());
        }
        selfsup_core::run::common_ranges(&self.trainer, self.run.threads)?;
        self.run.refuse_steps_per_epoch("speech-text CLIP")?;
        Ok(())
    }

    /// The text tower for a vocabulary of `vocab` characters.
    pub fn text_tower(&self, vocab: &CharVocab) -> Result<BertConfig> {
        self.model
            .text
            .resolve(vocab.size(), CharVocab::PAD)
            .map_err(Error::Config)
    }

    fn seconds(&self, s: f64) -> usize {
        (s * TARGET_RATE as f64).round() as usize
    }
}

/// The dual encoder of `cfg` on `device` (the audio tower from
/// `audio_init` when `init` and set).
pub fn build(
    cfg: &SpeechRunConfig,
    text: &BertConfig,
    device: tch::Device,
    init: bool,
) -> Result<Clip<SpeechTower>> {
    let mut clip = Clip::with_towers(device, cfg.method.clip(), cfg.model.embed_dim, |root| {
        Ok((
            SpeechTower::new(root, &cfg.model.audio)?,
            TextTower::new(root, text),
        ))
    })?;
    if let (true, Some(file)) = (init, &cfg.model.audio_init) {
        load_wav2vec2_export(clip.var_store_mut(), file)?;
    }
    Ok(clip)
}

/// Everything a run (or the evaluation of its checkpoint) reads: the pairs,
/// who is held out, the vocabulary and the evaluation suites.
pub struct Prepared {
    pub pairs: Vec<SpeechPair>,
    pub report: PairReport,
    pub split: SpeakerSplit,
    pub vocab: CharVocab,
    pub test: SpeechSuite,
    pub validation: SpeechSuite,
    /// Test clips whose written form no training clip has.
    pub test_unseen_forms: usize,
}

/// Reads the data of `cfg` under `root` and builds the suites.
pub fn prepare(cfg: &SpeechRunConfig, root: &Path) -> Result<Prepared> {
    let limits = ReadLimits {
        max_seconds: cfg.data.max_seconds,
    };
    let field = usize::try_from(cfg.model.audio.receptive_field()).unwrap_or(usize::MAX);
    let (pairs, report) = read_pairs(&cfg.data.sources, root, cfg.data.skip_bad, &limits, field)?;
    let speakers: Vec<String> = pairs.iter().map(|p| p.speaker.clone()).collect();
    let split = split_by_speaker(
        &speakers,
        &cfg.data.test_speakers,
        cfg.data.validation_fraction,
        cfg.trainer.seed,
    )?;
    let vocab = CharVocab::build(split.train.iter().map(|&i| pairs[i].text.as_str()));
    let max_len = cfg.model.text.max_len;
    let eval_max = cfg.seconds(cfg.data.eval_seconds);
    let names: Vec<String> = cfg.data.sources.iter().map(SpeechSource::name).collect();
    let set = |name: String, idx: &[usize]| {
        SpeechSet::new(
            name,
            &pairs,
            idx,
            &vocab,
            &cfg.eval.templates,
            max_len,
            eval_max,
        )
    };
    let per_source = |idx: &[usize], what: &str| -> Vec<SpeechSet> {
        names
            .iter()
            .enumerate()
            .filter_map(|(s, n)| {
                let part: Vec<usize> = idx
                    .iter()
                    .copied()
                    .filter(|&i| pairs[i].source == s)
                    .collect();
                (!part.is_empty()).then(|| set(format!("{n} {what}"), &part))
            })
            .collect()
    };
    let test = SpeechSuite {
        zero_shot: per_source(&split.test, "held-out speakers"),
        retrieval: cfg
            .data
            .test_speakers
            .iter()
            .map(|s| {
                let part: Vec<usize> = split
                    .test
                    .iter()
                    .copied()
                    .filter(|&i| &pairs[i].speaker == s)
                    .collect();
                set(s.clone(), &part)
            })
            .collect(),
    };
    let validation = SpeechSuite {
        zero_shot: per_source(&split.validation, "validation speakers"),
        retrieval: per_source(&split.validation, "validation speakers"),
    };
    let trained: BTreeSet<&str> = split
        .train
        .iter()
        .map(|&i| pairs[i].text.as_str())
        .collect();
    let test_unseen_forms = split
        .test
        .iter()
        .filter(|&&i| !trained.contains(pairs[i].text.as_str()))
        .count();
    Ok(Prepared {
        pairs,
        report,
        split,
        vocab,
        test,
        validation,
        test_unseen_forms,
    })
}

/// What a speech-text run produced (also `summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct SpeechRunSummary {
    pub method: String,
    pub device: String,
    pub sources: Vec<String>,
    pub train_pairs: usize,
    pub train_speakers: usize,
    pub train_forms: usize,
    pub validation_speakers: Vec<String>,
    pub validation_pairs: usize,
    pub test_speakers: Vec<String>,
    pub test_pairs: usize,
    /// Test clips whose written form no training clip says.
    pub test_unseen_forms: usize,
    pub data: PairReport,
    /// Characters of the text tower (from the training forms).
    pub characters: String,
    pub audio_init: Option<PathBuf>,
    /// What the audio tower is, in words.
    pub audio_tower: String,
    pub audio_params: i64,
    pub text_params: i64,
    pub embed_dim: i64,
    pub batch_size: usize,
    pub epochs: usize,
    pub steps: u64,
    pub final_loss: f64,
    pub logit_scale: f64,
    pub train_seconds: f64,
    pub wall_seconds: f64,
    /// Trained weights on the held-out speakers (read once, here).
    pub metrics: Vec<(String, f64)>,
    /// The same figures for random weights (same towers, same code).
    pub random_weights: Vec<(String, f64)>,
    /// The expected figure of a random ranking.
    pub chance: Vec<(String, f64)>,
    /// Trained weights on the validation speakers, at the end.
    pub validation: Vec<(String, f64)>,
    pub validation_chance: Vec<(String, f64)>,
    pub warnings: Vec<String>,
    pub run_dir: PathBuf,
    pub curves: PathBuf,
    /// `model.safetensors`, `config.json`, `vocab.txt` ([`crate::speech_export`]).
    pub export_dir: PathBuf,
    pub train: Option<TrainSummary>,
}

/// The dual encoder with random weights: `cfg`'s architecture from core's
/// random-weights seed, never `audio_init`, never trained.
pub fn random_weights(
    cfg: &SpeechRunConfig,
    text: &BertConfig,
    device: tch::Device,
) -> Result<Clip<SpeechTower>> {
    seed_random_weights(cfg.trainer.seed);
    build(cfg, text, device, false)
}

/// Pre-trains, evaluates and exports as `cfg` says; writes `config.toml`,
/// `vocab.txt` (the characters), `export/` and `summary.json` into the run
/// folder.
pub fn pretrain(cfg: &SpeechRunConfig, opts: RunOptions) -> Result<SpeechRunSummary> {
    cfg.check().map_err(Error::Config)?;
    let mut run = Run::start(
        "speech-text CLIP pre-training",
        &cfg.run,
        &cfg.trainer,
        cfg.to_toml(),
        false,
        opts,
    )?;
    let device = run.device;
    let seed = cfg.trainer.seed;
    let root = run.data_root();
    run.log(&format!(
        "reading {} speech source(s) from {}",
        cfg.data.sources.len(),
        root.display()
    ));
    let data = prepare(cfg, &root)?;
    let p = &data.pairs;
    let train = &data.split.train;
    if train.len() < cfg.run.batch_size {
        return Err(Error::Data(format!(
            "{} training pairs, fewer than one batch of {} (lower [run] batch_size)",
            train.len(),
            cfg.run.batch_size
        )));
    }
    run.log(&format!(
        "{} training pairs; {} left out ({} no written form, {} copies, {} too short, {} unreadable); \
         test (read once, at the end): {}; validation speakers ({}): {}",
        train.len(),
        data.report.left_out(),
        data.report.no_written_form,
        data.report.duplicates,
        data.report.too_short,
        data.report.audio.skipped,
        data.test.describe().join(", "),
        data.split.validation_speakers.join(", "),
        data.validation.describe().join(", ")
    ));
    std::fs::write(
        run.run_dir.join(crate::speech_export::RUN_VOCAB_FILE),
        data.vocab.chars.iter().collect::<String>(),
    )
    .map_err(|e| Error::io(run.run_dir.join(crate::speech_export::RUN_VOCAB_FILE), e))?;
    let text_cfg = cfg.text_tower(&data.vocab)?;
    let max_len = cfg.model.text.max_len;
    let (forms, form_of) = crate::speech_pairs::forms_of(p, train);
    let rows: Vec<Vec<i64>> = train
        .iter()
        .map(|&i| data.vocab.encode(&p[i].text, max_len))
        .collect();
    let clips: Vec<Vec<f32>> = train.iter().map(|&i| p[i].samples.clone()).collect();
    let monitor_n = cfg.eval.monitor_pairs.min(train.len());
    let eval_max = cfg.seconds(cfg.data.eval_seconds);
    let monitor = (monitor_n > 1).then(|| {
        (
            clips[..monitor_n]
                .iter()
                .map(|c| eval_clip(c, eval_max))
                .collect(),
            rows[..monitor_n].to_vec(),
        )
    });
    let loader = SpeechBatches::new(
        Arc::new(clips),
        Arc::new(rows),
        form_of.iter().map(|&f| f as usize).collect(),
        cfg.seconds(cfg.data.crop_seconds),
        cfg.run.batch_size,
        seed,
        CharVocab::PAD,
    )?;
    seed_weights(seed);
    let mut clip = build(cfg, &text_cfg, device, true)?;
    let random = random_weights(cfg, &text_cfg, device)?;
    let random_figures = data.test.evaluate(&random.model, device);
    drop(random);
    let mut evaluator = SpeechEvaluator {
        validation: data.validation,
        every_epoch: cfg.eval.every_epoch,
        monitor,
    };
    let trainer = run.trainer(cfg.trainer.clone());
    let summary = trainer.fit(&mut clip, &loader, &mut evaluator, run.observer, run.resume)?;
    let metrics = data.test.evaluate(&clip.model, device);
    let validation = evaluator.validation.evaluate(&clip.model, device);
    let export_dir = run.run_dir.join("export");
    let meta = crate::speech_export::SpeechExportMeta {
        audio: cfg.model.audio.clone(),
        text: text_cfg.clone(),
        embed_dim: cfg.model.embed_dim,
        characters: data.vocab.chars.iter().collect(),
        max_len,
        eval_seconds: cfg.data.eval_seconds,
        clip: cfg.method.clip().clone(),
    };
    crate::speech_export::export_speech(&clip, &meta, &export_dir)?;
    let vs = clip.var_store();
    let wall_seconds = run.seconds();
    let run_dir = run.run_dir.clone();
    let speakers_of = |idx: &[usize]| {
        idx.iter()
            .map(|&i| p[i].speaker.as_str())
            .collect::<BTreeSet<_>>()
            .len()
    };
    run.finish(SpeechRunSummary {
        method: clip.name().to_string(),
        device: describe(device),
        sources: cfg.data.sources.iter().map(SpeechSource::name).collect(),
        train_pairs: train.len(),
        train_speakers: speakers_of(train),
        train_forms: forms.len(),
        validation_speakers: data.split.validation_speakers.clone(),
        validation_pairs: data.split.validation.len(),
        test_speakers: cfg.data.test_speakers.clone(),
        test_pairs: data.split.test.len(),
        test_unseen_forms: data.test_unseen_forms,
        data: data.report.clone(),
        characters: data.vocab.chars.iter().collect(),
        audio_init: cfg.model.audio_init.clone(),
        audio_tower: cfg.model.audio.describe().to_string(),
        audio_params: params(vs, &format!("{AUDIO_PREFIX}.")),
        text_params: params(vs, &format!("{TEXT_PREFIX}.")),
        embed_dim: cfg.model.embed_dim,
        batch_size: cfg.run.batch_size,
        epochs: cfg.trainer.epochs,
        steps: summary.steps,
        final_loss: summary.final_loss,
        logit_scale: clip.model.scale_value(),
        train_seconds: summary.train_seconds,
        wall_seconds,
        metrics,
        random_weights: random_figures,
        chance: data.test.chance(),
        validation,
        validation_chance: evaluator.validation.chance(),
        warnings: summary.warnings.clone(),
        curves: run_dir.join(selfsup_core::trainer::PLOT_FILE),
        export_dir,
        run_dir,
        train: Some(summary),
    })
}

/// Rows `name trained random chance` (random optional).
pub fn table(
    metrics: &[(String, f64)],
    random: Option<&[(String, f64)]>,
    chance: &[(String, f64)],
) -> Vec<String> {
    let pct =
        |v: Option<f64>| v.map_or_else(|| format!("{:>8}", ""), |v| format!("{:>7.2}%", v * 100.0));
    let find = |list: &[(String, f64)], n: &str| list.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
    let mut lines = vec![format!(
        "  {:<52} {:>8} {}{:>8}",
        "",
        "trained",
        if random.is_some() {
            format!("{:>8} ", "random")
        } else {
            String::new()
        },
        "chance"
    )];
    for (name, v) in metrics {
        let r = random.map(|r| format!("{} ", pct(find(r, name))));
        lines.push(format!(
            "  {:<52} {} {}{}",
            name,
            pct(Some(*v)),
            r.unwrap_or_default(),
            pct(find(chance, name))
        ));
    }
    lines
}

impl selfsup_core::workflow::Report for SpeechRunSummary {
    fn lines(&self) -> Vec<String> {
        let s = self;
        let mut lines = vec![
            String::new(),
            format!(
                "selfsup speech-text clip on {} pairs ({} speakers, {} written forms; {}; {} left out)",
                s.train_pairs,
                s.train_speakers,
                s.train_forms,
                s.device,
                s.data.left_out()
            ),
            format!(
                "  audio tower {} ({:.2} M{}), text tower BERT on {} characters ({:.2} M), shared space {}",
                s.audio_tower,
                s.audio_params as f64 / 1e6,
                s.audio_init.as_ref().map_or(String::new(), |p| format!(", from {}", p.display())),
                s.characters.chars().count(),
                s.text_params as f64 / 1e6,
                s.embed_dim
            ),
            format!(
                "  epochs {}, steps {}, batch {}, final loss {:.4}, logit scale {:.1}, training {:.1} s, whole run {:.1} s",
                s.epochs, s.steps, s.batch_size, s.final_loss, s.logit_scale, s.train_seconds, s.wall_seconds
            ),
            format!(
                "  test: held-out speakers {} ({} clips, {} of them saying a form no training clip says), read once:",
                s.test_speakers.join(", "),
                s.test_pairs,
                s.test_unseen_forms
            ),
        ];
        lines.extend(table(&s.metrics, Some(&s.random_weights), &s.chance));
        if !s.validation.is_empty() {
            lines.push(format!(
                "  validation speakers {} ({} clips, never trained on; the per-epoch figures):",
                s.validation_speakers.join(", "),
                s.validation_pairs
            ));
            lines.extend(table(&s.validation, None, &s.validation_chance));
        }
        lines.extend(s.warnings.iter().map(|w| format!("  warning: {w}")));
        lines.push(format!(
            "  curves {}, export {}, run {}",
            s.curves.display(),
            s.export_dir.display(),
            s.run_dir.display()
        ));
        lines
    }
}

/// A parsed, checked speech-text config.
pub struct SpeechPlan(pub SpeechRunConfig);

impl selfsup_core::workflow::Plan for SpeechPlan {
    fn common(&mut self) -> selfsup_core::run::Common<'_> {
        self.0.run.common(&mut self.0.trainer)
    }

    fn to_toml(&self) -> String {
        self.0.to_toml()
    }

    fn progress_unit(&self) -> Option<(f64, &'static str)> {
        Some((1.0, "pairs/s"))
    }

    fn pretrain(&self, opts: RunOptions<'_>) -> Result<Box<dyn selfsup_core::workflow::Report>> {
        Ok(Box::new(pretrain(&self.0, opts)?))
    }
}

/// `selfsup eval retrieval|zero-shot` of a speech-text checkpoint: the run's
/// test figures again (the data re-read and re-split as the run did),
/// trained beside random weights and chance.
pub fn evaluate_checkpoint(
    request: &selfsup_core::workflow::EvalRequest<'_>,
    zero_shot: bool,
) -> Result<Vec<String>> {
    let cfg = SpeechRunConfig::from_toml(request.config_toml, request.checkpoint)?;
    let device = request.device.resolve()?;
    let root = request
        .data
        .map_or_else(selfsup_core::run::default_data_root, Path::to_path_buf);
    let mut data = prepare(&cfg, &root)?;
    if zero_shot {
        data.test.retrieval.clear();
    } else {
        data.test.zero_shot.clear();
    }
    let text = cfg.text_tower(&data.vocab)?;
    let clip = build(&cfg, &text, device, false)?;
    selfsup_core::checkpoint::restore_model(request.checkpoint, clip.var_store(), "clip")?;
    let trained = data.test.evaluate(&clip.model, device);
    let random = data
        .test
        .evaluate(&random_weights(&cfg, &text, device)?.model, device);
    let mut lines = vec![format!(
        "speech-text clip checkpoint {}: {} on held-out speakers {} ({})",
        request.checkpoint.display(),
        request.protocol,
        cfg.data.test_speakers.join(", "),
        describe(device)
    )];
    lines.extend(table(&trained, Some(&random), &data.test.chance()));
    Ok(lines)
}

#[cfg(test)]
pub(crate) mod tests;

/// `selfsup export` of a speech-text checkpoint: the characters come from
/// the run's `vocab.txt` beside the checkpoint.
pub fn export_checkpoint(checkpoint: &Path, config_toml: &str, out: &Path) -> Result<String> {
    let cfg = SpeechRunConfig::from_toml(config_toml, checkpoint)?;
    let vocab_file = checkpoint.parent().map_or_else(
        || Path::new(crate::speech_export::RUN_VOCAB_FILE).to_path_buf(),
        |d| d.join(crate::speech_export::RUN_VOCAB_FILE),
    );
    let characters = std::fs::read_to_string(&vocab_file).map_err(|e| {
        Error::Data(format!(
            "{}: {e}: a speech-text export needs the run's characters (the run writes \
             {} beside its checkpoint; copy it there)",
            vocab_file.display(),
            crate::speech_export::RUN_VOCAB_FILE
        ))
    })?;
    let vocab = CharVocab {
        chars: characters.chars().collect(),
    };
    let mut sorted = vocab.chars.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted != vocab.chars || vocab.chars.is_empty() {
        return Err(Error::Data(format!(
            "{}: not a run's characters (sorted, each once, no newline): write it again from the \
             run's summary.json `characters`",
            vocab_file.display()
        )));
    }
    let text = cfg.text_tower(&vocab)?;
    let clip = build(&cfg, &text, tch::Device::Cpu, false)?;
    selfsup_core::checkpoint::restore_model(checkpoint, clip.var_store(), "clip")?;
    let meta = crate::speech_export::SpeechExportMeta {
        audio: cfg.model.audio.clone(),
        text,
        embed_dim: cfg.model.embed_dim,
        characters,
        max_len: cfg.model.text.max_len,
        eval_seconds: cfg.data.eval_seconds,
        clip: cfg.method.clip().clone(),
    };
    crate::speech_export::export_speech(&clip, &meta, out)?;
    Ok(format!(
        "exported the speech-text dual encoder ({} audio tower, character BERT, projections, \
         vocab.txt) to {}",
        cfg.model.audio.describe(),
        out.display()
    ))
}
