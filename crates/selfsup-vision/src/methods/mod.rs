//! Vision methods, one per file, chosen by the `[method]` table of a run config.
//!
//! | family | methods |
//! |---|---|
//! | contrastive | [`simclr`], [`moco_v2`], [`moco_v3`] |
//! | self-distillation | [`byol`], [`simsiam`], [`dino`], [`dinov2`] |
//! | redundancy reduction | [`barlow_twins`], [`vicreg`] |
//! | clustering | [`swav`], [`deepcluster`] |
//! | masked image modelling | [`mae`], [`beit`] (with its [`vq_tokenizer`]) |
//! | joint-embedding prediction | [`ijepa`] |
//! | hand-designed pretext tasks | [`rotation`], [`jigsaw`], [`colorization`], [`context`] |
//!
//! Shared pieces live once: losses in `selfsup_core::loss`, EMA teachers in
//! `selfsup_core::ema`, heads in `selfsup_core::head`, the encoder +
//! projector pair in [`branch`], multi-crop in [`crate::augment`].
pub mod barlow_twins;
pub mod beit;
pub mod branch;
pub mod byol;
pub mod colorization;
pub mod context;
pub mod deepcluster;
pub mod dino;
pub mod dinov2;
pub mod ijepa;
pub mod jigsaw;
pub mod kmeans;
pub mod mae;
pub mod moco_v2;
pub mod moco_v3;
pub mod pretext;
pub mod rotation;
pub mod simclr;
pub mod simsiam;
pub mod swav;
pub mod two_view;
pub mod vicreg;
pub mod vq_tokenizer;

pub use barlow_twins::{BarlowTwins, BarlowTwinsMethodConfig};
pub use beit::{Beit, BeitConfig};
pub use byol::{Byol, ByolConfig};
pub use colorization::{Colorization, ColorizationConfig};
pub use context::{Context, ContextConfig};
pub use deepcluster::{DeepCluster, DeepClusterConfig};
pub use dino::{Dino, DinoConfig, DinoHeadConfig};
pub use dinov2::{Dinov2, Dinov2Config, IbotConfig};
pub use ijepa::{Ijepa, IjepaConfig};
pub use jigsaw::{Jigsaw, JigsawConfig};
pub use mae::{Mae, MaeConfig};
pub use moco_v2::{MocoV2, MocoV2Config};
pub use moco_v3::{MocoV3, MocoV3Config};
pub use rotation::{Rotation, RotationConfig};
pub use simclr::{SimClr, SimClrConfig};
pub use simsiam::{SimSiam, SimSiamConfig};
pub use swav::{Swav, SwavConfig};
pub use two_view::{TwoView, TwoViewSpec};
pub use vicreg::{VicReg, VicRegMethodConfig};
pub use vq_tokenizer::{VqTokenizer, VqTokenizerConfig};

use crate::augment::AugmentConfig;
use crate::models::EncoderConfig;
use selfsup_core::head::HeadConfig;
use selfsup_core::method::Batch;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// Which method, with its settings (`[method]` with `name = "simclr"`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum MethodConfig {
    Simclr(SimClrConfig),
    MocoV2(MocoV2Config),
    MocoV3(MocoV3Config),
    Byol(ByolConfig),
    Simsiam(SimSiamConfig),
    Dino(DinoConfig),
    /// DINOv2's recipe (Oquab et al. 2023): DINO + iBOT + KoLeo +
    /// Sinkhorn-Knopp centring, on a ViT.
    Dinov2(Dinov2Config),
    BarlowTwins(BarlowTwinsMethodConfig),
    Vicreg(VicRegMethodConfig),
    Swav(SwavConfig),
    /// Rotation prediction (Gidaris et al. 2018).
    Rotation(RotationConfig),
    /// Context prediction (Doersch et al. 2015).
    Context(ContextConfig),
    /// Jigsaw puzzles (Noroozi & Favaro 2016).
    Jigsaw(JigsawConfig),
    /// Colorization (Zhang et al. 2016); needs RGB data.
    Colorization(ColorizationConfig),
    Mae(MaeConfig),
    Ijepa(IjepaConfig),
    /// DeepCluster (Caron et al. 2018): k-means pseudo-labels each epoch.
    Deepcluster(DeepClusterConfig),
    /// The VQ visual tokenizer BEiT predicts the codes of.
    VqTokenizer(VqTokenizerConfig),
    /// BEiT (Bao et al. 2021): masked patches' tokenizer codes.
    Beit(BeitConfig),
}

impl Default for MethodConfig {
    fn default() -> Self {
        Self::Simclr(SimClrConfig::default())
    }
}

/// Every `[method] name` [`MethodConfig`] accepts, in its order.
pub const NAMES: [&str; 19] = [
    "simclr",
    "moco_v2",
    "moco_v3",
    "byol",
    "simsiam",
    "dino",
    "dinov2",
    "barlow_twins",
    "vicreg",
    "swav",
    "rotation",
    "context",
    "jigsaw",
    "colorization",
    "mae",
    "ijepa",
    "deepcluster",
    "vq_tokenizer",
    "beit",
];

/// What a config is checked against before training starts.
#[derive(Debug, Clone, Copy)]
pub struct DataFacts {
    /// Training images.
    pub images: usize,
    /// Side of the (square) images.
    pub side: usize,
    /// Colour channels.
    pub channels: usize,
    /// Images per batch.
    pub batch_size: usize,
}

impl MethodConfig {
    /// The `name` of the method.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Simclr(_) => "simclr",
            Self::MocoV2(_) => "moco_v2",
            Self::MocoV3(_) => "moco_v3",
            Self::Byol(_) => "byol",
            Self::Simsiam(_) => "simsiam",
            Self::Dino(_) => "dino",
            Self::Dinov2(_) => "dinov2",
            Self::BarlowTwins(_) => "barlow_twins",
            Self::Vicreg(_) => "vicreg",
            Self::Swav(_) => "swav",
            Self::Rotation(_) => "rotation",
            Self::Context(_) => "context",
            Self::Jigsaw(_) => "jigsaw",
            Self::Colorization(_) => "colorization",
            Self::Mae(_) => "mae",
            Self::Ijepa(_) => "ijepa",
            Self::Deepcluster(_) => "deepcluster",
            Self::VqTokenizer(_) => "vq_tokenizer",
            Self::Beit(_) => "beit",
        }
    }

    /// Refuses settings of the method that would train nonsense whatever the
    /// data (a temperature that is not positive, an EMA momentum above 1, a
    /// head without layers, a mask ratio outside (0, 1)), before any data is
    /// read; the error names the `[method]` key.
    pub fn check_ranges(&self) -> Result<()> {
        // The predictor maps projections to the space of the other branch's
        // projections, which it is compared with.
        fn predictor_fits(
            projector: &HeadConfig,
            predictor: &HeadConfig,
        ) -> std::result::Result<(), String> {
            if predictor.out_dim == projector.out_dim {
                Ok(())
            } else {
                Err(format!(
                    "[method] predictor.out_dim = {} must equal projector.out_dim = {}: the \
                     prediction is compared with the other branch's projection",
                    predictor.out_dim, projector.out_dim
                ))
            }
        }
        use selfsup_core::trainer::{non_negative, positive};
        let k = |s: &str| format!("[method] {s}");
        let r: std::result::Result<(), String> = match self {
            Self::Simclr(m) => m.head.validate(&k("head")).and(m.loss.validate(&k("loss"))),
            Self::MocoV2(m) => m
                .projector
                .validate(&k("projector"))
                .and(m.loss.validate(&k("loss")))
                .and(m.ema.validate(&k("ema"))),
            Self::MocoV3(m) => m
                .projector
                .validate(&k("projector"))
                .and(m.predictor.validate(&k("predictor")))
                .and(predictor_fits(&m.projector, &m.predictor))
                .and(m.loss.validate(&k("loss")))
                .and(m.ema.validate(&k("ema"))),
            Self::Byol(m) => m
                .projector
                .validate(&k("projector"))
                .and(m.predictor.validate(&k("predictor")))
                .and(if m.use_predictor {
                    predictor_fits(&m.projector, &m.predictor)
                } else {
                    Ok(())
                })
                .and(m.ema.validate(&k("ema"))),
            Self::Simsiam(m) => m
                .projector
                .validate(&k("projector"))
                .and(m.predictor.validate(&k("predictor")))
                .and(predictor_fits(&m.projector, &m.predictor)),
            Self::Dino(m) => m
                .loss
                .validate(&k("loss"))
                .and(m.ema.validate(&k("ema")))
                .and(non_negative(
                    &k("freeze_last_layer_epochs"),
                    m.freeze_last_layer_epochs,
                )),
            Self::BarlowTwins(m) => m
                .projector
                .validate(&k("projector"))
                .and(m.loss.validate(&k("loss"))),
            Self::Vicreg(m) => m
                .projector
                .validate(&k("projector"))
                .and(m.loss.validate(&k("loss"))),
            Self::Swav(m) => m
                .projector
                .validate(&k("projector"))
                .and(m.loss.validate(&k("loss")))
                .and(if m.prototypes < 1 {
                    Err(k("prototypes must be at least 1"))
                } else {
                    Ok(())
                }),
            Self::Mae(m) => {
                if m.mask_ratio.is_finite() && m.mask_ratio > 0.0 && m.mask_ratio < 1.0 {
                    Ok(())
                } else {
                    Err(format!(
                        "{} = {}: must be above 0 and below 1",
                        k("mask_ratio"),
                        m.mask_ratio
                    ))
                }
            }
            Self::Ijepa(m) => m.ema.validate(&k("ema")),
            Self::Dinov2(m) => m.check_ranges(),
            Self::Deepcluster(m) => m.check_ranges(),
            Self::VqTokenizer(m) => m.check_ranges(),
            Self::Beit(m) => m.check_ranges(),
            Self::Colorization(m) => {
                positive(&k("bin_size"), m.bin_size).and(non_negative(&k("rebalance"), m.rebalance))
            }
            Self::Rotation(_) | Self::Context(_) | Self::Jigsaw(_) => Ok(()),
        };
        r.map_err(Error::Config)
    }

    /// Refuses, before anything is built, a method that does not fit the
    /// encoder, the views or the data: the error says which key to change.
    pub fn validate(
        &self,
        model: &EncoderConfig,
        augment: &AugmentConfig,
        data: &DataFacts,
    ) -> Result<()> {
        let name = self.name();
        model.validate()?;
        augment.validate()?;
        let multi_crop = matches!(self, Self::Dino(_) | Self::Dinov2(_) | Self::Swav(_));
        let pretext = matches!(
            self,
            Self::Rotation(_) | Self::Context(_) | Self::Jigsaw(_) | Self::Colorization(_)
        );
        let views = if pretext { 1 } else { 2 };
        if augment.views != views {
            return Err(Error::Config(format!(
                "{name} needs augment.views = {views} (full-size views per image), got {}",
                augment.views
            )));
        }
        if augment.local_crops.count > 0 && !multi_crop {
            return Err(Error::Config(format!(
                "{name} does not use multi-crop: set augment.local_crops.count = 0 (only dino, dinov2 and swav use local crops)"
            )));
        }
        if augment.local_crops.count > 0 && augment.local_crops.side_for(data.side) > data.side {
            return Err(Error::Config(format!(
                "augment.local_crops.size {} does not fit the {}x{} images",
                augment.local_crops.side_for(data.side),
                data.side,
                data.side
            )));
        }
        if data.batch_size < 2 {
            return Err(Error::Config(format!(
                "{name} needs at least 2 images per batch"
            )));
        }
        if let Self::MocoV2(m) = self {
            m.validate(data.images, data.batch_size)?;
        }
        if let Self::Deepcluster(m) = self {
            m.validate(data.images)?;
        }
        Ok(())
    }
}

/// Errors unless the batch holds between `min` and `max` views.
pub(crate) fn check_views(method: &str, batch: &Batch, min: usize, max: usize) -> Result<()> {
    let n = batch.views.len();
    if n < min || n > max {
        let want = if min == max {
            format!("exactly {min}")
        } else if max == usize::MAX {
            format!("at least {min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(Error::Config(format!(
            "{method} needs {want} views per image, got {n}"
        )));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_util {
    use selfsup_core::distributed::SingleProcess;
    use selfsup_core::method::{Batch, Method, StepCtx};
    use selfsup_core::optim::{OptimConfig, OptimKind, Params};
    use tch::{Device, Kind, Tensor};

    /// `n` images `[n, c, hw, hw]`: a bright 5x5 square at a random place on
    /// a horizontal gradient of random slope, plus a little noise (std 0.02).
    pub(crate) fn structured_images(n: i64, c: i64, hw: i64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        let opts = (Kind::Float, Device::Cpu);
        let yy = Tensor::arange(hw, opts).view([1, 1, hw, 1]);
        let xx = Tensor::arange(hw, opts).view([1, 1, 1, hw]);
        let cy = Tensor::randint(hw - 5, [n, 1, 1, 1], opts);
        let cx = Tensor::randint(hw - 5, [n, 1, 1, 1], opts);
        let inside = yy.ge_tensor(&cy)
            * yy.lt_tensor(&(&cy + 5.0))
            * xx.ge_tensor(&cx)
            * xx.lt_tensor(&(&cx + 5.0));
        let slope = Tensor::rand([n, 1, 1, 1], opts) * 2.0 - 1.0;
        inside.to_kind(Kind::Float) * 2.0
            + &xx * slope / hw as f64
            + Tensor::randn([n, c, hw, hw], opts) * 0.02
    }

    /// `steps` AdamW steps (weight decay 0.05) at `lr`, cycling over
    /// `batches` (each given as two identical views), with torch seeded per
    /// step as the trainer does and `after_step` called; returns the mean
    /// loss of the first 5 and of the last 5 steps.
    pub(crate) fn train_steps(
        method: &mut dyn Method,
        batches: &[Tensor],
        steps: u64,
        lr: f64,
    ) -> (f64, f64) {
        let params = Params::of(method.var_store());
        let mut params = params;
        let mut opt = OptimConfig {
            kind: OptimKind::AdamW,
            lr,
            weight_decay: 0.05,
            betas: (0.9, 0.95),
            ..Default::default()
        }
        .build(&params);
        let mut losses = Vec::new();
        for step in 0..steps {
            tch::manual_seed(1000 + step as i64);
            let x = &batches[step as usize % batches.len()];
            let batch = Batch {
                views: vec![x.shallow_clone(), x.shallow_clone()],
            };
            let ctx = StepCtx {
                step,
                total_steps: steps,
                epoch: 0,
                steps_per_epoch: 1,
                comm: &SingleProcess,
            };
            params.zero_grad();
            let out = method.step(&batch, &ctx).unwrap();
            let loss = out.loss.double_value(&[]);
            assert!(loss.is_finite(), "step {step}: loss {loss}");
            out.loss.backward();
            opt.step(&params, lr);
            method.after_step(&ctx);
            losses.push(loss);
        }
        let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
        (mean(&losses[..5]), mean(&losses[losses.len() - 5..]))
    }
}

#[cfg(test)]
mod names_tests {
    use super::{MethodConfig, NAMES};

    /// `NAMES` is exactly what `[method] name` accepts: each parses to its
    /// own method, and serde's list of the variants is the same list.
    #[test]
    fn names_are_the_method_config_variants() {
        for name in NAMES {
            let parsed: MethodConfig = toml::from_str(&format!("name = \"{name}\"")).unwrap();
            assert_eq!(parsed.name(), name);
        }
        let err = toml::from_str::<MethodConfig>("name = \"nope\"")
            .unwrap_err()
            .to_string();
        let listed: Vec<&str> = err
            .split("expected one of ")
            .nth(1)
            .and_then(|rest| rest.lines().next())
            .unwrap_or_default()
            .split(',')
            .map(|v| v.trim().trim_matches('`'))
            .filter(|v| !v.is_empty())
            .collect();
        assert_eq!(listed, NAMES, "{err}");
    }
}
