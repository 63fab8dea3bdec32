//! Encoders: the networks whose representation is pre-trained, evaluated and exported.
use tch::nn;

/// A backbone that maps a batch of inputs to representations of width [`Encoder::out_dim`].
///
/// `forward_t(xs, train)` returns `[batch, out_dim]`; `train` switches batch
/// norm and dropout between their training and inference behaviour.
pub trait Encoder: nn::ModuleT {
    /// Width of the representation (what kNN, the linear probe and export see).
    fn out_dim(&self) -> i64;
}
