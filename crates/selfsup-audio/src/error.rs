//! The error type of the data side of `selfsup-audio`: readers, resampling,
//! folders and label files. Every error names the file and, where it applies,
//! the line or the record.
use std::path::PathBuf;

/// Everything that can go wrong while reading audio.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The file or folder could not be read.
    #[error("{path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A WAV file that is truncated or corrupt.
    #[error("{path}: not a readable WAV file ({reason})", path = .path.display())]
    Wav { path: PathBuf, reason: String },
    /// An Ogg Vorbis file that is truncated or corrupt.
    #[error("{path}: not a readable Ogg Vorbis file ({reason})", path = .path.display())]
    Ogg { path: PathBuf, reason: String },
    /// A sample format or container this crate does not read.
    #[error("{path}: unsupported audio ({reason})", path = .path.display())]
    Unsupported { path: PathBuf, reason: String },
    /// A header declaring a sample rate outside the readable range.
    #[error(
        "{path}: the header declares a sample rate of {rate} Hz, outside the readable {min}..={max} Hz (a corrupt header? re-encode the file, or set [data] skip_bad = true to skip and count such files)",
        path = .path.display()
    )]
    SampleRate {
        path: PathBuf,
        rate: u32,
        /// The readable range, inclusive (Hz).
        min: u32,
        max: u32,
    },
    /// A clip longer than `[data] max_seconds`.
    #[error(
        "{path}: {frames} samples at {rate} Hz ({secs:.1} s) exceed the limit of [data] max_seconds = {max_seconds} s (raise max_seconds if the file is right, or set [data] skip_bad = true to skip and count such files)",
        path = .path.display(),
        secs = *.frames as f64 / f64::from(*.rate)
    )]
    TooLong {
        path: PathBuf,
        frames: u64,
        rate: u32,
        max_seconds: f64,
    },
    /// A file without a single sample.
    #[error("{path}: the file holds no audio samples", path = .path.display())]
    Empty { path: PathBuf },
    /// A clip shorter than the model's receptive field.
    #[error(
        "{path}: {samples} samples at 16 kHz, shorter than the receptive field of {min} samples",
        path = .path.display()
    )]
    TooShort {
        path: PathBuf,
        samples: usize,
        min: usize,
    },
    /// A labels CSV line that cannot be used.
    #[error("{path}: line {line}: {reason}", path = .path.display())]
    Labels {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// The resampler refused the clip.
    #[error("{path}: resampling from {from} Hz failed ({reason})", path = .path.display())]
    Resample {
        path: PathBuf,
        from: u32,
        reason: String,
    },
    /// A folder with nothing to read.
    #[error("{0}")]
    NoAudio(String),
}

impl AudioError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AudioError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<AudioError> for selfsup_core::Error {
    fn from(e: AudioError) -> Self {
        match e {
            AudioError::Io { path, source } => selfsup_core::Error::Io { path, source },
            other => selfsup_core::Error::Data(other.to_string()),
        }
    }
}

/// `Result` with [`AudioError`].
pub type Result<T> = std::result::Result<T, AudioError>;
