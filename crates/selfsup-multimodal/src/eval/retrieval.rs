//! Image -> text and text -> image retrieval, Recall@1/5/10 (the COCO /
//! Flickr protocol CLIP reports): an image counts as retrieved at K when any
//! of its captions is among the K texts most similar to it; a caption when
//! its image is among the K most similar images.
//!
//! Ties count against the query: a rank is the number of *wrong* candidates
//! scoring at least as high as the best right one, so that a collapsed model
//! (every similarity equal) ranks every right answer last and scores 0 at
//! every K below the number of wrong candidates, never 100 %. A similarity
//! that is not a number never retrieves anything.
use serde::Serialize;
use tch::{Kind, Tensor};

/// The K of Recall@K.
pub const KS: [i64; 3] = [1, 5, 10];

/// Recall@1/5/10 in both directions, in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Recall {
    pub image_to_text: [f64; 3],
    pub text_to_image: [f64; 3],
}

/// Ranks (wrong candidates at or above the best right one) along `dim` of
/// `sim` where `right` marks the right candidates; `None` where a query has
/// no right candidate; `i64::MAX` where its best right score is NaN.
fn ranks(sim: &Tensor, right: &Tensor, dim: i64) -> Vec<Option<i64>> {
    let best = sim
        .masked_fill(&right.logical_not(), f64::NEG_INFINITY)
        .amax([dim].as_slice(), true);
    let above = sim
        .ge_tensor(&best)
        .logical_and(&right.logical_not())
        .sum_dim_intlist(dim, false, Kind::Int64);
    let has_right = right.any_dim(dim, false);
    let nan = best.squeeze_dim(dim).isnan();
    let as_vec = |t: Tensor| Vec::<i64>::try_from(t.to_kind(Kind::Int64)).unwrap_or_default();
    as_vec(above)
        .into_iter()
        .zip(as_vec(has_right))
        .zip(as_vec(nan))
        .map(|((r, has), nan)| match (has != 0, nan != 0) {
            (false, _) => None,
            (true, true) => Some(i64::MAX),
            (true, false) => Some(r),
        })
        .collect()
}

/// Recall of the similarity matrix `sim` `[images, texts]`; `text_image[j]`
/// is the image caption `j` describes (a caption naming no image of `sim`
/// counts as never retrieved). Images without a caption are left out of
/// image -> text.
pub fn recall_at_k(sim: &Tensor, text_image: &[i64]) -> Recall {
    let sim = sim.to_kind(Kind::Float).to_device(tch::Device::Cpu);
    let n_img = sim.size().first().copied().unwrap_or(0);
    if sim.numel() == 0 {
        return Recall {
            image_to_text: [0.0; 3],
            text_to_image: [0.0; 3],
        };
    }
    let idx = Tensor::from_slice(text_image);
    // right[i, j]: caption j describes image i.
    let right = Tensor::arange(n_img, (Kind::Int64, tch::Device::Cpu))
        .unsqueeze(1)
        .eq_tensor(&idx.unsqueeze(0));
    let i2t: Vec<i64> = ranks(&sim, &right, 1).into_iter().flatten().collect();
    let t2i: Vec<i64> = ranks(&sim, &right, 0)
        .into_iter()
        .map(|r| r.unwrap_or(i64::MAX))
        .collect();
    let frac = |ranks: &[i64], k: i64| {
        ranks.iter().filter(|&&r| r < k).count() as f64 / ranks.len().max(1) as f64
    };
    Recall {
        image_to_text: KS.map(|k| frac(&i2t, k)),
        text_to_image: KS.map(|k| frac(&t2i, k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four images, four captions; caption j describes image j, except that
    /// captions 2 and 3 both describe image 2 and image 3 has none.
    ///
    /// ```text
    ///            t0   t1   t2   t3
    /// image 0   0.9  0.1  0.3  0.2     i2t: t0 first          -> rank 0
    /// image 1   0.8  0.7  0.1  0.0     i2t: t1 second (t0)    -> rank 1
    /// image 2   0.2  0.9  0.1  0.5     i2t: t3 second (t1)    -> rank 1
    /// image 3   0.1  0.2  0.6  0.4     (no caption)
    /// ```
    /// text -> image: t0 -> image 0 first (rank 0); t1 -> image 1 is below
    /// image 2 (rank 1); t2 -> image 2 below images 0 and 3 and tied with
    /// image 1, which counts against it (rank 3); t3 -> image 2 first
    /// (rank 0).
    #[test]
    fn hand_made_matrix() {
        let sim = Tensor::from_slice(&[
            0.9f32, 0.1, 0.3, 0.2, 0.8, 0.7, 0.1, 0.0, 0.2, 0.9, 0.1, 0.5, 0.1, 0.2, 0.6, 0.4,
        ])
        .view([4, 4]);
        let r = recall_at_k(&sim, &[0, 1, 2, 2]);
        // i2t ranks 0, 1, 1 over the three captioned images.
        assert_eq!(r.image_to_text, [1.0 / 3.0, 1.0, 1.0]);
        // t2i ranks 0, 1, 3, 0.
        assert_eq!(r.text_to_image, [0.5, 1.0, 1.0]);
        let perfect = recall_at_k(
            &Tensor::eye(4, (Kind::Float, tch::Device::Cpu)),
            &[0, 1, 2, 3],
        );
        assert_eq!(perfect.image_to_text, [1.0; 3]);
        assert_eq!(perfect.text_to_image, [1.0; 3]);
        let reversed = Tensor::from_slice(&[
            0.0f32, 0.1, 0.2, 0.3, 0.1, 0.0, 0.3, 0.2, 0.2, 0.3, 0.0, 0.1, 0.3, 0.2, 0.1, 0.0,
        ])
        .view([4, 4]);
        let worst = recall_at_k(&reversed, &[0, 1, 2, 3]);
        assert_eq!(worst.image_to_text[0], 0.0);
        assert_eq!(worst.text_to_image[0], 0.0);
        assert_eq!(
            worst.text_to_image[1], 1.0,
            "4 candidates: every rank is below 5"
        );
    }

    /// A collapsed model: every similarity equal. Each right answer ranks
    /// below all wrong candidates: Recall@1 is 0 (not 1 / N, not 1), and
    /// Recall@K stays 0 while K is below the wrong candidates' count.
    #[test]
    fn equal_scores_rank_the_right_answer_last() {
        for n in [2i64, 4, 20] {
            let sim = Tensor::full([n, n], 0.5, (Kind::Float, tch::Device::Cpu));
            let idx: Vec<i64> = (0..n).collect();
            let r = recall_at_k(&sim, &idx);
            for (k, (&i2t, &t2i)) in KS.iter().zip(r.image_to_text.iter().zip(&r.text_to_image)) {
                let want = if n - 1 < *k { 1.0 } else { 0.0 };
                assert_eq!((i2t, t2i), (want, want), "n {n}, R@{k}");
            }
            assert_eq!(r.image_to_text[0], 0.0);
            assert_eq!(r.text_to_image[0], 0.0);
        }
        // Two captions of one image tied with a caption of another: the
        // wrong one counts above both (rank 1); the image's own two
        // captions never count against each other.
        let sim = Tensor::from_slice(&[0.7f32, 0.7, 0.7, 0.1, 0.2, 0.9]).view([2, 3]);
        let r = recall_at_k(&sim, &[0, 0, 1]);
        assert_eq!(r.image_to_text, [0.5, 1.0, 1.0]);
        // t0, t1 -> image 0 (0.7 above 0.1, 0.2): rank 0; t2 -> image 1
        // (0.9 above 0.7): rank 0.
        assert_eq!(r.text_to_image, [1.0; 3]);
    }

    /// NaN similarities retrieve nothing; a caption naming no image of the
    /// matrix counts as never retrieved; an empty matrix scores 0.
    #[test]
    fn nan_and_unknown_images_never_count_as_retrieved() {
        let sim = Tensor::from_slice(&[f32::NAN, 0.0, 0.0, 1.0]).view([2, 2]);
        let r = recall_at_k(&sim, &[0, 1]);
        assert_eq!(r.image_to_text, [0.5; 3]);
        assert_eq!(r.text_to_image, [0.5; 3]);
        let r = recall_at_k(&Tensor::eye(2, (Kind::Float, tch::Device::Cpu)), &[0, 7]);
        assert_eq!(r.text_to_image, [0.5; 3]);
        assert_eq!(r.image_to_text, [1.0; 3], "image 1 has no caption");
        let empty = Tensor::zeros([0, 0], (Kind::Float, tch::Device::Cpu));
        assert_eq!(recall_at_k(&empty, &[]).text_to_image, [0.0; 3]);
    }
}
