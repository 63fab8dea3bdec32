//! What a modality's `pretrain` workflow needs besides its config: where the
//! data and the run folder are, whether to resume, whom to report to, when
//! to stop, and the data-parallel group when there is one. The text, graph,
//! audio and image-text crates take this one type (vision keeps its own:
//! its data folder is optional and it logs through the observer only).
use crate::distributed::Distributed;
use crate::trainer::Observer;
use crate::{Error, Result};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Everything a run needs besides its config.
pub struct RunOptions<'a> {
    /// The data root: relative source paths are taken from here.
    pub data_root: PathBuf,
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
    fn a_single_process_workflow_refuses_a_data_parallel_launch() {
        let mut observer = Silent;
        let mut log = |_: &str| {};
        let mut opts = RunOptions {
            data_root: PathBuf::from("."),
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
