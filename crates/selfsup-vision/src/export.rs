//! Exporting a trained encoder so PyTorch users can load it, and loading such
//! an export back.
//!
//! [`export_encoder`] writes two files into a folder:
//!
//! - `model.safetensors`: the encoder's variables with the var-store prefix
//!   stripped, i.e. torchvision's state-dict keys for the ResNets, plus an
//!   int64 scalar `<bn>.num_batches_tracked` for every batch norm, so
//!   `model.load_state_dict(safetensors.torch.load_file(...), strict=True)`
//!   sees exactly the keys it expects;
//! - `config.json`: what the weights are (`arch`, `stem`, `in_channels`,
//!   `out_dim`), how to build the matching torchvision model (`torchvision`),
//!   and the caller's own fields (method, input normalisation, ...).
//!
//! `benchmarks/check_torchvision_export.py` loads an export into torchvision
//! and compares its features with selfsup's.
use crate::models::{EncoderConfig, Stem};
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

/// Recognises a selfsup encoder (small CNN, ResNet-18, ResNet-50) from its
/// variable names (prefix already stripped) and shapes; `None` if the names
/// fit none of them.
pub fn identify_encoder(shapes: &BTreeMap<String, Vec<i64>>) -> Option<IdentifiedEncoder> {
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

/// How to rebuild the encoder in PyTorch, for `config.json`.
fn torchvision_recipe(enc: &IdentifiedEncoder) -> Value {
    let c = enc.in_channels;
    match &enc.config {
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
    let encoder = identify_encoder(&shapes_of(&vars)).ok_or_else(|| {
        Error::Config(format!(
            "export: the variables under `{prefix}` are not a small_cnn, resnet18 or resnet50 encoder \
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

    let stem = encoder.config.stem().map(|s| s.name());
    let mut described = Map::new();
    described.insert("format".into(), EXPORT_FORMAT.into());
    described.insert("weights".into(), WEIGHTS_FILE.into());
    described.insert("arch".into(), encoder.config.arch().into());
    described.insert("stem".into(), stem.into());
    if let EncoderConfig::SmallCnn { channels } = &encoder.config {
        described.insert("channels".into(), json!(channels));
    }
    described.insert("in_channels".into(), encoder.in_channels.into());
    described.insert("out_dim".into(), encoder.out_dim().into());
    for key in ["arch", "stem", "in_channels", "out_dim", "channels"] {
        if let Some(actual) = described.get(key) {
            check_caller_field(&caller, key, actual)?;
        }
    }
    if let Some(model) = caller.get("model") {
        let given: EncoderConfig = serde_json::from_value(model.clone()).map_err(|e| {
            Error::Config(format!(
                "export: config field `model` is not a [model] table: {e}"
            ))
        })?;
        if given != encoder.config {
            return Err(Error::Config(format!(
                "export: config field `model` ({given:?}) disagrees with the exported weights ({encoder})"
            )));
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
mod tests {
    use super::*;
    use crate::models::tests::TORCHVISION_RESNET18_KEYS;
    use crate::models::{build_encoder, Stem};
    use selfsup_core::encoder::Encoder;
    use std::collections::BTreeSet;
    use tch::{Device, Kind};

    /// An encoder under `encoder.` next to a `head.` variable, with trained-looking
    /// batch-norm statistics and affine parameters (so a bad export would show).
    fn trained(
        cfg: &EncoderConfig,
        in_channels: i64,
        hw: i64,
        seed: i64,
    ) -> (nn::VarStore, Box<dyn Encoder>) {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let enc = build_encoder(&(vs.root() / "encoder"), cfg, in_channels);
        let _head = vs
            .root()
            .sub("head")
            .var("weight", &[4, enc.out_dim()], nn::Init::Const(0.5));
        tch::no_grad(|| {
            for _ in 0..12 {
                let xs = Tensor::randn([4, in_channels, hw, hw], (Kind::Float, Device::Cpu));
                let _ = enc.forward_t(&xs, true);
            }
            // Batch-norm affine parameters are the only 1-D weights and biases.
            for (name, mut v) in vs.variables() {
                if v.dim() == 1 && name.ends_with(".weight") {
                    v.f_copy_(&(Tensor::rand_like(&v) * 0.5 + 0.75)).unwrap();
                } else if v.dim() == 1 && name.ends_with(".bias") {
                    v.f_copy_(&(Tensor::rand_like(&v) * 0.2 - 0.1)).unwrap();
                }
            }
        });
        (vs, enc)
    }

    fn features(enc: &dyn Encoder, xs: &Tensor) -> Tensor {
        tch::no_grad(|| enc.forward_t(xs, false))
    }

    #[test]
    fn resnet18_export_has_exactly_torchvisions_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (vs, _) = trained(&EncoderConfig::Resnet18 { stem: Stem::Cifar }, 1, 28, 1);
        let extra = json!({"method": "simclr", "in_channels": 1, "model": {"arch": "resnet18", "stem": "cifar"},
                           "normalize": {"mean": [0.286], "std": [0.353]}});
        let report = export_encoder(&vs, "encoder", dir.path(), &extra).unwrap();
        assert_eq!(report.tensors, 120);
        assert_eq!(
            report.bytes,
            std::fs::metadata(dir.path().join(WEIGHTS_FILE))
                .unwrap()
                .len()
        );
        let loaded = tensor_io::load(&report.weights).unwrap();
        let got: BTreeSet<&str> = loaded.tensors.keys().map(String::as_str).collect();
        let want: BTreeSet<&str> = TORCHVISION_RESNET18_KEYS.iter().copied().collect();
        assert_eq!(got, want);
        assert_eq!(loaded.metadata["format"], "pt");
        let nbt = &loaded.tensors["layer2.0.downsample.1.num_batches_tracked"];
        assert_eq!((nbt.kind(), nbt.size()), (Kind::Int64, vec![]));
        assert_eq!(loaded.tensors["conv1.weight"].size(), vec![64, 1, 3, 3]);
        assert!(loaded.tensors["layer1.0.bn1.running_mean"]
            .equal(&vs.variables()["encoder.layer1.0.bn1.running_mean"]));

        let cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(&report.config).unwrap()).unwrap();
        assert_eq!(cfg["arch"], "resnet18");
        assert_eq!(cfg["stem"], "cifar");
        assert_eq!(cfg["in_channels"], 1);
        assert_eq!(cfg["out_dim"], 512);
        assert_eq!(cfg["method"], "simclr");
        assert_eq!(cfg["normalize"]["std"][0], 0.353);
        assert_eq!(
            cfg["torchvision"]["replace"]["maxpool"],
            "torch.nn.Identity()"
        );
        let conv1 = cfg["torchvision"]["replace"]["conv1"].as_str().unwrap();
        assert!(
            conv1.starts_with("torch.nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1"),
            "{conv1}"
        );
        assert!(!dir.path().join("config.json.tmp").exists());
    }

    #[test]
    fn imagenet_stem_on_colour_images_needs_only_fc_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (vs, _) = trained(
            &EncoderConfig::Resnet18 {
                stem: Stem::Imagenet,
            },
            3,
            32,
            2,
        );
        let report = export_encoder(&vs, "encoder", dir.path(), &Value::Null).unwrap();
        let cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(&report.config).unwrap()).unwrap();
        let replace = cfg["torchvision"]["replace"].as_object().unwrap();
        assert_eq!(replace.keys().collect::<Vec<_>>(), vec!["fc"]);
        assert_eq!(cfg["stem"], "imagenet");
    }

    #[test]
    fn export_then_load_gives_identical_features() {
        let cases = [
            (EncoderConfig::default(), 1, 28),
            (EncoderConfig::Resnet18 { stem: Stem::Cifar }, 3, 32),
            (
                EncoderConfig::Resnet18 {
                    stem: Stem::Imagenet,
                },
                1,
                28,
            ),
        ];
        for (cfg, c, hw) in cases {
            let dir = tempfile::tempdir().unwrap();
            let (vs, enc) = trained(&cfg, c, hw, 3);
            export_encoder(&vs, "encoder", dir.path(), &json!({"in_channels": c})).unwrap();
            tch::manual_seed(99);
            let mut fresh_vs = nn::VarStore::new(Device::Cpu);
            let fresh = build_encoder(&(fresh_vs.root() / "backbone"), &cfg, c);
            let xs = Tensor::randn([3, c, hw, hw], (Kind::Float, Device::Cpu));
            assert!(!features(fresh.as_ref(), &xs).equal(&features(enc.as_ref(), &xs)));
            load_encoder_weights(&mut fresh_vs, "backbone", &dir.path().join(WEIGHTS_FILE))
                .unwrap();
            assert!(
                features(fresh.as_ref(), &xs).equal(&features(enc.as_ref(), &xs)),
                "{cfg:?}"
            );
        }
    }

    #[test]
    fn loading_resnet18_into_small_cnn_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let (vs, _) = trained(&EncoderConfig::Resnet18 { stem: Stem::Cifar }, 1, 28, 4);
        export_encoder(&vs, "encoder", dir.path(), &Value::Null).unwrap();
        let mut small_vs = nn::VarStore::new(Device::Cpu);
        let small = build_encoder(&(small_vs.root() / "encoder"), &EncoderConfig::default(), 1);
        let before = features(
            small.as_ref(),
            &Tensor::ones([1, 1, 28, 28], (Kind::Float, Device::Cpu)),
        );
        let err = load_encoder_weights(&mut small_vs, "encoder", &dir.path().join(WEIGHTS_FILE))
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.safetensors"), "{err}");
        assert!(
            err.contains("resnet18 (cifar stem, 1 input channel)"),
            "{err}"
        );
        assert!(
            err.contains("small_cnn (channels [32, 64, 128, 256], 1 input channel)"),
            "{err}"
        );
        assert!(
            err.contains("20 missing from the file: blocks.0.bn.bias"),
            "{err}"
        );
        assert!(
            err.contains("100 unexpected in the file: bn1.bias"),
            "{err}"
        );
        assert!(err.contains("and 90 more"), "{err}");
        assert!(!err.contains("num_batches_tracked"), "{err}");
        let after = features(
            small.as_ref(),
            &Tensor::ones([1, 1, 28, 28], (Kind::Float, Device::Cpu)),
        );
        assert!(before.equal(&after), "a failed load must change nothing");
    }

    #[test]
    fn shape_mismatches_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let (vs, _) = trained(&EncoderConfig::Resnet18 { stem: Stem::Cifar }, 1, 28, 5);
        export_encoder(&vs, "encoder", dir.path(), &Value::Null).unwrap();
        let mut vs3 = nn::VarStore::new(Device::Cpu);
        let _enc = build_encoder(
            &(vs3.root() / "encoder"),
            &EncoderConfig::Resnet18 {
                stem: Stem::Imagenet,
            },
            3,
        );
        let err = load_encoder_weights(&mut vs3, "encoder", &dir.path().join(WEIGHTS_FILE))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "1 shape mismatches: conv1.weight (file [64, 1, 3, 3], model [64, 3, 7, 7])"
            ),
            "{err}"
        );
        assert!(!err.contains("missing"), "{err}");
    }

    #[test]
    fn export_refuses_contradictions_and_empty_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let (vs, _) = trained(&EncoderConfig::default(), 3, 32, 6);
        let err = export_encoder(&vs, "encoder", dir.path(), &json!({"in_channels": 1}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("in_channels"), "{err}");
        let err = export_encoder(
            &vs,
            "encoder",
            dir.path(),
            &json!({"model": {"arch": "resnet18"}}),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("model"), "{err}");
        let err = export_encoder(&vs, "student", dir.path(), &Value::Null)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no variables under prefix `student`"), "{err}");
        let ok = export_encoder(
            &vs,
            "encoder",
            dir.path(),
            &json!({"model": {"arch": "small_cnn"}}),
        )
        .unwrap();
        assert_eq!(ok.tensors, 4 * 6);
        assert_eq!(ok.encoder.out_dim(), 256);
    }

    fn check_script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benchmarks/check_torchvision_export.py")
    }

    /// Writes an export plus an input batch and selfsup's eval-mode features for
    /// it into `dir`; with `SELFSUP_PYTHON` set (a Python with torch, torchvision
    /// and safetensors), runs `benchmarks/check_torchvision_export.py` on them
    /// and requires PASS.
    fn check_against_torchvision(cfg: &EncoderConfig, in_channels: i64, hw: i64, batch: i64) {
        let dir = tempfile::tempdir().unwrap();
        let (vs, enc) = trained(cfg, in_channels, hw, 7);
        let export_dir = dir.path().join("export");
        let report = export_encoder(
            &vs,
            "encoder",
            &export_dir,
            &json!({"in_channels": in_channels}),
        )
        .unwrap();
        let xs = Tensor::randn([batch, in_channels, hw, hw], (Kind::Float, Device::Cpu));
        let ys = features(enc.as_ref(), &xs);
        assert_eq!(ys.size(), vec![batch, report.encoder.out_dim()]);
        let input = dir.path().join("input.safetensors");
        let expected = dir.path().join("expected.safetensors");
        let off = dir.path().join("expected_off.safetensors");
        tensor_io::save(&input, &[("input".into(), xs)], None).unwrap();
        tensor_io::save(&off, &[("features".into(), &ys + 1e-3)], None).unwrap();
        tensor_io::save(&expected, &[("features".into(), ys)], None).unwrap();
        let Some(python) = std::env::var_os("SELFSUP_PYTHON") else {
            eprintln!(
                "SELFSUP_PYTHON not set: torchvision check of {cfg:?} skipped (Rust side checked)"
            );
            return;
        };
        let run = |expected: &Path| {
            let out = std::process::Command::new(&python)
                .arg(check_script())
                .args([&export_dir, &input, &expected.to_path_buf()])
                .output()
                .expect("run SELFSUP_PYTHON");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!("{text}");
            (out.status.code(), text)
        };
        let (code, text) = run(&expected);
        assert!(
            code == Some(0) && text.contains("PASS: "),
            "{cfg:?}: {text}"
        );
        // The script must also notice features that are off by 1e-3.
        let (code, text) = run(&off);
        assert!(
            code == Some(1) && text.contains("FAIL: "),
            "{cfg:?}: {text}"
        );
    }

    #[test]
    fn torchvision_resnet18_cifar_grey_loads_the_export() {
        check_against_torchvision(&EncoderConfig::Resnet18 { stem: Stem::Cifar }, 1, 28, 4);
    }

    #[test]
    fn torchvision_resnet18_imagenet_colour_loads_the_export() {
        check_against_torchvision(
            &EncoderConfig::Resnet18 {
                stem: Stem::Imagenet,
            },
            3,
            32,
            4,
        );
    }

    #[test]
    fn torchvision_resnet50_cifar_loads_the_export() {
        check_against_torchvision(&EncoderConfig::Resnet50 { stem: Stem::Cifar }, 3, 32, 2);
    }

    #[test]
    fn pytorch_small_cnn_loads_the_export() {
        check_against_torchvision(&EncoderConfig::default(), 1, 28, 4);
    }

    #[test]
    fn the_check_script_is_where_the_tests_look() {
        assert!(check_script().is_file(), "{}", check_script().display());
    }
}
