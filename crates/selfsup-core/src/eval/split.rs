//! Validation splits: a seeded part of the *training* data set aside for
//! every choice a run or a sweep makes (per-epoch curves, early choices,
//! the best layer, hyper-parameters), so that the test split is read once,
//! at the end.
//!
//! * [`by_sample`]: stratified by label, so that every class keeps its share
//!   in both parts (images, nodes);
//! * [`by_group`]: whole groups go to one side (a speaker's clips, a
//!   document's sequences), so that nothing of a validation group was
//!   trained on.
//!
//! The draw is ChaCha8 seeded with the caller's seed: the same data, fraction
//! and seed give the same split on every machine. Indices come back sorted.
use crate::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Indices of the two parts of a training set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// What the encoder, the kNN bank or the probe may train on.
    pub train: Vec<usize>,
    /// What choices are made on.
    pub validation: Vec<usize>,
}

/// Checks a validation fraction: in `(0, 1)`.
pub fn check_fraction(key: &str, fraction: f64) -> std::result::Result<(), String> {
    if fraction.is_finite() && fraction > 0.0 && fraction < 1.0 {
        Ok(())
    } else {
        Err(format!(
            "{key} must be a fraction in (0, 1) of the training data, got {fraction}"
        ))
    }
}

/// Sets `fraction` of each label's samples aside (at least one of every label
/// with two or more samples; a label with a single sample stays in train).
/// Errors when the fraction is out of range or nothing could be set aside.
pub fn by_sample(labels: &[i64], fraction: f64, seed: u64) -> Result<Split> {
    check_fraction("validation fraction", fraction).map_err(Error::Config)?;
    let mut by_label: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, &label) in labels.iter().enumerate() {
        by_label.entry(label).or_default().push(i);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut split = Split {
        train: Vec::with_capacity(labels.len()),
        validation: Vec::new(),
    };
    for (_, mut idx) in by_label {
        idx.shuffle(&mut rng);
        let take = if idx.len() < 2 {
            0
        } else {
            ((idx.len() as f64 * fraction).round() as usize).clamp(1, idx.len() - 1)
        };
        split.validation.extend_from_slice(&idx[..take]);
        split.train.extend_from_slice(&idx[take..]);
    }
    if split.validation.is_empty() {
        return Err(Error::Data(format!(
            "no sample could be set aside for validation: {} sample(s), none of a label with two \
             or more",
            labels.len()
        )));
    }
    split.train.sort_unstable();
    split.validation.sort_unstable();
    Ok(split)
}

/// Sets about `fraction` of the groups aside, whole: `groups[i]` names the
/// group of sample `i` (a speaker, a document). At least one group goes to
/// each side; fewer than two groups is an error naming `what`.
pub fn by_group<G: Ord + Clone>(
    groups: &[G],
    fraction: f64,
    seed: u64,
    what: &str,
) -> Result<Split> {
    check_fraction("validation fraction", fraction).map_err(Error::Config)?;
    let mut members: BTreeMap<G, Vec<usize>> = BTreeMap::new();
    for (i, g) in groups.iter().enumerate() {
        members.entry(g.clone()).or_default().push(i);
    }
    if members.len() < 2 {
        return Err(Error::Data(format!(
            "a validation split by {what} needs at least two {what}s, found {}",
            members.len()
        )));
    }
    let mut keys: Vec<G> = members.keys().cloned().collect();
    keys.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let take = ((keys.len() as f64 * fraction).round() as usize).clamp(1, keys.len() - 1);
    let mut split = Split {
        train: Vec::new(),
        validation: Vec::new(),
    };
    for (k, key) in keys.iter().enumerate() {
        let side = if k < take {
            &mut split.validation
        } else {
            &mut split.train
        };
        side.extend_from_slice(&members[key]);
    }
    split.train.sort_unstable();
    split.validation.sort_unstable();
    Ok(split)
}

#[cfg(test)]
#[path = "split/tests.rs"]
mod tests;
