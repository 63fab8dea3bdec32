//! A run folder as a transaction: one run at a time (an exclusive lock), no
//! fresh run over an earlier one unless asked (`--overwrite`), no resume
//! under a changed configuration unless asked (`--allow-config-change`), no
//! partial files left over from a crash.
//!
//! Every modality's `selfsup pretrain` calls [`prepare`] before it reads any
//! data and holds the returned [`Prepared`] (its lock) until it ends;
//! [`crate::trainer::Trainer::fit`] refuses a fresh run over an existing
//! checkpoint as a safety net for library callers.
use crate::trainer::{CHECKPOINT_FILE, METRICS_FILE, PLOT_FILE};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The lock file inside a run folder (holds the pid of the run).
pub const LOCK_FILE: &str = ".lock";

/// What a run writes into its folder: `--overwrite` removes these (and
/// nothing else) before a fresh run.
pub const RUN_OUTPUTS: [&str; 8] = [
    CHECKPOINT_FILE,
    METRICS_FILE,
    crate::metrics::TENSORBOARD_DIR,
    PLOT_FILE,
    "summary.json",
    "config.toml",
    "export",
    "tokenizer",
];

/// Keys of the resolved config a resumed run may change freely: how long
/// it trains, how often it checkpoints, where and on how many threads, and
/// the per-rank batch size (a run may resume on another number of ranks;
/// the trainer maps the checkpoint's position onto the new batches and
/// refuses what it cannot replay exactly).
pub const FREE_KEYS: [&str; 5] = [
    "trainer.epochs",
    "trainer.checkpoint_every",
    "run.device",
    "run.threads",
    "run.batch_size",
];

/// An exclusive `flock` on `<run_dir>/.lock`, released (and the file
/// removed) when dropped or when the process ends, however it ends: the
/// lock file of a dead process does not block.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    _file: File,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still locked: a waiting process notices that its
        // file is gone (see `lock`) and takes a new one.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Locks `run_dir` (created if needed) for this process, or says which
/// process holds it.
pub fn lock(run_dir: &Path) -> Result<RunLock> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
    let path = run_dir.join(LOCK_FILE);
    for _ in 0..16 {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // SAFETY: flock on a file descriptor this function owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(Error::io(&path, err));
            }
            let mut holder = String::new();
            let _ = file.take(64).read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                "another process".to_string()
            } else {
                format!("process {holder}")
            };
            return Err(Error::Data(format!(
                "run folder {} is in use by another selfsup run ({who} holds {}): \
                 wait for it to finish, or give another --run-dir",
                run_dir.display(),
                path.display()
            )));
        }
        // The holder before us may have removed the file after we opened
        // it: then our lock is on a file nobody else sees. Start again.
        let same = match (file.metadata(), std::fs::metadata(&path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if !same {
            continue;
        }
        file.set_len(0).map_err(|e| Error::io(&path, e))?;
        write!(file, "{}", std::process::id()).map_err(|e| Error::io(&path, e))?;
        file.flush().map_err(|e| Error::io(&path, e))?;
        return Ok(RunLock { path, _file: file });
    }
    Err(Error::Data(format!(
        "run folder {}: could not take {} (it keeps being replaced)",
        run_dir.display(),
        path.display()
    )))
}

/// Removes `*.tmp` files (partial writes of a run killed or out of disk
/// space) in `run_dir` and the folders a run writes below it; returns them.
pub fn remove_stale_tmp(run_dir: &Path) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() && depth > 0 {
                walk(&path, depth - 1, out)?;
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "tmp") {
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(run_dir, 3, &mut out)?;
    out.sort();
    Ok(out)
}

/// The files that show `run_dir` already holds a run: its checkpoint and
/// its metrics log.
pub fn previous_run_files(run_dir: &Path) -> Vec<PathBuf> {
    [CHECKPOINT_FILE, METRICS_FILE]
        .iter()
        .map(|f| run_dir.join(f))
        .filter(|p| p.exists())
        .collect()
}

/// Why a fresh run may not start in `run_dir` (holding `files`), and the
/// ways out.
pub fn occupied_message(run_dir: &Path, files: &[PathBuf]) -> String {
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            f.file_name()
                .map_or_else(|| f.display().to_string(), |n| n.to_string_lossy().into())
        })
        .collect();
    format!(
        "run folder {} already holds a run ({}): continue it with --resume, \
         start again with --overwrite (removes that run's files), or give another --run-dir",
        run_dir.display(),
        names.join(", ")
    )
}

/// Removes what an earlier run wrote into `run_dir` ([`RUN_OUTPUTS`]);
/// returns what was there.
pub fn remove_previous_run(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for name in RUN_OUTPUTS {
        let p = run_dir.join(name);
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        } else {
            std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
        }
        removed.push(p);
    }
    Ok(removed)
}

/// Leaves of a TOML value by dotted key (arrays are leaves).
fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// The keys whose values differ between two resolved configs (TOML), as
/// `key: old -> new`, sorted, [`FREE_KEYS`] left out.
pub fn config_changes(old: &str, new: &str) -> std::result::Result<Vec<String>, String> {
    let parse = |what: &str, s: &str| {
        s.parse::<toml::Table>()
            .map(toml::Value::Table)
            .map_err(|e| format!("the {what} config is not TOML: {e}"))
    };
    let (old, new) = (parse("checkpoint's", old)?, parse("new", new)?);
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten("", &old, &mut a);
    flatten("", &new, &mut b);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    Ok(keys
        .into_iter()
        .filter(|k| !FREE_KEYS.contains(&k.as_str()))
        .filter_map(|k| {
            let (x, y) = (a.get(k), b.get(k));
            (x != y).then(|| {
                let show = |v: Option<&String>| v.map_or("(absent)".to_string(), Clone::clone);
                format!("{k}: {} -> {}", show(x), show(y))
            })
        })
        .collect())
}

/// How a run wants to use its folder.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// `--resume`: continue from the folder's checkpoint.
    pub resume: bool,
    /// `--overwrite`: a fresh run removes an earlier run's files first.
    pub overwrite: bool,
    /// `--allow-config-change`: resume although the config changed.
    pub allow_config_change: bool,
    /// This process writes the run folder (rank 0 of a data-parallel run,
    /// or the only process). Other ranks only check.
    pub primary: bool,
}

/// A run folder ready for a run; hold it (its lock) until the run ends.
#[derive(Debug)]
pub struct Prepared {
    pub lock: Option<RunLock>,
    /// Files of an earlier run removed by `--overwrite`.
    pub removed: Vec<PathBuf>,
    /// Partial `*.tmp` files removed.
    pub stale_tmp: Vec<PathBuf>,
    /// Config keys that changed since the checkpoint (resumed with
    /// `--allow-config-change`), as `key: old -> new`.
    pub config_changes: Vec<String>,
}

/// Makes `run_dir` ready for a run of `config_toml` (the resolved config,
/// as the checkpoint stores it): locks it, removes stale `*.tmp` files,
/// refuses a fresh run over an earlier one without `overwrite` (removes the
/// earlier run's files with it), and refuses to resume under a changed
/// config without `allow_config_change`. Call it before reading any data.
pub fn prepare(run_dir: &Path, config_toml: &str, opts: Options) -> Result<Prepared> {
    if opts.resume && opts.overwrite {
        return Err(Error::Config(
            "--resume continues the run in the folder, --overwrite removes it: give one".into(),
        ));
    }
    let lock = if opts.primary {
        Some(lock(run_dir)?)
    } else {
        None
    };
    let stale_tmp = if opts.primary {
        remove_stale_tmp(run_dir)?
    } else {
        Vec::new()
    };
    let mut removed = Vec::new();
    let mut config_changes_found = Vec::new();
    let ckpt = run_dir.join(CHECKPOINT_FILE);
    if !opts.resume {
        let previous = previous_run_files(run_dir);
        if !previous.is_empty() {
            if !opts.overwrite {
                return Err(Error::Data(occupied_message(run_dir, &previous)));
            }
            if opts.primary {
                removed = remove_previous_run(run_dir)?;
            }
        }
    } else {
        if !ckpt.exists() {
            return Err(Error::Data(format!(
                "--resume: run folder {} holds no checkpoint ({CHECKPOINT_FILE}); \
                 start a fresh run without --resume (with --overwrite if it holds \
                 an earlier run's metrics)",
                run_dir.display()
            )));
        }
        let meta = crate::checkpoint::read_meta(&ckpt)?;
        if !meta.config.trim().is_empty() {
            let changes = match config_changes(&meta.config, config_toml) {
                Ok(c) => c,
                Err(e) if opts.allow_config_change => vec![e],
                Err(e) => {
                    return Err(Error::Checkpoint {
                        path: ckpt,
                        reason: format!("{e}; resume anyway with --allow-config-change"),
                    })
                }
            };
            if !changes.is_empty() && !opts.allow_config_change {
                return Err(Error::Config(format!(
                    "--resume: the config differs from the one {} was trained with:\n  {}\n\
                     resume with the checkpoint's config ({} may change freely), \
                     or give --allow-config-change to continue anyway, \
                     or start a fresh run with --overwrite or another --run-dir",
                    ckpt.display(),
                    changes.join("\n  "),
                    FREE_KEYS.join(", ")
                )));
            }
            config_changes_found = changes;
        }
    }
    Ok(Prepared {
        lock,
        removed,
        stale_tmp,
        config_changes: config_changes_found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let held = lock(&run).unwrap();
        let err = lock(&run).unwrap_err().to_string();
        assert!(
            err.contains(&std::process::id().to_string()) && err.contains("--run-dir"),
            "{err}"
        );
        drop(held);
        assert!(!run.join(LOCK_FILE).exists());
        // A stale lock file (its process died: no flock on it) does not block.
        std::fs::write(run.join(LOCK_FILE), "999999999").unwrap();
        let again = lock(&run).unwrap();
        assert_eq!(
            std::fs::read_to_string(run.join(LOCK_FILE)).unwrap(),
            std::process::id().to_string()
        );
        drop(again);
    }

    #[test]
    fn a_fresh_run_over_an_earlier_one_needs_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        std::fs::write(run.join(METRICS_FILE), "{}\n").unwrap();
        std::fs::create_dir_all(run.join("export")).unwrap();
        std::fs::write(run.join("export/model.safetensors"), "x").unwrap();
        std::fs::write(run.join("notes.txt"), "mine").unwrap();
        std::fs::write(run.join("export/config.json.tmp"), "half").unwrap();
        let fresh = Options {
            primary: true,
            ..Options::default()
        };
        let err = prepare(run, "", fresh).unwrap_err().to_string();
        assert!(
            err.contains(&run.display().to_string())
                && err.contains("metrics.jsonl")
                && err.contains("--resume")
                && err.contains("--overwrite")
                && err.contains("--run-dir"),
            "{err}"
        );
        assert!(run.join(METRICS_FILE).exists());
        // The stale partial write is gone even so.
        assert!(!run.join("export/config.json.tmp").exists());
        let p = prepare(
            run,
            "",
            Options {
                overwrite: true,
                ..fresh
            },
        )
        .unwrap();
        assert_eq!(p.removed, vec![run.join(METRICS_FILE), run.join("export")]);
        assert!(!run.join("export").exists());
        assert!(run.join("notes.txt").exists(), "not the run's: kept");
        drop(p);
        // --resume without a checkpoint: said before any data is read.
        let err = prepare(
            run,
            "",
            Options {
                resume: true,
                ..fresh
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("holds no checkpoint"), "{err}");
    }

    #[test]
    fn config_changes_list_each_key_and_skip_the_free_ones() {
        let old = "[trainer]\nepochs = 3\nseed = 1\noptimizer = { kind = \"sgd\", lr = 0.3 }\n[run]\nthreads = 1\n";
        let new = "[trainer]\nepochs = 9\nseed = 2\noptimizer = { kind = \"sgd\", lr = 0.1 }\n[run]\nthreads = 4\nbatch_size = 8\n[data]\nname = \"x\"\n";
        let c = config_changes(old, new).unwrap();
        assert_eq!(
            c,
            vec![
                "data.name: (absent) -> \"x\"",
                "trainer.optimizer.lr: 0.3 -> 0.1",
                "trainer.seed: 1 -> 2",
            ]
        );
        assert!(config_changes(old, old).unwrap().is_empty());
    }
}
