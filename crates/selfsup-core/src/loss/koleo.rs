//! The KoLeo regulariser (Sablayrolles et al. 2019, "Spreading vectors for
//! similarity search"), as DINOv2 adds it to the student's class tokens:
//! the Kozachenko-Leonenko differential-entropy estimate of a batch,
//! up to constants, to be minimised.
//!
//! `loss = -mean_i log(||x_i - x_nn(i) + eps|| + eps)` with every `x`
//! l2-normalised (`eps = 1e-8`) and `nn(i)` the other sample of the batch
//! with the largest dot product (the nearest on the sphere). The
//! difference carries the `eps` as PyTorch's `PairwiseDistance` adds it.
//!
//! It pushes every sample away from its nearest neighbour: a batch that
//! collapses to one point has a loss of `-log(2e-8) ~ 17.7`; one spread
//! evenly has a low one.
use tch::{Kind, Tensor};

/// What keeps the norm, the distance and the logarithm finite.
const EPS: f64 = 1e-8;

/// The KoLeo loss of `x` `[n, d]` (`n >= 2`; fewer samples have no
/// neighbour and give 0). Runs in float32 whatever autocast says.
pub fn koleo(x: &Tensor) -> Tensor {
    crate::autocast::full_precision(|| {
        let x = x.to_kind(Kind::Float);
        let n = x.size()[0];
        if n < 2 {
            return x.sum(Kind::Float) * 0.0;
        }
        let x = &x
            / x.norm_scalaropt_dim(2, [-1i64].as_slice(), true)
                .clamp_min(EPS);
        let nearest = tch::no_grad(|| {
            let eye = Tensor::eye(n, (Kind::Bool, x.device()));
            // Below any cosine, so a sample is never its own neighbour.
            x.matmul(&x.tr()).masked_fill(&eye, -2.0).argmax(1, false)
        });
        let d = (&x - x.index_select(0, &nearest) + EPS).norm_scalaropt_dim(
            2,
            [-1i64].as_slice(),
            false,
        );
        -(d + EPS).log().mean(Kind::Float)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::test_fixture::{fixture, TEACHER};

    // PyTorch 2.11.0 (benchmarks/reference_dinov2_losses.py, written for
    // these tests from the formula above, not from selfsup):
    //   koleo(z1)                              -> -0.19300511479377747
    //   koleo(torch.cat([t0, t1]))  (8 x 5)    -> 0.5853352546691895
    #[test]
    fn matches_pytorch() {
        let (z1, _) = fixture();
        let l = koleo(&z1).double_value(&[]);
        assert!((l - -0.193_005_114_793_777_47).abs() < 1e-6, "{l}");
        let t = Tensor::from_slice(&TEACHER.concat()).reshape([8, 5]);
        let l = koleo(&t).double_value(&[]);
        assert!((l - 0.585_335_254_669_189_5).abs() < 1e-6, "{l}");
    }

    /// A collapsed batch is penalised far more than a spread one, and the
    /// gradient pushes the nearest samples apart.
    #[test]
    fn collapse_costs_and_the_gradient_spreads() {
        let same = Tensor::ones([6, 4], (Kind::Float, tch::Device::Cpu));
        let spread = Tensor::eye(4, (Kind::Float, tch::Device::Cpu));
        let (c, s) = (
            koleo(&same).double_value(&[]),
            koleo(&spread).double_value(&[]),
        );
        assert!(c > 15.0 && s < 0.0, "collapsed {c}, spread {s}");
        assert_eq!(
            koleo(&Tensor::ones([1, 4], (Kind::Float, tch::Device::Cpu))).double_value(&[]),
            0.0
        );
        let x = Tensor::from_slice(&[1.0f32, 0.0, 0.9, 0.1, 0.0, 1.0])
            .reshape([3, 2])
            .set_requires_grad(true);
        koleo(&x).backward();
        let g: Vec<f32> = Vec::try_from(x.grad().flatten(0, -1)).unwrap();
        // Descent moves sample 0 away from sample 1 (its nearest): -grad
        // has a negative second component for sample 0.
        assert!(g[1] > 0.0, "{g:?}");
    }
}
