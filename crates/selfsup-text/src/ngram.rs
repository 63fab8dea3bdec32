//! Count-based baselines for next-token prediction: a unigram and a bigram
//! model fitted on the training sequences' targets and scored on exactly the
//! validation targets the network is scored on ([`lm_labels`]: every body
//! token of a packed row, `[SEP]`s between documents included; not padding,
//! not the `[SEP]` that closes a row). Both are distributions over the whole
//! vocabulary, as the network's softmax is.
//!
//! - unigram: `p(w) = (c(w) + 1) / (N + V)` (add-one);
//! - bigram: `p(w | v) = (c(v, w) + k) / (c(v) + k V)` (add-k), `c(v)` the
//!   times `v` precedes a target. The context of a row's first target is
//!   `[CLS]`, the same context the network sees;
//! - interpolated bigram (Jelinek-Mercer):
//!   `p(w | v) = lambda c(v, w) / c(v) + (1 - lambda) p(w)`, the unigram's
//!   `p(w)` alone for a context never seen in training; usually the
//!   stronger of the two bigrams.
//!
//! Each smoothing value (`k`, `lambda`) is chosen from a fixed grid on the
//! validation targets, as the network's settings are: the baselines at
//! their best, not at an arbitrary value.
use crate::masking::IGNORE;
use crate::methods::lm_labels;
use crate::packing::Packed;
use serde::Serialize;
use std::collections::HashMap;

/// The add-k values [`fit_bigram_k`] tries (the best one on the validation
/// targets is reported: the baseline at its best, not at an arbitrary k).
pub const BIGRAM_KS: &[f64] = &[1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001];

/// The interpolation weights of the bigram [`fit_bigram_k`] tries.
pub const BIGRAM_LAMBDAS: &[f64] = &[0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99];

/// Counts of the training targets.
#[derive(Debug, Clone)]
pub struct NgramCounts {
    vocab_size: usize,
    unigram: Vec<u64>,
    /// `c(v)`: times `v` is the context of a target.
    context: Vec<u64>,
    /// `c(v, w)`, keyed `v * V + w`.
    pairs: HashMap<u64, u64>,
    targets: u64,
}

/// Every `(context, target)` pair of `data`'s rows.
fn target_pairs(data: &Packed, pad_id: i64, sep_id: i64) -> impl Iterator<Item = (i64, i64)> + '_ {
    (0..data.len()).flat_map(move |r| {
        let row = data.row(r);
        lm_labels(row, pad_id, sep_id)
            .into_iter()
            .enumerate()
            .filter(|&(_, l)| l != IGNORE)
            .map(move |(t, l)| (row[t], l))
            .collect::<Vec<_>>()
    })
}

/// Whether `id` indexes a vocabulary of `v` pieces.
fn index(id: i64, v: usize) -> Option<usize> {
    usize::try_from(id).ok().filter(|&i| i < v)
}

impl NgramCounts {
    /// Counts the targets of `train` (ids outside `0..vocab_size` are skipped).
    pub fn fit(train: &Packed, vocab_size: usize, pad_id: i64, sep_id: i64) -> Self {
        let mut c = Self {
            vocab_size,
            unigram: vec![0; vocab_size],
            context: vec![0; vocab_size],
            pairs: HashMap::new(),
            targets: 0,
        };
        for (v, w) in target_pairs(train, pad_id, sep_id) {
            let (Some(v), Some(w)) = (index(v, vocab_size), index(w, vocab_size)) else {
                continue;
            };
            c.unigram[w] += 1;
            c.context[v] += 1;
            *c.pairs.entry((v * vocab_size + w) as u64).or_insert(0) += 1;
            c.targets += 1;
        }
        c
    }

    /// `-ln p(w)` under the add-one unigram.
    pub fn unigram_nll(&self, w: usize) -> f64 {
        let v = self.vocab_size as f64;
        let c = self.unigram.get(w).copied().unwrap_or(0) as f64;
        -((c + 1.0) / (self.targets as f64 + v)).ln()
    }

    /// `-ln p(w | v)` under the add-`k` bigram.
    pub fn bigram_nll(&self, v: usize, w: usize, k: f64) -> f64 {
        let n = self.vocab_size as f64;
        let pair = self
            .pairs
            .get(&((v * self.vocab_size + w) as u64))
            .copied()
            .unwrap_or(0) as f64;
        let ctx = self.context.get(v).copied().unwrap_or(0) as f64;
        -((pair + k) / (ctx + k * n)).ln()
    }

    /// `-ln p(w | v)` under the bigram interpolated with the unigram at
    /// weight `lambda` (the unigram alone for a context never seen).
    pub fn interpolated_nll(&self, v: usize, w: usize, lambda: f64) -> f64 {
        let ctx = self.context.get(v).copied().unwrap_or(0) as f64;
        let uni = (-self.unigram_nll(w)).exp();
        if ctx == 0.0 {
            return -uni.ln();
        }
        let pair = self
            .pairs
            .get(&((v * self.vocab_size + w) as u64))
            .copied()
            .unwrap_or(0) as f64;
        -(lambda * pair / ctx + (1.0 - lambda) * uni).ln()
    }
}

/// The baselines' validation perplexities.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct NgramBaselines {
    pub unigram_perplexity: f64,
    pub bigram_perplexity: f64,
    /// The bigram's add-k.
    pub bigram_add_k: f64,
    /// The bigram interpolated with the unigram.
    pub interpolated_perplexity: f64,
    /// Its weight of the bigram.
    pub interpolated_lambda: f64,
    /// Validation targets scored.
    pub targets: u64,
}

/// Unigram, add-`k` bigram and interpolated (weight `lambda`) bigram
/// perplexities of `val`'s targets under `counts`.
pub fn score(
    counts: &NgramCounts,
    val: &Packed,
    pad_id: i64,
    sep_id: i64,
    k: f64,
    lambda: f64,
) -> NgramBaselines {
    let (mut uni, mut bi, mut jm, mut n) = (0.0, 0.0, 0.0, 0u64);
    let vs = counts.vocab_size;
    for (v, w) in target_pairs(val, pad_id, sep_id) {
        let (Some(v), Some(w)) = (index(v, vs), index(w, vs)) else {
            continue;
        };
        uni += counts.unigram_nll(w);
        bi += counts.bigram_nll(v, w, k);
        jm += counts.interpolated_nll(v, w, lambda);
        n += 1;
    }
    let d = n.max(1) as f64;
    NgramBaselines {
        unigram_perplexity: (uni / d).exp(),
        bigram_perplexity: (bi / d).exp(),
        bigram_add_k: k,
        interpolated_perplexity: (jm / d).exp(),
        interpolated_lambda: lambda,
        targets: n,
    }
}

/// [`score`] at the add-k of [`BIGRAM_KS`] and the weight of
/// [`BIGRAM_LAMBDAS`] that give `val` the lowest perplexity, each bigram
/// its own best.
pub fn fit_bigram_k(
    counts: &NgramCounts,
    val: &Packed,
    pad_id: i64,
    sep_id: i64,
) -> NgramBaselines {
    let best = |scores: Vec<NgramBaselines>, key: fn(&NgramBaselines) -> f64| {
        scores
            .into_iter()
            .min_by(|a, b| key(a).total_cmp(&key(b)))
            .unwrap_or_default()
    };
    let first_lambda = BIGRAM_LAMBDAS.first().copied().unwrap_or(0.5);
    let by_k = BIGRAM_KS
        .iter()
        .map(|&k| score(counts, val, pad_id, sep_id, k, first_lambda))
        .collect();
    let mut out = best(by_k, |b| b.bigram_perplexity);
    let by_lambda = BIGRAM_LAMBDAS
        .iter()
        .map(|&l| score(counts, val, pad_id, sep_id, out.bigram_add_k, l))
        .collect();
    let jm = best(by_lambda, |b| b.interpolated_perplexity);
    out.interpolated_perplexity = jm.interpolated_perplexity;
    out.interpolated_lambda = jm.interpolated_lambda;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packing::PackStats;

    fn packed(rows: &[&[i64]]) -> Packed {
        Packed {
            ids: rows.concat(),
            max_len: rows[0].len(),
            stats: PackStats::default(),
        }
    }

    // Vocabulary: 0 [PAD], 1 [CLS], 2 [SEP], 3 a, 4 b, 5 c (V = 6).
    const PAD: i64 = 0;
    const SEP: i64 = 2;

    #[test]
    fn labels_skip_padding_and_the_closing_sep_only() {
        // [CLS] a b [SEP](between documents) c [SEP](closing) [PAD]
        let row = [1, 3, 4, 2, 5, 2, 0];
        assert_eq!(lm_labels(&row, PAD, SEP), vec![3, 4, 2, 5, IGNORE, IGNORE]);
        // A full row: its last token is the closing [SEP].
        let row = [1, 3, 4, 2];
        assert_eq!(lm_labels(&row, PAD, SEP), vec![3, 4, IGNORE]);
    }

    #[test]
    fn unigram_and_bigram_match_a_hand_computation() {
        // Training targets: row 1 -> (CLS,a) (a,b) (b,a); row 2 -> (CLS,a) (a,a).
        let train = packed(&[&[1, 3, 4, 3, 2], &[1, 3, 3, 2, 0]]);
        let c = NgramCounts::fit(&train, 6, PAD, SEP);
        // c(a) = 4, c(b) = 1, N = 5.
        // Validation targets: (CLS,a) (a,b) (b,c).
        let val = packed(&[&[1, 3, 4, 5, 2]]);
        let k = 0.5;
        let s = score(&c, &val, PAD, SEP, k, 0.75);
        assert_eq!(s.targets, 3);
        // Unigram, add-one over V = 6: p(a) = 5/11, p(b) = 2/11, p(c) = 1/11.
        let uni = ((5.0f64 / 11.0).ln() + (2.0f64 / 11.0).ln() + (1.0f64 / 11.0).ln()) / -3.0;
        assert!((s.unigram_perplexity - uni.exp()).abs() < 1e-12);
        // Bigram, add-0.5, kV = 3: c(CLS) = 2, c(CLS,a) = 2 -> 2.5/5;
        // c(a) as context = 2 (a->b, a->a), c(a,b) = 1 -> 1.5/5;
        // c(b) as context = 1 (b->a), c(b,c) = 0 -> 0.5/4.
        let bi = ((2.5f64 / 5.0).ln() + (1.5f64 / 5.0).ln() + (0.5f64 / 4.0).ln()) / -3.0;
        assert!(
            (s.bigram_perplexity - bi.exp()).abs() < 1e-12,
            "{} vs {}",
            s.bigram_perplexity,
            bi.exp()
        );
        // Interpolated at 0.75 with the add-one unigram: (CLS,a) 0.75 * 2/2
        // + 0.25 * 5/11; (a,b) 0.75 * 1/2 + 0.25 * 2/11; (b,c) 0.75 * 0/1 +
        // 0.25 * 1/11.
        let jm = (0.75f64 + 0.25 * 5.0 / 11.0).ln()
            + (0.375f64 + 0.25 * 2.0 / 11.0).ln()
            + (0.25f64 / 11.0).ln();
        assert!((s.interpolated_perplexity - (jm / -3.0).exp()).abs() < 1e-12);
        // A context never seen in training (c) falls back to the unigram.
        assert_eq!(c.interpolated_nll(5, 3, 0.75), c.unigram_nll(3));
        // Probabilities of each context sum to one over the vocabulary.
        for v in 0..6 {
            let total: f64 = (0..6).map(|w| (-c.bigram_nll(v, w, k)).exp()).sum();
            assert!((total - 1.0).abs() < 1e-12, "context {v}: {total}");
            let total: f64 = (0..6).map(|w| (-c.interpolated_nll(v, w, 0.6)).exp()).sum();
            assert!((total - 1.0).abs() < 1e-12, "context {v}: {total}");
        }
        let total: f64 = (0..6).map(|w| (-c.unigram_nll(w)).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
        // The fitted k and lambda are of their grids and no worse than any other.
        let best = fit_bigram_k(&c, &val, PAD, SEP);
        assert!(BIGRAM_KS.contains(&best.bigram_add_k));
        assert!(BIGRAM_LAMBDAS.contains(&best.interpolated_lambda));
        for &k in BIGRAM_KS {
            for &l in BIGRAM_LAMBDAS {
                let s = score(&c, &val, PAD, SEP, k, l);
                assert!(best.bigram_perplexity <= s.bigram_perplexity);
                assert!(best.interpolated_perplexity <= s.interpolated_perplexity);
            }
        }
        // Here the unseen (b,c) makes the bigram's weight the lower the better.
        assert_eq!(best.interpolated_lambda, BIGRAM_LAMBDAS[0]);
    }
}
