//! Negative cosine similarity between a prediction and a target
//! (SimSiam, Chen & He 2020, arXiv:2011.10566; BYOL, Grill et al. 2020,
//! arXiv:2006.07733, whose `2 - 2 cos` is `2 + 2 * this`).
//!
//! The caller decides what carries gradient: SimSiam and BYOL pass a target
//! computed under `no_grad` or `detach`ed (the stop-gradient); SimSiam's
//! "no stop-gradient" ablation passes it with its graph.
//!
//! ```
//! use selfsup_core::loss::NegativeCosine;
//! let p = tch::Tensor::from_slice(&[1.0f32, 0.0]).reshape([1, 2]);
//! let l = NegativeCosine.loss(&p, &p);
//! assert!((l.double_value(&[]) + 1.0).abs() < 1e-6);
//! ```
use tch::{Kind, Tensor};

/// `-mean_i cos(p_i, z_i)`, in `[-1, 1]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NegativeCosine;

impl NegativeCosine {
    /// The loss of predictions `p` against targets `z` (both `[n, d]`).
    pub fn loss(&self, p: &Tensor, z: &Tensor) -> Tensor {
        -Tensor::cosine_similarity(&p.to_kind(Kind::Float), &z.to_kind(Kind::Float), 1, 1e-8)
            .mean(Kind::Float)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::test_fixture::fixture;

    // PyTorch 2.11.0: -F.cosine_similarity(z1, z2, dim=1).mean()  -> -0.9560644626617432
    #[test]
    fn matches_pytorch() {
        let (z1, z2) = fixture();
        let l = NegativeCosine.loss(&z1, &z2).double_value(&[]);
        assert!((l + 0.956_064_462_661_743_2).abs() < 1e-6, "{l}");
        let sym = NegativeCosine.loss(&z2, &z1).double_value(&[]);
        assert!((l - sym).abs() < 1e-7);
    }
}
