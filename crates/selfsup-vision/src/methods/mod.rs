//! Vision methods, one per file, chosen by the `[method]` table of a run config.
pub mod colorization;
pub mod context;
pub mod jigsaw;
pub mod pretext;
pub mod rotation;
pub mod simclr;

pub use colorization::{Colorization, ColorizationConfig};
pub use context::{Context, ContextConfig};
pub use jigsaw::{Jigsaw, JigsawConfig};
pub use rotation::{Rotation, RotationConfig};
use serde::{Deserialize, Serialize};
pub use simclr::{SimClr, SimClrConfig};

/// Which method, with its settings (`[method]` with `name = "simclr"`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum MethodConfig {
    Simclr(SimClrConfig),
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
