//! Speech-text training batches: `(waveforms [B, L], lengths [B], ids
//! [B, T], attention [B, T])`: a random crop of each clip (at most `crop`
//! samples, normalised; zero-padded to the longest of the batch) and its
//! written form's token row, as a resumable [`BatchSource`].
//!
//! A batch never holds one written form twice when the epoch's clips allow
//! it: the same form spoken by two speakers in one batch would be a
//! negative of itself in the contrastive loss. Batches are filled in the
//! epoch's shuffled order, a clip whose form the batch already holds waits
//! for the next batch; once the clips run short, the last batches take what
//! is left. Randomness is a function of `(seed, epoch)` (the order) and
//! `(seed, epoch, position)` (each crop), so `epoch(e, start)` replays what
//! `epoch(e, 0)` yields from `start` on.
use crate::captions::pad_batch;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use selfsup_audio::batch::{collate, random_crop};
use selfsup_core::method::Batch;
use selfsup_core::source::BatchSource;
use selfsup_core::{Error, Result};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// Clip-text batches.
pub struct SpeechBatches {
    clips: Arc<Vec<Vec<f32>>>,
    /// Token row of each clip's written form.
    rows: Arc<Vec<Vec<i64>>>,
    /// Written-form index of each clip.
    form: Vec<usize>,
    crop: usize,
    batch: usize,
    seed: u64,
    pad_id: i64,
}

fn mix(a: u64, b: u64) -> u64 {
    (a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(17)
}

impl SpeechBatches {
    /// Batches of `batch` crops of at most `crop` samples; `rows[i]` and
    /// `form[i]` are clip `i`'s token row and form index.
    pub fn new(
        clips: Arc<Vec<Vec<f32>>>,
        rows: Arc<Vec<Vec<i64>>>,
        form: Vec<usize>,
        crop: usize,
        batch: usize,
        seed: u64,
        pad_id: i64,
    ) -> Result<Self> {
        if clips.len() != rows.len() || clips.len() != form.len() {
            return Err(Error::Config(format!(
                "speech batches: {} clips, {} token rows, {} form indices",
                clips.len(),
                rows.len(),
                form.len()
            )));
        }
        if batch < 2 || crop == 0 {
            return Err(Error::Config(format!(
                "speech batches: batch {batch} (at least 2) and crop {crop} samples (at least 1)"
            )));
        }
        Ok(Self {
            clips,
            rows,
            form,
            crop,
            batch,
            seed,
            pad_id,
        })
    }

    /// The clips of each batch of `epoch`.
    pub fn plan(&self, epoch: usize) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.clips.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(self.seed, epoch as u64)));
        let mut pending: VecDeque<usize> = order.into();
        let mut out = Vec::with_capacity(self.batches_per_epoch());
        for _ in 0..self.batches_per_epoch() {
            let mut cur = Vec::with_capacity(self.batch);
            let mut used = HashSet::new();
            let mut waiting = Vec::new();
            while cur.len() < self.batch {
                let Some(i) = pending.pop_front() else { break };
                if used.insert(self.form[i]) {
                    cur.push(i);
                } else {
                    waiting.push(i);
                }
            }
            // The clips ran short of new forms: the batch takes repeats.
            let fill = (self.batch - cur.len()).min(waiting.len());
            cur.extend(waiting.drain(..fill));
            for &i in waiting.iter().rev() {
                pending.push_front(i);
            }
            out.push(cur);
        }
        out
    }

    fn make(&self, epoch: usize, index: usize, clips: &[usize]) -> Batch {
        let crops: Vec<Vec<f32>> = clips
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let pos = (index * self.batch + k) as u64;
                let mut rng = ChaCha8Rng::seed_from_u64(mix(mix(self.seed, epoch as u64 + 1), pos));
                random_crop(&self.clips[i], self.crop, &mut rng)
            })
            .collect();
        let (wave, lengths) = collate(&crops);
        let rows: Vec<&[i64]> = clips.iter().map(|&i| self.rows[i].as_slice()).collect();
        let (ids, att) = pad_batch(&rows, self.pad_id);
        Batch {
            views: vec![wave, lengths, ids, att],
        }
    }
}

impl BatchSource for SpeechBatches {
    fn batches_per_epoch(&self) -> usize {
        self.clips.len() / self.batch
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    fn epoch(&self, epoch: usize, start: usize) -> Box<dyn Iterator<Item = Result<Batch>> + '_> {
        let plan = self.plan(epoch);
        Box::new(
            plan.into_iter()
                .enumerate()
                .skip(start)
                .map(move |(i, clips)| Ok(self.make(epoch, i, &clips))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn source(forms: &[usize], batch: usize) -> SpeechBatches {
        let clips: Vec<Vec<f32>> = (0..forms.len())
            .map(|i| (0..500 + 10 * i).map(|k| (k as f32 * 0.1).sin()).collect())
            .collect();
        let rows: Vec<Vec<i64>> = forms.iter().map(|&f| vec![2, 4 + f as i64, 3]).collect();
        SpeechBatches::new(
            Arc::new(clips),
            Arc::new(rows),
            forms.to_vec(),
            400,
            batch,
            5,
            0,
        )
        .unwrap()
    }

    /// Forms 0..4, each spoken three times: batches of 4 never repeat a form,
    /// every clip is used once per epoch, and epochs differ.
    #[test]
    fn batches_hold_distinct_forms_and_resume_exactly() {
        let forms: Vec<usize> = (0..12).map(|i| i % 4).collect();
        let s = source(&forms, 4);
        assert_eq!(s.batches_per_epoch(), 3);
        let plan = s.plan(0);
        let mut all: Vec<usize> = plan.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..12).collect::<Vec<_>>());
        for b in &plan {
            let distinct: HashSet<usize> = b.iter().map(|&i| forms[i]).collect();
            assert_eq!(distinct.len(), 4, "{b:?}");
        }
        assert_ne!(s.plan(0), s.plan(1));
        let whole: Vec<Batch> = s.epoch(2, 0).map(|b| b.unwrap()).collect();
        let tail: Vec<Batch> = s.epoch(2, 1).map(|b| b.unwrap()).collect();
        assert_eq!(tail.len(), 2);
        for (a, b) in whole[1..].iter().zip(&tail) {
            for (x, y) in a.views.iter().zip(&b.views) {
                assert!(x.equal(y));
            }
        }
        let b = &whole[0];
        assert_eq!(b.views[0].size(), [4, 400]);
        assert_eq!(b.views[1].kind(), Kind::Int64);
        assert_eq!(b.views[2].size(), [4, 3]);
    }

    /// One form only: the batches must take repeats rather than stop.
    #[test]
    fn repeats_fill_a_batch_when_nothing_else_is_left() {
        let s = source(&[0, 0, 0, 0, 1], 2);
        let plan = s.plan(0);
        assert_eq!(plan.len(), 2);
        assert!(plan.iter().all(|b| b.len() == 2));
    }
}
