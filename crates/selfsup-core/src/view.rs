//! Views: how one unlabelled sample becomes the inputs a method compares.
use rand_chacha::ChaCha8Rng;

/// Turns one unlabelled sample into `num_views()` views (augmented crops of an
/// image, masked copies of a sentence, ...).
///
/// Implementations draw all randomness from `rng`, so the same seed gives the
/// same views on every machine and after a resume.
pub trait ViewGenerator<S: ?Sized>: Send + Sync {
    /// One view, ready to be stacked into a batch.
    type View: Send;
    /// How many views [`ViewGenerator::views`] returns.
    fn num_views(&self) -> usize;
    /// The views of `sample`.
    fn views(&self, sample: &S, rng: &mut ChaCha8Rng) -> Vec<Self::View>;
}
