//! Ogg Vorbis through the pure-Rust `lewton` decoder (16-bit output scaled to
//! `[-1, 1]`), any number of channels up to [`super::MAX_CHANNELS`] (mixed
//! down to mono). The identification header's rate and channels are checked
//! before decoding; the length (not in the header) while decoding, so a clip
//! longer than [`ReadLimits::max_seconds`] stops at the limit.
use super::{mix_down, Decoded, ReadLimits};
use crate::error::{AudioError, Result};
use lewton::inside_ogg::OggStreamReader;
use std::io::{Read, Seek};
use std::path::Path;

/// Reads an Ogg Vorbis file as mono samples.
pub fn read_ogg(path: &Path, limits: &ReadLimits) -> Result<Decoded> {
    let file = std::fs::File::open(path).map_err(|e| AudioError::io(path, e))?;
    decode_from(std::io::BufReader::new(file), path, limits)
}

/// Decodes the bytes of an Ogg Vorbis file as mono samples; `name` is the
/// file errors name. Reads no file.
pub fn decode_ogg(bytes: &[u8], name: &Path, limits: &ReadLimits) -> Result<Decoded> {
    decode_from(std::io::Cursor::new(bytes), name, limits)
}

fn decode_from<R: Read + Seek>(input: R, path: &Path, limits: &ReadLimits) -> Result<Decoded> {
    super::guarded(path, || decode_unguarded(input, path, limits))
}

fn decode_unguarded<R: Read + Seek>(input: R, path: &Path, limits: &ReadLimits) -> Result<Decoded> {
    let bad = |reason: String| AudioError::Ogg {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = OggStreamReader::new(input).map_err(|e| bad(e.to_string()))?;
    let channels = u32::from(reader.ident_hdr.audio_channels);
    let sample_rate = reader.ident_hdr.audio_sample_rate;
    limits.check_header(path, sample_rate, channels)?;
    let channels = channels as usize;
    let max_frames = limits.max_frames(sample_rate);
    let mut interleaved = Vec::new();
    loop {
        match reader.read_dec_packet_itl() {
            Ok(Some(packet)) => {
                let frames = ((interleaved.len() + packet.len()) / channels) as u64;
                if frames > max_frames {
                    limits.check_frames(path, frames, sample_rate)?;
                }
                interleaved.extend(packet.into_iter().map(|s| s as f32 / 32768.0))
            }
            Ok(None) => break,
            Err(e) => return Err(bad(format!("after {} samples: {e}", interleaved.len()))),
        }
    }
    Ok(Decoded {
        samples: mix_down(&interleaved, channels),
        sample_rate,
        channels: channels as u16,
    })
}
