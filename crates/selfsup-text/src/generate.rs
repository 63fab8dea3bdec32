//! Text from a prompt with a next-token model: greedy decoding or top-k
//! sampling (seeded: the same seed gives the same text). The context is
//! `[CLS]` + the prompt's pieces, as packing starts every sequence; each
//! step runs the model on the last `max_position` tokens (no key/value
//! cache: generation here is a check of the model, not a server).
//! [`load_run`] and [`Sampling::from_flags`] are what `selfsup generate`
//! stands on.
use crate::config::{TextMethodConfig, TextRunConfig};
use crate::error::{TextError, TextResult};
use crate::methods::NextToken;
use crate::model::Gpt2Config;
use crate::tokenizer::TextTokenizer;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use selfsup_core::checkpoint;
use selfsup_core::method::Method;
use selfsup_core::trainer::CHECKPOINT_FILE;
use selfsup_core::{Error, Result};
use std::path::{Path, PathBuf};
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

impl Sampling {
    /// The sampling `selfsup generate`'s flags ask for: greedy when `top_k`
    /// is 1 or `temperature` is 0, else top-k at `temperature` seeded by
    /// `seed`. `Err` for `top_k` 0 or a negative or non-finite temperature.
    pub fn from_flags(top_k: usize, temperature: f64, seed: u64) -> TextResult<Self> {
        if top_k == 0 {
            return Err(TextError::Config(
                "--top-k 0: give at least 1 (1 = greedy: always the most likely token)".into(),
            ));
        }
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(TextError::Config(format!(
                "--temperature {temperature}: give a finite value of at least 0 (0 = greedy)"
            )));
        }
        Ok(if top_k == 1 || temperature == 0.0 {
            Sampling::Greedy
        } else {
            Sampling::TopK {
                k: top_k,
                temperature,
                seed,
            }
        })
    }

    /// How a summary or the terminal names it.
    pub fn describe(&self) -> String {
        match *self {
            Sampling::Greedy => "greedy".into(),
            Sampling::TopK {
                k,
                temperature,
                seed,
            } => format!("top-k (k = {k}, temperature = {temperature}, seed = {seed})"),
        }
    }
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
/// end of a document). `Err` for a prompt of no tokens (empty or blank).
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
    if prompt_ids.is_empty() {
        return Err(TextError::Config(format!(
            "the prompt {prompt:?} has no tokens: give some text to continue"
        )));
    }
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

/// A next-token run loaded for generation.
pub struct LoadedRun {
    pub model: NextToken,
    pub tok: TextTokenizer,
    /// The checkpoint it was read from.
    pub checkpoint: PathBuf,
}

/// The checkpoint `path` names: `path` itself when it is a file, the
/// run folder's `checkpoint.safetensors` when it is a folder. An export
/// folder (`<run>/export`) or a folder without a checkpoint is refused,
/// saying what to give instead.
pub fn checkpoint_of(path: &Path) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.is_dir() {
        return Err(Error::Config(format!(
            "{}: no such file or folder; give a next-token run folder (the --run-dir of \
             `selfsup pretrain`) or its {CHECKPOINT_FILE}",
            path.display()
        )));
    }
    let ckpt = path.join(CHECKPOINT_FILE);
    if ckpt.is_file() {
        return Ok(ckpt);
    }
    let parent = path.parent().filter(|p| p.join(CHECKPOINT_FILE).is_file());
    let hint = match parent {
        Some(run) if path.join("config.json").is_file() => format!(
            " (it looks like a run's export folder: give the run folder {} instead)",
            run.display()
        ),
        _ => String::new(),
    };
    Err(Error::Config(format!(
        "{}: no {CHECKPOINT_FILE} in this folder{hint}; give a next-token run folder (the \
         --run-dir of `selfsup pretrain`) or its {CHECKPOINT_FILE}",
        path.display()
    )))
}

/// The model and tokenizer of the next-token run at `path` (a run folder
/// or its checkpoint) on `device`. A checkpoint of another method is
/// refused, naming it.
pub fn load_run(path: &Path, device: Device) -> Result<LoadedRun> {
    let checkpoint = checkpoint_of(path)?;
    let (method, config) = selfsup_core::workflow::checkpoint_method(&checkpoint)?;
    let next_token = TextMethodConfig::NextToken.name();
    if method != next_token {
        return Err(Error::Config(format!(
            "{}: a checkpoint of method '{method}', not a next-token language model; text is \
             generated by a run of [method] name = \"{next_token}\" (e.g. \
             configs/text/next-token-cpu.toml)",
            checkpoint.display()
        )));
    }
    let cfg = TextRunConfig::from_toml(&config, &checkpoint)?;
    let (model, tok) = restore(&checkpoint, &cfg, device)?;
    Ok(LoadedRun {
        model,
        tok,
        checkpoint,
    })
}

/// Checks a `--max-new-tokens` value: 1 to [`MAX_NEW_TOKENS`].
pub fn check_new_tokens(n: usize) -> TextResult<usize> {
    if (1..=MAX_NEW_TOKENS).contains(&n) {
        Ok(n)
    } else {
        Err(TextError::Config(format!(
            "--max-new-tokens {n}: give 1 to {MAX_NEW_TOKENS}"
        )))
    }
}

/// The architecture of `cfg` for `tok`.
pub fn model_config(cfg: &TextRunConfig, tok: &TextTokenizer) -> Result<Gpt2Config> {
    Gpt2Config::resolve(
        &cfg.model,
        tok.vocab_size,
        tok.cls_id,
        tok.sep_id,
        tok.pad_id,
    )
    .map_err(Error::Config)
}

/// The checkpoint's model and the run's tokenizer (`tokenizer/tokenizer.json`
/// beside the checkpoint).
pub fn restore(
    path: &Path,
    cfg: &TextRunConfig,
    device: Device,
) -> Result<(NextToken, TextTokenizer)> {
    let run_dir = path.parent().unwrap_or(Path::new("."));
    let tok = TextTokenizer::from_file(&run_dir.join("tokenizer").join("tokenizer.json"))?;
    let gpt =
        model_config(cfg, &tok).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    let model = NextToken::new(&gpt, device);
    checkpoint::restore_model(path, model.var_store(), model.name())?;
    Ok((model, tok))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_choose_greedy_or_top_k_and_refuse_bad_values() {
        assert_eq!(Sampling::from_flags(1, 0.8, 5).unwrap(), Sampling::Greedy);
        assert_eq!(Sampling::from_flags(40, 0.0, 5).unwrap(), Sampling::Greedy);
        assert_eq!(
            Sampling::from_flags(40, 0.7, 5).unwrap(),
            Sampling::TopK {
                k: 40,
                temperature: 0.7,
                seed: 5
            }
        );
        for (k, t) in [(0, 1.0), (5, -0.1), (5, f64::NAN), (5, f64::INFINITY)] {
            let e = Sampling::from_flags(k, t, 0).unwrap_err().to_string();
            assert!(e.contains("--top-k") || e.contains("--temperature"), "{e}");
        }
        assert_eq!(check_new_tokens(1).unwrap(), 1);
        assert_eq!(check_new_tokens(MAX_NEW_TOKENS).unwrap(), MAX_NEW_TOKENS);
        for n in [0, MAX_NEW_TOKENS + 1] {
            let e = check_new_tokens(n).unwrap_err().to_string();
            assert!(e.contains("--max-new-tokens"), "{e}");
        }
    }

    #[test]
    fn greedy_takes_the_first_maximum_and_top_k_draws_only_the_k_largest() {
        assert_eq!(greedy(&[0.5, 2.0, 2.0, -1.0]), 1);
        let logits = [0.0, 3.0, 1.0, 2.9, -5.0];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut seen = [0usize; 5];
        for _ in 0..400 {
            let i = usize::try_from(top_k(&logits, 2, 1.0, &mut rng)).unwrap();
            seen[i] += 1;
        }
        assert_eq!(seen[0] + seen[2] + seen[4], 0, "{seen:?}");
        // exp(3) / (exp(3) + exp(2.9)) = 0.525: both drawn often.
        assert!(seen[1] > 150 && seen[3] > 150, "{seen:?}");
        // The same seed draws the same tokens.
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..20)
                .map(|_| top_k(&logits, 3, 1.0, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
    }

    #[test]
    fn a_folder_without_a_checkpoint_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let export = run.join("export");
        std::fs::create_dir_all(&export).unwrap();
        std::fs::write(export.join("config.json"), "{}").unwrap();
        let e = checkpoint_of(&run).unwrap_err().to_string();
        assert!(e.contains("no checkpoint.safetensors"), "{e}");
        std::fs::write(run.join(CHECKPOINT_FILE), "x").unwrap();
        assert_eq!(checkpoint_of(&run).unwrap(), run.join(CHECKPOINT_FILE));
        let e = checkpoint_of(&export).unwrap_err().to_string();
        assert!(
            e.contains("export folder") && e.contains(&run.display().to_string()),
            "{e}"
        );
        let e = checkpoint_of(&dir.path().join("none"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such file"), "{e}");
    }
}
