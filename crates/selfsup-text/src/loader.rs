//! Batches of masked sequences for the trainer: a [`BatchSource`] whose
//! order and masks are functions of `(seed, epoch, index)`.
//!
//! A batch carries three tensors as its views: `[0]` the masked input ids,
//! `[1]` the attention mask (1 = token, 0 = padding), `[2]` the labels
//! (`-100` where nothing is predicted).
use crate::masking::{mask_sequence, MaskingConfig, Vocabulary};
use crate::packing::Packed;
use crate::tokenizer::TextTokenizer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use selfsup_core::distributed::Shard;
use selfsup_core::method::Batch;
use selfsup_core::source::BatchSource;
use selfsup_core::Result;
use std::sync::Arc;
use tch::Tensor;

/// Vocabulary facts the masking needs, owned.
#[derive(Debug, Clone)]
pub struct MaskVocab {
    pub mask_id: i64,
    pub pad_id: i64,
    pub is_special: Vec<bool>,
    pub is_continuation: Vec<bool>,
    pub normal_ids: Vec<i64>,
}

impl MaskVocab {
    pub fn of(tok: &TextTokenizer) -> Self {
        let normal_ids = (0..tok.vocab_size as i64)
            .filter(|&i| !tok.is_special[i as usize])
            .collect();
        Self {
            mask_id: tok.mask_id,
            pad_id: tok.pad_id,
            is_special: tok.is_special.clone(),
            is_continuation: tok.is_continuation.clone(),
            normal_ids,
        }
    }

    fn view(&self) -> Vocabulary<'_> {
        Vocabulary {
            mask_id: self.mask_id,
            is_special: &self.is_special,
            is_continuation: &self.is_continuation,
            normal_ids: &self.normal_ids,
        }
    }
}

/// The masked batches of every epoch.
pub struct MlmBatches {
    data: Arc<Packed>,
    vocab: Arc<MaskVocab>,
    masking: MaskingConfig,
    batch_size: usize,
    seed: u64,
    shard: Shard,
}

/// Masks rows `rows` of `data` with the generator of `(seed, epoch, row)`
/// and stacks them into a batch.
pub fn masked_batch(
    data: &Packed,
    vocab: &MaskVocab,
    masking: &MaskingConfig,
    rows: &[usize],
    seed: u64,
    epoch: u64,
) -> Batch {
    let l = data.max_len;
    let mut input = Vec::with_capacity(rows.len() * l);
    let mut attn = Vec::with_capacity(rows.len() * l);
    let mut labels = Vec::with_capacity(rows.len() * l);
    let v = vocab.view();
    for &r in rows {
        let ids = data.row(r);
        let mut rng = ChaCha8Rng::seed_from_u64(
            seed ^ (epoch << 40) ^ (r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let (inp, lab) = mask_sequence(ids, &v, masking, &mut rng);
        input.extend(inp);
        labels.extend(lab);
        attn.extend(ids.iter().map(|&t| i64::from(t != vocab.pad_id)));
    }
    let shape = [rows.len() as i64, l as i64];
    Batch {
        views: vec![
            Tensor::from_slice(&input).view(shape),
            Tensor::from_slice(&attn).view(shape),
            Tensor::from_slice(&labels).view(shape),
        ],
    }
}

impl MlmBatches {
    pub fn new(
        data: Arc<Packed>,
        vocab: Arc<MaskVocab>,
        masking: MaskingConfig,
        batch_size: usize,
        seed: u64,
    ) -> Self {
        Self {
            data,
            vocab,
            masking,
            batch_size,
            seed,
            shard: Shard::SINGLE,
        }
    }

    /// Yields only `shard`'s part of every global batch (data-parallel runs).
    pub fn with_shard(mut self, shard: Shard) -> Self {
        self.shard = shard;
        self
    }

    fn order(&self, epoch: usize) -> Vec<usize> {
        crate::packing::epoch_order(self.data.len(), self.seed, 0x5EED, epoch)
    }
}

impl BatchSource for MlmBatches {
    fn batches_per_epoch(&self) -> usize {
        self.shard.batches(self.data.len(), self.batch_size)
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn epoch(&self, epoch: usize, start: usize) -> Box<dyn Iterator<Item = Result<Batch>> + '_> {
        let order = self.order(epoch);
        let n = self.batches_per_epoch();
        let bs = self.batch_size;
        Box::new((start..n).map(move |b| {
            let first = self.shard.batch_start(b, bs);
            let rows = &order[first..first + bs];
            Ok(masked_batch(
                &self.data,
                &self.vocab,
                &self.masking,
                rows,
                self.seed,
                epoch as u64,
            ))
        }))
    }
}
