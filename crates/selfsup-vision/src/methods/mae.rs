//! MAE, masked autoencoders (He et al. 2021, arXiv:2111.06377): hide a random
//! 75% of the patches of each image, encode the visible 25% with the ViT, and
//! let a light transformer decoder reconstruct the pixels of the hidden
//! patches from the encoded ones plus a shared mask token.
//!
//! - Masking: per sample, patches are ranked by uniform noise from torch's
//!   generator (the trainer seeds it every step, so runs are reproducible)
//!   and the first `floor(N * (1 - mask_ratio))` are kept, as MAE's
//!   `random_masking`.
//! - Encoder: the ViT under `encoder.` (timm's names, exported as any
//!   encoder) with MAE's fixed 2D sin-cos `pos_embed`, run on the class token
//!   and the visible patches only.
//! - Decoder, with MAE's names: `decoder_embed` (linear D -> D_dec),
//!   `mask_token`, `decoder_pos_embed` (fixed 2D sin-cos), `decoder_blocks.{i}`
//!   (ViT blocks), `decoder_norm`, `decoder_pred` (linear to `p * p * C` pixels).
//! - Loss ([`MaePixelLoss`]): mean squared error per patch against the
//!   patchified image, each target patch normalised by its own mean and
//!   variance when `norm_pix_loss` is on (the paper's best setting), averaged
//!   over the masked patches only.
//!
//! Only the first view of a batch is used (MAE augments with a random
//! resized crop and a flip and nothing else; see `configs/vision/mae-cpu.toml`).
//! The representation ([`Method::embed`]) is the mean of the final-normed
//! patch tokens of the whole, unmasked image (the paper finds average
//! pooling and the class token equivalent; average pooling is what its
//! fine-tuning uses); [`Method::project`] is the same, as MAE has no
//! projection head. MAE needs a ViT encoder: [`Mae::new`] refuses the CNNs.
use crate::models::vit::{self, gather_tokens, sincos_2d, vit_layer_norm, vit_linear, Block};
use crate::models::{EncoderConfig, PosEmbedInit, Vit};
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Init};
use tch::{Kind, Tensor};

/// MAE settings (the `[method]` table with `name = "mae"`); defaults are the
/// paper's (ViT-L recipe: decoder 512-d, 8 blocks, 16 heads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaeConfig {
    /// Fraction of the patches hidden from the encoder (0.75).
    pub mask_ratio: f64,
    /// Normalise every target patch by its own mean and standard deviation.
    pub norm_pix_loss: bool,
    /// Width of the decoder.
    pub decoder_embed_dim: i64,
    /// Blocks of the decoder.
    pub decoder_depth: i64,
    /// Attention heads of the decoder.
    pub decoder_heads: i64,
}

impl Default for MaeConfig {
    fn default() -> Self {
        Self {
            mask_ratio: 0.75,
            norm_pix_loss: true,
            decoder_embed_dim: 512,
            decoder_depth: 8,
            decoder_heads: 16,
        }
    }
}

impl MaeConfig {
    /// Checks the ratio and the decoder's shape; errors name the key.
    pub fn validate(&self) -> Result<()> {
        if !(self.mask_ratio > 0.0 && self.mask_ratio < 1.0) {
            return Err(Error::Config(format!(
                "method.mask_ratio must be in (0, 1), got {}",
                self.mask_ratio
            )));
        }
        for (key, v) in [
            ("decoder_embed_dim", self.decoder_embed_dim),
            ("decoder_depth", self.decoder_depth),
            ("decoder_heads", self.decoder_heads),
        ] {
            if v < 1 {
                return Err(Error::Config(format!(
                    "method.{key} must be at least 1, got {v}"
                )));
            }
        }
        if self.decoder_embed_dim % 4 != 0 || self.decoder_embed_dim % self.decoder_heads != 0 {
            return Err(Error::Config(format!(
                "method.decoder_embed_dim ({}) must be a multiple of 4 (sin-cos position embedding) \
                 and of method.decoder_heads ({})",
                self.decoder_embed_dim, self.decoder_heads
            )));
        }
        Ok(())
    }
}

/// `[B, C, H, W] -> [B, (H / p) * (W / p), p * p * C]`: patches in row-major
/// order, each flattened row by row with the channels last (MAE's
/// `patchify`, `'nchpwq->nhwpqc'`).
pub fn patchify(imgs: &Tensor, p: i64) -> Tensor {
    let (b, c, h, w) = imgs.size4().expect("patchify needs [B, C, H, W] images");
    let (gh, gw) = (h / p, w / p);
    imgs.narrow(2, 0, gh * p)
        .narrow(3, 0, gw * p)
        .reshape([b, c, gh, p, gw, p])
        .permute([0, 2, 4, 3, 5, 1])
        .reshape([b, gh * gw, p * p * c])
}

/// One random masking of `n` patches for each of `b` samples.
#[derive(Debug)]
pub struct RandomMask {
    /// Indices of the visible patches, `[B, K]` (int64), in the order drawn.
    pub ids_keep: Tensor,
    /// Where each patch went in the shuffled order, `[B, N]` (int64): gathering
    /// `[visible tokens, mask tokens]` with it restores patch order.
    pub ids_restore: Tensor,
    /// `[B, N]` float, 1 for a masked patch, 0 for a visible one.
    pub mask: Tensor,
}

impl RandomMask {
    /// Draws the noise from torch's generator on `device`; keeps
    /// `floor(n * (1 - ratio))` patches per sample (at least one).
    pub fn draw(b: i64, n: i64, ratio: f64, device: tch::Device) -> Self {
        let keep = ((n as f64 * (1.0 - ratio)) as i64).clamp(1, n);
        let noise = Tensor::rand([b, n], (Kind::Float, device));
        let ids_shuffle = noise.argsort(1, false);
        let ids_restore = ids_shuffle.argsort(1, false);
        let ids_keep = ids_shuffle.narrow(1, 0, keep);
        let mask = Tensor::ones([b, n], (Kind::Float, device));
        let _ = mask.narrow(1, 0, keep).fill_(0.0);
        let mask = mask.gather(1, &ids_restore, false);
        Self {
            ids_keep,
            ids_restore,
            mask,
        }
    }
}

/// MAE's reconstruction loss (`forward_loss`): squared error per pixel,
/// averaged over each patch, then over the masked patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaePixelLoss {
    /// Normalise each target patch: `(t - mean) / sqrt(var + 1e-6)` with the
    /// unbiased variance over the patch's pixels.
    pub norm_pix: bool,
}

impl MaePixelLoss {
    /// `pred` and `target` are `[B, N, P]`, `mask` `[B, N]` (1 = masked);
    /// returns the scalar loss.
    pub fn forward(&self, pred: &Tensor, target: &Tensor, mask: &Tensor) -> Tensor {
        let target = if self.norm_pix {
            let mean = target.mean_dim(-1, true, Kind::Float);
            let var = target.var_dim(-1, true, true);
            (target - mean) / (var + 1e-6).sqrt()
        } else {
            target.shallow_clone()
        };
        let per_patch = (pred - target).square().mean_dim(-1, false, Kind::Float);
        (per_patch * mask).sum(Kind::Float) / mask.sum(Kind::Float)
    }
}

/// The MAE method (see the module documentation).
pub struct Mae {
    vs: nn::VarStore,
    encoder: Vit,
    decoder_embed: nn::Linear,
    mask_token: Tensor,
    decoder_pos_embed: Tensor,
    decoder_blocks: Vec<Block>,
    decoder_norm: nn::LayerNorm,
    decoder_pred: nn::Linear,
    loss: MaePixelLoss,
    mask_ratio: f64,
}

impl Mae {
    /// The variable prefix of the encoder (what gets exported).
    pub const ENCODER_PREFIX: &'static str = "encoder";

    /// Builds encoder and decoder on `device`. Errors when `encoder` is not a
    /// ViT, its width is not a multiple of 4 (sin-cos position embedding),
    /// or `cfg` is invalid.
    pub fn new(
        device: tch::Device,
        encoder: &EncoderConfig,
        in_channels: i64,
        cfg: &MaeConfig,
    ) -> Result<Self> {
        let spec = encoder.vit_spec().ok_or_else(|| {
            Error::Config(format!(
                "MAE masks patches and needs a ViT encoder ([model] arch = \"vit_tiny\" or \"vit_small\"), \
                 got arch = \"{}\"",
                encoder.arch()
            ))
        })?;
        spec.validate()?;
        cfg.validate()?;
        if spec.embed_dim % 4 != 0 {
            return Err(Error::Config(format!(
                "MAE's fixed sin-cos position embedding needs model.embed_dim divisible by 4, got {}",
                spec.embed_dim
            )));
        }
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let enc = Vit::new(
            &(&root / Self::ENCODER_PREFIX),
            spec,
            in_channels,
            PosEmbedInit::FixedSinCos,
        );
        let dd = cfg.decoder_embed_dim;
        let g = spec.grid();
        let decoder_pos_embed = root
            .var_copy("decoder_pos_embed", &sincos_2d(dd, g, g, true).unsqueeze(0))
            .set_requires_grad(false);
        let patch_dim = spec.patch_size * spec.patch_size * in_channels;
        Ok(Self {
            decoder_embed: vit_linear(&root / "decoder_embed", spec.embed_dim, dd),
            mask_token: root.var(
                "mask_token",
                &[1, 1, dd],
                Init::Randn {
                    mean: 0.0,
                    stdev: vit::INIT_STD,
                },
            ),
            decoder_pos_embed,
            decoder_blocks: vit::blocks(
                &(&root / "decoder_blocks"),
                dd,
                cfg.decoder_depth,
                cfg.decoder_heads,
            ),
            decoder_norm: vit_layer_norm(&root / "decoder_norm", dd),
            decoder_pred: vit_linear(&root / "decoder_pred", dd, patch_dim),
            loss: MaePixelLoss {
                norm_pix: cfg.norm_pix_loss,
            },
            mask_ratio: cfg.mask_ratio,
            encoder: enc,
            vs,
        })
    }

    /// The encoder.
    pub fn encoder(&self) -> &Vit {
        &self.encoder
    }

    /// Encodes the visible patches: `[B, 1 + K, D]`, final-normed, class token first.
    pub fn encode_visible(&self, imgs: &Tensor, mask: &RandomMask) -> Tensor {
        let visible = gather_tokens(&self.encoder.patch_tokens(imgs), &mask.ids_keep);
        let tokens = self.encoder.prepend_cls(&visible);
        self.encoder.final_norm(&self.encoder.run_blocks(&tokens))
    }

    /// Predicts the pixels of every patch from the encoded visible ones:
    /// `[B, 1 + K, D] -> [B, N, p * p * C]`.
    pub fn decode(&self, latent: &Tensor, ids_restore: &Tensor) -> Tensor {
        let h = latent.apply(&self.decoder_embed);
        let (b, k1, dd) = h.size3().expect("[B, 1 + K, D]");
        let n = ids_restore.size()[1];
        let mask_tokens = self.mask_token.expand([b, n + 1 - k1, dd], false);
        let patches = Tensor::cat(&[h.narrow(1, 1, k1 - 1), mask_tokens], 1);
        let patches = gather_tokens(&patches, ids_restore);
        let h = Tensor::cat(&[h.narrow(1, 0, 1), patches], 1) + &self.decoder_pos_embed;
        vit::run_blocks(&self.decoder_blocks, &h)
            .apply(&self.decoder_norm)
            .apply(&self.decoder_pred)
            .narrow(1, 1, n)
    }
}

impl Method for Mae {
    fn name(&self) -> &'static str {
        "mae"
    }
    fn target(&self) -> TargetKind {
        TargetKind::MaskedContent
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, _ctx: &StepCtx) -> Result<LossOut> {
        let imgs = batch
            .views
            .first()
            .ok_or_else(|| Error::Config("MAE needs at least one view per image".into()))?;
        let spec = self.encoder.spec();
        let (gh, gw) = self.encoder.grid_of(imgs);
        if (gh, gw) != (spec.grid(), spec.grid()) {
            return Err(Error::Config(format!(
                "MAE: views of {:?} give a {gh}x{gw} patch grid, the decoder is built for {}x{} \
                 (model.image_size = {})",
                &imgs.size()[2..],
                spec.grid(),
                spec.grid(),
                spec.image_size
            )));
        }
        let mask = RandomMask::draw(batch.len(), gh * gw, self.mask_ratio, imgs.device());
        let pred = self.decode(&self.encode_visible(imgs, &mask), &mask.ids_restore);
        let target = patchify(imgs, spec.patch_size);
        let loss = self.loss.forward(&pred, &target, &mask.mask);
        Ok(LossOut {
            loss,
            terms: vec![],
        })
    }
    fn embed(&self, xs: &Tensor) -> Tensor {
        self.encoder.mean_patch_features(xs)
    }
    fn project(&self, xs: &Tensor) -> Tensor {
        self.embed(xs)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::methods::test_util::{structured_images, train_steps};
    use crate::models::VitOptions;
    use tch::Device;

    fn value(t: &Tensor) -> f64 {
        t.double_value(&[])
    }

    /// Reference numbers from PyTorch 2.11.0, MAE's `forward_loss` (models_mae.py)
    /// on fixed inputs (2 images 2x4x4, patch 2, so 4 patches of 8 values):
    /// ```python
    /// import torch
    /// imgs = torch.arange(64, dtype=torch.float32).sin().reshape(2, 2, 4, 4)
    /// pred = (torch.arange(64, dtype=torch.float32) * 0.7).cos().reshape(2, 4, 8) * 0.5
    /// mask = torch.tensor([[1., 0., 1., 1.], [0., 1., 0., 0.]])
    /// p, h = 2, 2
    /// x = imgs.reshape(2, 2, h, p, h, p)
    /// target = torch.einsum('nchpwq->nhwpqc', x).reshape(2, h * h, p * p * 2)
    /// for norm_pix in (False, True):
    ///     t = target
    ///     if norm_pix:
    ///         mean, var = t.mean(dim=-1, keepdim=True), t.var(dim=-1, keepdim=True)
    ///         t = (t - mean) / (var + 1.e-6) ** .5
    ///     loss = ((pred - t) ** 2).mean(dim=-1)
    ///     print(((loss * mask).sum() / mask.sum()).item())
    /// print(target[1, 2].tolist())
    /// ```
    #[test]
    fn loss_matches_maes_forward_loss() {
        let imgs = Tensor::arange(64, (Kind::Float, Device::Cpu))
            .sin()
            .reshape([2, 2, 4, 4]);
        let pred = (Tensor::arange(64, (Kind::Float, Device::Cpu)) * 0.7)
            .cos()
            .reshape([2, 4, 8])
            * 0.5;
        let mask = Tensor::from_slice(&[1f32, 0., 1., 1., 0., 1., 0., 0.]).reshape([2, 4]);
        let target = patchify(&imgs, 2);
        assert_eq!(target.size(), vec![2, 4, 8]);
        let want_patch = [
            0.745_113_1_f64,
            -0.521_551,
            -0.158_622_7,
            0.436_164_8,
            0.017_701_93,
            -0.304_810_6,
            0.850_903_5,
            -0.966_117_8,
        ];
        let got: Vec<f32> = Vec::try_from(target.get(1).get(2)).unwrap();
        for (a, b) in got.iter().zip(want_patch) {
            assert!((*a as f64 - b).abs() < 1e-5, "{got:?}");
        }
        let raw = value(&MaePixelLoss { norm_pix: false }.forward(&pred, &target, &mask));
        let norm = value(&MaePixelLoss { norm_pix: true }.forward(&pred, &target, &mask));
        assert!((raw - 0.565_235_733_985_900_9).abs() < 1e-5, "{raw}");
        assert!((norm - 0.919_128_775_596_618_7).abs() < 1e-5, "{norm}");
    }

    #[test]
    fn loss_counts_only_masked_patches() {
        let target = Tensor::randn([2, 4, 8], (Kind::Float, Device::Cpu));
        let mask = Tensor::from_slice(&[1f32, 0., 1., 0., 0., 0., 1., 1.]).reshape([2, 4]);
        let pred = Tensor::randn([2, 4, 8], (Kind::Float, Device::Cpu));
        let loss = MaePixelLoss { norm_pix: true };
        let before = value(&loss.forward(&pred, &target, &mask));
        // Changing the prediction of a visible patch changes nothing.
        let moved = pred.copy();
        let _ = moved.get(0).get(1).fill_(100.0);
        let _ = moved.get(1).get(0).fill_(-100.0);
        assert_eq!(before, value(&loss.forward(&moved, &target, &mask)));
        // A masked one does.
        let _ = moved.get(1).get(3).fill_(100.0);
        assert!(value(&loss.forward(&moved, &target, &mask)) > before + 1.0);
        // A perfect prediction of the masked patches gives zero.
        let exact = MaePixelLoss { norm_pix: false }.forward(&target, &target, &mask);
        assert_eq!(value(&exact), 0.0);
    }

    #[test]
    fn masking_keeps_a_quarter_and_restores_order() {
        tch::manual_seed(3);
        let (b, n) = (5, 49);
        let m = RandomMask::draw(b, n, 0.75, Device::Cpu);
        assert_eq!(m.ids_keep.size(), vec![5, 12]); // floor(49 * 0.25)
        let masked: Vec<f32> =
            Vec::try_from(m.mask.sum_dim_intlist(1, false, Kind::Float)).unwrap();
        assert_eq!(masked, vec![37.0; 5]);
        let m16 = RandomMask::draw(3, 16, 0.75, Device::Cpu);
        assert_eq!(m16.ids_keep.size(), vec![3, 4]);
        for i in 0..b {
            let keep: Vec<i64> = Vec::try_from(m.ids_keep.get(i)).unwrap();
            let mask: Vec<f32> = Vec::try_from(m.mask.get(i)).unwrap();
            let mut sorted = keep.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 12, "distinct visible patches");
            for (j, &mj) in mask.iter().enumerate() {
                assert_eq!(
                    mj == 0.0,
                    keep.contains(&(j as i64)),
                    "sample {i} patch {j}"
                );
            }
            // ids_restore undoes the shuffle: [keep, rest] gathered back is 0..n.
            let shuffled = m.ids_restore.get(i).argsort(0, false);
            let back: Vec<i64> =
                Vec::try_from(shuffled.gather(0, &m.ids_restore.get(i), false)).unwrap();
            assert_eq!(back, (0..n).collect::<Vec<_>>());
        }
        // Different samples get different masks.
        assert!(!m.mask.get(0).equal(&m.mask.get(1)));
    }

    pub(crate) fn tiny_vit() -> EncoderConfig {
        EncoderConfig::VitTiny(VitOptions {
            patch_size: 4,
            image_size: 16,
            embed_dim: Some(32),
            depth: Some(2),
            heads: Some(2),
        })
    }

    fn tiny_mae() -> Mae {
        let cfg = MaeConfig {
            decoder_embed_dim: 32,
            decoder_depth: 1,
            decoder_heads: 2,
            ..Default::default()
        };
        Mae::new(Device::Cpu, &tiny_vit(), 1, &cfg).unwrap()
    }

    #[test]
    fn names_shapes_and_frozen_position_embeddings() {
        tch::manual_seed(0);
        let mae = tiny_mae();
        let vars = mae.var_store().variables();
        for name in [
            "encoder.cls_token",
            "encoder.blocks.1.mlp.fc2.weight",
            "decoder_embed.weight",
            "mask_token",
            "decoder_blocks.0.attn.qkv.weight",
            "decoder_norm.bias",
        ] {
            assert!(vars.contains_key(name), "{name}");
        }
        assert_eq!(vars["decoder_pos_embed"].size(), vec![1, 17, 32]);
        assert_eq!(vars["decoder_pred.weight"].size(), vec![16, 32]);
        assert!(!vars["decoder_pos_embed"].requires_grad());
        assert!(!vars["encoder.pos_embed"].requires_grad());
        let xs = structured_images(4, 1, 16, 0);
        let mask = RandomMask::draw(4, 16, 0.75, Device::Cpu);
        let latent = mae.encode_visible(&xs, &mask);
        assert_eq!(latent.size(), vec![4, 5, 32]);
        assert_eq!(
            mae.decode(&latent, &mask.ids_restore).size(),
            vec![4, 16, 16]
        );
        assert_eq!(mae.embed(&xs).size(), vec![4, 32]);
    }

    #[test]
    fn cnn_encoders_and_bad_settings_are_refused() {
        let err = Mae::new(
            Device::Cpu,
            &EncoderConfig::default(),
            1,
            &MaeConfig::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("needs a ViT encoder") && err.contains("small_cnn"),
            "{err}"
        );
        let bad = MaeConfig {
            mask_ratio: 1.0,
            ..Default::default()
        };
        let err = Mae::new(Device::Cpu, &tiny_vit(), 1, &bad)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("mask_ratio"), "{err}");
        let bad = MaeConfig {
            decoder_embed_dim: 30,
            decoder_heads: 3,
            ..Default::default()
        };
        let err = Mae::new(Device::Cpu, &tiny_vit(), 1, &bad)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("decoder_embed_dim (30)"), "{err}");
    }

    #[test]
    fn a_few_steps_lower_the_loss() {
        tch::manual_seed(0);
        let mut mae = tiny_mae();
        let xs = structured_images(32, 1, 16, 1);
        let (first, last) = train_steps(&mut mae, &[xs], 150, 3e-3);
        // 0.94 -> 0.57 when written.
        assert!(last < 0.75 * first, "MAE loss {first} -> {last}");
    }
}
