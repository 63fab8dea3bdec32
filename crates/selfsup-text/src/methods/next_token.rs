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

/// Logits the training step's head computes at once ([`head_loss`]): about
/// 2 M floats (8 MB), so each chunk's buffer comes back from the heap every
/// step instead of being mapped and zeroed afresh, as a `[N, V]` one
/// (66 MB at batch 16, vocabulary 8192) is.
pub const HEAD_CHUNK_ELEMENTS: i64 = 1 << 21;

/// The LM head's mean cross-entropy ([`head_loss`]).
pub struct HeadLoss {
    /// Its value is the mean cross-entropy; backward through it gives the
    /// cross-entropy's gradients with respect to the hidden states and the
    /// head's weight.
    pub loss: Tensor,
    /// Positions whose target has the highest logit (a tie counts).
    pub correct: i64,
}

/// Mean cross-entropy of the logits `hidden @ weight^T` (`hidden` `[N, H]`,
/// `weight` `[V, H]`, `N > 0`) against `targets` `[N]` (all in
/// `0..V`), computed as one fused pass over chunks of
/// `chunk_elements / V` rows instead of autograd's log-softmax and NLL
/// over the whole `[N, V]`: per chunk the logits, their row maximum (top-1
/// accuracy for free: the target's logit reaches it), their exponentials in
/// place, and from those the gradient of the loss with respect to the
/// logits, `(softmax - onehot) / N`, turned at once into the gradients of
/// `hidden` (`dL/dlogits @ weight`) and `weight` (`dL/dlogits^T @
/// hidden`) without being written out. The returned loss is a surrogate,
/// `sum(hidden * dL/dhidden) + sum(weight * dL/dweight)` shifted to the
/// cross-entropy's value, so backward hands autograd exactly those
/// gradients. Float32 throughout (autocast off).
pub fn head_loss(
    hidden: &Tensor,
    weight: &Tensor,
    targets: &Tensor,
    chunk_elements: i64,
) -> HeadLoss {
    let n = targets.size()[0];
    let v = weight.size()[0];
    let rows = (chunk_elements / v.max(1)).max(1);
    let scale = 1.0 / n.max(1) as f64;
    let (grad_hidden, grad_weight, loss_sum, correct) = tch::no_grad(|| {
        selfsup_core::autocast::full_precision(|| {
            let x = hidden.detach().to_kind(Kind::Float);
            let w = weight.detach().to_kind(Kind::Float);
            let t = targets.view([-1, 1]);
            let device = x.device();
            let mut grad_weight = w.zeros_like();
            let mut grad_hidden = Vec::new();
            let mut loss_sum = Tensor::zeros([1], (Kind::Float, device));
            let mut correct = Tensor::zeros([1], (Kind::Int64, device));
            let mut start = 0;
            while start < n {
                let len = rows.min(n - start);
                let (xc, tc) = (x.narrow(0, start, len), t.narrow(0, start, len));
                let mut p = xc.matmul(&w.tr());
                let max = p.amax([-1i64].as_slice(), true);
                let picked = p.gather(1, &tc, false);
                correct += picked.ge_tensor(&max).sum(Kind::Int64);
                let _ = p.g_sub_(&max).exp_();
                let sum = p.sum_dim_intlist([-1i64].as_slice(), true, Kind::Float);
                loss_sum += (sum.log() + &max - &picked).sum(Kind::Float);
                // dL/dlogits = (p / sum - onehot) / n, never written out:
                // the row scale goes on the small operands, the one-hot
                // part is a gather / scatter of rows.
                let inv = (sum * n as f64).reciprocal();
                let tf = tc.view([-1]);
                grad_hidden.push(p.matmul(&w) * &inv - w.index_select(0, &tf) * scale);
                let _ = grad_weight.addmm_(&p.tr(), &(&xc * &inv));
                let _ = grad_weight.index_add_(0, &tf, &(&xc * -scale));
                start += len;
            }
            (
                Tensor::cat(&grad_hidden, 0),
                grad_weight,
                loss_sum.double_value(&[0]),
                correct.int64_value(&[0]),
            )
        })
    });
    let surrogate = (hidden.to_kind(Kind::Float) * grad_hidden).sum(Kind::Float)
        + (weight.to_kind(Kind::Float) * grad_weight).sum(Kind::Float);
    let loss = &surrogate - surrogate.detach() + loss_sum * scale;
    HeadLoss { loss, correct }
}

impl NextToken {
    /// A freshly initialised model on `device`.
    pub fn new(cfg: &Gpt2Config, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let gpt = Gpt2::new(&vs.root(), cfg);
        Self { vs, gpt }
    }

    /// Final hidden states `[N, H]` and labels `[N]` of the predicted
    /// positions of `(input, labels)`: the LM head runs on those only.
    pub fn predicted_hidden(
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
        (selected, flat.index_select(0, &idx))
    }

    /// Logits `[N, V]` and labels `[N]` of the predicted positions of
    /// `(input, labels)` ([`NextToken::predicted_hidden`]).
    pub fn predicted_logits(
        &self,
        input: &Tensor,
        labels: &Tensor,
        train: bool,
    ) -> (Tensor, Tensor) {
        let (selected, targets) = self.predicted_hidden(input, labels, train);
        (self.gpt.logits(&selected), targets)
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
        let (hidden, targets) = self.predicted_hidden(&batch.views[0], &batch.views[1], true);
        let n = targets.size()[0];
        if n == 0 {
            // Only padding (impossible with packing's rows): a zero loss that keeps the graph.
            return Ok(LossOut {
                loss: hidden.sum(Kind::Float) * 0.0,
                terms: vec![("token_acc", 0.0), ("predicted_tokens", 0.0)],
            });
        }
        let head = head_loss(
            &hidden,
            self.gpt.head_weight(),
            &targets,
            HEAD_CHUNK_ELEMENTS,
        );
        Ok(LossOut {
            loss: head.loss,
            terms: vec![
                ("token_acc", head.correct as f64 / n as f64),
                ("predicted_tokens", n as f64),
            ],
        })
    }

    fn embed(&self, ids: &Tensor) -> Tensor {
        self.pooled(ids, false)
    }

    fn project(&self, ids: &Tensor) -> Tensor {
        self.pooled(ids, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused head against autograd's cross-entropy on the full logits:
    /// the same loss, the same gradients for the hidden states and the
    /// weight, the same top-1 count; chunks that do not divide the rows.
    #[test]
    fn head_loss_matches_cross_entropy_and_its_gradients() {
        tch::manual_seed(3);
        let (n, h, v) = (37, 16, 50);
        let hidden =
            (Tensor::randn([n, h], (Kind::Float, Device::Cpu)) * 2.0).set_requires_grad(true);
        let weight = Tensor::randn([v, h], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let logits = hidden.matmul(&weight.tr());
        // A third of the targets are the top logit, the rest random.
        let top = logits.argmax(-1, false);
        let random = Tensor::randint(v, [n], (Kind::Int64, Device::Cpu));
        let first = Tensor::arange(n, (Kind::Int64, Device::Cpu)).lt(n / 3);
        let targets = top.where_self(&first, &random);
        let reference =
            logits.cross_entropy_loss::<Tensor>(&targets, None, tch::Reduction::Mean, IGNORE, 0.0);
        let grads = Tensor::run_backward(&[&reference], &[&hidden, &weight], false, false);
        let correct = i64::try_from(
            logits
                .argmax(-1, false)
                .eq_tensor(&targets)
                .sum(Kind::Int64),
        )
        .unwrap();
        assert!(
            correct > 0 && correct < n,
            "a test that can tell: {correct} of {n}"
        );
        for chunk in [8 * v, 50 * v, 1, 1 << 21] {
            let head = head_loss(&hidden, &weight, &targets, chunk);
            let diff = (&head.loss - &reference).abs().double_value(&[]);
            assert!(diff < 1e-5, "chunk {chunk}: loss off by {diff}");
            assert_eq!(head.correct, correct, "chunk {chunk}");
            let fused = Tensor::run_backward(&[&head.loss], &[&hidden, &weight], false, false);
            for (k, (a, b)) in fused.iter().zip(&grads).enumerate() {
                let err = (a - b).abs().max().double_value(&[]);
                let size = b.abs().max().double_value(&[]);
                assert!(
                    size > 1e-4 && err < 1e-6,
                    "chunk {chunk}, grad {k}: {err} of {size}"
                );
            }
        }
    }
}
