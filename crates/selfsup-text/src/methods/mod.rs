//! Text methods, one per file.
mod mlm;
mod next_token;

pub use mlm::{Mlm, MlmEval};
pub use next_token::{causal_batch, lm_labels, CausalBatches, NextToken, NextTokenEval};
