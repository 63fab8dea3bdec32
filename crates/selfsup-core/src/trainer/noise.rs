//! The loss's own noise: the losses a method reports on the batches the
//! trainer would draw, with the weights never moving. A claim that training
//! lowered the loss must stand well clear of this spread (the "loss falls"
//! tests of every modality measure it first).
use crate::distributed::SingleProcess;
use crate::method::{Method, StepCtx};
use crate::source::BatchSource;
use crate::Result;

/// The loss of every step of `epochs` epochs of `source`, computed without
/// gradients and without an optimiser step: one row per epoch.
pub fn untrained_losses<M: Method + ?Sized>(
    method: &mut M,
    source: &dyn BatchSource,
    epochs: usize,
) -> Result<Vec<Vec<f64>>> {
    let per = source.batches_per_epoch() as u64;
    let mut rows = Vec::with_capacity(epochs);
    for epoch in 0..epochs {
        let mut row = Vec::with_capacity(per as usize);
        for (i, batch) in source.epoch(epoch, 0).enumerate() {
            let batch = batch?;
            let ctx = StepCtx {
                step: epoch as u64 * per + i as u64,
                total_steps: epochs as u64 * per,
                epoch,
                steps_per_epoch: per,
                comm: &SingleProcess,
            };
            let out = tch::no_grad(|| method.step(&batch, &ctx))?;
            row.push(out.loss.double_value(&[]));
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The spread of [`untrained_losses`].
#[derive(Debug, Clone, PartialEq)]
pub struct LossNoise {
    /// The mean loss of each epoch.
    pub epoch_means: Vec<f64>,
    /// The largest minus the smallest epoch mean.
    pub range: f64,
    /// The population standard deviation of the single steps' losses.
    pub step_sd: f64,
}

impl LossNoise {
    /// The spread of `losses` (one row per epoch, no row empty).
    pub fn of(losses: &[Vec<f64>]) -> Self {
        let epoch_means: Vec<f64> = losses
            .iter()
            .map(|e| e.iter().sum::<f64>() / e.len() as f64)
            .collect();
        let range = epoch_means.iter().cloned().fold(f64::MIN, f64::max)
            - epoch_means.iter().cloned().fold(f64::MAX, f64::min);
        let all: Vec<f64> = losses.iter().flatten().copied().collect();
        let mean = all.iter().sum::<f64>() / all.len() as f64;
        let var = all.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / all.len() as f64;
        Self {
            epoch_means,
            range,
            step_sd: var.sqrt(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spread_is_the_epoch_means_range_and_the_step_sd() {
        let n = LossNoise::of(&[vec![1.0, 3.0], vec![2.0, 6.0]]);
        assert_eq!(n.epoch_means, vec![2.0, 4.0]);
        assert_eq!(n.range, 2.0);
        // Steps 1, 3, 2, 6: mean 3, squared deviations 4 + 0 + 1 + 9 = 14.
        assert!((n.step_sd - (14.0f64 / 4.0).sqrt()).abs() < 1e-12);
    }
}
