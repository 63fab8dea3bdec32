//! Fuzzing of every reader that takes bytes from a user, on stable Rust.
//!
//! Each [`engine::Target`] wraps one reader (IDX, CIFAR, image files, WAV,
//! Ogg, edge lists, adjacency CSV, labels, Planetoid pickles, SMILES / QM9,
//! captions CSV / JSON Lines, text corpora, TOML configs, safetensors
//! headers and checkpoints) with seeds built in code — plus real dataset
//! files when `cargo xtask fetch` has put them in the cache. The
//! [`mutate::Mutator`] derives inputs deterministically from a seed;
//! [`engine::run_target`] runs them in a child process under
//! `catch_unwind`, with the counting allocator of [`alloc`] refusing any
//! single allocation above the cap (1 GiB by default) and flagging those
//! above the warning cap (256 MiB).
//!
//! `selfsup-fuzz <target|all> [--seconds N] [--execs N]` (or `cargo xtask
//! fuzz`) prints the table; `cargo test -p selfsup-fuzz` runs every target for
//! a fixed number of executions.
pub mod alloc;
pub mod engine;
pub mod mutate;
pub mod seeds;
pub mod targets;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;
