//! Self-supervised learning on speech: wav2vec 2.0 (Baevski et al. 2020,
//! arXiv:2006.11477) on the core design.
//!
//! - [`read`]: WAV (hound) and Ogg Vorbis (lewton) -> mono samples
//! - [`resample`]: any rate -> 16 kHz (rubato)
//! - [`normalize`]: zero mean, unit variance (wav2vec2's feature extractor)
//! - [`dataset`]: folders of recordings, labels CSVs, skip-and-count
//! - [`batch`]: seeded random crops, padding, attention masks
//! - [`masking`]: span masking and distractor sampling (transformers' semantics)
//! - [`model`]: the encoder with transformers' `Wav2Vec2ForPreTraining` names
//! - [`loss`]: the contrastive and diversity losses
//! - [`methods`]: wav2vec 2.0 on the core `Method` trait
//! - [`logmel`]: the log-mel filterbank baseline
//! - [`eval`]: frozen per-layer features, linear probes, baselines
//! - [`finetune`]: `selfsup eval finetune` (label efficiency, pre-trained vs scratch)
//! - [`export`]: transformers' layout (`config.json` + `model.safetensors`)
//! - [`config`]: the run's config file, checked before any data; `--recordings`
//! - [`pretrain`]: the workflow, on core's `Run`
//! - [`report`]: the end-of-run summary as lines
//! - [`workflow`]: audio's entry in the `selfsup` binary's registry
pub mod batch;
pub mod config;
pub mod dataset;
pub mod embed;
pub mod error;
pub mod eval;
pub mod export;
pub mod finetune;
pub mod logmel;
pub mod loss;
pub mod masking;
pub mod methods;
pub mod model;
pub mod normalize;
pub mod pretrain;
pub mod read;
pub mod report;
pub mod resample;
pub mod workflow;

pub use error::{AudioError, Result};

/// Audio's entry in the `selfsup` binary's registry.
pub const MODALITY: &dyn selfsup_core::workflow::Modality = &workflow::AudioModality;
