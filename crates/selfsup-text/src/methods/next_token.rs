//! Next-token prediction (causal language modelling, GPT-style) on the core
//! design: the view is the packed sequence without its last position, the
//! target the same sequence shifted by one (`TargetKind::MaskedContent`:
//! the hidden content is every token's future), the loss cross-entropy over
//! every predicted position.
//!
//! The sequences are MLM's packing, `[CLS] body [SEP] [PAD]...`: position
//! `t` predicts token `t + 1` from tokens `0..=t`. What is predicted
//! ([`lm_labels`]) is every body token, `[SEP]`s between documents included;
//! padding and the `[SEP]` that packing appends to close every row (it says
//! "the row is full", not anything about the text) are not. The n-gram
//! baselines ([`crate::ngram`]) score exactly these targets.
use crate::masking::IGNORE;
use crate::model::{Gpt2, Gpt2Config};
use crate::packing::Packed;
use selfsup_core::distributed::Shard;
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::source::BatchSource;
use selfsup_core::target::TargetKind;
use selfsup_core::{Error, Result};
use std::sync::Arc;
use tch::{nn, Device, Kind, Tensor};

/// Next-token prediction with a GPT-2 decoder.
pub struct NextToken {
    vs: nn::VarStore,
    pub gpt: Gpt2,
}

/// Summed loss, correct top-1 predictions and predicted positions of a batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct NextTokenEval {
    pub loss_sum: f64,
    pub correct: i64,
    pub count: i64,
}

/// The labels of one packed row, aligned with its input `row[..L-1]`:
/// `labels[t] = row[t + 1]`, or [`IGNORE`] where `row[t + 1]` is padding or
/// the `[SEP]` that closes the row (the last token before the padding).
pub fn lm_labels(row: &[i64], pad_id: i64, sep_id: i64) -> Vec<i64> {
    let last = row.iter().rposition(|&t| t != pad_id);
    (1..row.len())
        .map(|t| {
            let closing = Some(t) == last && row[t] == sep_id;
            if row[t] == pad_id || closing {
                IGNORE
            } else {
                row[t]
            }
        })
        .collect()
}

/// Rows `rows` of `data` as a batch: `views[0]` the inputs `[B, L-1]`
/// (each row without its last position), `views[1]` their labels
/// ([`lm_labels`]).
pub fn causal_batch(data: &Packed, rows: &[usize], pad_id: i64, sep_id: i64) -> Batch {
    let l = data.max_len;
    let mut input = Vec::with_capacity(rows.len() * l);
    let mut labels = Vec::with_capacity(rows.len() * l);
    for &r in rows {
        let ids = data.row(r);
        input.extend_from_slice(&ids[..l - 1]);
        labels.extend(lm_labels(ids, pad_id, sep_id));
    }
    let shape = [rows.len() as i64, l as i64 - 1];
    Batch {
        views: vec![
            Tensor::from_slice(&input).view(shape),
            Tensor::from_slice(&labels).view(shape),
        ],
    }
}

/// The training batches of every epoch: the rows shuffled by `(seed,
/// epoch)`, the last incomplete batch dropped (as MLM's).
pub struct CausalBatches {
    data: Arc<Packed>,
    batch_size: usize,
    seed: u64,
    pad_id: i64,
    sep_id: i64,
    shard: Shard,
}

impl CausalBatches {
    /// Batches of `batch_size` rows of `data`.
    pub fn new(data: Arc<Packed>, batch_size: usize, seed: u64, pad_id: i64, sep_id: i64) -> Self {
        Self {
            data,
            batch_size,
            seed,
            pad_id,
            sep_id,
            shard: Shard::SINGLE,
        }
    }

    /// Yields only `shard`'s part of every global batch (data-parallel runs).
    pub fn with_shard(mut self, shard: Shard) -> Self {
        self.shard = shard;
        self
    }

    fn order(&self, epoch: usize) -> Vec<usize> {
        crate::packing::epoch_order(self.data.len(), self.seed, 0xCA05, epoch)
    }
}

impl BatchSource for CausalBatches {
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
            let rows = order.get(first..first + bs).ok_or_else(|| {
                Error::Data(format!(
                    "batch {b} of epoch {epoch} runs past the {} training sequences",
                    order.len()
                ))
            })?;
            Ok(causal_batch(&self.data, rows, self.pad_id, self.sep_id))
        }))
    }
}

impl NextToken {
    /// A freshly initialised model on `device`.
    pub fn new(cfg: &Gpt2Config, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let gpt = Gpt2::new(&vs.root(), cfg);
        Self { vs, gpt }
    }

    /// Logits `[N, V]` and labels `[N]` of the predicted positions of
    /// `(input, labels)`: the LM head runs on those positions only.
    pub fn predicted_logits(
        &self,
        input: &Tensor,
        labels: &Tensor,
        train: bool,
    ) -> (Tensor, Tensor) {
        let hidden = self.gpt.forward(input, train);
        let h = hidden.size()[2];
        let flat = labels.view([-1]);
        let idx = flat.ne(IGNORE).nonzero().squeeze_dim(1);
        let selected = hidden.view([-1, h]).index_select(0, &idx);
        (self.gpt.logits(&selected), flat.index_select(0, &idx))
    }

    /// Summed loss, correct and count for one batch (call under `no_grad`).
    pub fn evaluate(&self, batch: &Batch) -> NextTokenEval {
        let (logits, targets) = self.predicted_logits(&batch.views[0], &batch.views[1], false);
        let count = targets.size()[0];
        if count == 0 {
            return NextTokenEval::default();
        }
        let logits = logits.to_kind(Kind::Float);
        let loss =
            logits.cross_entropy_loss::<Tensor>(&targets, None, tch::Reduction::Sum, IGNORE, 0.0);
        NextTokenEval {
            loss_sum: loss.double_value(&[]),
            correct: logits
                .argmax(-1, false)
                .eq_tensor(&targets)
                .sum(Kind::Int64)
                .int64_value(&[]),
            count,
        }
    }

    /// Mean-pooled final hidden states over the non-padding tokens of `ids`.
    pub fn pooled(&self, ids: &Tensor, train: bool) -> Tensor {
        let hidden = self.gpt.forward(ids, train);
        let kind = hidden.kind();
        let m = ids
            .ne(self.gpt.cfg.pad_token_id)
            .to_kind(kind)
            .unsqueeze(-1);
        (hidden * &m).sum_dim_intlist(1, false, kind)
            / m.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0)
    }
}

impl Method for NextToken {
    fn name(&self) -> &'static str {
        "next_token"
    }

    fn target(&self) -> TargetKind {
        TargetKind::MaskedContent
    }

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    fn step(&mut self, batch: &Batch, _ctx: &StepCtx) -> Result<LossOut> {
        if batch.views.len() != 2 {
            return Err(Error::Config(format!(
                "next_token expects (input, labels) batches, got {} tensors",
                batch.views.len()
            )));
        }
        let (logits, targets) = self.predicted_logits(&batch.views[0], &batch.views[1], true);
        let n = targets.size()[0];
        if n == 0 {
            // Only padding (impossible with packing's rows): a zero loss that keeps the graph.
            return Ok(LossOut {
                loss: logits.sum(Kind::Float) * 0.0,
                terms: vec![("token_acc", 0.0), ("predicted_tokens", 0.0)],
            });
        }
        let loss = logits.to_kind(Kind::Float).cross_entropy_loss::<Tensor>(
            &targets,
            None,
            tch::Reduction::Mean,
            IGNORE,
            0.0,
        );
        let acc = tch::no_grad(|| {
            logits
                .argmax(-1, false)
                .eq_tensor(&targets)
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[])
        });
        Ok(LossOut {
            loss,
            terms: vec![("token_acc", acc), ("predicted_tokens", n as f64)],
        })
    }

    fn embed(&self, ids: &Tensor) -> Tensor {
        self.pooled(ids, false)
    }

    fn project(&self, ids: &Tensor) -> Tensor {
        self.pooled(ids, false)
    }
}
