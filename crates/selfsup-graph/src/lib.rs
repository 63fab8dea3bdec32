//! Self-supervised learning on graphs: GRACE, DGI, GraphCL and GAE.
//!
//! - [`graph`]: petgraph graphs -> tensors (edge index, GCN normalisation,
//!   disjoint batches), fix-ups counted
//! - [`readers`]: edge lists, adjacency CSV + labels, Planetoid, and the
//!   registry datasets (Drosophila, mice, QM9, karate); [`smiles`] and
//!   [`pickle`] for the formats inside them
//! - [`augment`]: edge dropping, feature masking, node dropping, random-walk
//!   subgraphs, seeded
//! - [`encoders`]: GCN and GIN, readouts; [`propagation`]: their message
//!   passing as one sparse (or, for small dense graphs, dense) product
//! - [`methods`]: GRACE, DGI, GraphCL, GAE on the core `Method` trait
//! - [`link`]: link prediction on held-out edges (seeded split, AUC and
//!   average precision beside random weights, raw features, common
//!   neighbours and Adamic-Adar)
//! - [`source`]: views as a resumable core `BatchSource`
//! - [`eval`]: probes and ridge regression beside raw-feature and
//!   random-weights baselines
//! - [`export`]: embeddings (safetensors, `.npy`) and encoder weights
//! - [`finetune`]: `selfsup eval finetune` on node classification (core's
//!   label-efficiency protocol with a GNN)
//! - [`config`]: the run config (one TOML file) and the method it builds
//! - [`pretrain`]: the workflow, on core's `Run`
//! - [`workflow`]: the modality's entry for the `selfsup` binary
pub mod augment;
pub mod config;
pub mod embed;
pub mod encoders;
pub mod error;
pub mod eval;
pub mod export;
pub mod finetune;
pub mod graph;
pub mod link;
pub mod methods;
pub mod pickle;
pub mod pretrain;
pub mod propagation;
pub mod readers;
pub mod smiles;
pub mod source;
pub mod workflow;

pub use error::{GraphError, GraphResult};

/// The graph modality, for the `selfsup` binary's registry.
pub const MODALITY: &dyn selfsup_core::workflow::Modality = &workflow::GraphModality;

/// libtorch's global generator is shared by the unit tests of this crate:
/// the tests that seed it take turns.
#[cfg(test)]
pub(crate) static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
