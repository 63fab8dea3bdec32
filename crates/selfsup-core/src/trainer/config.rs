//! The `[trainer]` table and the range checks every config section shares.
use crate::monitor::CollapseThresholds;
use crate::optim::OptimConfig;
use crate::schedule::LrSchedule;
use serde::{Deserialize, Serialize};

/// Trainer settings (the `[trainer]` table of a run config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainerConfig {
    /// Passes over the training data.
    pub epochs: usize,
    /// Seed of libtorch's generator, re-seeded from `(seed, step)` every step.
    pub seed: u64,
    /// The optimiser and its peak learning rate (`[trainer.optimizer]`).
    pub optimizer: OptimConfig,
    /// The learning-rate schedule (`[trainer.schedule]`).
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
