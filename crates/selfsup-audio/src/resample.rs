//! Resampling to the model's rate (16 kHz) with rubato's synchronous FFT
//! resampler: band-limited, and for a fixed ratio both fast and exact in
//! length (`round(len * to / from)` samples, the resampler's delay trimmed).
use crate::read::{MAX_SAMPLE_RATE, MIN_SAMPLE_RATE};
use rubato::audioadapter_buffers::direct::SequentialSliceOfVecs;
use rubato::{Fft, FixedSync, Resampler};

/// The sample rate every model of this crate consumes.
pub const TARGET_RATE: u32 = 16_000;

/// `samples` at `from` Hz resampled to `to` Hz (a copy when the rates agree).
/// Both rates must lie in the readers' range
/// ([`MIN_SAMPLE_RATE`]`..=`[`MAX_SAMPLE_RATE`]): that bounds the FFT sizes and
/// the output, at most `to / from` (<= 384) times the input.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>, String> {
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    for rate in [from, to] {
        if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
            return Err(format!(
                "cannot resample from {from} Hz to {to} Hz: rates must lie in {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE} Hz"
            ));
        }
    }
    if let Some((i, x)) = samples
        .iter()
        .enumerate()
        .find(|(_, x)| !(x.is_finite() && x.abs() <= crate::read::wav::MAX_FLOAT_SAMPLE))
    {
        return Err(format!(
            "sample {i} is {x}: samples to resample must be finite and within +-{:e}",
            crate::read::wav::MAX_FLOAT_SAMPLE
        ));
    }
    let mut fft = Fft::<f32>::new(from as usize, to as usize, 1024, 1, FixedSync::Input)
        .map_err(|e| e.to_string())?;
    let input = vec![samples.to_vec()];
    let adapter =
        SequentialSliceOfVecs::new(&input, 1, samples.len()).map_err(|e| e.to_string())?;
    let out = fft
        .process_all(&adapter, samples.len(), None)
        .map_err(|e| e.to_string())?;
    let mut data = out.take_data();
    let want = (samples.len() as f64 * to as f64 / from as f64).round() as usize;
    data.resize(want, 0.0);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::PI;

    /// The frequency of the strongest bin of a plain DFT over `xs` (Hz).
    fn dominant_frequency(xs: &[f32], rate: u32) -> f64 {
        let n = xs.len();
        let mut best = (0.0, 0usize);
        for k in 1..n / 2 {
            let (mut re, mut im) = (0.0f64, 0.0f64);
            for (t, &x) in xs.iter().enumerate() {
                let a = 2.0 * std::f64::consts::PI * (k * t) as f64 / n as f64;
                re += x as f64 * a.cos();
                im -= x as f64 * a.sin();
            }
            let p = re * re + im * im;
            if p > best.0 {
                best = (p, k);
            }
        }
        best.1 as f64 * rate as f64 / n as f64
    }

    /// Found by the fuzzer: huge finite samples overflowed rubato's FFT,
    /// which then panicked (`unwrap` on realfft's error).
    #[test]
    fn huge_or_non_finite_samples_are_an_error_not_a_panic() {
        for bad in [3e38f32, -1e7, f32::NAN, f32::INFINITY] {
            let xs = vec![bad; 200];
            let err = resample(&xs, 48_000, TARGET_RATE).unwrap_err();
            assert!(err.contains("sample 0"), "{err}");
        }
    }

    #[test]
    fn a_sine_keeps_its_frequency_and_duration() {
        for (from, freq) in [
            (44_100u32, 440.0f32),
            (22_050, 1000.0),
            (8_000, 300.0),
            (48_000, 2500.0),
        ] {
            let secs = 0.5;
            let n = (from as f32 * secs) as usize;
            let xs: Vec<f32> = (0..n)
                .map(|t| (2.0 * PI * freq * t as f32 / from as f32).sin() * 0.5)
                .collect();
            let ys = resample(&xs, from, TARGET_RATE).unwrap();
            assert_eq!(
                ys.len(),
                (n as f64 * 16_000.0 / from as f64).round() as usize
            );
            let got = dominant_frequency(&ys, TARGET_RATE);
            assert!(
                (got - freq as f64).abs() <= 2.0,
                "{from} Hz: {freq} Hz became {got} Hz"
            );
            // The amplitude survives (away from the edges).
            let mid = &ys[ys.len() / 4..3 * ys.len() / 4];
            let peak = mid.iter().fold(0.0f32, |m, &y| m.max(y.abs()));
            assert!((peak - 0.5).abs() < 0.05, "{from} Hz: peak {peak}");
        }
    }

    #[test]
    fn rates_outside_the_readable_range_are_refused() {
        let xs = vec![0.1; 100];
        for (from, to) in [(1, TARGET_RATE), (0, TARGET_RATE), (TARGET_RATE, 500_000)] {
            let err = resample(&xs, from, to).unwrap_err();
            assert!(err.contains("1000..=384000"), "{err}");
        }
    }

    #[test]
    fn same_rate_is_a_copy() {
        let xs = vec![0.1, -0.2, 0.3];
        assert_eq!(resample(&xs, 16_000, 16_000).unwrap(), xs);
    }
}
