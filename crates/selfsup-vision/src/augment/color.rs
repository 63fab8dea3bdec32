//! Colour jitter and random grayscale on HWC float images in `[0, 1]`.
//!
//! The arithmetic follows torchvision's float-tensor ops: every adjustment
//! clamps to `[0, 1]`; grey is `0.299 R + 0.587 G + 0.114 B`.
//!
//! On 1-channel images saturation, hue and grayscale are no-ops (a grey
//! image has no saturation or hue, and is already grey); brightness and
//! contrast apply as usual.
use super::{check_prob, coin, uniform};
use crate::{Error, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

const RW: f32 = 0.299;
const GW: f32 = 0.587;
const BW: f32 = 0.114;

/// Random brightness, contrast, saturation and hue changes, applied together
/// with probability `p`, in a random order (torchvision's `ColorJitter`
/// wrapped in `RandomApply`).
///
/// Factors are drawn uniformly: brightness, contrast and saturation from
/// `[max(0, 1 - x), 1 + x]`, the hue shift from `[-hue, hue]` (in turns of
/// the colour wheel).
///
/// Defaults are SimCLR's colour distortion at strength 0.5 (its CIFAR-10
/// setting, and lightly's `SimCLRTransform(cj_strength=0.5)`): brightness 0.4,
/// contrast 0.4, saturation 0.4, hue 0.1, p 0.8. Saturation is 0.4 rather than
/// 0.2 so that runs compare one to one with lightly; it does nothing on grey
/// images anyway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ColorJitter {
    /// Probability of applying the jitter at all (default 0.8).
    pub p: f64,
    /// Brightness strength (default 0.4).
    pub brightness: f64,
    /// Contrast strength (default 0.4).
    pub contrast: f64,
    /// Saturation strength (default 0.4).
    pub saturation: f64,
    /// Largest hue shift, at most 0.5 (default 0.1).
    pub hue: f64,
}

impl Default for ColorJitter {
    fn default() -> Self {
        Self {
            p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            hue: 0.1,
        }
    }
}

/// The drawn parameters of one colour jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterDraw {
    /// Order of the four adjustments: 0 brightness, 1 contrast, 2 saturation, 3 hue.
    pub order: [u8; 4],
    /// Brightness factor (1 = unchanged).
    pub brightness: f32,
    /// Contrast factor (1 = unchanged).
    pub contrast: f32,
    /// Saturation factor (1 = unchanged).
    pub saturation: f32,
    /// Hue shift in turns (0 = unchanged).
    pub hue: f32,
}

impl ColorJitter {
    /// Checks the probability and that strengths are non-negative (hue at most 0.5).
    pub fn validate(&self) -> Result<()> {
        check_prob("color_jitter.p", self.p)?;
        for (name, v) in [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(Error::Config(format!(
                    "color_jitter.{name} must be >= 0, got {v}"
                )));
            }
        }
        if !(0.0..=0.5).contains(&self.hue) {
            return Err(Error::Config(format!(
                "color_jitter.hue must be in [0, 0.5], got {}",
                self.hue
            )));
        }
        Ok(())
    }

    /// Draws whether to jitter this view and, if so, with which factors.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<JitterDraw> {
        if !coin(rng, self.p) {
            return None;
        }
        let mut order = [0u8, 1, 2, 3];
        for i in (1..4).rev() {
            let j = rng.gen_range(0..=i);
            order.swap(i, j);
        }
        let factor = |rng: &mut R, x: f64| uniform(rng, (1.0 - x).max(0.0), 1.0 + x) as f32;
        Some(JitterDraw {
            order,
            brightness: factor(rng, self.brightness),
            contrast: factor(rng, self.contrast),
            saturation: factor(rng, self.saturation),
            hue: uniform(rng, -self.hue, self.hue) as f32,
        })
    }
}

impl JitterDraw {
    /// Applies the four adjustments in the drawn order to a `c`-channel HWC image.
    pub fn apply(&self, img: &mut [f32], c: usize) {
        for op in self.order {
            match op {
                0 => adjust_brightness(img, self.brightness),
                1 => adjust_contrast(img, c, self.contrast),
                2 => adjust_saturation(img, c, self.saturation),
                _ => adjust_hue(img, c, self.hue),
            }
        }
    }
}

/// `x * f`, clamped to `[0, 1]`.
pub fn adjust_brightness(img: &mut [f32], f: f32) {
    if f == 1.0 {
        return;
    }
    for x in img.iter_mut() {
        *x = (*x * f).clamp(0.0, 1.0);
    }
}

/// Mean grey level of a `c`-channel HWC image.
pub fn mean_gray(img: &[f32], c: usize) -> f32 {
    let n = img.len() / c.max(1);
    if n == 0 {
        return 0.0;
    }
    let sum: f32 = if c == 3 {
        img.chunks_exact(3)
            .map(|p| RW * p[0] + GW * p[1] + BW * p[2])
            .sum()
    } else {
        img.iter().sum()
    };
    sum / n as f32
}

/// Blends every value with the mean grey level: `f * x + (1 - f) * mean`, clamped.
pub fn adjust_contrast(img: &mut [f32], c: usize, f: f32) {
    if f == 1.0 {
        return;
    }
    let m = (1.0 - f) * mean_gray(img, c);
    for x in img.iter_mut() {
        *x = (f * *x + m).clamp(0.0, 1.0);
    }
}

/// Blends every pixel with its own grey level: `f * x + (1 - f) * grey`,
/// clamped. No-op on 1-channel images.
pub fn adjust_saturation(img: &mut [f32], c: usize, f: f32) {
    if c != 3 || f == 1.0 {
        return;
    }
    let g = 1.0 - f;
    for p in img.chunks_exact_mut(3) {
        let grey = g * (RW * p[0] + GW * p[1] + BW * p[2]);
        for x in p.iter_mut() {
            *x = (f * *x + grey).clamp(0.0, 1.0);
        }
    }
}

/// Rotates the hue of every pixel by `shift` turns (through HSV). No-op on
/// 1-channel images.
pub fn adjust_hue(img: &mut [f32], c: usize, shift: f32) {
    if c != 3 || shift == 0.0 {
        return;
    }
    // Branch-free per pixel (selects, no table lookups): random images would
    // otherwise mispredict on every pixel.
    let shift6 = shift * 6.0;
    #[inline(always)]
    fn wrap6(x: f32) -> f32 {
        let x = if x < 0.0 { x + 6.0 } else { x };
        if x >= 6.0 {
            x - 6.0
        } else {
            x
        }
    }
    for p in img.chunks_exact_mut(3) {
        let (r, g, b) = (p[0], p[1], p[2]);
        let max = r.max(g).max(b);
        let min = r.min(g).min(b);
        let delta = max - min;
        // A grey pixel (delta = 0) comes back unchanged whatever its hue.
        let inv = if delta > 0.0 { 1.0 / delta } else { 0.0 };
        // Hue in sixths of a turn, shifted, wrapped into [0, 6).
        let from_r = (g - b) * inv;
        let from_g = (b - r) * inv + 2.0;
        let from_b = (r - g) * inv + 4.0;
        let h6 = if max == r {
            from_r
        } else if max == g {
            from_g
        } else {
            from_b
        };
        let h6 = wrap6(h6 + shift6);
        // HSV -> RGB with the same value (max) and chroma (delta):
        // channel = max - delta * clamp(min(k, 4 - k), 0, 1), k = (n + h6) mod 6
        // with n = 5, 3, 1 for red, green, blue.
        let channel = |n: f32| {
            let k = wrap6(n + h6);
            max - delta * k.min(4.0 - k).clamp(0.0, 1.0)
        };
        p[0] = channel(5.0);
        p[1] = channel(3.0);
        p[2] = channel(1.0);
    }
}

/// Turns a 3-channel image grey in place (all channels = grey level).
/// No-op on 1-channel images.
pub fn to_grayscale(img: &mut [f32], c: usize) {
    if c != 3 {
        return;
    }
    for p in img.chunks_exact_mut(3) {
        let g = RW * p[0] + GW * p[1] + BW * p[2];
        p[0] = g;
        p[1] = g;
        p[2] = g;
    }
}

/// Turns the image grey with probability `p` (torchvision's `RandomGrayscale`,
/// keeping the channel count). No-op on 1-channel images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RandomGrayscale {
    /// Probability of turning the view grey (default 0.2).
    pub p: f64,
}

impl Default for RandomGrayscale {
    fn default() -> Self {
        Self { p: 0.2 }
    }
}

impl RandomGrayscale {
    /// Checks that `p` is a probability.
    pub fn validate(&self) -> Result<()> {
        check_prob("grayscale.p", self.p)
    }

    /// Whether to turn this view grey.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> bool {
        coin(rng, self.p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
    }

    #[test]
    fn hue_matches_known_rotations() {
        // Pure red rotated by a third of a turn is pure green, by two thirds blue.
        let mut p = vec![1.0, 0.0, 0.0];
        adjust_hue(&mut p, 3, 1.0 / 3.0);
        assert!(close(&p, &[0.0, 1.0, 0.0]), "{p:?}");
        adjust_hue(&mut p, 3, 1.0 / 3.0);
        assert!(close(&p, &[0.0, 0.0, 1.0]), "{p:?}");
        // Negative shifts wrap around; a full turn is the identity.
        let orig = vec![0.8, 0.3, 0.1, 0.2, 0.5, 0.9];
        let mut q = orig.clone();
        adjust_hue(&mut q, 3, -0.25);
        adjust_hue(&mut q, 3, 0.25);
        assert!(close(&q, &orig), "{q:?}");
        // Grey pixels and 1-channel images are untouched.
        let mut g = vec![0.4, 0.4, 0.4];
        adjust_hue(&mut g, 3, 0.3);
        assert_eq!(g, vec![0.4, 0.4, 0.4]);
        let mut one = vec![0.1, 0.9];
        adjust_hue(&mut one, 1, 0.3);
        adjust_saturation(&mut one, 1, 0.0);
        to_grayscale(&mut one, 1);
        assert_eq!(one, vec![0.1, 0.9]);
    }

    #[test]
    fn brightness_contrast_saturation() {
        let mut p = vec![0.2, 0.6];
        adjust_brightness(&mut p, 2.0);
        assert!(close(&p, &[0.4, 1.0]));
        let mut p = vec![0.2, 0.6];
        adjust_contrast(&mut p, 1, 0.0);
        assert!(close(&p, &[0.4, 0.4]));
        let mut p = vec![1.0, 0.0, 0.0];
        adjust_saturation(&mut p, 3, 0.0);
        assert!(close(&p, &[0.299, 0.299, 0.299]));
        let mut p = vec![0.5, 0.2, 0.9];
        to_grayscale(&mut p, 3);
        assert!(p[0] == p[1] && p[1] == p[2]);
    }

    #[test]
    fn jitter_stays_in_range_and_draws_are_seeded() {
        let cj = ColorJitter {
            p: 1.0,
            brightness: 0.9,
            contrast: 0.9,
            saturation: 0.9,
            hue: 0.5,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let img: Vec<f32> = (0..300).map(|i| (i % 17) as f32 / 16.0).collect();
        for _ in 0..50 {
            let d = cj.sample(&mut rng).unwrap();
            let mut o = d.order;
            o.sort();
            assert_eq!(o, [0, 1, 2, 3]);
            let mut x = img.clone();
            d.apply(&mut x, 3);
            assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
        }
        let a = cj.sample(&mut ChaCha8Rng::seed_from_u64(4));
        let b = cj.sample(&mut ChaCha8Rng::seed_from_u64(4));
        assert_eq!(a, b);
        assert!(ColorJitter {
            p: 0.0,
            ..cj.clone()
        }
        .sample(&mut rng)
        .is_none());
        assert!(ColorJitter { hue: 0.7, ..cj }.validate().is_err());
    }
}
