//! Training and measuring the classifier: the head alone on frozen
//! features (a linear probe), then encoder and head end to end, and the
//! accuracy on held-out images.
use crate::data::Labelled;
use crate::model::Classifier;
use selfsup_vision::embed::VisionEmbedder;
use selfsup_vision::tch::nn::{self, OptimizerConfig};
use selfsup_vision::tch::{self, Kind, Tensor};
use std::error::Error;

/// Weight decay of both optimisers (AdamW).
const WEIGHT_DECAY: f64 = 1e-4;
/// Images per batch when only measuring.
const EVAL_BATCH: usize = 256;

/// How a training phase goes.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Passes over the training images.
    pub epochs: usize,
    /// Learning rate (of the encoder; the head gets ten times more).
    pub lr: f64,
    /// Images per step.
    pub batch_size: usize,
    /// Seeds the order of every epoch.
    pub seed: u64,
}

/// The batches of one epoch: a seeded shuffle of `0..n` cut into
/// `batch_size` pieces; a last piece of one image is dropped (batch norm
/// cannot train on it).
fn batches(n: usize, batch_size: usize, seed: u64) -> Vec<Vec<i64>> {
    let order: Vec<i64> = crate::data::shuffled(n, seed)
        .into_iter()
        .map(|i| i as i64)
        .collect();
    order
        .chunks(batch_size)
        .filter(|b| b.len() > 1)
        .map(<[i64]>::to_vec)
        .collect()
}

fn labels_of(data: &Labelled, idx: &[i64]) -> Tensor {
    let l: Vec<i64> = idx.iter().map(|&i| data.labels[i as usize]).collect();
    Tensor::from_slice(&l)
}

fn input_of(emb: &VisionEmbedder, data: &Labelled, idx: &[i64]) -> Tensor {
    let images: Vec<Vec<u8>> = idx
        .iter()
        .map(|&i| data.images[i as usize].clone())
        .collect();
    emb.input(&images)
}

/// Frozen features `[N, D]` of every image (batch norms in eval mode).
fn frozen_features(model: &Classifier, emb: &VisionEmbedder, data: &Labelled) -> Tensor {
    let parts: Vec<Tensor> = data
        .images
        .chunks(EVAL_BATCH)
        .map(|chunk| tch::no_grad(|| model.features(&emb.input(chunk), false)))
        .collect();
    Tensor::cat(&parts, 0)
}

/// Trains the head alone on the frozen encoder's features; returns the
/// last epoch's mean loss.
pub fn train_head(
    model: &Classifier,
    emb: &VisionEmbedder,
    data: &Labelled,
    s: Schedule,
) -> Result<f64, Box<dyn Error>> {
    let features = frozen_features(model, emb, data);
    let mut opt = nn::AdamW {
        wd: WEIGHT_DECAY,
        ..Default::default()
    }
    .build(&model.head_vs, 10.0 * s.lr)?;
    let mut last = f64::NAN;
    for epoch in 0..s.epochs {
        let (mut sum, mut steps) = (0.0, 0);
        for idx in batches(data.images.len(), s.batch_size, s.seed + epoch as u64) {
            let rows = Tensor::from_slice(&idx);
            let logits = model.head(&features.index_select(0, &rows));
            let loss = logits.cross_entropy_for_logits(&labels_of(data, &idx));
            opt.backward_step(&loss);
            sum += loss.double_value(&[]);
            steps += 1;
        }
        last = sum / steps.max(1) as f64;
    }
    Ok(last)
}

/// Trains encoder and head end to end for one epoch (`epoch` seeds its
/// order); returns its mean loss.
pub fn finetune_epoch(
    model: &Classifier,
    emb: &VisionEmbedder,
    data: &Labelled,
    s: Schedule,
    opts: &mut (nn::Optimizer, nn::Optimizer),
    epoch: usize,
) -> f64 {
    let (mut sum, mut steps) = (0.0, 0);
    for idx in batches(
        data.images.len(),
        s.batch_size,
        s.seed + (1 << 32) + epoch as u64,
    ) {
        let logits = model.head(&model.features(&input_of(emb, data, &idx), true));
        let loss = logits.cross_entropy_for_logits(&labels_of(data, &idx));
        opts.0.zero_grad();
        opts.1.zero_grad();
        loss.backward();
        opts.0.step();
        opts.1.step();
        sum += loss.double_value(&[]);
        steps += 1;
    }
    sum / steps.max(1) as f64
}

/// The encoder's and the head's optimisers for fine-tuning.
pub fn optimizers(
    model: &Classifier,
    s: Schedule,
) -> Result<(nn::Optimizer, nn::Optimizer), Box<dyn Error>> {
    let adamw = nn::AdamW {
        wd: WEIGHT_DECAY,
        ..Default::default()
    };
    Ok((
        adamw.build(&model.encoder_vs, s.lr)?,
        adamw.build(&model.head_vs, 10.0 * s.lr)?,
    ))
}

/// Share of `data` the classifier gets right (batch norms in eval mode).
pub fn accuracy(model: &Classifier, emb: &VisionEmbedder, data: &Labelled) -> f64 {
    let mut correct = 0i64;
    for (images, labels) in data
        .images
        .chunks(EVAL_BATCH)
        .zip(data.labels.chunks(EVAL_BATCH))
    {
        let predicted = tch::no_grad(|| {
            model
                .head(&model.features(&emb.input(images), false))
                .argmax(-1, false)
        });
        correct += predicted
            .eq_tensor(&Tensor::from_slice(labels))
            .sum(Kind::Int64)
            .int64_value(&[]);
    }
    correct as f64 / data.labels.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_image_once_and_drop_a_lone_last_one() {
        let b = batches(10, 3, 5);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 3, 3]);
        let mut seen: Vec<i64> = b.concat();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 9);
        assert_eq!(batches(10, 3, 5), b);
        assert_eq!(batches(8, 4, 0).len(), 2);
    }
}
