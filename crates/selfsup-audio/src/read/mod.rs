//! Audio files -> mono `f32` samples in `[-1, 1]` at their own sample rate.
//!
//! WAV through `hound` (8/16/24/32-bit integer and 32-bit float PCM), Ogg
//! Vorbis through the pure-Rust `lewton`; several channels are mixed down
//! to mono by averaging. The format is chosen by the file extension.
//!
//! Every reader checks the header before it allocates: a sample rate outside
//! [`MIN_SAMPLE_RATE`]`..=`[`MAX_SAMPLE_RATE`], more than [`MAX_CHANNELS`]
//! channels, or a clip longer than [`ReadLimits::max_seconds`] is an error
//! naming the file (a WAV header saying 1 Hz would otherwise turn a 48 KB file
//! into hours of audio and gigabytes after resampling).
//!
//! [`decode_audio`], [`decode_wav`] and [`decode_ogg`] read from memory (bytes
//! and a name for the errors) without touching the file system.
pub mod ogg;
pub mod wav;

pub use ogg::decode_ogg;
pub use wav::decode_wav;

use crate::error::{AudioError, Result};
use std::path::Path;

/// The lowest sample rate a file may declare (Hz).
pub const MIN_SAMPLE_RATE: u32 = 1_000;
/// The highest sample rate a file may declare (Hz).
pub const MAX_SAMPLE_RATE: u32 = 384_000;
/// The most channels a file may declare.
pub const MAX_CHANNELS: u32 = 64;
/// The default longest clip, seconds (`[data] max_seconds`).
pub const DEFAULT_MAX_SECONDS: f64 = 600.0;

/// Bounds on what one file may decode to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadLimits {
    /// The longest clip, seconds (`[data] max_seconds`): a longer file is an
    /// error (or skipped and counted with `skip_bad`) before it is decoded.
    pub max_seconds: f64,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_seconds: DEFAULT_MAX_SECONDS,
        }
    }
}

impl ReadLimits {
    /// The most frames (samples per channel) a clip at `rate` Hz may hold.
    pub fn max_frames(&self, rate: u32) -> u64 {
        let secs = if self.max_seconds.is_finite() && self.max_seconds > 0.0 {
            self.max_seconds
        } else {
            0.0
        };
        (secs * f64::from(rate)).floor() as u64
    }

    /// Refuses a declared rate or channel count outside the readable ranges.
    pub(crate) fn check_header(&self, path: &Path, rate: u32, channels: u32) -> Result<()> {
        if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
            return Err(AudioError::SampleRate {
                path: path.to_path_buf(),
                rate,
                min: MIN_SAMPLE_RATE,
                max: MAX_SAMPLE_RATE,
            });
        }
        if channels == 0 || channels > MAX_CHANNELS {
            return Err(AudioError::Unsupported {
                path: path.to_path_buf(),
                reason: format!(
                    "the header declares {channels} channels (readable: 1..={MAX_CHANNELS}; a corrupt header? re-encode the file)"
                ),
            });
        }
        Ok(())
    }

    /// Refuses `frames` at `rate` Hz when longer than the limit.
    pub(crate) fn check_frames(&self, path: &Path, frames: u64, rate: u32) -> Result<()> {
        if frames > self.max_frames(rate) {
            return Err(AudioError::TooLong {
                path: path.to_path_buf(),
                frames,
                rate,
                max_seconds: self.max_seconds,
            });
        }
        Ok(())
    }
}

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

/// The lower-cased extension of `path`, or an error naming the readable ones.
fn format_of(path: &Path) -> Result<String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if EXTENSIONS.contains(&ext.as_str()) {
        Ok(ext)
    } else {
        Err(AudioError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("extension '{ext}' (readable: {})", EXTENSIONS.join(", ")),
        })
    }
}

fn non_empty(path: &Path, decoded: Decoded) -> Result<Decoded> {
    if decoded.samples.is_empty() {
        return Err(AudioError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(decoded)
}

/// Reads a WAV or Ogg Vorbis file as mono samples; a file without samples is
/// [`AudioError::Empty`].
pub fn read_audio(path: &Path, limits: &ReadLimits) -> Result<Decoded> {
    let decoded = match format_of(path)?.as_str() {
        "wav" => wav::read_wav(path, limits)?,
        _ => ogg::read_ogg(path, limits)?,
    };
    non_empty(path, decoded)
}

/// Decodes the bytes of a WAV or Ogg Vorbis file (the format from the
/// extension of `name`, which errors name) as mono samples, without the file
/// system; a file without samples is [`AudioError::Empty`].
pub fn decode_audio(bytes: &[u8], name: &Path, limits: &ReadLimits) -> Result<Decoded> {
    let decoded = match format_of(name)?.as_str() {
        "wav" => decode_wav(bytes, name, limits)?,
        _ => decode_ogg(bytes, name, limits)?,
    };
    non_empty(name, decoded)
}

/// Runs a third-party decoder on one file; a panic inside it (a decoder bug
/// on a malformed file) becomes `AudioError::Unsupported` naming the file
/// instead of aborting the whole load. (A fuzzer's abort-on-panic hook still
/// sees it.)
pub(crate) fn guarded<T>(path: &Path, decode: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)).unwrap_or_else(|panic| {
        let why = selfsup_core::error::panic_message(panic.as_ref()).unwrap_or_default();
        Err(AudioError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("the decoder failed on this file ({why}); re-encode it, or set [data] skip_bad = true to skip and count such files"),
        })
    })
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
            let d = read_audio(&path, &ReadLimits::default()).unwrap();
            assert_eq!(d.samples, vec![0.5, -0.25, 0.0], "{bits}-bit");
            assert_eq!((d.sample_rate, d.channels), (16_000, 1));
        }
        let path = dir.path().join("f32.wav");
        let mut w = WavWriter::create(&path, spec(1, 32, SampleFormat::Float)).unwrap();
        for v in [0.5f32, -0.25, 0.0] {
            w.write_sample(v).unwrap();
        }
        w.finalize().unwrap();
        assert_eq!(
            read_audio(&path, &ReadLimits::default()).unwrap().samples,
            vec![0.5, -0.25, 0.0]
        );
    }

    /// Found by the fuzzer: a float WAV of huge finite samples reached the
    /// resampler, whose FFT overflowed and panicked.
    #[test]
    fn huge_float_samples_are_refused_naming_the_file_and_sample() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loud.wav");
        let mut w = WavWriter::create(&path, spec(1, 32, SampleFormat::Float)).unwrap();
        for v in [0.5f32, 3e38, 0.0] {
            w.write_sample(v).unwrap();
        }
        w.finalize().unwrap();
        let err = read_audio(&path, &ReadLimits::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("loud.wav") && err.contains("float sample 1"),
            "{err}"
        );
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
        let d = read_audio(&path, &ReadLimits::default()).unwrap();
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
        let err = read_audio(&path, &ReadLimits::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("cut.wav") && err.contains("WAV"), "{err}");
        std::fs::write(&path, &bytes[..20]).unwrap();
        let err = read_audio(&path, &ReadLimits::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("cut.wav"), "{err}");
        let ogg = dir.path().join("bad.ogg");
        std::fs::write(&ogg, b"OggS\0garbage garbage garbage").unwrap();
        let err = read_audio(&ogg, &ReadLimits::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad.ogg") && err.contains("Ogg Vorbis"),
            "{err}"
        );
        let flac = dir.path().join("x.flac");
        std::fs::write(&flac, b"fLaC").unwrap();
        let err = read_audio(&flac, &ReadLimits::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.flac") && err.contains("unsupported"),
            "{err}"
        );
    }

    /// A 16-bit mono PCM WAV of `n` zero samples whose header says `rate` Hz.
    fn wav_bytes(rate: u32, n: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + 2 * n).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * 2).to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&(2 * n).to_le_bytes());
        b.resize(b.len() + 2 * n as usize, 0);
        b
    }

    #[test]
    fn a_header_rate_outside_the_range_is_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one-hz.wav");
        // 48 KB saying 1 Hz: 6.7 hours of audio, 3 GB after resampling.
        std::fs::write(&path, wav_bytes(1, 24_000)).unwrap();
        let err = read_audio(&path, &ReadLimits::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("one-hz.wav")
                && err.contains("1 Hz")
                && err.contains("1000..=384000")
                && err.contains("skip_bad"),
            "{err}"
        );
        let err = decode_wav(
            &wav_bytes(500_000, 10),
            Path::new("mem.wav"),
            &ReadLimits::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("mem.wav") && err.contains("500000 Hz"),
            "{err}"
        );
    }

    #[test]
    fn a_clip_longer_than_max_seconds_is_refused_from_its_header() {
        let limits = ReadLimits { max_seconds: 1.0 };
        let ok = decode_audio(&wav_bytes(8_000, 8_000), Path::new("a.wav"), &limits).unwrap();
        assert_eq!((ok.samples.len(), ok.sample_rate), (8_000, 8_000));
        // The header announces 2 s; the data chunk is cut to 4 bytes, so the
        // refusal comes from the header, not from decoding.
        let mut b = wav_bytes(8_000, 16_000);
        b.truncate(48);
        let err = decode_audio(&b, Path::new("long.wav"), &limits)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("long.wav")
                && err.contains("16000 samples at 8000 Hz (2.0 s)")
                && err.contains("max_seconds = 1 s"),
            "{err}"
        );
        let err = decode_audio(b"xx", Path::new("x.mp3"), &limits)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.mp3") && err.contains("wav, ogg, oga"),
            "{err}"
        );
    }

    #[test]
    fn a_decoder_panic_is_an_error_naming_the_file() {
        let err = guarded::<()>(Path::new("odd.ogg"), || panic!("index out of bounds"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("odd.ogg")
                && err.contains("index out of bounds")
                && err.contains("skip_bad"),
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
        let err = read_audio(&path, &ReadLimits::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("f64.wav") && err.contains("unsupported"),
            "{err}"
        );
    }
}
