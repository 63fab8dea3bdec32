//! BERT's masked language modelling on the core design: the view is the
//! masked sequence (`masking.rs`), the target the original tokens at the
//! selected positions (`TargetKind::MaskedContent`), the loss cross-entropy
//! over those positions only. The MLM head runs on the selected positions
//! alone (about 15% of the tokens), not on every position.
use crate::masking::IGNORE;
use crate::model::{Bert, BertConfig};
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::{Error, Result};
use tch::{nn, Device, Kind, Tensor};

/// Masked language modelling with a BERT encoder.
pub struct Mlm {
    vs: nn::VarStore,
    pub bert: Bert,
    pad_id: i64,
}

/// Loss and accuracy of a batch (what validation reports).
#[derive(Debug, Clone, Copy, Default)]
pub struct MlmEval {
    /// Sum of the cross-entropy over the predicted positions.
    pub loss_sum: f64,
    /// Correct top-1 predictions.
    pub correct: i64,
    /// Predicted positions.
    pub count: i64,
}

impl Mlm {
    /// A freshly initialised model on `device`.
    pub fn new(cfg: &BertConfig, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let bert = Bert::new(&vs.root(), cfg);
        Self {
            vs,
            bert,
            pad_id: cfg.pad_token_id,
        }
    }

    /// Logits and labels of the selected positions of a batch of
    /// `(input, attention, labels)`.
    pub fn masked_logits(
        &self,
        input: &Tensor,
        attention: &Tensor,
        labels: &Tensor,
        train: bool,
    ) -> (Tensor, Tensor) {
        let padded = attention.eq(0).any().int64_value(&[]) != 0;
        let hidden = self.bert.forward(input, padded.then_some(attention), train);
        let h = hidden.size()[2];
        let flat = labels.view([-1]);
        let idx = flat.ne(IGNORE).nonzero().squeeze_dim(1);
        let selected = hidden.view([-1, h]).index_select(0, &idx);
        (self.bert.mlm_logits(&selected), flat.index_select(0, &idx))
    }

    /// Summed loss, correct and count for one batch (no gradient needed).
    pub fn evaluate(&self, batch: &Batch) -> MlmEval {
        let (logits, targets) =
            self.masked_logits(&batch.views[0], &batch.views[1], &batch.views[2], false);
        if targets.size()[0] == 0 {
            return MlmEval::default();
        }
        let loss = logits.to_kind(Kind::Float).cross_entropy_loss::<Tensor>(
            &targets,
            None,
            tch::Reduction::Sum,
            IGNORE,
            0.0,
        );
        MlmEval {
            loss_sum: loss.double_value(&[]),
            correct: logits
                .argmax(-1, false)
                .eq_tensor(&targets)
                .sum(Kind::Int64)
                .int64_value(&[]),
            count: targets.size()[0],
        }
    }

    /// Mean-pooled final hidden states over the non-padding tokens of `ids`.
    pub fn pooled(&self, ids: &Tensor, train: bool) -> Tensor {
        let attention = ids.ne(self.pad_id);
        let hidden = self.bert.forward(ids, Some(&attention), train);
        let kind = hidden.kind();
        let m = attention.to_kind(kind).unsqueeze(-1);
        (hidden * &m).sum_dim_intlist(1, false, kind)
            / m.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0)
    }
}

impl Method for Mlm {
    fn name(&self) -> &'static str {
        "mlm"
    }

    fn target(&self) -> TargetKind {
        TargetKind::MaskedContent
    }

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    fn step(&mut self, batch: &Batch, _ctx: &StepCtx) -> Result<LossOut> {
        if batch.views.len() != 3 {
            return Err(Error::Config(format!(
                "mlm expects (input, attention, labels) batches, got {} tensors",
                batch.views.len()
            )));
        }
        let (logits, targets) =
            self.masked_logits(&batch.views[0], &batch.views[1], &batch.views[2], true);
        let n = targets.size()[0];
        let loss = if n == 0 {
            // Nothing selected (possible on tiny inputs): a zero loss that keeps the graph.
            logits.sum(Kind::Float) * 0.0
        } else {
            logits.to_kind(Kind::Float).cross_entropy_loss::<Tensor>(
                &targets,
                None,
                tch::Reduction::Mean,
                IGNORE,
                0.0,
            )
        };
        let acc = if n == 0 {
            0.0
        } else {
            tch::no_grad(|| {
                logits
                    .argmax(-1, false)
                    .eq_tensor(&targets)
                    .to_kind(Kind::Float)
                    .mean(Kind::Float)
                    .double_value(&[])
            })
        };
        Ok(LossOut {
            loss,
            terms: vec![("masked_acc", acc), ("masked_tokens", n as f64)],
        })
    }

    fn embed(&self, ids: &Tensor) -> Tensor {
        self.pooled(ids, false)
    }

    fn project(&self, ids: &Tensor) -> Tensor {
        self.pooled(ids, false)
    }
}
