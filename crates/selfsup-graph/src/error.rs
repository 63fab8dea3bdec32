//! The error type of the data side of `selfsup-graph`: readers, the SMILES
//! parser and graph construction. Every error names the file and, where it
//! applies, the line.
use std::path::PathBuf;

/// Everything that can go wrong while reading a graph.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// The file or folder could not be read.
    #[error("{path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A record that does not parse or does not fit the graph.
    #[error("{path}: line {line}: {reason}", path = .path.display())]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// A file whose content as a whole does not fit (wrong shape, counts
    /// that disagree with another file).
    #[error("{path}: {reason}", path = .path.display())]
    Format { path: PathBuf, reason: String },
    /// A graph that cannot be trained on (no node, no edge, no label).
    #[error("{0}")]
    Invalid(String),
}

impl GraphError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GraphError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn line(path: &std::path::Path, line: usize, reason: impl Into<String>) -> Self {
        GraphError::Line {
            path: path.to_path_buf(),
            line,
            reason: reason.into(),
        }
    }

    pub(crate) fn format(path: &std::path::Path, reason: impl Into<String>) -> Self {
        GraphError::Format {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

impl From<GraphError> for selfsup_core::Error {
    fn from(e: GraphError) -> Self {
        match e {
            GraphError::Io { path, source } => selfsup_core::Error::Io { path, source },
            // Bad input data, not a bad configuration: shown as-is.
            other => selfsup_core::Error::Data(other.to_string()),
        }
    }
}

/// `Result` with [`GraphError`].
pub type GraphResult<T> = std::result::Result<T, GraphError>;

/// Reads a whole file, naming it on failure.
pub(crate) fn read_bytes(path: &std::path::Path) -> GraphResult<Vec<u8>> {
    std::fs::read(path).map_err(|e| GraphError::io(path, e))
}

/// Reads a whole text file, naming it on failure.
pub(crate) fn read_text(path: &std::path::Path) -> GraphResult<String> {
    Ok(decode_text(&read_bytes(path)?, path)?.to_string())
}

/// `bytes` as UTF-8 text, or an error naming `path` and the offset of the
/// first invalid byte.
pub(crate) fn decode_text<'a>(bytes: &'a [u8], path: &std::path::Path) -> GraphResult<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| {
        GraphError::format(
            path,
            format!(
                "not UTF-8 (invalid byte at offset {}); save the file as UTF-8",
                e.valid_up_to()
            ),
        )
    })
}
