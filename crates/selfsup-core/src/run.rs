//! The run skeleton every modality's `pretrain` workflow stands on.
//!
//! A workflow reads its own data, builds its own views, method and
//! evaluator, and exports in its own layout; everything else a run does is
//! here, once: the `[run]` table ([`RunSettings`]), what the caller hands
//! over besides the config ([`RunOptions`]), and [`Run`], which checks the
//! shared ranges, sets the thread count, resolves the device for this
//! process's local rank, writes `config.toml`, builds the configured
//! [`Trainer`], seeds the trained and the random-weights models, and writes
//! `summary.json` at the end.
use crate::device::DeviceChoice;
use crate::distributed::{Collective, Distributed, Shard};
use crate::trainer::{Observer, Trainer, TrainerConfig};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

/// The config file every run writes into its folder (the resolved config).
pub const CONFIG_FILE: &str = "config.toml";
/// The summary every run writes into its folder at the end.
pub const SUMMARY_FILE: &str = "summary.json";
/// XORed into `[trainer] seed` for the random-weights control: the same
/// architecture, initialised from another seed, evaluated by the same code.
pub const RANDOM_WEIGHTS_SEED: u64 = 0x0BAD_5EED;

/// A modality's default `[run] batch_size` (a marker type per modality,
/// since serde cannot derive over const generics).
pub trait BatchDefault {
    const BATCH: usize;
}

/// `[run]`: where and how wide a run trains; the same table in every
/// modality. `B` gives the modality's default batch size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, bound = "")]
pub struct RunSettings<B: BatchDefault> {
    pub device: DeviceChoice,
    /// Examples per batch, per process: images, sequences, crops, graphs
    /// or pairs, as the modality trains.
    pub batch_size: usize,
    /// libtorch intra-op threads (default: libtorch's choice).
    pub threads: Option<usize>,
    /// Full-batch workflows (the graph node-level methods): full passes per
    /// trainer epoch, so that evaluation, checkpoints and the plot come every
    /// N steps. A workflow that trains in mini-batches refuses it
    /// ([`RunSettings::refuse_steps_per_epoch`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps_per_epoch: Option<usize>,
    /// Which modality's default batch (no value; `..Default::default()`).
    #[serde(skip)]
    pub batch_default: std::marker::PhantomData<B>,
}

impl<B: BatchDefault> Default for RunSettings<B> {
    fn default() -> Self {
        Self {
            device: DeviceChoice::Auto,
            batch_size: B::BATCH,
            threads: None,
            steps_per_epoch: None,
            batch_default: std::marker::PhantomData,
        }
    }
}

impl<B: BatchDefault> RunSettings<B> {
    /// The ranges of `[run]`, as a message naming the key.
    pub fn check(&self) -> std::result::Result<(), String> {
        threads_in_range(self.threads)?;
        if self.batch_size == 0 {
            return Err("[run] batch_size = 0: give at least 1".into());
        }
        if self.steps_per_epoch == Some(0) {
            return Err("[run] steps_per_epoch = 0: give at least 1".into());
        }
        Ok(())
    }

    /// For a workflow that trains in mini-batches: `[run] steps_per_epoch`
    /// means nothing there and is refused, saying who takes it.
    pub fn refuse_steps_per_epoch(&self, modality: &str) -> std::result::Result<(), String> {
        match self.steps_per_epoch {
            Some(n) => Err(format!(
                "[run] steps_per_epoch = {n}: {modality} trains in mini-batches, an epoch is one \
                 pass over the data (steps_per_epoch is for the graph node-level methods); remove it"
            )),
            None => Ok(()),
        }
    }

    /// The four settings the command-line flags may override.
    pub fn common<'a>(&'a mut self, trainer: &'a mut TrainerConfig) -> Common<'a> {
        Common {
            trainer,
            device: &mut self.device,
            batch_size: &mut self.batch_size,
            threads: &mut self.threads,
        }
    }
}

/// Mutable views of the settings every modality shares, for
/// [`crate::workflow::Overrides`].
pub struct Common<'a> {
    pub trainer: &'a mut TrainerConfig,
    pub device: &'a mut DeviceChoice,
    pub batch_size: &'a mut usize,
    pub threads: &'a mut Option<usize>,
}

/// `~/.cache/selfsup/datasets`, where `cargo xtask fetch` puts datasets:
/// the data root when none is given.
pub fn default_data_root() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache/selfsup/datasets")
}

/// Everything a run needs besides its config.
pub struct RunOptions<'a> {
    /// `--data`: the dataset folder (vision, image folders) or the data root
    /// the config's relative source paths are taken from (the other
    /// modalities); `None`: the config's own path, or [`default_data_root`].
    pub data: Option<PathBuf>,
    pub run_dir: PathBuf,
    pub resume: bool,
    pub observer: &'a mut dyn Observer,
    pub stop: Arc<AtomicBool>,
    pub git_commit: Option<String>,
    /// Reports what the run is doing outside training (reading, tokenizing,
    /// evaluating).
    pub log: &'a mut dyn FnMut(&str),
    /// A data-parallel run's collective (`None`: one process).
    pub distributed: Option<Distributed>,
}

impl RunOptions<'_> {
    /// The data root: `--data`, else [`default_data_root`].
    pub fn data_root(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(default_data_root)
    }

    /// Refuses a data-parallel launch for a workflow (`what`) that trains in
    /// one process only, rather than have every rank train alone.
    pub fn single_process(&self, what: &str) -> Result<()> {
        match &self.distributed {
            Some(d) => Err(Error::Config(format!(
                "{what} trains in one process only, but this process is rank {} of {}: \
                 launch it without torchrun / srun",
                d.comm.rank(),
                d.comm.world_size()
            ))),
            None => Ok(()),
        }
    }
}

/// A run in progress: what every workflow does around its own steps.
///
/// [`Run::start`] before reading any data; [`Run::trainer`] once, to train;
/// [`Run::finish`] with the workflow's summary at the end.
pub struct Run<'a> {
    /// The device this process trains on (its local rank's GPU, or the CPU).
    pub device: tch::Device,
    /// Whether this process evaluates, exports and writes the run folder
    /// (rank 0 of a data-parallel run; always, in one process).
    pub primary: bool,
    /// Which slice of every global batch this process trains on.
    pub shard: Shard,
    pub run_dir: PathBuf,
    pub resume: bool,
    pub observer: &'a mut dyn Observer,
    data: Option<PathBuf>,
    log: &'a mut dyn FnMut(&str),
    collective: Option<Box<dyn Collective>>,
    stop: Arc<AtomicBool>,
    git_commit: Option<String>,
    config_toml: String,
    started: Instant,
}

impl<'a> Run<'a> {
    /// Starts a run of `config_toml` (the resolved config, as the workflow
    /// writes it): checks the trainer's and `[run]`'s ranges, sets libtorch's
    /// thread count, resolves the device for this process's local rank and,
    /// on the primary process, creates the run folder and writes
    /// `config.toml` into it. `what` names the workflow in errors
    /// ("graph pre-training"); with `data_parallel` false a data-parallel
    /// launch is refused.
    pub fn start<B: BatchDefault>(
        what: &str,
        settings: &RunSettings<B>,
        trainer: &TrainerConfig,
        config_toml: String,
        data_parallel: bool,
        mut opts: RunOptions<'a>,
    ) -> Result<Self> {
        check_common(trainer, settings.threads)?;
        settings.check().map_err(Error::Config)?;
        if !data_parallel {
            opts.single_process(what)?;
        }
        let dist = opts.distributed.take();
        let primary = dist.as_ref().is_none_or(Distributed::is_primary);
        let device = settings
            .device
            .resolve_on(dist.as_ref().map_or(0, |d| d.local_rank))?;
        if let Some(t) = settings.threads {
            tch::set_num_threads(t as i32);
        }
        let shard = dist
            .as_ref()
            .map_or(Shard::SINGLE, |d| Shard::of(d.comm.as_ref()));
        if primary {
            std::fs::create_dir_all(&opts.run_dir).map_err(|e| Error::io(&opts.run_dir, e))?;
            crate::tensor_io::write_atomic(
                &opts.run_dir.join(CONFIG_FILE),
                config_toml.as_bytes(),
            )?;
        }
        Ok(Self {
            device,
            primary,
            shard,
            run_dir: opts.run_dir,
            resume: opts.resume,
            observer: opts.observer,
            data: opts.data,
            log: opts.log,
            collective: dist.map(|d| d.comm),
            stop: opts.stop,
            git_commit: opts.git_commit,
            config_toml,
            started: Instant::now(),
        })
    }

    /// `--data` as given (`None`: the config's own path or the default root).
    pub fn data(&self) -> Option<&Path> {
        self.data.as_deref()
    }

    /// The data root: `--data`, else [`default_data_root`].
    pub fn data_root(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(default_data_root)
    }

    /// Says what the run is doing outside training (primary process only).
    pub fn log(&mut self, line: &str) {
        if self.primary {
            (self.log)(line);
        }
    }

    /// The trainer for `cfg` (the run's `[trainer]`, possibly adjusted by
    /// the workflow): this run's folder, device, stop flag, provenance and,
    /// in a data-parallel run, its collective (handed over once: a second
    /// call gets a single-process trainer).
    pub fn trainer(&mut self, cfg: TrainerConfig) -> Trainer {
        let trainer = Trainer::new(cfg, &self.run_dir, self.device)
            .with_stop_flag(self.stop.clone())
            .with_provenance(self.config_toml.clone(), self.git_commit.clone());
        match self.collective.take() {
            Some(comm) => trainer.with_collective(comm),
            None => trainer,
        }
    }

    /// In a data-parallel run, before [`Run::trainer`]: waits until every
    /// rank gets here (text waits for the primary's tokenizer file); a
    /// failed collective is an error. Nothing in one process.
    pub fn barrier(&self) -> Result<()> {
        if let Some(c) = &self.collective {
            c.barrier();
            c.check()?;
        }
        Ok(())
    }

    /// Seconds since [`Run::start`].
    pub fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Ends the run: on the primary process, writes `summary` as
    /// `summary.json` (with the process's peak memory added as
    /// `peak_rss_mb`) into the run folder. Returns the summary.
    pub fn finish<S: Serialize>(self, summary: S) -> Result<S> {
        if self.primary {
            let mut json = serde_json::to_value(&summary)
                .map_err(|e| Error::Config(format!("the run summary: {e}")))?;
            if let Some(obj) = json.as_object_mut() {
                obj.insert(
                    "peak_rss_mb".into(),
                    serde_json::json!(crate::metrics::peak_rss_mb()),
                );
            }
            let text = serde_json::to_string_pretty(&json)
                .map_err(|e| Error::Config(format!("the run summary: {e}")))?;
            crate::tensor_io::write_atomic(&self.run_dir.join(SUMMARY_FILE), text.as_bytes())?;
        }
        Ok(summary)
    }
}

/// Seeds libtorch for the trained model: `[trainer] seed`.
pub fn seed_weights(seed: u64) {
    tch::manual_seed(seed as i64);
}

/// Seeds libtorch for the random-weights control: `[trainer] seed` XOR
/// [`RANDOM_WEIGHTS_SEED`], the same in every modality.
pub fn seed_random_weights(seed: u64) {
    tch::manual_seed((seed ^ RANDOM_WEIGHTS_SEED) as i64);
}

/// Trainable parameters of a variable store.
pub fn trainable_parameters(vs: &tch::nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

/// Refuses `[run] threads = 0` (libtorch aborts on it) and absurd counts.
pub fn check_threads(threads: Option<usize>) -> Result<()> {
    threads_in_range(threads).map_err(Error::Config)
}

fn threads_in_range(threads: Option<usize>) -> std::result::Result<(), String> {
    match threads {
        Some(0) => Err(
            "[run] threads = 0 (or --threads 0): give at least 1, or leave it out for libtorch's default"
                .into(),
        ),
        Some(t) if t > 4096 => Err(format!(
            "[run] threads = {t}: at most 4096 intra-op threads"
        )),
        _ => Ok(()),
    }
}

/// The ranges every modality's run settings share, as a message naming the
/// key: the trainer's ([`TrainerConfig::validate`]) and the thread count.
/// For a modality's own `validate`, which adds the config file's name.
pub fn common_ranges(
    trainer: &crate::trainer::TrainerConfig,
    threads: Option<usize>,
) -> std::result::Result<(), String> {
    trainer.validate()?;
    threads_in_range(threads)
}

/// [`common_ranges`] as a configuration error, made before any data is read.
pub fn check_common(trainer: &crate::trainer::TrainerConfig, threads: Option<usize>) -> Result<()> {
    common_ranges(trainer, threads).map_err(Error::Config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::SingleProcess;
    use crate::trainer::Silent;

    #[test]
    fn impossible_trainer_and_thread_settings_are_refused_naming_the_key() {
        use crate::trainer::TrainerConfig;
        let ok = TrainerConfig::default();
        assert!(check_common(&ok, Some(2)).is_ok());
        assert!(check_common(&ok, None).is_ok());
        let cases: Vec<(TrainerConfig, Option<usize>, &str)> = vec![
            (
                TrainerConfig {
                    epochs: 0,
                    ..ok.clone()
                },
                None,
                "epochs = 0",
            ),
            (
                TrainerConfig {
                    optimizer: crate::optim::OptimConfig {
                        lr: -0.1,
                        ..ok.optimizer.clone()
                    },
                    ..ok.clone()
                },
                None,
                "lr = -0.1",
            ),
            (
                TrainerConfig {
                    optimizer: crate::optim::OptimConfig {
                        lr: f64::NAN,
                        ..ok.optimizer.clone()
                    },
                    ..ok.clone()
                },
                None,
                "lr = NaN",
            ),
            (
                TrainerConfig {
                    optimizer: crate::optim::OptimConfig {
                        momentum: 1.5,
                        ..ok.optimizer.clone()
                    },
                    ..ok.clone()
                },
                None,
                "momentum = 1.5",
            ),
            (
                TrainerConfig {
                    grad_clip: Some(0.0),
                    ..ok.clone()
                },
                None,
                "grad_clip = 0",
            ),
            (ok.clone(), Some(0), "threads = 0"),
        ];
        for (cfg, threads, needle) in cases {
            let err = check_common(&cfg, threads).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn summary_figures_read_back_to_the_last_bit() {
        // serde_json's default float parser may miss the last bit (its
        // `float_roundtrip` feature, set for the workspace, makes it exact);
        // tests and resumed runs compare summary figures with `==`. These
        // values came out one bit off without it.
        for x in [
            0.976_190_476_190_476_3_f64,
            0.1 + 0.2,
            1.0 / 3.0,
            6.02e23,
            5e-324,
        ] {
            let text = serde_json::to_string(&serde_json::json!({ "x": x })).unwrap();
            let back: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                back["x"].as_f64().map(f64::to_bits),
                Some(x.to_bits()),
                "{text}"
            );
        }
    }

    #[test]
    fn a_single_process_workflow_refuses_a_data_parallel_launch() {
        let mut observer = Silent;
        let mut log = |_: &str| {};
        let mut opts = RunOptions {
            data: None,
            run_dir: PathBuf::from("run"),
            resume: false,
            observer: &mut observer,
            stop: Arc::new(AtomicBool::new(false)),
            git_commit: None,
            log: &mut log,
            distributed: None,
        };
        assert!(opts.single_process("graph pre-training").is_ok());
        opts.distributed = Some(Distributed {
            comm: Box::new(SingleProcess),
            local_rank: 0,
        });
        let err = opts
            .single_process("graph pre-training")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("graph pre-training") && err.contains("rank 0 of 1"),
            "{err}"
        );
    }
}
