//! The error type of the data side of `selfsup-text`: corpus readers and
//! tokenizers. Every error names the file and, where it applies, the line,
//! record or byte offset.
use std::path::PathBuf;

/// Everything that can go wrong while reading a corpus or a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// The file or folder could not be read.
    #[error("{path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Bytes that are not UTF-8 (set `lossy_utf8 = true` to replace them).
    #[error(
        "{path}: invalid UTF-8 at byte offset {offset} (set [data] lossy_utf8 = true to replace invalid bytes with U+FFFD)",
        path = .path.display()
    )]
    Utf8 { path: PathBuf, offset: usize },
    /// A JSON Lines record that does not parse or lacks the text field.
    #[error("{path}: line {line}: {reason}", path = .path.display())]
    Jsonl {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// A file in a known format whose content does not fit it.
    #[error("{path}: {reason}", path = .path.display())]
    Format { path: PathBuf, reason: String },
    /// A tokenizer or vocabulary file that cannot be used.
    #[error("tokenizer {path}: {reason}", path = .path.display())]
    Tokenizer { path: PathBuf, reason: String },
    /// A corpus with nothing to train on.
    #[error("{0}")]
    Empty(String),
    /// A setting that cannot work (the message names the key and the range).
    #[error("{0}")]
    Config(String),
}

impl TextError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TextError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<TextError> for selfsup_core::Error {
    fn from(e: TextError) -> Self {
        match e {
            TextError::Io { path, source } => selfsup_core::Error::Io { path, source },
            TextError::Config(m) => selfsup_core::Error::Config(m),
            // Bad input data: shown as it is (it names the file), not as
            // "invalid configuration".
            other => selfsup_core::Error::Data(other.to_string()),
        }
    }
}

/// `Result` with [`TextError`].
pub type TextResult<T> = std::result::Result<T, TextError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_errors_are_not_configuration_errors() {
        let data: selfsup_core::Error = TextError::Utf8 {
            path: "c.txt".into(),
            offset: 3,
        }
        .into();
        assert!(matches!(data, selfsup_core::Error::Data(_)), "{data:?}");
        assert!(
            data.to_string().starts_with("c.txt: invalid UTF-8"),
            "{data}"
        );
        let cfg: selfsup_core::Error = TextError::Config("[model] max_len = 2".into()).into();
        assert!(matches!(cfg, selfsup_core::Error::Config(_)), "{cfg:?}");
    }
}
