//! `selfsup-core`: the modality-free heart of selfsup.
//!
//! An unlabelled sample becomes views (in each modality crate); a [`method`] turns views into
//! embeddings and a [`target`]; a loss ([`loss`]) compares them; the [`trainer`]
//! optimises, schedules, checkpoints and watches for collapse ([`monitor`]);
//! [`eval`] measures what the representation is worth.
pub mod autocast;
pub mod batch_norm;
pub mod checkpoint;
pub mod device;
pub mod distributed;
pub mod ema;
pub mod embeddings;
pub mod encoder;
pub mod error;
pub mod eval;
pub mod head;
pub mod inside;
pub mod loss;
pub mod method;
pub mod metrics;
pub mod monitor;
pub mod optim;
pub mod plot;
pub mod run;
pub mod run_dir;
pub mod schedule;
pub mod source;
pub mod target;
pub mod tensor_io;
pub mod tensorboard;
pub mod trainer;
pub mod workflow;

pub use error::{Error, Result};
