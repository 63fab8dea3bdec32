//! Test-time corruptions in the style of ImageNet-C (Hendrycks & Dietterich
//! 2019, "Benchmarking Neural Network Robustness to Common Corruptions and
//! Perturbations", arXiv:1903.12261): Gaussian noise, Gaussian blur and
//! contrast, three severities each, for `selfsup eval robustness`.
//!
//! Every corruption works on pixels in `[0, 1]` (the bytes divided by 255),
//! before the normalisation an encoder expects; the result is clipped to
//! `[0, 1]` and rounded back to bytes, as the published ImageNet-C and
//! CIFAR-10-C files are stored. The parameters, per severity 1 / 2 / 3:
//!
//! | corruption       | parameter                                 | 1    | 2    | 3    |
//! |------------------|-------------------------------------------|------|------|------|
//! | `gaussian_noise` | noise standard deviation on `[0, 1]`      | 0.08 | 0.12 | 0.18 |
//! | `gaussian_blur`  | blur sigma in pixels on a 32-pixel side   | 0.5  | 0.75 | 1.0  |
//! | `contrast`       | factor around each channel's image mean   | 0.4  | 0.3  | 0.2  |
//!
//! Noise and contrast are ImageNet-C's severities 1-3 (they do not depend
//! on the image size). The blur sigma is in pixels, so it is scaled by the
//! image's larger side over 32 (0.44 / 0.66 / 0.88 pixels on 28x28
//! Fashion-MNIST), spanning CIFAR-10-C's range (0.4 to 1.0 pixels on 32x32);
//! ImageNet-C's own sigmas (1 to 6 pixels on 224x224) would be under half a
//! pixel here. The blur kernel reaches 4 sigma each way (scikit-image's
//! default truncation) and reflects at the borders.
//!
//! Noise is seeded: image `i` draws from a ChaCha stream of `(seed, i)`, so
//! a corrupted set is the same on every machine and in any thread order,
//! and the same standard-normal draws are scaled by each severity's sigma
//! (common random numbers: severities differ only in strength).
use super::blur::{gaussian_blur, BlurScratch};
use crate::data::ImageDataset;
use crate::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Severities run from 1 (mildest) to this.
pub const MAX_SEVERITY: u8 = 3;

/// Noise standard deviation on `[0, 1]` pixels at severities 1, 2, 3.
pub const NOISE_SIGMA: [f64; 3] = [0.08, 0.12, 0.18];

/// Blur sigma in pixels on an image whose larger side is 32, at severities
/// 1, 2, 3 (scaled by `side / 32`).
pub const BLUR_SIGMA_AT_32: [f64; 3] = [0.5, 0.75, 1.0];

/// Contrast factor around each channel's image mean at severities 1, 2, 3.
pub const CONTRAST_FACTOR: [f64; 3] = [0.4, 0.3, 0.2];

/// One corruption of a test image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Corruption {
    /// Additive Gaussian noise, independent per pixel and channel.
    GaussianNoise,
    /// A separable Gaussian blur.
    GaussianBlur,
    /// Contrast reduced around each channel's mean over the image.
    Contrast,
}

impl Corruption {
    /// Every corruption, in the order reports list them.
    pub const ALL: [Corruption; 3] = [
        Corruption::GaussianNoise,
        Corruption::GaussianBlur,
        Corruption::Contrast,
    ];

    /// The name configs and reports use: `gaussian_noise`, `gaussian_blur`
    /// or `contrast`.
    pub fn name(self) -> &'static str {
        match self {
            Corruption::GaussianNoise => "gaussian_noise",
            Corruption::GaussianBlur => "gaussian_blur",
            Corruption::Contrast => "contrast",
        }
    }

    /// The corruption called `name`, if there is one.
    pub fn parse(name: &str) -> Option<Corruption> {
        Corruption::ALL.into_iter().find(|c| c.name() == name)
    }

    /// What [`Corruption::parameter`] measures, for reports.
    pub fn parameter_name(self) -> &'static str {
        match self {
            Corruption::GaussianNoise => "sigma",
            Corruption::GaussianBlur => "sigma_px",
            Corruption::Contrast => "factor",
        }
    }

    /// The strength at `severity` (1 to [`MAX_SEVERITY`]) on images whose
    /// larger side is `side` pixels: the noise sigma, the blur sigma in
    /// pixels, or the contrast factor (see the [module docs](self)). A
    /// severity out of range is an error naming the range.
    pub fn parameter(self, severity: u8, side: usize) -> Result<f64> {
        let i = match severity {
            1..=MAX_SEVERITY => usize::from(severity - 1),
            _ => {
                return Err(Error::Config(format!(
                    "{} severity {severity}: give a severity from 1 to {MAX_SEVERITY}",
                    self.name()
                )))
            }
        };
        let table = match self {
            Corruption::GaussianNoise => NOISE_SIGMA,
            Corruption::GaussianBlur => BLUR_SIGMA_AT_32.map(|s| s * side.max(1) as f64 / 32.0),
            Corruption::Contrast => CONTRAST_FACTOR,
        };
        table
            .get(i)
            .copied()
            .ok_or_else(|| Error::Config(format!("{} severity {severity}", self.name())))
    }
}

/// A standard-normal draw (Box-Muller on two uniforms; the first is kept
/// away from 0 so its logarithm is finite).
fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f32 {
    let u1 = 1.0 - rng.gen::<f64>();
    let u2 = rng.gen::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// Adds `sigma` times a standard normal from `rng` to every value of `img`
/// (pixels in `[0, 1]`; clipping comes later).
pub fn add_gaussian_noise<R: Rng + ?Sized>(img: &mut [f32], sigma: f32, rng: &mut R) {
    for v in img.iter_mut() {
        *v += sigma * standard_normal(rng);
    }
}

/// Moves every value of an HWC image with `c` channels towards its
/// channel's mean over the image: `(x - mean) * factor + mean`. A factor of
/// 0 leaves each channel constant, 1 leaves the image as it is.
pub fn reduce_contrast(img: &mut [f32], c: usize, factor: f32) {
    let c = c.max(1);
    let pixels = (img.len() / c).max(1) as f32;
    let mut means = vec![0f32; c];
    for px in img.chunks_exact(c) {
        for (m, &v) in means.iter_mut().zip(px) {
            *m += v;
        }
    }
    for m in means.iter_mut() {
        *m /= pixels;
    }
    for px in img.chunks_exact_mut(c) {
        for (v, &m) in px.iter_mut().zip(&means) {
            *v = (*v - m) * factor + m;
        }
    }
}

/// Blurs an `h x w x c` HWC image with a Gaussian of `sigma` pixels, the
/// kernel reaching `4 sigma` each way (at most 255 wide).
pub fn blur(img: &mut [f32], h: usize, w: usize, c: usize, sigma: f32, s: &mut BlurScratch) {
    if img.len() != h * w * c || sigma <= 0.0 {
        return;
    }
    let half = (4.0 * sigma).ceil().clamp(1.0, 127.0) as usize;
    gaussian_blur(img, h, w, c, 2 * half + 1, sigma, s);
}

/// A copy of `d` with every image corrupted by `corruption` at `severity`
/// (labels, classes and order kept; the name gains `+corruption@severity`).
/// `seed` fixes the noise (see the [module docs](self)); the other
/// corruptions draw nothing.
pub fn corrupt_dataset(
    d: &ImageDataset,
    corruption: Corruption,
    severity: u8,
    seed: u64,
) -> Result<ImageDataset> {
    let (h, w, c) = (d.height, d.width, d.channels);
    let param = corruption.parameter(severity, h.max(w))? as f32;
    let per = d.image_len();
    let mut out = vec![0u8; d.pixels.len()];
    if per > 0 {
        out.par_chunks_mut(per)
            .zip(d.pixels.as_slice().par_chunks(per))
            .enumerate()
            .for_each_init(
                || (Vec::with_capacity(per), BlurScratch::default()),
                |(buf, scratch), (i, (dst, src))| {
                    buf.clear();
                    buf.extend(src.iter().map(|&b| f32::from(b) / 255.0));
                    match corruption {
                        Corruption::GaussianNoise => {
                            let mut rng = ChaCha8Rng::seed_from_u64(seed);
                            rng.set_stream(i as u64);
                            add_gaussian_noise(buf, param, &mut rng);
                        }
                        Corruption::GaussianBlur => blur(buf, h, w, c, param, scratch),
                        Corruption::Contrast => reduce_contrast(buf, c, param),
                    }
                    for (o, &v) in dst.iter_mut().zip(buf.iter()) {
                        *o = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                    }
                },
            );
    }
    ImageDataset::new(
        format!("{}+{}@{severity}", d.name, corruption.name()),
        h,
        w,
        c,
        out,
        d.labels.clone(),
        d.classes.clone(),
    )
}

/// `[eval.robustness]`: which corruptions at which severities the test
/// images get, and whether kNN is scored beside the linear probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RobustnessConfig {
    /// Corruption names: `gaussian_noise`, `gaussian_blur`, `contrast`
    /// (default: all three).
    pub corruptions: Vec<String>,
    /// Severities from 1 to 3 (default: all three).
    pub severities: Vec<i64>,
    /// Seed of the Gaussian noise (default 0).
    pub seed: u64,
    /// Also score weighted kNN (`[eval.knn]`) on every set (default true).
    pub knn: bool,
}

impl Default for RobustnessConfig {
    fn default() -> Self {
        Self {
            corruptions: Corruption::ALL.map(|c| c.name().to_string()).to_vec(),
            severities: (1..=i64::from(MAX_SEVERITY)).collect(),
            seed: 0,
            knn: true,
        }
    }
}

impl RobustnessConfig {
    /// Whether these are the defaults (then stored configs leave the table out).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Refuses an empty list, an unknown corruption name, a severity
    /// outside 1..=3 and a repeated entry, naming the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        const T: &str = "[eval.robustness]";
        let names = Corruption::ALL.map(Corruption::name).join(", ");
        if self.corruptions.is_empty() {
            return Err(format!(
                "{T} corruptions = []: give at least one of {names}"
            ));
        }
        for (i, name) in self.corruptions.iter().enumerate() {
            if Corruption::parse(name).is_none() {
                return Err(format!(
                    "{T} corruptions: '{name}' is not a corruption: give some of {names}"
                ));
            }
            if self.corruptions[..i].contains(name) {
                return Err(format!("{T} corruptions: '{name}' is listed twice"));
            }
        }
        if self.severities.is_empty() {
            return Err(format!(
                "{T} severities = []: give at least one severity from 1 to {MAX_SEVERITY}"
            ));
        }
        for (i, &s) in self.severities.iter().enumerate() {
            if !(1..=i64::from(MAX_SEVERITY)).contains(&s) {
                return Err(format!(
                    "{T} severities: {s} is out of range: give severities from 1 to \
                     {MAX_SEVERITY}"
                ));
            }
            if self.severities[..i].contains(&s) {
                return Err(format!("{T} severities: {s} is listed twice"));
            }
        }
        Ok(())
    }

    /// Every (corruption, severity) to score, corruption-major, after
    /// [`RobustnessConfig::validate`].
    pub fn sets(&self) -> Result<Vec<(Corruption, u8)>> {
        self.validate().map_err(Error::Config)?;
        let mut out = Vec::new();
        for name in &self.corruptions {
            let Some(c) = Corruption::parse(name) else {
                continue;
            };
            for &s in &self.severities {
                out.push((c, u8::try_from(s).unwrap_or(MAX_SEVERITY)));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` grey `side x side` images of a smooth gradient plus a seeded
    /// texture, so every corruption has something to change.
    fn textured(n: usize, side: usize, channels: usize) -> ImageDataset {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut px = Vec::new();
        for _ in 0..n * side * side * channels {
            px.push(rng.gen_range(40u8..216));
        }
        for (i, p) in px.iter_mut().enumerate() {
            let x = (i / channels) % side;
            *p = p.saturating_add((x * 2) as u8) / 2 + 40;
        }
        let labels = (0..n as i64).map(|i| i % 2).collect();
        ImageDataset::new("t", side, side, channels, px, Some(labels), vec![]).unwrap()
    }

    /// Mean absolute byte change between two datasets of the same shape.
    fn change(a: &ImageDataset, b: &ImageDataset) -> f64 {
        let (a, b) = (a.pixels.as_slice(), b.pixels.as_slice());
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(&x, &y)| (f64::from(x) - f64::from(y)).abs())
            .sum::<f64>()
            / a.len() as f64
    }

    #[test]
    fn every_corruption_changes_pixels_more_at_higher_severity() {
        for channels in [1, 3] {
            let d = textured(6, 28, channels);
            for c in Corruption::ALL {
                let deltas: Vec<f64> = (1..=MAX_SEVERITY)
                    .map(|s| change(&d, &corrupt_dataset(&d, c, s, 0).unwrap()))
                    .collect();
                assert!(deltas[0] > 1.0, "{c:?} severity 1 changed {}", deltas[0]);
                assert!(
                    deltas[0] < deltas[1] && deltas[1] < deltas[2],
                    "{c:?} on {channels} channels: {deltas:?}"
                );
            }
        }
    }

    #[test]
    fn the_corrupted_copy_keeps_shape_labels_and_order() {
        let d = textured(5, 8, 3);
        let n = corrupt_dataset(&d, Corruption::Contrast, 2, 0).unwrap();
        assert_eq!((n.len(), n.height, n.width, n.channels), (5, 8, 8, 3));
        assert_eq!(n.labels, d.labels);
        assert_eq!(n.name, "t+contrast@2");
        // Image by image: contrast keeps each image's own mean (to rounding).
        for i in 0..5 {
            let mean = |img: &[u8]| img.iter().map(|&v| f64::from(v)).sum::<f64>() / 192.0;
            assert!(
                (mean(d.image(i)) - mean(n.image(i))).abs() < 1.0,
                "image {i}"
            );
        }
    }

    #[test]
    fn a_contrast_factor_of_zero_leaves_each_channel_constant() {
        let mut img: Vec<f32> = (0..4 * 4 * 3).map(|i| (i % 7) as f32 / 7.0).collect();
        let means: Vec<f32> = (0..3)
            .map(|ch| img.iter().skip(ch).step_by(3).sum::<f32>() / 16.0)
            .collect();
        reduce_contrast(&mut img, 3, 0.0);
        for (i, v) in img.iter().enumerate() {
            assert!((v - means[i % 3]).abs() < 1e-6, "value {i}: {v}");
        }
        assert!(
            (means[0] - means[1]).abs() > 1e-3,
            "the fixture's channels differ"
        );
        // Factor 1 is the identity.
        let mut same = vec![0.1, 0.9, 0.4];
        reduce_contrast(&mut same, 1, 1.0);
        for (v, w) in same.iter().zip([0.1, 0.9, 0.4]) {
            assert!((v - w).abs() < 1e-6, "{same:?}");
        }
    }

    #[test]
    fn noise_is_seeded_per_image_and_shared_across_severities() {
        let d = textured(4, 8, 1);
        let a = corrupt_dataset(&d, Corruption::GaussianNoise, 2, 5).unwrap();
        let b = corrupt_dataset(&d, Corruption::GaussianNoise, 2, 5).unwrap();
        assert_eq!(a.pixels.as_slice(), b.pixels.as_slice());
        let other = corrupt_dataset(&d, Corruption::GaussianNoise, 2, 6).unwrap();
        assert!(change(&a, &other) > 1.0);
        // Images get their own streams: two copies of one image get different noise.
        let twins = d.subset(&[0, 0]);
        let noisy = corrupt_dataset(&twins, Corruption::GaussianNoise, 3, 5).unwrap();
        assert_ne!(noisy.image(0), noisy.image(1));
        // The same draws at every severity: the change grows with sigma in sign.
        let lo = corrupt_dataset(&d, Corruption::GaussianNoise, 1, 5).unwrap();
        let hi = corrupt_dataset(&d, Corruption::GaussianNoise, 3, 5).unwrap();
        let (orig, lo, hi) = (
            d.pixels.as_slice(),
            lo.pixels.as_slice(),
            hi.pixels.as_slice(),
        );
        let agree = (0..orig.len())
            .filter(|&i| {
                let (dl, dh) = (
                    i32::from(lo[i]) - i32::from(orig[i]),
                    i32::from(hi[i]) - i32::from(orig[i]),
                );
                dl == 0 || dl.signum() == dh.signum()
            })
            .count();
        assert!(
            agree as f64 > 0.95 * orig.len() as f64,
            "{agree} of {}",
            orig.len()
        );
    }

    #[test]
    fn noise_has_the_stated_standard_deviation() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut img = vec![0.0f32; 40_000];
        add_gaussian_noise(&mut img, 0.12, &mut rng);
        let n = img.len() as f64;
        let mean = img.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = img
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(mean.abs() < 0.003, "mean {mean}");
        assert!((var.sqrt() - 0.12).abs() < 0.002, "std {}", var.sqrt());
    }

    #[test]
    fn blur_scales_with_the_image_and_keeps_a_flat_image() {
        let at = |side| Corruption::GaussianBlur.parameter(3, side).unwrap();
        assert_eq!(at(32), 1.0);
        assert!((at(28) - 0.875).abs() < 1e-6);
        assert!((at(64) - 2.0).abs() < 1e-6);
        assert_eq!(Corruption::GaussianNoise.parameter(1, 28).unwrap(), 0.08);
        assert_eq!(Corruption::Contrast.parameter(3, 28).unwrap(), 0.2);
        let flat = ImageDataset::new("f", 6, 6, 1, vec![77; 72], None, vec![]).unwrap();
        for c in [Corruption::GaussianBlur, Corruption::Contrast] {
            let out = corrupt_dataset(&flat, c, 3, 0).unwrap();
            assert_eq!(out.pixels.as_slice(), flat.pixels.as_slice(), "{c:?}");
        }
        // A one-pixel checkerboard is nearly erased at severity 3 on 32 pixels.
        let board: Vec<u8> = (0..32 * 32)
            .map(|i| if (i % 32 + i / 32) % 2 == 0 { 168 } else { 88 })
            .collect();
        let board = ImageDataset::new("b", 32, 32, 1, board, None, vec![]).unwrap();
        let out = corrupt_dataset(&board, Corruption::GaussianBlur, 3, 0).unwrap();
        let spread = out.pixels.iter().max().unwrap() - out.pixels.iter().min().unwrap();
        assert!(spread <= 8, "max - min after blur: {spread}");
    }

    #[test]
    fn names_and_severities_outside_the_range_are_refused() {
        for c in Corruption::ALL {
            assert_eq!(Corruption::parse(c.name()), Some(c));
            for bad in [0, 4, 255] {
                let err = c.parameter(bad, 28).unwrap_err().to_string();
                assert!(
                    err.contains("from 1 to 3") && err.contains(c.name()),
                    "{err}"
                );
            }
        }
        assert_eq!(Corruption::parse("fog"), None);
        let d = textured(1, 8, 1);
        assert!(corrupt_dataset(&d, Corruption::Contrast, 0, 0).is_err());
    }
}
