//! Image -> text and text -> image retrieval, Recall@1/5/10 (the COCO /
//! Flickr protocol CLIP reports): an image counts as retrieved at K when any
//! of its captions is among the K texts most similar to it; a caption when
//! its image is among the K most similar images. Ties count in the query's
//! favour (a rank is the number of strictly better candidates).
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

/// Recall of the similarity matrix `sim` `[images, texts]`; `text_image[j]`
/// is the image caption `j` describes. Images without a caption are left
/// out of image -> text.
pub fn recall_at_k(sim: &Tensor, text_image: &[i64]) -> Recall {
    let sim = sim.to_kind(Kind::Float).to_device(tch::Device::Cpu);
    let n_img = sim.size()[0];
    let idx = Tensor::from_slice(text_image);
    // text -> image: images scoring strictly above the right one, per text.
    let right = sim.gather(0, &idx.unsqueeze(0), false); // [1, T]
    let t2i_rank =
        Vec::<i64>::try_from(sim.gt_tensor(&right).sum_dim_intlist(0, false, Kind::Int64))
            .expect("ranks");
    // image -> text: rank of each caption in its image's row; an image's
    // rank is its best caption's.
    let rows = sim.index_select(0, &idx); // [T, T]
    let own = rows.diagonal(0, 0, 1).unsqueeze(1);
    let t_rank = Vec::<i64>::try_from(rows.gt_tensor(&own).sum_dim_intlist(1, false, Kind::Int64))
        .expect("ranks");
    let mut best = vec![i64::MAX; n_img as usize];
    for (j, &i) in text_image.iter().enumerate() {
        best[i as usize] = best[i as usize].min(t_rank[j]);
    }
    let captioned: Vec<i64> = best.into_iter().filter(|&r| r != i64::MAX).collect();
    let frac = |ranks: &[i64], k: i64| {
        ranks.iter().filter(|&&r| r < k).count() as f64 / ranks.len().max(1) as f64
    };
    Recall {
        image_to_text: KS.map(|k| frac(&captioned, k)),
        text_to_image: KS.map(|k| frac(&t2i_rank, k)),
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
    /// image 2 (rank 1); t2 -> image 2 below images 0 and 3 (rank 2);
    /// t3 -> image 2 first (rank 0).
    #[test]
    fn hand_made_matrix() {
        let sim = Tensor::from_slice(&[
            0.9f32, 0.1, 0.3, 0.2, 0.8, 0.7, 0.1, 0.0, 0.2, 0.9, 0.1, 0.5, 0.1, 0.2, 0.6, 0.4,
        ])
        .view([4, 4]);
        let r = recall_at_k(&sim, &[0, 1, 2, 2]);
        // i2t ranks 0, 1, 1 over the three captioned images.
        assert_eq!(r.image_to_text, [1.0 / 3.0, 1.0, 1.0]);
        // t2i ranks 0, 1, 2, 0.
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
}
