//! Similarity scores `a b^T` computed in float32 with autocast off.
//!
//! Under bfloat16 autocast a matrix product rounds its inputs and output to
//! 8 significant bits: a cosine similarity of 0.9 comes out as 0.8984 or
//! 0.9023, and divided by a small temperature (InfoNCE's 0.1, DINO's teacher
//! at 0.04, SwAV's Sinkhorn-Knopp at `exp(s / 0.05)`) that error becomes a
//! different target distribution (a few percent in SwAV's codes). Losses and
//! heads that divide similarities by a temperature take them from here.
use crate::autocast::full_precision;
use tch::{Kind, Tensor};

/// Rows scaled to unit l2 norm (in f32).
pub fn normalize(z: &Tensor) -> Tensor {
    let z = z.to_kind(Kind::Float);
    let norm = z.norm_scalaropt_dim(2.0, [1], true).clamp_min(1e-12);
    z / norm
}

/// `a [n, d] x b [m, d]^T -> [n, m]` in float32, whatever autocast says.
pub fn scores_f32(a: &Tensor, b: &Tensor) -> Tensor {
    full_precision(|| a.to_kind(Kind::Float).matmul(&b.to_kind(Kind::Float).tr()))
}

/// Cosine similarities `[n, m]` of the rows of `a` and `b`, in float32
/// whatever autocast says.
pub fn cosine_f32(a: &Tensor, b: &Tensor) -> Tensor {
    full_precision(|| scores_f32(&normalize(a), &normalize(b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::test_fixture::bf16;
    use tch::Device;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
            .abs()
            .max()
            .double_value(&[])
    }

    #[test]
    fn cosine_logits_under_autocast_are_the_f32_ones() {
        tch::manual_seed(3);
        let a = Tensor::randn([32, 64], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([48, 64], (Kind::Float, Device::Cpu));
        let t = 0.04;
        let exact = cosine_f32(&a, &b) / t;
        let under = bf16(|| cosine_f32(&a, &b) / t);
        assert_eq!(under.kind(), Kind::Float);
        let err = max_abs_diff(&under, &exact);
        assert!(err < 1e-4, "{err}");
        // The same product left to autocast is off by far more than that:
        // measured 0.05 (cosines in bf16 / 0.04).
        let naive = bf16(|| normalize(&a).matmul(&normalize(&b).tr()) / t);
        assert_eq!(naive.kind(), Kind::BFloat16);
        assert!(max_abs_diff(&naive, &exact) > 1e-2);
        let s = bf16(|| scores_f32(&a, &b));
        assert!(max_abs_diff(&s, &a.matmul(&b.tr())) < 1e-4);
    }
}
