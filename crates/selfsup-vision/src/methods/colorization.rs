//! Colorization (Zhang, Isola & Efros 2016, "Colorful Image Colorization",
//! arXiv:1603.08511): the encoder sees only the lightness of an image and
//! predicts its colour, as a classification over quantised colours with
//! class rebalancing.
//!
//! * **Colour space**: CIE L\*a\*b\* (D65 white, sRGB primaries, as
//!   `skimage.color.rgb2lab`, which the paper's code uses). The encoder's
//!   input is L\* / 100 normalised with mean 0.5 and std 0.5 (so in
//!   `[-1, 1]`): one channel, and the export records `in_channels = 1` with
//!   that recipe under `preprocess`. [`Method::embed`] takes the usual
//!   normalised RGB images and converts them itself, so kNN and the linear
//!   probe run unchanged.
//! * **Target**: the ab channels average-pooled to `out_size` x `out_size`
//!   (the paper predicts at a quarter of the input resolution: 8 for 32x32
//!   CIFAR images) and quantised to the nearest point of a grid of step
//!   `bin_size` (paper: 10) centred on 0 and reaching ±110, as the paper's
//!   bin centres: 23 x 23 = 529 classes (grey is the centre bin). The paper
//!   keeps only its 313 in-gamut bins and soft-encodes each pixel over its 5
//!   nearest bins; here the target is the one nearest bin (bins that never
//!   occur never receive a target).
//! * **Rebalancing**: pixel `q` of class `c` weighs
//!   `w_c ∝ 1 / ((1 - λ) p_c + λ / Q)` with `E_p[w] = 1` (paper: λ = 0.5),
//!   where `p` is the empirical colour distribution. The paper measures `p`
//!   on ImageNet beforehand and smooths it; here it is the running histogram
//!   of every target seen so far (a non-trainable `ab_counts` variable, so it
//!   is checkpointed), unsmoothed. `rebalance = 1` gives plain cross-entropy.
//! * **Decoder**: the encoders here end at a global average pool, so the
//!   colour map is decoded from the feature vector: a linear layer to a
//!   `decoder_channels` x `out_size/2` x `out_size/2` map, ReLU, a 4x4
//!   stride-2 transposed convolution to `out_size`, batch norm, ReLU and a
//!   1x1 convolution to the 529 class logits. The paper's network is fully
//!   convolutional: each location's colour comes from features at that
//!   location. Decoded from one pooled vector, the colour map makes the
//!   encoder spend its features on *where* things are. With
//!   `lightness_skip = true` a 1x1 convolution (batch norm, ReLU) first mixes
//!   the upsampled map with each cell's lightness (mean, minimum, maximum of
//!   the encoder's input over the cell), in the spirit of Iizuka et al.
//!   2016's fusion of global and local features: the layout comes from the
//!   input, and the feature vector only has to say which colours go with
//!   which lightness in this image. The skip is three numbers per cell, too
//!   little to colour an image without the encoder.
//! * **Background**: the emoji are composited over white, so most target
//!   cells are white (grey bin, lightness 100) and trivially predictable;
//!   rebalancing already weighs the grey bin down (its frequency dominates
//!   `p`), so no extra mask is applied.
//! * **Evaluation**: kNN and the linear probe see the encoder's own input
//!   (the lightness of the RGB images), and so does the random-weights
//!   control (the same method, untrained); the raw-pixel baseline sees RGB.
//!
//! Needs 3-channel (RGB) data; grey data such as Fashion-MNIST has no colour
//! to predict and is refused when the method is built. Trained from one
//! augmented view per image (the preset turns colour jitter and random
//! grayscale off: they would change the colours to predict).
use super::pretext::{check_fraction, single_view};
use crate::data::Normalize;
use crate::models::{build_encoder, EncoderConfig};
use selfsup_core::batch_norm::{batch_norm2d, BatchNorm};
use selfsup_core::encoder::Encoder;
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn;
use tch::{Kind, Tensor};

/// Half-width of the ab range that is binned.
pub const AB_RANGE: f64 = 110.0;

/// Colorization settings (the `[method]` table with `name = "colorization"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ColorizationConfig {
    /// Side of the predicted colour map (even, at least 2).
    pub out_size: i64,
    /// Step of the ab grid (paper: 10); must divide 110.
    pub bin_size: f64,
    /// Rebalancing mix λ in `(0, 1]` (paper: 0.5; 1 = no rebalancing).
    pub rebalance: f64,
    /// Channels of the decoder's first map.
    pub decoder_channels: i64,
    /// Whether the decoder also sees the lightness of each output cell (its
    /// mean, minimum and maximum): the global feature vector then carries
    /// what the image is (which colours go with which lightness), not where
    /// things are (see the module docs).
    pub lightness_skip: bool,
}

impl Default for ColorizationConfig {
    fn default() -> Self {
        Self {
            out_size: 8,
            bin_size: 10.0,
            rebalance: 0.5,
            decoder_channels: 128,
            lightness_skip: false,
        }
    }
}

impl ColorizationConfig {
    /// Bins per ab axis: `2 * 110 / bin_size + 1`.
    pub fn bins_per_axis(&self) -> i64 {
        2 * (AB_RANGE / self.bin_size).round() as i64 + 1
    }

    /// Checks ranges; the error names the key.
    pub fn validate(&self) -> Result<()> {
        if self.out_size < 2 || self.out_size % 2 != 0 {
            return Err(Error::Config(format!(
                "colorization: out_size must be even and at least 2, got {}",
                self.out_size
            )));
        }
        let steps = AB_RANGE / self.bin_size;
        let whole = self.bin_size.is_finite()
            && self.bin_size > 0.0
            && steps >= 1.0
            && (steps - steps.round()).abs() <= 1e-9;
        if !whole {
            return Err(Error::Config(format!(
                "colorization: bin_size must divide 110 (e.g. 10), got {}",
                self.bin_size
            )));
        }
        check_fraction("colorization", "rebalance", self.rebalance, true)?;
        if self.decoder_channels < 2 {
            return Err(Error::Config(format!(
                "colorization: decoder_channels must be at least 2, got {}",
                self.decoder_channels
            )));
        }
        Ok(())
    }
}

/// sRGB in `[0, 1]` `[B, 3, H, W]` to CIE L\*a\*b\* (D65) `[B, 3, H, W]`,
/// computed as `skimage.color.rgb2lab`, in float32 with autocast off (in
/// bfloat16 the colour matrix product moves a\*, b\* by whole units: the
/// targets would fall into neighbouring bins).
pub fn rgb_to_lab(rgb: &Tensor) -> Tensor {
    selfsup_core::autocast::full_precision(|| rgb_to_lab_f32(&rgb.to_kind(Kind::Float)))
}

fn rgb_to_lab_f32(rgb: &Tensor) -> Tensor {
    let linear = ((rgb + 0.055) / 1.055)
        .pow_tensor_scalar(2.4)
        .where_self(&rgb.gt(0.04045), &(rgb / 12.92));
    let m = Tensor::from_slice(&[
        0.412453f32,
        0.357580,
        0.180423,
        0.212671,
        0.715160,
        0.072169,
        0.019334,
        0.119193,
        0.950227,
    ])
    .view([3, 3])
    .to_device(rgb.device());
    let white = Tensor::from_slice(&[0.95047f32, 1.0, 1.08883])
        .view([1, 3, 1, 1])
        .to_device(rgb.device());
    let xyz = Tensor::einsum("ij,bjhw->bihw", &[m, linear], None::<i64>) / white;
    let eps = (6.0f64 / 29.0).powi(3);
    let f = xyz.clamp_min(eps).pow_tensor_scalar(1.0 / 3.0).where_self(
        &xyz.gt(eps),
        &(&xyz / (3.0 * (6.0f64 / 29.0).powi(2)) + 4.0 / 29.0),
    );
    let (fx, fy, fz) = (f.narrow(1, 0, 1), f.narrow(1, 1, 1), f.narrow(1, 2, 1));
    Tensor::cat(
        &[&fy * 116.0 - 16.0, (&fx - &fy) * 500.0, (&fy - &fz) * 200.0],
        1,
    )
}

/// The ab class of every pixel of `ab` `[B, 2, h, w]`: `[B, h, w]` `Int64`,
/// `a_bin * bins_per_axis + b_bin` where bin `i` is centred on
/// `-110 + i * bin_size` (nearest centre; beyond ±110 clamped to the edge).
pub fn ab_classes(ab: &Tensor, bin_size: f64, bins_per_axis: i64) -> Tensor {
    let bins = ((ab + AB_RANGE) / bin_size)
        .round()
        .clamp(0.0, (bins_per_axis - 1) as f64)
        .to_kind(Kind::Int64);
    bins.select(1, 0) * bins_per_axis + bins.select(1, 1)
}

/// Channels of the lightness statistics the decoder's skip sees per cell
/// (mean, minimum, maximum).
const LIGHTNESS_STATS: i64 = 3;

/// The colour decoder: feature vector (and, with the lightness skip, the
/// lightness of each cell) to class logits at `out_size`.
#[derive(Debug)]
struct Decoder {
    fc: nn::Linear,
    up: nn::ConvTranspose2D,
    bn: BatchNorm,
    /// The lightness skip: a 1x1 convolution over the upsampled map and the
    /// cell's lightness statistics, batch norm, ReLU.
    mix: Option<(nn::Conv2D, BatchNorm)>,
    out: nn::Conv2D,
    channels: i64,
    side: i64,
}

impl Decoder {
    fn new(p: &nn::Path, in_dim: i64, cfg: &ColorizationConfig, classes: i64) -> Self {
        let (channels, out_size) = (cfg.decoder_channels, cfg.out_size);
        let side = out_size / 2;
        let up_cfg = nn::ConvTransposeConfig {
            stride: 2,
            padding: 1,
            ..Default::default()
        };
        Self {
            fc: nn::linear(p / "fc", in_dim, channels * side * side, Default::default()),
            up: nn::conv_transpose2d(p / "up", channels, channels / 2, 4, up_cfg),
            bn: batch_norm2d(p / "bn", channels / 2, Default::default()),
            mix: cfg.lightness_skip.then(|| {
                let m = p / "mix";
                (
                    nn::conv2d(
                        &m / "conv",
                        channels / 2 + LIGHTNESS_STATS,
                        channels / 2,
                        1,
                        Default::default(),
                    ),
                    batch_norm2d(&m / "bn", channels / 2, Default::default()),
                )
            }),
            out: nn::conv2d(p / "out", channels / 2, classes, 1, Default::default()),
            channels,
            side,
        }
    }
}

impl Decoder {
    /// Logits of encoder features `[B, D]`; `input` is the encoder's
    /// lightness input `[B, 1, H, W]`, read by the skip only.
    fn forward_t(&self, feats: &Tensor, input: &Tensor, train: bool) -> Tensor {
        let map = feats
            .apply(&self.fc)
            .view([-1, self.channels, self.side, self.side])
            .relu()
            .apply(&self.up)
            .apply_t(&self.bn, train)
            .relu();
        let map = match &self.mix {
            Some((conv, bn)) => {
                let size = map.size();
                let out = [size[2], size[3]];
                let stats = Tensor::cat(
                    &[
                        input.adaptive_avg_pool2d(out),
                        input.neg().adaptive_max_pool2d(out).0.neg(),
                        input.adaptive_max_pool2d(out).0,
                    ],
                    1,
                )
                .to_kind(map.kind());
                Tensor::cat(&[&map, &stats], 1)
                    .apply(conv)
                    .apply_t(bn, train)
                    .relu()
            }
            None => map,
        };
        map.apply(&self.out)
    }
}

/// The colorization method: encoder under `encoder.`, decoder under
/// `decoder.`, the colour histogram in `ab_counts`.
pub struct Colorization {
    vs: nn::VarStore,
    encoder: Box<dyn Encoder>,
    decoder: Decoder,
    counts: Tensor,
    cfg: ColorizationConfig,
    /// Per-channel mean and std of the data's normalisation, `[1, 3, 1, 1]`.
    mean: Tensor,
    std: Tensor,
}

impl Colorization {
    /// The normalisation of the encoder's input (L\* / 100).
    pub fn lightness_normalize() -> Normalize {
        Normalize {
            mean: vec![0.5],
            std: vec![0.5],
        }
    }

    /// Builds the 1-channel encoder and the decoder on `device`, for
    /// `in_channels`-channel data normalised with `norm`; refuses anything
    /// but RGB data.
    pub fn new(
        device: tch::Device,
        encoder: &EncoderConfig,
        in_channels: i64,
        norm: &Normalize,
        cfg: &ColorizationConfig,
    ) -> Result<Self> {
        if in_channels != 3 {
            return Err(Error::Config(format!(
                "colorization predicts the colours of RGB images, and this data has {in_channels} \
                 channel{}: grey images (Fashion-MNIST) have no colour to predict. Use 3-channel \
                 data such as CIFAR-10 (`[data] format = \"cifar10\"`)",
                if in_channels == 1 { "" } else { "s" }
            )));
        }
        norm.validate(3)?;
        cfg.validate()?;
        let vs = nn::VarStore::new(device);
        let enc = build_encoder(&(vs.root() / "encoder"), encoder, 1);
        let q = cfg.bins_per_axis() * cfg.bins_per_axis();
        let decoder = Decoder::new(&(vs.root() / "decoder"), enc.out_dim(), cfg, q);
        let counts = vs.root().zeros_no_train("ab_counts", &[q]);
        let stat = |v: &[f32]| Tensor::from_slice(v).view([1, 3, 1, 1]).to_device(device);
        Ok(Self {
            encoder: enc,
            decoder,
            counts,
            cfg: cfg.clone(),
            mean: stat(&norm.mean),
            std: stat(&norm.std),
            vs,
        })
    }

    /// The variable prefix of the encoder (what gets exported).
    pub const ENCODER_PREFIX: &'static str = "encoder";

    /// Number of colour classes.
    pub fn classes(&self) -> i64 {
        self.counts.size()[0]
    }

    /// The encoder input (normalised L\* / 100, `[B, 1, H, W]`) and the ab
    /// classes at `out_size` (`[B, out, out]`) of normalised RGB images.
    pub fn inputs_and_targets(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        if x.dim() != 4 || x.size()[1] != 3 {
            return Err(Error::Config(format!(
                "colorization needs [batch, 3, H, W] RGB images, got shape {:?}",
                x.size()
            )));
        }
        let lab = tch::no_grad(|| rgb_to_lab(&self.to_rgb(x)));
        let input = (lab.narrow(1, 0, 1) / 100.0 - 0.5) / 0.5;
        let ab = lab
            .narrow(1, 1, 2)
            .adaptive_avg_pool2d([self.cfg.out_size, self.cfg.out_size]);
        let k = self.cfg.bins_per_axis();
        Ok((input, ab_classes(&ab, self.cfg.bin_size, k)))
    }

    fn to_rgb(&self, x: &Tensor) -> Tensor {
        let x = x.to_kind(Kind::Float);
        (&x * &self.std.to_device(x.device()) + &self.mean.to_device(x.device())).clamp(0.0, 1.0)
    }

    /// Colour logits `[B, classes, out, out]` of encoder inputs.
    pub fn logits(&self, input: &Tensor, train: bool) -> Tensor {
        let feats = self.encoder.forward_t(input, train);
        self.decoder.forward_t(&feats, input, train)
    }

    /// Rebalancing weight of every class from the colour histogram so far:
    /// `1 / ((1 - λ) p + λ / Q)`, scaled so that `E_p[w] = 1` (all 1 while
    /// the histogram is empty).
    pub fn class_weights(&self) -> Tensor {
        let q = self.classes() as f64;
        let lambda = self.cfg.rebalance;
        let total = self.counts.sum(Kind::Float);
        if total.double_value(&[]) <= 0.0 {
            return self.counts.ones_like();
        }
        let p = &self.counts / total;
        let w = ((&p * (1.0 - lambda)) + lambda / q).reciprocal();
        let mean = (&p * &w).sum(Kind::Float);
        w / mean.clamp_min(1e-12)
    }

    /// Rebalanced cross-entropy of `logits` against `targets`, with the
    /// weights of the current histogram (the caller adds the targets first).
    pub fn loss(&self, logits: &Tensor, targets: &Tensor) -> Tensor {
        let weights = self.class_weights();
        let per_pixel = logits
            .log_softmax(1, Kind::Float)
            .gather(1, &targets.unsqueeze(1), false)
            .squeeze_dim(1)
            .neg();
        let w = weights
            .index_select(0, &targets.flatten(0, -1))
            .view_as(targets);
        (per_pixel * w).mean(Kind::Float)
    }

    /// Adds the targets to the colour histogram.
    pub fn count(&mut self, targets: &Tensor) {
        tch::no_grad(|| {
            let c = targets
                .flatten(0, -1)
                .bincount::<Tensor>(None, self.classes())
                .to_kind(Kind::Float);
            let _ = self.counts.g_add_(&c);
        });
    }
}

impl Method for Colorization {
    fn name(&self) -> &'static str {
        "colorization"
    }
    fn target(&self) -> TargetKind {
        TargetKind::Pretext
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, _ctx: &StepCtx) -> Result<LossOut> {
        let x = single_view("colorization", batch)?;
        let (input, targets) = self.inputs_and_targets(x)?;
        self.count(&targets);
        let logits = self.logits(&input, true);
        let loss = self.loss(&logits, &targets);
        let accuracy = tch::no_grad(|| {
            logits
                .argmax(1, false)
                .eq_tensor(&targets)
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[])
        });
        Ok(LossOut {
            loss,
            terms: vec![("colour_bin_accuracy", accuracy)],
        })
    }
    /// Features of normalised RGB images `[B, 3, H, W]` (converted to the
    /// encoder's lightness input here); a 1-channel input is taken to be that
    /// lightness input already.
    fn embed(&self, xs: &Tensor) -> Tensor {
        let input = if xs.size().get(1) == Some(&3) {
            let lab = rgb_to_lab(&self.to_rgb(xs));
            (lab.narrow(1, 0, 1) / 100.0 - 0.5) / 0.5
        } else {
            xs.shallow_clone()
        };
        self.encoder.forward_t(&input, false)
    }
    /// The encoder features: the decoder's colour map is no embedding.
    fn project(&self, xs: &Tensor) -> Tensor {
        self.embed(xs)
    }
}

#[cfg(test)]
mod tests;
