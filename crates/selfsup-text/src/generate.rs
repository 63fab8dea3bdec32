//! Text from a prompt with a next-token model: greedy decoding or top-k
//! sampling (seeded: the same seed gives the same text). The context is
//! `[CLS]` + the prompt's pieces, as packing starts every sequence; each
//! step runs the model on the last `max_position` tokens (no key/value
//! cache: generation here is a check of the model, not a server).
use crate::error::{TextError, TextResult};
use crate::methods::NextToken;
use crate::tokenizer::TextTokenizer;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// The most tokens one call generates.
pub const MAX_NEW_TOKENS: usize = 4096;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// The most likely token (ties: the lowest id).
    Greedy,
    /// A draw from the `k` most likely tokens, their probabilities at
    /// `temperature` renormalised.
    TopK {
        k: usize,
        temperature: f64,
        seed: u64,
    },
}

/// What [`generate`] produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The prompt's ids (after `[CLS]`).
    pub prompt_ids: Vec<i64>,
    /// The new ids (`[SEP]` included when it stopped there).
    pub new_ids: Vec<i64>,
    /// The new pieces decoded (without `[SEP]`).
    pub text: String,
}

/// Continues `ids` (already starting with `[CLS]`) by up to `max_new`
/// tokens, stopping after `stop` when it is given and produced.
pub fn continue_ids(
    model: &NextToken,
    ids: &[i64],
    max_new: usize,
    sampling: Sampling,
    stop: Option<i64>,
    device: Device,
) -> TextResult<Vec<i64>> {
    if max_new > MAX_NEW_TOKENS {
        return Err(TextError::Config(format!(
            "{max_new} new tokens asked for: at most {MAX_NEW_TOKENS} per call"
        )));
    }
    if let Sampling::TopK { k, temperature, .. } = sampling {
        if k == 0 || !(temperature.is_finite() && temperature > 0.0) {
            return Err(TextError::Config(format!(
                "top-k sampling with k = {k}, temperature = {temperature}: k must be at least 1 and the temperature above 0"
            )));
        }
    }
    let v = model.gpt.cfg.vocab_size;
    if let Some(&bad) = ids.iter().find(|&&t| !(0..v).contains(&t)) {
        return Err(TextError::Config(format!(
            "token id {bad} is outside the model's vocabulary of {v}"
        )));
    }
    if ids.is_empty() {
        return Err(TextError::Config(
            "generation needs at least one token of context ([CLS])".into(),
        ));
    }
    let window = usize::try_from(model.gpt.cfg.max_position).unwrap_or(usize::MAX);
    let mut rng = match sampling {
        Sampling::TopK { seed, .. } => Some(ChaCha8Rng::seed_from_u64(seed)),
        Sampling::Greedy => None,
    };
    let mut all = ids.to_vec();
    let mut new = Vec::new();
    tch::no_grad(|| {
        for _ in 0..max_new {
            let ctx = &all[all.len().saturating_sub(window)..];
            let input = Tensor::from_slice(ctx)
                .view([1, ctx.len() as i64])
                .to_device(device);
            let h = model.gpt.forward(&input, false);
            let last = h.narrow(1, ctx.len() as i64 - 1, 1).view([-1]);
            let logits = Vec::<f64>::try_from(
                model
                    .gpt
                    .logits(&last)
                    .to_kind(Kind::Double)
                    .to_device(Device::Cpu),
            )
            .map_err(|e| TextError::Config(format!("reading the logits: {e}")))?;
            let next = match (sampling, rng.as_mut()) {
                (Sampling::TopK { k, temperature, .. }, Some(rng)) => {
                    top_k(&logits, k, temperature, rng)
                }
                _ => greedy(&logits),
            };
            all.push(next);
            new.push(next);
            if Some(next) == stop {
                break;
            }
        }
        Ok::<(), TextError>(())
    })?;
    Ok(new)
}

fn greedy(logits: &[f64]) -> i64 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as i64
}

/// A draw from the `k` largest logits at `temperature`.
fn top_k(logits: &[f64], k: usize, temperature: f64, rng: &mut ChaCha8Rng) -> i64 {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // Stable: equal logits keep id order, so a seed always draws the same.
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order.truncate(k.min(logits.len()));
    let top = order.first().map_or(0.0, |&i| logits[i]);
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] - top) / temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.gen::<f64>() * total;
    for (&i, &w) in order.iter().zip(&weights) {
        if u < w {
            return i as i64;
        }
        u -= w;
    }
    order.last().map_or(0, |&i| i as i64)
}

/// Continues `prompt` by up to `max_new` tokens, stopping at `[SEP]` (the
/// end of a document).
pub fn generate(
    model: &NextToken,
    tok: &TextTokenizer,
    prompt: &str,
    max_new: usize,
    sampling: Sampling,
    device: Device,
) -> TextResult<Generated> {
    let mut ids = vec![tok.cls_id];
    let prompt_ids: Vec<i64> = tok.encode(prompt)?.into_iter().map(i64::from).collect();
    ids.extend_from_slice(&prompt_ids);
    let new_ids = continue_ids(model, &ids, max_new, sampling, Some(tok.sep_id), device)?;
    let words: Vec<u32> = new_ids
        .iter()
        .filter(|&&t| t != tok.sep_id)
        .filter_map(|&t| u32::try_from(t).ok())
        .collect();
    Ok(Generated {
        prompt_ids,
        new_ids,
        text: tok.decode(&words)?,
    })
}
