//! Training batches of pairs: `(augmented images [B, 3, S, S], caption ids
//! [B, L], attention [B, L])`, one caption per image drawn at random from
//! its captions, as a resumable [`BatchSource`]. An epoch visits every image
//! once (so one image never meets itself as a negative in a batch).
//!
//! Randomness is a function of `(seed, epoch)` (the order) and `(seed, epoch,
//! position)` (each image's view and caption), so `epoch(e, start)` replays
//! exactly what `epoch(e, 0)` yields from `start` on.
use crate::captions::pad_batch;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use selfsup_core::method::Batch;
use selfsup_core::source::BatchSource;
use selfsup_core::Result;
use selfsup_vision::augment::{Augmenter, Scratch};
use selfsup_vision::data::ImageDataset;
use std::sync::Arc;
use tch::Tensor;

/// Image-caption batches.
pub struct PairBatches {
    images: Arc<ImageDataset>,
    /// Token rows of each image's captions.
    tokens: Arc<Vec<Vec<Vec<i64>>>>,
    augmenter: Augmenter,
    batch_size: usize,
    seed: u64,
    pad_id: i64,
}

fn mix(a: u64, b: u64) -> u64 {
    (a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(17)
}

impl PairBatches {
    /// Batches of `batch_size` over `images` (square, the augmenter's input
    /// and output size) and their caption token rows.
    pub fn new(
        images: Arc<ImageDataset>,
        tokens: Arc<Vec<Vec<Vec<i64>>>>,
        augmenter: Augmenter,
        batch_size: usize,
        seed: u64,
        pad_id: i64,
    ) -> Self {
        assert_eq!(images.len(), tokens.len(), "one caption list per image");
        Self {
            images,
            tokens,
            augmenter,
            batch_size,
            seed,
            pad_id,
        }
    }

    /// The image order of `epoch`.
    pub fn permutation(&self, epoch: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..self.images.len()).collect();
        p.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(self.seed, epoch as u64)));
        p
    }

    /// Batch `index` of `epoch` given that epoch's order.
    fn batch(&self, epoch: usize, index: usize, order: &[usize]) -> Batch {
        let b = self.batch_size;
        let positions = index * b..(index + 1) * b;
        let (s, c) = (self.images.height, self.images.channels);
        let per = self.augmenter.view_len();
        let mut pixels = vec![0f32; b * per];
        let picks: Vec<usize> = pixels
            .par_chunks_mut(per)
            .zip(positions.into_par_iter())
            .map_init(Scratch::default, |scratch, (out, pos)| {
                let i = order[pos];
                let mut rng =
                    ChaCha8Rng::seed_from_u64(mix(mix(self.seed, epoch as u64 + 1), pos as u64));
                self.augmenter
                    .augment_into(self.images.image(i), s, s, &mut rng, out, scratch);
                rng.gen_range(0..self.tokens[i].len())
            })
            .collect();
        let rows: Vec<&[i64]> = (index * b..(index + 1) * b)
            .zip(&picks)
            .map(|(pos, &k)| self.tokens[order[pos]][k].as_slice())
            .collect();
        let (ids, att) = pad_batch(&rows, self.pad_id);
        let out = self.augmenter.out_size() as i64;
        let images = Tensor::from_slice(&pixels).view([b as i64, c as i64, out, out]);
        Batch {
            views: vec![images, ids, att],
        }
    }
}

impl BatchSource for PairBatches {
    fn batches_per_epoch(&self) -> usize {
        self.images.len() / self.batch_size.max(1)
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn epoch(&self, epoch: usize, start: usize) -> Box<dyn Iterator<Item = Result<Batch>> + '_> {
        let order = self.permutation(epoch);
        Box::new((start..self.batches_per_epoch()).map(move |i| Ok(self.batch(epoch, i, &order))))
    }
}
