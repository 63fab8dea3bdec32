//! `selfsup-fuzz <target|all|list> [--seconds N] [--execs N] [--seed S]
//! [--crashes DIR] [--report DIR] [--jobs N] [--alloc-cap BYTES]
//! [--warn-cap BYTES] [--hang-secs S]`, or `selfsup-fuzz <target> --replay
//! FILE` to run a saved input again.
//!
//! Runs each target in a child process of this binary (see
//! `selfsup_fuzz::engine`), prints one row per target and exits non-zero when
//! any target crashed or asked for an allocation above the cap.
use selfsup_fuzz::engine::{self, Options, Report};
use selfsup_fuzz::targets;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: selfsup-fuzz <target|all|list>[,<target>...] [--seconds N] [--execs N] \
[--seed S] [--crashes DIR] [--report DIR] [--jobs N] [--alloc-cap BYTES] [--warn-cap BYTES] [--hang-secs S]
       selfsup-fuzz <target> --replay FILE [--replay FILE ...]   (runs saved inputs in this process)";

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("selfsup-fuzz: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn value<T: std::str::FromStr>(
    args: &mut impl Iterator<Item = String>,
    flag: &str,
) -> Result<T, String> {
    let v = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
    v.parse()
        .map_err(|_| format!("{flag}: cannot read '{v}' as a number"))
}

fn real_main() -> Result<ExitCode, String> {
    let mut args = std::env::args().skip(1);
    let mut which: Option<String> = None;
    let mut child: Option<String> = None;
    let mut state: Option<PathBuf> = None;
    let mut millis: Option<u64> = None;
    let mut report: Option<PathBuf> = None;
    let mut jobs = 1usize;
    let mut replay: Vec<PathBuf> = Vec::new();
    let mut opts = Options {
        execs: None,
        ..Options::default()
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => opts.seconds = Some(value(&mut args, &a)?),
            "--execs" => opts.execs = Some(value(&mut args, &a)?),
            "--millis" => millis = Some(value(&mut args, &a)?),
            "--seed" => opts.seed = value(&mut args, &a)?,
            "--crashes" => opts.crashes = PathBuf::from(value::<String>(&mut args, &a)?),
            "--report" => report = Some(PathBuf::from(value::<String>(&mut args, &a)?)),
            "--jobs" => jobs = value::<usize>(&mut args, &a)?.max(1),
            "--alloc-cap" => opts.alloc_cap = value(&mut args, &a)?,
            "--warn-cap" => opts.warn_cap = value(&mut args, &a)?,
            "--hang-secs" => opts.hang_secs = value(&mut args, &a)?,
            "--child" => child = Some(value(&mut args, &a)?),
            "--replay" => replay.push(PathBuf::from(value::<String>(&mut args, &a)?)),
            "--state" => state = Some(PathBuf::from(value::<String>(&mut args, &a)?)),
            "-h" | "--help" => {
                println!("{USAGE}\n\ntargets:");
                for t in targets::all() {
                    println!("  {:<20} {}", t.name, t.about);
                }
                return Ok(ExitCode::SUCCESS);
            }
            s if s.starts_with('-') => return Err(format!("unknown flag {s}")),
            s => {
                if which.replace(s.to_string()).is_some() {
                    return Err("give one target (or a comma-separated list, or all)".into());
                }
            }
        }
    }
    if let Some(name) = child {
        let target = targets::find(&name).ok_or_else(|| format!("no target {name}"))?;
        let state = state.ok_or("--child needs --state")?;
        engine::child_main(&target, &state, opts.seed, opts.execs, millis, &opts)
            .map_err(|e| format!("child {name}: {e}"))?;
        return Ok(ExitCode::SUCCESS);
    }
    let which = which.ok_or("name a target, or all")?;
    if which == "list" {
        for t in targets::all() {
            println!("{:<20} {}", t.name, t.about);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let chosen: Vec<_> = if which == "all" {
        targets::all()
    } else {
        which
            .split(',')
            .map(|n| {
                targets::find(n).ok_or_else(|| {
                    let known: Vec<_> = targets::all().iter().map(|t| t.name).collect();
                    format!("no target {n}; targets: {}", known.join(", "))
                })
            })
            .collect::<Result<_, _>>()?
    };
    if opts.seconds.is_none() && opts.execs.is_none() {
        opts.seconds = Some(10.0);
    }
    if !replay.is_empty() {
        // Runs saved inputs in this process (a panic shows its backtrace; an
        // allocation above the cap aborts with "memory allocation of N bytes failed").
        selfsup_fuzz::alloc::set_cap(opts.alloc_cap);
        let [target] = chosen.as_slice() else {
            return Err("--replay needs exactly one target".into());
        };
        for p in &replay {
            let data = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let outcome = std::panic::catch_unwind(|| (target.run)(&data));
            match outcome {
                Ok(Ok(())) => println!("{}: accepted", p.display()),
                Ok(Err(e)) => println!("{}: refused: {e}", p.display()),
                Err(panic) => {
                    let _ = std::fs::remove_dir_all(engine::scratch_dir());
                    std::panic::resume_unwind(panic);
                }
            }
        }
        let _ = std::fs::remove_dir_all(engine::scratch_dir());
        return Ok(ExitCode::SUCCESS);
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let reports = run_all(&exe, &chosen, &opts, jobs)?;
    print!("{}", engine::markdown(&reports, &opts));
    if let Some(dir) = &report {
        engine::write_reports(dir, &reports, &opts)
            .map_err(|e| format!("writing the report to {}: {e}", dir.display()))?;
        println!("report: {}/report.{{json,md}}", dir.display());
    }
    let bad: Vec<&Report> = reports.iter().filter(|r| !r.clean()).collect();
    if bad.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for r in &bad {
            println!("FAILED {}: saved inputs:", r.target);
            for s in &r.saved {
                println!("  {s}");
            }
        }
        Ok(ExitCode::from(1))
    }
}

fn run_all(
    exe: &std::path::Path,
    chosen: &[selfsup_fuzz::engine::Target],
    opts: &Options,
    jobs: usize,
) -> Result<Vec<Report>, String> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(vec![None; chosen.len()]);
    std::thread::scope(|s| {
        for _ in 0..jobs.min(chosen.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(t) = chosen.get(i) else { break };
                let r = engine::run_target(exe, t, opts).map_err(|e| format!("{}: {e}", t.name));
                if let Ok(rep) = &r {
                    eprintln!(
                        "selfsup-fuzz: {:<20} {:>9} execs {:>8.0}/s, {} crashes, largest allocation {}",
                        rep.target,
                        rep.executions,
                        rep.execs_per_sec,
                        rep.crashes(),
                        engine::bytes(rep.max_alloc)
                    );
                }
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("not run".into())))
        .collect()
}
