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
