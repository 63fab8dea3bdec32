//! Who this process is in a run, read from the variables launchers set:
//! torchrun's (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`,
//! `MASTER_PORT`) or SLURM's (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`,
//! with `MASTER_ADDR` or else `SLURM_LAUNCH_NODE_IPADDR`). The caller passes
//! the lookup (the CLI passes `std::env::var`): libraries read no environment.
use crate::error::{Error, Result};

/// The default rendezvous port, as torchrun's.
pub const DEFAULT_PORT: u16 = 29500;

/// Which launcher's variables described the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// torchrun, `cargo xtask pretrain-* --nproc`, or hand-set variables.
    Torchrun,
    /// `srun`.
    Slurm,
}

/// This process's place in a multi-process run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub world_size: usize,
    /// Index on this host (picks the GPU).
    pub local_rank: usize,
    /// Ranks on this host (`LOCAL_WORLD_SIZE`, or SLURM's
    /// `SLURM_NTASKS_PER_NODE`; at least `local_rank + 1` when unset): more
    /// than the host's GPUs is refused before the rendezvous.
    pub local_world_size: usize,
    pub master_addr: String,
    pub master_port: u16,
    pub launcher: Launcher,
}

impl Launch {
    /// The run described by `var`, or `None` for a single process (no
    /// launcher variables, or a world of one).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
        let (launcher, rank_var, world_var, local_var) = if var("WORLD_SIZE").is_some() {
            (Launcher::Torchrun, "RANK", "WORLD_SIZE", "LOCAL_RANK")
        } else if var("SLURM_NTASKS").is_some() {
            (
                Launcher::Slurm,
                "SLURM_PROCID",
                "SLURM_NTASKS",
                "SLURM_LOCALID",
            )
        } else {
            return Ok(None);
        };
        let number = |name: &str| -> Result<Option<usize>> {
            match var(name) {
                None => Ok(None),
                Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
                    Error::Launch(format!("{name}={v:?} is not a non-negative integer"))
                }),
            }
        };
        let world_size = number(world_var)?.unwrap_or(1);
        if world_size <= 1 {
            return Ok(None);
        }
        let rank = number(rank_var)?.ok_or_else(|| {
            Error::Launch(format!(
                "{world_var} is {world_size} but {rank_var} is not set"
            ))
        })?;
        if rank >= world_size {
            return Err(Error::Launch(format!(
                "{rank_var}={rank} is not below {world_var}={world_size}"
            )));
        }
        let local_rank = number(local_var)?.unwrap_or(0);
        let local_world_var = match launcher {
            Launcher::Torchrun => "LOCAL_WORLD_SIZE",
            Launcher::Slurm => "SLURM_NTASKS_PER_NODE",
        };
        // SLURM writes heterogeneous layouts as "2(x3),1": the first count is this
        // host's when the hosts are alike; a bound, not a promise, either way.
        let local_world_size = match var(local_world_var) {
            None => None,
            Some(v) => {
                let digits: String = v.trim().chars().take_while(char::is_ascii_digit).collect();
                Some(digits.parse::<usize>().map_err(|_| {
                    Error::Launch(format!(
                        "{local_world_var}={v:?} is not a non-negative integer"
                    ))
                })?)
            }
        }
        .unwrap_or(0)
        .max(local_rank + 1);
        let master_addr = var("MASTER_ADDR")
            .or_else(|| (launcher == Launcher::Slurm).then(|| var("SLURM_LAUNCH_NODE_IPADDR")).flatten())
            .ok_or_else(|| {
                Error::Launch(format!(
                    "{world_var}={world_size} but MASTER_ADDR is not set: export the address of rank 0's host"
                ))
            })?;
        let master_port = match var("MASTER_PORT") {
            None => DEFAULT_PORT,
            Some(p) => p
                .trim()
                .parse::<u16>()
                .map_err(|_| Error::Launch(format!("MASTER_PORT={p:?} is not a port number")))?,
        };
        Ok(Some(Launch {
            rank,
            world_size,
            local_rank,
            local_world_size,
            master_addr,
            master_port,
            launcher,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn no_launcher_is_a_single_process() {
        assert_eq!(Launch::from_vars(vars(&[])).unwrap(), None);
        assert_eq!(
            Launch::from_vars(vars(&[("WORLD_SIZE", "1"), ("RANK", "0")])).unwrap(),
            None
        );
    }

    #[test]
    fn torchrun_variables() {
        let l = Launch::from_vars(vars(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29600"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((l.rank, l.world_size, l.local_rank), (3, 4, 1));
        assert_eq!(l.local_world_size, 2);
        assert_eq!((l.master_addr.as_str(), l.master_port), ("10.0.0.1", 29600));
        assert_eq!(l.launcher, Launcher::Torchrun);
    }

    #[test]
    fn slurm_variables_with_the_launch_node_as_master() {
        let l = Launch::from_vars(vars(&[
            ("SLURM_NTASKS", "2"),
            ("SLURM_PROCID", "1"),
            ("SLURM_LOCALID", "0"),
            ("SLURM_LAUNCH_NODE_IPADDR", "192.168.1.7"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((l.rank, l.world_size, l.master_port), (1, 2, DEFAULT_PORT));
        // No SLURM_NTASKS_PER_NODE: at least this rank's slot.
        assert_eq!(l.local_world_size, 1);
        assert_eq!(l.master_addr, "192.168.1.7");
        assert_eq!(l.launcher, Launcher::Slurm);
    }

    #[test]
    fn local_world_size_from_slurm_layouts_and_torchrun() {
        let base = [
            ("SLURM_NTASKS", "6"),
            ("SLURM_PROCID", "4"),
            ("SLURM_LOCALID", "1"),
            ("MASTER_ADDR", "h"),
        ];
        for (layout, want) in [("3", 3), ("2(x3)", 2), ("", 2)] {
            let mut v = base.to_vec();
            v.push(("SLURM_NTASKS_PER_NODE", layout));
            let l = Launch::from_vars(vars(&v)).map(Option::unwrap);
            if layout.is_empty() {
                assert!(l.unwrap_err().to_string().contains("SLURM_NTASKS_PER_NODE"));
            } else {
                assert_eq!(l.unwrap().local_world_size, want, "{layout}");
            }
        }
        // LOCAL_WORLD_SIZE below LOCAL_RANK + 1 is raised to it.
        let l = Launch::from_vars(vars(&[
            ("WORLD_SIZE", "2"),
            ("RANK", "1"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "1"),
            ("MASTER_ADDR", "h"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(l.local_world_size, 2);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = Launch::from_vars(vars(&[("WORLD_SIZE", "two")])).unwrap_err();
        assert!(e.to_string().contains("WORLD_SIZE=\"two\""), "{e}");
        let e = Launch::from_vars(vars(&[
            ("WORLD_SIZE", "2"),
            ("RANK", "2"),
            ("MASTER_ADDR", "h"),
        ]))
        .unwrap_err();
        assert!(
            e.to_string().contains("RANK=2 is not below WORLD_SIZE=2"),
            "{e}"
        );
        let e = Launch::from_vars(vars(&[("WORLD_SIZE", "2"), ("RANK", "0")])).unwrap_err();
        assert!(e.to_string().contains("MASTER_ADDR"), "{e}");
        let e = Launch::from_vars(vars(&[
            ("WORLD_SIZE", "2"),
            ("RANK", "0"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "99999"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("MASTER_PORT"), "{e}");
    }
}
