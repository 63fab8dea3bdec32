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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::SingleProcess;
    use crate::trainer::Silent;

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
