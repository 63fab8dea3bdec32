//! Random solarisation.
use super::{check_prob, coin};
use crate::{Error, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Inverts every value at or above `threshold` with probability `p`
/// (torchvision's `RandomSolarize`). SimCLR does not solarise, so the default
/// is `p = 0.0`; BYOL uses `p = 0.2` on its second view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Solarize {
    /// Probability of solarising (default 0.0).
    pub p: f64,
    /// Threshold on the 0-255 scale (default 128).
    pub threshold: f64,
}

impl Default for Solarize {
    fn default() -> Self {
        Self {
            p: 0.0,
            threshold: 128.0,
        }
    }
}

impl Solarize {
    /// Checks the probability and that the threshold is in `[0, 256]`.
    pub fn validate(&self) -> Result<()> {
        check_prob("solarize.p", self.p)?;
        if !(0.0..=256.0).contains(&self.threshold) {
            return Err(Error::Config(format!(
                "solarize.threshold must be in [0, 256], got {}",
                self.threshold
            )));
        }
        Ok(())
    }

    /// Whether to solarise this view.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> bool {
        coin(rng, self.p)
    }
}

/// Replaces every value `x` (in `[0, 1]`) with `1 - x` where `255 x >= threshold`.
pub fn solarize(img: &mut [f32], threshold: f32) {
    // Values come from bytes / 255: allow for the rounding of that division.
    let t = (threshold - 1e-3) / 255.0;
    for x in img.iter_mut() {
        if *x >= t {
            *x = 1.0 - *x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverts_above_threshold() {
        let mut v: Vec<f32> = [0u8, 127, 128, 255]
            .iter()
            .map(|&b| b as f32 / 255.0)
            .collect();
        solarize(&mut v, 128.0);
        let bytes: Vec<u8> = v.iter().map(|x| (x * 255.0).round() as u8).collect();
        assert_eq!(bytes, vec![0, 127, 127, 0]);
        assert!(Solarize {
            p: 0.5,
            threshold: 300.0
        }
        .validate()
        .is_err());
    }
}
