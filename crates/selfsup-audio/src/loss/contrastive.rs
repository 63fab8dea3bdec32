//! The contrastive task of wav2vec 2.0 (Baevski et al. 2020, eq. 3), as
//! transformers' `Wav2Vec2ForPreTraining.compute_contrastive_logits`: the
//! cosine similarity of the context vector of a masked frame with its
//! quantized target and with K distractors, divided by a temperature
//! (0.1); distractors identical to the target get `-inf`; cross-entropy with
//! the target at index 0. transformers sums over masked frames; this is the
//! mean (the sum divided by the number of masked frames).
use tch::{Kind, Tensor};

/// The contrastive loss with its temperature.
#[derive(Debug, Clone, Copy)]
pub struct ContrastiveLoss {
    pub temperature: f64,
}

impl ContrastiveLoss {
    /// `[M, K + 1]` logits of context vectors `pred` `[M, D]` against their
    /// targets `pos` `[M, D]` (column 0) and distractors `neg` `[M, K, D]`,
    /// in float32 with autocast off (cosines divided by 0.1).
    pub fn logits(&self, pred: &Tensor, pos: &Tensor, neg: &Tensor) -> Tensor {
        selfsup_core::autocast::full_precision(|| self.logits_f32(pred, pos, neg))
    }

    fn logits_f32(&self, pred: &Tensor, pos: &Tensor, neg: &Tensor) -> Tensor {
        let targets = Tensor::cat(&[pos.unsqueeze(1), neg.shallow_clone()], 1).to_kind(Kind::Float);
        let logits =
            Tensor::cosine_similarity(&pred.to_kind(Kind::Float).unsqueeze(1), &targets, -1, 1e-8)
                / self.temperature;
        let neg_is_pos = neg.eq_tensor(&pos.unsqueeze(1)).all_dim(-1, false);
        let m = neg_is_pos.size()[0];
        let mask = Tensor::cat(
            &[
                Tensor::zeros([m, 1], (Kind::Bool, neg_is_pos.device())),
                neg_is_pos,
            ],
            1,
        );
        logits.masked_fill(&mask, f64::NEG_INFINITY)
    }

    /// Mean cross-entropy of `logits` `[M, K + 1]` with the target at 0.
    pub fn loss(&self, logits: &Tensor) -> Tensor {
        let m = logits.size()[0];
        let target = Tensor::zeros([m], (Kind::Int64, logits.device()));
        logits.cross_entropy_for_logits(&target)
    }

    /// Fraction of rows whose target has the highest logit.
    pub fn accuracy(&self, logits: &Tensor) -> f64 {
        tch::no_grad(|| {
            logits
                .argmax(-1, false)
                .eq(0)
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(n: usize, a: f64, b: f64) -> Vec<f32> {
        (0..n).map(|i| ((i as f64 * a + b).sin()) as f32).collect()
    }

    /// Reference from transformers 5.24 (bench venv):
    /// ```python
    /// import torch, math
    /// from transformers import Wav2Vec2ForPreTraining as P
    /// v = lambda n, a, b: torch.tensor([math.sin(i * a + b) for i in range(n)], dtype=torch.float32)
    /// M, K, D = 3, 4, 5
    /// pred = v(M * D, 0.7, 0.1).view(1, M, D)          # [B=1, T=M, D]
    /// pos = v(M * D, 1.3, 0.2).view(1, M, D)
    /// neg = v(K * M * D, 0.9, 0.3).view(K, 1, M, D)
    /// neg[2, 0, 1] = pos[0, 1]                          # a distractor equal to its target
    /// logits = P.compute_contrastive_logits(pos[None], neg, pred, 0.1)   # [K+1, 1, M]
    /// neg_is_pos = (pos == neg).all(-1)
    /// logits[1:][neg_is_pos] = float("-inf")
    /// logits = logits.transpose(0, 2).reshape(-1, K + 1)
    /// print(logits.tolist())
    /// print(torch.nn.functional.cross_entropy(logits, torch.zeros(M, dtype=torch.long), reduction="sum").item() / M)
    /// ```
    #[test]
    fn matches_transformers_compute_contrastive_logits() {
        let (m, k, d) = (3i64, 4i64, 5i64);
        let pred = Tensor::from_slice(&vals(15, 0.7, 0.1)).view([m, d]);
        let pos = Tensor::from_slice(&vals(15, 1.3, 0.2)).view([m, d]);
        // transformers' layout is [K, M, D]; ours [M, K, D].
        let neg = Tensor::from_slice(&vals(60, 0.9, 0.3)).view([k, m, d]);
        neg.get(2).get(1).copy_(&pos.get(1));
        let neg = neg.transpose(0, 1).contiguous();
        let loss = ContrastiveLoss { temperature: 0.1 };
        let logits = loss.logits(&pred, &pos, &neg);
        let expected: [[f64; 5]; 3] = REFERENCE_LOGITS;
        for (i, row) in expected.iter().enumerate() {
            for (j, &e) in row.iter().enumerate() {
                let got = logits.double_value(&[i as i64, j as i64]);
                if e.is_infinite() {
                    assert!(got.is_infinite() && got < 0.0, "[{i}, {j}] {got}");
                } else {
                    assert!((got - e).abs() < 1e-4, "[{i}, {j}] {got} vs {e}");
                }
            }
        }
        let l = loss.loss(&logits).double_value(&[]);
        assert!((l - REFERENCE_LOSS).abs() < 1e-4, "{l} vs {REFERENCE_LOSS}");
    }

    /// Under bfloat16 autocast the logits and loss are the float32 ones.
    #[test]
    fn autocast_does_not_change_the_loss() {
        use selfsup_core::autocast::{with_autocast, AutocastDevice, AutocastDtype};
        let (m, k, d) = (16i64, 10i64, 64i64);
        let pred = Tensor::from_slice(&vals((m * d) as usize, 0.37, 0.1)).view([m, d]);
        let pos = Tensor::from_slice(&vals((m * d) as usize, 0.41, 0.2)).view([m, d]);
        let neg = Tensor::from_slice(&vals((m * k * d) as usize, 0.53, 0.3)).view([m, k, d]);
        let loss = ContrastiveLoss { temperature: 0.1 };
        let exact = loss.loss(&loss.logits(&pred, &pos, &neg));
        let under = with_autocast(AutocastDevice::Cpu, AutocastDtype::BFloat16, || {
            loss.loss(&loss.logits(&pred, &pos, &neg))
        })
        .unwrap();
        assert_eq!(under.kind(), Kind::Float);
        let gap = (exact.double_value(&[]) - under.double_value(&[])).abs();
        assert!(gap < 1e-6, "{gap}");
    }

    const REFERENCE_LOGITS: [[f64; 5]; 3] = [
        [
            0.9615105390548706,
            6.819887638092041,
            -0.017358064651489258,
            -6.477424621582031,
            -8.683985710144043,
        ],
        [
            -3.2982592582702637,
            0.8793325424194336,
            -6.773494243621826,
            f64::NEG_INFINITY,
            -3.279125928878784,
        ],
        [
            5.280098915100098,
            -7.809250831604004,
            -8.741061210632324,
            -3.8969016075134277,
            4.797595500946045,
        ],
    ];
    const REFERENCE_LOSS: f64 = 3.5172112782796225;
}
