//! The MLM view: BERT's masking. A fraction of the non-special tokens is
//! selected (whole words optionally); of those, 80% become `[MASK]`, 10% a
//! random token, 10% stay. The target is the original token at the selected
//! positions only (`-100` elsewhere, ignored by the loss). Masks are a
//! function of `(seed, epoch, sequence)`, so every epoch draws new ones and a
//! resumed run draws the same ones.
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The label of positions the loss ignores.
pub const IGNORE: i64 = -100;

/// `[masking]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskingConfig {
    /// Fraction of tokens (or words) selected for prediction.
    pub mask_prob: f64,
    /// Of the selected, the fraction replaced by `[MASK]`.
    pub mask_token: f64,
    /// Of the selected, the fraction replaced by a random token (the rest stay).
    pub random_token: f64,
    /// Select whole words (a piece and its `##` continuations) together.
    pub whole_word: bool,
}

impl Default for MaskingConfig {
    fn default() -> Self {
        Self {
            mask_prob: 0.15,
            mask_token: 0.8,
            random_token: 0.1,
            whole_word: false,
        }
    }
}

impl MaskingConfig {
    /// Refuses probabilities that do not make sense.
    pub fn validate(&self) -> Result<(), String> {
        let ok = |p: f64| (0.0..=1.0).contains(&p);
        if !(self.mask_prob > 0.0 && ok(self.mask_prob)) {
            return Err(format!(
                "[masking] mask_prob must be in (0, 1], got {}",
                self.mask_prob
            ));
        }
        if !ok(self.mask_token)
            || !ok(self.random_token)
            || self.mask_token + self.random_token > 1.0 + 1e-9
        {
            return Err(format!(
                "[masking] mask_token ({}) and random_token ({}) must be in [0, 1] and sum to at most 1",
                self.mask_token, self.random_token
            ));
        }
        Ok(())
    }
}

/// What masking needs to know about the vocabulary.
pub struct Vocabulary<'a> {
    pub mask_id: i64,
    pub is_special: &'a [bool],
    pub is_continuation: &'a [bool],
    /// The ids a random replacement is drawn from (non-special).
    pub normal_ids: &'a [i64],
}

/// Masks one sequence: returns `(input, labels)`.
pub fn mask_sequence(
    ids: &[i64],
    vocab: &Vocabulary,
    cfg: &MaskingConfig,
    rng: &mut ChaCha8Rng,
) -> (Vec<i64>, Vec<i64>) {
    let n = ids.len();
    let special = |t: i64| vocab.is_special.get(t as usize).copied().unwrap_or(true);
    let mut selected = vec![false; n];
    let mut i = 0;
    while i < n {
        if special(ids[i]) {
            i += 1;
            continue;
        }
        // A unit: one token, or a word (the token and its continuations).
        let mut end = i + 1;
        if cfg.whole_word {
            while end < n
                && !special(ids[end])
                && vocab
                    .is_continuation
                    .get(ids[end] as usize)
                    .copied()
                    .unwrap_or(false)
            {
                end += 1;
            }
        }
        if rng.gen::<f64>() < cfg.mask_prob {
            selected[i..end].iter_mut().for_each(|s| *s = true);
        }
        i = end;
    }
    let mut input = ids.to_vec();
    let mut labels = vec![IGNORE; n];
    for j in 0..n {
        if !selected[j] {
            continue;
        }
        labels[j] = ids[j];
        let r = rng.gen::<f64>();
        if r < cfg.mask_token {
            input[j] = vocab.mask_id;
        } else if r < cfg.mask_token + cfg.random_token {
            // (A vocabulary of specials only is refused when it is loaded;
            // the token stays as it is rather than index an empty table.)
            if !vocab.normal_ids.is_empty() {
                input[j] = vocab.normal_ids[rng.gen_range(0..vocab.normal_ids.len())];
            }
        }
    }
    (input, labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    // vocab: 0 [PAD] 1 [UNK] 2 [CLS] 3 [SEP] 4 [MASK], 5..50 words, 50..100 "##" pieces
    fn vocab_tables() -> (Vec<bool>, Vec<bool>, Vec<i64>) {
        let special: Vec<bool> = (0..100).map(|i| i < 5).collect();
        let cont: Vec<bool> = (0..100).map(|i| i >= 50).collect();
        let normal: Vec<i64> = (5..100).collect();
        (special, cont, normal)
    }

    fn sequence(rng: &mut ChaCha8Rng) -> Vec<i64> {
        let mut s = vec![2];
        while s.len() < 127 {
            s.push(rng.gen_range(5..50));
            if rng.gen::<f64>() < 0.5 {
                s.push(rng.gen_range(50..100));
            }
        }
        s.truncate(127);
        s.push(3);
        s.extend([0; 16]);
        s
    }

    #[test]
    fn rates_match_bert_and_specials_are_untouched() {
        let (special, cont, normal) = vocab_tables();
        let vocab = Vocabulary {
            mask_id: 4,
            is_special: &special,
            is_continuation: &cont,
            normal_ids: &normal,
        };
        let cfg = MaskingConfig::default();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (mut eligible, mut selected, mut masked, mut random, mut kept) =
            (0usize, 0usize, 0usize, 0usize, 0usize);
        for _ in 0..400 {
            let ids = sequence(&mut rng);
            let (input, labels) = mask_sequence(&ids, &vocab, &cfg, &mut rng);
            for j in 0..ids.len() {
                if special[ids[j] as usize] {
                    assert_eq!(input[j], ids[j], "a special token was changed");
                    assert_eq!(labels[j], IGNORE, "a special token was selected");
                    continue;
                }
                eligible += 1;
                if labels[j] == IGNORE {
                    assert_eq!(input[j], ids[j]);
                    continue;
                }
                assert_eq!(labels[j], ids[j]);
                selected += 1;
                if input[j] == 4 {
                    masked += 1;
                } else if input[j] == ids[j] {
                    kept += 1;
                } else {
                    assert!(!special[input[j] as usize], "random replacement is special");
                    random += 1;
                }
            }
        }
        let rate = selected as f64 / eligible as f64;
        assert!((rate - 0.15).abs() < 0.006, "selection rate {rate}");
        let f = |c: usize| c as f64 / selected as f64;
        assert!((f(masked) - 0.8).abs() < 0.015, "mask {}", f(masked));
        // a random draw equals the original 1 time in 95
        assert!(
            (f(random) - 0.1 * 94.0 / 95.0).abs() < 0.012,
            "random {}",
            f(random)
        );
        assert!(
            (f(kept) - (0.1 + 0.1 / 95.0)).abs() < 0.012,
            "kept {}",
            f(kept)
        );
    }

    #[test]
    fn whole_word_selects_all_pieces_of_a_word() {
        let (special, cont, normal) = vocab_tables();
        let vocab = Vocabulary {
            mask_id: 4,
            is_special: &special,
            is_continuation: &cont,
            normal_ids: &normal,
        };
        let cfg = MaskingConfig {
            whole_word: true,
            mask_prob: 0.3,
            ..MaskingConfig::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut words = 0;
        for _ in 0..100 {
            let ids = sequence(&mut rng);
            let (_, labels) = mask_sequence(&ids, &vocab, &cfg, &mut rng);
            for j in 1..ids.len() {
                if cont[ids[j] as usize] && !special[ids[j] as usize] {
                    // a continuation is selected exactly when its word start is
                    let mut s = j;
                    while cont[ids[s] as usize] {
                        s -= 1;
                    }
                    assert_eq!(labels[j] != IGNORE, labels[s] != IGNORE);
                    words += 1;
                }
            }
        }
        assert!(words > 1000);
    }

    #[test]
    fn bad_rates_are_refused() {
        let cfg = MaskingConfig {
            mask_token: 0.9,
            random_token: 0.2,
            ..MaskingConfig::default()
        };
        assert!(cfg.validate().unwrap_err().contains("sum to at most 1"));
        assert!(MaskingConfig {
            mask_prob: 0.0,
            ..MaskingConfig::default()
        }
        .validate()
        .is_err());
    }
}
