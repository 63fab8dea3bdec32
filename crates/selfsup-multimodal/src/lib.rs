//! Image-text contrastive learning (CLIP, Radford et al. 2021,
//! arXiv:2103.00020) on selfsup's own encoders: an image tower from
//! `selfsup-vision`, a text tower from `selfsup-text`, linear projections to a
//! shared space, a learnable logit scale and core's symmetric InfoNCE.
//!
//! - [`image_file`]: one image file -> RGB bytes (alpha over white, resized)
//! - [`pairs`]: image-caption pairs from a captions file (CSV or JSON Lines)
//! - [`registry`]: the registry datasets as pairs (emoji, captioned Fashion-MNIST)
//! - [`held_out`]: Fashion-MNIST classes held out of training, for zero-shot
//! - [`captions`]: captions -> `[CLS] ... [SEP]` token rows and padded batches
//! - [`tower`]: the trait any two towers pair through (image or audio with text)
//! - [`model`]: the two towers, projections and logit scale
//! - [`method`]: CLIP on the core `Method` trait
//! - [`loader`]: augmented image + caption batches as a resumable `BatchSource`
//! - [`eval`]: zero-shot classification and Recall@K retrieval
//! - [`export`]: safetensors + config.json (HF `CLIPModel` names where they match)
//! - [`embed`]: an export or checkpoint back as a model, embeddings of files
//! - [`config`]: the run config (one TOML file); [`data`]: its sources as
//!   training pairs and evaluation sets
//! - [`pretrain`]: the workflow, on core's `Run`
//! - [`speech_pairs`], [`speech_batches`], [`speech_eval`], [`speech`],
//!   [`speech_export`]: speech-text CLIP (a log-mel or wav2vec 2.0 audio
//!   tower) on KLettres / KTuberling, evaluated on held-out speakers, exported
//!   with transformers' names
//! - [`workflow`]: the modality's entry for the `selfsup` binary
//! - [`allocator`]: glibc keeps freed memory for the next CPU step
pub mod allocator;
pub mod captions;
pub mod config;
pub mod data;
pub mod embed;
pub mod error;
pub mod eval;
pub mod export;
pub mod held_out;
pub mod image_file;
pub mod loader;
pub mod method;
pub mod model;
pub mod pairs;
pub mod pretrain;
pub mod registry;
pub mod speech;
pub mod speech_batches;
pub mod speech_eval;
pub mod speech_export;
pub mod speech_pairs;
pub mod tower;
pub mod workflow;

pub use error::{PairError, PairResult};

/// CLIP, for the `selfsup` binary's registry.
pub const MODALITY: &dyn selfsup_core::workflow::Modality = &workflow::ClipModality;

/// libtorch's global generator is shared by the unit tests of this crate:
/// the tests that seed it take turns.
#[cfg(test)]
pub(crate) static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
