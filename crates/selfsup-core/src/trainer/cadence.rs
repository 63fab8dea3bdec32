//! When a run writes its checkpoint: every `checkpoint_every` steps inside
//! an epoch, at every epoch end (after its evaluation), and after the step
//! during which the stop flag was raised, which then ends the run with
//! [`Error::Interrupted`].
use super::records::Records;
use super::step::{Optimisation, Shape};
use super::Trainer;
use crate::checkpoint::{self, CheckpointMeta};
use crate::method::Method;
use crate::{Error, Result};
use std::sync::atomic::Ordering;

impl Trainer {
    /// After a step inside an epoch (`step` steps done, the last one's
    /// `loss`): checkpoints on the `checkpoint_every` cadence or when
    /// interrupted, and stops when interrupted. An epoch's last step leaves
    /// both to the epoch's end.
    pub(super) fn mid_epoch_cadence<M: Method + ?Sized>(
        &self,
        method: &M,
        opt: &Optimisation,
        records: &mut Records,
        shape: &Shape,
        step: u64,
        loss: f64,
    ) -> Result<()> {
        if step.is_multiple_of(shape.steps_per_epoch) {
            return Ok(());
        }
        let interrupted = self.stop.load(Ordering::SeqCst);
        let every = self.cfg.checkpoint_every;
        if interrupted || (every > 0 && step.is_multiple_of(every)) {
            records.flush()?;
            self.save(method, opt, &self.meta(method.name(), shape, step, loss))?;
        }
        if interrupted {
            return Err(Error::Interrupted {
                step,
                checkpoint: self.checkpoint_path(),
            });
        }
        Ok(())
    }

    /// The checkpoint at an epoch's end (`step` steps done, the last one's
    /// `loss`).
    pub(super) fn epoch_checkpoint<M: Method + ?Sized>(
        &self,
        method: &M,
        opt: &Optimisation,
        shape: &Shape,
        step: u64,
        loss: f64,
    ) -> Result<()> {
        self.save(method, opt, &self.meta(method.name(), shape, step, loss))
    }

    /// Stops after `epoch`, checkpointed, when the stop flag is up and
    /// epochs remain.
    pub(super) fn stop_between_epochs(&self, epoch: usize, step: u64) -> Result<()> {
        if self.stop.load(Ordering::SeqCst) && epoch + 1 < self.cfg.epochs {
            return Err(Error::Interrupted {
                step,
                checkpoint: self.checkpoint_path(),
            });
        }
        Ok(())
    }

    /// What a checkpoint after `step` steps records besides the weights.
    fn meta(&self, method: &str, shape: &Shape, step: u64, loss: f64) -> CheckpointMeta {
        CheckpointMeta {
            step,
            steps_per_epoch: shape.steps_per_epoch,
            seed: self.cfg.seed,
            method: method.to_string(),
            config: self.resolved_config.clone(),
            git_commit: self.git_commit.clone(),
            loss,
            samples_per_step: shape.global_batch as u64,
        }
    }

    /// Writes the checkpoint on rank 0; on every rank it becomes this run's
    /// own (a failure on rank 0 stops every rank).
    fn save<M: Method + ?Sized>(
        &self,
        method: &M,
        opt: &Optimisation,
        meta: &CheckpointMeta,
    ) -> Result<()> {
        if self.comm.rank() != 0 {
            self.checkpoint_ok.store(true, Ordering::SeqCst);
            return Ok(());
        }
        checkpoint::save(
            &self.checkpoint_path(),
            method.var_store(),
            opt.optimizer.as_ref(),
            meta,
        )?;
        self.checkpoint_ok.store(true, Ordering::SeqCst);
        Ok(())
    }
}
