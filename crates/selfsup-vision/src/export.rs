//! Exporting a trained encoder so PyTorch users can load it, and loading such
//! an export back.
//!
//! [`export_encoder`] writes two files into a folder:
//!
//! - `model.safetensors`: the encoder's variables with the var-store prefix
//!   stripped, i.e. torchvision's state-dict keys for the ResNets and timm's
//!   `VisionTransformer` keys for the ViTs, plus an
//!   int64 scalar `<bn>.num_batches_tracked` for every batch norm, so
//!   `model.load_state_dict(safetensors.torch.load_file(...), strict=True)`
//!   sees exactly the keys it expects;
//! - `config.json`: what the weights are (`arch`, `stem`, `in_channels`,
//!   `out_dim`; for a ViT also `patch_size`, `image_size`, `embed_dim`,
//!   `depth`, `heads`), how to build the matching torchvision model
//!   (`torchvision`) or timm model (`timm`), and the caller's own fields
//!   (method, input normalisation, ...).
//!
//! `benchmarks/check_torchvision_export.py` loads an export into torchvision
//! and compares its features with selfsup's; `benchmarks/check_timm_export.py`
//! does the same for a ViT with timm.
//!
//! A ViT's head count cannot be read from its weights: when the caller's
//! `model` field is a ViT table it is taken from there, else it is guessed
//! as timm's (3 for width 192, 6 for 384, otherwise width / 64).
use crate::models::{EncoderConfig, Stem, VitOptions, VitSpec, VIT_SMALL, VIT_TINY};
use selfsup_core::tensor_io;
use selfsup_core::{Error, Result};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::{nn, Tensor};

/// File name of the exported weights inside the export folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File name of the exported description inside the export folder.
pub const CONFIG_FILE: &str = "config.json";
/// Value of `format` in `config.json`.
pub const EXPORT_FORMAT: &str = "selfsup-encoder-v1";

/// How many names an error lists per kind of problem before "and N more".
const MAX_LISTED: usize = 10;

/// What [`export_encoder`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportReport {
    /// `out_dir/model.safetensors`.
    pub weights: PathBuf,
    /// `out_dir/config.json`.
    pub config: PathBuf,
    /// Tensors in the weights file (`num_batches_tracked` included).
    pub tensors: usize,
    /// Size of the weights file in bytes.
    pub bytes: u64,
    /// The encoder the weights were recognised as.
    pub encoder: IdentifiedEncoder,
}

/// An encoder recognised from its variable names and shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifiedEncoder {
    /// Architecture (and stem / channels) as a `[model]` table would say it.
    pub config: EncoderConfig,
    /// Channels of the images it takes.
    pub in_channels: i64,
}

impl IdentifiedEncoder {
    /// Width of the features.
    pub fn out_dim(&self) -> i64 {
        self.config.out_dim()
    }
}

impl std::fmt::Display for IdentifiedEncoder {
    /// `resnet18 (cifar stem, 1 input channel)`, `small_cnn (channels [32, 64], 3 input channels)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = if self.in_channels == 1 { "" } else { "s" };
        let detail = match &self.config {
            EncoderConfig::SmallCnn { channels } => format!("channels {channels:?}"),
            cfg @ (EncoderConfig::VitTiny(_) | EncoderConfig::VitSmall(_)) => {
                let v = cfg.vit_spec().expect("a ViT has a spec");
                format!(
                    "patch {}, image {}, embed_dim {}, depth {}, heads {}",
                    v.patch_size, v.image_size, v.embed_dim, v.depth, v.heads
                )
            }
            other => format!("{} stem", other.stem().unwrap_or_default().name()),
        };
        write!(
            f,
            "{} ({detail}, {} input channel{plural})",
            self.config.arch(),
            self.in_channels
        )
    }
}

/// The `[model]` table of a ViT of shape `spec`: `vit_small` for width 384,
/// `vit_tiny` otherwise, with overrides where `spec` departs from the preset.
pub fn vit_config(spec: VitSpec) -> EncoderConfig {
    let preset = if spec.embed_dim == VIT_SMALL.0 {
        VIT_SMALL
    } else {
        VIT_TINY
    };
    let differs = |v: i64, p: i64| (v != p).then_some(v);
    let opts = VitOptions {
        patch_size: spec.patch_size,
        image_size: spec.image_size,
        embed_dim: differs(spec.embed_dim, preset.0),
        depth: differs(spec.depth, preset.1),
        heads: differs(spec.heads, preset.2),
    };
    if preset == VIT_SMALL {
        EncoderConfig::VitSmall(opts)
    } else {
        EncoderConfig::VitTiny(opts)
    }
}

/// timm's head count for a width: 3 for 192, 6 for 384, else the largest
/// divisor of the width not above width / 64 (heads of width 64).
fn guess_heads(embed_dim: i64) -> i64 {
    match embed_dim {
        d if d == VIT_TINY.0 => VIT_TINY.2,
        d if d == VIT_SMALL.0 => VIT_SMALL.2,
        d => (1..=(d / 64).max(1))
            .rev()
            .find(|h| d % h == 0)
            .unwrap_or(1),
    }
}

fn identify_vit(shapes: &BTreeMap<String, Vec<i64>>) -> Option<IdentifiedEncoder> {
    let &[d, c, p, _] = shapes.get("patch_embed.proj.weight")?.as_slice() else {
        return None;
    };
    shapes.get("cls_token")?;
    let n = shapes.get("pos_embed")?.get(1)? - 1;
    let g = (n as f64).sqrt().round() as i64;
    if g * g != n {
        return None;
    }
    let depth = (0..)
        .take_while(|i| shapes.contains_key(&format!("blocks.{i}.attn.qkv.weight")))
        .count() as i64;
    Some(IdentifiedEncoder {
        config: vit_config(VitSpec {
            patch_size: p,
            image_size: g * p,
            embed_dim: d,
            depth,
            heads: guess_heads(d),
        }),
        in_channels: c,
    })
}

/// Recognises a selfsup encoder (small CNN, ResNet-18, ResNet-50, ViT) from
/// its variable names (prefix already stripped) and shapes; `None` if the
/// names fit none of them. A ViT's head count is guessed (see the module
/// documentation).
pub fn identify_encoder(shapes: &BTreeMap<String, Vec<i64>>) -> Option<IdentifiedEncoder> {
    if shapes.contains_key("patch_embed.proj.weight") {
        return identify_vit(shapes);
    }
    if let Some(first) = shapes.get("blocks.0.conv.weight") {
        let channels: Vec<i64> = (0..)
            .map_while(|i| {
                shapes
                    .get(&format!("blocks.{i}.conv.weight"))
                    .and_then(|s| s.first().copied())
            })
            .collect();
        return Some(IdentifiedEncoder {
            in_channels: *first.get(1)?,
            config: EncoderConfig::SmallCnn { channels },
        });
    }
    let conv1 = shapes.get("conv1.weight")?;
    let stem = match conv1.get(2)? {
        7 => Stem::Imagenet,
        3 => Stem::Cifar,
        _ => return None,
    };
    let blocks: Vec<usize> = (1..=4)
        .map(|s| {
            (0..)
                .take_while(|i| shapes.contains_key(&format!("layer{s}.{i}.conv1.weight")))
                .count()
        })
        .collect();
    let bottleneck = shapes.contains_key("layer1.0.conv3.weight");
    let config = match (bottleneck, blocks.as_slice()) {
        (false, [2, 2, 2, 2]) => EncoderConfig::Resnet18 { stem },
        (true, [3, 4, 6, 3]) => EncoderConfig::Resnet50 { stem },
        _ => return None,
    };
    Some(IdentifiedEncoder {
        in_channels: *conv1.get(1)?,
        config,
    })
}

/// The variables under `prefix.` (all of them for an empty prefix), prefix stripped.
fn encoder_variables(vs: &nn::VarStore, prefix: &str) -> BTreeMap<String, Tensor> {
    let dotted = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}.")
    };
    vs.variables()
        .into_iter()
        .filter_map(|(name, t)| name.strip_prefix(&dotted).map(|n| (n.to_string(), t)))
        .collect()
}

fn shapes_of(tensors: &BTreeMap<String, Tensor>) -> BTreeMap<String, Vec<i64>> {
    tensors.iter().map(|(n, t)| (n.clone(), t.size())).collect()
}

/// How to rebuild a ViT with timm, for `config.json`.
fn timm_recipe(spec: VitSpec, in_channels: i64) -> Value {
    let variant = format!("vit_tiny_patch{}_{}", spec.patch_size, spec.image_size);
    let call = format!(
        "timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size={}, patch_size={}, \
         in_chans={in_channels}, num_classes=0, embed_dim={}, depth={}, num_heads={}, dynamic_img_size=True)",
        spec.image_size, spec.patch_size, spec.embed_dim, spec.depth, spec.heads
    );
    json!({
        "model": "timm.models.vision_transformer.VisionTransformer",
        "note": format!(
            "timm's defaults otherwise (class token, global_pool='token', qkv_bias, mlp_ratio 4, \
             LayerNorm eps 1e-6); {variant} in timm's naming. dynamic_img_size=True resamples pos_embed \
             for other input sizes as selfsup does"
        ),
        "python": [
            "import timm, safetensors.torch".to_string(),
            format!("m = {call}"),
            format!("m.load_state_dict(safetensors.torch.load_file(\"{WEIGHTS_FILE}\"), strict=True)"),
            "m.eval()  # m(x): [batch, out_dim], the final-normed class token; \
             m.forward_features(x)[:, 1:].mean(1): the mean final-normed patch token"
                .to_string(),
        ],
    })
}

/// How to rebuild the encoder in PyTorch, for `config.json`.
fn torchvision_recipe(enc: &IdentifiedEncoder) -> Value {
    let c = enc.in_channels;
    match &enc.config {
        EncoderConfig::VitTiny(_) | EncoderConfig::VitSmall(_) => json!({
            "model": null,
            "note": "a ViT: see `timm`",
        }),
        EncoderConfig::SmallCnn { channels } => json!({
            "model": null,
            "note": format!(
                "not a torchvision model: blocks[i] = (conv: Conv2d(c_in, c, 3, padding=1, bias=False), \
                 bn: BatchNorm2d(c)), each followed by ReLU and, for all but the last block, MaxPool2d(2); \
                 then AdaptiveAvgPool2d(1) and flatten(1). channels = {channels:?}, in_channels = {c}. \
                 benchmarks/check_torchvision_export.py builds it."
            ),
        }),
        cfg => {
            let arch = cfg.arch();
            let stem = cfg.stem().unwrap_or_default();
            let mut replace = Map::new();
            let mut lines = vec![
                "import torch, torchvision, safetensors.torch".to_string(),
                format!("m = torchvision.models.{arch}()"),
            ];
            let conv1 = match stem {
                Stem::Cifar => Some(format!(
                    "torch.nn.Conv2d({c}, 64, kernel_size=3, stride=1, padding=1, bias=False)"
                )),
                Stem::Imagenet if c != 3 => Some(format!(
                    "torch.nn.Conv2d({c}, 64, kernel_size=7, stride=2, padding=3, bias=False)"
                )),
                Stem::Imagenet => None,
            };
            if let Some(conv1) = conv1 {
                lines.push(format!("m.conv1 = {conv1}"));
                replace.insert("conv1".into(), conv1.into());
            }
            if stem == Stem::Cifar {
                lines.push("m.maxpool = torch.nn.Identity()".into());
                replace.insert("maxpool".into(), "torch.nn.Identity()".into());
            }
            lines.push("m.fc = torch.nn.Identity()".into());
            replace.insert("fc".into(), "torch.nn.Identity()".into());
            lines.push(format!(
                "m.load_state_dict(safetensors.torch.load_file(\"{WEIGHTS_FILE}\"), strict=True)"
            ));
            lines.push("m.eval()  # features = m(x): [batch, out_dim]".into());
            json!({
                "model": format!("torchvision.models.{arch}"),
                "replace": replace,
                "python": lines,
            })
        }
    }
}

/// Fails if a field the caller gave disagrees with what the weights say.
fn check_caller_field(caller: &Map<String, Value>, key: &str, actual: &Value) -> Result<()> {
    match caller.get(key) {
        Some(given) if given != actual => Err(Error::Config(format!(
            "export: config field `{key}` = {given} disagrees with the exported weights ({actual})"
        ))),
        _ => Ok(()),
    }
}

/// Writes the encoder under `prefix` of `vs` to `out_dir/model.safetensors`
/// (torchvision's key names, prefix stripped, `num_batches_tracked` added as
/// int64 zeros: selfsup does not count batches, and PyTorch only reads the
/// count when a batch norm has `momentum=None`) and `out_dir/config.json`.
///
/// `config` is a JSON object (or null) of extra fields copied into
/// `config.json`, e.g. `method`, `model` (the `[model]` table), `in_channels`
/// and `normalize` (the per-channel mean/std the inputs were normalised
/// with). Fields that describe the weights (`arch`, `stem`, `in_channels`,
/// `out_dim`, `model`) must agree with them. Both files are written
/// atomically.
pub fn export_encoder(
    vs: &nn::VarStore,
    prefix: &str,
    out_dir: &Path,
    config: &Value,
) -> Result<ExportReport> {
    let vars = encoder_variables(vs, prefix);
    if vars.is_empty() {
        let mut seen: Vec<String> = vs.variables().into_keys().collect();
        seen.sort();
        seen.truncate(MAX_LISTED);
        return Err(Error::Config(format!(
            "export: no variables under prefix `{prefix}` (the var store has {seen:?}...)"
        )));
    }
    let mut encoder = identify_encoder(&shapes_of(&vars)).ok_or_else(|| {
        Error::Config(format!(
            "export: the variables under `{prefix}` are not a small_cnn, resnet18, resnet50 or vit encoder \
             (first names: {:?})",
            vars.keys().take(MAX_LISTED).collect::<Vec<_>>()
        ))
    })?;
    let caller = match config {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        other => {
            return Err(Error::Config(format!(
                "export: extra config must be a JSON object, got {other}"
            )))
        }
    };

    if let Some(model) = caller.get("model") {
        let given: EncoderConfig = serde_json::from_value(model.clone()).map_err(|e| {
            Error::Config(format!(
                "export: config field `model` is not a [model] table: {e}"
            ))
        })?;
        // The weights cannot tell a ViT's head count: the caller's table can.
        let same_vit = match (given.vit_spec(), encoder.config.vit_spec()) {
            (Some(g), Some(w)) => {
                VitSpec {
                    heads: g.heads,
                    ..w
                } == g
            }
            _ => false,
        };
        if same_vit {
            encoder.config = vit_config(given.vit_spec().expect("checked"));
        } else if given != encoder.config {
            return Err(Error::Config(format!(
                "export: config field `model` ({given:?}) disagrees with the exported weights ({encoder})"
            )));
        }
    }

    let stem = encoder.config.stem().map(|s| s.name());
    let mut described = Map::new();
    described.insert("format".into(), EXPORT_FORMAT.into());
    described.insert("weights".into(), WEIGHTS_FILE.into());
    described.insert("arch".into(), encoder.config.arch().into());
    described.insert("stem".into(), stem.into());
    if let EncoderConfig::SmallCnn { channels } = &encoder.config {
        described.insert("channels".into(), json!(channels));
    }
    let vit = encoder.config.vit_spec();
    if let Some(v) = vit {
        for (key, value) in [
            ("patch_size", v.patch_size),
            ("image_size", v.image_size),
            ("embed_dim", v.embed_dim),
            ("depth", v.depth),
            ("heads", v.heads),
        ] {
            described.insert(key.into(), value.into());
        }
    }
    described.insert("in_channels".into(), encoder.in_channels.into());
    described.insert("out_dim".into(), encoder.out_dim().into());
    // `image_size` is also what callers record as the training image size,
    // which a ViT may differ from (pos_embed is resampled): not checked.
    for key in [
        "arch",
        "stem",
        "in_channels",
        "out_dim",
        "channels",
        "patch_size",
        "embed_dim",
        "depth",
        "heads",
    ] {
        if let Some(actual) = described.get(key) {
            check_caller_field(&caller, key, actual)?;
        }
    }

    let mut tensors: Vec<(String, Tensor)> = Vec::with_capacity(vars.len() * 5 / 4);
    for (name, t) in &vars {
        tensors.push((name.clone(), t.shallow_clone()));
        if let Some(bn) = name.strip_suffix(".running_mean") {
            tensors.push((format!("{bn}.num_batches_tracked"), Tensor::from(0i64)));
        }
    }
    let weights = out_dir.join(WEIGHTS_FILE);
    let metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (
            "selfsup.arch".to_string(),
            encoder.config.arch().to_string(),
        ),
    ]);
    tensor_io::save(&weights, &tensors, Some(metadata))?;
    let bytes = std::fs::metadata(&weights)
        .map_err(|e| Error::io(&weights, e))?
        .len();

    let mut doc = caller;
    described.insert("num_tensors".into(), tensors.len().into());
    described.insert("torchvision".into(), torchvision_recipe(&encoder));
    if let Some(v) = vit {
        described.insert("timm".into(), timm_recipe(v, encoder.in_channels));
    }
    if doc.contains_key("normalize") {
        described.insert(
            "input".into(),
            format!(
                "[batch, {}, H, W] float32 images, normalised per channel with `normalize` as in training",
                encoder.in_channels
            )
            .into(),
        );
    }
    doc.extend(described);
    let text = serde_json::to_string_pretty(&Value::Object(doc))
        .map_err(|e| Error::Config(format!("export: config.json: {e}")))?;
    let config_path = out_dir.join(CONFIG_FILE);
    tensor_io::write_atomic(&config_path, format!("{text}\n").as_bytes())?;

    Ok(ExportReport {
        weights,
        config: config_path,
        tensors: tensors.len(),
        bytes,
        encoder,
    })
}

/// Names for an error message: at most [`MAX_LISTED`], then "and N more".
fn listed(names: &[String]) -> String {
    let mut s = names
        .iter()
        .take(MAX_LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_LISTED {
        s.push_str(&format!(", and {} more", names.len() - MAX_LISTED));
    }
    s
}

fn describe(shapes: &BTreeMap<String, Vec<i64>>) -> String {
    identify_encoder(shapes).map_or_else(|| "an unrecognised model".to_string(), |e| e.to_string())
}

/// Loads an exported `model.safetensors` (or any file with the same names,
/// such as a torchvision state dict without `fc`) into the encoder under
/// `prefix` of `vs`. `num_batches_tracked` entries are accepted and ignored.
///
/// Every variable must be in the file with its shape, and the file must hold
/// nothing else; otherwise nothing is loaded and the error names what the file
/// and the model are, and lists (up to ten each) the missing names, the
/// unexpected names and the shape mismatches.
pub fn load_encoder_weights(vs: &mut nn::VarStore, prefix: &str, file: &Path) -> Result<()> {
    let loaded = tensor_io::load(file)?.tensors;
    let vars = encoder_variables(vs, prefix);
    // A batch norm's counter is neither required nor, next to its running mean
    // (in the file or the model), worth reporting.
    let is_counter = |name: &str| {
        name.strip_suffix(".num_batches_tracked").is_some_and(|bn| {
            let mean = format!("{bn}.running_mean");
            vars.contains_key(&mean) || loaded.contains_key(&mean)
        })
    };
    let missing: Vec<String> = vars
        .keys()
        .filter(|n| !loaded.contains_key(*n))
        .cloned()
        .collect();
    let unexpected: Vec<String> = loaded
        .keys()
        .filter(|n| !vars.contains_key(*n) && !is_counter(n))
        .cloned()
        .collect();
    let mismatched: Vec<String> = vars
        .iter()
        .filter_map(|(n, v)| {
            let t = loaded.get(n)?;
            (t.size() != v.size())
                .then(|| format!("{n} (file {:?}, model {:?})", t.size(), v.size()))
        })
        .collect();
    if !(missing.is_empty() && unexpected.is_empty() && mismatched.is_empty()) {
        let file_shapes: BTreeMap<String, Vec<i64>> =
            loaded.iter().map(|(n, t)| (n.clone(), t.size())).collect();
        let mut reason = format!(
            "does not fit the encoder under `{prefix}`: the file holds {}, the model is {}",
            describe(&file_shapes),
            describe(&shapes_of(&vars))
        );
        for (what, names) in [
            ("missing from the file", &missing),
            ("unexpected in the file", &unexpected),
            ("shape mismatches", &mismatched),
        ] {
            if !names.is_empty() {
                reason.push_str(&format!("; {} {what}: {}", names.len(), listed(names)));
            }
        }
        return Err(Error::Checkpoint {
            path: file.to_path_buf(),
            reason,
        });
    }
    tch::no_grad(|| -> Result<()> {
        for (name, var) in &vars {
            let mut var = var.shallow_clone();
            var.f_copy_(&loaded[name])?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests;
