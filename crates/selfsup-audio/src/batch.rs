//! Pre-training batches: a random fixed-length crop of each clip (seeded by
//! `(seed, epoch, index)`), normalised to zero mean and unit variance,
//! zero-padded to the longest crop of the batch. A batch is the two tensors
//! `[waveforms [B, L] f32, lengths [B] i64]`; [`attention_mask`] turns the
//! lengths into the mask transformers calls `attention_mask`.
use crate::normalize::zero_mean_unit_var;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use selfsup_core::method::Batch;
use selfsup_core::source::BatchSource;
use selfsup_core::Result;
use std::sync::Arc;
use tch::{Kind, Tensor};

/// A crop of at most `len` samples of `samples`, at an offset drawn from
/// `rng`, normalised (a shorter clip is taken whole).
pub fn random_crop(samples: &[f32], len: usize, rng: &mut impl Rng) -> Vec<f32> {
    let start = if samples.len() > len {
        rng.gen_range(0..=samples.len() - len)
    } else {
        0
    };
    let mut crop = samples[start..(start + len).min(samples.len())].to_vec();
    zero_mean_unit_var(&mut crop);
    crop
}

/// Pads `crops` with zeros to the longest: `(waveforms [B, L], lengths [B])`.
pub fn collate(crops: &[Vec<f32>]) -> (Tensor, Tensor) {
    let max = crops.iter().map(Vec::len).max().unwrap_or(0);
    let mut flat = vec![0.0f32; crops.len() * max];
    for (row, c) in flat.chunks_mut(max.max(1)).zip(crops) {
        row[..c.len()].copy_from_slice(c);
    }
    let lengths: Vec<i64> = crops.iter().map(|c| c.len() as i64).collect();
    (
        Tensor::from_slice(&flat).view([crops.len() as i64, max as i64]),
        Tensor::from_slice(&lengths),
    )
}

/// `[B, L]` boolean mask, true on the first `lengths[b]` positions of row `b`.
pub fn attention_mask(lengths: &Tensor, len: i64) -> Tensor {
    Tensor::arange(len, (Kind::Int64, lengths.device()))
        .unsqueeze(0)
        .lt_tensor(&lengths.unsqueeze(1))
}

/// Random crops of a clip set, as a resumable [`BatchSource`].
pub struct CropBatches {
    clips: Arc<Vec<Vec<f32>>>,
    crop: usize,
    batch: usize,
    seed: u64,
}

impl CropBatches {
    /// Batches of `batch` crops of at most `crop` samples.
    pub fn new(clips: Arc<Vec<Vec<f32>>>, crop: usize, batch: usize, seed: u64) -> Self {
        Self {
            clips,
            crop,
            batch,
            seed,
        }
    }

    /// Number of clips.
    pub fn len(&self) -> usize {
        self.clips.len()
    }

    /// Whether there is no clip.
    pub fn is_empty(&self) -> bool {
        self.clips.is_empty()
    }

    fn order(&self, epoch: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.clips.len()).collect();
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(
            self.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        ));
        idx
    }

    /// The batch at position `b` of `epoch`.
    pub fn batch_at(&self, order: &[usize], epoch: usize, b: usize) -> Batch {
        let crops: Vec<Vec<f32>> = (b * self.batch..(b + 1) * self.batch)
            .map(|i| {
                let key = self.seed ^ 0xA0D1_0000 ^ ((epoch as u64) << 32) ^ i as u64;
                let mut rng = ChaCha8Rng::seed_from_u64(key);
                random_crop(&self.clips[order[i]], self.crop, &mut rng)
            })
            .collect();
        let (wave, lengths) = collate(&crops);
        Batch {
            views: vec![wave, lengths],
        }
    }
}

impl BatchSource for CropBatches {
    fn batches_per_epoch(&self) -> usize {
        self.clips.len() / self.batch.max(1)
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    fn epoch(&self, epoch: usize, start: usize) -> Box<dyn Iterator<Item = Result<Batch>> + '_> {
        let order = self.order(epoch);
        Box::new(
            (start..self.batches_per_epoch()).map(move |b| Ok(self.batch_at(&order, epoch, b))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_are_seeded_padded_and_masked() {
        let clips: Vec<Vec<f32>> = (0..6)
            .map(|i| {
                (0..(500 + 400 * i))
                    .map(|t| (t as f32 * 0.1).sin())
                    .collect()
            })
            .collect();
        let src = CropBatches::new(Arc::new(clips), 1000, 3, 7);
        assert_eq!(src.batches_per_epoch(), 2);
        let a: Vec<Batch> = src.epoch(1, 0).map(Result::unwrap).collect();
        let b: Vec<Batch> = src.epoch(1, 1).map(Result::unwrap).collect();
        assert!(
            a[1].views[0].equal(&b[0].views[0]),
            "resume replays the epoch"
        );
        let c: Vec<Batch> = src.epoch(2, 0).map(Result::unwrap).collect();
        assert!(!a[0].views[0].equal(&c[0].views[0]));
        for batch in &a {
            let lens = Vec::<i64>::try_from(&batch.views[1]).unwrap();
            assert!(lens.iter().all(|&l| (500..=1000).contains(&l)));
            let l = batch.views[0].size()[1];
            assert_eq!(l, *lens.iter().max().unwrap());
            let mask = attention_mask(&batch.views[1], l);
            let outside = batch.views[0].masked_select(&mask.logical_not());
            assert_eq!(outside.abs().sum(Kind::Float).double_value(&[]), 0.0);
            for (row, &len) in lens.iter().enumerate() {
                let valid = batch.views[0].get(row as i64).narrow(0, 0, len);
                assert!(valid.mean(Kind::Float).double_value(&[]).abs() < 1e-4);
                assert!((valid.var(false).double_value(&[]) - 1.0).abs() < 1e-3);
            }
        }
    }
}
