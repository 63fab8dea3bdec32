//! A visual tokenizer for BEiT ([`super::beit`]): a small VQ-VAE (van den
//! Oord et al. 2017) that maps each `patch x patch` patch of an image to one
//! of `codebook_size` discrete codes, trained on its own
//! (`[method] name = "vq_tokenizer"`) before BEiT reads it frozen.
//!
//! - Grid: the tokenizer is built for the ViT named in `[model]` (it reads
//!   its `patch_size` and `image_size` only): one code per ViT patch, so a
//!   28x28 image in 4x4 patches gets a 7x7 grid of codes. `patch_size` must
//!   be a power of two up to 16 (one stride-2 convolution per halving).
//! - Encoder (`encoder.*`): a 3x3 convolution to `hidden` channels, one
//!   4x4 stride-2 convolution per halving, a residual block, a 1x1
//!   convolution to `code_dim`. ReLU between.
//! - Quantizer (`quantizer.*`): the nearest of `codebook_size` vectors
//!   (`quantizer.embed`, `[K, code_dim]`) in Euclidean distance. The
//!   codebook is not trained by gradients: it follows the exponential moving
//!   average of the encodings assigned to each code (`quantizer.cluster_size`,
//!   `quantizer.embed_avg`, decay `ema_decay`, Laplace-smoothed counts), as
//!   VQ-VAE's appendix and VQ-VAE-2 do. A code whose moving count falls below
//!   `dead_code_threshold` encodings per step is restarted at a random
//!   encoding of the batch (rows drawn from a generator seeded by the step
//!   alone, not libtorch's global one). The first update puts every code at a random
//!   encoding of the first batch. In a data-parallel run the counts and
//!   sums are averaged over the ranks and rank 0's restarts are broadcast.
//! - Decoder (`decoder.*`): the mirror image (1x1 convolution, residual
//!   block, one 4x4 stride-2 transposed convolution per halving, a 3x3
//!   convolution to the image channels).
//! - Loss: mean squared reconstruction error of the normalised image plus
//!   `commitment` times the squared distance between each encoding and its
//!   (detached) code; the decoder sees the codes through the
//!   straight-through estimator.
//!
//! Reported on the validation part ([`VqTokenizer::report`], in the run
//! summary): reconstruction PSNR in `[0, 1]` pixel units (the
//! reconstruction un-normalised and clipped), codebook perplexity (`exp` of
//! the entropy of the code histogram) and used codes.
//!
//! The representation ([`Method::embed`]) is the flattened grid of
//! encodings before quantisation. The export ([`export_tokenizer`]) is the
//! whole network: `model.safetensors` (encoder, codebook, decoder) and
//! `config.json` (format [`TOKENIZER_FORMAT`]);
//! `benchmarks/vq_tokenizer_reference.py` rebuilds it in PyTorch, loads it
//! strictly and reproduces its codes and reconstructions.
use crate::data::Normalize;
use crate::evaluate::EvalData;
use crate::models::EncoderConfig;
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::{tensor_io, Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use tch::nn::{self, Init};
use tch::{Device, Kind, Tensor};

/// `format` of a tokenizer export's `config.json`.
pub const TOKENIZER_FORMAT: &str = "selfsup-vq-tokenizer-v1";
/// Weights file of a tokenizer export.
pub const TOKENIZER_WEIGHTS: &str = "model.safetensors";
/// Description file of a tokenizer export.
pub const TOKENIZER_CONFIG: &str = "config.json";
/// Largest codebook accepted (bounds the `[M, K]` distance matrix).
pub const MAX_CODEBOOK: i64 = 65_536;

/// VQ tokenizer settings (`[method]` with `name = "vq_tokenizer"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VqTokenizerConfig {
    /// Codes in the codebook: BEiT's vocabulary (512).
    pub codebook_size: i64,
    /// Width of a code vector (32).
    pub code_dim: i64,
    /// Channels of the convolutions (64).
    pub hidden: i64,
    /// Weight of the commitment term (0.25, VQ-VAE's beta).
    pub commitment: f64,
    /// Decay of the codebook's moving averages (0.99).
    pub ema_decay: f64,
    /// A code assigned fewer encodings than this per step (moving average)
    /// is restarted at a batch encoding (1.0).
    pub dead_code_threshold: f64,
}

impl Default for VqTokenizerConfig {
    fn default() -> Self {
        Self {
            codebook_size: 512,
            code_dim: 32,
            hidden: 64,
            commitment: 0.25,
            ema_decay: 0.99,
            dead_code_threshold: 1.0,
        }
    }
}

impl VqTokenizerConfig {
    /// Refuses settings that cannot train; the error names the `[method]` key.
    pub fn check_ranges(&self) -> std::result::Result<(), String> {
        for (key, v, max) in [
            ("codebook_size", self.codebook_size, MAX_CODEBOOK),
            ("code_dim", self.code_dim, 4096),
            ("hidden", self.hidden, 4096),
        ] {
            if !(1..=max).contains(&v) {
                return Err(format!("[method] {key} = {v}: must be between 1 and {max}"));
            }
        }
        if self.codebook_size < 2 {
            return Err("[method] codebook_size must be at least 2".into());
        }
        if !(self.commitment.is_finite() && self.commitment >= 0.0) {
            return Err(format!(
                "[method] commitment = {}: must be 0 or more (VQ-VAE: 0.25)",
                self.commitment
            ));
        }
        if !(self.ema_decay > 0.0 && self.ema_decay < 1.0) {
            return Err(format!(
                "[method] ema_decay = {}: must be above 0 and below 1 (0.99)",
                self.ema_decay
            ));
        }
        if !(self.dead_code_threshold.is_finite() && self.dead_code_threshold >= 0.0) {
            return Err(format!(
                "[method] dead_code_threshold = {}: must be 0 (no restarts) or more",
                self.dead_code_threshold
            ));
        }
        Ok(())
    }
}

/// The shape of a tokenizer network: everything it is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VqArch {
    /// Channels of the images.
    pub in_channels: i64,
    /// Side of the square images the tokenizer is built for.
    pub image_size: i64,
    /// Side of the patch one code stands for (a power of two).
    pub patch_size: i64,
    /// Codes in the codebook.
    pub codebook_size: i64,
    /// Width of a code.
    pub code_dim: i64,
    /// Channels of the convolutions.
    pub hidden: i64,
}

impl VqArch {
    /// Stride-2 stages: `log2(patch_size)`.
    pub fn levels(&self) -> i64 {
        self.patch_size.max(1).trailing_zeros() as i64
    }

    /// Side of the code grid.
    pub fn grid(&self) -> i64 {
        self.image_size / self.patch_size.max(1)
    }

    /// Positive sizes, a power-of-two patch up to 16 dividing the image.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let p = self.patch_size;
        if !(1..=16).contains(&p) || p & (p - 1) != 0 {
            return Err(format!(
                "patch_size = {p}: the VQ tokenizer needs a power of two from 1 to 16 (one \
                 stride-2 convolution per halving); set [model] patch_size = 4 or 8"
            ));
        }
        if self.image_size < 1 || self.image_size % p != 0 {
            return Err(format!(
                "image_size = {} must be a positive multiple of patch_size = {p}",
                self.image_size
            ));
        }
        if !(1..=64).contains(&self.in_channels) {
            return Err(format!(
                "in_channels = {}: must be between 1 and 64",
                self.in_channels
            ));
        }
        for (key, v, max) in [
            ("codebook_size", self.codebook_size, MAX_CODEBOOK),
            ("code_dim", self.code_dim, 4096),
            ("hidden", self.hidden, 4096),
        ] {
            if !(1..=max).contains(&v) {
                return Err(format!("{key} = {v}: must be between 1 and {max}"));
            }
        }
        Ok(())
    }
}

fn conv(p: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, padding: i64) -> nn::Conv2D {
    nn::conv2d(
        p,
        c_in,
        c_out,
        k,
        nn::ConvConfig {
            stride,
            padding,
            ..Default::default()
        },
    )
}

/// `x + conv2(relu(conv1(relu(x))))` (3x3 then 1x1), as VQ-VAE's residual
/// blocks.
#[derive(Debug)]
struct ResBlock {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
}

impl ResBlock {
    fn new(p: &nn::Path, c: i64) -> Self {
        Self {
            conv1: conv(p / "conv1", c, c, 3, 1, 1),
            conv2: conv(p / "conv2", c, c, 1, 1, 0),
        }
    }
    fn forward(&self, xs: &Tensor) -> Tensor {
        xs + xs.relu().apply(&self.conv1).relu().apply(&self.conv2)
    }
}

/// The VQ-VAE network (see the module documentation); variables under the
/// path it was built at.
#[derive(Debug)]
pub struct VqVae {
    enc_in: nn::Conv2D,
    enc_down: Vec<nn::Conv2D>,
    enc_res: ResBlock,
    enc_out: nn::Conv2D,
    embed: Tensor,
    cluster_size: Tensor,
    embed_avg: Tensor,
    dec_in: nn::Conv2D,
    dec_res: ResBlock,
    dec_up: Vec<nn::ConvTranspose2D>,
    dec_out: nn::Conv2D,
    arch: VqArch,
}

impl VqVae {
    /// Builds the network under `p`. The codebook and its moving averages
    /// are not trained by the optimiser.
    ///
    /// # Panics
    /// If `arch` fails [`VqArch::validate`] (callers validate first).
    pub fn new(p: &nn::Path, arch: VqArch) -> Self {
        if let Err(e) = arch.validate() {
            panic!("VqVae::new: {e}");
        }
        let (h, d, k, c) = (
            arch.hidden,
            arch.code_dim,
            arch.codebook_size,
            arch.in_channels,
        );
        let enc = p / "encoder";
        let dec = p / "decoder";
        let q = p / "quantizer";
        let embed = q
            .var(
                "embed",
                &[k, d],
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )
            .set_requires_grad(false);
        Self {
            enc_in: conv(&enc / "conv_in", c, h, 3, 1, 1),
            enc_down: (0..arch.levels())
                .map(|i| conv(&enc / "down" / i, h, h, 4, 2, 1))
                .collect(),
            enc_res: ResBlock::new(&(&enc / "res"), h),
            enc_out: conv(&enc / "conv_out", h, d, 1, 1, 0),
            embed,
            cluster_size: q.zeros_no_train("cluster_size", &[k]),
            embed_avg: q.zeros_no_train("embed_avg", &[k, d]),
            dec_in: conv(&dec / "conv_in", d, h, 3, 1, 1),
            dec_res: ResBlock::new(&(&dec / "res"), h),
            dec_up: (0..arch.levels())
                .map(|i| {
                    nn::conv_transpose2d(
                        &dec / "up" / i,
                        h,
                        h,
                        4,
                        nn::ConvTransposeConfig {
                            stride: 2,
                            padding: 1,
                            ..Default::default()
                        },
                    )
                })
                .collect(),
            dec_out: conv(&dec / "conv_out", h, c, 3, 1, 1),
            arch,
        }
    }

    /// The shape it was built with.
    pub fn arch(&self) -> VqArch {
        self.arch
    }

    /// The codebook `[K, code_dim]`.
    pub fn codebook(&self) -> &Tensor {
        &self.embed
    }

    /// Encodings `[B, code_dim, H / p, W / p]` of normalised images `[B, C, H, W]`.
    pub fn encode(&self, xs: &Tensor) -> Tensor {
        let h = xs.apply(&self.enc_in);
        let h = self.enc_down.iter().fold(h, |h, c| h.relu().apply(c));
        self.enc_res.forward(&h).relu().apply(&self.enc_out)
    }

    /// Reconstructions `[B, C, H, W]` of code vectors `[B, code_dim, g, g]`.
    pub fn decode(&self, zq: &Tensor) -> Tensor {
        let h = self.dec_res.forward(&zq.apply(&self.dec_in));
        let h = self.dec_up.iter().fold(h, |h, c| h.relu().apply(c));
        h.relu().apply(&self.dec_out)
    }

    /// The nearest code (int64) of each row of `z` `[M, code_dim]`.
    pub fn nearest(&self, z: &Tensor) -> Tensor {
        nearest_codes(z, &self.embed)
    }

    /// The codes `[B, g, g]` (int64, row-major grid) of normalised images.
    pub fn codes(&self, xs: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let z = self.encode(xs);
            let (b, d, gh, gw) = z.size4().unwrap_or((0, self.arch.code_dim, 0, 0));
            let flat = z.permute([0, 2, 3, 1]).reshape([-1, d]);
            self.nearest(&flat).reshape([b, gh, gw])
        })
    }

    /// The code vectors `[B, code_dim, g, g]` of codes `[B, g, g]`.
    pub fn lookup(&self, codes: &Tensor) -> Tensor {
        self.embed
            .index_select(0, &codes.flatten(0, -1))
            .reshape([codes.size()[0], codes.size()[1], codes.size()[2], -1])
            .permute([0, 3, 1, 2])
    }

    /// Reconstructions of normalised images through their codes.
    pub fn reconstruct(&self, xs: &Tensor) -> Tensor {
        tch::no_grad(|| self.decode(&self.lookup(&self.codes(xs))))
    }
}

/// `argmin_k ||z_m - e_k||^2` for each row of `z` `[M, D]` against `embed`
/// `[K, D]` (int64 `[M]`; ties go to the lower index).
pub fn nearest_codes(z: &Tensor, embed: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let z = z.to_kind(Kind::Float);
        let e = embed.to_kind(Kind::Float);
        let dist = z.square().sum_dim_intlist(1, true, Kind::Float) - z.matmul(&e.tr()) * 2.0
            + e.square()
                .sum_dim_intlist(1, false, Kind::Float)
                .unsqueeze(0);
        dist.argmin(1, false)
    })
}

/// Perplexity (`exp` of the entropy, natural log) of a code histogram, and
/// the number of codes used at least once.
pub fn code_usage(counts: &[f64]) -> (f64, usize) {
    let total: f64 = counts.iter().sum();
    if total <= 0.0 {
        return (0.0, 0);
    }
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0.0)
        .map(|&c| {
            let p = c / total;
            -p * p.ln()
        })
        .sum();
    (entropy.exp(), counts.iter().filter(|&&c| c > 0.0).count())
}

/// PSNR in decibels of a mean squared error on `[0, 1]` pixels.
pub fn psnr(mse: f64) -> f64 {
    10.0 * (1.0 / mse.max(1e-12)).log10()
}

/// Un-normalises `[B, C, H, W]` images to `[0, 1]` pixels and clips them.
fn pixels(xs: &Tensor, norm: &Normalize) -> Tensor {
    let c = xs.size()[1];
    let opts = (Kind::Float, xs.device());
    let take = |v: &[f32]| -> Tensor {
        let vals: Vec<f32> = (0..c as usize)
            .map(|i| v.get(i).copied().unwrap_or(0.0))
            .collect();
        Tensor::from_slice(&vals)
            .to_kind(opts.0)
            .to_device(opts.1)
            .view([1, c, 1, 1])
    };
    (xs * take(&norm.std) + take(&norm.mean)).clamp(0.0, 1.0)
}

/// What the tokenizer does on a set of images.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TokenizerReport {
    /// Images scored.
    pub images: usize,
    /// Mean squared error in `[0, 1]` pixels (reconstruction clipped).
    pub mse: f64,
    /// `10 log10(1 / mse)`.
    pub psnr_db: f64,
    /// `exp` of the entropy of the code histogram.
    pub perplexity: f64,
    /// Codes used at least once.
    pub used_codes: usize,
    /// Codes in the codebook.
    pub codebook_size: i64,
}

/// The VQ tokenizer as a method (see the module documentation).
pub struct VqTokenizer {
    vs: nn::VarStore,
    net: VqVae,
    cfg: VqTokenizerConfig,
    /// Encodings `[M, D]` and their codes `[M]` of the last step, for the
    /// codebook update in `after_step`.
    pending: Option<(Tensor, Tensor)>,
}

/// `k` rows of a batch of `m` encodings for the codes a restart places,
/// drawn from a generator of the step alone: the same step restarts at the
/// same rows whatever else drew from libtorch's global generator (another
/// thread, another method's initialisation), and every rank draws the same.
fn restart_rows(m: i64, k: i64, step: u64, device: Device) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5651_5245_5354_4152 ^ step);
    let rows: Vec<i64> = (0..k).map(|_| rng.gen_range(0..m.max(1))).collect();
    Tensor::from_slice(&rows).to_device(device)
}

impl VqTokenizer {
    /// Builds the tokenizer for the ViT `model` names (its patch and image
    /// size); errors when `model` is not a ViT or a setting is invalid.
    pub fn new(
        device: Device,
        model: &EncoderConfig,
        in_channels: i64,
        cfg: &VqTokenizerConfig,
    ) -> Result<Self> {
        let spec = model.vit_spec().ok_or_else(|| {
            Error::Config(format!(
                "vq_tokenizer makes one code per ViT patch and reads the patch grid from [model]: \
                 set [model] arch = \"vit_tiny\" with the patch_size and image_size of the BEiT \
                 run it is for, got arch = \"{}\"",
                model.arch()
            ))
        })?;
        cfg.check_ranges().map_err(Error::Config)?;
        let arch = VqArch {
            in_channels,
            image_size: spec.image_size,
            patch_size: spec.patch_size,
            codebook_size: cfg.codebook_size,
            code_dim: cfg.code_dim,
            hidden: cfg.hidden,
        };
        arch.validate()
            .map_err(|e| Error::Config(format!("vq_tokenizer: [model] {e}")))?;
        let vs = nn::VarStore::new(device);
        let net = VqVae::new(&vs.root(), arch);
        Ok(Self {
            vs,
            net,
            cfg: cfg.clone(),
            pending: None,
        })
    }

    /// The network.
    pub fn net(&self) -> &VqVae {
        &self.net
    }

    /// Reconstruction, commitment and the encodings with their codes, for
    /// normalised images `xs`.
    fn losses(&self, xs: &Tensor) -> (Tensor, Tensor, Tensor, Tensor) {
        let z = self.net.encode(xs);
        let (b, d, gh, gw) = z.size4().unwrap_or((0, self.cfg.code_dim, 0, 0));
        let flat = z.permute([0, 2, 3, 1]).reshape([-1, d]);
        let codes = self.net.nearest(&flat);
        let q = self.net.embed.index_select(0, &codes).detach();
        let commit = (&flat - &q).square().mean(Kind::Float);
        let st = &flat + (&q - &flat).detach();
        let zq = st.reshape([b, gh, gw, d]).permute([0, 3, 1, 2]);
        let recon = (self.net.decode(&zq) - xs).square().mean(Kind::Float);
        (recon, commit, flat.detach(), codes)
    }

    /// Reconstruction PSNR, perplexity and used codes on `images` (normalised
    /// with `norm`), scored `chunk` images at a time on the tokenizer's device.
    pub fn report_on(
        &self,
        d: &crate::data::ImageDataset,
        norm: &Normalize,
        chunk: usize,
    ) -> TokenizerReport {
        let device = self.vs.device();
        let k = self.net.arch.codebook_size;
        let mut counts = Tensor::zeros([k], (Kind::Float, Device::Cpu));
        let (mut se, mut values) = (0f64, 0f64);
        let chunk = chunk.max(1);
        tch::no_grad(|| {
            for s in (0..d.len()).step_by(chunk) {
                let idx: Vec<usize> = (s..(s + chunk).min(d.len())).collect();
                let xs = d.to_tensor(&idx, norm).to_device(device);
                let codes = self.net.codes(&xs);
                let recon = self.net.decode(&self.net.lookup(&codes));
                let diff = pixels(&recon, norm) - pixels(&xs, norm);
                se += diff.square().sum(Kind::Double).double_value(&[]);
                values += diff.numel() as f64;
                counts += codes
                    .flatten(0, -1)
                    .bincount(None::<Tensor>, k)
                    .to_kind(Kind::Float)
                    .to_device(Device::Cpu);
            }
        });
        let counts: Vec<f64> = Vec::<f32>::try_from(&counts)
            .unwrap_or_default()
            .into_iter()
            .map(f64::from)
            .collect();
        let (perplexity, used_codes) = code_usage(&counts);
        let mse = if values > 0.0 { se / values } else { 0.0 };
        TokenizerReport {
            images: d.len(),
            mse,
            psnr_db: psnr(mse),
            perplexity,
            used_codes,
            codebook_size: k,
        }
    }

    /// Writes the tokenizer export ([`export_tokenizer`]) into `dir`; `info`
    /// (the run's export fields) carries the input normalisation.
    pub fn export(&self, dir: &Path, info: &Value) -> Result<()> {
        let normalize: Normalize = match info.get("normalize") {
            Some(n) => serde_json::from_value(n.clone())
                .map_err(|e| Error::Config(format!("tokenizer export: normalize: {e}")))?,
            None => Normalize::for_channels(self.net.arch.in_channels.max(0) as usize),
        };
        export_tokenizer(&self.vs, self.net.arch, &normalize, dir, info.clone())
    }

    /// [`Self::report_on`] the validation part of a run's evaluation data.
    pub fn report(&self, data: &EvalData) -> Value {
        let r = self.report_on(&data.validation, &data.norm, 256);
        json!({"tokenizer (validation part)": r})
    }

    /// The codebook update of the last step: moving averages, then restarts
    /// of dead codes (see the module documentation).
    fn update_codebook(&mut self, z: &Tensor, codes: &Tensor, ctx: &StepCtx) {
        let k = self.cfg.codebook_size;
        let decay = self.cfg.ema_decay;
        let eps = 1e-5;
        tch::no_grad(|| {
            let m = z.size()[0];
            let net = &mut self.net;
            if m > 0 && net.cluster_size.sum(Kind::Float).double_value(&[]) == 0.0 {
                // The first update: every code at a random encoding.
                let pick = restart_rows(m, k, ctx.step, z.device());
                let fresh = z.index_select(0, &pick);
                net.embed.copy_(&fresh);
                net.embed_avg.copy_(&fresh);
                let _ = net.cluster_size.fill_(1.0);
                let mut state = [
                    net.embed.shallow_clone(),
                    net.embed_avg.shallow_clone(),
                    net.cluster_size.shallow_clone(),
                ];
                ctx.comm.broadcast_(&mut state, 0);
                return;
            }
            let onehot = codes.one_hot(k).to_kind(Kind::Float);
            let mut stats = [
                onehot.sum_dim_intlist(0, false, Kind::Float),
                onehot.tr().matmul(z),
            ];
            ctx.comm.all_reduce_mean_(&mut stats);
            let [counts, sums] = stats;
            net.cluster_size
                .copy_(&(&net.cluster_size * decay + counts * (1.0 - decay)));
            net.embed_avg
                .copy_(&(&net.embed_avg * decay + sums * (1.0 - decay)));
            let n = net.cluster_size.sum(Kind::Float);
            let smoothed = (&net.cluster_size + eps) / (&n + k as f64 * eps) * &n;
            let updated = &net.embed_avg / smoothed.unsqueeze(1);
            // Only codes that have ever been used take the average; the
            // others keep their vector until restarted.
            let live = net.cluster_size.gt(0.0).unsqueeze(1);
            net.embed.copy_(&updated.where_self(&live, &net.embed));
            let threshold = self.cfg.dead_code_threshold;
            let dead = net.cluster_size.lt(threshold);
            if threshold > 0.0 && m > 0 && dead.any().int64_value(&[]) != 0 {
                let pick = restart_rows(m, k, ctx.step, z.device());
                let fresh = z.index_select(0, &pick);
                let dead2 = dead.unsqueeze(1);
                net.embed.copy_(&fresh.where_self(&dead2, &net.embed));
                net.embed_avg
                    .copy_(&(&fresh * threshold).where_self(&dead2, &net.embed_avg));
                net.cluster_size.copy_(
                    &Tensor::full_like(&net.cluster_size, threshold)
                        .where_self(&dead, &net.cluster_size),
                );
            }
            let mut state = [
                net.embed.shallow_clone(),
                net.embed_avg.shallow_clone(),
                net.cluster_size.shallow_clone(),
            ];
            ctx.comm.broadcast_(&mut state, 0);
        });
    }
}

impl Method for VqTokenizer {
    fn name(&self) -> &'static str {
        "vq_tokenizer"
    }
    fn target(&self) -> TargetKind {
        TargetKind::MaskedContent
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, _ctx: &StepCtx) -> Result<LossOut> {
        let xs = batch.views.first().ok_or_else(|| {
            Error::Config("vq_tokenizer needs at least one view per image".into())
        })?;
        let (recon, commit, z, codes) = self.losses(xs);
        let k = self.cfg.codebook_size;
        let counts: Vec<f64> =
            Vec::<i64>::try_from(&codes.bincount(None::<Tensor>, k).to_device(Device::Cpu))
                .unwrap_or_default()
                .into_iter()
                .map(|c| c as f64)
                .collect();
        let (perplexity, used) = code_usage(&counts);
        let terms = vec![
            ("reconstruction", recon.double_value(&[])),
            ("commitment", commit.double_value(&[])),
            ("perplexity", perplexity),
            ("used codes", used as f64),
        ];
        self.pending = Some((z, codes));
        Ok(LossOut {
            loss: recon + commit * self.cfg.commitment,
            terms,
        })
    }
    fn after_step(&mut self, ctx: &StepCtx) {
        if let Some((z, codes)) = self.pending.take() {
            self.update_codebook(&z, &codes, ctx);
        }
    }
    fn embed(&self, xs: &Tensor) -> Tensor {
        self.net.encode(xs).flatten(1, -1)
    }
    fn project(&self, xs: &Tensor) -> Tensor {
        self.embed(xs)
    }
}

/// Writes a tokenizer export into `dir`: `model.safetensors` (encoder,
/// codebook and decoder, PyTorch layout, no moving averages) and
/// `config.json` (`format`, the [`VqArch`], `normalize`, the caller's
/// `extra` fields).
pub fn export_tokenizer(
    net_vs: &nn::VarStore,
    arch: VqArch,
    normalize: &Normalize,
    dir: &Path,
    extra: Value,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    tensor_io::save_pytorch_weights(&dir.join(TOKENIZER_WEIGHTS), net_vs, |k| {
        !k.ends_with("cluster_size") && !k.ends_with("embed_avg")
    })?;
    let mut info = json!({
        "format": TOKENIZER_FORMAT,
        "method": "vq_tokenizer",
        "arch": arch,
        "grid": arch.grid(),
        "levels": arch.levels(),
        "normalize": normalize,
        "reference": "benchmarks/vq_tokenizer_reference.py rebuilds this network in PyTorch and loads the weights strictly",
    });
    if let (Some(dst), Value::Object(src)) = (info.as_object_mut(), extra) {
        dst.extend(src);
    }
    let text = serde_json::to_string_pretty(&info)
        .map_err(|e| Error::Config(format!("tokenizer config.json: {e}")))?;
    tensor_io::write_atomic(&dir.join(TOKENIZER_CONFIG), text.as_bytes())
}

/// A tokenizer export read back, frozen (what BEiT predicts).
pub struct FrozenTokenizer {
    _vs: nn::VarStore,
    net: VqVae,
    normalize: Normalize,
    dir: PathBuf,
}

impl std::fmt::Debug for FrozenTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrozenTokenizer")
            .field("dir", &self.dir)
            .field("arch", &self.net.arch)
            .finish()
    }
}

impl FrozenTokenizer {
    /// Loads the export at `path`: an export folder (with `config.json`) or
    /// a run folder (with `export/config.json`). Every weight must be there
    /// with its shape and nothing else; errors name the file, the key and
    /// the fix.
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let dir = if path.join(TOKENIZER_CONFIG).is_file() {
            path.to_path_buf()
        } else if path.join("export").join(TOKENIZER_CONFIG).is_file() {
            path.join("export")
        } else {
            return Err(Error::Config(format!(
                "no VQ tokenizer export at {} (looked for {p}/config.json and \
                 {p}/export/config.json): train one first (selfsup pretrain --config \
                 configs/vision/vq_tokenizer-cpu.toml --data <fashion-mnist> --run-dir {p}) \
                 or set [method] tokenizer to its run folder",
                path.display(),
                p = path.display()
            )));
        };
        let config_file = dir.join(TOKENIZER_CONFIG);
        let text = std::fs::read_to_string(&config_file).map_err(|e| Error::io(&config_file, e))?;
        let bad = |m: String| Error::Config(format!("{}: {m}", config_file.display()));
        let info: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        if info["format"] != TOKENIZER_FORMAT {
            return Err(bad(format!(
                "\"format\" is {}, not \"{TOKENIZER_FORMAT}\": this is not a VQ tokenizer \
                 export (an encoder export cannot tokenize); give the run folder of a \
                 vq_tokenizer run",
                info["format"]
            )));
        }
        let arch: VqArch = serde_json::from_value(info["arch"].clone())
            .map_err(|e| bad(format!("key \"arch\": {e}")))?;
        arch.validate()
            .map_err(|e| bad(format!("key \"arch\": {e}")))?;
        let normalize: Normalize = serde_json::from_value(info["normalize"].clone())
            .map_err(|e| bad(format!("key \"normalize\": {e}")))?;
        let vs = nn::VarStore::new(device);
        let net = VqVae::new(&vs.root(), arch);
        let weights = dir.join(TOKENIZER_WEIGHTS);
        let loaded = tensor_io::load(&weights)?;
        let bad_w = |m: String| Error::Config(format!("{}: {m}", weights.display()));
        let mut want = vs.variables();
        want.retain(|k, _| !k.ends_with("cluster_size") && !k.ends_with("embed_avg"));
        let have: BTreeSet<&String> = loaded.tensors.keys().collect();
        if let Some(k) = have.iter().find(|k| !want.contains_key(k.as_str())) {
            return Err(bad_w(format!(
                "unexpected key \"{k}\" for the tokenizer {}'s config.json describes: \
                 re-export the tokenizer run",
                dir.display()
            )));
        }
        tch::no_grad(|| -> Result<()> {
            for (name, mut var) in want {
                let t = loaded.tensors.get(&name).ok_or_else(|| {
                    bad_w(format!(
                        "missing key \"{name}\" (config.json describes a network that has it): \
                         re-export the tokenizer run"
                    ))
                })?;
                if t.size() != var.size() {
                    return Err(bad_w(format!(
                        "key \"{name}\" has shape {:?}, config.json's arch needs {:?}: the \
                         weights and config.json come from different tokenizers",
                        t.size(),
                        var.size()
                    )));
                }
                var.copy_(&t.to_kind(Kind::Float).to_device(device));
            }
            Ok(())
        })?;
        Ok(Self {
            _vs: vs,
            net,
            normalize,
            dir,
        })
    }

    /// The network (frozen).
    pub fn net(&self) -> &VqVae {
        &self.net
    }

    /// The input normalisation it was trained with.
    pub fn normalize(&self) -> &Normalize {
        &self.normalize
    }

    /// The export folder it was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `config.json` of the export (for errors).
    pub fn config_file(&self) -> PathBuf {
        self.dir.join(TOKENIZER_CONFIG)
    }
}

#[cfg(test)]
pub(crate) mod tests;
