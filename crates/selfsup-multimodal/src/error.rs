//! The error type of the data side of `selfsup-multimodal`: captions files,
//! image files and registry datasets. Every error names the file and, where it
//! applies, the line of the captions file.
use std::path::PathBuf;

/// What can go wrong while reading image-caption pairs.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// A file or folder that cannot be read.
    #[error("{path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A record of a captions file that does not parse.
    #[error("{path}: line {line}: {reason}", path = .path.display())]
    Record {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// A caption that is empty or whitespace only.
    #[error("{path}: line {line}: empty caption (set [data] skip_bad = true to skip and count such pairs)", path = .path.display())]
    EmptyCaption { path: PathBuf, line: usize },
    /// The same image with the same caption a second time.
    #[error("{path}: line {line}: duplicate pair (image {image:?}, same caption as line {first}; set [data] skip_bad = true to skip and count duplicates)", path = .path.display())]
    Duplicate {
        path: PathBuf,
        line: usize,
        first: usize,
        image: String,
    },
    /// A caption naming an image that does not exist.
    #[error("{path}: line {line}: image {image} does not exist (set [data] skip_bad = true to skip and count such pairs)", path = .path.display(), image = .image.display())]
    MissingImage {
        path: PathBuf,
        line: usize,
        image: PathBuf,
    },
    /// A caption naming an image outside the images folder (an absolute path,
    /// or `..` climbing out of it, resolved lexically).
    #[error("{path}: line {line}: image path {image:?} leaves the images folder {root} (absolute, or `..` past it) or names no file: captions must name images inside it (set [data] skip_bad = true to skip and count such pairs)", path = .path.display(), root = .root.display())]
    OutsideRoot {
        path: PathBuf,
        line: usize,
        image: String,
        root: PathBuf,
    },
    /// An image whose extension is not a supported format.
    #[error("{path}: line {line}: image {image} is not a supported format (png, jpg, jpeg){hint}", path = .path.display(), image = .image.display(), hint = skip_hint(.line))]
    Unsupported {
        path: PathBuf,
        line: usize,
        image: PathBuf,
    },
    /// An image file that exists but does not decode.
    #[error("{path}: line {line}: image {image} cannot be read: {reason}{hint}", path = .path.display(), image = .image.display(), hint = skip_hint(.line))]
    Unreadable {
        path: PathBuf,
        line: usize,
        image: PathBuf,
        reason: String,
    },
    /// A registry dataset folder that is missing or incomplete.
    #[error("{path}: {what} (fetch it with `cargo xtask fetch {name}`, or give the data root that holds it with --data)", path = .path.display())]
    MissingDataset {
        path: PathBuf,
        what: String,
        name: String,
    },
    /// Nothing left to train or evaluate on.
    #[error("{0}")]
    Empty(String),
}

fn skip_hint(line: &usize) -> &'static str {
    if *line == 0 {
        ""
    } else {
        " (set [data] skip_bad = true to skip and count such pairs)"
    }
}

impl PairError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PairError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<PairError> for selfsup_core::Error {
    fn from(e: PairError) -> Self {
        match e {
            PairError::Io { path, source } => selfsup_core::Error::Io { path, source },
            other => selfsup_core::Error::Data(other.to_string()),
        }
    }
}

/// `Result` with [`PairError`].
pub type PairResult<T> = std::result::Result<T, PairError>;
