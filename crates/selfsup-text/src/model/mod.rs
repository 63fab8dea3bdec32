//! Text encoders.
mod bert;
mod gpt;

pub use bert::{Bert, BertConfig, BertSize, ModelConfig};
pub use gpt::{Gpt2, Gpt2Config};
