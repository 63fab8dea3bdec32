//! wav2vec 2.0's view: spans of latent frames to mask, and the distractors
//! each masked frame is contrasted with.
//!
//! [`span_mask`] follows transformers' `_compute_mask_indices`: per row,
//! `int(mask_prob * len / span + eps)` spans (at least `min_masks`, one `eps`
//! drawn per batch), starts drawn without replacement from
//! `0..=len - span`, spans may overlap. transformers' `mask_time_prob =
//! 0.65` with spans of 10 is the paper's start probability p = 0.065 and
//! masks about half of the frames. Where transformers pads a row without
//! spans with a dummy span at the last frame, no frame is masked here.
//!
//! [`sample_negatives`] follows `_sample_negative_indices`: K distractors
//! per masked frame, drawn uniformly from the *other* masked frames of the
//! same utterance (with replacement).
use rand::seq::index::sample;
use rand::Rng;

/// Span-masking settings (transformers' names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpanMasking {
    pub mask_prob: f64,
    pub span: usize,
    pub min_masks: usize,
}

/// Which frames of a `[B, seq_len]` batch are masked (row-major), given
/// each row's valid frame count.
pub fn span_mask(
    frame_lengths: &[usize],
    seq_len: usize,
    cfg: SpanMasking,
    rng: &mut impl Rng,
) -> Vec<bool> {
    let span = cfg.span.max(1);
    let eps: f64 = rng.gen();
    let num_spans = |len: usize| {
        let mut n = (cfg.mask_prob * len as f64 / span as f64 + eps) as usize;
        n = n.max(cfg.min_masks);
        if n * span > seq_len {
            n = seq_len / span;
        }
        n.min((len + 1).saturating_sub(span))
    };
    let mut mask = vec![false; frame_lengths.len() * seq_len];
    for (row, &len) in frame_lengths.iter().enumerate() {
        let len = len.min(seq_len);
        let n = num_spans(len);
        let starts = len + 1 - span.min(len + 1);
        if n == 0 || starts == 0 {
            continue;
        }
        for s in sample(rng, starts, n) {
            for t in s..(s + span).min(seq_len) {
                mask[row * seq_len + t] = true;
            }
        }
    }
    mask
}

/// For every masked frame (in row-major order), `k` flat indices
/// (`row * seq_len + t`) of other masked frames of the same row. Rows with
/// fewer than two masked frames have nothing to contrast: their frames are
/// left out, and the first returned vector lists the flat indices kept.
pub fn sample_negatives(
    mask: &[bool],
    seq_len: usize,
    k: usize,
    rng: &mut impl Rng,
) -> (Vec<i64>, Vec<i64>) {
    let mut anchors = Vec::new();
    let mut negatives = Vec::new();
    for (row, frames) in mask.chunks(seq_len.max(1)).enumerate() {
        let masked: Vec<usize> = frames
            .iter()
            .enumerate()
            .filter_map(|(t, &m)| m.then_some(row * seq_len + t))
            .collect();
        if masked.len() < 2 {
            continue;
        }
        for (i, &flat) in masked.iter().enumerate() {
            anchors.push(flat as i64);
            for _ in 0..k {
                let mut j = rng.gen_range(0..masked.len() - 1);
                if j >= i {
                    j += 1;
                }
                negatives.push(masked[j] as i64);
            }
        }
    }
    (anchors, negatives)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn the_paper_setting_masks_about_half_of_the_frames() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let cfg = SpanMasking {
            mask_prob: 0.65,
            span: 10,
            min_masks: 2,
        };
        let (rows, t) = (64, 500);
        let mask = span_mask(&vec![t; rows], t, cfg, &mut rng);
        let frac = mask.iter().filter(|&&m| m).count() as f64 / mask.len() as f64;
        // 0.065 * T span starts without replacement over T - 9 positions:
        // 1 - P(no start among the 10 positions covering a frame) ~ 0.49.
        assert!((0.46..0.53).contains(&frac), "masked fraction {frac}");
        // Smaller probability, fewer frames; every masked run is >= 10 long.
        let cfg_small = SpanMasking {
            mask_prob: 0.2,
            ..cfg
        };
        let mask = span_mask(&vec![t; rows], t, cfg_small, &mut rng);
        let frac_small = mask.iter().filter(|&&m| m).count() as f64 / mask.len() as f64;
        assert!(
            (0.15..0.21).contains(&frac_small),
            "masked fraction {frac_small}"
        );
        for row in mask.chunks(t) {
            let mut run = 0;
            for (i, &m) in row.iter().enumerate() {
                if m {
                    run += 1;
                }
                if run > 0 && (!m || i == t - 1) {
                    assert!(run >= 10 || (m && i == t - 1), "a masked run of {run}");
                    run = 0;
                }
            }
        }
    }

    #[test]
    fn short_rows_get_min_masks_and_padding_stays_unmasked() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let cfg = SpanMasking {
            mask_prob: 0.65,
            span: 10,
            min_masks: 2,
        };
        let mask = span_mask(&[49, 20, 5], 49, cfg, &mut rng);
        let row = |r: usize| &mask[r * 49..(r + 1) * 49];
        let n0 = row(0).iter().filter(|&&m| m).count();
        assert!((10..=40).contains(&n0), "{n0}");
        assert!(row(1)[20..].iter().all(|&m| !m));
        assert!(row(1)[..20].iter().any(|&m| m));
        assert!(
            row(2).iter().all(|&m| !m),
            "5 frames cannot hold a span of 10"
        );
    }

    #[test]
    fn negatives_come_from_other_masked_frames_of_the_same_row() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let t = 30;
        let cfg = SpanMasking {
            mask_prob: 0.65,
            span: 10,
            min_masks: 2,
        };
        let mask = span_mask(&[t, t, t], t, cfg, &mut rng);
        let (anchors, negs) = sample_negatives(&mask, t, 5, &mut rng);
        assert_eq!(negs.len(), anchors.len() * 5);
        assert_eq!(anchors.len(), mask.iter().filter(|&&m| m).count());
        for (a, ns) in anchors.iter().zip(negs.chunks(5)) {
            for &n in ns {
                assert_ne!(n, *a);
                assert!(mask[n as usize]);
                assert_eq!(n as usize / t, *a as usize / t);
            }
        }
    }
}
