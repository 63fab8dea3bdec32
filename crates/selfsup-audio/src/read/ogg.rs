//! Ogg Vorbis through the pure-Rust `lewton` decoder (16-bit output scaled to
//! `[-1, 1]`), any number of channels (mixed down to mono).
use super::{mix_down, Decoded};
use crate::error::{AudioError, Result};
use lewton::inside_ogg::OggStreamReader;
use std::path::Path;

/// Reads an Ogg Vorbis file as mono samples.
pub fn read_ogg(path: &Path) -> Result<Decoded> {
    let bad = |reason: String| AudioError::Ogg {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| AudioError::io(path, e))?;
    let mut reader =
        OggStreamReader::new(std::io::BufReader::new(file)).map_err(|e| bad(e.to_string()))?;
    let channels = reader.ident_hdr.audio_channels.max(1) as usize;
    let sample_rate = reader.ident_hdr.audio_sample_rate;
    if sample_rate == 0 {
        return Err(bad("the header gives a sample rate of 0 Hz".into()));
    }
    let mut interleaved = Vec::new();
    loop {
        match reader.read_dec_packet_itl() {
            Ok(Some(packet)) => interleaved.extend(packet.into_iter().map(|s| s as f32 / 32768.0)),
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
