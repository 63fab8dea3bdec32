pub mod models;
pub mod export;
pub mod error;
pub mod data;
pub mod augment;
pub mod loader;

pub use error::{Error, Result};
pub mod methods;
pub mod pretrain;
