//! What the `selfsup` binary asks of a modality crate: one registry entry
//! ([`Modality`]) per crate, so the binary routes a config, a checkpoint or
//! an export by its `[method] name` without knowing any method itself.
//! Adding a method to a modality touches its own crate (its method file and
//! its `methods()` list), never the binary.
use crate::checkpoint;
use crate::device::DeviceChoice;
use crate::run::{Common, RunOptions};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// One modality: its method names, its config parser, and what it can do
/// with one of its checkpoints.
pub trait Modality: Sync {
    /// The modality's name as users read it ("vision", "text", ...).
    fn name(&self) -> &'static str;

    /// Its `[method] name`s.
    fn methods(&self) -> &'static [&'static str];

    /// Parses and checks a config whose `[method] name` is one of
    /// [`Modality::methods`]; errors name `origin`.
    fn parse(&self, text: &str, origin: &Path) -> Result<Box<dyn Plan>>;

    /// The evaluations [`Modality::evaluate`] offers on a checkpoint
    /// (`"knn"`, `"linear"`); empty when it offers none.
    fn evaluations(&self) -> &'static [&'static str];

    /// Evaluates a checkpoint's frozen encoder; returns the lines to print.
    fn evaluate(&self, request: &EvalRequest<'_>) -> Result<Vec<String>>;

    /// Exports a checkpoint's encoder into `out` in the layout its library
    /// loads (on the CPU); returns the line to print.
    fn export(&self, checkpoint: &Path, config_toml: &str, out: &Path) -> Result<String>;
}

/// `selfsup eval PROTOCOL --checkpoint FILE [--data DIR] [--device D]`.
pub struct EvalRequest<'a> {
    /// One of [`Modality::evaluations`].
    pub protocol: &'a str,
    pub checkpoint: &'a Path,
    /// The resolved config the checkpoint carries.
    pub config_toml: &'a str,
    /// `--data`: the dataset folder or data root (`None`: the config's).
    pub data: Option<&'a Path>,
    /// `--device` (default `auto`; never the checkpoint's `[run] device`, so
    /// a GPU run's checkpoint evaluates on a machine without one).
    pub device: DeviceChoice,
}

/// A parsed, checked run config of one modality, ready to pre-train.
pub trait Plan {
    /// The settings every modality shares, for the command-line flags.
    fn common(&mut self) -> Common<'_>;

    /// The resolved config as TOML (written beside every checkpoint).
    fn to_toml(&self) -> String;

    /// Whether it trains data-parallel under torchrun / srun.
    fn data_parallel(&self) -> bool {
        false
    }

    /// What one training example is worth in the progress bar's unit, and
    /// that unit (text: `max_len` and "tokens/s"); `None`: examples/s.
    fn progress_unit(&self) -> Option<(f64, &'static str)> {
        None
    }

    /// `--recordings DIR`: train on a folder of the user's own recordings
    /// instead of the config's sources (before the config is written
    /// anywhere); returns a line saying what changed. Only audio takes it.
    fn use_recordings(&mut self, dir: PathBuf) -> Result<String> {
        Err(Error::Config(format!(
            "--recordings {} is for audio configs ([method] name = \"wav2vec2\"); give this \
             config's data with --data",
            dir.display()
        )))
    }

    /// Pre-trains, evaluates and exports; writes `config.toml` and
    /// `summary.json` into the run folder.
    fn pretrain(&self, opts: RunOptions<'_>) -> Result<Box<dyn Report>>;
}

/// A finished run's summary, as the terminal shows it.
pub trait Report {
    /// The summary for a reader, a few lines.
    fn lines(&self) -> Vec<String>;
}

/// The command-line flags that override the shared settings.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub epochs: Option<usize>,
    pub device: Option<DeviceChoice>,
    pub batch_size: Option<usize>,
    pub threads: Option<usize>,
}

impl Overrides {
    /// Writes the given flags over `[trainer] epochs` and `[run] device /
    /// batch_size / threads`, then checks the trainer's and the thread
    /// settings, before any data is read.
    pub fn apply(&self, c: Common<'_>) -> Result<()> {
        if let Some(e) = self.epochs {
            c.trainer.epochs = e;
        }
        if let Some(d) = self.device {
            *c.device = d;
        }
        if let Some(b) = self.batch_size {
            *c.batch_size = b;
        }
        if let Some(t) = self.threads {
            *c.threads = Some(t);
        }
        crate::run::check_common(c.trainer, *c.threads)
    }
}

/// The `[method] name` of a config's TOML text (`None`: no such key, or
/// not TOML).
pub fn method_name(config_toml: &str) -> Option<String> {
    let value: toml::Value = config_toml.parse().ok()?;
    value
        .get("method")?
        .get("name")?
        .as_str()
        .map(str::to_string)
}

/// The method a checkpoint was trained with and the config it carries.
pub fn checkpoint_method(path: &Path) -> Result<(String, String)> {
    let meta = checkpoint::read_meta(path)?;
    let method = method_name(&meta.config).unwrap_or_else(|| meta.method.clone());
    Ok((method, meta.config))
}

/// The registry entry that owns `method`.
pub fn find<'a>(registry: &[&'a dyn Modality], method: &str) -> Option<&'a dyn Modality> {
    registry
        .iter()
        .copied()
        .find(|m| m.methods().contains(&method))
}

/// Every modality's method names, one modality a line (for errors).
pub fn method_list(registry: &[&dyn Modality]) -> String {
    registry
        .iter()
        .map(|m| format!("  {}: {}", m.name(), m.methods().join(", ")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{BatchDefault, RunSettings};
    use crate::trainer::TrainerConfig;

    #[derive(Debug, Clone, PartialEq)]
    struct Small;
    impl BatchDefault for Small {
        const BATCH: usize = 32;
    }
    #[derive(Debug, Clone, PartialEq)]
    struct Large;
    impl BatchDefault for Large {
        const BATCH: usize = 256;
    }

    struct Fake(&'static str, &'static [&'static str]);
    impl Modality for Fake {
        fn name(&self) -> &'static str {
            self.0
        }
        fn methods(&self) -> &'static [&'static str] {
            self.1
        }
        fn parse(&self, _: &str, o: &Path) -> Result<Box<dyn Plan>> {
            Err(Error::Config(o.display().to_string()))
        }
        fn evaluations(&self) -> &'static [&'static str] {
            &[]
        }
        fn evaluate(&self, _: &EvalRequest<'_>) -> Result<Vec<String>> {
            Ok(vec![])
        }
        fn export(&self, _: &Path, _: &str, _: &Path) -> Result<String> {
            Ok(String::new())
        }
    }

    #[test]
    fn the_registry_finds_the_owner_of_a_method_and_lists_them_all() {
        let (a, b) = (
            Fake("vision", &["simclr", "byol"]),
            Fake("graph", &["grace"]),
        );
        let reg: [&dyn Modality; 2] = [&a, &b];
        assert_eq!(find(&reg, "grace").map(|m| m.name()), Some("graph"));
        assert_eq!(find(&reg, "byol").map(|m| m.name()), Some("vision"));
        assert!(find(&reg, "mlm").is_none());
        assert_eq!(method_list(&reg), "  vision: simclr, byol\n  graph: grace");
    }

    #[test]
    fn method_names_are_read_from_the_method_table() {
        assert_eq!(
            method_name("[method]\nname = \"dino\"\n").as_deref(),
            Some("dino")
        );
        assert_eq!(method_name("[run]\nthreads = 2\n"), None);
        assert_eq!(method_name("not toml ["), None);
    }

    #[test]
    fn overrides_write_the_flags_and_check_the_ranges() {
        let mut run = RunSettings::<Small>::default();
        let mut trainer = TrainerConfig::default();
        let o = Overrides {
            epochs: Some(3),
            device: Some(DeviceChoice::Cpu),
            batch_size: Some(8),
            threads: Some(2),
        };
        o.apply(run.common(&mut trainer)).unwrap();
        assert_eq!(
            (trainer.epochs, run.device, run.batch_size, run.threads),
            (3, DeviceChoice::Cpu, 8, Some(2))
        );
        let zero = Overrides {
            threads: Some(0),
            ..Overrides::default()
        };
        let err = zero.apply(run.common(&mut trainer)).unwrap_err();
        assert!(err.to_string().contains("threads = 0"), "{err}");
    }

    #[test]
    fn run_settings_default_batch_is_the_modality_s_and_ranges_are_checked() {
        let parsed: RunSettings<Large> = toml::from_str("device = \"cpu\"").unwrap();
        assert_eq!(parsed.batch_size, 256);
        assert!(toml::from_str::<RunSettings<Large>>("batch = 3").is_err());
        let zero = RunSettings::<Small> {
            batch_size: 0,
            ..Default::default()
        };
        assert!(zero.check().unwrap_err().contains("batch_size = 0"));
        let steps = RunSettings::<Small> {
            steps_per_epoch: Some(5),
            ..Default::default()
        };
        assert!(steps
            .refuse_steps_per_epoch("vision")
            .unwrap_err()
            .contains("steps_per_epoch = 5"));
    }
}
