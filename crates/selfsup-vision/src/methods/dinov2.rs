//! DINOv2's recipe (Oquab et al. 2023, arXiv:2304.07193) on a ViT: four
//! pieces, each switchable in `[method]`:
//! - DINO's image-level self-distillation on the class token (student on
//!   every view, global and local; EMA teacher on the two global views);
//! - iBOT's masked-patch self-distillation (Zhou et al. 2022): some of the
//!   student's global views lose blocks of patches (replaced by a learned
//!   mask token), and the student predicts, on each masked patch, the
//!   teacher's distribution for that patch seen unmasked
//!   ([`selfsup_core::loss::IbotPatchLoss`]; `ibot.weight = 0` turns it off);
//! - the KoLeo regulariser on the student's class tokens of each global
//!   view ([`selfsup_core::loss::koleo`]; `koleo_weight = 0` turns it off);
//! - Sinkhorn-Knopp centring of the teacher's logits, image and patch level
//!   (`loss.centering = "sinkhorn_knopp"`; `"center"` is DINO's moving
//!   center, one for the class tokens and one for the patches).
//!
//! Masks: each global view of each image is masked with probability
//! `ibot.mask_probability`, over a share of its patches drawn uniformly in
//! `ibot.mask_ratio`, as blocks (BEiT's generator: rectangles of random
//! area and aspect ratio in [1/3, 3] until the share is reached or 100
//! placements failed). Randomness comes from a ChaCha8 generator seeded
//! from torch's generator, which the trainer seeds every step.
//!
//! The exported and evaluated encoder is the teacher's, as DINOv2
//! evaluates it.
use super::check_views;
use super::dino::{DinoHead, DinoHeadConfig};
use crate::models::{EncoderConfig, PosEmbedInit, Vit};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use selfsup_core::ema::{EmaConfig, EmaTeacher};
use selfsup_core::loss::{koleo, Centering, DinoLoss, DinoLossConfig, IbotPatchLoss};
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

/// iBOT's part of the recipe (`[method] ibot = { ... }`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IbotConfig {
    /// Weight of the masked-patch loss (0: no masking, no patch loss).
    pub weight: f64,
    /// Chance that a global view of an image is masked (DINOv2: 0.5).
    pub mask_probability: f64,
    /// Share of a masked view's patches masked, drawn uniformly in this
    /// range (DINOv2: [0.1, 0.5]).
    pub mask_ratio: [f64; 2],
    /// A patch head of its own (`ibot_head.`) instead of sharing the DINO
    /// head (DINOv2's default shares it).
    pub separate_head: bool,
}

impl Default for IbotConfig {
    fn default() -> Self {
        Self {
            weight: 1.0,
            mask_probability: 0.5,
            mask_ratio: [0.1, 0.5],
            separate_head: false,
        }
    }
}

/// DINOv2 settings (the `[method]` table with `name = "dinov2"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dinov2Config {
    /// The DINO head (the iBOT head too, unless `ibot.separate_head`).
    pub head: DinoHeadConfig,
    /// Temperatures and centring, shared by the image and patch losses.
    pub loss: DinoLossConfig,
    /// Teacher momentum schedule.
    pub ema: EmaConfig,
    /// Epochs during which the heads' last layers are not trained.
    pub freeze_last_layer_epochs: f64,
    /// Weight of the image-level DINO loss (0 turns it off).
    pub dino_weight: f64,
    /// The masked-patch loss.
    pub ibot: IbotConfig,
    /// Weight of KoLeo on the student's class tokens (DINOv2: 0.1).
    pub koleo_weight: f64,
}

impl Default for Dinov2Config {
    fn default() -> Self {
        Self {
            head: DinoHeadConfig::default(),
            loss: DinoLossConfig {
                centering: Centering::SinkhornKnopp,
                ..DinoLossConfig::default()
            },
            ema: EmaConfig::default(),
            freeze_last_layer_epochs: 1.0,
            dino_weight: 1.0,
            ibot: IbotConfig::default(),
            koleo_weight: 0.1,
        }
    }
}

impl Dinov2Config {
    /// Refuses weights below 0, a recipe with no loss at all, a mask
    /// probability outside [0, 1] and a mask ratio range outside (0, 1) or
    /// reversed; errors name the `[method]` key.
    pub fn check_ranges(&self) -> std::result::Result<(), String> {
        use selfsup_core::trainer::non_negative;
        let k = |s: &str| format!("[method] {s}");
        self.loss.validate(&k("loss"))?;
        self.ema.validate(&k("ema"))?;
        non_negative(
            &k("freeze_last_layer_epochs"),
            self.freeze_last_layer_epochs,
        )?;
        non_negative(&k("dino_weight"), self.dino_weight)?;
        non_negative(&k("ibot.weight"), self.ibot.weight)?;
        non_negative(&k("koleo_weight"), self.koleo_weight)?;
        if self.dino_weight == 0.0 && self.ibot.weight == 0.0 {
            return Err(k(
                "dino_weight and ibot.weight are both 0: nothing would train the encoder \
                 (DINOv2: 1 and 1)",
            ));
        }
        let p = self.ibot.mask_probability;
        if !(0.0..=1.0).contains(&p) {
            return Err(format!(
                "{} = {p}: a probability, give it in [0, 1]",
                k("ibot.mask_probability")
            ));
        }
        let [lo, hi] = self.ibot.mask_ratio;
        if !(lo > 0.0 && lo <= hi && hi < 1.0) {
            return Err(format!(
                "{} = [{lo}, {hi}]: give 0 < low <= high < 1 (DINOv2: [0.1, 0.5])",
                k("ibot.mask_ratio")
            ));
        }
        Ok(())
    }
}

/// Block masks `[rows * cols]` (row-major, `true` = masked) covering
/// `target` patches where the placements allow (see the module docs).
pub(crate) fn block_mask<R: Rng>(rng: &mut R, rows: i64, cols: i64, target: i64) -> Vec<bool> {
    let n = (rows * cols).max(0) as usize;
    let mut mask = vec![false; n];
    let mut count = 0i64;
    let min_area = 4.min(target).max(1);
    for _ in 0..100 {
        let left_to_mask = target - count;
        if left_to_mask <= 0 {
            break;
        }
        let area = rng.gen_range(min_area.min(left_to_mask)..=left_to_mask) as f64;
        let aspect = rng.gen_range((1.0f64 / 3.0).ln()..=3.0f64.ln()).exp();
        let h = ((area * aspect).sqrt().round() as i64).max(1);
        let w = ((area / aspect).sqrt().round() as i64).max(1);
        if h > rows || w > cols {
            continue;
        }
        let top = rng.gen_range(0..=rows - h);
        let left = rng.gen_range(0..=cols - w);
        let cells: Vec<usize> = (top..top + h)
            .flat_map(|r| (left..left + w).map(move |c| (r * cols + c) as usize))
            .filter(|&i| !mask[i])
            .collect();
        let new = cells.len() as i64;
        if new == 0 || new > left_to_mask {
            continue;
        }
        for i in cells {
            mask[i] = true;
        }
        count += new;
    }
    mask
}

/// The DINOv2 method: student `encoder.`, `head.`, `ibot_head.` (when
/// separate), `mask_token`; teacher `teacher.*`; buffers `center`,
/// `patch_center` (used with `centering = "center"`).
pub struct Dinov2 {
    vs: nn::VarStore,
    encoder: Vit,
    head: DinoHead,
    ibot_head: Option<DinoHead>,
    mask_token: Tensor,
    t_encoder: Vit,
    t_head: DinoHead,
    t_ibot_head: Option<DinoHead>,
    ema: EmaTeacher,
    loss: DinoLoss,
    ibot_loss: IbotPatchLoss,
    center: Tensor,
    patch_center: Tensor,
    cfg: Dinov2Config,
    /// Teacher logits of the last step (class tokens, masked patches) for
    /// the centers.
    pending: Option<(Tensor, Option<Tensor>)>,
}

/// The student's or teacher's outputs on one global view.
struct ViewOut {
    /// Final-normed class token `[B, D]`.
    cls: Tensor,
    /// Final-normed patch tokens `[B, N, D]`.
    patches: Tensor,
}

impl Dinov2 {
    /// The exported encoder: the teacher's, as DINOv2 evaluates it.
    pub const ENCODER_PREFIX: &'static str = "teacher.encoder";

    /// Builds student and teacher on `device`; errors when `encoder` is not
    /// a ViT or a setting is out of range.
    pub fn new(
        device: Device,
        encoder: &EncoderConfig,
        in_channels: i64,
        cfg: &Dinov2Config,
    ) -> Result<Self> {
        cfg.check_ranges().map_err(Error::Config)?;
        let spec = encoder.vit_spec().ok_or_else(|| {
            Error::Config(format!(
                "DINOv2 masks patches and needs a ViT encoder ([model] arch = \"vit_tiny\" or \
                 \"vit_small\"), got arch = \"{}\"",
                encoder.arch()
            ))
        })?;
        spec.validate()?;
        if cfg.head.out_dim < 2 || cfg.head.bottleneck_dim < 1 {
            return Err(Error::Config(
                "[method] head: DINOv2 needs out_dim >= 2 and bottleneck_dim >= 1".into(),
            ));
        }
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let vit = |p: nn::Path| Vit::new(&p, spec, in_channels, PosEmbedInit::Learned);
        let d = spec.embed_dim;
        let enc = vit(&root / "encoder");
        let head = DinoHead::new(&(&root / "head"), d, &cfg.head);
        let separate = cfg.ibot.separate_head && cfg.ibot.weight > 0.0;
        let ibot_head = separate.then(|| DinoHead::new(&(&root / "ibot_head"), d, &cfg.head));
        let mask_token = root.zeros("mask_token", &[1, 1, d]);
        let t = &root / "teacher";
        let t_encoder = vit(&t / "encoder");
        let t_head = DinoHead::new(&(&t / "head"), d, &cfg.head);
        let t_ibot_head = separate.then(|| DinoHead::new(&(&t / "ibot_head"), d, &cfg.head));
        let mut pairs = vec![("encoder", "teacher.encoder"), ("head", "teacher.head")];
        if separate {
            pairs.push(("ibot_head", "teacher.ibot_head"));
        }
        let ema = EmaTeacher::with_prefixes(&vs, &pairs, cfg.ema.clone())?;
        let center = root.zeros_no_train("center", &[1, cfg.head.out_dim]);
        let patch_center = root.zeros_no_train("patch_center", &[1, cfg.head.out_dim]);
        Ok(Self {
            vs,
            encoder: enc,
            head,
            ibot_head,
            mask_token,
            t_encoder,
            t_head,
            t_ibot_head,
            ema,
            loss: DinoLoss::new(cfg.loss.clone()),
            ibot_loss: IbotPatchLoss {
                student_temp: cfg.loss.student_temp,
            },
            center,
            patch_center,
            cfg: cfg.clone(),
            pending: None,
        })
    }

    /// `vit` on `xs`, the patches where `mask` `[B, N]` is true replaced by
    /// the mask token (plus their position embedding).
    fn forward(vit: &Vit, xs: &Tensor, mask: Option<(&Tensor, &Tensor)>) -> ViewOut {
        let mut tokens = vit.patch_tokens(xs);
        if let Some((mask, token)) = mask {
            let (gh, gw) = vit.grid_of(xs);
            let masked = token + vit.patch_pos_embed(gh, gw);
            tokens = masked
                .expand_as(&tokens)
                .where_self(&mask.unsqueeze(-1), &tokens);
        }
        let n = tokens.size()[1];
        let out = vit.final_norm(&vit.run_blocks(&vit.prepend_cls(&tokens)));
        ViewOut {
            cls: out.select(1, 0),
            patches: out.narrow(1, 1, n),
        }
    }

    /// Masks `[B, N]` (bool, on `device`) for one global view of `b` images.
    fn masks(&self, rng: &mut ChaCha8Rng, b: i64, rows: i64, cols: i64, device: Device) -> Tensor {
        let n = rows * cols;
        let [lo, hi] = self.cfg.ibot.mask_ratio;
        let mut all = Vec::with_capacity((b * n).max(0) as usize);
        for _ in 0..b {
            if rng.gen::<f64>() < self.cfg.ibot.mask_probability {
                let ratio = rng.gen_range(lo..=hi);
                let target = ((ratio * n as f64).round() as i64).clamp(1, n - 1);
                all.extend(block_mask(rng, rows, cols, target));
            } else {
                all.extend(std::iter::repeat_n(false, n.max(0) as usize));
            }
        }
        Tensor::from_slice(&all).view([b, n]).to_device(device)
    }

    fn ibot_head(&self) -> &DinoHead {
        self.ibot_head.as_ref().unwrap_or(&self.head)
    }

    fn t_ibot_head(&self) -> &DinoHead {
        self.t_ibot_head.as_ref().unwrap_or(&self.t_head)
    }
}

/// Rows of `tokens` `[B, N, D]` where `mask` `[B, N]` is true, `[M, D]`.
fn masked_rows(tokens: &Tensor, mask: &Tensor) -> Tensor {
    let d = tokens.size()[2];
    let idx = mask.flatten(0, 1).nonzero().squeeze_dim(1);
    tokens.reshape([-1, d]).index_select(0, &idx)
}

impl Method for Dinov2 {
    fn name(&self) -> &'static str {
        "dinov2"
    }
    fn target(&self) -> TargetKind {
        TargetKind::Teacher
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<LossOut> {
        check_views("DINOv2", batch, 2, usize::MAX)?;
        let freeze = ctx.epoch_f() < self.cfg.freeze_last_layer_epochs;
        let tt = self.loss.config().teacher_temp_at(ctx.epoch_f());
        let device = self.vs.device();
        let globals = &batch.views[..2];
        let b = globals[0].size()[0];
        let use_ibot = self.cfg.ibot.weight > 0.0;
        let masks: Vec<Option<Tensor>> = if use_ibot {
            let seed = Tensor::randint(i64::MAX, [1], (Kind::Int64, Device::Cpu)).int64_value(&[0]);
            let mut rng = ChaCha8Rng::seed_from_u64(seed as u64);
            let mut masks: Vec<Option<Tensor>> = globals
                .iter()
                .map(|v| {
                    let (rows, cols) = self.encoder.grid_of(v);
                    Some(self.masks(&mut rng, b, rows, cols, device))
                })
                .collect();
            // At least one masked image per step, so every process of a
            // data-parallel run takes the patch loss's collectives.
            if let Some(Some(first)) = masks.first_mut() {
                if first.sum(Kind::Int64).int64_value(&[]) == 0 {
                    let (rows, cols) = self.encoder.grid_of(&globals[0]);
                    let n = rows * cols;
                    let target = ((self.cfg.ibot.mask_ratio[0] * n as f64).round() as i64)
                        .clamp(1, (n - 1).max(1));
                    let one = Tensor::from_slice(&block_mask(&mut rng, rows, cols, target))
                        .to_device(device);
                    first.get(0).copy_(&one);
                }
            }
            masks
        } else {
            vec![None, None]
        };

        // Teacher: the global views, unmasked.
        let teacher: Vec<ViewOut> = tch::no_grad(|| {
            globals
                .iter()
                .map(|v| Self::forward(&self.t_encoder, v, None))
                .collect()
        });
        // Student: the global views (masked), then the local ones.
        let student_global: Vec<ViewOut> = globals
            .iter()
            .zip(&masks)
            .map(|(v, m)| {
                Self::forward(&self.encoder, v, m.as_ref().map(|m| (m, &self.mask_token)))
            })
            .collect();
        // The weighted terms, summed at the end.
        let mut parts: Vec<Tensor> = Vec::new();
        let mut terms = vec![("teacher_temp", tt)];

        // Image level.
        let t_cls_logits: Vec<Tensor> = tch::no_grad(|| {
            teacher
                .iter()
                .map(|o| self.t_head.forward(&o.cls, true, false))
                .collect()
        });
        if self.cfg.dino_weight > 0.0 {
            let mut student: Vec<Tensor> = student_global
                .iter()
                .map(|o| self.head.forward(&o.cls, true, freeze))
                .collect();
            for v in &batch.views[2..] {
                let o = Self::forward(&self.encoder, v, None);
                student.push(self.head.forward(&o.cls, true, freeze));
            }
            // Sinkhorn-Knopp runs over both global views' batch at once.
            let both = Tensor::cat(&t_cls_logits, 0);
            let targets = self
                .loss
                .teacher_targets(&both, &self.center, tt, ctx.comm)
                .split(b, 0);
            let dino = self.loss.loss_to_targets(&student, &targets);
            terms.push(("dino", dino.double_value(&[])));
            let entropy = tch::no_grad(|| {
                let p = &targets[0];
                (-(p * p.clamp_min(1e-12).log()).sum_dim_intlist(
                    [-1i64].as_slice(),
                    false,
                    Kind::Float,
                ))
                .mean(Kind::Float)
                .double_value(&[])
            });
            terms.push(("teacher_entropy", entropy));
            parts.push(dino * self.cfg.dino_weight);
        }

        // Patch level.
        let mut t_patch_logits = None;
        if use_ibot {
            let mask = Tensor::cat(&masks.iter().flatten().collect::<Vec<_>>(), 0);
            let masked = mask.sum(Kind::Int64).int64_value(&[]);
            terms.push(("masked_share", masked as f64 / mask.numel().max(1) as f64));
            if masked > 0 {
                let s_patches = Tensor::cat(
                    &student_global
                        .iter()
                        .map(|o| o.patches.shallow_clone())
                        .collect::<Vec<_>>(),
                    0,
                );
                let t_patches = Tensor::cat(
                    &teacher
                        .iter()
                        .map(|o| o.patches.shallow_clone())
                        .collect::<Vec<_>>(),
                    0,
                );
                let s_logits =
                    self.ibot_head()
                        .forward(&masked_rows(&s_patches, &mask), true, freeze);
                let t_logits = tch::no_grad(|| {
                    self.t_ibot_head()
                        .forward(&masked_rows(&t_patches, &mask), true, false)
                });
                let targets =
                    self.loss
                        .teacher_targets(&t_logits, &self.patch_center, tt, ctx.comm);
                let weights = IbotPatchLoss::weights(&mask);
                let ibot =
                    self.ibot_loss
                        .loss(&s_logits, &targets, &weights, mask.size()[0] as usize);
                terms.push(("ibot", ibot.double_value(&[])));
                parts.push(ibot * self.cfg.ibot.weight);
                t_patch_logits = Some(t_logits);
            }
        }

        // KoLeo on each global view's class tokens.
        if self.cfg.koleo_weight > 0.0 {
            let k = student_global
                .iter()
                .map(|o| koleo(&o.cls))
                .fold(Tensor::zeros([], (Kind::Float, device)), |a, l| a + l);
            terms.push(("koleo", k.double_value(&[])));
            parts.push(k * self.cfg.koleo_weight);
        }
        if self.cfg.loss.centering == Centering::Center {
            self.pending = Some((Tensor::cat(&t_cls_logits, 0), t_patch_logits));
        }
        let loss = parts
            .into_iter()
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| Tensor::zeros([], (Kind::Float, device)));
        Ok(LossOut { loss, terms })
    }
    fn after_step(&mut self, ctx: &StepCtx) {
        self.ema.update(ctx.step, ctx.total_steps);
        let Some((cls, patches)) = self.pending.take() else {
            return;
        };
        let c = self.loss.updated_center(&self.center, &[cls], ctx.comm);
        tch::no_grad(|| self.center.shallow_clone().copy_(&c));
        if let Some(p) = patches {
            let c = self.loss.updated_center(&self.patch_center, &[p], ctx.comm);
            tch::no_grad(|| self.patch_center.shallow_clone().copy_(&c));
        }
    }
    /// The teacher's class token, as DINOv2 evaluates it.
    fn embed(&self, xs: &Tensor) -> Tensor {
        Self::forward(&self.t_encoder, xs, None).cls
    }
    /// The teacher head's bottleneck output.
    fn project(&self, xs: &Tensor) -> Tensor {
        self.t_head.bottleneck(&self.embed(xs), false)
    }
}

#[cfg(test)]
mod tests;
