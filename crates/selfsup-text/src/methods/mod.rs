//! Text methods, one per file.
mod mlm;

pub use mlm::{Mlm, MlmEval};
