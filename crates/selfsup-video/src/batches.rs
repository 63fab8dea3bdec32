//! Clips as a resumable [`BatchSource`]: every epoch a seeded permutation,
//! every clip its own augmentation draw from `(seed, epoch, position)`.
//! A batch is one view `[B, 1, T, S, S]`.
use crate::augment::{render, AugmentConfig, ClipParams};
use crate::clips::VideoSet;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use selfsup_core::method::Batch;
use selfsup_core::source::BatchSource;
use selfsup_core::Result;
use std::sync::Arc;
use tch::Tensor;

/// Augmented clip batches.
pub struct VideoBatches {
    set: Arc<VideoSet>,
    frames: usize,
    batch: usize,
    seed: u64,
    augment: AugmentConfig,
}

impl VideoBatches {
    /// Batches of `batch` windows of `frames` frames of the clips in `set`.
    pub fn new(
        set: Arc<VideoSet>,
        frames: usize,
        batch: usize,
        seed: u64,
        augment: AugmentConfig,
    ) -> Self {
        Self {
            set,
            frames,
            batch,
            seed,
            augment,
        }
    }

    fn order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.set.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(
            self.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x51DE0,
        ));
        order
    }

    fn batch_at(&self, epoch: usize, b: usize, order: &[usize]) -> Batch {
        let (size, frames) = (self.set.size, self.frames);
        let mut data = Vec::with_capacity(self.batch * frames * size * size);
        let range = b * self.batch..(b + 1) * self.batch;
        for (pos, &i) in order.iter().enumerate().take(range.end).skip(range.start) {
            let clip = &self.set.clips[i];
            let mut rng = ChaCha8Rng::seed_from_u64(
                self.seed
                    ^ (epoch as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)
                    ^ (pos as u64).wrapping_mul(0x94D0_49BB_1331_11EB),
            );
            let p = ClipParams::draw(&self.augment, clip.frames, frames, size, &mut rng);
            render(clip, size, frames, &p, &mut data);
        }
        let view = Tensor::from_slice(&data).view([
            self.batch as i64,
            1,
            frames as i64,
            size as i64,
            size as i64,
        ]);
        Batch { views: vec![view] }
    }
}

impl BatchSource for VideoBatches {
    fn batches_per_epoch(&self) -> usize {
        self.set.len() / self.batch.max(1)
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    fn epoch(&self, epoch: usize, start: usize) -> Box<dyn Iterator<Item = Result<Batch>> + '_> {
        let order = self.order(epoch);
        Box::new(
            (start..self.batches_per_epoch()).map(move |b| Ok(self.batch_at(epoch, b, &order))),
        )
    }
}

/// The first `frames` frames of the clips `idx` of `set`, unaugmented:
/// `[len, 1, T, S, S]`.
pub fn plain_clips(set: &VideoSet, idx: &[usize], frames: usize) -> Tensor {
    let size = set.size;
    let mut data = Vec::with_capacity(idx.len() * frames * size * size);
    let p = ClipParams::plain(size);
    for &i in idx {
        if let Some(clip) = set.clips.get(i) {
            render(clip, size, frames, &p, &mut data);
        }
    }
    let n = (data.len() / (frames * size * size).max(1)) as i64;
    Tensor::from_slice(&data).view([n, 1, frames as i64, size as i64, size as i64])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clips::Clip;

    fn set(n: usize) -> Arc<VideoSet> {
        Arc::new(VideoSet {
            size: 8,
            clips: (0..n)
                .map(|i| Clip {
                    frames: 6,
                    pixels: vec![(i * 10) as u8; 6 * 64],
                })
                .collect(),
            names: (0..n).map(|i| i.to_string()).collect(),
        })
    }

    #[test]
    fn epochs_are_reproducible_and_resume_mid_epoch() {
        let src = VideoBatches::new(set(10), 4, 3, 9, AugmentConfig::default());
        assert_eq!(src.batches_per_epoch(), 3);
        let all: Vec<Tensor> = src
            .epoch(1, 0)
            .map(|b| b.unwrap().views[0].copy())
            .collect();
        let tail: Vec<Tensor> = src
            .epoch(1, 1)
            .map(|b| b.unwrap().views[0].copy())
            .collect();
        assert_eq!(all[0].size(), vec![3, 1, 4, 8, 8]);
        assert_eq!(tail.len(), 2);
        assert!(all[1].equal(&tail[0]) && all[2].equal(&tail[1]));
        let other: Vec<Tensor> = src
            .epoch(2, 0)
            .map(|b| b.unwrap().views[0].copy())
            .collect();
        assert!(!all[0].equal(&other[0]));
        let plain = plain_clips(&src.set, &[2, 0], 4);
        assert_eq!(plain.size(), vec![2, 1, 4, 8, 8]);
        let v = plain.double_value(&[0, 0, 3, 5, 5]);
        assert!((v - (20.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6, "{v}");
    }
}
