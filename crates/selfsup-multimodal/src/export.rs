//! Export of the dual encoder: `model.safetensors`, `config.json` and the
//! tokenizer files (`tokenizer.json`, `vocab.txt`).
//!
//! Names follow HF transformers' `CLIPModel` where the architecture is
//! CLIP's own: `visual_projection.weight` `[E, D_image]`,
//! `text_projection.weight` `[E, D_text]`, `logit_scale` (scalar) and the
//! tower prefixes `vision_model.` / `text_model.`. Below the prefixes the
//! towers are selfsup's, and they are not CLIP's transformers:
//!
//! - `vision_model.*` holds a selfsup vision encoder with torchvision's
//!   (small CNN, ResNet) or timm's (ViT) names, not `CLIPVisionTransformer`'s
//!   (`embeddings.patch_embedding`, `pre_layrnorm`, `encoder.layers.N.*`):
//!   strip the prefix and the weights load into the torchvision / timm model
//!   `config.json` describes (as selfsup-vision's own export);
//! - `text_model.bert.*` is a BERT encoder with `BertModel`'s names after
//!   `text_model.` (post-norm, learned positions, token types, mean pooling),
//!   not `CLIPTextTransformer` (pre-norm, causal mask, EOS pooling): strip
//!   `text_model.` and it loads into `BertModel` (`bert.` prefix) /
//!   `BertForMaskedLM` without its MLM head (not exported: CLIP never trains it).
//!
//! `benchmarks/check_hf_clip_export.py` checks exactly this against
//! transformers. `config.json` holds HF-style fields (`projection_dim`,
//! `logit_scale_init_value`, `text_config`) and, under `selfsup`, what
//! [`crate::embed`] needs to rebuild the model.
use crate::method::{Clip, ClipConfig};
use crate::model::TEXT_PREFIX;
use selfsup_core::method::Method;
use selfsup_core::tensor_io;
use selfsup_core::{Error, Result};
use selfsup_text::model::BertConfig;
use selfsup_text::tokenizer::TextTokenizer;
use selfsup_vision::data::Normalize;
use selfsup_vision::models::EncoderConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Weights file inside an export folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Description file inside an export folder.
pub const CONFIG_FILE: &str = "config.json";
/// `format` of `config.json`.
pub const EXPORT_FORMAT: &str = "selfsup-clip-v1";

/// What rebuilding the model needs (`config.json` -> `selfsup`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportMeta {
    pub vision: EncoderConfig,
    pub text: BertConfig,
    pub embed_dim: i64,
    /// Side of the square RGB images the image tower was trained on.
    pub image_size: usize,
    /// Per-channel normalisation of the images (after scaling to [0, 1]).
    pub normalize: Normalize,
    /// Caption tokens, `[CLS]` and `[SEP]` included.
    pub max_len: usize,
    pub clip: ClipConfig,
}

/// Whether a variable is exported (BERT's unused MLM head is not).
pub fn is_exported(name: &str) -> bool {
    !name.starts_with(&format!("{TEXT_PREFIX}.cls."))
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::Config(e.to_string()))?;
    tensor_io::write_atomic(path, text.as_bytes())
}

/// Writes the model, its description and the tokenizer into `dir`.
pub fn export_clip(clip: &Clip, tok: &TextTokenizer, meta: &ExportMeta, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    tensor_io::save_pytorch_weights(&dir.join(WEIGHTS_FILE), clip.var_store(), is_exported)?;
    let mut text_config = meta.text.hf_config_json();
    text_config["architectures"] = serde_json::json!(["BertModel"]);
    let cfg = serde_json::json!({
        "format": EXPORT_FORMAT,
        "architectures": ["SelfsupClipModel"],
        "model_type": "selfsup-clip",
        "projection_dim": meta.embed_dim,
        "logit_scale_init_value": (1.0 / meta.clip.init_temperature).ln(),
        "logit_scale": clip.model.scale_value().ln(),
        "text_config": text_config,
        "text_pooling": "mean over non-padding tokens of the last hidden state",
        "vision_config": {
            "selfsup_encoder": meta.vision,
            "in_channels": 3,
            "image_size": meta.image_size,
            "out_dim": clip.model.tower.out_dim(),
            "normalize": meta.normalize,
            "preprocess": "RGB (alpha over white), resized to image_size x image_size (bilinear), /255, normalised per channel",
        },
        "hf_clip_names": {
            "same_as_CLIPModel": ["visual_projection.weight", "text_projection.weight", "logit_scale"],
            "vision_model": "selfsup vision encoder (torchvision/timm names after the prefix), not CLIPVisionTransformer",
            "text_model": "BERT (BertModel names after `text_model.`), not CLIPTextTransformer",
        },
        "selfsup": meta,
    });
    write_json(&dir.join(CONFIG_FILE), &cfg)?;
    tok.save(dir).map_err(Error::from)
}

/// Loads an exported `model.safetensors` into `clip`: every exported
/// variable must be in the file with its shape and the file must hold
/// nothing else.
pub fn load_weights(clip: &Clip, file: &Path) -> Result<()> {
    let loaded = tensor_io::load(file)?.tensors;
    let vars = clip.var_store().variables();
    let bad = |reason: String| Error::Checkpoint {
        path: file.to_path_buf(),
        reason,
    };
    let missing: Vec<&String> = vars
        .keys()
        .filter(|k| is_exported(k) && !loaded.contains_key(*k))
        .collect();
    let unexpected: Vec<&String> = loaded.keys().filter(|k| !vars.contains_key(*k)).collect();
    if !missing.is_empty() || !unexpected.is_empty() {
        return Err(bad(format!(
            "does not fit the model: missing {missing:?}, unexpected {unexpected:?}"
        )));
    }
    tch::no_grad(|| {
        for (name, t) in &loaded {
            let mut v = vars[name].shallow_clone();
            if v.size() != t.size() {
                return Err(bad(format!(
                    "{name}: file {:?}, model {:?}",
                    t.size(),
                    v.size()
                )));
            }
            v.f_copy_(t)?;
        }
        Ok(())
    })
}
