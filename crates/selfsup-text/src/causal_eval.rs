//! Measuring a next-token model: validation loss, top-1 accuracy and
//! perplexity every epoch beside the unigram and bigram baselines
//! ([`crate::ngram`], scored on the same targets), and the collapse monitors
//! on pooled embeddings of two halves of the same passages.
use crate::eval::centre;
use crate::methods::{causal_batch, NextToken, NextTokenEval};
use crate::ngram::NgramBaselines;
use crate::packing::Packed;
use selfsup_core::trainer::{EpochEval, EpochEvaluator};
use selfsup_core::Result;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

/// Validation figures of one pass.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LmValidation {
    /// Mean cross-entropy per predicted token (nats).
    pub loss: f64,
    pub token_acc: f64,
    pub perplexity: f64,
    pub predicted_tokens: i64,
}

/// Loss, accuracy and perplexity of `model` on every target of `data`.
pub fn validate_lm(model: &NextToken, data: &Packed, batch: usize, device: Device) -> LmValidation {
    let cfg = &model.gpt.cfg;
    let mut total = NextTokenEval::default();
    let rows: Vec<usize> = (0..data.len()).collect();
    tch::no_grad(|| {
        for chunk in rows.chunks(batch.max(1)) {
            let b = causal_batch(data, chunk, cfg.pad_token_id, cfg.eos_token_id).to_device(device);
            let e = model.evaluate(&b);
            total.loss_sum += e.loss_sum;
            total.correct += e.correct;
            total.count += e.count;
        }
    });
    let n = total.count.max(1) as f64;
    LmValidation {
        loss: total.loss_sum / n,
        token_acc: total.correct as f64 / n,
        perplexity: (total.loss_sum / n).exp(),
        predicted_tokens: total.count,
    }
}

/// The per-epoch evaluator of a next-token run.
pub struct NextTokenEpochEval {
    pub val: Packed,
    pub monitor: Packed,
    pub batch: usize,
    pub device: Device,
    pub baselines: NgramBaselines,
    /// The last validation (for the summary).
    pub last: Option<LmValidation>,
}

impl NextTokenEpochEval {
    /// The two views of the monitors: each full monitor sequence's pooled
    /// final hidden states over its first half and over its second half,
    /// centred together ([`centre`]), with their spread; `None` under two
    /// full sequences.
    fn monitor_pair(&self, model: &NextToken) -> Option<(Tensor, Tensor, f64)> {
        let pad = model.gpt.cfg.pad_token_id;
        let rows: Vec<usize> = (0..self.monitor.len())
            .filter(|&r| !self.monitor.row(r).contains(&pad))
            .collect();
        let l = self.monitor.max_len as i64;
        if rows.len() < 2 || l < 2 {
            return None;
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        tch::no_grad(|| {
            for c in rows.chunks(self.batch.max(1)) {
                let ids: Vec<i64> = c
                    .iter()
                    .flat_map(|&r| self.monitor.row(r).to_vec())
                    .collect();
                let ids = Tensor::from_slice(&ids)
                    .view([c.len() as i64, l])
                    .to_device(self.device);
                let h = model.gpt.forward(&ids, false).to_kind(Kind::Float);
                let half = l / 2;
                let mean = |s: i64, n: i64| {
                    h.narrow(1, s, n)
                        .mean_dim([1i64].as_slice(), false, Kind::Float)
                        .to_device(Device::Cpu)
                };
                a.push(mean(0, half));
                b.push(mean(half, l - half));
            }
        });
        Some(centre(&Tensor::cat(&a, 0), &Tensor::cat(&b, 0)))
    }
}

impl EpochEvaluator<NextToken> for NextTokenEpochEval {
    fn evaluate(&mut self, model: &NextToken, _epoch: usize) -> Result<EpochEval> {
        let v = validate_lm(model, &self.val, self.batch, self.device);
        self.last = Some(v);
        let mut metrics = vec![
            ("val_token_acc".into(), v.token_acc),
            ("val_perplexity".into(), v.perplexity),
            (
                "baseline_unigram_perplexity".into(),
                self.baselines.unigram_perplexity,
            ),
            (
                "baseline_bigram_perplexity".into(),
                self.baselines.bigram_perplexity,
            ),
            (
                "baseline_interpolated_bigram_perplexity".into(),
                self.baselines.interpolated_perplexity,
            ),
        ];
        let views = self.monitor_pair(model).map(|(a, b, spread)| {
            metrics.push(("pooled_spread".into(), spread));
            (a, b)
        });
        Ok(EpochEval { metrics, views })
    }

    fn monitor_views(&mut self, model: &NextToken) -> Result<Option<(Tensor, Tensor)>> {
        Ok(self.monitor_pair(model).map(|(a, b, _)| (a, b)))
    }
}
