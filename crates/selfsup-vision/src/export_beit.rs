//! A ViT encoder exported with the names of timm's `Beit` (BEiT's
//! encoder), so that
//!
//! ```python
//! model = timm.create_model('beit_base_patch16_224', pretrained=False, **config['timm']['kwargs'])
//! model.load_state_dict(safetensors.torch.load_file('model.safetensors'), strict=True)
//! ```
//!
//! loads it and computes the same features (`benchmarks/check_timm_beit_export.py`).
//!
//! The timm configuration is the one that is selfsup's ViT: learned absolute
//! position embedding (`use_abs_pos_emb=True`), no relative position bias
//! (`use_rel_pos_bias=False`, `use_shared_rel_pos_bias=False`), no layer
//! scale (`init_values=0.0`: `create_model` drops `None` keyword arguments,
//! which would leave `beit_base_patch16_224`'s 0.1), the class token as the feature
//! (`global_pool='token'`: the final norm is `norm`, not `fc_norm`),
//! `num_classes=0`, and the sizes of the preset.
//!
//! Names: every variable keeps timm's `VisionTransformer` name except the
//! attention bias: timm's `Beit` has `attn.q_bias` and `attn.v_bias` and no
//! key bias (a bias on the keys adds the same amount to every score of a
//! query, which the softmax removes), so `attn.qkv.bias` `[3D]` is written as
//! its first and last thirds and the middle one is dropped; features are
//! unchanged.
use crate::models::VitSpec;
use selfsup_core::{tensor_io, Error, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use tch::{nn, Kind, Tensor};

/// `format` of the `config.json` of a timm `Beit` export.
pub const BEIT_EXPORT_FORMAT: &str = "selfsup-timm-beit-v1";
/// The timm model name the export is built with (its sizes are overridden).
pub const TIMM_BEIT_MODEL: &str = "beit_base_patch16_224";

/// The keyword arguments of `timm.create_model(TIMM_BEIT_MODEL, ...)` for a
/// ViT of `spec` on `in_channels`-channel images.
pub fn timm_beit_kwargs(spec: VitSpec, in_channels: i64) -> Value {
    json!({
        "img_size": spec.image_size,
        "patch_size": spec.patch_size,
        "in_chans": in_channels,
        "embed_dim": spec.embed_dim,
        "depth": spec.depth,
        "num_heads": spec.heads,
        "num_classes": 0,
        "global_pool": "token",
        "use_abs_pos_emb": true,
        "use_rel_pos_bias": false,
        "use_shared_rel_pos_bias": false,
        "init_values": 0.0,
    })
}

/// The variables of the ViT under `prefix` in `vs`, with timm `Beit`
/// names (see the module documentation), float32 on the CPU.
pub fn beit_state_dict(vs: &nn::VarStore, prefix: &str) -> Result<Vec<(String, Tensor)>> {
    let start = format!("{prefix}.");
    let mut out = Vec::new();
    for (name, v) in vs.variables() {
        let Some(key) = name.strip_prefix(&start) else {
            continue;
        };
        let v = v
            .detach()
            .to_device(tch::Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous();
        if let Some(block) = key.strip_suffix("attn.qkv.bias") {
            let d3 = v.size().first().copied().unwrap_or(0);
            if d3 % 3 != 0 || d3 == 0 {
                return Err(Error::Config(format!(
                    "{name}: a qkv bias of {d3} values is not three equal parts"
                )));
            }
            let d = d3 / 3;
            out.push((
                format!("{block}attn.q_bias"),
                v.narrow(0, 0, d).contiguous(),
            ));
            out.push((
                format!("{block}attn.v_bias"),
                v.narrow(0, 2 * d, d).contiguous(),
            ));
        } else {
            out.push((key.to_string(), v));
        }
    }
    if out.is_empty() {
        return Err(Error::Config(format!(
            "no variable under \"{prefix}.\" to export as a timm Beit"
        )));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Writes `model.safetensors` (timm `Beit` names) and `config.json`
/// (`format`, the `timm` recipe, the caller's `info` fields) into `dir`;
/// the input channels are read from the patch embedding.
pub fn export_beit(
    vs: &nn::VarStore,
    prefix: &str,
    spec: VitSpec,
    dir: &Path,
    info: &Value,
) -> Result<()> {
    let tensors = beit_state_dict(vs, prefix)?;
    let in_channels = tensors
        .iter()
        .find(|(k, _)| k == "patch_embed.proj.weight")
        .and_then(|(_, w)| w.size().get(1).copied())
        .ok_or_else(|| {
            Error::Config(format!(
                "no \"{prefix}.patch_embed.proj.weight\": not a ViT, cannot export as a timm Beit"
            ))
        })?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    tensor_io::save(&dir.join("model.safetensors"), &tensors, Some(meta))?;
    let mut cfg = json!({
        "format": BEIT_EXPORT_FORMAT,
        "timm": {
            "model_name": TIMM_BEIT_MODEL,
            "kwargs": timm_beit_kwargs(spec, in_channels),
            "python": format!(
                "timm.create_model('{TIMM_BEIT_MODEL}', pretrained=False, **config['timm']['kwargs'])\
                 .load_state_dict(safetensors.torch.load_file('model.safetensors'), strict=True)"
            ),
            "features": "the final-normed class token (global_pool='token')",
        },
        "check": "benchmarks/check_timm_beit_export.py",
    });
    if let (Some(dst), Value::Object(src)) = (cfg.as_object_mut(), info.clone()) {
        for (k, v) in src {
            dst.entry(k).or_insert(v);
        }
    }
    let text = serde_json::to_string_pretty(&cfg)
        .map_err(|e| Error::Config(format!("timm Beit config.json: {e}")))?;
    tensor_io::write_atomic(&dir.join("config.json"), text.as_bytes())
}

#[cfg(test)]
mod tests;
