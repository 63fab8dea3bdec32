//! iBOT's masked-patch self-distillation loss (Zhou et al. 2022,
//! arXiv:2111.07832), as DINOv2 uses it: for every patch masked in the
//! student's input, cross-entropy between the teacher's distribution on
//! that (unmasked) patch and the student's on the masked one.
//!
//! `loss = (1 / n_images) sum_m w_m * -sum_k T_mk log_softmax(S_m / tau_s)_k`
//!
//! over the masked patches `m` of all images, `w_m = 1 / (patches masked
//! in m's image)`: each masked image weighs the same however many patches
//! it lost, and `n_images` counts every image of the batch, masked or not
//! (DINOv2 masks only some). The teacher's distributions `T` come centred
//! and sharpened (see [`crate::loss::DinoLoss::teacher_targets`]).
use tch::{Kind, Tensor};

/// The iBOT patch loss with student temperature `student_temp`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IbotPatchLoss {
    /// Student softmax temperature (DINOv2: 0.1).
    pub student_temp: f64,
}

impl IbotPatchLoss {
    /// The loss of the student's logits on the masked patches `[M, K]`
    /// against the teacher's distributions `[M, K]` (no gradient), each
    /// patch weighted by `weights` `[M]`, over `n_images` images.
    pub fn loss(
        &self,
        student: &Tensor,
        teacher: &Tensor,
        weights: &Tensor,
        n_images: usize,
    ) -> Tensor {
        crate::autocast::full_precision(|| {
            let logp =
                (student.to_kind(Kind::Float) / self.student_temp).log_softmax(-1, Kind::Float);
            let ce = -(teacher.to_kind(Kind::Float).detach() * logp).sum_dim_intlist(
                [-1i64].as_slice(),
                false,
                Kind::Float,
            );
            (ce * weights.to_kind(Kind::Float)).sum(Kind::Float) / n_images.max(1) as f64
        })
    }

    /// `1 / (masked patches of its image)` for every masked patch, in the
    /// order of `mask` `[B, N]` (bool) read row by row.
    pub fn weights(mask: &Tensor) -> Tensor {
        let per_image = mask
            .to_kind(Kind::Float)
            .sum_dim_intlist([1i64].as_slice(), true, Kind::Float)
            .clamp_min(1.0);
        let w = (mask.ones_like().to_kind(Kind::Float) / per_image).expand_as(mask);
        w.masked_select(mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::test_fixture::{STUDENT, TEACHER};

    // PyTorch 2.11.0 (benchmarks/reference_dinov2_losses.py):
    //   s = student view 0 rows 0..3, t = softmax(teacher view 0 rows 0..3 / 0.04),
    //   w = [1/2, 1/2, 1] (image 0 lost 2 patches, image 1 one), 3 images:
    //   -(w * (t * F.log_softmax(s / 0.1, -1)).sum(-1)).sum() / 3  -> 10.173870086669922
    #[test]
    fn matches_pytorch() {
        let s = Tensor::from_slice(&STUDENT[0][..15]).reshape([3, 5]);
        let t =
            (Tensor::from_slice(&TEACHER[0][..15]).reshape([3, 5]) / 0.04).softmax(-1, Kind::Float);
        let mask = Tensor::from_slice(&[true, true, false, false, true, false]).reshape([2, 3]);
        let w = IbotPatchLoss::weights(&mask);
        let got: Vec<f32> = Vec::try_from(&w).unwrap();
        assert_eq!(got, vec![0.5, 0.5, 1.0]);
        let l = IbotPatchLoss { student_temp: 0.1 }
            .loss(&s, &t, &w, 3)
            .double_value(&[]);
        assert!((l - 10.173_870_086_669_922).abs() < 1e-4, "{l}");
    }
}
