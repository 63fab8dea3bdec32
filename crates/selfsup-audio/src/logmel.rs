//! The log-mel filterbank baseline: 25 ms Hann windows every 10 ms, a
//! 512-point power spectrum, 40 triangular mel filters (HTK mel scale,
//! 0-8 kHz), `log(energy + 1e-6)`, summarised per clip by the mean and the
//! standard deviation of each band over time (80 features).
use tch::{Device, Kind, Tensor};

/// Analysis window, samples (25 ms at 16 kHz).
pub const WIN: i64 = 400;
/// Hop between frames, samples (10 ms at 16 kHz).
pub const HOP: i64 = 160;
const NFFT: i64 = 512;
/// Mel bands of the baseline.
pub const BANDS: i64 = 40;

fn hz_to_mel(f: f64) -> f64 {
    2595.0 * (1.0 + f / 700.0).log10()
}

fn mel_to_hz(m: f64) -> f64 {
    700.0 * (10f64.powf(m / 2595.0) - 1.0)
}

/// `[NFFT / 2 + 1, BANDS]` triangular filters at 16 kHz.
pub fn filterbank() -> Tensor {
    let bins = (NFFT / 2 + 1) as usize;
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(8000.0));
    let edges: Vec<f64> = (0..BANDS as usize + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (BANDS + 1) as f64))
        .collect();
    let mut w = vec![0.0f32; bins * BANDS as usize];
    for b in 0..BANDS as usize {
        let (l, c, r) = (edges[b], edges[b + 1], edges[b + 2]);
        for (k, row) in w.chunks_mut(BANDS as usize).enumerate() {
            let f = k as f64 * 16_000.0 / NFFT as f64;
            let v = if f > l && f <= c {
                (f - l) / (c - l)
            } else if f > c && f < r {
                (r - f) / (r - c)
            } else {
                0.0
            };
            row[b] = v as f32;
        }
    }
    Tensor::from_slice(&w).view([bins as i64, BANDS])
}

/// `log(mel energy + 1e-6)` of every [`WIN`]-sample window, [`HOP`] apart,
/// along the last dimension of `wave` (`[..., L]` -> `[..., frames,
/// BANDS]`, `L >= WIN`); `window` is a Hann window of [`WIN`] and `fbank`
/// the [`filterbank`], both on `wave`'s device (callers keep them).
pub fn log_mel_frames(wave: &Tensor, window: &Tensor, fbank: &Tensor) -> Tensor {
    let frames = wave.unfold(-1, WIN, HOP) * window;
    let power = frames.fft_rfft(NFFT, -1, "backward").abs().square();
    (power.matmul(fbank) + 1e-6).log()
}

/// Mean and std over time of the log-mel energies of one clip (16 kHz
/// samples; clips shorter than a window are zero-padded to one).
pub fn logmel_summary(samples: &[f32]) -> Tensor {
    let mut x = samples.to_vec();
    if x.len() < WIN as usize {
        x.resize(WIN as usize, 0.0);
    }
    let wave = Tensor::from_slice(&x);
    let window = Tensor::hann_window(WIN, (Kind::Float, Device::Cpu));
    let logmel = log_mel_frames(&wave, &window, &filterbank());
    let mean = logmel.mean_dim(0, false, Kind::Float);
    let std = logmel.std_dim(0, false, false);
    Tensor::cat(&[mean, std], 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_lights_up_its_band() {
        let tone = |f: f32| -> Vec<f32> {
            (0..8000)
                .map(|t| (2.0 * std::f32::consts::PI * f * t as f32 / 16_000.0).sin())
                .collect()
        };
        let low = logmel_summary(&tone(300.0));
        let high = logmel_summary(&tone(4000.0));
        assert_eq!(low.size(), vec![2 * BANDS]);
        let peak = |t: &Tensor| t.narrow(0, 0, BANDS).argmax(0, false).int64_value(&[]);
        assert!(
            peak(&low) < peak(&high),
            "{} vs {}",
            peak(&low),
            peak(&high)
        );
        assert_eq!(logmel_summary(&[0.1; 100]).size(), vec![2 * BANDS]);
    }
}
