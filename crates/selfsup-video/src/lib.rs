//! Self-supervised video: Moving Fashion-MNIST (generated, labelled) and
//! the user's clips as folders of frames, augmentations consistent across
//! frames, a tubelet ViT, V-JEPA and temporal order (Shuffle and Learn),
//! and probes for garment class and motion direction on frozen features
//! beside random weights and raw frames. Depends on `selfsup-core` alone.
//!
//! - [`idx`]: Fashion-MNIST's IDX files (the garments)
//! - [`moving`]: the Moving Fashion-MNIST generator
//! - [`frames`]: folders of frames -> clips, bad folders refused
//! - [`clips`], [`augment`], [`batches`]: clips in memory, clip-consistent
//!   augmentation, a resumable core `BatchSource`
//! - [`model`]: the tubelet ViT
//! - [`methods`]: V-JEPA and temporal order on the core `Method` trait
//! - [`eval`]: the probes and the per-epoch evaluator
//! - [`export`]: the encoder as safetensors + config.json
//! - [`config`], [`pretrain`], [`workflow`]: the run config, the workflow on
//!   core's `Run`, the modality's entry for the `selfsup` binary
pub mod augment;
pub mod batches;
pub mod clips;
pub mod config;
pub mod eval;
pub mod export;
pub mod frames;
pub mod idx;
pub mod methods;
pub mod model;
pub mod moving;
pub mod pretrain;
pub mod workflow;

/// The video modality, for the `selfsup` binary's registry.
pub const MODALITY: &dyn selfsup_core::workflow::Modality = &workflow::VideoModality;

/// libtorch's global generator is shared by the unit tests of this crate:
/// the tests that seed it take turns.
#[cfg(test)]
pub(crate) static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
