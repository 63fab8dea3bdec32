//! The error type of the data side of `selfsup-vision`: readers, augmentations
//! and the loader.
//!
//! Every data error names the file it concerns and what is wrong with it
//! (record index or byte offset where that applies), so a corrupt download can
//! be found and fixed without a debugger.
use std::path::PathBuf;

/// Everything that can go wrong while reading, augmenting or loading images.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened or read.
    #[error("{path}: {source}", path = .path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A gzip stream that is truncated or corrupt.
    #[error(
        "{path}: truncated or corrupt gzip stream (failed after {decoded} decompressed bytes): {source}",
        path = .path.display()
    )]
    Gzip {
        /// The compressed file.
        path: PathBuf,
        /// Bytes successfully decompressed before the failure.
        decoded: usize,
        /// What the decompressor said.
        #[source]
        source: std::io::Error,
    },
    /// An IDX file whose magic number is not the expected one.
    #[error(
        "{path}: wrong IDX magic number 0x{found:08x} at byte offset 0, expected 0x{expected:08x} ({kind})",
        path = .path.display()
    )]
    IdxMagic {
        /// The IDX file.
        path: PathBuf,
        /// The magic number found (first four bytes, big-endian).
        found: u32,
        /// The magic number an IDX file of this kind must start with.
        expected: u32,
        /// What the file should hold (`images` or `labels`).
        kind: &'static str,
    },
    /// A file whose length disagrees with its header (truncated, padded, or a
    /// header too short to parse).
    #[error("{path}: {reason}", path = .path.display())]
    BadLength {
        /// The file.
        path: PathBuf,
        /// What the header says and what the file holds.
        reason: String,
    },
    /// The images file and the labels file hold different numbers of items.
    #[error(
        "{images} holds {n_images} images but {labels} holds {n_labels} labels",
        images = .images.display(),
        labels = .labels.display()
    )]
    CountMismatch {
        /// The images file.
        images: PathBuf,
        /// Number of images it holds.
        n_images: usize,
        /// The labels file.
        labels: PathBuf,
        /// Number of labels it holds.
        n_labels: usize,
    },
    /// A CIFAR file whose length is not a multiple of the record size.
    #[error(
        "{path}: {len} bytes is not a multiple of the {record_size}-byte record size: record {record} \
         (byte offset {offset}) is truncated, {have} of {record_size} bytes present",
        path = .path.display()
    )]
    CifarLength {
        /// The CIFAR binary file.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// Bytes per record (label bytes + 3072 pixels).
        record_size: usize,
        /// Index of the incomplete record (0-based).
        record: usize,
        /// Byte offset where the incomplete record starts.
        offset: usize,
        /// Bytes of that record present in the file.
        have: usize,
    },
    /// A label outside the range of known classes.
    #[error(
        "{path}: record {record} (byte offset {offset}) has label {label}, but there are only {classes} classes",
        path = .path.display()
    )]
    BadLabel {
        /// The file holding the label.
        path: PathBuf,
        /// Index of the record / item (0-based).
        record: usize,
        /// Byte offset of the label in the (decompressed) file.
        offset: usize,
        /// The label read.
        label: u32,
        /// Number of classes.
        classes: usize,
    },
    /// An image file that cannot be decoded.
    #[error("{path}: unreadable or corrupt image: {reason}", path = .path.display())]
    CorruptImage {
        /// The image file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// A dataset folder or file that holds no images.
    #[error("{path}: {what}", path = .path.display())]
    Empty {
        /// The folder or file.
        path: PathBuf,
        /// What is missing.
        what: String,
    },
    /// The dataset (folder or one of its files) is not where it was looked for.
    #[error("{path}: {what}; {hint}", path = .path.display())]
    MissingDataset {
        /// The folder or file that was looked for.
        path: PathBuf,
        /// What is missing.
        what: String,
        /// How to get it (e.g. "fetch it with `cargo xtask fetch fashion-mnist`").
        hint: String,
    },
    /// Invalid augmentation / loader settings, or data that does not fit them.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The background batch thread died.
    #[error("data loader: {0}")]
    Loader(String),
    /// A libtorch error while building tensors.
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

    /// A dataset that is missing, with the hint to fetch it with
    /// `cargo xtask fetch <name>`.
    pub fn missing_dataset(path: impl Into<PathBuf>, what: impl Into<String>, name: &str) -> Self {
        Error::MissingDataset {
            path: path.into(),
            what: what.into(),
            hint: format!("fetch it with `cargo xtask fetch {name}`"),
        }
    }

    /// A file whose length disagrees with its header.
    pub fn bad_length(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::BadLength {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl From<Error> for selfsup_core::Error {
    /// Settings stay configuration errors; bad or missing data becomes core's
    /// data error carrying the full message, not prefixed "invalid
    /// configuration" (I/O errors keep their path and cause; libtorch errors
    /// stay libtorch errors).
    fn from(e: Error) -> Self {
        match e {
            Error::Io { path, source } => selfsup_core::Error::Io { path, source },
            Error::Torch(t) => selfsup_core::Error::Torch(t),
            Error::Config(m) => selfsup_core::Error::Config(m),
            other => selfsup_core::Error::Data(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_file_and_the_fault() {
        let e = Error::missing_dataset("/d/fm", "no such folder", "fashion-mnist");
        let s = e.to_string();
        assert!(
            s.contains("/d/fm") && s.contains("cargo xtask fetch fashion-mnist"),
            "{s}"
        );
        let e = Error::CifarLength {
            path: "/d/data_batch_1.bin".into(),
            len: 6147,
            record_size: 3073,
            record: 2,
            offset: 6146,
            have: 1,
        };
        let s = e.to_string();
        assert!(
            s.contains("data_batch_1.bin") && s.contains("record 2"),
            "{s}"
        );
        let core: selfsup_core::Error = e.into();
        let s = core.to_string();
        assert!(s.contains("record 2"), "{s}");
        assert!(!s.contains("invalid configuration"), "a data error: {s}");
        let core: selfsup_core::Error = Error::Config("augment.views = 0".into()).into();
        assert!(core.to_string().starts_with("invalid configuration"));
    }
}
