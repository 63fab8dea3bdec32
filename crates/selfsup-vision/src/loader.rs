//! Batches of augmented views, reproducible and resumable, prepared in the
//! background while the model trains.
//!
//! Epoch `e` visits the images in a permutation drawn from a [`ChaCha8Rng`]
//! seeded with `seed ^ e * 0x9E3779B97F4A7C15`. The sample at position `p` of
//! the epoch is augmented with its own generator (key from `(seed, e)`,
//! stream `p`), so a batch depends only on `(seed, e, batch index)`: not on
//! thread scheduling, not on where the epoch was started.
use crate::augment::{Augmenter, Scratch};
use crate::data::{ImageDataset, OwnedF32};
use crate::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use selfsup_core::distributed::Shard;
use selfsup_core::method::Batch;
use selfsup_core::source::BatchSource;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use tch::Tensor;

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
/// Separates the augmentation keys from the permutation seeds.
const AUGMENT_SALT: u64 = 0xA076_1D64_78BD_642F;
/// Separates the keys of [`ViewLoader::views_of`] from the epochs'.
const FIXED_VIEWS_SALT: u64 = 0xE703_7ED1_A0B4_28DB;

/// SplitMix64 finaliser: spreads nearby seeds over the whole key space.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator of the sample at `position` under `key`.
fn sample_rng(key: u64, position: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(key);
    rng.set_stream(position);
    rng
}

/// Everything a batch is built from; shared with the prefetch thread.
struct Shared {
    data: Arc<ImageDataset>,
    aug: Augmenter,
}

impl Shared {
    /// The views of the images `indices`, the first at epoch position
    /// `first_pos`, augmented under `key`. Stops early (returning `None`)
    /// when `stop` is raised.
    fn build(
        &self,
        indices: &[usize],
        key: u64,
        first_pos: u64,
        stop: Option<&AtomicBool>,
    ) -> Option<Batch> {
        let (aug, data) = (&self.aug, &*self.data);
        let (b, c) = (indices.len(), aug.channels());
        let sizes = aug.view_sizes();
        let globals = aug.config().views;
        // The views are written straight into the tensors' storage.
        let mut tensors: Vec<OwnedF32> = sizes
            .iter()
            .map(|&s| OwnedF32::zeros(&[b as i64, c as i64, s as i64, s as i64]))
            .collect();
        let mut slots: Vec<Vec<&mut [f32]>> =
            (0..b).map(|_| Vec::with_capacity(sizes.len())).collect();
        for (buf, &s) in tensors.iter_mut().map(OwnedF32::as_mut_slice).zip(&sizes) {
            for (slot, chunk) in slots.iter_mut().zip(buf.chunks_exact_mut(c * s * s)) {
                slot.push(chunk);
            }
        }
        let (h, w) = (data.height, data.width);
        slots
            .into_par_iter()
            .zip(indices.par_iter())
            .enumerate()
            .for_each_init(Scratch::default, |scratch, (j, (mut views, &idx))| {
                if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                    return;
                }
                let mut rng = sample_rng(key, first_pos + j as u64);
                let img = data.image(idx);
                for (i, v) in views.iter_mut().enumerate() {
                    aug.augment_view_into(img, h, w, &mut rng, i >= globals, v, scratch);
                }
            });
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            return None;
        }
        Some(Batch {
            views: tensors.into_iter().map(OwnedF32::into_tensor).collect(),
        })
    }
}

/// The [`BatchSource`] of the vision methods: shuffled, augmented,
/// prefetched batches of `views_per_image` views of a dataset.
///
/// `views[v]` of every batch is a `[B, C, S, S]` f32 CPU tensor.
pub struct ViewLoader {
    shared: Arc<Shared>,
    batch_size: usize,
    seed: u64,
    drop_last: bool,
    prefetch: usize,
    shard: Shard,
}

impl ViewLoader {
    /// A loader of `batch_size` images per batch (at least 1), dropping the
    /// incomplete last batch, prefetching 3 batches.
    ///
    /// # Panics
    /// When the augmenter's channel count differs from the dataset's (see
    /// [`ViewLoader::try_new`]).
    pub fn new(
        data: Arc<ImageDataset>,
        augmenter: Augmenter,
        batch_size: usize,
        seed: u64,
    ) -> Self {
        match Self::try_new(data, augmenter, batch_size, seed) {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`ViewLoader::new`], with an error when the augmenter does not fit
    /// the dataset.
    pub fn try_new(
        data: Arc<ImageDataset>,
        augmenter: Augmenter,
        batch_size: usize,
        seed: u64,
    ) -> Result<Self> {
        if augmenter.channels() != data.channels {
            return Err(Error::Config(format!(
                "{}: the augmentation expects {}-channel images, the dataset has {} channels",
                data.name,
                augmenter.channels(),
                data.channels
            )));
        }
        Ok(Self {
            shared: Arc::new(Shared {
                data,
                aug: augmenter,
            }),
            batch_size: batch_size.max(1),
            seed,
            drop_last: true,
            prefetch: 3,
            shard: Shard::SINGLE,
        })
    }

    /// Whether the incomplete last batch of an epoch is dropped (default `true`).
    pub fn with_drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Yields only `shard`'s part of every global batch (data-parallel runs:
    /// see [`Shard`]); incomplete global batches are dropped.
    pub fn with_shard(mut self, shard: Shard) -> Self {
        self.shard = shard;
        self
    }

    /// How many finished batches may wait for the consumer (at least 1, default 3).
    pub fn with_prefetch(mut self, depth: usize) -> Self {
        self.prefetch = depth.max(1);
        self
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<ImageDataset> {
        &self.shared.data
    }

    /// The augmentation pipeline.
    pub fn augmenter(&self) -> &Augmenter {
        &self.shared.aug
    }

    /// The seed of the run.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The order in which epoch `epoch` visits the dataset.
    pub fn permutation(&self, epoch: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.shared.data.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ (epoch as u64).wrapping_mul(GOLDEN));
        idx.shuffle(&mut rng);
        idx
    }

    fn augment_key(&self, epoch: usize) -> u64 {
        mix(self.seed ^ (epoch as u64).wrapping_mul(GOLDEN) ^ AUGMENT_SALT)
    }

    /// Positions `[start, end)` of batch `index` within an epoch.
    fn batch_range(&self, index: usize) -> (usize, usize) {
        let start = self.shard.batch_start(index, self.batch_size);
        (start, (start + self.batch_size).min(self.shared.data.len()))
    }

    /// Batch `index` of epoch `epoch`, built on the calling thread (with
    /// rayon); the same batch [`BatchSource::epoch`] yields.
    pub fn batch(&self, epoch: usize, index: usize) -> Result<Batch> {
        if index >= self.batches_per_epoch() {
            return Err(Error::Config(format!(
                "batch {index} of an epoch of {} batches",
                self.batches_per_epoch()
            )));
        }
        let perm = self.permutation(epoch);
        let (a, b) = self.batch_range(index);
        self.shared
            .build(&perm[a..b], self.augment_key(epoch), a as u64, None)
            .ok_or_else(|| Error::Loader("batch construction stopped".into()))
    }

    /// The views of the images `indices` (in that order), augmented with
    /// generators drawn from `seed` alone: the fixed inputs of the collapse
    /// monitors. Returns `views_per_image` tensors of shape `[n, C, S, S]`
    /// (`S` the side of each view: full-size views first, then local crops).
    pub fn views_of(&self, indices: &[usize], seed: u64) -> Vec<Tensor> {
        let key = mix(seed ^ FIXED_VIEWS_SALT);
        match self.shared.build(indices, key, 0, None) {
            Some(b) => b.views,
            None => Vec::new(),
        }
    }
}

impl BatchSource for ViewLoader {
    fn batches_per_epoch(&self) -> usize {
        let n = self.shared.data.len();
        if self.drop_last || self.shard.world_size > 1 {
            self.shard.batches(n, self.batch_size)
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn epoch(
        &self,
        epoch: usize,
        start: usize,
    ) -> Box<dyn Iterator<Item = selfsup_core::Result<Batch>> + '_> {
        let total = self.batches_per_epoch();
        if start >= total {
            return Box::new(std::iter::empty());
        }
        let (tx, rx) = sync_channel::<Batch>(self.prefetch);
        let stop = Arc::new(AtomicBool::new(false));
        let shared = self.shared.clone();
        let perm = self.permutation(epoch);
        let key = self.augment_key(epoch);
        let ranges: Vec<(usize, usize)> = (start..total).map(|i| self.batch_range(i)).collect();
        let thread_stop = stop.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("selfsup-loader-e{epoch}"))
            .spawn(move || {
                for (a, b) in ranges {
                    if thread_stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Some(batch) = shared.build(&perm[a..b], key, a as u64, Some(&thread_stop))
                    else {
                        return;
                    };
                    if tx.send(batch).is_err() {
                        return; // the consumer is gone
                    }
                }
            });
        match spawned {
            Ok(handle) => Box::new(Prefetch {
                rx: Some(rx),
                handle: Some(handle),
                stop,
                remaining: total - start,
            }),
            Err(e) => Box::new(std::iter::once(Err(Error::Loader(format!(
                "cannot start the loader thread: {e}"
            ))
            .into()))),
        }
    }
}

/// The consumer end of the prefetch thread.
struct Prefetch {
    rx: Option<Receiver<Batch>>,
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    remaining: usize,
}

impl Prefetch {
    /// Why the thread ended before sending every batch.
    fn failure(&mut self) -> String {
        match self.handle.take().map(JoinHandle::join) {
            Some(Err(panic)) => {
                let msg = selfsup_core::error::panic_message(panic.as_ref())
                    .unwrap_or_else(|| "unknown panic".into());
                format!("the batch thread panicked: {msg}")
            }
            _ => "the batch thread stopped before the end of the epoch".into(),
        }
    }
}

impl Iterator for Prefetch {
    type Item = selfsup_core::Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        match self.rx.as_ref()?.recv() {
            Ok(batch) => {
                self.remaining -= 1;
                Some(Ok(batch))
            }
            Err(_) => {
                self.remaining = 0;
                self.rx = None;
                Some(Err(Error::Loader(self.failure()).into()))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Raise the flag, hang up (a blocked send fails), wait for the thread:
        // it exits within one sample.
        self.stop.store(true, Ordering::Relaxed);
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::AugmentConfig;
    use crate::data::Normalize;
    use rand::Rng;
    use std::time::{Duration, Instant};

    fn dataset(n: usize, side: usize, c: usize) -> Arc<ImageDataset> {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let pixels = (0..n * side * side * c).map(|_| rng.gen()).collect();
        Arc::new(
            ImageDataset::new("rand", side, side, c, pixels, Some(vec![0; n]), vec![]).unwrap(),
        )
    }

    fn loader(n: usize, c: usize, batch: usize, seed: u64) -> ViewLoader {
        let aug =
            Augmenter::new(AugmentConfig::default(), c, 16, Normalize::for_channels(c)).unwrap();
        ViewLoader::new(dataset(n, 16, c), aug, batch, seed)
    }

    fn same(a: &Batch, b: &Batch) -> bool {
        a.views.len() == b.views.len() && a.views.iter().zip(&b.views).all(|(x, y)| x.equal(y))
    }

    #[test]
    fn batch_shapes() {
        let l = loader(50, 3, 8, 0);
        assert_eq!(l.batches_per_epoch(), 6);
        let batches: Vec<Batch> = l.epoch(0, 0).map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 6);
        for b in &batches {
            assert_eq!(b.views.len(), 2);
            for v in &b.views {
                assert_eq!(v.size(), vec![8, 3, 16, 16]);
                assert_eq!(v.kind(), tch::Kind::Float);
                assert_eq!(v.device(), tch::Device::Cpu);
            }
            assert!(!b.views[0].equal(&b.views[1]));
        }
        let keep = loader(50, 1, 8, 0).with_drop_last(false);
        assert_eq!(keep.batches_per_epoch(), 7);
        let last = keep.epoch(0, 6).next().unwrap().unwrap();
        assert_eq!(last.views[0].size(), vec![2, 1, 16, 16]);
    }

    #[test]
    fn shards_together_are_the_single_process_batch() {
        let single: Vec<Batch> = loader(50, 3, 8, 5)
            .epoch(1, 0)
            .map(|b| b.unwrap())
            .collect();
        let shard = |rank| {
            loader(50, 3, 4, 5).with_shard(Shard {
                rank,
                world_size: 2,
            })
        };
        let (r0, r1) = (shard(0), shard(1));
        assert_eq!(r0.batches_per_epoch(), single.len());
        let b0: Vec<Batch> = r0.epoch(1, 0).map(|b| b.unwrap()).collect();
        let b1: Vec<Batch> = r1.epoch(1, 1).map(|b| b.unwrap()).collect();
        assert_eq!(b1.len(), single.len() - 1);
        for v in 0..2 {
            let joined = Tensor::cat(&[&b0[1].views[v], &b1[0].views[v]], 0);
            assert!(joined.equal(&single[1].views[v]), "view {v}");
        }
    }

    #[test]
    fn same_seed_same_batches() {
        let a: Vec<Batch> = loader(40, 1, 8, 7)
            .epoch(1, 0)
            .map(|b| b.unwrap())
            .collect();
        let b: Vec<Batch> = loader(40, 1, 8, 7)
            .epoch(1, 0)
            .map(|b| b.unwrap())
            .collect();
        let c: Vec<Batch> = loader(40, 1, 8, 8)
            .epoch(1, 0)
            .map(|b| b.unwrap())
            .collect();
        assert!(a.iter().zip(&b).all(|(x, y)| same(x, y)));
        assert!(!same(&a[0], &c[0]));
        // Epochs differ from each other.
        let e2: Vec<Batch> = loader(40, 1, 8, 7)
            .epoch(2, 0)
            .map(|b| b.unwrap())
            .collect();
        assert!(!same(&a[0], &e2[0]));
        // The permutation is a permutation.
        let mut p = loader(40, 1, 8, 7).permutation(3);
        p.sort();
        assert_eq!(p, (0..40).collect::<Vec<_>>());
    }

    #[test]
    fn resume_from_any_batch() {
        let l = loader(45, 3, 6, 3);
        let full: Vec<Batch> = l.epoch(2, 0).map(|b| b.unwrap()).collect();
        assert_eq!(full.len(), 7);
        for k in [1, 4, 6] {
            let tail: Vec<Batch> = l.epoch(2, k).map(|b| b.unwrap()).collect();
            assert_eq!(tail.len(), full.len() - k);
            assert!(
                tail.iter().zip(&full[k..]).all(|(x, y)| same(x, y)),
                "start {k}"
            );
        }
        assert!(same(&l.batch(2, 5).unwrap(), &full[5]));
        assert_eq!(l.epoch(2, 7).count(), 0);
        assert!(l.batch(2, 7).is_err());
    }

    #[test]
    fn dropping_early_returns_promptly() {
        let aug =
            Augmenter::new(AugmentConfig::default(), 3, 64, Normalize::for_channels(3)).unwrap();
        let l = ViewLoader::new(dataset(2000, 64, 3), aug, 64, 0).with_prefetch(2);
        for take in [0, 1, 3] {
            let t = Instant::now();
            let mut it = l.epoch(0, 0);
            for _ in 0..take {
                it.next().unwrap().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20)); // let the thread block on a full channel
            drop(it);
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "drop after {take} batches took {:?}",
                t.elapsed()
            );
        }
    }

    #[test]
    fn fixed_views_for_monitors() {
        let l = loader(30, 1, 8, 0);
        let a = l.views_of(&[0, 5, 9], 99);
        let b = l.views_of(&[0, 5, 9], 99);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].size(), vec![3, 1, 16, 16]);
        assert!(a.iter().zip(&b).all(|(x, y)| x.equal(y)));
        assert!(!a[0].equal(&l.views_of(&[0, 5, 9], 100)[0]));
    }

    #[test]
    fn channel_mismatch_is_an_error() {
        let aug =
            Augmenter::new(AugmentConfig::default(), 3, 16, Normalize::for_channels(3)).unwrap();
        assert!(ViewLoader::try_new(dataset(4, 16, 1), aug, 2, 0).is_err());
    }
}
