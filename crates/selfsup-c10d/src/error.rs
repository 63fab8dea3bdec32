//! The error type of `selfsup-c10d`.

/// What can go wrong when joining or running a distributed job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A launcher variable is missing or does not parse.
    #[error("launcher environment: {0}")]
    Launch(String),
    /// Rendezvous or process-group creation failed.
    #[error("rank {rank} of {world_size} could not join the run at {master}: {message}")]
    Join {
        rank: usize,
        world_size: usize,
        master: String,
        message: String,
    },
    /// A collective failed (typically: another rank exited or timed out).
    #[error("rank {rank} of {world_size}: {op} failed: {message}")]
    Collective {
        rank: usize,
        world_size: usize,
        op: &'static str,
        message: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
