//! Self-supervised pre-training on images: datasets and image folders,
//! augmentations, encoders, sixteen methods, the pre-training workflow
//! ([`pretrain`]), export and embedding, and the crate's entry in the
//! `selfsup` binary's registry ([`MODALITY`]).
pub mod augment;
pub mod config;
pub mod data;
pub mod embed;
pub mod error;
pub mod evaluate;
pub mod export;
pub mod export_beit;
pub mod finetune;
pub mod load;
pub mod loader;
pub mod models;
pub mod robustness;
pub mod summary;
pub mod vision_method;
pub mod workflow;

pub use error::{Error, Result};
pub mod methods;
pub mod pretrain;

/// The libtorch bindings this crate is built on, for crates that depend on
/// it alone (tensors in, embeddings out).
pub use tch;

/// Vision in the `selfsup` binary's registry.
pub const MODALITY: &dyn selfsup_core::workflow::Modality = &workflow::VisionModality;
