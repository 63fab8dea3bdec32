//! Vision methods, one per file, chosen by the `[method]` table of a run config.
//!
//! | family | methods |
//! |---|---|
//! | contrastive | [`simclr`], [`moco_v2`], [`moco_v3`] |
//! | self-distillation | [`byol`], [`simsiam`], [`dino`] |
//! | redundancy reduction | [`barlow_twins`], [`vicreg`] |
//! | clustering | [`swav`] |
//! | hand-designed pretext tasks | [`rotation`], [`jigsaw`], [`colorization`], [`context`] |
//!
//! Shared pieces live once: losses in `selfsup_core::loss`, EMA teachers in
//! `selfsup_core::ema`, heads in `selfsup_core::head`, the encoder +
//! projector pair in [`branch`], multi-crop in [`crate::augment`].
pub mod barlow_twins;
pub mod branch;
pub mod byol;
pub mod colorization;
pub mod context;
pub mod dino;
pub mod jigsaw;
pub mod moco_v2;
pub mod moco_v3;
pub mod pretext;
pub mod rotation;
pub mod simclr;
pub mod simsiam;
pub mod swav;
pub mod vicreg;

pub use barlow_twins::{BarlowTwins, BarlowTwinsMethodConfig};
pub use byol::{Byol, ByolConfig};
pub use colorization::{Colorization, ColorizationConfig};
pub use context::{Context, ContextConfig};
pub use dino::{Dino, DinoConfig, DinoHeadConfig};
pub use jigsaw::{Jigsaw, JigsawConfig};
pub use moco_v2::{MocoV2, MocoV2Config};
pub use moco_v3::{MocoV3, MocoV3Config};
pub use rotation::{Rotation, RotationConfig};
pub use simclr::{SimClr, SimClrConfig};
pub use simsiam::{SimSiam, SimSiamConfig};
pub use swav::{Swav, SwavConfig};
pub use vicreg::{VicReg, VicRegMethodConfig};

use crate::augment::AugmentConfig;
use crate::models::EncoderConfig;
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
}

impl Default for MethodConfig {
    fn default() -> Self {
        Self::Simclr(SimClrConfig::default())
    }
}

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
            Self::BarlowTwins(_) => "barlow_twins",
            Self::Vicreg(_) => "vicreg",
            Self::Swav(_) => "swav",
            Self::Rotation(_) => "rotation",
            Self::Context(_) => "context",
            Self::Jigsaw(_) => "jigsaw",
            Self::Colorization(_) => "colorization",
        }
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
        let multi_crop = matches!(self, Self::Dino(_) | Self::Swav(_));
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
                "{name} does not use multi-crop: set augment.local_crops.count = 0 (only dino and swav use local crops)"
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
