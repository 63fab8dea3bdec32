//! Moving Fashion-MNIST: the Moving MNIST protocol of Srivastava et al.
//! (2015) on Fashion-MNIST garments, generated deterministically from a
//! seed, no download beyond Fashion-MNIST itself.
//!
//! Each clip puts `objects` garments (28x28, drawn at random from one
//! Fashion-MNIST split) on a black `size x size` canvas at uniform
//! positions; each moves in a straight line at a uniform angle and a speed
//! drawn from `speed` (pixels per frame) and bounces off the edges (the
//! position is reflected, the velocity component flips). Overlaps take the
//! brighter pixel (Moving MNIST's `max`). Clip `i` depends on `(seed,
//! stream, i)` only: the training and test streams never share a clip, and
//! asking for more clips never changes the first ones.
//!
//! Labels, per clip and per garment: its Fashion-MNIST class, and the bin
//! of its *initial* direction of motion (`direction_bins` equal sectors,
//! bin 0 centred on "right", counting counter-clockwise as seen on screen).
//! A bounce later in the clip reverses one component of the motion; the
//! label stays the initial direction.
use crate::clips::Clip;
use crate::idx::Labelled;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// The training clips' stream (garments from Fashion-MNIST's training split).
pub const TRAIN_STREAM: u64 = 1;
/// The test clips' stream (garments from Fashion-MNIST's test split).
pub const TEST_STREAM: u64 = 2;

/// How clips move (`[data]` keys of a Moving Fashion-MNIST config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Motion {
    /// Garments per clip.
    pub objects: usize,
    /// Speed range, pixels per frame.
    pub speed: (f64, f64),
    /// Sectors of the direction label.
    pub direction_bins: usize,
}

impl Default for Motion {
    fn default() -> Self {
        Self {
            objects: 2,
            speed: (2.0, 4.0),
            direction_bins: 4,
        }
    }
}

impl Motion {
    /// The ranges, as a message naming the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(1..=8).contains(&self.objects) {
            return Err(format!(
                "[data] objects = {}: give 1 to 8 garments per clip",
                self.objects
            ));
        }
        let (lo, hi) = self.speed;
        if !(lo.is_finite() && hi.is_finite() && lo >= 0.0 && lo <= hi && hi <= 64.0) {
            return Err(format!(
                "[data] speed = [{lo}, {hi}]: give a range 0 <= lo <= hi <= 64 (pixels per frame)"
            ));
        }
        if !(2..=36).contains(&self.direction_bins) {
            return Err(format!(
                "[data] direction_bins = {}: give 2 to 36 sectors",
                self.direction_bins
            ));
        }
        Ok(())
    }
}

/// One generated clip with its labels and trajectories.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub clip: Clip,
    /// Fashion-MNIST class of each garment.
    pub garments: Vec<i64>,
    /// Initial direction bin of each garment.
    pub directions: Vec<i64>,
    /// `positions[o][t]`: top-left corner `(x, y)` of garment `o` in frame `t`.
    pub positions: Vec<Vec<(usize, usize)>>,
}

/// The direction bin of the on-screen angle `theta` (radians,
/// counter-clockwise from "right").
pub fn direction_bin(theta: f64, bins: usize) -> i64 {
    let tau = std::f64::consts::TAU;
    let width = tau / bins as f64;
    let a = (theta + width / 2.0).rem_euclid(tau);
    ((a / width).floor() as i64).min(bins as i64 - 1)
}

/// SplitMix64 of `(seed, stream, index)`: the seed of one clip's generator.
fn clip_seed(seed: u64, stream: u64, index: u64) -> u64 {
    let mut z = seed
        ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Clip `index` of `stream`: `frames` frames of `size x size` from the
/// garments of `source`. Errors when the canvas is too small for a garment
/// or `source` is empty.
pub fn generate(
    source: &Labelled,
    motion: &Motion,
    size: usize,
    frames: usize,
    seed: u64,
    stream: u64,
    index: u64,
) -> Result<Generated> {
    let (rows, cols) = (source.images.rows, source.images.cols);
    if size <= rows || size <= cols {
        return Err(Error::Config(format!(
            "[model] image_size = {size}: Moving Fashion-MNIST needs a canvas larger than its \
             {rows}x{cols} garments; give at least {}",
            rows.max(cols) + 1
        )));
    }
    let count = source.images.len().min(source.labels.len());
    if count == 0 {
        return Err(Error::Data(
            "Moving Fashion-MNIST: the Fashion-MNIST split holds no image".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(clip_seed(seed, stream, index));
    let (max_x, max_y) = ((size - cols) as f64, (size - rows) as f64);
    let mut pixels = vec![0u8; frames * size * size];
    let mut out = Generated {
        clip: Clip {
            frames,
            pixels: Vec::new(),
        },
        garments: Vec::with_capacity(motion.objects),
        directions: Vec::with_capacity(motion.objects),
        positions: Vec::with_capacity(motion.objects),
    };
    for _ in 0..motion.objects {
        let pick = rng.gen_range(0..count);
        let garment = source.images.image(pick).unwrap_or(&[]);
        let theta: f64 = rng.gen_range(0.0..std::f64::consts::TAU);
        let speed = if motion.speed.1 > motion.speed.0 {
            rng.gen_range(motion.speed.0..motion.speed.1)
        } else {
            motion.speed.0
        };
        // On screen y grows downwards: a counter-clockwise angle moves up.
        let (mut vx, mut vy) = (speed * theta.cos(), -speed * theta.sin());
        let (mut x, mut y) = (rng.gen_range(0.0..=max_x), rng.gen_range(0.0..=max_y));
        let mut path = Vec::with_capacity(frames);
        for t in 0..frames {
            let (px, py) = (x.round() as usize, y.round() as usize);
            path.push((px, py));
            let frame = &mut pixels[t * size * size..(t + 1) * size * size];
            for r in 0..rows {
                let line = &mut frame[(py + r) * size + px..(py + r) * size + px + cols];
                for (dst, &src) in line.iter_mut().zip(&garment[r * cols..(r + 1) * cols]) {
                    *dst = (*dst).max(src);
                }
            }
            (x, vx) = bounce(x + vx, vx, max_x);
            (y, vy) = bounce(y + vy, vy, max_y);
        }
        out.garments.push(i64::from(source.labels[pick]));
        out.directions
            .push(direction_bin(theta, motion.direction_bins));
        out.positions.push(path);
    }
    out.clip.pixels = pixels;
    Ok(out)
}

/// A coordinate past an edge reflected back inside `[0, max]`, and the
/// velocity component flipped on each reflection.
fn bounce(mut p: f64, mut v: f64, max: f64) -> (f64, f64) {
    for _ in 0..64 {
        if p < 0.0 {
            p = -p;
            v = -v;
        } else if p > max {
            p = 2.0 * max - p;
            v = -v;
        } else {
            break;
        }
    }
    (p.clamp(0.0, max), v)
}

/// Labels of a set of generated clips.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MovingLabels {
    /// `garments[i]`: the classes of clip `i`'s garments.
    pub garments: Vec<Vec<i64>>,
    /// `directions[i]`: the initial direction bins of clip `i`'s garments.
    pub directions: Vec<Vec<i64>>,
}

/// Clips `0..count` of `stream`, with their labels.
pub fn generate_set(
    source: &Labelled,
    motion: &Motion,
    size: usize,
    frames: usize,
    seed: u64,
    stream: u64,
    count: usize,
) -> Result<(Vec<Clip>, MovingLabels)> {
    let mut clips = Vec::with_capacity(count);
    let mut labels = MovingLabels::default();
    for i in 0..count {
        let g = generate(source, motion, size, frames, seed, stream, i as u64)?;
        clips.push(g.clip);
        labels.garments.push(g.garments);
        labels.directions.push(g.directions);
    }
    Ok((clips, labels))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::idx::IdxImages;

    /// Ten 28x28 garments: image `k` is a filled square of grey `20 * k + 50`
    /// in the middle, label `k`.
    pub(crate) fn garments() -> Labelled {
        let mut pixels = Vec::new();
        for k in 0..10u8 {
            for r in 0..28 {
                for c in 0..28 {
                    let inside = (6..22).contains(&r) && (6..22).contains(&c);
                    pixels.push(if inside { 20 * k + 50 } else { 0 });
                }
            }
        }
        Labelled {
            images: IdxImages {
                rows: 28,
                cols: 28,
                pixels,
            },
            labels: (0..10).collect(),
        }
    }

    #[test]
    fn clips_are_a_function_of_seed_stream_and_index() {
        let src = garments();
        let m = Motion::default();
        let a = generate(&src, &m, 64, 16, 7, TRAIN_STREAM, 3).unwrap();
        let b = generate(&src, &m, 64, 16, 7, TRAIN_STREAM, 3).unwrap();
        assert_eq!(a, b);
        let c = generate(&src, &m, 64, 16, 7, TRAIN_STREAM, 4).unwrap();
        let d = generate(&src, &m, 64, 16, 7, TEST_STREAM, 3).unwrap();
        let e = generate(&src, &m, 64, 16, 8, TRAIN_STREAM, 3).unwrap();
        assert!(a.clip.pixels != c.clip.pixels && a.clip.pixels != d.clip.pixels);
        assert!(a.clip.pixels != e.clip.pixels);
        // A longer set starts with the shorter one.
        let (short, _) = generate_set(&src, &m, 64, 16, 7, TRAIN_STREAM, 2).unwrap();
        let (long, _) = generate_set(&src, &m, 64, 16, 7, TRAIN_STREAM, 5).unwrap();
        assert_eq!(short[..], long[..2]);
        assert_eq!(a.clip.pixels.len(), 16 * 64 * 64);
    }

    #[test]
    fn fast_garments_bounce_and_stay_inside_the_frame() {
        let src = garments();
        let m = Motion {
            speed: (20.0, 30.0),
            ..Motion::default()
        };
        let mut bounced = 0;
        for i in 0..50 {
            let g = generate(&src, &m, 64, 16, 1, TRAIN_STREAM, i).unwrap();
            for path in &g.positions {
                assert!(path.iter().all(|&(x, y)| x <= 36 && y <= 36), "{path:?}");
                // A reversal of the x motion is a bounce.
                let dx: Vec<i64> = path
                    .windows(2)
                    .map(|w| w[1].0 as i64 - w[0].0 as i64)
                    .collect();
                bounced += dx.windows(2).filter(|w| w[0] * w[1] < 0).count();
            }
        }
        assert!(bounced > 50, "only {bounced} bounces at 20-30 px/frame");
    }

    #[test]
    fn labels_are_the_garments_drawn_and_their_first_direction() {
        let src = garments();
        let m = Motion {
            objects: 1,
            speed: (3.0, 3.0),
            direction_bins: 4,
        };
        let mut checked = 0;
        for i in 0..40 {
            let g = generate(&src, &m, 64, 4, 5, TEST_STREAM, i).unwrap();
            let (x, y) = g.positions[0][0];
            // Frame 0 shows the labelled garment at its position.
            let grey = g.clip.pixels[(y + 10) * 64 + x + 10];
            assert_eq!(i64::from(grey), 20 * g.garments[0] + 50, "clip {i}");
            // The first displacement points into the labelled sector unless
            // the first step bounced or rounding makes it ambiguous.
            let (x1, y1) = g.positions[0][1];
            let (dx, dy) = (x1 as f64 - x as f64, y as f64 - y1 as f64);
            let free = (4..=32).contains(&x) && (4..=32).contains(&y);
            if free && (dx.abs() - dy.abs()).abs() >= 2.0 {
                assert_eq!(
                    direction_bin(dy.atan2(dx), 4),
                    g.directions[0],
                    "clip {i}: moved ({dx}, {dy})"
                );
                checked += 1;
            }
        }
        assert!(checked > 10, "{checked}");
        assert_eq!(direction_bin(0.0, 4), 0);
        assert_eq!(direction_bin(std::f64::consts::FRAC_PI_2, 4), 1);
        assert_eq!(direction_bin(std::f64::consts::PI, 4), 2);
        assert_eq!(direction_bin(-std::f64::consts::FRAC_PI_2, 4), 3);
        assert_eq!(direction_bin(-0.1, 4), 0);
    }

    #[test]
    fn a_canvas_smaller_than_a_garment_is_refused_naming_the_key() {
        let e = generate(&garments(), &Motion::default(), 28, 4, 0, 1, 0).unwrap_err();
        assert!(e.to_string().contains("[model] image_size = 28"), "{e}");
    }
}
