//! Data-parallel selfsup runs on PyTorch's own c10d, driven from libtorch
//! through a small C++ shim (`cpp/`): a TCPStore rendezvous, then
//! ProcessGroupGloo (CPU) or ProcessGroupNCCL (GPU). selfsup implements no
//! collective itself.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use selfsup_c10d::{Backend, C10dCollective, Launch, ProcessGroup, DEFAULT_BUCKET_BYTES};
//! let launch = Launch::from_vars(|k| std::env::var(k).ok())?.expect("started by a launcher");
//! let pg = ProcessGroup::join(&launch, Backend::Gloo, std::time::Duration::from_secs(1800))?;
//! let comm = C10dCollective::new(pg, DEFAULT_BUCKET_BYTES);
//! // trainer.with_collective(Box::new(comm))
//! # Ok(()) }
//! ```
mod error;
mod ffi;
pub mod launch;
mod process_group;

pub use error::{Error, Result};
pub use launch::{Launch, Launcher};
pub use process_group::{Backend, C10dCollective, ProcessGroup, DEFAULT_BUCKET_BYTES};
