//! Zero-shot classification (CLIP section 3.1.4): each class is the mean of
//! the normalised text embeddings of its prompts ("a photo of a {}", "an
//! emoji of {}"), renormalised; an image gets the class of the most similar
//! one. Prompts are token rows (see [`crate::captions`]).
use crate::eval::encode_texts;
use crate::model::ClipModel;
use crate::tower::Tower;
use selfsup_core::loss::info_nce::normalize as l2_normalize;
use tch::{Device, Kind, Tensor};

/// Class embeddings `[C, E]` (unit rows) from `prompts[c]`, the token rows
/// of class `c`'s prompts.
pub fn class_embeddings<A: Tower>(
    model: &ClipModel<A>,
    prompts: &[Vec<Vec<i64>>],
    pad_id: i64,
    device: Device,
) -> Tensor {
    let rows: Vec<Tensor> = prompts
        .iter()
        .map(|p| {
            encode_texts(model, p, pad_id, device)
                .mean_dim(0, false, Kind::Float)
                .unsqueeze(0)
        })
        .collect();
    l2_normalize(&Tensor::cat(&rows, 0))
}

/// Top-1 accuracy of classifying `images` `[N, E]` (unit rows) by the
/// nearest of `classes` `[C, E]` against `labels` `[N]`. A tie counts
/// against the image: it is right only when its class scores strictly above
/// every other, so that a collapsed model (all scores equal) scores 0, not
/// the share of whichever class an argmax would pick first. A label outside
/// `0..C` and a NaN score are wrong.
pub fn top1(images: &Tensor, classes: &Tensor, labels: &Tensor) -> f64 {
    let n_classes = classes.size().first().copied().unwrap_or(0);
    let n = labels.numel();
    if n_classes == 0 || n == 0 {
        return 0.0;
    }
    let scores = images.matmul(&classes.tr()).to_kind(Kind::Float);
    let valid = labels.ge(0).logical_and(&labels.lt(n_classes));
    let safe = labels.clamp(0, n_classes - 1).unsqueeze(1);
    let own = scores.gather(1, &safe, false).squeeze_dim(1);
    let others = scores
        .scatter_value(1, &safe, f64::NEG_INFINITY)
        .amax([1i64].as_slice(), false);
    own.gt_tensor(&others)
        .logical_and(&valid)
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_class_wins() {
        let classes = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
        let images =
            l2_normalize(&Tensor::from_slice(&[0.9f32, 0.1, 0.2, 0.8, 0.6, 0.5]).view([3, 2]));
        let labels = Tensor::from_slice(&[0i64, 1, 1]);
        assert!((top1(&images, &classes, &labels) - 2.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn ties_count_against_the_image() {
        // Every score equal: no image is right (an argmax would give the
        // share of class 0, here 1 / 2).
        let classes = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.0]).view([2, 2]);
        let images = Tensor::from_slice(&[1.0f32, 0.0, 0.6, 0.8]).view([2, 2]);
        let labels = Tensor::from_slice(&[0i64, 1]);
        assert_eq!(top1(&images, &classes, &labels), 0.0);
        // One class: right unless its score is NaN; a label out of range is wrong.
        let one = Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]);
        let images = Tensor::from_slice(&[1.0f32, 0.0, f32::NAN, 0.0, 0.0, 1.0]).view([3, 2]);
        let labels = Tensor::from_slice(&[0i64, 0, 3]);
        assert!((top1(&images, &one, &labels) - 1.0 / 3.0).abs() < 1e-6);
    }
}
