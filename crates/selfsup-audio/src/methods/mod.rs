//! Audio methods on the core `Method` trait, one per file.
pub mod cpc;
pub mod wav2vec2;

pub use cpc::{CpcEpochEval, CpcMethod, CpcMethodConfig};
pub use wav2vec2::{Wav2Vec2Method, Wav2Vec2MethodConfig};
