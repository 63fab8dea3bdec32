//! The command line: `embed-text EXPORT TEXTS [options]`.
use std::path::PathBuf;

/// Which export embeds which texts.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// The export folder (config.json, model.safetensors, tokenizer.json, ...).
    pub export: PathBuf,
    /// A text file, one text a line.
    pub texts: PathBuf,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Most similar pairs listed.
    pub top: usize,
    /// libtorch CPU threads (its default when absent).
    pub threads: Option<usize>,
}

/// The help text.
pub const USAGE: &str = "\
usage: embed-text EXPORT TEXTS [options]

  EXPORT  a text export of `selfsup pretrain` (runs/<name>/export: config.json, model.safetensors,
          tokenizer.json, tokenizer_config.json)
  TEXTS   a text file, one text a line (at most 5000 lines: every pair is compared)

options:
  --top N         most similar pairs listed (default 3)
  --batch-size N  texts per forward pass (default 32)
  --threads N     libtorch CPU threads
  -h, --help      this text";

fn number(what: &str, value: &str) -> Result<usize, String> {
    value
        .parse()
        .map_err(|_| format!("{what}: {value:?} is not a whole number\n\n{USAGE}"))
}

impl Args {
    /// Parses the arguments after the program name. `Ok(None)`: help was asked for.
    pub fn parse(argv: &[String]) -> Result<Option<Args>, String> {
        let mut positional = Vec::new();
        let (mut batch_size, mut top, mut threads) = (32, 3, None);
        let mut it = argv.iter();
        while let Some(a) = it.next() {
            if a == "-h" || a == "--help" {
                return Ok(None);
            }
            if !a.starts_with("--") {
                positional.push(a.clone());
                continue;
            }
            let value = it
                .next()
                .ok_or_else(|| format!("{a} needs a value\n\n{USAGE}"))?;
            match a.as_str() {
                "--top" => top = number(a, value)?,
                "--batch-size" => batch_size = number(a, value)?,
                "--threads" => threads = Some(number(a, value)?),
                _ => return Err(format!("unknown option {a}\n\n{USAGE}")),
            }
        }
        let [export, texts] = positional.as_slice() else {
            return Err(format!(
                "expected 2 arguments (EXPORT TEXTS), got {}\n\n{USAGE}",
                positional.len()
            ));
        };
        if !(1..=4096).contains(&batch_size) {
            return Err(format!("--batch-size {batch_size}: give 1..=4096"));
        }
        if threads == Some(0) {
            return Err("--threads 0: give at least 1".into());
        }
        Ok(Some(Args {
            export: PathBuf::from(export),
            texts: PathBuf::from(texts),
            batch_size,
            top,
            threads,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<Args>, String> {
        Args::parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn arguments_parse_and_bad_ones_say_why() {
        let a = parse("exp lines.txt --top 5").unwrap().unwrap();
        assert_eq!(a.export, PathBuf::from("exp"));
        assert_eq!(a.texts, PathBuf::from("lines.txt"));
        assert_eq!((a.top, a.batch_size, a.threads), (5, 32, None));
        assert_eq!(parse("-h").unwrap(), None);
        assert!(parse("exp")
            .unwrap_err()
            .starts_with("expected 2 arguments"));
        assert!(parse("exp t --top x")
            .unwrap_err()
            .starts_with("--top: \"x\""));
        assert!(parse("exp t --batch-size 0")
            .unwrap_err()
            .starts_with("--batch-size 0"));
    }
}
