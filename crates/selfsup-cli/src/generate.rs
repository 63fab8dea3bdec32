//! `selfsup generate`: text from a next-token (GPT-2) run. The run folder
//! (or its checkpoint) gives the model and its tokenizer; the prompt is
//! continued greedily (`--top-k 1` or `--temperature 0`) or by seeded top-k
//! sampling, until the model ends the document or `--max-new-tokens`.
//!
//! stdout: the prompt and its continuation on one line (the continuation
//! as the tokenizer decodes it: lower case for an uncased vocabulary);
//! stderr: what was loaded and how the tokens were chosen.
use anyhow::{bail, Result};
use selfsup_core::device::{describe, DeviceChoice};
use selfsup_text::generate::{check_new_tokens, generate, load_run, Sampling};
use std::path::PathBuf;

/// What `selfsup generate` was given.
pub struct Args {
    /// A next-token run folder or its checkpoint.safetensors.
    pub run: PathBuf,
    pub prompt: String,
    pub max_new_tokens: usize,
    pub top_k: usize,
    pub temperature: f64,
    pub seed: u64,
    pub device: String,
}

/// The continuation as printed: the prompt, a space, the new text.
pub fn line(prompt: &str, continuation: &str) -> String {
    match (prompt.trim_end(), continuation.trim()) {
        (p, "") => p.to_string(),
        (p, c) => format!("{p} {c}"),
    }
}

/// Runs `selfsup generate`: the flags are checked before the model loads.
pub fn run(a: Args) -> Result<()> {
    if a.prompt.trim().is_empty() {
        bail!("--prompt is empty: give some text for the model to continue");
    }
    let n = check_new_tokens(a.max_new_tokens)?;
    let sampling = Sampling::from_flags(a.top_k, a.temperature, a.seed)?;
    let device = a.device.parse::<DeviceChoice>()?.resolve()?;
    let loaded = load_run(&a.run, device)?;
    let g = generate(&loaded.model, &loaded.tok, &a.prompt, n, sampling, device)?;
    let ended = g.new_ids.last() == Some(&loaded.tok.sep_id);
    eprintln!(
        "{}: {} new token(s), {}, on {}{}",
        loaded.checkpoint.display(),
        g.new_ids.len(),
        sampling.describe(),
        describe(device),
        if ended {
            " (stopped where the model ended the document)"
        } else {
            ""
        }
    );
    println!("{}", line(&a.prompt, &g.text));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_joins_prompt_and_continuation_with_one_space() {
        assert_eq!(line("the cat ", "sees the dog"), "the cat sees the dog");
        assert_eq!(line("the cat", ""), "the cat");
        assert_eq!(line("the cat", " ."), "the cat .");
    }
}
