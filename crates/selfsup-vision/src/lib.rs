pub mod augment;
pub mod data;
pub mod embed;
pub mod error;
pub mod export;
pub mod loader;
pub mod models;

pub use error::{Error, Result};
pub mod methods;
pub mod pretrain;
