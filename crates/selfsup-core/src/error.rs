//! The error type of `selfsup-core`.
use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong in core: bad configuration, checkpoints that do
/// not fit the model, a diverging run, I/O.
///
/// `Display` and `source` are written by hand: an I/O error prints its OS
/// error in its own message and is therefore *not* reported as a source
/// again (anyhow's `{:#}` would print it twice).
#[derive(Debug)]
pub enum Error {
    /// `{path}: {source}`; the OS error is part of the message, not a source.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `invalid configuration: {0}`.
    Config(String),
    /// Input data that cannot be used (a file, record or line is named in
    /// the message): not a configuration error, so not prefixed as one.
    Data(String),
    /// `checkpoint {path}: {reason}`.
    Checkpoint {
        path: PathBuf,
        reason: String,
    },
    /// A loss that is NaN or infinite.
    NonFiniteLoss {
        step: u64,
        value: f64,
        last_good: String,
    },
    /// Stopped on request after writing a checkpoint.
    Interrupted {
        step: u64,
        checkpoint: PathBuf,
    },
    Device(String),
    Distributed(String),
    Eval(String),
    /// libtorch's error, shown as it is.
    Torch(tch::TchError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Config(m) => write!(f, "invalid configuration: {m}"),
            Error::Data(m) => f.write_str(m),
            Error::Checkpoint { path, reason } => {
                write!(f, "checkpoint {}: {reason}", path.display())
            }
            Error::NonFiniteLoss {
                step,
                value,
                last_good,
            } => write!(
                f,
                "non-finite loss ({value}) at step {step}; the last good checkpoint is {last_good}"
            ),
            Error::Interrupted { step, checkpoint } => write!(
                f,
                "training interrupted at step {step}; checkpoint written to {}, continue with --resume",
                checkpoint.display()
            ),
            Error::Device(m) => write!(f, "device: {m}"),
            Error::Distributed(m) => write!(f, "distributed run: {m}"),
            Error::Eval(m) => write!(f, "evaluation: {m}"),
            Error::Torch(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Transparent: libtorch's error stands for itself.
            Error::Torch(e) => std::error::Error::source(e),
            // The I/O error is already in the message.
            _ => None,
        }
    }
}

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error::Torch(e)
    }
}

/// The text of a panic's payload (`panic!` with a `String` or a `&str`, as
/// third-party decoders and tch's panicking calls raise), `None` for any
/// other payload: what every `catch_unwind` of the workspace reports.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// anyhow's `{:#}` prints every error of the chain: the OS error must
    /// appear once, not as message and again as source.
    #[test]
    fn an_io_error_prints_its_os_error_once_in_a_chain() {
        let e = Error::io(
            "/nowhere/x.bin",
            std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory"),
        );
        let mut chain = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            chain.push_str(&format!(": {s}"));
            src = s.source();
        }
        assert_eq!(chain.matches("No such file").count(), 1, "{chain}");
        assert!(chain.contains("/nowhere/x.bin"), "{chain}");
    }
}
