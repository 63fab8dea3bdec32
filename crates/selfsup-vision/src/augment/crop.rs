//! Random resized crop with bilinear resampling (the crop and the resize are
//! one pass: each output pixel is sampled straight from the source bytes).
use super::uniform;
use crate::{Error, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Crops a random region of random area and aspect ratio and resizes it to the
/// output size (torchvision's `RandomResizedCrop`).
///
/// The area is drawn uniformly from `scale` (as a fraction of the image
/// area), the aspect ratio log-uniformly from `ratio`; after 10 draws that do
/// not fit, the largest centred crop with an in-range aspect ratio is used.
/// Resampling is bilinear with half-pixel centres (`align_corners = false`),
/// without antialiasing: on small images the crop is almost always enlarged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RandomResizedCrop {
    /// Range of the crop area as a fraction of the image area (default `[0.08, 1.0]`).
    pub scale: (f64, f64),
    /// Range of the crop aspect ratio width / height (default `[3/4, 4/3]`).
    pub ratio: (f64, f64),
}

impl Default for RandomResizedCrop {
    fn default() -> Self {
        Self {
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
        }
    }
}

/// A crop rectangle in source pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    /// First row.
    pub top: usize,
    /// First column.
    pub left: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl CropBox {
    /// The whole `h x w` image.
    pub fn full(h: usize, w: usize) -> Self {
        Self {
            top: 0,
            left: 0,
            height: h,
            width: w,
        }
    }
}

impl RandomResizedCrop {
    /// Checks the ranges: `0 < scale.0 <= scale.1`, `0 < ratio.0 <= ratio.1`.
    pub fn validate(&self) -> Result<()> {
        let (s0, s1) = self.scale;
        let (r0, r1) = self.ratio;
        if !(s0 > 0.0 && s0 <= s1 && s1.is_finite()) {
            return Err(Error::Config(format!(
                "crop.scale must satisfy 0 < min <= max, got {:?}",
                self.scale
            )));
        }
        if !(r0 > 0.0 && r0 <= r1 && r1.is_finite()) {
            return Err(Error::Config(format!(
                "crop.ratio must satisfy 0 < min <= max, got {:?}",
                self.ratio
            )));
        }
        Ok(())
    }

    /// Draws a crop of an `h x w` image.
    pub fn sample<R: Rng + ?Sized>(&self, h: usize, w: usize, rng: &mut R) -> CropBox {
        let area = (h * w) as f64;
        let (lr0, lr1) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target = area * uniform(rng, self.scale.0, self.scale.1);
            let aspect = uniform(rng, lr0, lr1).exp();
            let cw = (target * aspect).sqrt().round() as usize;
            let ch = (target / aspect).sqrt().round() as usize;
            if cw > 0 && cw <= w && ch > 0 && ch <= h {
                let top = rng.gen_range(0..=h - ch);
                let left = rng.gen_range(0..=w - cw);
                return CropBox {
                    top,
                    left,
                    height: ch,
                    width: cw,
                };
            }
        }
        // Fallback: centre crop with the aspect ratio clamped into range.
        let in_ratio = w as f64 / h as f64;
        let (cw, ch) = if in_ratio < self.ratio.0 {
            (w, ((w as f64 / self.ratio.0).round() as usize).clamp(1, h))
        } else if in_ratio > self.ratio.1 {
            (((h as f64 * self.ratio.1).round() as usize).clamp(1, w), h)
        } else {
            (w, h)
        };
        CropBox {
            top: (h - ch) / 2,
            left: (w - cw) / 2,
            height: ch,
            width: cw,
        }
    }
}

/// Source index and weight of one output coordinate along one axis
/// (half-pixel centres, like `align_corners = false`).
#[inline(always)]
fn tap(out: usize, scale: f32, len: usize) -> (usize, usize, f32) {
    let s = ((out as f32 + 0.5) * scale - 0.5).max(0.0);
    let i0 = (s as usize).min(len - 1);
    let i1 = (i0 + 1).min(len - 1);
    (i0, i1, s - i0 as f32)
}

/// Precomputed horizontal sampling of one output column: byte offsets of the
/// two source pixels within a row and their weights.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct XTap {
    a: usize,
    b: usize,
    wa: f32,
    wb: f32,
}

fn crop_resize_c<const C: usize>(
    src: &[u8],
    w: usize,
    crop: CropBox,
    out_h: usize,
    dst: &mut [f32],
    taps: &[XTap],
) {
    const INV: f32 = 1.0 / 255.0;
    let out_w = taps.len();
    let sy = crop.height as f32 / out_h as f32;
    let stride = w * C;
    for (oy, drow) in dst.chunks_exact_mut(out_w * C).enumerate() {
        let (y0, y1, fy) = tap(oy, sy, crop.height);
        let r0 = &src[(crop.top + y0) * stride..][..stride];
        let r1 = &src[(crop.top + y1) * stride..][..stride];
        let (wy0, wy1) = ((1.0 - fy) * INV, fy * INV);
        for (px, t) in drow.chunks_exact_mut(C).zip(taps) {
            for ch in 0..C {
                let top = t.wa * r0[t.a + ch] as f32 + t.wb * r0[t.b + ch] as f32;
                let bottom = t.wa * r1[t.a + ch] as f32 + t.wb * r1[t.b + ch] as f32;
                px[ch] = wy0 * top + wy1 * bottom;
            }
        }
    }
}

/// [`crop_resize`] with a reusable buffer for the column taps.
#[allow(clippy::too_many_arguments)]
pub(crate) fn crop_resize_with(
    src: &[u8],
    h: usize,
    w: usize,
    c: usize,
    crop: CropBox,
    mirror: bool,
    out_h: usize,
    out_w: usize,
    dst: &mut [f32],
    taps: &mut Vec<XTap>,
) {
    assert_eq!(src.len(), h * w * c, "source is not {h}x{w}x{c}");
    assert_eq!(
        dst.len(),
        out_h * out_w * c,
        "destination is not {out_h}x{out_w}x{c}"
    );
    assert!(
        crop.height > 0
            && crop.width > 0
            && crop.top + crop.height <= h
            && crop.left + crop.width <= w,
        "crop {crop:?} outside a {h}x{w} image"
    );
    let sx = crop.width as f32 / out_w as f32;
    taps.clear();
    taps.extend((0..out_w).map(|ox| {
        let xo = if mirror { out_w - 1 - ox } else { ox };
        let (x0, x1, fx) = tap(xo, sx, crop.width);
        XTap {
            a: (crop.left + x0) * c,
            b: (crop.left + x1) * c,
            wa: 1.0 - fx,
            wb: fx,
        }
    }));
    match c {
        1 => crop_resize_c::<1>(src, w, crop, out_h, dst, taps),
        3 => crop_resize_c::<3>(src, w, crop, out_h, dst, taps),
        _ => panic!("images must have 1 or 3 channels, not {c}"),
    }
}

/// Resamples `crop` of the `h x w x c` HWC byte image `src` to `out_h x out_w`
/// floats in `[0, 1]` (HWC) in `dst`, mirrored left-right when `mirror`.
///
/// # Panics
/// When the crop lies outside the image, `c` is not 1 or 3, or the buffer
/// lengths do not match the shapes.
#[allow(clippy::too_many_arguments)]
pub fn crop_resize(
    src: &[u8],
    h: usize,
    w: usize,
    c: usize,
    crop: CropBox,
    mirror: bool,
    out_h: usize,
    out_w: usize,
    dst: &mut [f32],
) {
    let mut taps = Vec::with_capacity(out_w);
    crop_resize_with(src, h, w, c, crop, mirror, out_h, out_w, dst, &mut taps);
}

/// Bilinear resize of a whole HWC byte image to `out_h x out_w` floats in `[0, 1]`.
pub fn resize_bilinear(
    src: &[u8],
    h: usize,
    w: usize,
    c: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<f32> {
    let mut dst = vec![0.0; out_h * out_w * c];
    crop_resize(
        src,
        h,
        w,
        c,
        CropBox::full(h, w),
        false,
        out_h,
        out_w,
        &mut dst,
    );
    dst
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Straightforward reference: bilinear, half-pixel centres, clamped edges.
    fn reference(src: &[u8], h: usize, w: usize, c: usize, oh: usize, ow: usize) -> Vec<f32> {
        let mut out = vec![0.0; oh * ow * c];
        for oy in 0..oh {
            for ox in 0..ow {
                let fy = ((oy as f64 + 0.5) * h as f64 / oh as f64 - 0.5).max(0.0);
                let fx = ((ox as f64 + 0.5) * w as f64 / ow as f64 - 0.5).max(0.0);
                let (y0, x0) = (fy.floor() as usize, fx.floor() as usize);
                let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
                let (ly, lx) = (fy - y0 as f64, fx - x0 as f64);
                for ch in 0..c {
                    let p = |y: usize, x: usize| src[(y * w + x) * c + ch] as f64;
                    let v = (1.0 - ly) * ((1.0 - lx) * p(y0, x0) + lx * p(y0, x1))
                        + ly * ((1.0 - lx) * p(y1, x0) + lx * p(y1, x1));
                    out[(oy * ow + ox) * c + ch] = (v / 255.0) as f32;
                }
            }
        }
        out
    }

    fn image(h: usize, w: usize, c: usize) -> Vec<u8> {
        (0..h * w * c)
            .map(|i| ((i * 37 + i / 7) % 256) as u8)
            .collect()
    }

    #[test]
    fn full_crop_equals_resize() {
        let crop = RandomResizedCrop {
            scale: (1.0, 1.0),
            ratio: (1.0, 1.0),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for c in [1, 3] {
            let img = image(12, 12, c);
            let b = crop.sample(12, 12, &mut rng);
            assert_eq!(b, CropBox::full(12, 12));
            for (oh, ow) in [(12, 12), (20, 20), (7, 9)] {
                let mut dst = vec![0.0; oh * ow * c];
                crop_resize(&img, 12, 12, c, b, false, oh, ow, &mut dst);
                let want = reference(&img, 12, 12, c, oh, ow);
                for (a, w) in dst.iter().zip(&want) {
                    assert!((a - w).abs() < 1e-5, "{oh}x{ow}x{c}: {a} vs {w}");
                }
            }
            // Same size: the exact image.
            let same = resize_bilinear(&img, 12, 12, c, 12, 12);
            assert!(same
                .iter()
                .zip(&img)
                .all(|(a, &b)| (a * 255.0 - b as f32).abs() < 1e-3));
        }
    }

    #[test]
    fn mirror_flips_columns() {
        let img = image(5, 6, 3);
        let mut a = vec![0.0; 5 * 6 * 3];
        let mut b = vec![0.0; 5 * 6 * 3];
        crop_resize(&img, 5, 6, 3, CropBox::full(5, 6), false, 5, 6, &mut a);
        crop_resize(&img, 5, 6, 3, CropBox::full(5, 6), true, 5, 6, &mut b);
        for y in 0..5 {
            for x in 0..6 {
                for ch in 0..3 {
                    assert_eq!(a[(y * 6 + x) * 3 + ch], b[(y * 6 + 5 - x) * 3 + ch]);
                }
            }
        }
    }

    #[test]
    fn boxes_stay_inside_and_fallback_is_centred() {
        let crop = RandomResizedCrop::default();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for _ in 0..1000 {
            let b = crop.sample(28, 20, &mut rng);
            assert!(
                b.top + b.height <= 28 && b.left + b.width <= 20 && b.height > 0 && b.width > 0
            );
        }
        // A scale no crop can reach: the fallback is a centred crop of a
        // too-tall image, clamped to the ratio range.
        let never = RandomResizedCrop {
            scale: (5.0, 6.0),
            ratio: (1.0, 1.0),
        };
        let b = never.sample(30, 10, &mut rng);
        assert_eq!(
            b,
            CropBox {
                top: 10,
                left: 0,
                height: 10,
                width: 10
            }
        );
    }

    #[test]
    fn validation() {
        assert!(RandomResizedCrop::default().validate().is_ok());
        assert!(RandomResizedCrop {
            scale: (0.0, 1.0),
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(RandomResizedCrop {
            ratio: (2.0, 1.0),
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
