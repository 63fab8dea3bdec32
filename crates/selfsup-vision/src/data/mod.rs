//! Image datasets: one flat `u8` buffer of HWC images plus labels (owned, or
//! a read-only memory map of an image cache file), and the readers that fill
//! it (IDX / Fashion-MNIST, CIFAR binary batches, ImageFolder trees, folders
//! of the user's own images through the decoded-image cache, the emoji of the
//! npm emoji-datasource packages).
pub mod cifar;
pub mod emoji;
pub mod folder_cache;
pub mod idx;
pub mod image_folder;
mod pixels;

pub use pixels::Pixels;

use crate::{Error, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Which split of a dataset to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training split.
    Train,
    /// The test split.
    Test,
}

impl Split {
    /// `train` or `test`.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// Same-sized images held as one contiguous buffer of bytes.
#[derive(Clone, PartialEq)]
pub struct ImageDataset {
    /// Name shown in logs and summaries (`fashion-mnist/train`).
    pub name: String,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Colour channels: 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// `N * H * W * C` bytes, each image in HWC order (owned, or a memory
    /// map of an image cache file; reads as a `&[u8]`).
    pub pixels: Pixels,
    /// Class index of every image, when known.
    pub labels: Option<Vec<i64>>,
    /// Class names, indexed by label (may be empty).
    pub classes: Vec<String>,
}

impl fmt::Debug for ImageDataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageDataset")
            .field("name", &self.name)
            .field("len", &self.len())
            .field("height", &self.height)
            .field("width", &self.width)
            .field("channels", &self.channels)
            .field("labelled", &self.labels.is_some())
            .field("classes", &self.classes.len())
            .finish()
    }
}

impl ImageDataset {
    /// Builds a dataset after checking that the buffer and labels agree with
    /// the image shape.
    pub fn new(
        name: impl Into<String>,
        height: usize,
        width: usize,
        channels: usize,
        pixels: Vec<u8>,
        labels: Option<Vec<i64>>,
        classes: Vec<String>,
    ) -> Result<Self> {
        Self::from_pixels(
            name,
            height,
            width,
            channels,
            Pixels::from(pixels),
            labels,
            classes,
        )
    }

    /// [`ImageDataset::new`] over any [`Pixels`] (an owned buffer or a
    /// memory-mapped cache file), with the same checks.
    pub fn from_pixels(
        name: impl Into<String>,
        height: usize,
        width: usize,
        channels: usize,
        pixels: Pixels,
        labels: Option<Vec<i64>>,
        classes: Vec<String>,
    ) -> Result<Self> {
        let name = name.into();
        if channels != 1 && channels != 3 {
            return Err(Error::Config(format!(
                "{name}: images must have 1 or 3 channels, not {channels}"
            )));
        }
        let Some(per) = height
            .checked_mul(width)
            .and_then(|p| p.checked_mul(channels))
        else {
            return Err(Error::Config(format!(
                "{name}: image shape {height}x{width}x{channels} overflows"
            )));
        };
        if per == 0 {
            return Err(Error::Config(format!(
                "{name}: empty image shape {height}x{width}x{channels}"
            )));
        }
        let n = pixels.len() / per;
        if n * per != pixels.len() {
            return Err(Error::Config(format!(
                "{name}: {} pixel bytes is not a multiple of one {height}x{width}x{channels} image ({per} bytes)",
                pixels.len()
            )));
        }
        if let Some(l) = &labels {
            if l.len() != n {
                return Err(Error::Config(format!(
                    "{name}: {n} images but {} labels",
                    l.len()
                )));
            }
        }
        Ok(Self {
            name,
            height,
            width,
            channels,
            pixels,
            labels,
            classes,
        })
    }

    /// Bytes per image (`H * W * C`).
    pub fn image_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.pixels.len().checked_div(self.image_len()).unwrap_or(0)
    }

    /// Whether the dataset holds no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image `i` as `H * W * C` bytes in HWC order.
    ///
    /// # Panics
    /// When `i >= self.len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        let per = self.image_len();
        &self.pixels[i * per..(i + 1) * per]
    }

    /// A new dataset holding the images at `indices`, in that order.
    ///
    /// # Panics
    /// When an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> ImageDataset {
        let per = self.image_len();
        let mut pixels = Vec::with_capacity(indices.len() * per);
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        ImageDataset {
            name: self.name.clone(),
            height: self.height,
            width: self.width,
            channels: self.channels,
            pixels: pixels.into(),
            labels: self
                .labels
                .as_ref()
                .map(|l| indices.iter().map(|&i| l[i]).collect()),
            classes: self.classes.clone(),
        }
    }

    /// The first `n` images (all when `n >= len`), without copying: an owned
    /// buffer is truncated, a memory map is narrowed.
    pub fn prefix(mut self, n: usize) -> ImageDataset {
        if n < self.len() {
            let bytes = n * self.image_len();
            self.pixels = std::mem::take(&mut self.pixels).prefix(bytes);
            if let Some(l) = &mut self.labels {
                l.truncate(n);
            }
        }
        self
    }

    /// The labels as an `[N]` int64 tensor, when known.
    pub fn labels_tensor(&self) -> Option<tch::Tensor> {
        self.labels.as_ref().map(|l| tch::Tensor::from_slice(l))
    }

    /// The images at `indices`, without augmentation, as an `[n, C, H, W]` f32
    /// tensor: `value / 255`, then `(x - mean) / std` per channel.
    ///
    /// # Panics
    /// When an index is out of range or `norm` does not have one mean and one
    /// std per channel.
    pub fn to_tensor(&self, indices: &[usize], norm: &Normalize) -> tch::Tensor {
        let c = self.channels;
        assert!(
            norm.mean.len() == c && norm.std.len() == c,
            "normalisation has {} means / {} stds for {c}-channel images",
            norm.mean.len(),
            norm.std.len()
        );
        // One lookup table per channel: byte value -> normalised float.
        let lut: Vec<[f32; 256]> = (0..c)
            .map(|ch| {
                let mut t = [0f32; 256];
                for (v, x) in t.iter_mut().enumerate() {
                    *x = (v as f32 / 255.0 - norm.mean[ch]) / norm.std[ch];
                }
                t
            })
            .collect();
        let hw = self.height * self.width;
        let per = hw * c;
        let shape = [
            indices.len() as i64,
            c as i64,
            self.height as i64,
            self.width as i64,
        ];
        let mut t = OwnedF32::zeros(&shape);
        if per > 0 {
            let out = t.as_mut_slice();
            out.par_chunks_mut(per)
                .zip(indices.par_iter())
                .for_each(|(dst, &i)| {
                    let img = self.image(i);
                    for (ch, table) in lut.iter().enumerate() {
                        let plane = &mut dst[ch * hw..(ch + 1) * hw];
                        for (p, x) in plane.iter_mut().enumerate() {
                            *x = table[img[p * c + ch] as usize];
                        }
                    }
                });
        }
        t.into_tensor()
    }
}

/// A freshly allocated, zeroed, contiguous f32 CPU tensor that no other handle
/// shares, so its storage can be written in place as a slice.
///
/// `Tensor::from_slice` zero-fills through libtorch (an OpenMP parallel region
/// whose spinning workers then steal the cores from rayon) and copies; this
/// allocates with `Tensor::empty`, clears with one `memset`, lets the caller
/// write straight into the storage, and hands the tensor out only at the end.
pub(crate) struct OwnedF32(tch::Tensor);

impl OwnedF32 {
    /// A zeroed tensor of `shape`.
    pub(crate) fn zeros(shape: &[i64]) -> Self {
        let t = tch::Tensor::empty(shape, (tch::Kind::Float, tch::Device::Cpu));
        let n = t.numel();
        if n > 0 {
            // SAFETY: `t` was just allocated as a contiguous CPU f32 tensor of
            // `n` elements; the pointer is valid and aligned for `n` writes.
            unsafe { std::ptr::write_bytes(t.data_ptr() as *mut f32, 0, n) };
        }
        Self(t)
    }

    /// The elements, in memory order.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        let n = self.0.numel();
        if n == 0 {
            return &mut [];
        }
        // SAFETY: the tensor is contiguous, f32, on the CPU, initialised (zeroed
        // in `zeros`) and holds `n` elements; no other handle to its storage
        // exists (it is never shallow-cloned or handed out before
        // `into_tensor`), and the slice borrows `self` mutably.
        unsafe { std::slice::from_raw_parts_mut(self.0.data_ptr() as *mut f32, n) }
    }

    /// The finished tensor.
    pub(crate) fn into_tensor(self) -> tch::Tensor {
        self.0
    }
}

/// Per-channel normalisation applied after scaling bytes to `[0, 1]`:
/// `(x - mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    /// Mean of every channel (on the `[0, 1]` scale).
    pub mean: Vec<f32>,
    /// Standard deviation of every channel (on the `[0, 1]` scale).
    pub std: Vec<f32>,
}

impl Normalize {
    /// Fashion-MNIST training-set statistics (grey).
    pub const FASHION_MNIST: ([f32; 1], [f32; 1]) = ([0.2860], [0.3530]);
    /// CIFAR-10 training-set statistics (RGB).
    pub const CIFAR10: ([f32; 3], [f32; 3]) = ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]);

    /// Sensible defaults: Fashion-MNIST statistics for 1 channel, CIFAR-10
    /// statistics for 3, and mean 0.5 / std 0.5 for any other count.
    pub fn for_channels(c: usize) -> Self {
        match c {
            1 => Self {
                mean: Self::FASHION_MNIST.0.to_vec(),
                std: Self::FASHION_MNIST.1.to_vec(),
            },
            3 => Self {
                mean: Self::CIFAR10.0.to_vec(),
                std: Self::CIFAR10.1.to_vec(),
            },
            _ => Self {
                mean: vec![0.5; c],
                std: vec![0.5; c],
            },
        }
    }

    /// Checks that there is one positive, finite std and one finite mean per channel.
    pub fn validate(&self, channels: usize) -> Result<()> {
        if self.mean.len() != channels || self.std.len() != channels {
            return Err(Error::Config(format!(
                "normalisation has {} means and {} stds for {channels}-channel images",
                self.mean.len(),
                self.std.len()
            )));
        }
        if self.mean.iter().any(|m| !m.is_finite())
            || self.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err(Error::Config(format!(
                "normalisation needs finite means and positive stds, got mean {:?} std {:?}",
                self.mean, self.std
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ImageDataset {
        // 3 images of 2x2x1.
        ImageDataset::new(
            "tiny",
            2,
            2,
            1,
            (0..12).map(|v| (v * 20) as u8).collect(),
            Some(vec![0, 1, 2]),
            vec!["a".into(), "b".into(), "c".into()],
        )
        .unwrap()
    }

    #[test]
    fn len_image_subset() {
        let d = tiny();
        assert_eq!(d.len(), 3);
        assert!(!d.is_empty());
        assert_eq!(d.image(1), &[80, 100, 120, 140]);
        let s = d.subset(&[2, 0]);
        assert_eq!(s.len(), 2);
        assert_eq!(s.image(0), d.image(2));
        assert_eq!(s.labels, Some(vec![2, 0]));
        assert_eq!(
            Vec::<i64>::try_from(d.labels_tensor().unwrap()).unwrap(),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn new_rejects_bad_shapes() {
        assert!(ImageDataset::new("x", 2, 2, 1, vec![0; 5], None, vec![]).is_err());
        assert!(ImageDataset::new("x", 2, 2, 2, vec![0; 8], None, vec![]).is_err());
        assert!(ImageDataset::new("x", 2, 2, 1, vec![0; 8], Some(vec![0]), vec![]).is_err());
        let e = ImageDataset::new("x", usize::MAX, 2, 1, vec![0; 8], None, vec![]).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
    }

    #[test]
    fn to_tensor_normalises_chw() {
        // One 1x2 RGB image: pixel 0 = (0, 255, 51), pixel 1 = (255, 0, 102).
        let d =
            ImageDataset::new("rgb", 1, 2, 3, vec![0, 255, 51, 255, 0, 102], None, vec![]).unwrap();
        let norm = Normalize {
            mean: vec![0.0, 0.5, 0.0],
            std: vec![1.0, 0.5, 2.0],
        };
        let t = d.to_tensor(&[0], &norm);
        assert_eq!(t.size(), vec![1, 3, 1, 2]);
        let v = Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
        let want = [0.0, 1.0, 1.0, -1.0, 0.1, 0.2];
        for (a, b) in v.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{v:?}");
        }
    }

    #[test]
    fn normalize_defaults() {
        assert_eq!(Normalize::for_channels(1).mean, vec![0.2860]);
        assert_eq!(Normalize::for_channels(3).mean.len(), 3);
        assert!(Normalize::for_channels(3).validate(3).is_ok());
        assert!(Normalize::for_channels(3).validate(1).is_err());
    }
}
