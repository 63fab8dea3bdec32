//! `selfsup pretrain`: one path for every modality. The config's `[method]
//! name` picks the modality that owns it ([`crate::REGISTRY`]); the flags
//! override the shared settings; the run folder is made ready (lock,
//! `--overwrite`, `--resume` checks) before any data is read; the
//! modality's workflow does the rest and its summary is printed.
use crate::{config_file, distributed, method_names, modality_of, progress};
use anyhow::{Context, Result};
use selfsup_core::run::RunOptions;
use selfsup_core::workflow::{Overrides, Plan};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What `selfsup pretrain` was given.
pub struct Args {
    pub config: PathBuf,
    pub set: Vec<String>,
    pub data: Option<PathBuf>,
    pub recordings: Option<PathBuf>,
    pub run_dir: Option<PathBuf>,
    pub resume: bool,
    pub resume_auto: bool,
    pub overwrite: bool,
    pub allow_config_change: bool,
    pub overrides: Overrides,
    pub stop_after: Option<u64>,
    pub backend: distributed::BackendChoice,
    pub dist_timeout: u64,
}

/// Reads a config file (its `include`s and `--set`s applied) and hands it
/// to the modality that owns its `[method] name`.
pub fn read_config(path: &Path, sets: &[String]) -> Result<Box<dyn Plan>> {
    let config_file::Loaded { text, value } = config_file::load(path, sets)?;
    let method = value
        .get("method")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str());
    let Some(method) = method else {
        anyhow::bail!(
            "{}: no [method] name: say what to train, e.g.\n\n[method]\nname = \"simclr\"\n\n\
             the methods are:\n{}\n(the presets in configs/ are complete examples)",
            path.display(),
            method_names()
        )
    };
    let Some(owner) = modality_of(method) else {
        let all = crate::REGISTRY
            .iter()
            .flat_map(|m| m.methods().iter().copied());
        let hint = config_file::nearest(method, all)
            .map(|n| format!(" (did you mean \"{n}\"?)"))
            .unwrap_or_default();
        anyhow::bail!(
            "{}: [method] name = \"{method}\" is not a method{hint}; the methods are:\n{}",
            path.display(),
            method_names()
        )
    };
    Ok(owner.parse(&text, path)?)
}

pub fn run(a: Args) -> Result<()> {
    let name = a
        .config
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "run".into());
    let run_dir = a
        .run_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(name));
    let mut plan = read_config(&a.config, &a.set)?;
    let resume = a.resume || (a.resume_auto && resume_auto_found(&run_dir));
    if let Some(dir) = a.recordings.clone() {
        eprintln!("{}", plan.use_recordings(dir)?);
    }
    a.overrides.apply(plan.common())?;
    let device = *plan.common().device;
    let dist = distributed::join(
        device,
        a.backend,
        std::time::Duration::from_secs(a.dist_timeout),
    )?;
    let primary = dist.as_ref().is_none_or(|d| d.is_primary());
    let _lock = prepare_run_dir(&run_dir, &plan.to_toml(), resume, &a, primary)?;
    let stop = Arc::new(AtomicBool::new(false));
    install_ctrlc(&stop)?;
    let mut observer = progress::Bars::new(stop.clone(), a.stop_after).quiet(!primary);
    if let Some((scale, unit)) = plan.progress_unit() {
        observer = observer.with_unit(scale, unit);
    }
    let mut log = |line: &str| {
        if primary {
            eprintln!("{line}")
        }
    };
    let report = plan.pretrain(RunOptions {
        data: a.data.clone(),
        run_dir: run_dir.clone(),
        resume,
        observer: &mut observer,
        stop,
        git_commit: git_commit(),
        log: &mut log,
        distributed: dist,
    });
    observer.finish();
    let report = report?;
    if primary {
        for line in report.lines() {
            println!("{line}");
        }
    }
    Ok(())
}

fn install_ctrlc(stop: &Arc<AtomicBool>) -> Result<()> {
    let handler_flag = stop.clone();
    ctrlc::set_handler(move || {
        if handler_flag.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond interrupt: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: finishing the current step and writing a checkpoint (Ctrl-C again to quit now)");
    })
    .context("installing the Ctrl-C handler")
}

/// Makes the run folder ready before any data is read (see
/// [`selfsup_core::run_dir::prepare`]) and says what it removed or accepted.
/// Hold the result until the run ends: it holds the folder's lock.
fn prepare_run_dir(
    run_dir: &Path,
    config_toml: &str,
    resume: bool,
    a: &Args,
    primary: bool,
) -> Result<selfsup_core::run_dir::Prepared> {
    let p = selfsup_core::run_dir::prepare(
        run_dir,
        config_toml,
        selfsup_core::run_dir::Options {
            resume,
            overwrite: a.overwrite,
            allow_config_change: a.allow_config_change,
            primary,
        },
    )?;
    if primary {
        let names = |v: &[PathBuf]| {
            v.iter()
                .map(|f| f.strip_prefix(run_dir).unwrap_or(f).display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !p.removed.is_empty() {
            eprintln!(
                "--overwrite: removed the earlier run's {} from {}",
                names(&p.removed),
                run_dir.display()
            );
        }
        if !p.stale_tmp.is_empty() {
            eprintln!(
                "removed {} partial file(s) an interrupted run left in {}: {}",
                p.stale_tmp.len(),
                run_dir.display(),
                names(&p.stale_tmp)
            );
        }
        if !p.config_changes.is_empty() {
            eprintln!(
                "--allow-config-change: resuming with a config that differs from the checkpoint's:\n  {}",
                p.config_changes.join("\n  ")
            );
        }
    }
    Ok(p)
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `--resume-auto`: whether the run folder holds a checkpoint to resume
/// from, said on stderr.
fn resume_auto_found(run_dir: &Path) -> bool {
    let checkpoint = run_dir.join(selfsup_core::trainer::CHECKPOINT_FILE);
    let found = checkpoint.is_file();
    if found {
        eprintln!("--resume-auto: resuming from {}", checkpoint.display());
    } else {
        eprintln!(
            "--resume-auto: no checkpoint in {}, starting afresh",
            run_dir.display()
        );
    }
    found
}
