//! What a run writes down: the step and epoch records of `metrics.jsonl`
//! (on rank 0), the tallies the reports are made of, and the summary.
use super::step::Stepped;
use super::{EpochReport, StepReport, TrainSummary};
use crate::metrics::MetricsLog;
use crate::monitor::CollapseStats;
use crate::target::TargetKind;
use crate::Result;
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;

/// What the end-of-epoch evaluation found.
pub(super) struct Judged {
    /// The evaluator's figures.
    pub(super) metrics: Vec<(String, f64)>,
    /// The collapse statistics of its monitor views.
    pub(super) collapse: Option<CollapseStats>,
    /// The epoch's collapse warnings, `epoch N: ...`.
    pub(super) warnings: Vec<String>,
}

/// The run's `metrics.jsonl` (rank 0 only; other ranks write nothing).
pub(super) struct Records {
    log: Option<MetricsLog>,
    target: TargetKind,
}

impl Records {
    /// Writes into `log`; the run's first epoch record names `target`.
    pub(super) fn new(log: Option<MetricsLog>, target: TargetKind) -> Self {
        Self { log, target }
    }

    /// The `init` record: the collapse statistics before the first step.
    pub(super) fn init(&mut self, c: &CollapseStats) -> Result<()> {
        if let Some(log) = self.log.as_mut() {
            log.append(&json!({"kind": "init", "step": 0, "collapse": c}))?;
            log.flush()?;
        }
        Ok(())
    }

    /// A `step` record: the report's figures and the method's terms.
    pub(super) fn step(&mut self, r: &StepReport) -> Result<()> {
        let mut rec = json!({"kind": "step", "step": r.step, "epoch": r.epoch, "loss": r.loss,
            "lr": r.lr, "grad_norm": r.grad_norm, "samples_per_s": r.samples_per_s});
        for (k, v) in &r.terms {
            rec[k] = json!(v);
        }
        match self.log.as_mut() {
            Some(log) => log.append(&rec),
            None => Ok(()),
        }
    }

    /// An `epoch` record (flushed): the report's fields, and for the run's
    /// first epoch the method's target (`"target": "teacher"`).
    pub(super) fn epoch(&mut self, r: &EpochReport) -> Result<()> {
        let Some(log) = self.log.as_mut() else {
            return Ok(());
        };
        let mut rec = json!({"kind": "epoch"});
        if let (Value::Object(dst), Ok(Value::Object(src))) = (&mut rec, serde_json::to_value(r)) {
            dst.extend(src);
        }
        if r.epoch == 0 {
            rec["target"] = json!(self.target);
        }
        log.append(&rec)?;
        log.flush()
    }

    /// Flushes the log (before a checkpoint, so the two agree).
    pub(super) fn flush(&mut self) -> Result<()> {
        match self.log.as_mut() {
            Some(log) => log.flush(),
            None => Ok(()),
        }
    }
}

/// The running figures of one epoch.
pub(super) struct EpochTally {
    loss_sum: f64,
    steps: usize,
    started: Instant,
    recent: Instant,
}

impl EpochTally {
    /// A tally whose clocks start now.
    pub(super) fn start() -> Self {
        Self {
            loss_sum: 0.0,
            steps: 0,
            started: Instant::now(),
            recent: Instant::now(),
        }
    }

    /// Counts a step taken and reports it, its throughput measured since
    /// the previous step.
    pub(super) fn step(&mut self, done: Stepped, total_steps: u64, epochs: usize) -> StepReport {
        let dt = self.recent.elapsed().as_secs_f64();
        self.recent = Instant::now();
        self.loss_sum += done.loss;
        self.steps += 1;
        StepReport {
            step: done.step,
            total_steps,
            epoch: done.epoch,
            epochs,
            loss: done.loss,
            lr: done.lr,
            grad_norm: done.grad_norm,
            samples_per_s: done.samples as f64 / dt.max(1e-9),
            terms: done.terms,
        }
    }

    /// Seconds since the epoch started.
    pub(super) fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The epoch's report: `secs` of training at `samples_per_step`, and
    /// what the evaluation judged.
    pub(super) fn epoch_report(
        &self,
        epoch: usize,
        step: u64,
        secs: f64,
        samples_per_step: usize,
        judged: Judged,
    ) -> EpochReport {
        EpochReport {
            epoch,
            step,
            mean_loss: self.loss_sum / self.steps.max(1) as f64,
            train_seconds: secs,
            samples_per_s: (self.steps * samples_per_step) as f64 / secs.max(1e-9),
            metrics: judged.metrics,
            collapse: judged.collapse,
            warnings: judged.warnings,
        }
    }
}

/// The running figures of the whole `fit`.
pub(super) struct Progress {
    /// The next global step.
    pub(super) step: u64,
    /// Loss of the last step.
    pub(super) last_loss: f64,
    train_seconds: f64,
    trained_samples: usize,
    epochs: Vec<EpochReport>,
    warnings: Vec<String>,
}

impl Progress {
    /// Nothing done yet; the next step is `start`.
    pub(super) fn new(start: u64) -> Self {
        Self {
            step: start,
            last_loss: f64::NAN,
            train_seconds: 0.0,
            trained_samples: 0,
            epochs: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Counts a step of `samples` (all processes).
    pub(super) fn stepped(&mut self, r: &StepReport, samples: usize) {
        self.trained_samples += samples;
        self.last_loss = r.loss;
        self.step += 1;
    }

    /// Counts an epoch that trained for `secs`.
    pub(super) fn epoch_done(&mut self, r: EpochReport, secs: f64) {
        self.train_seconds += secs;
        self.warnings.extend(r.warnings.iter().cloned());
        self.epochs.push(r);
    }

    /// The outcome of the `fit`.
    pub(super) fn summary(
        self,
        resumed_from: Option<u64>,
        target: TargetKind,
        init_collapse: Option<CollapseStats>,
        checkpoint: PathBuf,
    ) -> TrainSummary {
        TrainSummary {
            steps: self.step,
            resumed_from,
            final_loss: self.last_loss,
            train_seconds: self.train_seconds,
            samples_per_s: self.trained_samples as f64 / self.train_seconds.max(1e-9),
            target,
            epochs: self.epochs,
            warnings: self.warnings,
            init_collapse,
            checkpoint,
        }
    }
}

/// The `init` record's collapse statistics in a resumed run's history.
pub(super) fn init_collapse_of(history: &[Value]) -> Option<CollapseStats> {
    history
        .iter()
        .find(|r| r.get("kind").and_then(Value::as_str) == Some("init"))
        .and_then(|r| serde_json::from_value(r.get("collapse")?.clone()).ok())
}

/// The fields of an `epoch` record the curves plot reads back.
#[derive(Deserialize)]
pub(super) struct EpochRecord {
    pub(super) epoch: usize,
    #[serde(default)]
    pub(super) metrics: Vec<(String, f64)>,
    #[serde(default)]
    pub(super) collapse: Option<CollapseStats>,
}
