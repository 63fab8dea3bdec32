//! The one training loop every method and modality shares.
//!
//! [`Trainer::fit`] reads as a short list of phases, each in its own unit:
//! - `resume`: a fresh start (weights broadcast, a new `metrics.jsonl`) or
//!   a resume (checkpoint restored, the step mapped, the log cut at it);
//! - `evaluation`: the collapse monitors before the first step, the
//!   caller's evaluator and the collapse warnings at each epoch end;
//! - `step`: one optimisation step: re-seed libtorch from `(seed, step)`,
//!   move the batch to the device, `Method::step` (under autocast on CUDA
//!   when asked), refuse a non-finite loss, backward, average gradients
//!   across processes (the one place that does), clip, optimiser step with
//!   the scheduled learning rate, `Method::after_step`;
//! - `records`: the step and epoch records of `metrics.jsonl` and the
//!   tallies the reports and the summary are made of;
//! - `cadence`: checkpoints every N steps, at epoch ends and on
//!   interruption;
//! - `curves`: the curves plot, rebuilt from the log on resume.
//!
//! Progress goes to an [`Observer`]; drawing it is the binary's business.
mod cadence;
mod config;
mod curves;
mod evaluation;
pub mod noise;
mod records;
mod resume;
mod step;
#[cfg(test)]
mod tests;

pub use config::{non_negative, positive, unit_interval, TrainerConfig};

use crate::distributed::{Collective, SingleProcess};
use crate::method::Method;
use crate::monitor::CollapseStats;
use crate::source::BatchSource;
use crate::target::TargetKind;
use crate::Result;
use curves::Curves;
use records::{EpochTally, Progress, Records};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use step::Optimisation;
use tch::Tensor;

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
    /// The figures and monitor views after epoch `epoch` (0-based), computed
    /// by rank 0 under `no_grad`.
    fn evaluate(&mut self, method: &M, epoch: usize) -> Result<EpochEval>;

    /// The views [`EpochEval::views`] holds, alone: the trainer measures them
    /// once before the first step of a fresh run, so that the collapse
    /// warnings can tell features that never spread from features that
    /// collapsed ([`crate::monitor::CollapseThresholds::warnings_since`]).
    /// `None` (the default) skips that measurement.
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
    /// Global optimisation step (0-based).
    pub step: u64,
    /// Optimisation steps of the whole run.
    pub total_steps: u64,
    /// Current epoch (0-based).
    pub epoch: usize,
    /// Epochs of the whole run.
    pub epochs: usize,
    /// Loss of the global batch (mean over ranks).
    pub loss: f64,
    /// Learning rate of this step.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Training samples per second over the recent steps (all processes).
    pub samples_per_s: f64,
    /// The method's named loss parts and diagnostics.
    pub terms: Vec<(String, f64)>,
}

/// One epoch, as reported to the observer and written to `metrics.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct EpochReport {
    /// The epoch (0-based).
    pub epoch: usize,
    /// Optimisation steps done at the epoch's end.
    pub step: u64,
    /// Mean loss of the epoch's steps.
    pub mean_loss: f64,
    /// Seconds spent training in this epoch (evaluation excluded).
    pub train_seconds: f64,
    /// Training samples per second over the epoch (all processes).
    pub samples_per_s: f64,
    /// The evaluator's figures.
    pub metrics: Vec<(String, f64)>,
    /// The collapse statistics of the evaluator's monitor views.
    pub collapse: Option<CollapseStats>,
    /// The collapse warnings of this epoch.
    pub warnings: Vec<String>,
}

/// Receives progress; the CLI draws bars from it.
pub trait Observer {
    /// Training starts at `_start_step` of `_total_steps`.
    fn on_start(&mut self, _start_step: u64, _total_steps: u64) {}
    /// The collapse statistics before the first step (fresh runs whose
    /// evaluator has monitor views).
    fn on_init(&mut self, _collapse: &CollapseStats) {}
    /// An optimisation step is done.
    fn on_step(&mut self, _r: &StepReport) {}
    /// An epoch is done and evaluated.
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
    /// Optimisation steps done (the run's total when it completes).
    pub steps: u64,
    /// The step a resumed run started at.
    pub resumed_from: Option<u64>,
    /// Loss of the last step.
    pub final_loss: f64,
    /// Seconds spent training in this process's epochs (evaluation excluded).
    pub train_seconds: f64,
    /// Training samples per second over those epochs (all processes).
    pub samples_per_s: f64,
    /// What the method trains towards ([`Method::target`]); it sets the
    /// emphasis of the collapse warnings.
    pub target: TargetKind,
    /// The epochs this `fit` trained.
    pub epochs: Vec<EpochReport>,
    /// Every collapse warning of the run, with its epoch.
    pub warnings: Vec<String>,
    /// The collapse statistics before the first step (also after a resume,
    /// read back from `metrics.jsonl`); `None` without monitor views.
    pub init_collapse: Option<CollapseStats>,
    /// The run's checkpoint.
    pub checkpoint: PathBuf,
}

/// The checkpoint's file name inside a run folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// The JSON-lines log's file name inside a run folder.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The curves plot's file name inside a run folder.
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
    /// Whether a step is queued whole and its loss read at its end (on a
    /// GPU) rather than checked before backward (on the CPU).
    queue_steps: bool,
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
            queue_steps: device.is_cuda(),
        }
    }

    /// Runs the GPU's step order (queued whole, read at its end) on any
    /// device: what the tests use to check it on the CPU.
    #[cfg(test)]
    pub(crate) fn queue_steps_as_on_gpu(mut self) -> Self {
        self.queue_steps = true;
        self
    }

    /// Uses `comm` to talk to the other processes of the run.
    pub fn with_collective(mut self, comm: Box<dyn Collective>) -> Self {
        self.comm = Arc::from(comm);
        self
    }

    /// A flag that, once set (e.g. by a Ctrl-C handler), makes the trainer write
    /// a checkpoint after the current step and return [`crate::Error::Interrupted`].
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
        // Set up: the run folder, the step arithmetic, the optimiser.
        let shape = self.prepare(data)?;
        let target = method.target();
        let mut opt = Optimisation::of(&self.cfg.optimizer, method);
        // Start fresh or resume; the monitors before the first step.
        let start = self.start(method, &mut opt, &shape, resume)?;
        let mut records = Records::new(start.log, target);
        let mut curves = Curves::from_history(&start.history);
        let init = self.initial_monitors(method, eval, start.step, &start.history, &mut records)?;
        let _sync_bn = self
            .cfg
            .sync_batch_norm
            .then(|| crate::batch_norm::sync_over(self.comm.clone()));
        obs.on_start(start.step, shape.total);
        if let Some(c) = &init {
            if start.step == 0 {
                curves.push_init(c);
            }
            obs.on_init(c);
        }
        self.enable_autocast()?;
        let mut run = Progress::new(start.step);
        let first_epoch = (start.step / shape.steps_per_epoch) as usize;
        for epoch in first_epoch..self.cfg.epochs {
            // Train the epoch, one step, record and cadence check at a time.
            let skip = if epoch == first_epoch {
                (start.step % shape.steps_per_epoch) as usize
            } else {
                0
            };
            let mut tally = EpochTally::start();
            for batch in data.epoch(epoch, skip) {
                let done = self.step(method, batch?, &mut opt, &shape, run.step, epoch)?;
                let samples = done.samples;
                let report = tally.step(done, shape.total, self.cfg.epochs);
                records.step(&report)?;
                curves.loss.push((report.step as f64, report.loss));
                obs.on_step(&report);
                run.stepped(&report, samples);
                self.mid_epoch_cadence(method, &opt, &mut records, &shape, run.step, report.loss)?;
            }
            // End the epoch: evaluate, record, checkpoint, plot.
            let secs = tally.seconds();
            let judged = self.evaluate_epoch(method, eval, epoch, init.as_ref(), target)?;
            let samples = data.batch_size() * self.comm.world_size();
            let report = tally.epoch_report(epoch, run.step, secs, samples, judged);
            records.epoch(&report)?;
            curves.push_epoch(&report);
            obs.on_epoch(&report);
            run.epoch_done(report, secs);
            self.epoch_checkpoint(method, &opt, &shape, run.step, run.last_loss)?;
            if self.comm.rank() == 0 {
                curves.plot(&self.run_dir.join(PLOT_FILE), method.name())?;
            }
            self.stop_between_epochs(epoch, run.step)?;
        }
        let resumed_from = resume.then_some(start.step);
        Ok(run.summary(resumed_from, target, init, self.checkpoint_path()))
    }
}
