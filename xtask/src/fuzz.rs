//! `cargo xtask fuzz <target|all> [--seconds N] [--execs N]`: builds the
//! `selfsup-fuzz` binary (it links libtorch through the readers' crates;
//! xtask does not) and runs it, writing `target/fuzz/report.{json,md}` and any
//! crashing input under `target/fuzz/crashes/<target>/`.
//!
//! The binary is built with the dev profile by default: dependencies at
//! opt-level 2, the readers at 1, and overflow checks on, so an arithmetic
//! overflow reachable from a file is a crash here (in release it would wrap
//! silently); it also reuses the artifacts of `cargo test`. `--release` trades
//! that for speed.
//!
//! The short pass of `cargo xtask test` is the `selfsup-fuzz` crate's own test
//! (a fixed number of executions per target), run with the workspace's tests.
use crate::{cargo, paths, run, torch_env};
use anyhow::Result;
use std::process::Command;

/// Arguments of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct FuzzArgs {
    /// A target, a comma-separated list, `all`, or `list` to print them.
    #[arg(default_value = "all")]
    pub target: String,
    /// Seconds per target (default 10 when --execs is not given either).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Executions per target (with --seconds: whichever comes first).
    #[arg(long)]
    pub execs: Option<u64>,
    /// Seed of the mutations (the same seed replays the same inputs).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Targets fuzzed at the same time (one child process each).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Build in release (faster, but arithmetic overflow wraps unseen).
    #[arg(long)]
    pub release: bool,
}

pub fn fuzz(a: FuzzArgs) -> Result<()> {
    let env = torch_env::ensure()?;
    let mut build = Command::new(cargo());
    build.args(["build", "-p", "selfsup-fuzz"]);
    if a.release {
        build.arg("--release");
    }
    env.apply(&mut build);
    run(&mut build)?;
    let out = paths::target_dir().join("fuzz");
    let profile = if a.release { "release" } else { "debug" };
    let mut cmd = Command::new(paths::target_dir().join(profile).join("selfsup-fuzz"));
    cmd.arg(&a.target)
        .arg("--seed")
        .arg(a.seed.to_string())
        .arg("--jobs")
        .arg(a.jobs.to_string())
        .arg("--crashes")
        .arg(out.join("crashes"))
        .arg("--report")
        .arg(&out);
    if let Some(s) = a.seconds {
        cmd.arg("--seconds").arg(s.to_string());
    }
    if let Some(n) = a.execs {
        cmd.arg("--execs").arg(n.to_string());
    }
    env.apply(&mut cmd);
    run(&mut cmd)
}
