//! The command line: `finetune-vision EXPORT DATA EPOCHS FRACTION [options]`.
use std::path::PathBuf;

/// What to fine-tune, on what, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// The export folder (`model.safetensors` + `config.json`).
    pub export: PathBuf,
    /// Fashion-MNIST IDX files, or a folder of class folders of images.
    pub data: PathBuf,
    /// Epochs of end-to-end fine-tuning.
    pub epochs: usize,
    /// Share of the training images whose labels are used, in (0, 1].
    pub fraction: f64,
    /// Epochs of the linear head on the frozen encoder, before fine-tuning.
    pub probe_epochs: usize,
    /// Learning rate of the encoder (the head's is ten times larger).
    pub lr: f64,
    /// Images per step.
    pub batch_size: usize,
    /// Held-out images evaluated (the first ones of the held-out set).
    pub max_test: usize,
    /// Share of each class held out, for a folder (IDX has a test split).
    pub held_out: f64,
    /// Seed of the label subset, the held-out split and the head.
    pub seed: u64,
    /// libtorch CPU threads (its default when absent).
    pub threads: Option<usize>,
}

/// The help text.
pub const USAGE: &str = "\
usage: finetune-vision EXPORT DATA EPOCHS FRACTION [options]

  EXPORT    an export folder of `selfsup pretrain` (runs/<name>/export: model.safetensors, config.json)
  DATA      Fashion-MNIST IDX files ({train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]), or a
            folder of class folders of images (DATA/<class>/<image>.png|jpg|jpeg|webp)
  EPOCHS    epochs of end-to-end fine-tuning (0: the linear head only)
  FRACTION  share of the training images whose labels are used, in (0, 1] (e.g. 0.01 for 1%)

options:
  --probe-epochs N  epochs of the linear head on the frozen encoder first (default 30)
  --lr X            encoder learning rate, AdamW (default 3e-4; the head gets 10x)
  --batch-size N    images per step, at least 2 (default 64)
  --max-test N      evaluate at most N held-out images (default 10000)
  --held-out X      folder data: share of each class held out for evaluation (default 0.2)
  --seed N          seed of the label subset, the split and the head (default 0)
  --threads N       libtorch CPU threads
  -h, --help        this text";

fn number<T: std::str::FromStr>(what: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{what}: {value:?} is not a valid number\n\n{USAGE}"))
}

impl Args {
    /// Parses the arguments after the program name. `Ok(None)`: help was asked for.
    pub fn parse(argv: &[String]) -> Result<Option<Args>, String> {
        let mut positional = Vec::new();
        let mut args = Args {
            export: PathBuf::new(),
            data: PathBuf::new(),
            epochs: 0,
            fraction: 1.0,
            probe_epochs: 30,
            lr: 3e-4,
            batch_size: 64,
            max_test: 10_000,
            held_out: 0.2,
            seed: 0,
            threads: None,
        };
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
                "--probe-epochs" => args.probe_epochs = number(a, value)?,
                "--lr" => args.lr = number(a, value)?,
                "--batch-size" => args.batch_size = number(a, value)?,
                "--max-test" => args.max_test = number(a, value)?,
                "--held-out" => args.held_out = number(a, value)?,
                "--seed" => args.seed = number(a, value)?,
                "--threads" => args.threads = Some(number(a, value)?),
                _ => return Err(format!("unknown option {a}\n\n{USAGE}")),
            }
        }
        let [export, data, epochs, fraction] = positional.as_slice() else {
            return Err(format!(
                "expected 4 arguments (EXPORT DATA EPOCHS FRACTION), got {}\n\n{USAGE}",
                positional.len()
            ));
        };
        args.export = PathBuf::from(export);
        args.data = PathBuf::from(data);
        args.epochs = number("EPOCHS", epochs)?;
        args.fraction = number("FRACTION", fraction)?;
        args.check()?;
        Ok(Some(args))
    }

    fn check(&self) -> Result<(), String> {
        if !(self.fraction > 0.0 && self.fraction <= 1.0) {
            return Err(format!(
                "FRACTION = {}: give a share in (0, 1], e.g. 0.1 for 10% of the labels",
                self.fraction
            ));
        }
        if !(self.held_out > 0.0 && self.held_out < 1.0) {
            return Err(format!(
                "--held-out {}: give a share in (0, 1), e.g. 0.2",
                self.held_out
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr <= 1.0) {
            return Err(format!(
                "--lr {}: give a learning rate in (0, 1], e.g. 3e-4",
                self.lr
            ));
        }
        if self.epochs > 100_000 || self.probe_epochs > 100_000 {
            return Err("EPOCHS and --probe-epochs: at most 100000".into());
        }
        if !(2..=65_536).contains(&self.batch_size) {
            return Err(format!(
                "--batch-size {}: give 2..=65536 (batch norm needs two images a step)",
                self.batch_size
            ));
        }
        if self.max_test == 0 {
            return Err("--max-test 0: evaluate at least one image".into());
        }
        if self.threads == Some(0) {
            return Err("--threads 0: give at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<Args>, String> {
        Args::parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn positional_arguments_and_options_parse() {
        let a = parse("exp data 3 0.1 --lr 1e-3 --seed 7 --max-test 50")
            .unwrap()
            .unwrap();
        assert_eq!(a.export, PathBuf::from("exp"));
        assert_eq!(a.data, PathBuf::from("data"));
        assert_eq!((a.epochs, a.fraction, a.lr, a.seed), (3, 0.1, 1e-3, 7));
        assert_eq!((a.max_test, a.batch_size, a.probe_epochs), (50, 64, 30));
        assert_eq!(parse("--help").unwrap(), None);
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        let e = parse("exp data 3").unwrap_err();
        assert!(e.starts_with("expected 4 arguments"), "{e}");
        let e = parse("exp data 3 0").unwrap_err();
        assert!(e.starts_with("FRACTION = 0"), "{e}");
        let e = parse("exp data three 0.5").unwrap_err();
        assert!(e.starts_with("EPOCHS: \"three\""), "{e}");
        let e = parse("exp data 1 0.5 --batch-size 1").unwrap_err();
        assert!(e.contains("batch norm"), "{e}");
        let e = parse("exp data 1 0.5 --lr").unwrap_err();
        assert!(e.starts_with("--lr needs a value"), "{e}");
        let e = parse("exp data 1 0.5 --bogus 1").unwrap_err();
        assert!(e.starts_with("unknown option --bogus"), "{e}");
    }
}
