//! The one trait that pairs two towers: CLIP's model ([`crate::model::ClipModel`])
//! and method ([`crate::method::Clip`]) are written once over it, so an image
//! tower and the text tower (image-text CLIP) or an audio tower and the text
//! tower (speech-text, [`crate::speech`]) share the projections, the logit
//! scale, the loss and the training step.
use tch::Tensor;

/// One side of a dual encoder: some tensors of a batch in, one pooled
/// feature vector per sample out.
pub trait Tower {
    /// How many tensors of a batch this tower reads, in order (images: 1;
    /// waveforms and their lengths: 2; token ids and attention: 2).
    const INPUTS: usize;
    /// The var-store name of its projection into the shared space
    /// (`visual_projection`, `text_projection`: HF `CLIPModel`'s names).
    const PROJECTION: &'static str;
    /// Width of the pooled features.
    fn out_dim(&self) -> i64;
    /// Pooled features `[B, out_dim]` of `inputs`: [`Self::INPUTS`]
    /// tensors, or the first alone (a batch with nothing padded: what
    /// `Method::embed` and the collapse monitors hand over).
    fn forward(&self, inputs: &[Tensor], train: bool) -> Tensor;
}
