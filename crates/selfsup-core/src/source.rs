//! Where batches come from: a reproducible, resumable stream per epoch.
use crate::method::Batch;
use crate::Result;

/// The batches of every epoch, reproducible from the run's seed and the epoch.
///
/// `epoch(e, start)` must yield exactly the batches a fresh `epoch(e, 0)`
/// would yield from index `start` on: that is what makes resume exact.
pub trait BatchSource {
    /// Number of batches in every epoch (incomplete last batches are dropped).
    fn batches_per_epoch(&self) -> usize;
    /// Samples per batch.
    fn batch_size(&self) -> usize;
    /// The batches of `epoch` from batch index `start` on (CPU tensors).
    fn epoch(&self, epoch: usize, start: usize) -> Box<dyn Iterator<Item = Result<Batch>> + '_>;
}
