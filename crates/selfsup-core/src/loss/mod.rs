//! Losses shared by several methods and modalities: one loss, one type.
pub mod info_nce;

pub use info_nce::{InfoNce, InfoNceConfig};
