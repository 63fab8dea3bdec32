//! DINO (Caron et al. 2021, arXiv:2104.14294): self-distillation with no
//! labels. A student (encoder + DINO head) on every view, global and local,
//! matches the centred, sharpened output of an EMA teacher on the global
//! views. Collapse is held off by centering (the center is a buffer updated
//! in the after-step hook) and sharpening (a low teacher temperature, warmed
//! up linearly).
use super::check_views;
use crate::models::{build_encoder, EncoderConfig};
use selfsup_core::batch_norm::{batch_norm1d, BatchNorm};
use selfsup_core::ema::{EmaConfig, EmaTeacher};
use selfsup_core::encoder::Encoder;
use selfsup_core::loss::{cosine_f32, DinoLoss, DinoLossConfig};
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// The DINO head: an MLP (GELU) to a bottleneck, l2 normalisation, then a
/// weight-normalised linear layer (unit-norm rows, no bias) to `out_dim`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DinoHeadConfig {
    /// Linear layers before the bottleneck output (paper: 3).
    pub layers: usize,
    /// Hidden width (2048).
    pub hidden_dim: i64,
    /// Bottleneck width (256).
    pub bottleneck_dim: i64,
    /// Prototypes, `K` (65536).
    pub out_dim: i64,
    /// Batch norm after each hidden layer (DINO's `use_bn_in_head`). Convnet
    /// features are post-ReLU averages that share a large common component;
    /// without it every sample starts at almost the same point on the sphere
    /// and the teacher's centred output is flat from step 0.
    pub batch_norm: bool,
}

impl Default for DinoHeadConfig {
    fn default() -> Self {
        Self {
            layers: 3,
            hidden_dim: 2048,
            bottleneck_dim: 256,
            out_dim: 65536,
            batch_norm: false,
        }
    }
}

/// The head's layers (`mlp.{i}`, `last_layer.weight`); DINOv2 uses it too.
pub(crate) struct DinoHead {
    mlp: Vec<nn::Linear>,
    bns: Vec<BatchNorm>,
    last: Tensor,
}

impl DinoHead {
    pub(crate) fn new(p: &nn::Path, in_dim: i64, cfg: &DinoHeadConfig) -> Self {
        let n = cfg.layers.max(1);
        let mut dims = vec![in_dim];
        dims.extend(std::iter::repeat_n(cfg.hidden_dim, n - 1));
        dims.push(cfg.bottleneck_dim);
        let lin = nn::LinearConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        let mlp: Vec<nn::Linear> = dims
            .windows(2)
            .enumerate()
            .map(|(i, d)| nn::linear(p / "mlp" / i, d[0], d[1], lin))
            .collect();
        let bns = if cfg.batch_norm {
            (0..mlp.len() - 1)
                .map(|i| batch_norm1d(p / "bn" / i, dims[i + 1], Default::default()))
                .collect()
        } else {
            Vec::new()
        };
        let last = (p / "last_layer").var(
            "weight",
            &[cfg.out_dim, cfg.bottleneck_dim],
            nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        );
        Self { mlp, bns, last }
    }

    /// Logits `[n, K]`; with `freeze_last` no gradient reaches the last layer.
    /// The cosine logits are computed in float32 whatever autocast says (the
    /// teacher divides them by 0.04: a bfloat16 cosine is off by up to 0.1).
    pub(crate) fn forward(&self, xs: &Tensor, train: bool, freeze_last: bool) -> Tensor {
        let w = if freeze_last {
            self.last.detach()
        } else {
            self.last.shallow_clone()
        };
        cosine_f32(&self.bottleneck(xs, train), &w)
    }

    /// The bottleneck output, before l2 normalisation.
    pub(crate) fn bottleneck(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut h = xs.shallow_clone();
        let n = self.mlp.len();
        for (i, l) in self.mlp.iter().enumerate() {
            h = h.apply(l);
            if i + 1 < n {
                if let Some(bn) = self.bns.get(i) {
                    h = h.apply_t(bn, train);
                }
                h = h.gelu("none");
            }
        }
        h
    }
}

/// DINO settings (the `[method]` table with `name = "dino"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DinoConfig {
    pub head: DinoHeadConfig,
    pub loss: DinoLossConfig,
    /// Teacher momentum schedule (0.996 -> 1).
    pub ema: EmaConfig,
    /// Epochs during which the head's last layer is not trained (paper: 1).
    pub freeze_last_layer_epochs: f64,
}

impl Default for DinoConfig {
    fn default() -> Self {
        Self {
            head: DinoHeadConfig::default(),
            loss: DinoLossConfig::default(),
            ema: EmaConfig::default(),
            freeze_last_layer_epochs: 1.0,
        }
    }
}

/// The DINO method: student `encoder.` / `head.`, teacher `teacher.`, buffer `center`.
pub struct Dino {
    vs: nn::VarStore,
    encoder: Box<dyn Encoder>,
    head: DinoHead,
    t_encoder: Box<dyn Encoder>,
    t_head: DinoHead,
    ema: EmaTeacher,
    loss: DinoLoss,
    center: Tensor,
    freeze_last_layer_epochs: f64,
    pending: Vec<Tensor>,
}

impl Dino {
    /// Builds student and teacher on `device`.
    pub fn new(
        device: tch::Device,
        encoder: &EncoderConfig,
        in_channels: i64,
        cfg: &DinoConfig,
    ) -> Result<Self> {
        if cfg.head.out_dim < 2 || cfg.head.bottleneck_dim < 1 {
            return Err(Error::Config(
                "method.head: DINO needs out_dim >= 2 and bottleneck_dim >= 1".into(),
            ));
        }
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let enc = build_encoder(&(&root / "encoder"), encoder, in_channels);
        let head = DinoHead::new(&(&root / "head"), enc.out_dim(), &cfg.head);
        let t = &root / "teacher";
        let t_encoder = build_encoder(&(&t / "encoder"), encoder, in_channels);
        let t_head = DinoHead::new(&(&t / "head"), enc.out_dim(), &cfg.head);
        let ema = EmaTeacher::with_prefixes(
            &vs,
            &[("encoder", "teacher.encoder"), ("head", "teacher.head")],
            cfg.ema.clone(),
        )?;
        let center = root.zeros_no_train("center", &[1, cfg.head.out_dim]);
        Ok(Self {
            vs,
            encoder: enc,
            head,
            t_encoder,
            t_head,
            ema,
            loss: DinoLoss::new(cfg.loss.clone()),
            center,
            freeze_last_layer_epochs: cfg.freeze_last_layer_epochs,
            pending: Vec::new(),
        })
    }
}

impl Method for Dino {
    fn name(&self) -> &'static str {
        "dino"
    }
    fn target(&self) -> TargetKind {
        TargetKind::Teacher
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<LossOut> {
        check_views("DINO", batch, 2, usize::MAX)?;
        let freeze = ctx.epoch_f() < self.freeze_last_layer_epochs;
        let student: Vec<Tensor> = batch
            .views
            .iter()
            .map(|v| {
                self.head
                    .forward(&self.encoder.forward_t(v, true), true, freeze)
            })
            .collect();
        let teacher: Vec<Tensor> = tch::no_grad(|| {
            batch.views[..2]
                .iter()
                .map(|v| {
                    self.t_head
                        .forward(&self.t_encoder.forward_t(v, true), true, false)
                })
                .collect()
        });
        let tt = self.loss.config().teacher_temp_at(ctx.epoch_f());
        let loss = self.loss.loss(&student, &teacher, &self.center, tt);
        // Entropy of the teacher's distribution: near 0 = one-hot collapse,
        // near ln K = uniform collapse.
        let entropy = tch::no_grad(|| {
            let p = ((&teacher[0] - &self.center) / tt).softmax(-1, Kind::Float);
            (-(&p * (p.clamp_min(1e-12)).log()).sum_dim_intlist(
                [-1i64].as_slice(),
                false,
                Kind::Float,
            ))
            .mean(Kind::Float)
            .double_value(&[])
        });
        self.pending = teacher;
        Ok(LossOut {
            loss,
            terms: vec![("teacher_temp", tt), ("teacher_entropy", entropy)],
        })
    }
    fn after_step(&mut self, ctx: &StepCtx) {
        self.ema.update(ctx.step, ctx.total_steps);
        if self.pending.is_empty() {
            return;
        }
        let c = self
            .loss
            .updated_center(&self.center, &self.pending, ctx.comm);
        tch::no_grad(|| self.center.shallow_clone().copy_(&c));
        self.pending.clear();
    }
    fn embed(&self, xs: &Tensor) -> Tensor {
        self.encoder.forward_t(xs, false)
    }
    /// The head's bottleneck output: what the prototypes score (the
    /// logits themselves have rank at most the bottleneck width).
    fn project(&self, xs: &Tensor) -> Tensor {
        self.head.bottleneck(&self.embed(xs), false)
    }
}
