//! I-JEPA, the image joint-embedding predictive architecture (Assran et al.
//! 2023, arXiv:2301.08243): from one large context block of an image, a
//! narrow ViT predictor predicts the representations, computed by an EMA
//! target encoder on the whole image, of M = 4 smaller target blocks.
//!
//! - Blocks ([`BlockMaskSampler`]): per batch one target size (scale
//!   `[0.15, 0.2]` of the grid, aspect ratio `[0.75, 1.5]`) and one context
//!   size (scale `[0.85, 1]`, square); per image M target blocks and one
//!   context block at uniform positions, the targets removed from the
//!   context. Randomness comes from a ChaCha8 generator seeded from torch's
//!   generator, which the trainer seeds every step.
//! - Context encoder: the ViT under `encoder.` (timm's names, fixed 2D
//!   sin-cos `pos_embed`) on the context patches only.
//! - Target encoder: the same ViT under `target_encoder.`, an EMA of the
//!   context encoder ([`EmaTeacher`], momentum 0.996 -> 1 along a cosine),
//!   on every patch; its final-normed patch tokens are layer-normed once more
//!   (no affine), then the target blocks are read out of them.
//! - Predictor, with I-JEPA's names under `predictor.`: `predictor_embed`
//!   (D -> D_pred), `mask_token`, `predictor_pos_embed` (fixed 2D sin-cos),
//!   `predictor_blocks.{i}`, `predictor_norm`, `predictor_proj` (D_pred -> D).
//!   It sees the context tokens plus, for one target block at a time, a mask
//!   token with the position embedding of each target patch.
//! - Loss ([`JepaLoss`]): the paper's L2 (mean squared error) between
//!   predicted and target representations, averaged over all target
//!   patches; the released code's smooth L1 is `loss = "smooth_l1"`.
//!
//! Adaptations, for grids as small as 7x7 (28x28 images, patch 4): block
//! positions are uniform over every place the block fits (I-JEPA's sampler
//! never touches the last row and column, and its context block could not
//! be wider than the grid minus one); when the context loses too many
//! patches to the targets after 20 placements, it becomes every patch
//! outside the targets; per batch the contexts are cut to the smallest
//! count by a random subset (I-JEPA keeps the first indices). The encoders
//! keep timm's class token (it attends like an extra register token; no loss
//! reads it), so the exported encoder is a plain timm ViT whose mean patch
//! token is I-JEPA's representation.
//!
//! [`Method::embed`] is the mean final-normed patch token of the target
//! encoder on the whole image (I-JEPA evaluates the target encoder with
//! average pooling); it is also what gets exported (`target_encoder.`).
use crate::models::vit::{self, gather_tokens, sincos_2d, vit_layer_norm, vit_linear, Block};
use crate::models::{EncoderConfig, PosEmbedInit, Vit, VitSpec};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use selfsup_core::ema::{EmaConfig, EmaTeacher};
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Init};
use tch::{Device, Kind, Tensor};

/// How the context and target blocks are drawn (`masks = { ... }`); defaults
/// are the paper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlockMaskConfig {
    /// Target blocks per image (M).
    pub targets: usize,
    /// Fraction of the grid one target block covers, drawn per batch.
    pub target_scale: (f64, f64),
    /// Fraction of the grid the (square) context block covers, drawn per batch.
    pub context_scale: (f64, f64),
    /// Height / width of the target blocks.
    pub aspect_ratio: (f64, f64),
    /// Context patches wanted after the targets are removed (else the block
    /// is placed again, up to 20 times).
    pub min_keep: usize,
}

impl Default for BlockMaskConfig {
    fn default() -> Self {
        Self {
            targets: 4,
            target_scale: (0.15, 0.2),
            context_scale: (0.85, 1.0),
            aspect_ratio: (0.75, 1.5),
            min_keep: 10,
        }
    }
}

impl BlockMaskConfig {
    /// Ranges ordered and positive, scales at most 1, at least one target.
    pub fn validate(&self) -> Result<()> {
        if self.targets == 0 {
            return Err(Error::Config(
                "method.masks.targets must be at least 1".into(),
            ));
        }
        for (key, (lo, hi), max) in [
            ("target_scale", self.target_scale, 1.0),
            ("context_scale", self.context_scale, 1.0),
            ("aspect_ratio", self.aspect_ratio, f64::INFINITY),
        ] {
            if !(lo > 0.0 && lo <= hi && hi <= max) {
                return Err(Error::Config(format!(
                    "method.masks.{key} must be a range [lo, hi] with 0 < lo <= hi{}, got [{lo}, {hi}]",
                    if max.is_finite() { " <= 1" } else { "" }
                )));
            }
        }
        Ok(())
    }
}

/// The blocks of one batch, as patch indices (row-major) on the grid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMasks {
    /// `context[b]`: the context patches of sample `b`, sorted; every
    /// sample has the same count.
    pub context: Vec<Vec<i64>>,
    /// `targets[m][b]`: target block `m` of sample `b`, sorted; all have the
    /// same count.
    pub targets: Vec<Vec<Vec<i64>>>,
}

impl BlockMasks {
    /// Context indices as a `[B, K_ctx]` int64 tensor.
    pub fn context_tensor(&self, device: Device) -> Tensor {
        index_tensor(self.context.iter(), device)
    }

    /// Target indices as a `[M * B, K_tgt]` int64 tensor, target-major (row
    /// `m * B + b`), as I-JEPA concatenates its masks.
    pub fn targets_tensor(&self, device: Device) -> Tensor {
        index_tensor(self.targets.iter().flatten(), device)
    }
}

fn index_tensor<'a>(rows: impl Iterator<Item = &'a Vec<i64>>, device: Device) -> Tensor {
    let rows: Vec<Tensor> = rows.map(|r| Tensor::from_slice(r)).collect();
    Tensor::stack(&rows, 0).to_device(device)
}

/// Draws [`BlockMasks`] on a `rows x cols` patch grid.
#[derive(Debug, Clone)]
pub struct BlockMaskSampler {
    cfg: BlockMaskConfig,
    rows: i64,
    cols: i64,
}

/// Placements of the context block tried before it falls back to every
/// patch outside the targets.
const CONTEXT_TRIES: usize = 20;
/// Placements of a target block tried before it may cover the last free patch.
const TARGET_TRIES: usize = 20;

impl BlockMaskSampler {
    /// A sampler for a `rows x cols` grid (at least 2 patches).
    pub fn new(cfg: BlockMaskConfig, rows: i64, cols: i64) -> Result<Self> {
        cfg.validate()?;
        if rows * cols < 2 {
            return Err(Error::Config(format!(
                "I-JEPA needs a patch grid of at least 2 patches, got {rows}x{cols}"
            )));
        }
        Ok(Self { cfg, rows, cols })
    }

    /// `(h, w)` of a block covering about `scale` of the grid with aspect
    /// ratio `h / w` in `aspect`, both drawn from one uniform number as
    /// I-JEPA does; `1 <= h <= rows`, `1 <= w <= cols`.
    fn block_size<R: Rng>(&self, rng: &mut R, scale: (f64, f64), aspect: (f64, f64)) -> (i64, i64) {
        let r: f64 = rng.gen();
        let s = scale.0 + r * (scale.1 - scale.0);
        let ar = aspect.0 + r * (aspect.1 - aspect.0);
        let keep = ((self.rows * self.cols) as f64 * s).floor();
        let h = ((keep * ar).sqrt().round() as i64).clamp(1, self.rows);
        let w = ((keep / ar).sqrt().round() as i64).clamp(1, self.cols);
        (h, w)
    }

    /// A block of `h x w` at a uniform position where it fits, as sorted indices.
    fn place<R: Rng>(&self, rng: &mut R, (h, w): (i64, i64)) -> Vec<i64> {
        let top = rng.gen_range(0..=self.rows - h);
        let left = rng.gen_range(0..=self.cols - w);
        (top..top + h)
            .flat_map(|r| (left..left + w).map(move |c| r * self.cols + c))
            .collect()
    }

    /// The blocks of a batch of `batch` images.
    pub fn sample<R: Rng>(&self, batch: usize, rng: &mut R) -> BlockMasks {
        let n = (self.rows * self.cols) as usize;
        let mut t_size = self.block_size(rng, self.cfg.target_scale, self.cfg.aspect_ratio);
        if t_size.0 * t_size.1 >= n as i64 {
            // A target must leave the context something.
            if t_size.1 > 1 {
                t_size.1 -= 1;
            } else {
                t_size.0 -= 1;
            }
        }
        let c_size = self.block_size(rng, self.cfg.context_scale, (1.0, 1.0));
        let mut targets = vec![Vec::with_capacity(batch); self.cfg.targets];
        let mut contexts = Vec::with_capacity(batch);
        for _ in 0..batch {
            let mut covered = vec![false; n];
            let mut free = n;
            for m in 0..self.cfg.targets {
                let mut block = self.place(rng, t_size);
                for _ in 1..TARGET_TRIES {
                    let new = block.iter().filter(|&&i| !covered[i as usize]).count();
                    if new < free {
                        break;
                    }
                    block = self.place(rng, t_size);
                }
                if block.iter().filter(|&&i| !covered[i as usize]).count() >= free {
                    // Cover nothing new rather than everything: repeat this
                    // sample's first target (which always leaves a patch free).
                    block = targets[0].last().cloned().unwrap_or(block);
                }
                for &i in &block {
                    if !covered[i as usize] {
                        covered[i as usize] = true;
                        free -= 1;
                    }
                }
                targets[m].push(block);
            }
            let mut context = Vec::new();
            for _ in 0..CONTEXT_TRIES {
                context = self.place(rng, c_size);
                context.retain(|&i| !covered[i as usize]);
                if context.len() >= self.cfg.min_keep {
                    break;
                }
            }
            if context.len() < self.cfg.min_keep {
                let outside: Vec<i64> = (0..n as i64).filter(|&i| !covered[i as usize]).collect();
                if outside.len() > context.len() {
                    context = outside;
                }
            }
            contexts.push(context);
        }
        let k = contexts.iter().map(Vec::len).min().unwrap_or(0);
        for context in contexts.iter_mut() {
            if context.len() > k {
                context.shuffle(rng);
                context.truncate(k);
                context.sort_unstable();
            }
        }
        BlockMasks {
            context: contexts,
            targets,
        }
    }
}

/// Distance between predicted and target representations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JepaLoss {
    /// Mean squared error (the paper's L2).
    #[default]
    L2,
    /// `F.smooth_l1_loss` with beta 1 (the released code).
    SmoothL1,
}

impl JepaLoss {
    /// The mean over every element of `pred` and `target` (same shapes).
    pub fn forward(self, pred: &Tensor, target: &Tensor) -> Tensor {
        match self {
            JepaLoss::L2 => pred.mse_loss(target, tch::Reduction::Mean),
            JepaLoss::SmoothL1 => pred.smooth_l1_loss(target, tch::Reduction::Mean, 1.0),
        }
    }
}

/// I-JEPA settings (the `[method]` table with `name = "ijepa"`); defaults are
/// the paper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IjepaConfig {
    /// Block sampling.
    pub masks: BlockMaskConfig,
    /// Width of the predictor.
    pub predictor_embed_dim: i64,
    /// Blocks of the predictor.
    pub predictor_depth: i64,
    /// Attention heads of the predictor (default: the encoder's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predictor_heads: Option<i64>,
    /// Target-encoder momentum, 0.996 -> 1.
    pub ema: EmaConfig,
    /// `"l2"` (paper) or `"smooth_l1"` (released code).
    pub loss: JepaLoss,
}

impl Default for IjepaConfig {
    fn default() -> Self {
        Self {
            masks: BlockMaskConfig::default(),
            predictor_embed_dim: 384,
            predictor_depth: 12,
            predictor_heads: None,
            ema: EmaConfig {
                base: 0.996,
                end: 1.0,
            },
            loss: JepaLoss::L2,
        }
    }
}

/// I-JEPA's predictor (names under `predictor.`).
#[derive(Debug)]
struct Predictor {
    embed: nn::Linear,
    mask_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: nn::LayerNorm,
    proj: nn::Linear,
}

impl Predictor {
    fn new(p: &nn::Path, spec: VitSpec, dim: i64, depth: i64, heads: i64) -> Self {
        let g = spec.grid();
        Self {
            embed: vit_linear(p / "predictor_embed", spec.embed_dim, dim),
            mask_token: p.var(
                "mask_token",
                &[1, 1, dim],
                Init::Randn {
                    mean: 0.0,
                    stdev: vit::INIT_STD,
                },
            ),
            pos_embed: p
                .var_copy(
                    "predictor_pos_embed",
                    &sincos_2d(dim, g, g, false).unsqueeze(0),
                )
                .set_requires_grad(false),
            blocks: vit::blocks(&(p / "predictor_blocks"), dim, depth, heads),
            norm: vit_layer_norm(p / "predictor_norm", dim),
            proj: vit_linear(p / "predictor_proj", dim, spec.embed_dim),
        }
    }

    /// Context tokens `[B, Kc, D]` at `ctx_idx` (`[B, Kc]`) and target indices
    /// `[M * B, Kt]` (target-major) -> predictions `[M * B, Kt, D]`.
    fn forward(&self, context: &Tensor, ctx_idx: &Tensor, tgt_idx: &Tensor) -> Tensor {
        let (b, kc) = ctx_idx.size2().expect("[B, Kc]");
        let (mb, kt) = tgt_idx.size2().expect("[M * B, Kt]");
        let dim = self.pos_embed.size()[2];
        let n = self.pos_embed.size()[1];
        let pos = |rows: i64| self.pos_embed.expand([rows, n, dim], false);
        let x = context.apply(&self.embed) + gather_tokens(&pos(b), ctx_idx);
        let queries = &self.mask_token + gather_tokens(&pos(mb), tgt_idx);
        let x = Tensor::cat(&[x.repeat([mb / b, 1, 1]), queries], 1);
        vit::run_blocks(&self.blocks, &x)
            .apply(&self.norm)
            .narrow(1, kc, kt)
            .apply(&self.proj)
    }
}

/// The I-JEPA method (see the module documentation).
pub struct Ijepa {
    vs: nn::VarStore,
    encoder: Vit,
    target_encoder: Vit,
    predictor: Predictor,
    teacher: EmaTeacher,
    sampler: BlockMaskSampler,
    loss: JepaLoss,
}

impl Ijepa {
    /// The exported encoder: the target encoder, as I-JEPA evaluates it.
    pub const ENCODER_PREFIX: &'static str = "target_encoder";
    /// The context encoder, trained by gradient.
    pub const CONTEXT_PREFIX: &'static str = "encoder";

    /// Builds both encoders, the predictor and the EMA pairing on `device`.
    /// Errors when `encoder` is not a ViT, a width is not a multiple of 4
    /// (sin-cos position embeddings) or of its head count, or the mask
    /// settings are invalid.
    pub fn new(
        device: Device,
        encoder: &EncoderConfig,
        in_channels: i64,
        cfg: &IjepaConfig,
    ) -> Result<Self> {
        let spec = encoder.vit_spec().ok_or_else(|| {
            Error::Config(format!(
                "I-JEPA predicts patch representations and needs a ViT encoder ([model] arch = \
                 \"vit_tiny\" or \"vit_small\"), got arch = \"{}\"",
                encoder.arch()
            ))
        })?;
        spec.validate()?;
        let heads = cfg.predictor_heads.unwrap_or(spec.heads);
        let dim = cfg.predictor_embed_dim;
        if spec.embed_dim % 4 != 0 {
            return Err(Error::Config(format!(
                "I-JEPA's fixed sin-cos position embedding needs model.embed_dim divisible by 4, got {}",
                spec.embed_dim
            )));
        }
        if cfg.predictor_depth < 1 || heads < 1 || dim < 1 || dim % 4 != 0 || dim % heads != 0 {
            return Err(Error::Config(format!(
                "method.predictor_embed_dim ({dim}) must be a positive multiple of 4 and of the \
                 predictor's heads ({heads}), and method.predictor_depth ({}) at least 1",
                cfg.predictor_depth
            )));
        }
        let sampler = BlockMaskSampler::new(cfg.masks.clone(), spec.grid(), spec.grid())?;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let build = |prefix: &str| {
            Vit::new(
                &(&root / prefix),
                spec,
                in_channels,
                PosEmbedInit::FixedSinCos,
            )
        };
        let enc = build(Self::CONTEXT_PREFIX);
        let target_encoder = build(Self::ENCODER_PREFIX);
        let predictor = Predictor::new(
            &(&root / "predictor"),
            spec,
            dim,
            cfg.predictor_depth,
            heads,
        );
        let teacher = EmaTeacher::new(
            &vs,
            Self::CONTEXT_PREFIX,
            Self::ENCODER_PREFIX,
            cfg.ema.clone(),
        )?;
        Ok(Self {
            vs,
            encoder: enc,
            target_encoder,
            predictor,
            teacher,
            sampler,
            loss: cfg.loss,
        })
    }

    /// The momentum of the last EMA update (NaN before the first).
    pub fn last_momentum(&self) -> f64 {
        self.teacher.last_momentum()
    }

    /// Predictions and targets `[M * B, Kt, D]` for `imgs` and `masks`.
    pub fn predict(&self, imgs: &Tensor, masks: &BlockMasks) -> (Tensor, Tensor) {
        let device = imgs.device();
        let ctx_idx = masks.context_tensor(device);
        let tgt_idx = masks.targets_tensor(device);
        let m = masks.targets.len() as i64;
        let target = tch::no_grad(|| {
            let t = self.target_encoder.forward_features(imgs);
            let n = t.size()[1] - 1;
            let d = t.size()[2];
            let t = t
                .narrow(1, 1, n)
                .layer_norm([d], None::<Tensor>, None::<Tensor>, 1e-5, false);
            gather_tokens(&t.repeat([m, 1, 1]), &tgt_idx)
        });
        let visible = gather_tokens(&self.encoder.patch_tokens(imgs), &ctx_idx);
        let z = self
            .encoder
            .final_norm(&self.encoder.run_blocks(&self.encoder.prepend_cls(&visible)));
        let kc = ctx_idx.size()[1];
        let z = z.narrow(1, 1, kc);
        (self.predictor.forward(&z, &ctx_idx, &tgt_idx), target)
    }
}

impl Method for Ijepa {
    fn name(&self) -> &'static str {
        "ijepa"
    }
    fn target(&self) -> TargetKind {
        TargetKind::Teacher
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, _ctx: &StepCtx) -> Result<LossOut> {
        let imgs = batch
            .views
            .first()
            .ok_or_else(|| Error::Config("I-JEPA needs at least one view per image".into()))?;
        let spec = self.encoder.spec();
        let (gh, gw) = self.encoder.grid_of(imgs);
        if (gh, gw) != (spec.grid(), spec.grid()) {
            return Err(Error::Config(format!(
                "I-JEPA: views of {:?} give a {gh}x{gw} patch grid, the predictor is built for {}x{} \
                 (model.image_size = {})",
                &imgs.size()[2..],
                spec.grid(),
                spec.grid(),
                spec.image_size
            )));
        }
        let seed = Tensor::randint(i64::MAX, [1], (Kind::Int64, Device::Cpu)).int64_value(&[0]);
        let mut rng = ChaCha8Rng::seed_from_u64(seed as u64);
        let masks = self.sampler.sample(batch.len() as usize, &mut rng);
        let (pred, target) = self.predict(imgs, &masks);
        let loss = self.loss.forward(&pred, &target);
        let terms = vec![
            ("context_patches", masks.context[0].len() as f64),
            ("target_patches", masks.targets[0][0].len() as f64),
        ];
        Ok(LossOut { loss, terms })
    }
    fn after_step(&mut self, ctx: &StepCtx) {
        self.teacher.update(ctx.step, ctx.total_steps);
    }
    fn embed(&self, xs: &Tensor) -> Tensor {
        self.target_encoder.mean_patch_features(xs)
    }
    fn project(&self, xs: &Tensor) -> Tensor {
        self.embed(xs)
    }
}

#[cfg(test)]
mod tests;
