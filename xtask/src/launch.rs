//! `--nproc N`: starts N local ranks of one `selfsup pretrain` command with
//! torchrun's variables, the way torchrun would on one machine.
use anyhow::{bail, Context, Result};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How long the other ranks get to fail on their own (with their own error
/// message) after one rank has failed, before they are killed.
const GRACE: Duration = Duration::from_secs(60);

/// Runs `make(rank)` for ranks `0..nproc` on loopback and waits for all.
/// Threads are split evenly between ranks unless `threads` is given.
pub fn run_local_ranks(
    nproc: usize,
    threads: Option<usize>,
    make: impl Fn(usize) -> Command,
) -> Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port for the rendezvous")?
        .port();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_rank = threads.unwrap_or((cores / nproc).max(1));
    eprintln!("xtask: {nproc} ranks on 127.0.0.1:{port}, {per_rank} threads each");
    let mut children: Vec<(usize, Child)> = Vec::with_capacity(nproc);
    for rank in 0..nproc {
        let mut cmd = make(rank);
        cmd.env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", nproc.to_string())
            .env("LOCAL_WORLD_SIZE", nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("OMP_NUM_THREADS", per_rank.to_string())
            // The loader's augmentation pool too, or every rank takes all cores.
            .env("RAYON_NUM_THREADS", per_rank.to_string())
            .arg("--threads")
            .arg(per_rank.to_string());
        let child = cmd
            .spawn()
            .with_context(|| format!("starting rank {rank}: {cmd:?}"))?;
        children.push((rank, child));
    }
    let mut failed: Vec<String> = Vec::new();
    let mut first_failure: Option<Instant> = None;
    while !children.is_empty() {
        let mut i = 0;
        while i < children.len() {
            match children[i].1.try_wait()? {
                Some(status) => {
                    let (rank, _) = children.remove(i);
                    if !status.success() {
                        failed.push(format!("rank {rank} exited with {status}"));
                        first_failure.get_or_insert_with(Instant::now);
                    }
                }
                None => i += 1,
            }
        }
        if first_failure.is_some_and(|t| t.elapsed() > GRACE) {
            for (rank, child) in &mut children {
                let _ = child.kill();
                let _ = child.wait();
                failed.push(format!(
                    "rank {rank} killed {}s after the first failure",
                    GRACE.as_secs()
                ));
            }
            children.clear();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !failed.is_empty() {
        bail!("the data-parallel run failed: {}", failed.join("; "));
    }
    Ok(())
}
