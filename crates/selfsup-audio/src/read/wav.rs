//! WAV through `hound`: 8/16/24/32-bit integer PCM (scaled to `[-1, 1]`) and
//! 32-bit float PCM, any number of channels up to [`super::MAX_CHANNELS`]
//! (mixed down to mono). A data chunk that ends early (a truncated file) is
//! an error, not a short clip. The header's rate, channels and length are
//! checked against [`ReadLimits`] before any sample is read.
use super::{mix_down, Decoded, ReadLimits};
use crate::error::{AudioError, Result};
use hound::{SampleFormat, WavReader};
use std::io::Read;
use std::path::Path;

/// The largest float sample magnitude read (nominally 1): beyond it the
/// resampler's FFT overflows to infinities.
pub const MAX_FLOAT_SAMPLE: f32 = 1e6;

/// Reads a WAV file as mono samples.
pub fn read_wav(path: &Path, limits: &ReadLimits) -> Result<Decoded> {
    let file = std::fs::File::open(path).map_err(|e| AudioError::io(path, e))?;
    decode_from(std::io::BufReader::new(file), path, limits)
}

/// Decodes the bytes of a WAV file as mono samples; `name` is the file errors
/// name. Reads no file.
pub fn decode_wav(bytes: &[u8], name: &Path, limits: &ReadLimits) -> Result<Decoded> {
    decode_from(std::io::Cursor::new(bytes), name, limits)
}

fn decode_from<R: Read>(input: R, path: &Path, limits: &ReadLimits) -> Result<Decoded> {
    super::guarded(path, || decode_unguarded(input, path, limits))
}

fn decode_unguarded<R: Read>(input: R, path: &Path, limits: &ReadLimits) -> Result<Decoded> {
    let bad = |reason: String| AudioError::Wav {
        path: path.to_path_buf(),
        reason,
    };
    let reader = WavReader::new(input).map_err(|e| match e {
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
    limits.check_header(path, spec.sample_rate, u32::from(spec.channels))?;
    limits.check_frames(path, u64::from(reader.duration()), spec.sample_rate)?;
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
    if let Some((i, s)) = interleaved
        .iter()
        .enumerate()
        .find(|(_, s)| !(s.is_finite() && s.abs() <= MAX_FLOAT_SAMPLE))
    {
        return Err(bad(format!(
            "float sample {i} is {s}: float WAV samples must be finite and within \
             +-{MAX_FLOAT_SAMPLE:e} (nominally +-1); re-encode the file"
        )));
    }
    Ok(Decoded {
        samples: mix_down(&interleaved, channels as usize),
        sample_rate: spec.sample_rate,
        channels,
    })
}
