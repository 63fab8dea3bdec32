//! The one place that knows about several processes.
//!
//! Methods never assume they see the whole batch: a contrastive loss asks the
//! [`Collective`] for "the embeddings of the global batch", and the trainer
//! asks it to average gradients after backward. A single process uses
//! [`SingleProcess`]; a c10d-backed implementation slots in here without a
//! change to any method.
use tch::Tensor;

/// Collective operations across the processes of one run.
pub trait Collective: Send + Sync {
    /// This process's index in `0..world_size()`.
    fn rank(&self) -> usize;
    /// Number of processes in the run.
    fn world_size(&self) -> usize;
    /// Concatenates `t` of every rank along dim 0, in rank order. The slice
    /// that came from this rank keeps its autograd history (gather with grad).
    fn all_gather_with_grad(&self, t: &Tensor) -> Tensor;
    /// Replaces each tensor by its mean over ranks (used for gradients).
    fn all_reduce_mean_(&self, tensors: &mut [Tensor]);
    /// Copies rank `root`'s tensors to every rank (used for initial weights).
    fn broadcast_(&self, tensors: &mut [Tensor], root: usize);
    /// The sum of `t` over ranks, differentiable: backward sums the gradient
    /// over ranks too (synchronised batch norm's statistics).
    fn all_reduce_sum_with_grad(&self, t: &Tensor) -> Tensor {
        t.shallow_clone()
    }
    /// Returns when every rank has reached it.
    fn barrier(&self) {}
    /// The first failure of any operation above. The operations themselves
    /// cannot return errors (losses call them mid-arithmetic): after a failure
    /// they keep shapes and do nothing, and the trainer stops with this error
    /// after the step.
    fn check(&self) -> crate::Result<()> {
        Ok(())
    }
}

/// Which slice of every global batch this rank trains on.
///
/// Every rank draws the same permutation of the dataset for an epoch; global
/// batch `j` holds positions `[j * B * W, (j + 1) * B * W)` of it, and rank
/// `r` takes the `r`-th run of `B` of those. The union of the ranks' batches
/// at step `j` is then exactly the batch `j` of one process with batch `B * W`
/// (same samples, same augmentation keys), which is what makes a W-rank run
/// equal to a single-process run and lets a run resume on another world size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world_size: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Self::SINGLE
    }
}

impl Shard {
    /// The whole dataset (one process).
    pub const SINGLE: Shard = Shard {
        rank: 0,
        world_size: 1,
    };

    /// The shard of `comm`'s rank.
    pub fn of(comm: &dyn Collective) -> Self {
        Shard {
            rank: comm.rank(),
            world_size: comm.world_size().max(1),
        }
    }

    /// Complete local batches of `batch` samples per epoch of `n` samples.
    pub fn batches(&self, n: usize, batch: usize) -> usize {
        n / (batch.max(1) * self.world_size)
    }

    /// Position (in the epoch's order) of the first sample of local batch `index`.
    pub fn batch_start(&self, index: usize, batch: usize) -> usize {
        (index * self.world_size + self.rank) * batch
    }
}

/// How a modality's `pretrain` joins a data-parallel run: the collective the
/// trainer uses, and this process's index on its host (which GPU it takes).
pub struct Distributed {
    pub comm: Box<dyn Collective>,
    pub local_rank: usize,
}

impl Distributed {
    /// Whether this process writes checkpoints, logs, evaluations and exports.
    pub fn is_primary(&self) -> bool {
        self.comm.rank() == 0
    }
}

/// The trivial collective of a run with one process.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_gather_with_grad(&self, t: &Tensor) -> Tensor {
        t.shallow_clone()
    }
    fn all_reduce_mean_(&self, _tensors: &mut [Tensor]) {}
    fn broadcast_(&self, _tensors: &mut [Tensor], _root: usize) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_of_a_global_batch_tile_it_in_rank_order() {
        let (n, b) = (50, 4);
        let world = 3;
        let shards: Vec<Shard> = (0..world)
            .map(|rank| Shard {
                rank,
                world_size: world,
            })
            .collect();
        assert_eq!(shards[0].batches(n, b), 4); // 50 / 12
        for j in 0..4 {
            let mut covered: Vec<usize> = shards
                .iter()
                .flat_map(|s| s.batch_start(j, b)..s.batch_start(j, b) + b)
                .collect();
            let single = Shard::SINGLE.batch_start(j, b * world);
            assert_eq!(covered, (single..single + b * world).collect::<Vec<_>>());
            covered.dedup();
            assert_eq!(covered.len(), b * world);
        }
        assert_eq!(Shard::SINGLE.batches(n, b), 12);
    }
}
