//! Audio files -> mono `f32` samples in `[-1, 1]` at their own sample rate.
//!
//! WAV through `hound` (8/16/24/32-bit integer and 32-bit float PCM), Ogg
//! Vorbis through the pure-Rust `lewton`; several channels are mixed down
//! to mono by averaging. The format is chosen by the file extension.
pub mod ogg;
pub mod wav;

use crate::error::{AudioError, Result};
use std::path::Path;

/// Decoded audio: mono samples at `sample_rate`.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    /// Channels of the file before mixing down.
    pub channels: u16,
}

/// The extensions [`read_audio`] reads (lower case).
pub const EXTENSIONS: [&str; 3] = ["wav", "ogg", "oga"];

/// Whether `path` has an extension [`read_audio`] reads.
pub fn is_audio(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Reads a WAV or Ogg Vorbis file as mono samples; a file without samples is
/// [`AudioError::Empty`].
pub fn read_audio(path: &Path) -> Result<Decoded> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let decoded = match ext.as_str() {
        "wav" => wav::read_wav(path)?,
        "ogg" | "oga" => ogg::read_ogg(path)?,
        _ => {
            return Err(AudioError::Unsupported {
                path: path.to_path_buf(),
                reason: format!("extension '{ext}' (readable: {})", EXTENSIONS.join(", ")),
            })
        }
    };
    if decoded.samples.is_empty() {
        return Err(AudioError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(decoded)
}

/// Averages interleaved frames of `channels` channels into one channel.
pub(crate) fn mix_down(interleaved: &[f32], channels: usize) -> Vec<f32> {
    if channels <= 1 {
        return interleaved.to_vec();
    }
    interleaved
        .chunks_exact(channels)
        .map(|f| f.iter().sum::<f32>() / channels as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hound::{SampleFormat, WavSpec, WavWriter};

    fn spec(channels: u16, bits: u16, fmt: SampleFormat) -> WavSpec {
        WavSpec {
            channels,
            sample_rate: 16_000,
            bits_per_sample: bits,
            sample_format: fmt,
        }
    }

    /// Half of full scale, then minus a quarter, in every format.
    #[test]
    fn wav_integer_and_float_formats_read_to_the_same_values() {
        let dir = tempfile::tempdir().unwrap();
        for bits in [8u16, 16, 24, 32] {
            let path = dir.path().join(format!("i{bits}.wav"));
            let mut w = WavWriter::create(&path, spec(1, bits, SampleFormat::Int)).unwrap();
            let full = 1i64 << (bits - 1);
            for v in [full / 2, -full / 4, 0] {
                match bits {
                    8 => w.write_sample(v as i8).unwrap(),
                    16 => w.write_sample(v as i16).unwrap(),
                    _ => w.write_sample(v as i32).unwrap(),
                }
            }
            w.finalize().unwrap();
            let d = read_audio(&path).unwrap();
            assert_eq!(d.samples, vec![0.5, -0.25, 0.0], "{bits}-bit");
            assert_eq!((d.sample_rate, d.channels), (16_000, 1));
        }
        let path = dir.path().join("f32.wav");
        let mut w = WavWriter::create(&path, spec(1, 32, SampleFormat::Float)).unwrap();
        for v in [0.5f32, -0.25, 0.0] {
            w.write_sample(v).unwrap();
        }
        w.finalize().unwrap();
        assert_eq!(read_audio(&path).unwrap().samples, vec![0.5, -0.25, 0.0]);
    }

    #[test]
    fn stereo_is_mixed_down_to_mono() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stereo.wav");
        let mut w = WavWriter::create(&path, spec(2, 16, SampleFormat::Int)).unwrap();
        for (l, r) in [(16384i16, 0i16), (-16384, -16384), (8192, -8192)] {
            w.write_sample(l).unwrap();
            w.write_sample(r).unwrap();
        }
        w.finalize().unwrap();
        let d = read_audio(&path).unwrap();
        assert_eq!(d.channels, 2);
        assert_eq!(d.samples, vec![0.25, -0.5, 0.0]);
    }

    #[test]
    fn truncated_and_corrupt_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.wav");
        let mut w = WavWriter::create(&path, spec(1, 16, SampleFormat::Int)).unwrap();
        for i in 0..1000 {
            w.write_sample(i as i16).unwrap();
        }
        w.finalize().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 501]).unwrap();
        let err = read_audio(&path).unwrap_err().to_string();
        assert!(err.contains("cut.wav") && err.contains("WAV"), "{err}");
        std::fs::write(&path, &bytes[..20]).unwrap();
        let err = read_audio(&path).unwrap_err().to_string();
        assert!(err.contains("cut.wav"), "{err}");
        let ogg = dir.path().join("bad.ogg");
        std::fs::write(&ogg, b"OggS\0garbage garbage garbage").unwrap();
        let err = read_audio(&ogg).unwrap_err().to_string();
        assert!(
            err.contains("bad.ogg") && err.contains("Ogg Vorbis"),
            "{err}"
        );
        let flac = dir.path().join("x.flac");
        std::fs::write(&flac, b"fLaC").unwrap();
        let err = read_audio(&flac).unwrap_err().to_string();
        assert!(
            err.contains("x.flac") && err.contains("unsupported"),
            "{err}"
        );
    }

    #[test]
    fn unsupported_sample_formats_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f64.wav");
        // A valid header for 64-bit float PCM (format tag 3), two samples.
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36u32 + 16).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&3u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&16_000u32.to_le_bytes());
        b.extend_from_slice(&(16_000u32 * 8).to_le_bytes());
        b.extend_from_slice(&8u16.to_le_bytes());
        b.extend_from_slice(&64u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&[0u8; 16]);
        std::fs::write(&path, b).unwrap();
        let err = read_audio(&path).unwrap_err().to_string();
        assert!(
            err.contains("f64.wav") && err.contains("unsupported"),
            "{err}"
        );
    }
}
