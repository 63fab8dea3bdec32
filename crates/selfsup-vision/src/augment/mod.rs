//! CPU image augmentations for joint-embedding methods (SimCLR and friends).
//!
//! Images come in as `u8` HWC (1 or 3 channels) and leave as normalised `f32`
//! CHW views. One view is: random resized crop (+ horizontal flip, folded into
//! the resampling) → colour jitter → random grayscale → Gaussian blur →
//! solarisation → normalisation. Work happens in one reusable `f32` buffer per
//! thread ([`Scratch`]); nothing is allocated per pixel.
//!
//! All randomness comes from the `rng` handed in (a [`ChaCha8Rng`] in the
//! loader), so a seed fixes every view on every machine.
//!
//! Defaults follow SimCLR's CIFAR-10 recipe / lightly's `SimCLRTransform`
//! scaled to small images: crop scale `[0.08, 1]`, ratio `[3/4, 4/3]`, flip
//! 0.5, colour jitter 0.8 × (0.4, 0.4, 0.4, 0.1), grayscale 0.2, blur off,
//! solarisation off. On 1-channel images saturation, hue and grayscale do
//! nothing.
pub mod blur;
pub mod color;
pub mod corrupt;
pub mod crop;
pub mod flip;
pub mod solarize;

pub use blur::GaussianBlur;
pub use color::{ColorJitter, RandomGrayscale};
pub use crop::{CropBox, RandomResizedCrop};
pub use flip::HorizontalFlip;
pub use solarize::Solarize;

use crate::data::Normalize;
use crate::{Error, Result};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// `true` with probability `p` (always draws one number, so the stream of
/// draws does not depend on `p`).
pub(crate) fn coin<R: Rng + ?Sized>(rng: &mut R, p: f64) -> bool {
    rng.gen::<f64>() < p
}

/// Uniform in `[a, b)` (or exactly `a` when `a == b`).
pub(crate) fn uniform<R: Rng + ?Sized>(rng: &mut R, a: f64, b: f64) -> f64 {
    a + (b - a) * rng.gen::<f64>()
}

pub(crate) fn check_prob(name: &str, p: f64) -> Result<()> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{name} must be a probability in [0, 1], got {p}"
        )))
    }
}

/// `[augment]`: the view pipeline of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Views per image (default 2).
    pub views: usize,
    /// Random resized crop.
    pub crop: RandomResizedCrop,
    /// Horizontal flip.
    pub flip: HorizontalFlip,
    /// Colour jitter.
    pub color_jitter: ColorJitter,
    /// Random grayscale.
    pub grayscale: RandomGrayscale,
    /// Gaussian blur.
    pub blur: GaussianBlur,
    /// Solarisation.
    pub solarize: Solarize,
    /// Extra small crops per image (multi-crop: DINO, SwAV), after the
    /// `views` full-size ones.
    pub local_crops: LocalCrops,
}

/// Multi-crop (Caron et al. 2020): `count` extra low-resolution views of
/// small regions, through the same pipeline otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalCrops {
    /// Local views per image (0: multi-crop off).
    pub count: usize,
    /// Side of the local views in pixels (DINO: 96 for 224; 0 picks 3/7 of the global side).
    pub size: usize,
    /// Area range of the local crops (DINO: `[0.05, 0.4]`).
    pub scale: (f64, f64),
}

impl Default for LocalCrops {
    fn default() -> Self {
        Self {
            count: 0,
            size: 0,
            scale: (0.05, 0.4),
        }
    }
}

impl LocalCrops {
    /// The side of the local views for global views of side `global`.
    pub fn side_for(&self, global: usize) -> usize {
        if self.size == 0 {
            ((global * 3) as f64 / 7.0).round().max(1.0) as usize
        } else {
            self.size
        }
    }
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            views: 2,
            crop: RandomResizedCrop::default(),
            flip: HorizontalFlip::default(),
            color_jitter: ColorJitter::default(),
            grayscale: RandomGrayscale::default(),
            blur: GaussianBlur::default(),
            solarize: Solarize::default(),
            local_crops: LocalCrops::default(),
        }
    }
}

impl AugmentConfig {
    /// Checks every parameter; the error names the offending key.
    pub fn validate(&self) -> Result<()> {
        if self.views == 0 {
            return Err(Error::Config("augment.views must be at least 1".into()));
        }
        self.crop.validate()?;
        self.flip.validate()?;
        self.color_jitter.validate()?;
        self.grayscale.validate()?;
        self.blur.validate()?;
        self.solarize.validate()?;
        if self.local_crops.count > 0 {
            RandomResizedCrop {
                scale: self.local_crops.scale,
                ratio: self.crop.ratio,
            }
            .validate()
            .map_err(|e| Error::Config(format!("augment.local_crops: {e}")))?;
        }
        Ok(())
    }
}

/// Reusable per-thread buffers of [`Augmenter::augment_into`].
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    work: Vec<f32>,
    taps: Vec<crop::XTap>,
    blur: blur::BlurScratch,
}

/// The configured view pipeline for images of a given channel count, producing
/// square `out_size x out_size` views.
///
/// [`Augmenter::views`] of a sample returns `config.views` normalised CHW views, each `C * S * S` floats. The
/// sample must be an `input_size` HWC image (by default `out_size x out_size`,
/// see [`Augmenter::with_input_size`]).
#[derive(Debug, Clone)]
pub struct Augmenter {
    cfg: AugmentConfig,
    channels: usize,
    out_size: usize,
    input: (usize, usize),
    norm: Normalize,
    /// Per channel: `1 / std` and `mean / std`.
    scale: Vec<f32>,
    shift: Vec<f32>,
    blur_kernel: usize,
    /// Multi-crop: side, crop and blur kernel of the local views.
    local_size: usize,
    local_crop: RandomResizedCrop,
    local_blur_kernel: usize,
}

impl Augmenter {
    /// Validates `cfg` and `norm` for `in_channels`-channel images (1 or 3)
    /// and square views of side `out_size`.
    pub fn new(
        cfg: AugmentConfig,
        in_channels: usize,
        out_size: usize,
        norm: Normalize,
    ) -> Result<Self> {
        cfg.validate()?;
        if in_channels != 1 && in_channels != 3 {
            return Err(Error::Config(format!(
                "augmentation needs 1- or 3-channel images, not {in_channels}"
            )));
        }
        if out_size == 0 {
            return Err(Error::Config(
                "augmentation output size must be at least 1".into(),
            ));
        }
        norm.validate(in_channels)?;
        let scale: Vec<f32> = norm.std.iter().map(|s| 1.0 / s).collect();
        let shift = norm
            .mean
            .iter()
            .zip(&norm.std)
            .map(|(m, s)| m / s)
            .collect();
        let blur_kernel = cfg.blur.kernel_for(out_size);
        let local_size = cfg.local_crops.side_for(out_size);
        if cfg.local_crops.count > 0 && local_size > out_size {
            return Err(Error::Config(format!(
                "augment.local_crops.size {local_size} does not fit the {out_size}x{out_size} views: local crops must be at most as large as the global ones"
            )));
        }
        let local_crop = RandomResizedCrop {
            scale: cfg.local_crops.scale,
            ratio: cfg.crop.ratio,
        };
        let local_blur_kernel = cfg.blur.kernel_for(local_size);
        Ok(Self {
            cfg,
            channels: in_channels,
            out_size,
            input: (out_size, out_size),
            norm,
            scale,
            shift,
            blur_kernel,
            local_size,
            local_crop,
            local_blur_kernel,
        })
    }

    /// Sets the `height x width` of the samples handed to
    /// [`Augmenter::views`] (the loader passes each image's size itself).
    pub fn with_input_size(mut self, height: usize, width: usize) -> Self {
        self.input = (height, width);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &AugmentConfig {
        &self.cfg
    }
    /// Channels of input images and output views.
    pub fn channels(&self) -> usize {
        self.channels
    }
    /// Side of the square output views.
    pub fn out_size(&self) -> usize {
        self.out_size
    }
    /// The normalisation applied last.
    pub fn normalize(&self) -> &Normalize {
        &self.norm
    }
    /// Floats per view: `C * S * S`.
    pub fn view_len(&self) -> usize {
        self.channels * self.out_size * self.out_size
    }
    /// Views per image: the full-size ones, then the local crops.
    pub fn views_per_image(&self) -> usize {
        self.cfg.views + self.cfg.local_crops.count
    }
    /// Side of every view of an image, in order (full-size views first).
    pub fn view_sizes(&self) -> Vec<usize> {
        let mut v = vec![self.out_size; self.cfg.views];
        v.extend(std::iter::repeat_n(
            self.local_size,
            self.cfg.local_crops.count,
        ));
        v
    }
    /// Smallest and largest value a normalised view can hold, per channel.
    pub fn value_range(&self) -> Vec<(f32, f32)> {
        self.scale
            .iter()
            .zip(&self.shift)
            .map(|(s, m)| (-m, s - m))
            .collect()
    }

    /// Writes one augmented, normalised CHW view of the `h x w` HWC image
    /// `img` into `out` (`view_len()` floats).
    ///
    /// # Panics
    /// When `img` is not `h * w * channels()` bytes or `out` is not
    /// `view_len()` floats.
    pub fn augment_into(
        &self,
        img: &[u8],
        h: usize,
        w: usize,
        rng: &mut ChaCha8Rng,
        out: &mut [f32],
        scratch: &mut Scratch,
    ) {
        self.augment_view_into(img, h, w, rng, false, out, scratch);
    }

    /// Like [`Augmenter::augment_into`], for a local (multi-crop) view when
    /// `local`: `C * L * L` floats, `L` the local side.
    #[allow(clippy::too_many_arguments)]
    pub fn augment_view_into(
        &self,
        img: &[u8],
        h: usize,
        w: usize,
        rng: &mut ChaCha8Rng,
        local: bool,
        out: &mut [f32],
        scratch: &mut Scratch,
    ) {
        let (crop_cfg, s, kernel) = if local {
            (&self.local_crop, self.local_size, self.local_blur_kernel)
        } else {
            (&self.cfg.crop, self.out_size, self.blur_kernel)
        };
        let c = self.channels;
        assert_eq!(img.len(), h * w * c, "image is not {h}x{w}x{c}");
        assert_eq!(out.len(), c * s * s, "view buffer is not {c}x{s}x{s}");
        // Every draw first, in a fixed order.
        let cfg = &self.cfg;
        let crop = crop_cfg.sample(h, w, rng);
        let mirror = cfg.flip.sample(rng);
        let jitter = cfg.color_jitter.sample(rng);
        let gray = cfg.grayscale.sample(rng);
        let sigma = cfg.blur.sample(rng);
        let sol = cfg.solarize.sample(rng);

        let work = &mut scratch.work;
        work.resize(s * s * c, 0.0);
        crop::crop_resize_with(img, h, w, c, crop, mirror, s, s, work, &mut scratch.taps);
        if let Some(j) = jitter {
            j.apply(work, c);
        }
        if gray {
            color::to_grayscale(work, c);
        }
        if let Some(sigma) = sigma {
            blur::gaussian_blur(work, s, s, c, kernel, sigma, &mut scratch.blur);
        }
        if sol {
            solarize::solarize(work, cfg.solarize.threshold as f32);
        }
        self.normalize_into(work, out);
    }

    /// HWC `[0, 1]` floats -> normalised CHW floats.
    fn normalize_into(&self, work: &[f32], out: &mut [f32]) {
        let c = self.channels;
        if c == 1 {
            let (k, m) = (self.scale[0], self.shift[0]);
            for (o, &x) in out.iter_mut().zip(work) {
                *o = x * k - m;
            }
            return;
        }
        let hw = work.len() / c;
        let (r, rest) = out.split_at_mut(hw);
        let (g, b) = rest.split_at_mut(hw);
        let (kr, kg, kb) = (self.scale[0], self.scale[1], self.scale[2]);
        let (mr, mg, mb) = (self.shift[0], self.shift[1], self.shift[2]);
        for (i, p) in work.chunks_exact(3).enumerate() {
            r[i] = p[0] * kr - mr;
            g[i] = p[1] * kg - mg;
            b[i] = p[2] * kb - mb;
        }
    }
}

impl Augmenter {
    /// `views_per_image()` views of an `input_size` HWC image, each drawing
    /// its randomness from `rng` (the same seed gives the same views).
    ///
    /// # Panics
    /// When the sample is not `input_size` x `channels()` bytes.
    pub fn views(&self, sample: &[u8], rng: &mut ChaCha8Rng) -> Vec<Vec<f32>> {
        let (h, w) = self.input;
        let mut scratch = Scratch::default();
        self.view_sizes()
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let mut v = vec![0.0; self.channels * s * s];
                let local = i >= self.cfg.views;
                self.augment_view_into(sample, h, w, rng, local, &mut v, &mut scratch);
                v
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn random_image(h: usize, w: usize, c: usize, seed: u64) -> Vec<u8> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..h * w * c).map(|_| rng.gen()).collect()
    }

    fn strong() -> AugmentConfig {
        AugmentConfig {
            blur: GaussianBlur {
                p: 0.5,
                ..Default::default()
            },
            solarize: Solarize {
                p: 0.3,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn shapes_and_ranges() {
        for (c, side, out) in [(1, 28, 28), (3, 32, 32), (3, 32, 24), (1, 20, 36)] {
            let aug = Augmenter::new(strong(), c, out, Normalize::for_channels(c))
                .unwrap()
                .with_input_size(side, side);
            let img = random_image(side, side, c, 1);
            let range = aug.value_range();
            let mut rng = ChaCha8Rng::seed_from_u64(5);
            for _ in 0..50 {
                let views = aug.views(&img, &mut rng);
                assert_eq!(views.len(), 2);
                for v in &views {
                    assert_eq!(v.len(), c * out * out);
                    for (ch, plane) in v.chunks_exact(out * out).enumerate() {
                        let (lo, hi) = range[ch];
                        assert!(plane
                            .iter()
                            .all(|x| x.is_finite() && *x >= lo - 1e-4 && *x <= hi + 1e-4));
                    }
                }
            }
        }
    }

    #[test]
    fn seeded() {
        let aug = Augmenter::new(strong(), 3, 32, Normalize::for_channels(3)).unwrap();
        let img = random_image(32, 32, 3, 2);
        let a = aug.views(&img, &mut ChaCha8Rng::seed_from_u64(11));
        let b = aug.views(&img, &mut ChaCha8Rng::seed_from_u64(11));
        let c = aug.views(&img, &mut ChaCha8Rng::seed_from_u64(12));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a[0], a[1], "the two views of one draw differ");
    }

    #[test]
    fn identity_pipeline_is_normalisation() {
        let cfg = AugmentConfig {
            views: 1,
            crop: RandomResizedCrop {
                scale: (1.0, 1.0),
                ratio: (1.0, 1.0),
            },
            flip: HorizontalFlip { p: 0.0 },
            color_jitter: ColorJitter {
                p: 0.0,
                ..Default::default()
            },
            grayscale: RandomGrayscale { p: 0.0 },
            ..Default::default()
        };
        let norm = Normalize::for_channels(3);
        let aug = Augmenter::new(cfg.clone(), 3, 8, norm.clone()).unwrap();
        let img = random_image(8, 8, 3, 3);
        let v = &aug.views(&img, &mut ChaCha8Rng::seed_from_u64(0))[0];
        let ds = crate::data::ImageDataset::new("x", 8, 8, 3, img.clone(), None, vec![]).unwrap();
        let t = Vec::<f32>::try_from(ds.to_tensor(&[0], &norm).flatten(0, -1)).unwrap();
        assert!(v.iter().zip(&t).all(|(a, b)| (a - b).abs() < 1e-4));
        // Flip with p = 1 mirrors exactly.
        let flipped = Augmenter::new(
            AugmentConfig {
                flip: HorizontalFlip { p: 1.0 },
                ..cfg
            },
            3,
            8,
            norm,
        )
        .unwrap();
        let f = &flipped.views(&img, &mut ChaCha8Rng::seed_from_u64(0))[0];
        for ch in 0..3 {
            for y in 0..8 {
                for x in 0..8 {
                    assert_eq!(f[ch * 64 + y * 8 + x], v[ch * 64 + y * 8 + 7 - x]);
                }
            }
        }
    }

    #[test]
    fn multi_crop_views() {
        let cfg = AugmentConfig {
            local_crops: LocalCrops {
                count: 3,
                size: 12,
                ..Default::default()
            },
            ..strong()
        };
        let aug = Augmenter::new(cfg.clone(), 1, 28, Normalize::for_channels(1)).unwrap();
        assert_eq!(aug.view_sizes(), vec![28, 28, 12, 12, 12]);
        let img = random_image(28, 28, 1, 4);
        let views = aug.views(&img, &mut ChaCha8Rng::seed_from_u64(1));
        let lens: Vec<usize> = views.iter().map(Vec::len).collect();
        assert_eq!(lens, vec![784, 784, 144, 144, 144]);
        assert_ne!(views[2], views[3]);
        // A local side larger than the image is refused, naming the key.
        let too_big = AugmentConfig {
            local_crops: LocalCrops {
                count: 2,
                size: 40,
                ..Default::default()
            },
            ..cfg
        };
        let e = Augmenter::new(too_big, 1, 28, Normalize::for_channels(1)).unwrap_err();
        assert!(e.to_string().contains("local_crops.size"), "{e}");
        assert_eq!(LocalCrops::default().side_for(224), 96);
    }

    #[test]
    fn config_round_trip_and_unknown_keys() {
        let cfg = strong();
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<AugmentConfig>(&json).unwrap(), cfg);
        let partial: AugmentConfig =
            serde_json::from_str(r#"{"color_jitter": {"hue": 0.0}}"#).unwrap();
        assert_eq!(partial.color_jitter.brightness, 0.4);
        assert_eq!(partial.color_jitter.hue, 0.0);
        assert!(serde_json::from_str::<AugmentConfig>(r#"{"colour_jitter": {}}"#).is_err());
        assert!(serde_json::from_str::<AugmentConfig>(r#"{"flip": {"prob": 0.5}}"#).is_err());
        let toml_text = toml::to_string(&AugmentConfig::default()).unwrap();
        assert_eq!(
            toml::from_str::<AugmentConfig>(&toml_text).unwrap(),
            AugmentConfig::default()
        );
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let n1 = Normalize::for_channels(1);
        assert!(Augmenter::new(AugmentConfig::default(), 2, 28, n1.clone()).is_err());
        assert!(Augmenter::new(AugmentConfig::default(), 3, 28, n1.clone()).is_err());
        assert!(Augmenter::new(AugmentConfig::default(), 1, 0, n1.clone()).is_err());
        let bad = AugmentConfig {
            views: 0,
            ..Default::default()
        };
        assert!(Augmenter::new(bad, 1, 28, n1.clone()).is_err());
        let bad = AugmentConfig {
            grayscale: RandomGrayscale { p: -0.1 },
            ..Default::default()
        };
        let e = Augmenter::new(bad, 1, 28, n1).unwrap_err().to_string();
        assert!(e.contains("grayscale.p"), "{e}");
    }
}
