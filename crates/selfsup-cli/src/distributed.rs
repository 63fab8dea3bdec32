//! Joins a data-parallel run when a launcher started this process: torchrun's
//! or SLURM's variables, or `cargo xtask pretrain-* --nproc N`'s (the same
//! as torchrun's).
use anyhow::{Context, Result};
use selfsup_c10d::{Backend, C10dCollective, Launch, ProcessGroup, DEFAULT_BUCKET_BYTES};
use selfsup_core::device::DeviceChoice;
use selfsup_core::distributed::Distributed;
use std::time::Duration;

/// `--backend`: which c10d backend carries the collectives.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum BackendChoice {
    /// NCCL on CUDA, Gloo on CPU.
    Auto,
    Gloo,
    Nccl,
}

/// `None` for a single process; otherwise this rank, joined to the others.
pub fn join(
    device: DeviceChoice,
    backend: BackendChoice,
    timeout: Duration,
) -> Result<Option<Distributed>> {
    let Some(launch) = Launch::from_vars(|k| std::env::var(k).ok())? else {
        return Ok(None);
    };
    let on_cuda = device
        .resolve_local(launch.local_rank, launch.local_world_size)?
        .is_cuda();
    let backend = match backend {
        BackendChoice::Gloo => Backend::Gloo,
        BackendChoice::Nccl => Backend::Nccl,
        BackendChoice::Auto if on_cuda && Backend::nccl_available() => Backend::Nccl,
        BackendChoice::Auto => Backend::Gloo,
    };
    if launch.rank == 0 {
        eprintln!(
            "data-parallel run: {} ranks, {backend:?}, rendezvous at {}:{}",
            launch.world_size, launch.master_addr, launch.master_port
        );
    }
    let pg = ProcessGroup::join(&launch, backend, timeout)
        .context("joining the data-parallel run (are all ranks started, with the same MASTER_ADDR/MASTER_PORT?)")?;
    Ok(Some(Distributed {
        comm: Box::new(C10dCollective::new(pg, DEFAULT_BUCKET_BYTES)),
        local_rank: launch.local_rank,
    }))
}
