//! Self-supervised learning on text: BERT-style masked language modelling.
//!
//! - [`corpus`]: folders of `.txt`, JSON Lines, Brown, SpamAssassin -> documents
//! - [`tokenizer`]: WordPiece through the `tokenizers` crate (trained or loaded)
//! - [`packing`]: documents -> fixed-length `[CLS] ... [SEP]` sequences
//! - [`masking`]: the MLM view (15%, 80/10/10, whole words optional)
//! - [`loader`]: masked batches as a resumable `BatchSource`
//! - [`model`]: BERT with transformers' variable names
//! - [`methods`]: MLM on the core `Method` trait
//! - [`eval`]: validation perplexity, unigram baseline, downstream probes
//! - [`export`]: transformers' `BertForMaskedLM` layout
//! - [`finetune`]: `eval finetune`, label efficiency on the downstream sets
//! - [`config`]: the run's config file, checked before any data
//! - next-token prediction (GPT-2): [`model::Gpt2`], [`methods::NextToken`],
//!   [`ngram`] (unigram / bigram baselines), [`causal_eval`], [`generate`],
//!   [`export_gpt2`] (transformers' `GPT2LMHeadModel`), [`pretrain_next_token`]
//! - [`pretrain`]: the workflow, on core's `Run`
//! - [`report`]: the end-of-run summary as lines
//! - [`workflow`]: text's entry in the `selfsup` binary's registry
pub mod causal_eval;
pub mod config;
pub mod corpus;
pub mod embed;
pub mod error;
pub mod eval;
pub mod export;
pub mod export_gpt2;
pub mod finetune;
pub mod generate;
pub mod loader;
pub mod masking;
pub mod methods;
pub mod model;
pub mod ngram;
pub mod packing;
pub mod pretrain;
pub mod pretrain_next_token;
pub mod report;
pub mod tokenizer;
pub mod workflow;

pub use error::{TextError, TextResult};
/// The tch this crate is built on, so a user of its API needs no own pin.
pub use tch;

/// Text's entry in the `selfsup` binary's registry.
pub const MODALITY: &dyn selfsup_core::workflow::Modality = &workflow::TextModality;
