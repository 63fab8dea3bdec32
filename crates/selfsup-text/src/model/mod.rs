//! Text encoders.
mod bert;

pub use bert::{Bert, BertConfig, BertSize, ModelConfig};
