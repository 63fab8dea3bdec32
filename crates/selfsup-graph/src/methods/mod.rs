//! Graph contrastive methods on the core `Method` trait, one per file:
//! [`grace`] (node level), [`dgi`] (node level), [`graphcl`] (graph level),
//! [`gae`] (node level, link reconstruction).
//!
//! A batch from [`crate::source`] holds, after a `[N]` or `[B]` id tensor,
//! the views as [`View`]s of [`crate::graph::VIEW_TENSORS`] tensors each
//! (GRACE, GraphCL: two augmented views; DGI: the graph and a node
//! permutation for its corruption).
pub mod dgi;
pub mod gae;
pub mod grace;
pub mod graphcl;

pub use dgi::{Dgi, DgiConfig};
pub use gae::{Gae, GaeConfig};
pub use grace::{Grace, GraceConfig};
pub use graphcl::{GraphCl, GraphClConfig};

use crate::encoders::GraphEncoder;
use crate::graph::{View, VIEW_TENSORS};
use selfsup_core::method::{Batch, Method};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// `[method]`: which method, with its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum GraphMethodConfig {
    Grace(GraceConfig),
    Dgi(DgiConfig),
    Graphcl(GraphClConfig),
    Gae(GaeConfig),
}

impl Default for GraphMethodConfig {
    fn default() -> Self {
        Self::Grace(GraceConfig::default())
    }
}

impl GraphMethodConfig {
    /// Every method's `[method] name`, as [`GraphMethodConfig::name`] gives
    /// it (a new variant adds its name here).
    pub const NAMES: [&'static str; 4] = ["grace", "dgi", "graphcl", "gae"];

    /// The `name` of the method.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Grace(_) => "grace",
            Self::Dgi(_) => "dgi",
            Self::Graphcl(_) => "graphcl",
            Self::Gae(_) => "gae",
        }
    }

    /// Whether the method learns graph embeddings (else node embeddings).
    pub fn graph_level(&self) -> bool {
        matches!(self, Self::Graphcl(_))
    }
}

/// What evaluation and export need from a graph method besides `Method`.
pub trait GraphMethod: Method {
    /// The encoder (for export).
    fn encoder(&self) -> &GraphEncoder;
    /// The evaluated representation of `v` in inference mode: node
    /// embeddings for node-level methods, graph embeddings for GraphCL.
    fn represent(&self, v: &View) -> Tensor;
}

/// View `k` (0-based) of a batch laid out as `[ids, view 0, view 1, ...]`.
pub(crate) fn view_of(batch: &Batch, k: usize) -> View {
    View::from_slice(&batch.views[1 + k * VIEW_TENSORS..1 + (k + 1) * VIEW_TENSORS])
}
