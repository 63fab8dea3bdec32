//! V-JEPA (Bardes et al. 2024, "Revisiting Feature Prediction for Learning
//! Visual Representations from Video"): from the visible tokens of a clip,
//! a narrow predictor predicts the features an EMA target encoder computes
//! for the masked spatio-temporal blocks; the loss is the L1 distance in
//! feature space.
//!
//! - Masks ([`MaskSampler`]): per clip, `blocks` blocks of the token grid,
//!   each `h x w` cells (about `spatial_scale` of a frame's cells, aspect
//!   ratio `h / w` in `aspect_ratio`, one size per batch as V-JEPA draws it)
//!   over `temporal_scale` of the time steps (1: the whole clip, V-JEPA's
//!   default "tube"), at uniform positions. Their union is the target, the
//!   rest the context; a block that would leave fewer than `min_context`
//!   context tokens is dropped. Per batch, contexts and targets are cut to
//!   the smallest count by a random subset (V-JEPA's collator keeps the
//!   minimum too). Randomness: ChaCha8 seeded from `(seed, step)`.
//!   `future > 0` replaces the blocks with a future mask: the target is
//!   every token of the last `round(T' x future)` time steps (at least one,
//!   at most `T' - 1`), the context every earlier token, so the predictor
//!   must extrapolate the motion it sees.
//! - Context encoder: the [`TubeletVit`] under `encoder.` on the context
//!   tokens only.
//! - Target encoder: the same ViT under `target_encoder.`, an EMA of the
//!   context encoder ([`EmaTeacher`], momentum `ema.base -> ema.end` along a
//!   cosine), on every token, without gradient; its outputs are layer-normed
//!   once more (no affine, eps 1e-5: V-JEPA's `F.layer_norm`) and read at
//!   the target tokens.
//! - Predictor under `predictor.`: `predictor_embed` (D -> D_pred), a
//!   `mask_token`, fixed 3-D sin-cos `predictor_pos_embed`,
//!   `predictor_blocks.{i}`, `predictor_norm`, `predictor_proj` (D_pred ->
//!   D). It sees the context tokens and one mask token per target token.
//! - Loss: `mean |prediction - target|` over every target token and
//!   feature (V-JEPA's `loss_exp = 1`). With `content_weight = a > 0` each
//!   target token's mean L1 distance `l_i` is weighted by
//!   `w_i = (1 - a) + a c_i / mean(c)` and the loss is
//!   `sum w_i l_i / sum w_i`, where `c_i` is how much its tubelet differs
//!   from the clip's background: the mean over the tubelet's input pixels
//!   of `(x - min of the clip) / 2` (`mean(c)` over the batch's target
//!   tokens). Black background tubelets, most of a Moving Fashion-MNIST
//!   clip, then count less than the garments.
//!
//! One mask family per step (V-JEPA averages a short-range and a long-range
//! family; the preset's blocks are its short-range ones). [`Method::embed`]
//! is the mean final token of the target encoder on the whole clip, what
//! the probes read and the export holds.
use crate::model::{self, gather_tokens, sincos_3d, Block, TubeletVit, VitConfig};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use selfsup_core::ema::{EmaConfig, EmaTeacher};
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn;
use tch::{Device, Kind, Tensor};

/// How the target blocks are drawn (`[method.masks]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskConfig {
    /// Blocks per clip (their union is the target).
    pub blocks: usize,
    /// Fraction of a frame's token cells one block covers.
    pub spatial_scale: (f64, f64),
    /// Fraction of the time steps one block spans.
    pub temporal_scale: (f64, f64),
    /// Height / width of a block.
    pub aspect_ratio: (f64, f64),
    /// Context tokens a block may not eat into.
    pub min_context: usize,
    /// Fraction of the time steps hidden at the end of the clip (0: block
    /// masks; `> 0`: the future mask, blocks unused).
    pub future: f64,
}

impl Default for MaskConfig {
    fn default() -> Self {
        Self {
            blocks: 8,
            spatial_scale: (0.15, 0.15),
            temporal_scale: (1.0, 1.0),
            aspect_ratio: (0.75, 1.5),
            min_context: 4,
            future: 0.0,
        }
    }
}

impl MaskConfig {
    /// The ranges, as a message naming the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(1..=64).contains(&self.blocks) {
            return Err(format!(
                "[method.masks] blocks = {}: give 1 to 64",
                self.blocks
            ));
        }
        if !(self.future.is_finite() && (0.0..1.0).contains(&self.future)) {
            return Err(format!(
                "[method.masks] future = {}: give 0 (block masks) or a fraction below 1 of the \
                 time steps to hide at the end",
                self.future
            ));
        }
        if self.min_context == 0 {
            return Err(
                "[method.masks] min_context = 0: the predictor needs context, give at least 1"
                    .into(),
            );
        }
        for (key, (lo, hi), max) in [
            ("spatial_scale", self.spatial_scale, 1.0),
            ("temporal_scale", self.temporal_scale, 1.0),
            ("aspect_ratio", self.aspect_ratio, 16.0),
        ] {
            if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi && hi <= max) {
                return Err(format!(
                    "[method.masks] {key} = [{lo}, {hi}]: give a range 0 < lo <= hi <= {max}"
                ));
            }
        }
        Ok(())
    }
}

/// The masks of one batch, as token indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masks {
    /// `context[b]`: sorted visible tokens of clip `b`; one count per batch.
    pub context: Vec<Vec<i64>>,
    /// `target[b]`: sorted masked tokens of clip `b`; one count per batch.
    pub target: Vec<Vec<i64>>,
}

impl Masks {
    fn tensor(rows: &[Vec<i64>], device: Device) -> Tensor {
        let rows: Vec<Tensor> = rows.iter().map(|r| Tensor::from_slice(r)).collect();
        Tensor::stack(&rows, 0).to_device(device)
    }
}

/// Draws [`Masks`] on a `(time, rows, cols)` token grid.
#[derive(Debug, Clone)]
pub struct MaskSampler {
    cfg: MaskConfig,
    grid: (i64, i64, i64),
}

impl MaskSampler {
    /// A sampler for `grid`; errors when the grid has fewer tokens than
    /// `min_context + 1`.
    pub fn new(cfg: MaskConfig, grid: (i64, i64, i64)) -> Result<Self> {
        cfg.validate().map_err(Error::Config)?;
        let n = grid.0 * grid.1 * grid.2;
        if cfg.future > 0.0 && grid.0 < 2 {
            return Err(Error::Config(format!(
                "[method.masks] future = {}: the future mask needs at least 2 time steps, the \
                 grid has {} (more [model] frames or a shorter tubelet)",
                cfg.future, grid.0
            )));
        }
        if n <= cfg.min_context as i64 {
            return Err(Error::Config(format!(
                "[method.masks] min_context = {} leaves nothing to predict on a grid of {n} tokens: \
                 lower it or use smaller tubelets",
                cfg.min_context
            )));
        }
        Ok(Self { cfg, grid })
    }

    /// `(time steps, rows, cols)` of one batch's blocks.
    fn block_size<R: Rng>(&self, rng: &mut R) -> (i64, i64, i64) {
        let (t, h, w) = self.grid;
        let c = &self.cfg;
        let r: f64 = rng.gen();
        let s = c.spatial_scale.0 + r * (c.spatial_scale.1 - c.spatial_scale.0);
        let ar = c.aspect_ratio.0 + r * (c.aspect_ratio.1 - c.aspect_ratio.0);
        let cells = (h * w) as f64 * s;
        let bh = ((cells * ar).sqrt().round() as i64).clamp(1, h);
        let bw = ((cells / ar).sqrt().round() as i64).clamp(1, w);
        let ts = rng.gen_range(c.temporal_scale.0..=c.temporal_scale.1);
        let bt = ((t as f64 * ts).round() as i64).clamp(1, t);
        (bt, bh, bw)
    }

    /// One clip's context and target, before the batch's cut.
    pub fn sample_one<R: Rng>(&self, size: (i64, i64, i64), rng: &mut R) -> (Vec<i64>, Vec<i64>) {
        let (t, h, w) = self.grid;
        let n = (t * h * w) as usize;
        let mut masked = vec![false; n];
        let mut free = n;
        for _ in 0..self.cfg.blocks {
            let t0 = rng.gen_range(0..=t - size.0);
            let r0 = rng.gen_range(0..=h - size.1);
            let c0 = rng.gen_range(0..=w - size.2);
            let cells: Vec<usize> = (t0..t0 + size.0)
                .flat_map(|a| {
                    (r0..r0 + size.1).flat_map(move |b| {
                        (c0..c0 + size.2).map(move |c| (a * h * w + b * w + c) as usize)
                    })
                })
                .collect();
            let new = cells.iter().filter(|&&i| !masked[i]).count();
            if free - new < self.cfg.min_context {
                continue;
            }
            for i in cells {
                masked[i] = true;
            }
            free -= new;
        }
        if free == n {
            // Every block was too large: mask one token so there is a target.
            let i = rng.gen_range(0..n);
            masked[i] = true;
        }
        let (mut context, mut target) = (Vec::new(), Vec::new());
        for (i, &m) in masked.iter().enumerate() {
            if m {
                target.push(i as i64);
            } else {
                context.push(i as i64);
            }
        }
        (context, target)
    }

    /// The future mask of one clip: the last `round(T' x future)` time
    /// steps (clamped to `1..T'`) are the target, the earlier ones the
    /// context.
    pub fn future_mask(&self) -> (Vec<i64>, Vec<i64>) {
        let (t, h, w) = self.grid;
        let hidden = ((t as f64 * self.cfg.future).round() as i64).clamp(1, (t - 1).max(1));
        let split = (t - hidden) * h * w;
        ((0..split).collect(), (split..t * h * w).collect())
    }

    /// The masks of a batch of `batch` clips.
    pub fn sample<R: Rng>(&self, batch: usize, rng: &mut R) -> Masks {
        if self.cfg.future > 0.0 {
            let (context, target) = self.future_mask();
            return Masks {
                context: vec![context; batch],
                target: vec![target; batch],
            };
        }
        let size = self.block_size(rng);
        let (mut context, mut target): (Vec<Vec<i64>>, Vec<Vec<i64>>) =
            (0..batch).map(|_| self.sample_one(size, rng)).unzip();
        for rows in [&mut context, &mut target] {
            let k = rows.iter().map(Vec::len).min().unwrap_or(0);
            for r in rows.iter_mut() {
                if r.len() > k {
                    r.shuffle(rng);
                    r.truncate(k);
                    r.sort_unstable();
                }
            }
        }
        Masks { context, target }
    }
}

/// V-JEPA settings (the `[method]` table with `name = "vjepa"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VjepaConfig {
    pub masks: MaskConfig,
    /// Width of the predictor.
    pub predictor_embed_dim: i64,
    /// Blocks of the predictor.
    pub predictor_depth: i64,
    /// Attention heads of the predictor.
    pub predictor_heads: i64,
    /// Target-encoder momentum (V-JEPA: 0.998 -> 1).
    pub ema: EmaConfig,
    /// How much the loss weights target tokens by their tubelet's content
    /// (0: uniform, V-JEPA's; 1: in proportion to it); see the module
    /// documentation.
    pub content_weight: f64,
}

impl Default for VjepaConfig {
    fn default() -> Self {
        Self {
            masks: MaskConfig::default(),
            predictor_embed_dim: 48,
            predictor_depth: 2,
            predictor_heads: 4,
            ema: EmaConfig {
                base: 0.998,
                end: 1.0,
            },
            content_weight: 0.0,
        }
    }
}

impl VjepaConfig {
    /// The ranges, as a message naming the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.masks.validate()?;
        self.ema.validate("[method.ema]")?;
        if !(self.content_weight.is_finite() && (0.0..=1.0).contains(&self.content_weight)) {
            return Err(format!(
                "[method] content_weight = {}: give 0 (uniform) to 1",
                self.content_weight
            ));
        }
        if !(1..=64).contains(&self.predictor_depth) {
            return Err(format!(
                "[method] predictor_depth = {}: give 1 to 64",
                self.predictor_depth
            ));
        }
        if !(1..=256).contains(&self.predictor_heads) {
            return Err(format!(
                "[method] predictor_heads = {}: give 1 to 256",
                self.predictor_heads
            ));
        }
        let d = self.predictor_embed_dim;
        if !(16..=8192).contains(&d) || d % 16 != 0 || d % self.predictor_heads != 0 {
            return Err(format!(
                "[method] predictor_embed_dim = {d}: give a multiple of 16 (and of \
                 predictor_heads = {}) from 16 to 8192",
                self.predictor_heads
            ));
        }
        Ok(())
    }
}

/// V-JEPA's predictor (names under `predictor.`).
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
    fn new(p: &nn::Path, vit: &VitConfig, cfg: &VjepaConfig) -> Self {
        let d = cfg.predictor_embed_dim;
        Self {
            embed: model::linear(p / "predictor_embed", vit.embed_dim, d),
            mask_token: p.var(
                "mask_token",
                &[1, 1, d],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: model::INIT_STD,
                },
            ),
            pos_embed: p
                .var_copy(
                    "predictor_pos_embed",
                    &sincos_3d(d, vit.grid()).unsqueeze(0),
                )
                .set_requires_grad(false),
            blocks: model::blocks(
                &(p / "predictor_blocks"),
                d,
                cfg.predictor_depth,
                cfg.predictor_heads,
                vit.mlp_ratio,
            ),
            norm: model::layer_norm(p / "predictor_norm", d),
            proj: model::linear(p / "predictor_proj", d, vit.embed_dim),
        }
    }

    /// Context tokens `[B, Kc, D]` at `ctx` (`[B, Kc]`), target indices
    /// `tgt` (`[B, Kt]`) -> predictions `[B, Kt, D]`.
    fn forward(&self, context: &Tensor, ctx: &Tensor, tgt: &Tensor) -> Tensor {
        let (b, kc) = ctx.size2().unwrap_or((0, 0));
        let kt = tgt.size2().map_or(0, |s| s.1);
        let size = self.pos_embed.size();
        let pos = self.pos_embed.expand([b, size[1], size[2]], false);
        let x = context.apply(&self.embed) + gather_tokens(&pos, ctx);
        let q = &self.mask_token + gather_tokens(&pos, tgt);
        let mut x = Tensor::cat(&[x, q], 1);
        for blk in &self.blocks {
            x = blk.forward(&x);
        }
        x.apply(&self.norm).narrow(1, kc, kt).apply(&self.proj)
    }
}

/// How much each tubelet of `clips` (`[B, C, T, S, S]`) differs from its
/// clip's background: the mean over the tubelet's pixels (and channels) of
/// `(x - min of the clip) / 2` (normalised pixels span 2), `[B, tokens]` in
/// the ViT's time-major token order.
pub fn tubelet_content(clips: &Tensor, tubelet: i64, patch: i64) -> Tensor {
    let b = clips.size().first().copied().unwrap_or(0);
    let x = clips.to_kind(Kind::Float);
    let (min, _) = x.reshape([b, -1]).min_dim(1, true);
    ((x - min.view([b, 1, 1, 1, 1])) / 2.0)
        .avg_pool3d(
            [tubelet, patch, patch],
            [tubelet, patch, patch],
            [0, 0, 0],
            false,
            true,
            None::<i64>,
        )
        .mean_dim(1, false, Kind::Float)
        .flatten(1, 3)
}

/// What one V-JEPA step computes, for tests and diagnostics.
pub struct Parts {
    /// Predictions `[B, Kt, D]`.
    pub prediction: Tensor,
    /// The target encoder's tokens `[B, N, D]`, before the extra layer norm.
    pub target_tokens: Tensor,
    /// `mean |prediction - layer_norm(target_tokens)[target]|` (weighted
    /// by content under `content_weight`).
    pub loss: Tensor,
}

/// The V-JEPA method (see the module documentation).
pub struct Vjepa {
    vs: nn::VarStore,
    encoder: TubeletVit,
    target_encoder: TubeletVit,
    predictor: Predictor,
    teacher: EmaTeacher,
    sampler: MaskSampler,
    content_weight: f64,
    tubelet: i64,
    patch: i64,
    seed: u64,
}

impl Vjepa {
    /// The exported encoder: the target encoder, as V-JEPA evaluates it.
    pub const ENCODER_PREFIX: &'static str = "target_encoder";

    /// Builds both encoders, the predictor and the EMA pairing on `device`
    /// from libtorch's generator as it stands (the caller seeds it); `seed`
    /// keys the masks.
    pub fn new(device: Device, vit: &VitConfig, cfg: &VjepaConfig, seed: u64) -> Result<Self> {
        vit.validate().map_err(Error::Config)?;
        cfg.validate().map_err(Error::Config)?;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let encoder = TubeletVit::new(&(&root / "encoder"), vit);
        let target_encoder = TubeletVit::new(&(&root / Self::ENCODER_PREFIX), vit);
        let predictor = Predictor::new(&(&root / "predictor"), vit, cfg);
        let teacher = EmaTeacher::new(&vs, "encoder", Self::ENCODER_PREFIX, cfg.ema.clone())?;
        let sampler = MaskSampler::new(cfg.masks.clone(), vit.grid())?;
        Ok(Self {
            vs,
            encoder,
            target_encoder,
            predictor,
            teacher,
            sampler,
            content_weight: cfg.content_weight,
            tubelet: vit.tubelet,
            patch: vit.patch_size,
            seed,
        })
    }

    /// The masks of step `step` for `batch` clips.
    pub fn masks(&self, step: u64, batch: usize) -> Masks {
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x7E7A,
        );
        self.sampler.sample(batch, &mut rng)
    }

    /// Prediction, target and loss of `clips` under `masks`.
    pub fn parts(&self, clips: &Tensor, masks: &Masks) -> Parts {
        let device = clips.device();
        let ctx = Masks::tensor(&masks.context, device);
        let tgt = Masks::tensor(&masks.target, device);
        let target_tokens = tch::no_grad(|| self.target_encoder.tokens(clips, None));
        let d = target_tokens.size().last().copied().unwrap_or(0);
        let h = tch::no_grad(|| {
            let normed = target_tokens.to_kind(Kind::Float).layer_norm(
                [d],
                None::<Tensor>,
                None::<Tensor>,
                1e-5,
                false,
            );
            gather_tokens(&normed, &tgt)
        });
        let context = self.encoder.tokens(clips, Some(&ctx));
        let prediction = self.predictor.forward(&context, &ctx, &tgt);
        let dist = (prediction.to_kind(Kind::Float) - h).abs();
        let loss = if self.content_weight > 0.0 {
            let a = self.content_weight;
            let c = tch::no_grad(|| {
                tubelet_content(clips, self.tubelet, self.patch).gather(1, &tgt, false)
            });
            let w = (c.shallow_clone() / (c.mean(Kind::Float) + 1e-6)) * a + (1.0 - a);
            let per_token = dist.mean_dim(-1, false, Kind::Float);
            (per_token * &w).sum(Kind::Float) / w.sum(Kind::Float).clamp_min(1e-12)
        } else {
            dist.mean(Kind::Float)
        };
        Parts {
            prediction,
            target_tokens,
            loss,
        }
    }

    /// The context encoder (trained by gradient).
    pub fn context_encoder(&self) -> &TubeletVit {
        &self.encoder
    }

    /// The target encoder (what is evaluated and exported).
    pub fn target_encoder(&self) -> &TubeletVit {
        &self.target_encoder
    }
}

impl Method for Vjepa {
    fn name(&self) -> &'static str {
        "vjepa"
    }
    fn target(&self) -> TargetKind {
        TargetKind::Teacher
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<LossOut> {
        let Some(clips) = batch.views.first() else {
            return Err(Error::Config("V-JEPA needs one view per batch".into()));
        };
        let masks = self.masks(ctx.step, clips.size()[0] as usize);
        let kc = masks.context.first().map_or(0, Vec::len);
        let kt = masks.target.first().map_or(0, Vec::len);
        let parts = self.parts(clips, &masks);
        Ok(LossOut {
            loss: parts.loss,
            terms: vec![
                ("context_tokens", kc as f64),
                ("target_tokens", kt as f64),
                ("ema_momentum", self.teacher.last_momentum()),
            ],
        })
    }
    fn after_step(&mut self, ctx: &StepCtx) {
        self.teacher.update(ctx.step, ctx.total_steps);
    }
    fn embed(&self, xs: &Tensor) -> Tensor {
        tch::no_grad(|| self.target_encoder.pooled(xs))
    }
    fn project(&self, xs: &Tensor) -> Tensor {
        self.embed(xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_vit() -> VitConfig {
        VitConfig {
            image_size: 8,
            frames: 4,
            patch_size: 4,
            tubelet: 2,
            embed_dim: 16,
            depth: 1,
            heads: 2,
            ..VitConfig::default()
        }
    }

    fn tiny_cfg() -> VjepaConfig {
        VjepaConfig {
            masks: MaskConfig {
                blocks: 2,
                spatial_scale: (0.25, 0.25),
                aspect_ratio: (1.0, 1.0),
                min_context: 2,
                ..MaskConfig::default()
            },
            predictor_embed_dim: 16,
            predictor_depth: 1,
            predictor_heads: 2,
            ..VjepaConfig::default()
        }
    }

    #[test]
    fn masks_are_disjoint_tubes_cut_to_one_count_per_batch() {
        let sampler = MaskSampler::new(MaskConfig::default(), (8, 4, 4)).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..20 {
            let size = sampler.block_size(&mut rng);
            assert_eq!(size.0, 8, "temporal_scale 1 spans the clip");
            let (ctx, tgt) = sampler.sample_one(size, &mut rng);
            assert_eq!(ctx.len() + tgt.len(), 128);
            assert!(ctx.len() >= 4 && !tgt.is_empty());
            // Every masked cell is masked at every time step.
            for &i in &tgt {
                let cell = i % 16;
                assert!((0..8).all(|t| tgt.contains(&(t * 16 + cell))), "{i}");
            }
        }
        let m = sampler.sample(5, &mut rng);
        let (kc, kt) = (m.context[0].len(), m.target[0].len());
        for b in 0..5 {
            assert_eq!((m.context[b].len(), m.target[b].len()), (kc, kt));
            assert!(m.context[b].iter().all(|i| !m.target[b].contains(i)));
            assert!(m.context[b].windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn the_future_mask_hides_only_the_last_time_steps() {
        let cfg = MaskConfig {
            future: 0.25,
            ..MaskConfig::default()
        };
        let sampler = MaskSampler::new(cfg.clone(), (8, 4, 4)).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let m = sampler.sample(3, &mut rng);
        for b in 0..3 {
            // 8 x 0.25 = the last 2 time steps, every cell; the rest visible.
            assert_eq!(m.target[b], (96..128).collect::<Vec<i64>>());
            assert_eq!(m.context[b], (0..96).collect::<Vec<i64>>());
        }
        // At least one step hidden, at least one visible.
        for (future, hidden) in [(0.01, 1), (0.99, 7), (0.5, 4)] {
            let s = MaskSampler::new(
                MaskConfig {
                    future,
                    ..cfg.clone()
                },
                (8, 4, 4),
            )
            .unwrap();
            let (ctx, tgt) = s.future_mask();
            assert_eq!(tgt.len(), hidden * 16, "{future}");
            assert_eq!(ctx.len() + tgt.len(), 128);
            assert!(tgt.iter().all(|&i| i / 16 >= 8 - hidden as i64));
        }
        for bad in [1.0, -0.1, f64::NAN] {
            let e = MaskConfig {
                future: bad,
                ..cfg.clone()
            }
            .validate()
            .unwrap_err();
            assert!(e.contains("[method.masks] future"), "{e}");
        }
        assert!(MaskSampler::new(cfg, (1, 4, 4)).is_err());
    }

    #[test]
    fn content_weighting_matches_a_hand_computation() {
        let _g = crate::TORCH_RNG.lock();
        // The content of each tubelet: one clip of 4 frames of 8x8, the
        // background 0.2 (normalised), one bright 4x4 square in frames 0-1.
        let mut clip = vec![0.2f32; 4 * 64];
        for t in 0..2 {
            for r in 0..4 {
                for c in 4..8 {
                    clip[t * 64 + r * 8 + c] = 1.0;
                }
            }
        }
        // A second clip: a ramp, so the minimum is not the background value.
        let ramp: Vec<f32> = (0..4 * 64).map(|i| -1.0 + i as f32 / 128.0).collect();
        let clips =
            Tensor::from_slice(&[clip.clone(), ramp.clone()].concat()).view([2, 1, 4, 8, 8]);
        let c = tubelet_content(&clips, 2, 4);
        assert_eq!(c.size(), vec![2, 8]);
        // Token 1 = time step 0, row 0, col 1: the square, (1 - 0.2) / 2.
        assert!((c.double_value(&[0, 1]) - 0.4).abs() < 1e-6);
        for tok in [0, 2, 3, 4, 5, 6, 7] {
            assert!(c.double_value(&[0, tok]).abs() < 1e-6, "{tok}");
        }
        // The ramp: a tubelet's mean pixel, less the clip's minimum, halved.
        for tok in 0..8i64 {
            let (t0, r0, c0) = (tok / 4 * 2, tok % 4 / 2 * 4, tok % 2 * 4);
            let mut sum = 0.0f64;
            for t in t0..t0 + 2 {
                for r in r0..r0 + 4 {
                    for col in c0..c0 + 4 {
                        sum += f64::from(ramp[(t * 64 + r * 8 + col) as usize]) + 1.0;
                    }
                }
            }
            let want = sum / 32.0 / 2.0;
            assert!((c.double_value(&[1, tok]) - want).abs() < 1e-5, "{tok}");
        }
        // The weighted loss, by hand from the parts.
        tch::manual_seed(3);
        let cfg = VjepaConfig {
            content_weight: 0.5,
            ..tiny_cfg()
        };
        let m = Vjepa::new(Device::Cpu, &tiny_vit(), &cfg, 5).unwrap();
        let masks = m.masks(0, 2);
        let parts = m.parts(&clips, &masks);
        let raw = &parts.target_tokens;
        let mut per_token = Vec::new();
        let mut contents = Vec::new();
        for (b, tgt) in masks.target.iter().enumerate() {
            for (k, &tok) in tgt.iter().enumerate() {
                let h: Vec<f64> = (0..16)
                    .map(|d| raw.double_value(&[b as i64, tok, d]))
                    .collect();
                let mean = h.iter().sum::<f64>() / 16.0;
                let var = h.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 16.0;
                let l: f64 = h
                    .iter()
                    .enumerate()
                    .map(|(d, v)| {
                        let z = parts
                            .prediction
                            .double_value(&[b as i64, k as i64, d as i64]);
                        (z - (v - mean) / (var + 1e-5).sqrt()).abs()
                    })
                    .sum::<f64>()
                    / 16.0;
                per_token.push(l);
                contents.push(c.double_value(&[b as i64, tok]));
            }
        }
        let mean_c = contents.iter().sum::<f64>() / contents.len() as f64;
        let w: Vec<f64> = contents
            .iter()
            .map(|c| 0.5 + 0.5 * c / (mean_c + 1e-6))
            .collect();
        let want =
            w.iter().zip(&per_token).map(|(w, l)| w * l).sum::<f64>() / w.iter().sum::<f64>();
        let got = parts.loss.double_value(&[]);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // Uniform weighting (the default) is a different figure here.
        let uniform = per_token.iter().sum::<f64>() / per_token.len() as f64;
        assert!((uniform - want).abs() > 1e-4, "{uniform} {want}");
        assert!(VjepaConfig {
            content_weight: 1.5,
            ..tiny_cfg()
        }
        .validate()
        .unwrap_err()
        .contains("content_weight"));
    }

    #[test]
    fn the_loss_is_the_l1_distance_to_layer_normed_target_features() {
        let _g = crate::TORCH_RNG.lock();
        tch::manual_seed(3);
        let mut m = Vjepa::new(Device::Cpu, &tiny_vit(), &tiny_cfg(), 5).unwrap();
        let clips = Tensor::randn([2, 1, 4, 8, 8], (Kind::Float, Device::Cpu));
        let masks = m.masks(0, 2);
        let parts = m.parts(&clips, &masks);
        // The same figure computed independently, in f64, from the raw tokens.
        let (pred, raw) = (&parts.prediction, &parts.target_tokens);
        let (mut sum, mut count) = (0.0f64, 0usize);
        for (b, tgt) in masks.target.iter().enumerate() {
            for (k, &tok) in tgt.iter().enumerate() {
                let h: Vec<f64> = (0..16)
                    .map(|d| raw.double_value(&[b as i64, tok, d]))
                    .collect();
                let mean = h.iter().sum::<f64>() / 16.0;
                let var = h.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 16.0;
                for (d, v) in h.iter().enumerate() {
                    let target = (v - mean) / (var + 1e-5).sqrt();
                    let z = pred.double_value(&[b as i64, k as i64, d as i64]);
                    sum += (z - target).abs();
                    count += 1;
                }
            }
        }
        let want = sum / count as f64;
        let got = parts.loss.double_value(&[]);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // The target encoder gets no gradient; the context encoder and the
        // predictor do.
        parts.loss.backward();
        let vars = m.var_store().variables();
        let grad = |name: &str| vars[name].grad().defined();
        assert!(grad("encoder.patch_embed.proj.weight"));
        assert!(grad("predictor.predictor_proj.weight"));
        assert!(!grad("target_encoder.patch_embed.proj.weight"));
        // After a step the EMA moves the target toward the context encoder.
        tch::no_grad(|| {
            let _ = vars["encoder.norm.bias"].shallow_clone().fill_(1.0);
        });
        let comm = selfsup_core::distributed::SingleProcess;
        let ctx = StepCtx {
            step: 0,
            total_steps: 10,
            epoch: 0,
            steps_per_epoch: 10,
            comm: &comm,
        };
        m.after_step(&ctx);
        let t = vars["target_encoder.norm.bias"].double_value(&[0]);
        assert!((t - 0.002).abs() < 1e-6, "{t}");
        assert_eq!(m.embed(&clips).size(), vec![2, 16]);
    }
}
