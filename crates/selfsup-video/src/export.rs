//! The evaluated encoder -> `encoder.safetensors` (the tubelet ViT's
//! variables with the method's prefix stripped: `patch_embed.proj.*`,
//! `pos_embed`, `blocks.{i}.*`, `norm.*`) + `config.json` (the `[model]`
//! table, the method, and how to pool).
use crate::methods::VideoMethod;
use crate::model::VitConfig;
use selfsup_core::{Error, Result};
use std::path::Path;

/// The weights file of an export.
pub const WEIGHTS_FILE: &str = "encoder.safetensors";
/// The config file of an export.
pub const CONFIG_FILE: &str = "config.json";

/// Writes `method`'s evaluated encoder into `out`.
pub fn export_encoder(method: &dyn VideoMethod, model: &VitConfig, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let prefix = format!("{}.", method.encoder_prefix());
    let vs = method.var_store();
    let mut tensors: Vec<(String, tch::Tensor)> = vs
        .variables()
        .into_iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(&prefix).map(|n| {
                let v = v
                    .detach()
                    .to_device(tch::Device::Cpu)
                    .to_kind(tch::Kind::Float)
                    .contiguous();
                (n.to_string(), v)
            })
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    selfsup_core::tensor_io::save(&out.join(WEIGHTS_FILE), &tensors, Some(meta))?;
    let config = serde_json::json!({
        "architecture": "tubelet_vit",
        "method": method.name(),
        "image_size": model.image_size,
        "frames": model.frames,
        "in_channels": model.in_channels,
        "patch_size": model.patch_size,
        "tubelet": model.tubelet,
        "embed_dim": model.embed_dim,
        "depth": model.depth,
        "heads": model.heads,
        "mlp_ratio": model.mlp_ratio,
        "layer_norm_eps": 1e-6,
        "input": "grey clips [B, 1, T, H, W], (x / 255 - 0.5) / 0.5",
        "pooling": "mean of the final-normed tokens",
        "token_order": "time-major: t * rows * cols + r * cols + c",
    });
    let text = serde_json::to_string_pretty(&config)
        .map_err(|e| Error::Config(format!("export config: {e}")))?;
    selfsup_core::tensor_io::write_atomic(&out.join(CONFIG_FILE), text.as_bytes())
}
