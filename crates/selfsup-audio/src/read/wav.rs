//! WAV through `hound`: 8/16/24/32-bit integer PCM (scaled to `[-1, 1]`) and
//! 32-bit float PCM, any number of channels (mixed down to mono). A data
//! chunk that ends early (a truncated file) is an error, not a short clip.
use super::{mix_down, Decoded};
use crate::error::{AudioError, Result};
use hound::{SampleFormat, WavReader};
use std::path::Path;

/// Reads a WAV file as mono samples.
pub fn read_wav(path: &Path) -> Result<Decoded> {
    let bad = |reason: String| AudioError::Wav {
        path: path.to_path_buf(),
        reason,
    };
    let reader = WavReader::open(path).map_err(|e| match e {
        hound::Error::IoError(io) if io.kind() != std::io::ErrorKind::UnexpectedEof => {
            AudioError::io(path, io)
        }
        hound::Error::Unsupported => AudioError::Unsupported {
            path: path.to_path_buf(),
            reason: "a WAV encoding hound does not read (compressed or extensible subtype)".into(),
        },
        hound::Error::FormatError(msg) if msg.contains("bits per sample") => {
            AudioError::Unsupported {
                path: path.to_path_buf(),
                reason: format!("{msg} (readable: 8/16/24/32-bit int, 32-bit float)"),
            }
        }
        other => bad(other.to_string()),
    })?;
    let spec = reader.spec();
    let channels = spec.channels.max(1);
    let expected = reader.len() as usize;
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (SampleFormat::Float, 32) => reader
            .into_samples::<f32>()
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?,
        (SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f64;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| (v as f64 * scale) as f32))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| bad(e.to_string()))?
        }
        (fmt, bits) => {
            return Err(AudioError::Unsupported {
                path: path.to_path_buf(),
                reason: format!(
                    "{bits}-bit {fmt:?} samples (readable: 8/16/24/32-bit int, 32-bit float)"
                ),
            })
        }
    };
    if interleaved.len() != expected {
        return Err(bad(format!(
            "truncated: the header announces {expected} samples, the file holds {}",
            interleaved.len()
        )));
    }
    if interleaved.iter().any(|s| !s.is_finite()) {
        return Err(bad("non-finite float samples".into()));
    }
    Ok(Decoded {
        samples: mix_down(&interleaved, channels as usize),
        sample_rate: spec.sample_rate,
        channels,
    })
}
