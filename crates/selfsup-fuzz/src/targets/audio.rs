//! Audio readers: WAV (hound) and Ogg Vorbis (lewton), then the resampler.
use crate::engine::Target;
use crate::seeds;
use selfsup_audio::read::{decode_ogg, decode_wav, Decoded, ReadLimits};
use std::path::Path;

pub const TARGETS: [Target; 2] = [
    Target {
        name: "wav",
        about: "selfsup_audio::read::decode_wav + resample to 16 kHz",
        run: run_wav,
        seeds: seeds_wav,
        dict: &[
            b"RIFF",
            b"WAVE",
            b"fmt ",
            b"data",
            b"LIST",
            b"fact",
            b"\x01\x00",
            b"\x03\x00",
            b"\xfe\xff",
        ],
        max_len: 64 << 10,
    },
    Target {
        name: "ogg",
        about: "selfsup_audio::read::decode_ogg + resample to 16 kHz",
        run: run_ogg,
        seeds: seeds_ogg,
        dict: &[b"OggS", b"\x01vorbis", b"\x03vorbis", b"\x05vorbis", b"BCV"],
        max_len: 64 << 10,
    },
];

fn limits() -> ReadLimits {
    ReadLimits { max_seconds: 30.0 }
}

fn after(d: Decoded) -> Result<(), String> {
    assert!(d.channels >= 1, "zero channels accepted");
    // Long clips resample for a long time: the first second is enough.
    let n = d.samples.len().min(d.sample_rate as usize);
    selfsup_audio::resample::resample(&d.samples[..n], d.sample_rate, 16_000).map(|_| ())
}

fn run_wav(data: &[u8]) -> Result<(), String> {
    after(decode_wav(data, Path::new("fuzz.wav"), &limits()).map_err(|e| e.to_string())?)
}

fn run_ogg(data: &[u8]) -> Result<(), String> {
    after(decode_ogg(data, Path::new("fuzz.ogg"), &limits()).map_err(|e| e.to_string())?)
}

/// A canonical PCM WAV file.
pub fn wav(rate: u32, channels: u16, bits: u16, format: u16, frames: usize) -> Vec<u8> {
    let block = channels * bits / 8;
    let data_len = frames * block as usize;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len as u32).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&format.to_le_bytes());
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * block as u32).to_le_bytes());
    b.extend_from_slice(&block.to_le_bytes());
    b.extend_from_slice(&bits.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(data_len as u32).to_le_bytes());
    b.extend((0..data_len).map(|i| (i * 37 % 251) as u8));
    b
}

fn seeds_wav() -> Vec<Vec<u8>> {
    vec![
        wav(16_000, 1, 16, 1, 500),
        wav(8_000, 2, 8, 1, 300),
        wav(44_100, 1, 24, 1, 200),
        wav(22_050, 2, 32, 1, 100),
        wav(48_000, 1, 32, 3, 200),
    ]
}

fn seeds_ogg() -> Vec<Vec<u8>> {
    let mut out = vec![
        include_bytes!("../../seeds/tone-mono-16k.ogg").to_vec(),
        include_bytes!("../../seeds/tone-stereo-44k.ogg").to_vec(),
    ];
    // Real recordings, cut to their first 8 KiB (headers and about half a
    // second of audio: decoding is the slow part).
    for name in ["klettres", "ktuberling"] {
        out.extend(
            seeds::real(name, &["ogg"])
                .into_iter()
                .take(3)
                .map(|mut v| {
                    v.truncate(8 << 10);
                    v
                }),
        );
    }
    out
}
