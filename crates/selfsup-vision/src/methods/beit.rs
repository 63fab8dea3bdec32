//! BEiT, BERT pre-training of image transformers (Bao et al. 2021,
//! arXiv:2106.08254): blocks of about 40 % of an image's patches are
//! replaced by a learned mask token, and the ViT predicts, on each masked
//! patch, the discrete code a frozen visual tokenizer gives that patch.
//!
//! - Tokenizer: selfsup's own VQ tokenizer ([`super::vq_tokenizer`]),
//!   trained first (`[method] name = "vq_tokenizer"`) and named here by its
//!   run or export folder (`[method] tokenizer`). Before anything trains,
//!   its `config.json` is checked against this run: patch size, image size
//!   and channels against `[model]` and the data, its codebook size against
//!   `[method] vocab_size`, its input normalisation against the data's; a
//!   mismatch is refused with the file, the key and the fix. The tokenizer
//!   sees the same (augmented, normalised) view as the ViT, unmasked.
//! - Masks: BEiT's blockwise masking (rectangles of random area and aspect
//!   ratio in [1/3, 3] until `round(mask_ratio * N)` patches are masked or
//!   100 placements failed), the generator DINOv2's iBOT masks use, from a
//!   ChaCha8 generator seeded from torch's generator (which the trainer
//!   seeds every step).
//! - Encoder: the ViT under `encoder.` (timm's names, learned absolute
//!   position embedding); masked patches become `mask_token` plus their
//!   position embedding.
//! - Head: `lm_head`, a linear layer from the final-normed patch tokens to
//!   the `vocab_size` codes; the loss ([`masked_token_loss`]) is the
//!   cross-entropy on the masked patches only, averaged over them.
//!
//! Only the first view of a batch is trained on. The representation
//! ([`Method::embed`]) is the mean of the final-normed patch tokens of the
//! unmasked image (BEiT's linear probes read averaged patch tokens). The
//! export writes the encoder with timm's `Beit` names
//! ([`crate::export_beit`]).
use super::dinov2::block_mask;
use super::vq_tokenizer::FrozenTokenizer;
use crate::data::Normalize;
use crate::models::vit::{self, vit_linear};
use crate::models::{EncoderConfig, PosEmbedInit, Vit};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tch::nn::{self, Init};
use tch::{Device, Kind, Tensor};

/// BEiT settings (the `[method]` table with `name = "beit"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BeitConfig {
    /// The VQ tokenizer: its run folder (with `export/`) or export folder
    /// (relative paths from the current directory).
    pub tokenizer: PathBuf,
    /// Codes the head predicts: must equal the tokenizer's `codebook_size`.
    pub vocab_size: i64,
    /// Share of each image's patches masked (BEiT: 75 of 196, about 0.4).
    pub mask_ratio: f64,
}

impl Default for BeitConfig {
    fn default() -> Self {
        Self {
            tokenizer: PathBuf::from("runs/vq_tokenizer-cpu"),
            vocab_size: 512,
            mask_ratio: 0.4,
        }
    }
}

impl BeitConfig {
    /// Refuses settings that cannot train; errors name the `[method]` key.
    pub fn check_ranges(&self) -> std::result::Result<(), String> {
        if !(self.mask_ratio > 0.0 && self.mask_ratio < 1.0) {
            return Err(format!(
                "[method] mask_ratio = {}: must be above 0 and below 1 (BEiT: 0.4)",
                self.mask_ratio
            ));
        }
        if !(2..=super::vq_tokenizer::MAX_CODEBOOK).contains(&self.vocab_size) {
            return Err(format!(
                "[method] vocab_size = {}: must be between 2 and {}",
                self.vocab_size,
                super::vq_tokenizer::MAX_CODEBOOK
            ));
        }
        Ok(())
    }
}

/// The masked rows of `xs` `[B, N, ...]` where `mask` `[B, N]` (bool) is
/// true, in row-major order: `[M, ...]`.
pub fn masked_rows(xs: &Tensor, mask: &Tensor) -> Tensor {
    let size = xs.size();
    let rest: Vec<i64> = size.iter().skip(2).copied().collect();
    let mut shape = vec![-1];
    shape.extend(&rest);
    let mut m = mask.shallow_clone();
    for _ in 0..rest.len() {
        m = m.unsqueeze(-1);
    }
    xs.masked_select(&m).reshape(shape)
}

/// BEiT's loss: the mean cross-entropy of `logits` `[M, V]` against the
/// tokenizer's codes `targets` `[M]` (int64), and the share of the `M`
/// masked patches whose code is the arg-max.
pub fn masked_token_loss(logits: &Tensor, targets: &Tensor) -> (Tensor, f64) {
    let loss = logits
        .to_kind(Kind::Float)
        .cross_entropy_for_logits(targets);
    let hit = tch::no_grad(|| {
        logits
            .argmax(-1, false)
            .eq_tensor(targets)
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[])
    });
    (loss, hit)
}

/// The BEiT method (see the module documentation).
pub struct Beit {
    vs: nn::VarStore,
    encoder: Vit,
    mask_token: Tensor,
    lm_head: nn::Linear,
    tokenizer: FrozenTokenizer,
    mask_ratio: f64,
}

impl Beit {
    /// The variable prefix of the encoder (what gets exported).
    pub const ENCODER_PREFIX: &'static str = "encoder";

    /// Loads the tokenizer, checks it against this run (see the module
    /// documentation) and builds the ViT and the head on `device`.
    pub fn new(
        device: Device,
        encoder: &EncoderConfig,
        in_channels: i64,
        cfg: &BeitConfig,
    ) -> Result<Self> {
        let spec = encoder.vit_spec().ok_or_else(|| {
            Error::Config(format!(
                "BEiT masks patches and needs a ViT encoder ([model] arch = \"vit_tiny\" or \
                 \"vit_small\"), got arch = \"{}\"",
                encoder.arch()
            ))
        })?;
        spec.validate()?;
        cfg.check_ranges().map_err(Error::Config)?;
        let tokenizer = FrozenTokenizer::load(&cfg.tokenizer, device)?;
        check_tokenizer(&tokenizer, spec, in_channels, cfg)?;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let enc = Vit::new(
            &(&root / Self::ENCODER_PREFIX),
            spec,
            in_channels,
            PosEmbedInit::Learned,
        );
        Ok(Self {
            mask_token: root.var(
                "mask_token",
                &[1, 1, spec.embed_dim],
                Init::Randn {
                    mean: 0.0,
                    stdev: vit::INIT_STD,
                },
            ),
            lm_head: vit_linear(&root / "lm_head", spec.embed_dim, cfg.vocab_size),
            encoder: enc,
            tokenizer,
            mask_ratio: cfg.mask_ratio,
            vs,
        })
    }

    /// The encoder.
    pub fn encoder(&self) -> &Vit {
        &self.encoder
    }

    /// The frozen tokenizer.
    pub fn tokenizer(&self) -> &FrozenTokenizer {
        &self.tokenizer
    }

    /// Block masks `[B, rows * cols]` (bool, on `device`), about
    /// `mask_ratio` of the patches each, at least one patch in the batch.
    pub fn masks(&self, b: i64, rows: i64, cols: i64, device: Device) -> Tensor {
        let seed = Tensor::randint(i64::MAX, [1], (Kind::Int64, Device::Cpu)).int64_value(&[0]);
        let mut rng = ChaCha8Rng::seed_from_u64(seed as u64);
        let n = rows * cols;
        let target = ((self.mask_ratio * n as f64).round() as i64).clamp(1, (n - 1).max(1));
        let mut all = Vec::with_capacity((b * n).max(0) as usize);
        for _ in 0..b {
            all.extend(block_mask(&mut rng, rows, cols, target));
        }
        if !all.iter().any(|&m| m) {
            if let Some(first) = all.first_mut() {
                *first = true;
            }
        }
        Tensor::from_slice(&all).reshape([b, n]).to_device(device)
    }

    /// Final-normed patch tokens `[B, N, D]` of `xs` with the patches where
    /// `mask` `[B, N]` is true replaced by the mask token.
    pub fn masked_patch_tokens(&self, xs: &Tensor, mask: &Tensor) -> Tensor {
        let tokens = self.encoder.patch_tokens(xs);
        let (gh, gw) = self.encoder.grid_of(xs);
        let masked = &self.mask_token + self.encoder.patch_pos_embed(gh, gw);
        let tokens = masked
            .expand_as(&tokens)
            .where_self(&mask.unsqueeze(-1), &tokens);
        let n = tokens.size()[1];
        let out = self
            .encoder
            .final_norm(&self.encoder.run_blocks(&self.encoder.prepend_cls(&tokens)));
        out.narrow(1, 1, n)
    }
}

/// Refuses a tokenizer that does not fit the run: the error names the
/// tokenizer's `config.json`, the key and the fix.
fn check_tokenizer(
    tok: &FrozenTokenizer,
    spec: crate::models::VitSpec,
    in_channels: i64,
    cfg: &BeitConfig,
) -> Result<()> {
    let arch = tok.net().arch();
    let file = tok.config_file();
    let retrain = "or train a tokenizer for this run (configs/vision/vq_tokenizer-cpu.toml with \
                   the same [model] and data) and point [method] tokenizer at it";
    let mismatch = |key: &str, theirs: String, ours: String, fix: String| {
        Error::Config(format!(
            "BEiT tokenizer {}: \"arch\".{key} = {theirs} does not match this run's {ours}: \
             {fix}, {retrain}",
            file.display()
        ))
    };
    if arch.patch_size != spec.patch_size {
        return Err(mismatch(
            "patch_size",
            arch.patch_size.to_string(),
            format!("[model] patch_size = {}", spec.patch_size),
            format!("set [model] patch_size = {}", arch.patch_size),
        ));
    }
    if arch.image_size != spec.image_size {
        return Err(mismatch(
            "image_size",
            arch.image_size.to_string(),
            format!("[model] image_size = {}", spec.image_size),
            format!("set [model] image_size = {}", arch.image_size),
        ));
    }
    if arch.grid() != spec.grid() {
        return Err(mismatch(
            "grid",
            arch.grid().to_string(),
            format!("patch grid {}", spec.grid()),
            "use the same patch and image size".into(),
        ));
    }
    if arch.in_channels != in_channels {
        return Err(mismatch(
            "in_channels",
            arch.in_channels.to_string(),
            format!("{in_channels}-channel images"),
            "use a tokenizer trained on the same data".into(),
        ));
    }
    if arch.codebook_size != cfg.vocab_size {
        return Err(mismatch(
            "codebook_size",
            arch.codebook_size.to_string(),
            format!("[method] vocab_size = {}", cfg.vocab_size),
            format!("set [method] vocab_size = {}", arch.codebook_size),
        ));
    }
    let data_norm = Normalize::for_channels(in_channels.max(0) as usize);
    if tok.normalize() != &data_norm {
        return Err(Error::Config(format!(
            "BEiT tokenizer {}: \"normalize\" = {:?} / {:?} is not the normalisation of this \
             run's images ({:?} / {:?}): {retrain}",
            file.display(),
            tok.normalize().mean,
            tok.normalize().std,
            data_norm.mean,
            data_norm.std
        )));
    }
    Ok(())
}

impl Method for Beit {
    fn name(&self) -> &'static str {
        "beit"
    }
    fn target(&self) -> TargetKind {
        TargetKind::MaskedContent
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, _ctx: &StepCtx) -> Result<LossOut> {
        let xs = batch
            .views
            .first()
            .ok_or_else(|| Error::Config("BEiT needs at least one view per image".into()))?;
        let spec = self.encoder.spec();
        let (gh, gw) = self.encoder.grid_of(xs);
        if (gh, gw) != (spec.grid(), spec.grid()) {
            return Err(Error::Config(format!(
                "BEiT: views of {:?} give a {gh}x{gw} patch grid, the tokenizer codes a {}x{} \
                 one (model.image_size = {}): set [augment] crop size to model.image_size",
                &xs.size()[2..],
                spec.grid(),
                spec.grid(),
                spec.image_size
            )));
        }
        let codes = self.tokenizer.net().codes(xs).flatten(1, 2);
        let mask = self.masks(batch.len(), gh, gw, xs.device());
        let patches = self.masked_patch_tokens(xs, &mask);
        let logits = masked_rows(&patches, &mask).apply(&self.lm_head);
        let targets = masked_rows(&codes, &mask);
        let (loss, accuracy) = masked_token_loss(&logits, &targets);
        let share = mask
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[]);
        Ok(LossOut {
            loss,
            terms: vec![("masked token accuracy", accuracy), ("masked share", share)],
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
mod tests;
