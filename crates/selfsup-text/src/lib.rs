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
//! - [`pretrain`]: the workflow the CLI runs
pub mod corpus;
pub mod embed;
pub mod error;
pub mod eval;
pub mod export;
pub mod loader;
pub mod masking;
pub mod methods;
pub mod model;
pub mod packing;
pub mod pretrain;
pub mod tokenizer;

pub use error::{TextError, TextResult};
