//! The error type of `selfsup-core`.
use std::path::PathBuf;

/// Everything that can go wrong in core: bad configuration, checkpoints that do
/// not fit the model, a diverging run, I/O.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error("non-finite loss ({value}) at step {step}; the last good checkpoint is {last_good}")]
    NonFiniteLoss {
        step: u64,
        value: f64,
        last_good: String,
    },
    #[error("training interrupted at step {step}; checkpoint written to {checkpoint}, continue with --resume")]
    Interrupted { step: u64, checkpoint: PathBuf },
    #[error("device: {0}")]
    Device(String),
    #[error("distributed run: {0}")]
    Distributed(String),
    #[error("evaluation: {0}")]
    Eval(String),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
