//! How a run starts: fresh (weights broadcast from rank 0, a new
//! `metrics.jsonl`) or resumed (checkpoint restored, its step mapped onto
//! this run's steps, the log cut exactly at it).
use super::step::{Optimisation, Shape};
use super::{Trainer, METRICS_FILE};
use crate::checkpoint::{self, CheckpointMeta};
use crate::method::Method;
use crate::metrics::MetricsLog;
use crate::{Error, Result};
use serde_json::Value;
use std::sync::atomic::Ordering;
use tch::Tensor;

/// Where a run starts.
pub(super) struct Start {
    /// The first step to take.
    pub(super) step: u64,
    /// The log, on rank 0.
    pub(super) log: Option<MetricsLog>,
    /// The records a resumed log kept (empty for a fresh run or another rank).
    pub(super) history: Vec<Value>,
}

impl Trainer {
    /// Resumes from the run folder's checkpoint with `resume`, else starts
    /// a fresh run (refusing a folder that holds an earlier checkpoint).
    pub(super) fn start<M: Method + ?Sized>(
        &self,
        method: &M,
        opt: &mut Optimisation,
        shape: &Shape,
        resume: bool,
    ) -> Result<Start> {
        if resume {
            self.resume(method, opt, shape)
        } else {
            self.start_fresh(opt)
        }
    }

    /// Restores weights, optimiser state and the step from the checkpoint,
    /// and cuts the log at it.
    fn resume<M: Method + ?Sized>(
        &self,
        method: &M,
        opt: &mut Optimisation,
        shape: &Shape,
    ) -> Result<Start> {
        let ckpt_path = self.checkpoint_path();
        if !ckpt_path.exists() {
            return Err(Error::Checkpoint {
                path: ckpt_path,
                reason: "--resume was given but there is no checkpoint in the run folder".into(),
            });
        }
        let meta = checkpoint::restore(
            &ckpt_path,
            method.var_store(),
            opt.optimizer.as_mut(),
            method.name(),
        )?;
        let step = resume_step(&meta, shape.steps_per_epoch, shape.global_batch as u64).map_err(
            |reason| Error::Checkpoint {
                path: ckpt_path.clone(),
                reason,
            },
        )?;
        self.checkpoint_ok.store(true, Ordering::SeqCst);
        if self.comm.rank() != 0 {
            return Ok(Start {
                step,
                log: None,
                history: Vec::new(),
            });
        }
        let metrics_path = self.run_dir.join(METRICS_FILE);
        let (log, history, corrupt) = MetricsLog::resume(&metrics_path, meta.step)?;
        if corrupt > 0 {
            tracing::warn!(
                "{}: dropped {corrupt} line(s) that are not JSON (cut short by a crash?)",
                metrics_path.display()
            );
        }
        Ok(Start {
            step,
            log: Some(log),
            history,
        })
    }

    /// Refuses to train over an earlier run, gives every rank rank 0's
    /// initial weights and starts a new log.
    fn start_fresh(&self, opt: &Optimisation) -> Result<Start> {
        let ckpt_path = self.checkpoint_path();
        if self.comm.rank() == 0 && ckpt_path.exists() {
            return Err(Error::Data(crate::run_dir::occupied_message(
                &self.run_dir,
                std::slice::from_ref(&ckpt_path),
            )));
        }
        let mut tensors: Vec<Tensor> = opt
            .params
            .tensors
            .iter()
            .map(Tensor::shallow_clone)
            .collect();
        self.comm.broadcast_(&mut tensors, 0);
        self.check_ranks()?;
        let log = if self.comm.rank() == 0 {
            Some(MetricsLog::create(&self.run_dir.join(METRICS_FILE))?)
        } else {
            None
        };
        Ok(Start {
            step: 0,
            log,
            history: Vec::new(),
        })
    }
}

/// The step a resumed run starts at, in this run's steps.
///
/// With the same steps per epoch that is the checkpoint's step. Otherwise
/// (another world size or batch size over the same dataset) the run restarts
/// at the same epoch and the same position in it, which is exact at an epoch
/// boundary and wherever the samples already seen fill whole batches of the
/// new size.
pub(super) fn resume_step(
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
