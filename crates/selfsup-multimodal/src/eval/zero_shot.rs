//! Zero-shot classification (CLIP section 3.1.4): each class is the mean of
//! the normalised text embeddings of its prompts ("a photo of a {}", "an
//! emoji of {}"), renormalised; an image gets the class of the most similar
//! one. Prompts are token rows (see [`crate::captions`]).
use crate::eval::encode_texts;
use crate::model::ClipModel;
use selfsup_core::loss::info_nce::normalize as l2_normalize;
use tch::{Device, Kind, Tensor};

/// Class embeddings `[C, E]` (unit rows) from `prompts[c]`, the token rows
/// of class `c`'s prompts.
pub fn class_embeddings(
    model: &ClipModel,
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
/// nearest of `classes` `[C, E]` against `labels` `[N]`.
pub fn top1(images: &Tensor, classes: &Tensor, labels: &Tensor) -> f64 {
    images
        .matmul(&classes.tr())
        .argmax(1, false)
        .eq_tensor(labels)
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
}
