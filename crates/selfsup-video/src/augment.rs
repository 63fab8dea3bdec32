//! Video augmentations consistent across frames: one random resized crop,
//! one horizontal flip and one brightness / contrast change per clip,
//! applied alike to every frame, after a random temporal crop of the
//! model's `frames` consecutive frames. Parameters come from the caller's
//! seeded generator (a function of `(seed, epoch, index)`).
use crate::clips::Clip;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// The `[augment]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Fraction of the frame's area the square crop covers, drawn per clip.
    pub crop_scale: (f64, f64),
    /// Flip every frame of a clip left-right with probability 1/2.
    pub flip: bool,
    /// Largest brightness shift (fraction of full scale), drawn per clip.
    pub brightness: f64,
    /// Largest relative contrast change, drawn per clip.
    pub contrast: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            crop_scale: (0.6, 1.0),
            flip: true,
            brightness: 0.2,
            contrast: 0.2,
        }
    }
}

impl AugmentConfig {
    /// The ranges, as a message naming the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let (lo, hi) = self.crop_scale;
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi && hi <= 1.0) {
            return Err(format!(
                "[augment] crop_scale = [{lo}, {hi}]: give a range 0 < lo <= hi <= 1"
            ));
        }
        for (key, v) in [("brightness", self.brightness), ("contrast", self.contrast)] {
            if !(v.is_finite() && (0.0..1.0).contains(&v)) {
                return Err(format!("[augment] {key} = {v}: give a value in [0, 1)"));
            }
        }
        Ok(())
    }
}

/// One clip's draw: where the window starts and how every frame changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipParams {
    /// First frame of the window.
    pub start: usize,
    /// Crop `(x0, y0, side)` in source pixels.
    pub crop: (f64, f64, f64),
    pub flip: bool,
    /// Added to `[0, 1]` intensities.
    pub brightness: f64,
    /// Multiplies the intensities' distance to 1/2.
    pub contrast: f64,
}

impl ClipParams {
    /// The identity on the first `frames` of a clip of side `size`.
    pub fn plain(size: usize) -> Self {
        Self {
            start: 0,
            crop: (0.0, 0.0, size as f64),
            flip: false,
            brightness: 0.0,
            contrast: 1.0,
        }
    }

    /// A draw for a clip of `clip_frames` frames of side `size`, windows of
    /// `frames`.
    pub fn draw<R: Rng>(
        cfg: &AugmentConfig,
        clip_frames: usize,
        frames: usize,
        size: usize,
        rng: &mut R,
    ) -> Self {
        let start = rng.gen_range(0..=clip_frames.saturating_sub(frames));
        let (lo, hi) = cfg.crop_scale;
        let scale = if hi > lo { rng.gen_range(lo..=hi) } else { lo };
        let side = size as f64 * scale.sqrt();
        let room = size as f64 - side;
        let (x0, y0) = (rng.gen_range(0.0..=room), rng.gen_range(0.0..=room));
        let flip = cfg.flip && rng.gen_bool(0.5);
        let brightness = if cfg.brightness > 0.0 {
            rng.gen_range(-cfg.brightness..=cfg.brightness)
        } else {
            0.0
        };
        let contrast = if cfg.contrast > 0.0 {
            rng.gen_range(1.0 - cfg.contrast..=1.0 + cfg.contrast)
        } else {
            1.0
        };
        Self {
            start,
            crop: (x0, y0, side),
            flip,
            brightness,
            contrast,
        }
    }
}

/// Intensities in `[0, 1]` become `(v - 0.5) / 0.5`.
pub const MEAN: f32 = 0.5;
/// See [`MEAN`].
pub const STD: f32 = 0.5;

/// Frames `p.start .. p.start + frames` of `clip` (side `size`) through
/// `p`, normalised: `frames * size * size` floats, frame-major. The window
/// must fit (`p.start + frames <= clip.frames`).
pub fn render(clip: &Clip, size: usize, frames: usize, p: &ClipParams, out: &mut Vec<f32>) {
    let (x0, y0, side) = p.crop;
    let step = side / size as f64;
    let plane = size * size;
    let last = size.saturating_sub(1) as f64;
    for t in p.start..p.start + frames {
        let Some(src) = clip.pixels.get(t * plane..(t + 1) * plane) else {
            out.extend(std::iter::repeat_n(-MEAN / STD, plane));
            continue;
        };
        for i in 0..size {
            let sy = (y0 + (i as f64 + 0.5) * step - 0.5).clamp(0.0, last);
            let (y_lo, fy) = (sy.floor() as usize, sy - sy.floor());
            let y_hi = (y_lo + 1).min(size - 1);
            for j in 0..size {
                let jj = if p.flip { size - 1 - j } else { j };
                let sx = (x0 + (jj as f64 + 0.5) * step - 0.5).clamp(0.0, last);
                let (x_lo, fx) = (sx.floor() as usize, sx - sx.floor());
                let x_hi = (x_lo + 1).min(size - 1);
                let at = |y: usize, x: usize| f64::from(src[y * size + x]);
                let v = (at(y_lo, x_lo) * (1.0 - fx) + at(y_lo, x_hi) * fx) * (1.0 - fy)
                    + (at(y_hi, x_lo) * (1.0 - fx) + at(y_hi, x_hi) * fx) * fy;
                let v = ((v / 255.0 - 0.5) * p.contrast + 0.5 + p.brightness).clamp(0.0, 1.0);
                out.push((v as f32 - MEAN) / STD);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_plain_view_is_the_normalised_clip() {
        let clip = Clip {
            frames: 3,
            pixels: (0..3 * 16).map(|i| (i * 5) as u8).collect(),
        };
        let mut out = Vec::new();
        let p = ClipParams {
            start: 1,
            ..ClipParams::plain(4)
        };
        render(&clip, 4, 2, &p, &mut out);
        let want: Vec<f32> = clip.pixels[16..48]
            .iter()
            .map(|&v| (f32::from(v) / 255.0 - MEAN) / STD)
            .collect();
        assert_eq!(out.len(), 32);
        for (a, b) in out.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} {b}");
        }
    }

    #[test]
    fn every_frame_of_a_clip_gets_the_same_transformation() {
        // Frames that are equal stay equal; a left-right ramp flipped in one
        // frame is flipped in every frame.
        let size = 12;
        let ramp: Vec<u8> = (0..size * size).map(|k| ((k % size) * 20) as u8).collect();
        let clip = Clip {
            frames: 6,
            pixels: ramp.repeat(6),
        };
        let cfg = AugmentConfig::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut flips = 0;
        for _ in 0..20 {
            let p = ClipParams::draw(&cfg, 6, 4, size, &mut rng);
            assert!(p.start <= 2 && p.crop.2 <= size as f64 + 1e-9);
            let mut out = Vec::new();
            render(&clip, size, 4, &p, &mut out);
            let plane = size * size;
            for t in 1..4 {
                assert_eq!(out[..plane], out[t * plane..(t + 1) * plane]);
            }
            let (left, right) = (out[size / 2 * size], out[size / 2 * size + size - 1]);
            assert_eq!(p.flip, left > right, "{p:?}");
            flips += usize::from(p.flip);
        }
        assert!((3..=17).contains(&flips), "{flips}");
    }
}
