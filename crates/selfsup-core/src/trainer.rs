//! The one training loop every method and modality shares.
//!
//! Per step: re-seed libtorch from `(seed, step)`, move the batch to the
//! device, `Method::step` (under autocast on CUDA when asked), refuse a
//! non-finite loss, backward, average gradients across processes (the one
//! place that does), clip, optimiser step with the scheduled learning rate,
//! `Method::after_step`. Per epoch: the caller's evaluator, collapse monitors
//! on the embeddings it returns, a record in `metrics.jsonl`, a checkpoint and
//! the curves plot. Progress goes to an [`Observer`]; drawing it is the
//! binary's business.
use crate::checkpoint::{self, CheckpointMeta};
use crate::distributed::{Collective, SingleProcess};
use crate::method::{Method, StepCtx};
use crate::metrics::MetricsLog;
use crate::monitor::{collapse_stats, CollapseStats, CollapseThresholds};
use crate::optim::{OptimConfig, Params};
use crate::plot::{plot_curves, Panel, Series, SeriesStyle};
use crate::schedule::LrSchedule;
use crate::source::BatchSource;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tch::Tensor;

/// Trainer settings (the `[trainer]` table of a run config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainerConfig {
    pub epochs: usize,
    pub seed: u64,
    pub optimizer: OptimConfig,
    pub schedule: LrSchedule,
    /// Clip the global gradient norm to this value.
    pub grad_clip: Option<f64>,
    /// Also checkpoint every N steps inside an epoch (0: at epoch ends only).
    pub checkpoint_every: u64,
    /// Mixed precision on CUDA: autocast in bfloat16 (no loss scaling
    /// needed); ignored on the CPU.
    pub mixed_precision: bool,
    /// Collapse warning thresholds.
    pub collapse: CollapseThresholds,
    /// In a data-parallel run, batch-norm statistics over the global batch
    /// (PyTorch's SyncBatchNorm) rather than each rank's share of it.
    pub sync_batch_norm: bool,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            seed: 0,
            optimizer: OptimConfig::default(),
            schedule: LrSchedule::default(),
            grad_clip: None,
            checkpoint_every: 0,
            mixed_precision: true,
            collapse: CollapseThresholds::default(),
            sync_batch_norm: true,
        }
    }
}

impl TrainerConfig {
    /// Refuses settings that would train nonsense silently: no epochs, a
    /// learning rate that is not positive (a negative one is gradient
    /// ascent), optimiser constants out of range, a clipping norm that is
    /// not positive. The message names the `[trainer]` key and what it must be.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let o = &self.optimizer;
        if self.epochs == 0 {
            return Err("[trainer] epochs = 0 trains nothing: give at least 1".into());
        }
        positive("[trainer.optimizer] lr", o.lr)?;
        non_negative("[trainer.optimizer] weight_decay", o.weight_decay)?;
        unit_interval("[trainer.optimizer] momentum", o.momentum)?;
        unit_interval("[trainer.optimizer] betas[0]", o.betas.0)?;
        unit_interval("[trainer.optimizer] betas[1]", o.betas.1)?;
        positive("[trainer.optimizer] eps", o.eps)?;
        positive("[trainer.optimizer] trust_coefficient", o.trust_coefficient)?;
        non_negative(
            "[trainer.schedule] warmup_epochs",
            self.schedule.warmup_epochs,
        )?;
        non_negative(
            "[trainer.schedule] final_lr_ratio",
            self.schedule.final_lr_ratio,
        )?;
        if let Some(c) = self.grad_clip {
            positive("[trainer] grad_clip", c)?;
        }
        Ok(())
    }
}

/// `Err` naming `key` unless `v` is finite and > 0.
pub fn positive(key: &str, v: f64) -> std::result::Result<(), String> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(format!("{key} = {v}: must be a finite number above 0"))
    }
}

/// `Err` naming `key` unless `v` is finite and >= 0.
pub fn non_negative(key: &str, v: f64) -> std::result::Result<(), String> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(format!(
            "{key} = {v}: must be a finite number of at least 0"
        ))
    }
}

/// `Err` naming `key` unless `0 <= v < 1`.
pub fn unit_interval(key: &str, v: f64) -> std::result::Result<(), String> {
    if v.is_finite() && (0.0..1.0).contains(&v) {
        Ok(())
    } else {
        Err(format!("{key} = {v}: must be at least 0 and below 1"))
    }
}

/// What an evaluator reports at the end of an epoch.
#[derive(Debug, Default)]
pub struct EpochEval {
    /// Named figures (`knn_top1`, ...), logged and plotted.
    pub metrics: Vec<(String, f64)>,
    /// Embeddings of two views of the same samples, for the collapse monitors.
    pub views: Option<(Tensor, Tensor)>,
}

/// Evaluates a method at the end of each epoch (kNN on a held-out split, ...).
pub trait EpochEvaluator<M: ?Sized> {
    fn evaluate(&mut self, method: &M, epoch: usize) -> Result<EpochEval>;

    /// The views [`EpochEval::views`] holds, alone: the trainer measures them
    /// once before the first step of a fresh run, so that the collapse
    /// warnings can tell features that never spread from features that
    /// collapsed ([`CollapseThresholds::warnings_since`]). `None` (the
    /// default) skips that measurement.
    fn monitor_views(&mut self, _method: &M) -> Result<Option<(Tensor, Tensor)>> {
        Ok(None)
    }
}

/// An evaluator that measures nothing.
pub struct NoEval;
impl<M: ?Sized> EpochEvaluator<M> for NoEval {
    fn evaluate(&mut self, _: &M, _: usize) -> Result<EpochEval> {
        Ok(EpochEval::default())
    }
}

/// One step, as reported to the observer.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: u64,
    pub total_steps: u64,
    pub epoch: usize,
    pub epochs: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Training samples per second over the recent steps (all processes).
    pub samples_per_s: f64,
    pub terms: Vec<(String, f64)>,
}

/// One epoch, as reported to the observer and written to `metrics.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub step: u64,
    pub mean_loss: f64,
    pub train_seconds: f64,
    pub samples_per_s: f64,
    pub metrics: Vec<(String, f64)>,
    pub collapse: Option<CollapseStats>,
    pub warnings: Vec<String>,
}

/// Receives progress; the CLI draws bars from it.
pub trait Observer {
    fn on_start(&mut self, _start_step: u64, _total_steps: u64) {}
    /// The collapse statistics before the first step (fresh runs whose
    /// evaluator has monitor views).
    fn on_init(&mut self, _collapse: &CollapseStats) {}
    fn on_step(&mut self, _r: &StepReport) {}
    fn on_epoch(&mut self, _r: &EpochReport) {}
    /// Progress of a workflow phase outside the training loop (reading the
    /// data, a baseline, features, a probe, the export): `done` of `total`
    /// units, `done == total` when the phase ends. `total == 0` is a one-off
    /// note about the phase (e.g. why it is skipped), `name` being the text.
    fn phase(&mut self, _name: &str, _done: usize, _total: usize) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// The outcome of [`Trainer::fit`].
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub steps: u64,
    pub resumed_from: Option<u64>,
    pub final_loss: f64,
    pub train_seconds: f64,
    pub samples_per_s: f64,
    pub epochs: Vec<EpochReport>,
    /// Every collapse warning of the run, with its epoch.
    pub warnings: Vec<String>,
    /// The collapse statistics before the first step (also after a resume,
    /// read back from `metrics.jsonl`); `None` without monitor views.
    pub init_collapse: Option<CollapseStats>,
    pub checkpoint: PathBuf,
}

/// File names inside a run folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const PLOT_FILE: &str = "curves.svg";

/// The generic trainer.
pub struct Trainer {
    cfg: TrainerConfig,
    run_dir: PathBuf,
    device: tch::Device,
    comm: Arc<dyn Collective>,
    stop: Arc<AtomicBool>,
    resolved_config: String,
    git_commit: Option<String>,
    /// Whether the run folder's checkpoint is this run's own: restored by
    /// `--resume` or written by this `fit`. Only then is it named as "the
    /// last good checkpoint" when the run fails.
    checkpoint_ok: AtomicBool,
}

impl Trainer {
    /// A single-process trainer writing into `run_dir`.
    pub fn new(cfg: TrainerConfig, run_dir: &Path, device: tch::Device) -> Self {
        Self {
            cfg,
            run_dir: run_dir.to_path_buf(),
            device,
            comm: Arc::new(SingleProcess),
            stop: Arc::new(AtomicBool::new(false)),
            resolved_config: String::new(),
            git_commit: None,
            checkpoint_ok: AtomicBool::new(false),
        }
    }

    /// Uses `comm` to talk to the other processes of the run.
    pub fn with_collective(mut self, comm: Box<dyn Collective>) -> Self {
        self.comm = Arc::from(comm);
        self
    }

    /// A flag that, once set (e.g. by a Ctrl-C handler), makes the trainer write
    /// a checkpoint after the current step and return [`Error::Interrupted`].
    pub fn with_stop_flag(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = stop;
        self
    }

    /// The resolved run configuration (TOML) and code version, saved in checkpoints.
    pub fn with_provenance(mut self, config_toml: String, git_commit: Option<String>) -> Self {
        self.resolved_config = config_toml;
        self.git_commit = git_commit;
        self
    }

    /// Where checkpoints go.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.run_dir.join(CHECKPOINT_FILE)
    }

    /// Trains `method` on `data`. With `resume`, continues from the run
    /// folder's checkpoint and replays exactly what an uninterrupted run does.
    pub fn fit<M: Method + ?Sized>(
        &self,
        method: &mut M,
        data: &dyn BatchSource,
        eval: &mut dyn EpochEvaluator<M>,
        obs: &mut dyn Observer,
        resume: bool,
    ) -> Result<TrainSummary> {
        std::fs::create_dir_all(&self.run_dir).map_err(|e| Error::io(&self.run_dir, e))?;
        self.checkpoint_ok.store(false, Ordering::SeqCst);
        let bpe = data.batches_per_epoch() as u64;
        if bpe == 0 {
            return Err(Error::Config(format!(
                "the dataset yields no complete batch of {} samples",
                data.batch_size()
            )));
        }
        let total = bpe * self.cfg.epochs as u64;
        let global_batch = data.batch_size() * self.comm.world_size();
        let peak_lr = self.cfg.optimizer.scaled_lr(global_batch);
        let warmup = (self.cfg.schedule.warmup_epochs * bpe as f64).round() as u64;
        let mut params = Params::of(method.var_store());
        let mut optimizer = self.cfg.optimizer.build(&params);
        let ckpt_path = self.checkpoint_path();
        let metrics_path = self.run_dir.join(METRICS_FILE);

        let (start, mut log, history) = if resume {
            if !ckpt_path.exists() {
                return Err(Error::Checkpoint {
                    path: ckpt_path,
                    reason: "--resume was given but there is no checkpoint in the run folder"
                        .into(),
                });
            }
            let meta = checkpoint::restore(
                &ckpt_path,
                method.var_store(),
                optimizer.as_mut(),
                method.name(),
            )?;
            let start = resume_step(&meta, bpe, global_batch as u64).map_err(|reason| {
                Error::Checkpoint {
                    path: ckpt_path.clone(),
                    reason,
                }
            })?;
            self.checkpoint_ok.store(true, Ordering::SeqCst);
            if self.comm.rank() == 0 {
                let (log, kept, corrupt) = MetricsLog::resume(&metrics_path, meta.step)?;
                if corrupt > 0 {
                    tracing::warn!(
                        "{}: dropped {corrupt} line(s) that are not JSON (cut short by a crash?)",
                        metrics_path.display()
                    );
                }
                (start, Some(log), kept)
            } else {
                (start, None, Vec::new())
            }
        } else {
            if self.comm.rank() == 0 && ckpt_path.exists() {
                return Err(Error::Data(crate::run_dir::occupied_message(
                    &self.run_dir,
                    std::slice::from_ref(&ckpt_path),
                )));
            }
            let mut tensors: Vec<Tensor> =
                params.tensors.iter().map(Tensor::shallow_clone).collect();
            self.comm.broadcast_(&mut tensors, 0);
            self.check_ranks()?;
            let log = if self.comm.rank() == 0 {
                Some(MetricsLog::create(&metrics_path)?)
            } else {
                None
            };
            (0, log, Vec::new())
        };
        let mut curves = Curves::from_history(&history);
        let init_collapse = if start == 0 {
            let views = if self.comm.rank() == 0 {
                tch::no_grad(|| eval.monitor_views(method))?
            } else {
                None
            };
            let stats = views.map(|(a, b)| collapse_stats(&a, Some(&b)));
            if let (Some(c), Some(log)) = (&stats, log.as_mut()) {
                log.append(&json!({"kind": "init", "step": 0, "collapse": c}))?;
                log.flush()?;
            }
            stats
        } else {
            init_collapse_of(&history)
        };
        let _sync_bn = self
            .cfg
            .sync_batch_norm
            .then(|| crate::batch_norm::sync_over(self.comm.clone()));
        obs.on_start(start, total);
        if let Some(c) = &init_collapse {
            if start == 0 {
                curves.push_init(c);
            }
            obs.on_init(c);
        }

        let mut epochs_done = Vec::new();
        let mut warnings = Vec::new();
        let mut last_loss = f64::NAN;
        let mut train_seconds = 0.0;
        let mut trained_samples = 0usize;
        let mut step = start;
        if self.cfg.mixed_precision && self.device.is_cuda() {
            crate::autocast::set_cuda_autocast_dtype(crate::autocast::AutocastDtype::BFloat16)?;
        }
        let first_epoch = (start / bpe) as usize;
        for epoch in first_epoch..self.cfg.epochs {
            let skip = if epoch == first_epoch {
                (start % bpe) as usize
            } else {
                0
            };
            let mut epoch_loss = 0.0;
            let mut epoch_steps = 0usize;
            let epoch_start = Instant::now();
            let mut recent = Instant::now();
            for batch in data.epoch(epoch, skip) {
                let batch = batch?.to_device(self.device);
                tch::manual_seed((self.cfg.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15)) as i64);
                let ctx = StepCtx {
                    step,
                    total_steps: total,
                    epoch,
                    steps_per_epoch: bpe,
                    comm: self.comm.as_ref(),
                };
                let lr = self.cfg.schedule.lr(peak_lr, step, total, warmup);
                params.zero_grad();
                let use_amp = self.cfg.mixed_precision && self.device.is_cuda();
                // A GPU running out of memory panics inside tch's calls: it
                // ends the run with one line naming the fix, and the last
                // checkpoint stays (as for a non-finite loss).
                let out = crate::device::guard_device_failure(|| {
                    tch::autocast(use_amp, || method.step(&batch, &ctx))
                })??;
                self.check_ranks()?;
                let loss = self.global_mean(&out.loss)?;
                if !loss.is_finite() {
                    let last_good = if self.checkpoint_ok.load(Ordering::SeqCst) {
                        ckpt_path.display().to_string()
                    } else {
                        "none (no checkpoint written yet)".into()
                    };
                    return Err(Error::NonFiniteLoss {
                        step,
                        value: loss,
                        last_good,
                    });
                }
                crate::device::guard_device_failure(|| out.loss.backward())?;
                let mut grads = params.grads();
                self.comm.all_reduce_mean_(&mut grads);
                self.check_ranks()?;
                let grad_norm = params.clip_grad_norm(self.cfg.grad_clip);
                crate::device::guard_device_failure(|| optimizer.step(&params, lr))?;
                method.after_step(&ctx);

                let n = batch.len() as usize * self.comm.world_size();
                trained_samples += n;
                let dt = recent.elapsed().as_secs_f64();
                recent = Instant::now();
                let terms: Vec<(String, f64)> =
                    out.terms.iter().map(|(k, v)| (k.to_string(), *v)).collect();
                let report = StepReport {
                    step,
                    total_steps: total,
                    epoch,
                    epochs: self.cfg.epochs,
                    loss,
                    lr,
                    grad_norm,
                    samples_per_s: n as f64 / dt.max(1e-9),
                    terms,
                };
                let mut rec = json!({"kind": "step", "step": step, "epoch": epoch, "loss": loss, "lr": lr,
                    "grad_norm": grad_norm, "samples_per_s": report.samples_per_s});
                for (k, v) in &report.terms {
                    rec[k] = json!(v);
                }
                if let Some(log) = log.as_mut() {
                    log.append(&rec)?;
                }
                curves.loss.push((step as f64, loss));
                obs.on_step(&report);
                epoch_loss += loss;
                epoch_steps += 1;
                last_loss = loss;
                step += 1;

                let epoch_end = step % bpe == 0;
                let meta = || self.meta(method.name(), step, bpe, loss, global_batch as u64);
                let interrupted = self.stop.load(Ordering::SeqCst);
                if !epoch_end
                    && (interrupted
                        || (self.cfg.checkpoint_every > 0 && step % self.cfg.checkpoint_every == 0))
                {
                    if let Some(log) = log.as_mut() {
                        log.flush()?;
                    }
                    self.save(method, optimizer.as_ref(), &meta())?;
                }
                if interrupted && !epoch_end {
                    return Err(Error::Interrupted {
                        step,
                        checkpoint: ckpt_path,
                    });
                }
            }
            let secs = epoch_start.elapsed().as_secs_f64();
            train_seconds += secs;
            // Every rank holds the same weights: rank 0 evaluates for all.
            let eval_out = if self.comm.rank() == 0 {
                tch::no_grad(|| eval.evaluate(method, epoch))?
            } else {
                EpochEval::default()
            };
            let collapse = eval_out
                .views
                .as_ref()
                .map(|(a, b)| collapse_stats(a, Some(b)));
            let epoch_warnings: Vec<String> = collapse
                .as_ref()
                .map(|c| self.cfg.collapse.warnings_since(c, init_collapse.as_ref()))
                .unwrap_or_default()
                .into_iter()
                .map(|w| format!("epoch {}: {w}", epoch + 1))
                .collect();
            warnings.extend(epoch_warnings.iter().cloned());
            let report = EpochReport {
                epoch,
                step,
                mean_loss: epoch_loss / epoch_steps.max(1) as f64,
                train_seconds: secs,
                samples_per_s: (epoch_steps * data.batch_size() * self.comm.world_size()) as f64
                    / secs.max(1e-9),
                metrics: eval_out.metrics,
                collapse,
                warnings: epoch_warnings,
            };
            let mut rec = json!({"kind": "epoch"});
            if let (Value::Object(dst), Ok(Value::Object(src))) =
                (&mut rec, serde_json::to_value(&report))
            {
                dst.extend(src);
            }
            if let Some(log) = log.as_mut() {
                log.append(&rec)?;
                log.flush()?;
            }
            curves.push_epoch(&report);
            obs.on_epoch(&report);
            epochs_done.push(report);
            let meta = self.meta(method.name(), step, bpe, last_loss, global_batch as u64);
            self.save(method, optimizer.as_ref(), &meta)?;
            if self.comm.rank() == 0 {
                curves.plot(&self.run_dir.join(PLOT_FILE), method.name())?;
            }
            if self.stop.load(Ordering::SeqCst) && epoch + 1 < self.cfg.epochs {
                return Err(Error::Interrupted {
                    step,
                    checkpoint: ckpt_path,
                });
            }
        }
        Ok(TrainSummary {
            steps: step,
            resumed_from: resume.then_some(start),
            final_loss: last_loss,
            train_seconds,
            samples_per_s: trained_samples as f64 / train_seconds.max(1e-9),
            epochs: epochs_done,
            warnings,
            init_collapse,
            checkpoint: ckpt_path,
        })
    }

    /// The collective's first failure, with what the user can do about it.
    fn check_ranks(&self) -> Result<()> {
        self.comm.check().map_err(|e| {
            let ckpt = self.checkpoint_path();
            let last = if self.checkpoint_ok.load(Ordering::SeqCst) {
                format!(
                    "the last checkpoint is {}: continue with --resume",
                    ckpt.display()
                )
            } else {
                "no checkpoint was written yet".into()
            };
            Error::Distributed(format!(
                "{}; another rank has probably stopped (see its output); {last}",
                match e {
                    Error::Distributed(m) => m,
                    other => other.to_string(),
                }
            ))
        })
    }

    /// The mean over ranks of a scalar (what the log shows: the loss of the
    /// global batch, not of this rank's share).
    fn global_mean(&self, t: &Tensor) -> Result<f64> {
        if self.comm.world_size() == 1 {
            return Ok(t.double_value(&[]));
        }
        let mut v = [t.detach().to_kind(tch::Kind::Float).reshape([1])];
        self.comm.all_reduce_mean_(&mut v);
        self.check_ranks()?;
        Ok(v[0].double_value(&[0]))
    }

    fn meta(
        &self,
        method: &str,
        step: u64,
        steps_per_epoch: u64,
        loss: f64,
        samples_per_step: u64,
    ) -> CheckpointMeta {
        CheckpointMeta {
            step,
            steps_per_epoch,
            seed: self.cfg.seed,
            method: method.to_string(),
            config: self.resolved_config.clone(),
            git_commit: self.git_commit.clone(),
            loss,
            samples_per_step,
        }
    }

    fn save<M: Method + ?Sized>(
        &self,
        method: &M,
        optimizer: &dyn crate::optim::Optimizer,
        meta: &CheckpointMeta,
    ) -> Result<()> {
        if self.comm.rank() != 0 {
            // Rank 0 writes it (a failure there stops every rank).
            self.checkpoint_ok.store(true, Ordering::SeqCst);
            return Ok(());
        }
        checkpoint::save(&self.checkpoint_path(), method.var_store(), optimizer, meta)?;
        self.checkpoint_ok.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// The step a resumed run starts at, in this run's steps.
///
/// With the same steps per epoch that is the checkpoint's step. Otherwise
/// (another world size or batch size over the same dataset) the run restarts
/// at the same epoch and the same position in it, which is exact at an epoch
/// boundary and wherever the samples already seen fill whole batches of the
/// new size.
fn resume_step(
    meta: &CheckpointMeta,
    bpe: u64,
    samples_per_step: u64,
) -> std::result::Result<u64, String> {
    if meta.steps_per_epoch == bpe {
        return Ok(meta.step);
    }
    let changed = format!(
        "written with {} steps per epoch, this run has {bpe}",
        meta.steps_per_epoch
    );
    if meta.samples_per_step == 0 || meta.steps_per_epoch == 0 {
        return Err(format!("{changed} (dataset or batch size changed)"));
    }
    // Both runs drop the incomplete last batch: their dataset sizes must fit.
    // Saturating: the checkpoint's figures come from a file.
    let (old_lo, old_hi) = (
        meta.steps_per_epoch.saturating_mul(meta.samples_per_step),
        (meta.steps_per_epoch.saturating_add(1)).saturating_mul(meta.samples_per_step),
    );
    let (new_lo, new_hi) = (
        bpe.saturating_mul(samples_per_step),
        bpe.saturating_add(1).saturating_mul(samples_per_step),
    );
    if old_hi <= new_lo || new_hi <= old_lo {
        return Err(format!(
            "{changed}: at {} samples per step the checkpoint saw {old_lo}..{old_hi} samples per epoch, \
             this run at {samples_per_step} sees {new_lo}..{new_hi} (the dataset changed)",
            meta.samples_per_step
        ));
    }
    let epoch = meta.step / meta.steps_per_epoch;
    let seen = (meta.step % meta.steps_per_epoch).saturating_mul(meta.samples_per_step);
    if samples_per_step == 0 || !seen.is_multiple_of(samples_per_step) {
        return Err(format!(
            "{changed}: the checkpoint is {seen} samples into epoch {}, not a whole number of \
             this run's steps of {samples_per_step}; resume from an end-of-epoch checkpoint \
             (or keep the global batch size)",
            epoch + 1
        ));
    }
    epoch
        .checked_mul(bpe)
        .and_then(|s| s.checked_add(seen / samples_per_step))
        .ok_or_else(|| format!("{changed}: step {} is out of range", meta.step))
}

/// What the curves plot shows, rebuilt from `metrics.jsonl` on resume.
#[derive(Default)]
struct Curves {
    loss: Vec<(f64, f64)>,
    epoch_metrics: std::collections::BTreeMap<String, Vec<(f64, f64)>>,
}

impl Curves {
    fn from_history(records: &[Value]) -> Self {
        let mut c = Self::default();
        for r in records {
            match r.get("kind").and_then(Value::as_str) {
                Some("step") => {
                    if let (Some(s), Some(l)) = (r["step"].as_f64(), r["loss"].as_f64()) {
                        c.loss.push((s, l));
                    }
                }
                Some("init") => {
                    if let Some(init) = init_collapse_of(std::slice::from_ref(r)) {
                        c.push_init(&init);
                    }
                }
                Some("epoch") => {
                    if let Ok(rep) = serde_json::from_value::<EpochRecord>(r.clone()) {
                        c.push((rep.epoch + 1) as f64, &rep.metrics, rep.collapse.as_ref());
                    }
                }
                _ => {}
            }
        }
        c
    }

    fn push_epoch(&mut self, r: &EpochReport) {
        self.push((r.epoch + 1) as f64, &r.metrics, r.collapse.as_ref());
    }

    /// The monitors before the first step, at epoch 0 of the plot.
    fn push_init(&mut self, c: &CollapseStats) {
        self.push(0.0, &[], Some(c));
    }

    fn push(&mut self, x: f64, metrics: &[(String, f64)], collapse: Option<&CollapseStats>) {
        for (k, v) in metrics {
            self.epoch_metrics
                .entry(k.clone())
                .or_default()
                .push((x, *v));
        }
        if let Some(c) = collapse {
            self.epoch_metrics
                .entry("collapse:std_ratio".into())
                .or_default()
                .push((x, c.std_ratio));
            self.epoch_metrics
                .entry("collapse:rank_ratio".into())
                .or_default()
                .push((x, c.rank_ratio));
        }
    }

    fn plot(&self, path: &Path, title: &str) -> Result<()> {
        let series = |pred: &dyn Fn(&str) -> bool| -> Vec<Series> {
            self.epoch_metrics
                .iter()
                .filter(|(k, _)| pred(k))
                .map(|(k, pts)| Series {
                    name: k.trim_start_matches("collapse:").to_string(),
                    points: pts.clone(),
                    style: if k.starts_with("baseline") {
                        SeriesStyle::Reference
                    } else {
                        SeriesStyle::Line
                    },
                })
                .collect()
        };
        let panels = vec![
            Panel {
                title: "training loss".into(),
                x_label: "step".into(),
                series: vec![Series {
                    name: "loss".into(),
                    points: self.loss.clone(),
                    style: SeriesStyle::Smoothed,
                }],
            },
            Panel {
                title: "evaluation (test split)".into(),
                x_label: "epoch".into(),
                series: series(&|k| !k.starts_with("collapse:")),
            },
            Panel {
                title: "collapse monitors (1 = healthy spread, 0 = collapsed)".into(),
                x_label: "epoch".into(),
                series: series(&|k| k.starts_with("collapse:")),
            },
        ];
        plot_curves(path, title, &panels)
    }
}

/// The `init` record's collapse statistics in a resumed run's history.
fn init_collapse_of(history: &[Value]) -> Option<CollapseStats> {
    history
        .iter()
        .find(|r| r.get("kind").and_then(Value::as_str) == Some("init"))
        .and_then(|r| serde_json::from_value(r.get("collapse")?.clone()).ok())
}

#[derive(Deserialize)]
struct EpochRecord {
    epoch: usize,
    #[serde(default)]
    metrics: Vec<(String, f64)>,
    #[serde(default)]
    collapse: Option<CollapseStats>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::{HeadConfig, MlpHead};
    use crate::loss::{InfoNce, InfoNceConfig};
    use crate::method::{Batch, LossOut};
    use crate::target::TargetKind;
    use rand::{seq::SliceRandom, Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use tch::{nn, Kind};

    fn ckpt(step: u64, spe: u64, sps: u64) -> CheckpointMeta {
        CheckpointMeta {
            step,
            steps_per_epoch: spe,
            seed: 0,
            method: "m".into(),
            config: String::new(),
            git_commit: None,
            loss: 0.0,
            samples_per_step: sps,
        }
    }

    #[test]
    fn resume_maps_steps_across_world_sizes() {
        // 1000 samples; 2 ranks x 50 = 100 per step (10 steps per epoch),
        // resumed on 1 rank x 50 (20 per epoch) or 4 x 50 (5 per epoch).
        assert_eq!(resume_step(&ckpt(23, 10, 100), 10, 100), Ok(23));
        assert_eq!(resume_step(&ckpt(20, 10, 100), 20, 50), Ok(40));
        assert_eq!(resume_step(&ckpt(23, 10, 100), 20, 50), Ok(46));
        assert_eq!(resume_step(&ckpt(20, 10, 100), 5, 200), Ok(10));
        let mid = resume_step(&ckpt(23, 10, 100), 5, 200).unwrap_err();
        assert!(mid.contains("end-of-epoch checkpoint"), "{mid}");
        let data = resume_step(&ckpt(20, 10, 100), 40, 50).unwrap_err();
        assert!(data.contains("the dataset changed"), "{data}");
        let old = resume_step(&ckpt(20, 10, 0), 20, 50).unwrap_err();
        assert!(old.contains("dataset or batch size changed"), "{old}");
    }

    /// 64 distinct random points; views add seeded noise.
    struct Toy {
        points: Vec<f32>,
        dim: usize,
        batch: usize,
        seed: u64,
    }

    impl Toy {
        fn new(seed: u64) -> Self {
            let mut rng = ChaCha8Rng::seed_from_u64(99);
            let dim = 16;
            let points = (0..64 * dim).map(|_| rng.gen_range(-3.0..3.0)).collect();
            Self {
                points,
                dim,
                batch: 16,
                seed,
            }
        }
    }

    impl BatchSource for Toy {
        fn batches_per_epoch(&self) -> usize {
            64 / self.batch
        }
        fn batch_size(&self) -> usize {
            self.batch
        }
        fn epoch(
            &self,
            epoch: usize,
            start: usize,
        ) -> Box<dyn Iterator<Item = Result<Batch>> + '_> {
            let mut order: Vec<usize> = (0..64).collect();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(self.seed + epoch as u64));
            Box::new((start..self.batches_per_epoch()).map(move |b| {
                let mut views = Vec::new();
                for v in 0..2u64 {
                    let mut rng =
                        ChaCha8Rng::seed_from_u64(self.seed ^ ((epoch * 1000 + b) as u64 * 10 + v));
                    let data: Vec<f32> = order[b * self.batch..(b + 1) * self.batch]
                        .iter()
                        .flat_map(|&i| self.points[i * self.dim..(i + 1) * self.dim].to_vec())
                        .map(|x| x + rng.gen_range(-0.5..0.5))
                        .collect();
                    views.push(
                        Tensor::from_slice(&data).reshape([self.batch as i64, self.dim as i64]),
                    );
                }
                Ok(Batch { views })
            }))
        }
    }

    struct ToyMethod {
        vs: nn::VarStore,
        enc: nn::Linear,
        head: MlpHead,
        loss: InfoNce,
        poison_at: Option<u64>,
        /// Panic at this step as tch does when the GPU runs out of memory.
        oom_at: Option<u64>,
    }

    impl ToyMethod {
        /// Weights from our own seeded generator: libtorch's global one is
        /// shared by concurrently running tests.
        fn new(seed: u64) -> Self {
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let enc = nn::linear(vs.root() / "enc", 16, 8, Default::default());
            let head = MlpHead::new(
                &(vs.root() / "head"),
                8,
                &HeadConfig {
                    hidden_dim: 16,
                    out_dim: 8,
                    layers: 2,
                    batch_norm: true,
                    last_batch_norm: false,
                },
            );
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            tch::no_grad(|| {
                for (name, mut v) in vars {
                    if name.contains("running") {
                        continue;
                    }
                    let vals: Vec<f32> = (0..v.numel()).map(|_| rng.gen_range(-0.4..0.4)).collect();
                    v.copy_(&Tensor::from_slice(&vals).reshape(v.size()));
                }
            });
            Self {
                vs,
                enc,
                head,
                loss: InfoNce::new(InfoNceConfig { temperature: 0.5 }),
                poison_at: None,
                oom_at: None,
            }
        }
    }

    impl Method for ToyMethod {
        fn name(&self) -> &'static str {
            "toy"
        }
        fn target(&self) -> TargetKind {
            TargetKind::OtherView
        }
        fn var_store(&self) -> &nn::VarStore {
            &self.vs
        }
        fn step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<LossOut> {
            let z1 = batch.views[0].apply(&self.enc).apply_t(&self.head, true);
            let z2 = batch.views[1].apply(&self.enc).apply_t(&self.head, true);
            let mut loss = self.loss.nt_xent(&z1, &z2, ctx.comm);
            if self.oom_at == Some(ctx.step) {
                panic!(
                    "called `Result::unwrap()` on an `Err` value: Torch(\"CUDA out of memory. \
                     Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 139.80 GiB\n\
                     Exception raised from malloc at c10/cuda/CUDACachingAllocator.cpp\")"
                );
            }
            if self.poison_at == Some(ctx.step) {
                loss *= f64::NAN;
            }
            Ok(LossOut {
                loss,
                terms: vec![],
            })
        }
        fn embed(&self, xs: &Tensor) -> Tensor {
            xs.apply(&self.enc)
        }
        fn project(&self, xs: &Tensor) -> Tensor {
            self.embed(xs).apply_t(&self.head, false)
        }
    }

    fn config(epochs: usize) -> TrainerConfig {
        TrainerConfig {
            epochs,
            seed: 3,
            optimizer: OptimConfig {
                lr: 0.5,
                ..Default::default()
            },
            checkpoint_every: 3,
            ..Default::default()
        }
    }

    fn step_losses(dir: &Path) -> Vec<(u64, f64)> {
        std::fs::read_to_string(dir.join(METRICS_FILE))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["kind"] == "step")
            .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
            .collect()
    }

    #[test]
    fn training_lowers_the_loss_and_writes_the_run_folder() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = ToyMethod::new(0);
        let s = Trainer::new(config(6), dir.path(), tch::Device::Cpu)
            .fit(&mut m, &Toy::new(3), &mut NoEval, &mut Silent, false)
            .unwrap();
        assert_eq!(s.steps, 24);
        let losses = step_losses(dir.path());
        let first: f64 = losses[..4].iter().map(|l| l.1).sum::<f64>() / 4.0;
        let last: f64 = losses[20..].iter().map(|l| l.1).sum::<f64>() / 4.0;
        assert!(last < first * 0.8, "loss did not fall: {first} -> {last}");
        for f in [
            CHECKPOINT_FILE,
            METRICS_FILE,
            PLOT_FILE,
            crate::metrics::TENSORBOARD_DIR,
        ] {
            assert!(dir.path().join(f).exists(), "{f}");
        }
    }

    #[test]
    fn interrupted_run_resumes_with_identical_losses() {
        let full = tempfile::tempdir().unwrap();
        let mut m = ToyMethod::new(0);
        Trainer::new(config(3), full.path(), tch::Device::Cpu)
            .fit(&mut m, &Toy::new(3), &mut NoEval, &mut Silent, false)
            .unwrap();
        let reference = step_losses(full.path());

        // Same run, interrupted after step 5 (mid-epoch), then resumed by a fresh process-like state.
        let part = tempfile::tempdir().unwrap();
        struct StopAt(Arc<AtomicBool>, u64);
        impl Observer for StopAt {
            fn on_step(&mut self, r: &StepReport) {
                if r.step + 1 == self.1 {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut m = ToyMethod::new(0);
        let err = Trainer::new(config(3), part.path(), tch::Device::Cpu)
            .with_stop_flag(stop.clone())
            .fit(
                &mut m,
                &Toy::new(3),
                &mut NoEval,
                &mut StopAt(stop, 5),
                false,
            )
            .unwrap_err();
        assert!(matches!(err, Error::Interrupted { step: 5, .. }), "{err}");
        let mut m = ToyMethod::new(42); // different init: everything must come from the checkpoint
        let s = Trainer::new(config(3), part.path(), tch::Device::Cpu)
            .fit(&mut m, &Toy::new(3), &mut NoEval, &mut Silent, true)
            .unwrap();
        assert_eq!(s.resumed_from, Some(5));
        let resumed = step_losses(part.path());
        assert_eq!(resumed.len(), reference.len());
        for ((s1, l1), (s2, l2)) in reference.iter().zip(&resumed) {
            assert_eq!(s1, s2);
            assert!(
                (l1 - l2).abs() <= 1e-6 * l1.abs().max(1.0),
                "step {s1}: {l1} vs {l2}"
            );
        }
    }

    #[test]
    fn non_finite_loss_stops_and_names_the_step() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = ToyMethod::new(0);
        m.poison_at = Some(7);
        let err = Trainer::new(config(3), dir.path(), tch::Device::Cpu)
            .fit(&mut m, &Toy::new(3), &mut NoEval, &mut Silent, false)
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::NonFiniteLoss { step: 7, .. }), "{msg}");
        assert!(msg.contains(CHECKPOINT_FILE), "{msg}");
        // The last good checkpoint (step 6) is intact and loadable.
        let meta = checkpoint::read_meta(&dir.path().join(CHECKPOINT_FILE)).unwrap();
        assert_eq!(meta.step, 6);
    }

    /// The GPU running out of memory mid-run (tch panics with libtorch's
    /// text) ends the run with one line naming the fix, not a C++ dump, and
    /// the last checkpoint stays; any other panic is a bug and unwinds on.
    #[test]
    fn out_of_gpu_memory_is_one_line_and_keeps_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = ToyMethod::new(0);
        m.oom_at = Some(7);
        let err = Trainer::new(config(3), dir.path(), tch::Device::Cpu)
            .fit(&mut m, &Toy::new(3), &mut NoEval, &mut Silent, false)
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Device(_)), "{msg}");
        assert!(
            msg.contains("out of memory") && msg.contains("--batch-size") && !msg.contains('\n'),
            "{msg}"
        );
        let meta = checkpoint::read_meta(&dir.path().join(CHECKPOINT_FILE)).unwrap();
        assert_eq!(meta.step, 6);
        let other = std::panic::catch_unwind(|| {
            crate::device::guard_device_failure(|| panic!("index out of bounds"))
        });
        assert!(
            other.is_err(),
            "a bug's panic must not become a device error"
        );
    }

    /// The library's safety net: a fresh `fit` into a folder holding an
    /// earlier run's checkpoint is refused (the CLI asks for --overwrite
    /// first) and the earlier checkpoint is neither replaced nor named as
    /// this run's "last good checkpoint".
    #[test]
    fn a_fresh_fit_over_an_earlier_checkpoint_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = ToyMethod::new(0);
        Trainer::new(config(1), dir.path(), tch::Device::Cpu)
            .fit(&mut m, &Toy::new(3), &mut NoEval, &mut Silent, false)
            .unwrap();
        let before = std::fs::read(dir.path().join(CHECKPOINT_FILE)).unwrap();
        let mut m = ToyMethod::new(1);
        m.poison_at = Some(0);
        let err = Trainer::new(config(1), dir.path(), tch::Device::Cpu)
            .fit(&mut m, &Toy::new(3), &mut NoEval, &mut Silent, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("already holds a run")
                && err.contains("--overwrite")
                && !err.contains("last good"),
            "{err}"
        );
        assert_eq!(
            std::fs::read(dir.path().join(CHECKPOINT_FILE)).unwrap(),
            before
        );
    }

    /// Resumed from an end-of-epoch checkpoint, the run keeps that epoch's
    /// record in metrics.jsonl: the whole history is there once.
    #[test]
    fn resume_at_an_epoch_end_keeps_the_epoch_record() {
        let full = tempfile::tempdir().unwrap();
        let mut m = ToyMethod::new(0);
        Trainer::new(config(2), full.path(), tch::Device::Cpu)
            .fit(&mut m, &Toy::new(3), &mut NoEval, &mut Silent, false)
            .unwrap();
        let part = tempfile::tempdir().unwrap();
        let mut m = ToyMethod::new(0);
        Trainer::new(config(1), part.path(), tch::Device::Cpu)
            .fit(&mut m, &Toy::new(3), &mut NoEval, &mut Silent, false)
            .unwrap();
        let mut m = ToyMethod::new(0);
        Trainer::new(config(2), part.path(), tch::Device::Cpu)
            .fit(&mut m, &Toy::new(3), &mut NoEval, &mut Silent, true)
            .unwrap();
        let kinds = |dir: &Path| -> Vec<(String, u64)> {
            std::fs::read_to_string(dir.join(METRICS_FILE))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .map(|v| {
                    (
                        v["kind"].as_str().unwrap().to_string(),
                        v["step"].as_u64().unwrap(),
                    )
                })
                .collect()
        };
        let (a, b) = (kinds(full.path()), kinds(part.path()));
        assert_eq!(a.iter().filter(|k| k.0 == "epoch").count(), 2);
        assert_eq!(a, b);
    }

    #[test]
    fn resume_without_checkpoint_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = ToyMethod::new(0);
        let err = Trainer::new(config(1), dir.path(), tch::Device::Cpu)
            .fit(&mut m, &Toy::new(3), &mut NoEval, &mut Silent, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no checkpoint"), "{err}");
    }

    #[test]
    fn collapse_is_reported_in_the_epoch_record() {
        struct Collapsed;
        impl EpochEvaluator<ToyMethod> for Collapsed {
            fn evaluate(&mut self, _: &ToyMethod, _: usize) -> Result<EpochEval> {
                let z = Tensor::ones([64, 8], (Kind::Float, tch::Device::Cpu));
                Ok(EpochEval {
                    metrics: vec![],
                    views: Some((z.shallow_clone(), z)),
                })
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let mut m = ToyMethod::new(0);
        let s = Trainer::new(config(1), dir.path(), tch::Device::Cpu)
            .fit(&mut m, &Toy::new(3), &mut Collapsed, &mut Silent, false)
            .unwrap();
        assert!(!s.warnings.is_empty());
        assert!(s.warnings[0].contains("collapse"), "{:?}", s.warnings);
    }

    /// Monitor views of rank `init_rank` before training and `rank` after
    /// every epoch (64 x 32, fixed by a seed).
    struct Ranked {
        init_rank: i64,
        rank: i64,
        init_calls: usize,
    }

    impl Ranked {
        fn views(rank: i64) -> (Tensor, Tensor) {
            let mut g = crate::monitor::testing::TestRng::new(rank as u64);
            let z = g.randn(&[64, rank]).matmul(&g.randn(&[rank, 32]));
            (z.shallow_clone(), z)
        }
    }

    impl EpochEvaluator<ToyMethod> for Ranked {
        fn evaluate(&mut self, _: &ToyMethod, _: usize) -> Result<EpochEval> {
            Ok(EpochEval {
                metrics: vec![],
                views: Some(Self::views(self.rank)),
            })
        }
        fn monitor_views(&mut self, _: &ToyMethod) -> Result<Option<(Tensor, Tensor)>> {
            self.init_calls += 1;
            Ok(Some(Self::views(self.init_rank)))
        }
    }

    #[test]
    fn collapse_warnings_are_judged_against_the_state_before_the_first_step() {
        // Rank 1 of 32 before training and after: never spread, not collapsed.
        let dir = tempfile::tempdir().unwrap();
        let mut m = ToyMethod::new(0);
        let mut eval = Ranked {
            init_rank: 1,
            rank: 1,
            init_calls: 0,
        };
        let s = Trainer::new(config(1), dir.path(), tch::Device::Cpu)
            .fit(&mut m, &Toy::new(3), &mut eval, &mut Silent, false)
            .unwrap();
        let init = s
            .init_collapse
            .clone()
            .expect("measured before the first step");
        assert!(init.rankme < 1.5, "{init:?}");
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(
            s.warnings[0]
                .starts_with("epoch 1: low effective rank since initialisation: effective rank"),
            "{:?}",
            s.warnings
        );
        // The figure is in metrics.jsonl, and a resumed run judges by it too
        // without measuring again.
        let log = std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
        let first: Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
        assert_eq!(first["kind"], "init");
        assert_eq!(first["step"], 0);
        let s = Trainer::new(config(2), dir.path(), tch::Device::Cpu)
            .fit(&mut m, &Toy::new(3), &mut eval, &mut Silent, true)
            .unwrap();
        assert_eq!(eval.init_calls, 1);
        assert_eq!(s.init_collapse, Some(init));
        assert!(
            s.warnings[0].starts_with("epoch 2: low effective rank since initialisation"),
            "{:?}",
            s.warnings
        );
        let log = std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
        assert_eq!(log.matches("\"kind\":\"init\"").count(), 1, "{log}");

        // Spread before training (rank 32), rank 1 after: a collapse, with the
        // figure it fell from.
        let dir = tempfile::tempdir().unwrap();
        let mut eval = Ranked {
            init_rank: 32,
            rank: 1,
            init_calls: 0,
        };
        let s = Trainer::new(config(1), dir.path(), tch::Device::Cpu)
            .fit(
                &mut ToyMethod::new(0),
                &Toy::new(3),
                &mut eval,
                &mut Silent,
                false,
            )
            .unwrap();
        assert!(
            s.warnings[0].starts_with("epoch 1: possible collapse: effective rank 1.0"),
            "{:?}",
            s.warnings
        );
        assert!(
            s.warnings[0].contains("before the first step"),
            "{:?}",
            s.warnings
        );
    }
}
