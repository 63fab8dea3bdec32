//! An encoder followed by a projection head: the branch that joint-embedding
//! methods (SimCLR, Barlow Twins and VICReg through [`super::two_view`], BYOL,
//! SimSiam, MoCo, SwAV) run each view through, and that their EMA teachers
//! copy.
use crate::models::{build_encoder, EncoderConfig};
use selfsup_core::encoder::Encoder;
use selfsup_core::head::{HeadConfig, MlpHead};
use tch::{nn, Tensor};

/// `projector(encoder(x))`.
pub struct Branch {
    /// The encoder (what gets exported).
    pub encoder: Box<dyn Encoder>,
    /// The projection head on top of it.
    pub projector: MlpHead,
}

impl Branch {
    /// The encoder under `encoder_path`, then the projector under
    /// `projector_path` (built in that order: the order of the random draws).
    pub fn new(
        encoder_path: &nn::Path,
        projector_path: &nn::Path,
        encoder: &EncoderConfig,
        in_channels: i64,
        projector: &HeadConfig,
    ) -> Self {
        let encoder = build_encoder(encoder_path, encoder, in_channels);
        let projector = MlpHead::new(projector_path, encoder.out_dim(), projector);
        Self { encoder, projector }
    }

    /// The projected embedding of `xs`.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.encoder
            .forward_t(xs, train)
            .apply_t(&self.projector, train)
    }

    /// The encoder's representation of `xs`.
    pub fn embed(&self, xs: &Tensor, train: bool) -> Tensor {
        self.encoder.forward_t(xs, train)
    }
}
