//! CLIP (Radford et al. 2021, arXiv:2103.00020) on the core design: the two
//! views of a sample are its image and its caption, the target is the other
//! modality's embedding (`TargetKind::OtherView`), the loss core's symmetric
//! cross-modal InfoNCE with a learnable logit scale, clamped after every step
//! in `after_step`.
use crate::model::{ClipModel, ClipModelConfig, ImageTower, ScaleSpec, TextTower};
use crate::tower::Tower;
use selfsup_core::loss::{InfoNce, InfoNceConfig};
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::{Error, Result};
use selfsup_text::model::BertConfig;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

/// `[method]` settings of CLIP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClipConfig {
    /// Initial temperature (`logit_scale = ln(1 / init_temperature)`).
    pub init_temperature: f64,
    /// Largest `exp(logit_scale)` (the paper's clamp: 100).
    pub max_logit_scale: f64,
    /// Learn the temperature (else it stays at its initial value).
    pub learn_temperature: bool,
}

impl Default for ClipConfig {
    fn default() -> Self {
        Self {
            init_temperature: 0.07,
            max_logit_scale: 100.0,
            learn_temperature: true,
        }
    }
}

/// `[method]`: tagged by `name` (only `"clip"` here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClipMethodConfig {
    Clip(ClipConfig),
}

impl Default for ClipMethodConfig {
    fn default() -> Self {
        ClipMethodConfig::Clip(ClipConfig::default())
    }
}

impl ClipMethodConfig {
    /// Every method's `[method] name` (one variant, one name).
    pub const NAMES: [&'static str; 1] = ["clip"];

    /// The CLIP settings.
    pub fn clip(&self) -> &ClipConfig {
        match self {
            ClipMethodConfig::Clip(c) => c,
        }
    }
}

/// CLIP: the dual encoder in its own var store, over any two [`Tower`]s
/// (image-text by default; speech-text in [`crate::speech`]).
pub struct Clip<A: Tower = ImageTower, B: Tower = TextTower> {
    vs: nn::VarStore,
    pub model: ClipModel<A, B>,
    loss: InfoNce,
}

impl<A: Tower, B: Tower> Clip<A, B> {
    /// CLIP around the towers `build` makes under the var store's root (on
    /// `device`), with `embed_dim`-wide projections and `method`'s scale.
    pub fn with_towers(
        device: Device,
        method: &ClipConfig,
        embed_dim: i64,
        build: impl FnOnce(&nn::Path) -> Result<(A, B)>,
    ) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let (a, b) = build(&vs.root())?;
        let model = ClipModel::with_towers(&vs.root(), a, b, embed_dim, scale_spec(method))?;
        Ok(Self {
            vs,
            model,
            loss: InfoNce::new(InfoNceConfig::default()),
        })
    }

    /// The var store, mutably (loading weights).
    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// The symmetric loss of first-tower and text embeddings of one batch.
    pub fn loss(&self, image: &Tensor, text: &Tensor, ctx: &StepCtx) -> Tensor {
        self.loss
            .cross_modal(image, text, &self.model.log_scale(), ctx.comm)
    }
}

fn scale_spec(method: &ClipConfig) -> ScaleSpec {
    ScaleSpec {
        init_temperature: method.init_temperature,
        max_logit_scale: method.max_logit_scale,
        learn: method.learn_temperature,
    }
}

impl Clip {
    /// A freshly initialised model on `device` (the image tower loaded from
    /// `model.vision_init` when set).
    pub fn new(
        model: &ClipModelConfig,
        method: &ClipConfig,
        text: &BertConfig,
        device: Device,
    ) -> Result<Self> {
        let mut vs = nn::VarStore::new(device);
        let m = ClipModel::new(
            &vs.root(),
            &model.vision,
            text,
            model.embed_dim,
            scale_spec(method),
        )?;
        if let Some(init) = &model.vision_init {
            crate::model::image_tower::load_pretrained(&mut vs, init)?;
        }
        Ok(Self {
            vs,
            model: m,
            // The temperature of the config is unused: the scale is learned.
            loss: InfoNce::new(InfoNceConfig::default()),
        })
    }
}

impl<A: Tower, B: Tower> Method for Clip<A, B> {
    fn name(&self) -> &'static str {
        "clip"
    }

    fn target(&self) -> TargetKind {
        TargetKind::OtherView
    }

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    fn step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<LossOut> {
        if batch.views.len() != A::INPUTS + B::INPUTS {
            return Err(Error::Config(format!(
                "clip expects batches of {} tensors ({} for the first tower, then {} for the \
                 text: caption ids, attention), got {}",
                A::INPUTS + B::INPUTS,
                A::INPUTS,
                B::INPUTS,
                batch.views.len()
            )));
        }
        let (first, second) = batch.views.split_at(A::INPUTS);
        let img = self.model.encode_tower(first, true);
        let txt = self.model.encode_second(second, true);
        let loss = self.loss(&img, &txt, ctx);
        let acc = tch::no_grad(|| {
            let sim = img.matmul(&txt.tr());
            let n = sim.size()[0];
            sim.argmax(1, false)
                .eq_tensor(&Tensor::arange(n, (Kind::Int64, sim.device())))
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[])
        });
        Ok(LossOut {
            loss,
            terms: vec![
                ("logit_scale", self.model.scale_value()),
                ("batch_i2t_acc", acc),
            ],
        })
    }

    fn after_step(&mut self, _ctx: &StepCtx) {
        self.model.clamp_scale_();
    }

    fn embed(&self, xs: &Tensor) -> Tensor {
        self.model.tower.forward(std::slice::from_ref(xs), false)
    }

    fn project(&self, xs: &Tensor) -> Tensor {
        self.model.encode_tower(std::slice::from_ref(xs), false)
    }
}
