//! Random horizontal flip.
use super::{check_prob, coin};
use crate::Result;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Mirrors the image left-right with probability `p` (torchvision's
/// `RandomHorizontalFlip`). In the [`Augmenter`](super::Augmenter) pipeline
/// the flip is folded into the crop's resampling and costs nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HorizontalFlip {
    /// Probability of flipping (default 0.5).
    pub p: f64,
}

impl Default for HorizontalFlip {
    fn default() -> Self {
        Self { p: 0.5 }
    }
}

impl HorizontalFlip {
    /// Checks that `p` is a probability.
    pub fn validate(&self) -> Result<()> {
        check_prob("flip.p", self.p)
    }

    /// Whether to flip this view.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> bool {
        coin(rng, self.p)
    }
}

/// Mirrors an `h x w x c` HWC image left-right in place.
///
/// # Panics
/// When `img.len() != h * w * c`.
pub fn hflip(img: &mut [f32], h: usize, w: usize, c: usize) {
    assert_eq!(img.len(), h * w * c, "image is not {h}x{w}x{c}");
    if w == 0 || c == 0 {
        return;
    }
    for row in img.chunks_exact_mut(w * c) {
        for x in 0..w / 2 {
            let (l, r) = (x * c, (w - 1 - x) * c);
            for ch in 0..c {
                row.swap(l + ch, r + ch);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn flips_exactly() {
        // 2x3 RGB image, pixel (y, x) = [10y + x, 100 + x, 200].
        let img: Vec<f32> = (0..2)
            .flat_map(|y| (0..3).flat_map(move |x| [(10 * y + x) as f32, (100 + x) as f32, 200.0]))
            .collect();
        let mut f = img.clone();
        hflip(&mut f, 2, 3, 3);
        for y in 0..2 {
            for x in 0..3 {
                assert_eq!(&f[(y * 3 + x) * 3..][..3], &img[(y * 3 + 2 - x) * 3..][..3]);
            }
        }
        hflip(&mut f, 2, 3, 3);
        assert_eq!(f, img);
    }

    #[test]
    fn probability_extremes() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert!((0..100).all(|_| HorizontalFlip { p: 1.0 }.sample(&mut rng)));
        assert!((0..100).all(|_| !HorizontalFlip { p: 0.0 }.sample(&mut rng)));
        assert!(HorizontalFlip { p: 1.5 }.validate().is_err());
    }
}
