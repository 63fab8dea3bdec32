//! Random Gaussian blur (separable, reflect padding).
use super::{check_prob, coin, uniform};
use crate::{Error, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Blurs the image with probability `p`, with a Gaussian of standard
/// deviation drawn uniformly from `sigma` (torchvision's `GaussianBlur` in
/// `RandomApply`).
///
/// The kernel is `kernel_size` wide, or about 10% of the image side (odd, at
/// least 3) when unset, as in SimCLR. lightly's default is `p = 0.5`; on
/// 28x28 or 32x32 images SimCLR leaves blur out, so the default here is
/// `p = 0.0` (off).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GaussianBlur {
    /// Probability of blurring (default 0.0).
    pub p: f64,
    /// Range of the standard deviation in pixels (default `[0.1, 2.0]`).
    pub sigma: (f64, f64),
    /// Odd kernel width; 10% of the image side when unset.
    pub kernel_size: Option<usize>,
}

impl Default for GaussianBlur {
    fn default() -> Self {
        Self {
            p: 0.0,
            sigma: (0.1, 2.0),
            kernel_size: None,
        }
    }
}

impl GaussianBlur {
    /// Checks the probability, the sigma range and that the kernel size is odd.
    pub fn validate(&self) -> Result<()> {
        check_prob("blur.p", self.p)?;
        let (s0, s1) = self.sigma;
        if !(s0 > 0.0 && s0 <= s1 && s1.is_finite()) {
            return Err(Error::Config(format!(
                "blur.sigma must satisfy 0 < min <= max, got {:?}",
                self.sigma
            )));
        }
        if let Some(k) = self.kernel_size {
            if k % 2 == 0 || k > 255 {
                return Err(Error::Config(format!(
                    "blur.kernel_size must be odd and at most 255, got {k}"
                )));
            }
        }
        Ok(())
    }

    /// Kernel width for an image whose larger side is `side`: the configured
    /// size, else `round(side / 10)` made odd, at least 3.
    pub fn kernel_for(&self, side: usize) -> usize {
        self.kernel_size.unwrap_or_else(|| {
            let k = ((side as f64) * 0.1).round() as usize;
            (k | 1).max(3)
        })
    }

    /// The sigma to blur this view with, or `None` to leave it sharp.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<f32> {
        coin(rng, self.p).then(|| uniform(rng, self.sigma.0, self.sigma.1) as f32)
    }
}

/// Mirror index into `0..n` without repeating the edge (`-1 -> 1`, `n -> n - 2`).
fn reflect(mut i: isize, n: usize) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    loop {
        if i < 0 {
            i = -i;
        } else if i >= n {
            i = 2 * (n - 1) - i;
        } else {
            return i as usize;
        }
    }
}

/// Fills `kernel` with the normalised Gaussian weights of width `k`.
fn gaussian_kernel(k: usize, sigma: f32, kernel: &mut Vec<f32>) {
    let half = (k / 2) as f32;
    kernel.clear();
    kernel.extend((0..k).map(|i| {
        let x = (i as f32 - half) / sigma;
        (-0.5 * x * x).exp()
    }));
    let sum: f32 = kernel.iter().sum();
    for v in kernel.iter_mut() {
        *v /= sum;
    }
}

/// Reusable buffers of [`gaussian_blur`].
#[derive(Debug, Default, Clone)]
pub struct BlurScratch {
    kernel: Vec<f32>,
    line: Vec<f32>,
    rows: Vec<f32>,
    taps: Vec<usize>,
}

/// Blurs an `h x w x c` HWC image in place with a `k`-wide Gaussian of
/// standard deviation `sigma`, reflecting at the borders.
///
/// # Panics
/// When `img.len() != h * w * c` or `k` is even.
pub fn gaussian_blur(
    img: &mut [f32],
    h: usize,
    w: usize,
    c: usize,
    k: usize,
    sigma: f32,
    s: &mut BlurScratch,
) {
    assert_eq!(img.len(), h * w * c, "image is not {h}x{w}x{c}");
    assert!(k % 2 == 1, "kernel size {k} is even");
    if img.is_empty() || k == 1 {
        return;
    }
    gaussian_kernel(k, sigma, &mut s.kernel);
    let half = k / 2;
    let row_len = w * c;
    // Horizontal pass: img -> rows, through one reflect-padded line.
    s.rows.resize(img.len(), 0.0);
    s.line.resize((w + 2 * half) * c, 0.0);
    for (src, dst) in img
        .chunks_exact(row_len)
        .zip(s.rows.chunks_exact_mut(row_len))
    {
        for px in 0..w + 2 * half {
            let sx = reflect(px as isize - half as isize, w);
            s.line[px * c..][..c].copy_from_slice(&src[sx * c..][..c]);
        }
        dst.fill(0.0);
        for (t, &wt) in s.kernel.iter().enumerate() {
            let shifted = &s.line[t * c..][..row_len];
            for (d, &v) in dst.iter_mut().zip(shifted) {
                *d += wt * v;
            }
        }
    }
    // Vertical pass: rows -> img, one weighted row at a time.
    for (y, dst) in img.chunks_exact_mut(row_len).enumerate() {
        s.taps.clear();
        s.taps
            .extend((0..k).map(|t| reflect(y as isize + t as isize - half as isize, h)));
        dst.fill(0.0);
        for (&sy, &wt) in s.taps.iter().zip(&s.kernel) {
            let src = &s.rows[sy * row_len..][..row_len];
            for (d, &v) in dst.iter_mut().zip(src) {
                *d += wt * v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_sizes() {
        let b = GaussianBlur::default();
        assert_eq!(b.kernel_for(28), 3);
        assert_eq!(b.kernel_for(32), 3);
        assert_eq!(b.kernel_for(96), 11);
        assert_eq!(b.kernel_for(224), 23);
        assert!(GaussianBlur {
            kernel_size: Some(4),
            ..b
        }
        .validate()
        .is_err());
    }

    #[test]
    fn constant_stays_constant_and_impulse_spreads_symmetrically() {
        let mut s = BlurScratch::default();
        let mut flat = vec![0.7; 5 * 4 * 3];
        gaussian_blur(&mut flat, 5, 4, 3, 5, 1.5, &mut s);
        assert!(flat.iter().all(|v| (v - 0.7).abs() < 1e-5));
        let mut imp = vec![0.0; 7 * 7];
        imp[3 * 7 + 3] = 1.0;
        gaussian_blur(&mut imp, 7, 7, 1, 3, 1.0, &mut s);
        let sum: f32 = imp.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5);
        assert!((imp[2 * 7 + 3] - imp[4 * 7 + 3]).abs() < 1e-7);
        assert!((imp[3 * 7 + 2] - imp[2 * 7 + 3]).abs() < 1e-7);
        assert!(imp[3 * 7 + 3] < 1.0 && imp[3 * 7 + 3] > imp[3 * 7 + 2]);
        // Kernels wider than the image still work.
        let mut tiny = vec![0.2, 0.9];
        gaussian_blur(&mut tiny, 1, 2, 1, 9, 2.0, &mut s);
        assert!(tiny.iter().all(|v| (0.2..=0.9).contains(v)));
    }

    #[test]
    fn reflect_indices() {
        assert_eq!(reflect(-1, 5), 1);
        assert_eq!(reflect(5, 5), 3);
        assert_eq!(reflect(-7, 3), 1);
        assert_eq!(reflect(4, 1), 0);
    }
}
