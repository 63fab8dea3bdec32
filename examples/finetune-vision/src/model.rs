//! The classifier: the exported encoder, rebuilt trainable from the
//! export's weights, and a linear head on its features.
use selfsup_vision::embed::VisionEmbedder;
use selfsup_vision::export::{identify_encoder, load_encoder_weights, CONFIG_FILE, WEIGHTS_FILE};
use selfsup_vision::models::{build_encoder, EncoderConfig, PosEmbedInit, Vit};
use selfsup_vision::tch::nn::{self, Module};
use selfsup_vision::tch::{Device, Tensor};
use std::collections::BTreeMap;
use std::error::Error;
use std::path::Path;

/// The encoder's forward pass: images -> features `[N, D]`; `train` puts
/// batch norms in training mode.
type Forward = Box<dyn Fn(&Tensor, bool) -> Tensor>;

/// Encoder + linear head, each in its own var store (so the head can train
/// alone on frozen features, then both together at their own rates).
pub struct Classifier {
    /// The encoder's variables (under `encoder`, the export's names).
    pub encoder_vs: nn::VarStore,
    /// The head's variables.
    pub head_vs: nn::VarStore,
    encoder: Forward,
    head: nn::Linear,
    /// The encoder's architecture (`resnet18`, `small_cnn`, `vit_tiny`, ...).
    pub arch: &'static str,
}

/// The `[model]` table the export was written with (it knows a ViT's head
/// count), else what its weights are.
fn encoder_config(dir: &Path) -> Result<EncoderConfig, Box<dyn Error>> {
    let cfg_path = dir.join(CONFIG_FILE);
    let text =
        std::fs::read_to_string(&cfg_path).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
    if let Some(model) = v.get("model") {
        return serde_json::from_value(model.clone())
            .map_err(|e| format!("{}: model: {e}", cfg_path.display()).into());
    }
    let file = dir.join(WEIGHTS_FILE);
    let shapes: BTreeMap<String, Vec<i64>> = Tensor::read_safetensors(&file)?
        .into_iter()
        .map(|(name, t)| (name, t.size()))
        .collect();
    identify_encoder(&shapes)
        .map(|e| e.config)
        .ok_or_else(|| format!("{}: not an encoder selfsup exports", file.display()).into())
}

impl Classifier {
    /// The encoder of the export folder `dir` (already checked by
    /// `VisionEmbedder::load_export` into `emb`) with its weights, and a
    /// freshly initialised head (seeded) for `classes` classes.
    pub fn from_export(
        dir: &Path,
        emb: &VisionEmbedder,
        classes: usize,
        seed: u64,
    ) -> Result<Self, Box<dyn Error>> {
        let config = encoder_config(dir)?;
        let mut encoder_vs = nn::VarStore::new(Device::Cpu);
        let p = encoder_vs.root() / "encoder";
        // The features the embedder (and selfsup's evaluation) uses: the
        // class token of a ViT, but the mean patch token for MAE / I-JEPA,
        // whose class token was never trained.
        let encoder: Forward = match config.vit_spec() {
            Some(spec) if matches!(emb.method.as_str(), "mae" | "ijepa") => {
                let vit = Vit::new(&p, spec, emb.in_channels, PosEmbedInit::Learned);
                Box::new(move |xs: &Tensor, _train: bool| vit.mean_patch_features(xs))
            }
            _ => {
                let net = build_encoder(&p, &config, emb.in_channels);
                Box::new(move |xs: &Tensor, train: bool| net.forward_t(xs, train))
            }
        };
        load_encoder_weights(&mut encoder_vs, "encoder", &dir.join(WEIGHTS_FILE))?;
        selfsup_vision::tch::manual_seed(seed as i64);
        let head_vs = nn::VarStore::new(Device::Cpu);
        let head = nn::linear(
            head_vs.root() / "head",
            emb.dim,
            classes as i64,
            Default::default(),
        );
        Ok(Self {
            encoder_vs,
            head_vs,
            encoder,
            head,
            arch: config.arch(),
        })
    }

    /// Encoder features `[N, D]` of normalised images `[N, C, S, S]`.
    pub fn features(&self, xs: &Tensor, train: bool) -> Tensor {
        (self.encoder)(xs, train)
    }

    /// Class scores `[N, classes]` of features.
    pub fn head(&self, features: &Tensor) -> Tensor {
        self.head.forward(features)
    }
}
