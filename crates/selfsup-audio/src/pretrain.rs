//! The audio workflow: folders of recordings -> 16 kHz clips -> random crops
//! -> wav2vec 2.0 -> trainer -> collapse monitors and codebook perplexity
//! every epoch -> linear probes (layer chosen on validation speakers, test
//! speakers read once) beside random weights and log-mel -> export, on
//! core's [`Run`] (threads, device, `config.toml`, the trainer,
//! `summary.json`). The `selfsup` binary calls
//! this through [`crate::workflow`]; it reads no argv or environment and
//! draws nothing.
use crate::batch::CropBatches;
pub use crate::config::{
    AudioMethodConfig, AudioRunConfig, Crops, DataConfig, EvalConfig, LabelFrom, ProbeTaskConfig,
    RunConfig,
};
use crate::dataset::{labelled_files, load_clips, unlabelled_files, Clip, LoadReport};
use crate::eval::PooledLayers;
use crate::eval::{probe, AudioEpochEval, ProbeRow, ProbeTask, ValidationSplit};
use crate::export::{export_cpc, export_wav2vec2};
use crate::methods::cpc::keep_predictable;
use crate::methods::{CpcEpochEval, CpcMethod, Wav2Vec2Method};
use crate::read::ReadLimits;
use crate::resample::TARGET_RATE;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use selfsup_core::device::describe;
use selfsup_core::method::Method;
pub use selfsup_core::run::RunOptions;
use selfsup_core::run::{seed_random_weights, seed_weights, trainable_parameters, Run};
use selfsup_core::trainer::TrainSummary;
use selfsup_core::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tch::Device;

/// What an audio run produced (also written as `summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct AudioRunSummary {
    pub method: String,
    pub device: String,
    pub threads: Option<usize>,
    pub data: LoadReport,
    pub train_clips: usize,
    pub monitor_clips: usize,
    /// Clips of probe test folders kept out of pre-training.
    pub held_out_clips: usize,
    pub crop_seconds: f64,
    pub batch_size: usize,
    pub parameters: i64,
    pub epochs: usize,
    pub steps: u64,
    pub final_loss: f64,
    pub load_seconds: f64,
    pub train_seconds: f64,
    /// Mean seconds of audio in one training crop: `crop_seconds`, or the
    /// clip's length when it is shorter (taken whole, zero-padded).
    pub mean_crop_seconds: f64,
    /// Seconds of audio actually trained on per second (padding not counted).
    pub audio_seconds_per_s: f64,
    pub wall_seconds: f64,
    /// Per-codebook perplexity (hard choices, monitor clips) at the last epoch.
    pub codebook_perplexity: Vec<f64>,
    pub codebook_entries: i64,
    pub probes: Vec<ProbeRow>,
    pub warnings: Vec<String>,
    pub export_dir: PathBuf,
}

fn under_any(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| path.starts_with(r))
}

fn probe_clips(
    folders: &[String],
    t: &ProbeTaskConfig,
    root: &Path,
    skip_bad: bool,
    limits: &ReadLimits,
    report: &mut LoadReport,
) -> Result<Vec<Clip>> {
    let mut files = Vec::new();
    for f in folders {
        let dir = root.join(f);
        let csv = t.labels_csv.as_ref().map(|c| dir.join(c));
        files.extend(labelled_files(&dir, csv.as_deref(), skip_bad, report)?);
    }
    if let Some(n) = t.stem_chars {
        files.retain(|(p, _)| {
            p.file_stem()
                .is_some_and(|s| s.to_string_lossy().chars().count() == n)
        });
    }
    if t.label_from == LabelFrom::StemLastChar {
        for (_, label) in files.iter_mut() {
            *label = label
                .as_ref()
                .and_then(|l| l.chars().last())
                .map(String::from);
        }
    }
    if let Some(keep) = &t.labels {
        files.retain(|(_, l)| l.as_ref().is_some_and(|l| keep.contains(l)));
    }
    let (clips, r) = load_clips(&files, skip_bad, limits)?;
    report.merge(&r);
    Ok(clips)
}

/// Every probe folder of `cfg` (and, with `sources`, every source folder)
/// must be a folder under `root`: a mistyped one is an error naming it and
/// the data root, before any file is read (never a silent fallback to the
/// whole tree).
pub(crate) fn check_folders(cfg: &AudioRunConfig, root: &Path, sources: bool) -> Result<()> {
    let folders = cfg
        .data
        .sources
        .iter()
        .filter(|_| sources)
        .map(|s| ("[data] sources", s))
        .chain(cfg.eval.tasks.iter().flat_map(|t| {
            t.train
                .iter()
                .map(|f| ("[[eval.tasks]] train", f))
                .chain(t.test.iter().map(|f| ("[[eval.tasks]] test", f)))
        }));
    for (key, f) in folders {
        let dir = root.join(f);
        if !dir.is_dir() {
            return Err(Error::Data(format!(
                "{key}: folder \"{f}\" is not there: {} is not a folder under the data root {} (check the spelling, fetch the data with `cargo xtask fetch <dataset>`, or pass --data)",
                dir.display(),
                root.display()
            )));
        }
    }
    Ok(())
}

/// Warnings the trainer's embedding monitors cannot give: codebooks
/// collapsing toward one entry, a loss that stopped moving.
fn codebook_and_loss_warnings(history: &[Vec<f64>], epoch_losses: &[f64]) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(last) = history.last() {
        for (g, &p) in last.iter().enumerate() {
            if p < 2.0 {
                out.push(format!(
                    "possible codebook collapse: codebook {g} uses about {p:.2} entries (perplexity of its hard choices on the monitor clips)"
                ));
            }
        }
    }
    if let (Some(&first), Some(&last), true) = (
        epoch_losses.first(),
        epoch_losses.last(),
        epoch_losses.len() >= 3,
    ) {
        if (first - last).abs() < 0.01 * first.abs().max(1e-9) {
            out.push(format!(
                "the loss stopped moving: mean epoch loss {first:.4} at epoch 1, {last:.4} at the end"
            ));
        }
    }
    out
}

/// The clips of the probe task `t` under `root` (what was read and skipped
/// added to `report`): one speaker per training folder, so validation
/// speakers are whole folders.
pub(crate) fn probe_task(
    cfg: &AudioRunConfig,
    t: &ProbeTaskConfig,
    root: &Path,
    report: &mut LoadReport,
) -> Result<ProbeTask> {
    let limits = ReadLimits {
        max_seconds: cfg.data.max_seconds,
    };
    let (mut train, mut train_speakers) = (Vec::new(), Vec::new());
    for f in &t.train {
        let clips = probe_clips(
            std::slice::from_ref(f),
            t,
            root,
            cfg.data.skip_bad,
            &limits,
            report,
        )?;
        train_speakers.extend(std::iter::repeat_n(f.clone(), clips.len()));
        train.extend(clips);
    }
    Ok(ProbeTask {
        name: t.name.clone(),
        train,
        train_speakers,
        test: probe_clips(&t.test, t, root, cfg.data.skip_bad, &limits, report)?,
    })
}

/// The `[[eval.tasks]]` probes of `method`, beside the same architecture
/// with random weights (seeded by [`seed_random_weights`]) and log-mel,
/// each layer chosen on validation speakers (`[eval] validation_fraction`
/// of the training folders, drawn with `[eval] split_seed`);
/// clips are read under `root`, what was read and skipped added to `report`.
pub(crate) fn linear_probes(
    cfg: &AudioRunConfig,
    method: &dyn PooledLayers,
    root: &Path,
    device: Device,
    report: &mut LoadReport,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<ProbeRow>> {
    let seed = cfg.trainer.seed;
    seed_random_weights(seed);
    let random: Box<dyn PooledLayers> = match &cfg.method {
        AudioMethodConfig::Wav2vec2(m) => {
            Box::new(Wav2Vec2Method::new(&cfg.model, m, seed, device))
        }
        AudioMethodConfig::Cpc(m) => Box::new(CpcMethod::new(&m.arch(&cfg.model), device)),
    };
    let max_samples = (cfg.eval.max_seconds * TARGET_RATE as f64) as usize;
    let split = ValidationSplit {
        fraction: cfg.eval.validation_fraction,
        seed: cfg.eval.split_seed,
    };
    let mut probes = Vec::new();
    for t in &cfg.eval.tasks {
        log(&format!("downstream: linear probes on {}", t.name));
        let task = probe_task(cfg, t, root, report)?;
        probes.push(probe(
            &task,
            method,
            &*random,
            &cfg.eval.probe,
            &split,
            max_samples,
            device,
        )?);
    }
    Ok(probes)
}

/// What one method's training hands to the run: the data, the run and
/// where the export goes.
struct Training<'r, 'a> {
    cfg: &'r AudioRunConfig,
    run: &'r mut Run<'a>,
    batches: &'r CropBatches,
    /// Held-out clips of the per-epoch monitors.
    monitor: Vec<Vec<f32>>,
    crop: usize,
    root: &'r Path,
    report: &'r mut LoadReport,
    export_dir: &'r Path,
}

/// What a method's training produced, for the summary.
struct Trained {
    parameters: i64,
    summary: TrainSummary,
    warnings: Vec<String>,
    codebook_perplexity: Vec<f64>,
    codebook_entries: i64,
    probes: Vec<ProbeRow>,
}

impl Training<'_, '_> {
    /// The probes of `method` (none without `[[eval.tasks]]`), then its export.
    fn probes(&mut self, method: &dyn PooledLayers) -> Result<Vec<ProbeRow>> {
        if self.cfg.eval.tasks.is_empty() {
            return Ok(Vec::new());
        }
        let run = &mut *self.run;
        linear_probes(
            self.cfg,
            method,
            self.root,
            run.device,
            self.report,
            &mut |l: &str| run.log(l),
        )
    }
}

/// wav2vec 2.0: trainer, codebook and plateau warnings, probes, export.
fn train_wav2vec2(
    t: &mut Training<'_, '_>,
    method_cfg: &crate::methods::Wav2Vec2MethodConfig,
) -> Result<Trained> {
    let (cfg, device, seed) = (t.cfg, t.run.device, t.cfg.trainer.seed);
    seed_weights(seed);
    let mut method = Wav2Vec2Method::new(&cfg.model, method_cfg, seed, device);
    let parameters = trainable_parameters(method.var_store());
    let mut evaluator = AudioEpochEval {
        clips: std::mem::take(&mut t.monitor),
        crop: t.crop,
        batch: cfg.run.batch_size,
        device,
        perplexity_history: Vec::new(),
    };
    let trainer = t.run.trainer(cfg.trainer.clone());
    t.run.log(&format!(
        "training wav2vec2: {} conv layers, {} transformer layers, hidden {}, {}x{} codebook, {:.2} M parameters, on {}",
        cfg.model.conv_dim.len(),
        cfg.model.num_hidden_layers,
        cfg.model.hidden_size,
        cfg.model.num_codevector_groups,
        cfg.model.num_codevectors_per_group,
        parameters as f64 / 1e6,
        describe(device)
    ));
    let summary = trainer.fit(
        &mut method,
        t.batches,
        &mut evaluator,
        &mut *t.run.observer,
        t.run.resume,
    )?;
    let epoch_losses: Vec<f64> = summary.epochs.iter().map(|e| e.mean_loss).collect();
    let mut warnings = summary.warnings.clone();
    warnings.extend(codebook_and_loss_warnings(
        &evaluator.perplexity_history,
        &epoch_losses,
    ));
    let probes = t.probes(&method)?;
    export_wav2vec2(&method, t.export_dir)?;
    Ok(Trained {
        parameters,
        summary,
        warnings,
        codebook_perplexity: evaluator
            .perplexity_history
            .last()
            .cloned()
            .unwrap_or_default(),
        codebook_entries: cfg.model.num_codevectors_per_group,
        probes,
    })
}

/// CPC: trainer, plateau warning, probes (encoder `z` and context `c`),
/// export.
fn train_cpc(
    t: &mut Training<'_, '_>,
    method_cfg: &crate::methods::CpcMethodConfig,
) -> Result<Trained> {
    let (cfg, device) = (t.cfg, t.run.device);
    let arch = method_cfg.arch(&cfg.model);
    seed_weights(cfg.trainer.seed);
    let mut method = CpcMethod::new(&arch, device);
    let parameters = trainable_parameters(method.var_store());
    let mut evaluator = CpcEpochEval {
        clips: std::mem::take(&mut t.monitor),
        crop: t.crop,
        batch: cfg.run.batch_size,
        device,
    };
    let trainer = t.run.trainer(cfg.trainer.clone());
    t.run.log(&format!(
        "training cpc: {} conv layers ({} channels out), {}-layer GRU context of {}, {} prediction steps, {:.2} M parameters, on {}",
        arch.conv_dim.len(),
        arch.latent_dim(),
        arch.context_layers,
        arch.context_dim,
        arch.prediction_steps,
        parameters as f64 / 1e6,
        describe(device)
    ));
    let summary = trainer.fit(
        &mut method,
        t.batches,
        &mut evaluator,
        &mut *t.run.observer,
        t.run.resume,
    )?;
    let epoch_losses: Vec<f64> = summary.epochs.iter().map(|e| e.mean_loss).collect();
    let mut warnings = summary.warnings.clone();
    warnings.extend(codebook_and_loss_warnings(&[], &epoch_losses));
    let probes = t.probes(&method)?;
    export_cpc(&method, t.export_dir)?;
    Ok(Trained {
        parameters,
        summary,
        warnings,
        codebook_perplexity: Vec::new(),
        codebook_entries: 0,
        probes,
    })
}

/// Pre-trains, evaluates and exports as `cfg` says; writes `config.toml`
/// and `summary.json` into the run folder.
pub fn pretrain(cfg: &AudioRunConfig, opts: RunOptions) -> Result<AudioRunSummary> {
    selfsup_core::run::check_common(&cfg.trainer, cfg.run.threads)?;
    cfg.validate().map_err(Error::Config)?;
    if cfg.data.sources.is_empty() {
        return Err(Error::Config(
            "[data] has no sources (add sources = [\"<folder of .wav/.ogg>\"])".into(),
        ));
    }
    // A data-parallel launch, then a mistyped folder, are refused before
    // the run folder is written to.
    opts.single_process("audio pre-training")?;
    let root = opts.data_root();
    check_folders(cfg, &root, true)?;
    let mut run = Run::start(
        "audio pre-training",
        &cfg.run,
        &cfg.trainer,
        cfg.to_toml(),
        false,
        opts,
    )?;
    let device = run.device;
    let seed = cfg.trainer.seed;
    let limits = ReadLimits {
        max_seconds: cfg.data.max_seconds,
    };
    let held_out: Vec<PathBuf> = cfg
        .eval
        .tasks
        .iter()
        .flat_map(|t| t.test.iter().map(|f| root.join(f)))
        .collect();
    let t_load = Instant::now();
    let mut files = Vec::new();
    for s in &cfg.data.sources {
        let dir = if s == "." {
            root.to_path_buf()
        } else {
            root.join(s)
        };
        files.extend(unlabelled_files(&dir)?);
    }
    let before = files.len();
    files.retain(|(p, _)| !under_any(p, &held_out));
    let held_out_clips = before - files.len();
    run.log(&format!(
        "reading {} audio files from {} source(s) under {} ({} of probe test speakers kept out)",
        files.len(),
        cfg.data.sources.len(),
        root.display(),
        held_out_clips
    ));
    let (clips, mut report) = load_clips(&files, cfg.data.skip_bad, &limits)?;
    let clips = match &cfg.method {
        AudioMethodConfig::Wav2vec2(_) => clips,
        AudioMethodConfig::Cpc(m) => {
            keep_predictable(clips, &m.arch(&cfg.model), cfg.data.skip_bad, &mut report)?
        }
    };
    let mut order: Vec<usize> = (0..clips.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0xA0D10));
    let n_monitor = cfg.data.monitor_clips.min(clips.len() / 10);
    let (monitor_idx, rest) = order.split_at(n_monitor);
    let monitor: Vec<Vec<f32>> = monitor_idx
        .iter()
        .map(|&i| clips[i].samples.clone())
        .collect();
    let mut train_idx: Vec<usize> = rest.to_vec();
    if let Some(n) = cfg.data.max_clips {
        train_idx.truncate(n);
    }
    train_idx.sort_unstable();
    let train: Vec<Vec<f32>> = train_idx
        .iter()
        .map(|&i| clips[i].samples.clone())
        .collect();
    drop(clips);
    run.log(&format!(
        "{} clips ({:.0} s of audio, {} resampled to 16 kHz, {} skipped): {} train, {} monitor ({:.1} s)",
        report.clips,
        report.seconds,
        report.resampled,
        report.skipped,
        train.len(),
        monitor.len(),
        t_load.elapsed().as_secs_f64()
    ));
    for w in &report.skipped_examples {
        run.log(&format!("  skipped: {w}"));
    }
    if train.len() < cfg.run.batch_size {
        return Err(Error::Data(format!(
            "{} training clips under {} ({} read, {} skipped, {} monitor), fewer than one batch of {} (lower [run] batch_size or add recordings)",
            train.len(),
            root.display(),
            report.clips,
            report.skipped,
            monitor.len(),
            cfg.run.batch_size
        )));
    }
    let crop = (cfg.data.crop_seconds * TARGET_RATE as f64) as usize;
    // Audio actually in a crop: a clip shorter than the crop is taken whole
    // (and padded), so it counts its own length, not the crop's.
    let mean_crop_seconds = train.iter().map(|c| c.len().min(crop) as f64).sum::<f64>()
        / train.len().max(1) as f64
        / TARGET_RATE as f64;
    let batches = CropBatches::new(Arc::new(train), crop, cfg.run.batch_size, seed);
    let train_clips = batches.len();
    let load_seconds = t_load.elapsed().as_secs_f64();
    let export_dir = run.run_dir.join("export");
    let monitor_clips = monitor.len();
    let mut training = Training {
        cfg,
        run: &mut run,
        batches: &batches,
        monitor,
        crop,
        root: &root,
        report: &mut report,
        export_dir: &export_dir,
    };
    let trained = match &cfg.method {
        AudioMethodConfig::Wav2vec2(m) => train_wav2vec2(&mut training, m)?,
        AudioMethodConfig::Cpc(m) => train_cpc(&mut training, m)?,
    };
    let Trained {
        parameters,
        summary,
        warnings,
        codebook_perplexity,
        codebook_entries,
        probes,
    } = trained;
    let out = AudioRunSummary {
        method: cfg.method.name().into(),
        device: describe(device),
        threads: cfg.run.threads,
        data: report,
        train_clips,
        monitor_clips,
        held_out_clips,
        crop_seconds: cfg.data.crop_seconds,
        batch_size: cfg.run.batch_size,
        parameters,
        epochs: cfg.trainer.epochs,
        steps: summary.steps,
        final_loss: summary.final_loss,
        load_seconds,
        train_seconds: summary.train_seconds,
        mean_crop_seconds,
        audio_seconds_per_s: summary.samples_per_s * mean_crop_seconds,
        wall_seconds: run.seconds(),
        codebook_perplexity,
        codebook_entries,
        probes,
        warnings,
        export_dir,
    };
    run.finish(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset(name: &str) -> (String, PathBuf) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../configs/audio")
            .join(name);
        (std::fs::read_to_string(&path).unwrap(), path)
    }

    fn run_opts<'a>(
        data_root: &Path,
        run_dir: &Path,
        observer: &'a mut selfsup_core::trainer::Silent,
        log: &'a mut dyn FnMut(&str),
    ) -> RunOptions<'a> {
        RunOptions {
            data: Some(data_root.to_path_buf()),
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
    fn a_missing_source_folder_is_an_error_naming_it_and_the_data_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("klettres")).unwrap();
        let (text, path) = preset("cpu.toml");
        let mut cfg = AudioRunConfig::from_toml(&text, &path).unwrap();
        cfg.data.sources = vec!["klettres".into(), "ktuberlin".into()];
        cfg.eval.tasks.clear();
        let mut obs = selfsup_core::trainer::Silent;
        let mut log = |_: &str| {};
        let err = pretrain(
            &cfg,
            run_opts(dir.path(), &dir.path().join("run"), &mut obs, &mut log),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Data(_)), "{err}");
        assert!(!dir.path().join("run").exists(), "nothing written");
        let err = err.to_string();
        assert!(
            err.contains("\"ktuberlin\"")
                && err.contains(&dir.path().display().to_string())
                && err.contains("--data"),
            "{err}"
        );
        // The trainer's own ranges are checked first (check_common).
        cfg.trainer.epochs = 0;
        let err = pretrain(
            &cfg,
            run_opts(dir.path(), &dir.path().join("run"), &mut obs, &mut log),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("epochs = 0"), "{err}");
    }

    #[test]
    fn a_data_parallel_launch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (text, path) = preset("cpu.toml");
        let cfg = AudioRunConfig::from_toml(&text, &path).unwrap();
        let mut obs = selfsup_core::trainer::Silent;
        let mut log = |_: &str| {};
        let mut opts = run_opts(dir.path(), &dir.path().join("run"), &mut obs, &mut log);
        opts.distributed = Some(selfsup_core::distributed::Distributed {
            comm: Box::new(selfsup_core::distributed::SingleProcess),
            local_rank: 0,
        });
        let err = pretrain(&cfg, opts).unwrap_err().to_string();
        assert!(
            err.contains("audio pre-training") && err.contains("torchrun"),
            "{err}"
        );
    }

    #[test]
    fn the_codebook_and_plateau_warnings_fire() {
        let w = codebook_and_loss_warnings(&[vec![30.0, 1.2]], &[3.0, 2.0, 1.0]);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("codebook 1"), "{w:?}");
        let w = codebook_and_loss_warnings(&[vec![30.0, 30.0]], &[3.0, 3.001, 2.999]);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("stopped moving"), "{w:?}");
        assert!(codebook_and_loss_warnings(&[vec![30.0, 30.0]], &[3.0, 2.5, 2.0]).is_empty());
    }
}
