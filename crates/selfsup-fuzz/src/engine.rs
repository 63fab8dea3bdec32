//! The fuzz loop (in a child process) and the parent that watches it.
//!
//! The parent re-executes the fuzz binary as `--child <target>` with a state
//! file that both map (`MAP_SHARED`): the child writes its counters and, before
//! every execution, the input it is about to run. A panic is caught in the
//! child (`catch_unwind`), counted and its input saved; an abort (an
//! allocation above the cap refused by [`crate::alloc`], a stack overflow, a
//! double panic, a C++ exception) or a hang kills the child, and the parent
//! finds the input in the state file, saves it, and starts a new child with
//! another seed for the rest of the budget.
use crate::alloc;
use crate::mutate::{Mutator, Rng};
use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One reader under test.
#[derive(Clone, Copy)]
pub struct Target {
    /// Name on the command line (`idx`, `wav`, `config-vision` ...).
    pub name: &'static str,
    /// The reader it drives.
    pub about: &'static str,
    /// Runs the reader on one input: `Ok` when it accepted it, `Err` with the
    /// reader's message when it refused it (both fine); a panic is a crash.
    pub run: fn(&[u8]) -> Result<(), String>,
    /// Valid inputs to start from: built in code, plus real dataset files
    /// when the dataset cache has them.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Tokens of the format for the mutator (keywords, magic numbers).
    pub dict: &'static [&'static [u8]],
    /// Inputs never grow past this many bytes.
    pub max_len: usize,
}

/// Largest input any target may use (the state file holds one input).
pub const MAX_INPUT: usize = 1 << 20;
/// At most this many accepted inputs join the corpus besides the seeds.
const POOL: usize = 512;
/// Crash inputs saved per distinct panic location / abort kind.
const SAVE_PER_KIND: usize = 1;
/// Inputs over the warning cap saved per target.
const SAVE_BIG: usize = 5;

mod region;
mod report;
pub use region::{scratch_dir, scratch_file};
use region::{scratch_for, Region, MAGIC};
pub use report::{bytes, markdown, write_reports, Report};

/// Budget and limits of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Stop each target after this long.
    pub seconds: Option<f64>,
    /// Stop each target after this many executions.
    pub execs: Option<u64>,
    pub seed: u64,
    /// Crash inputs go to `<crashes>/<target>/`.
    pub crashes: PathBuf,
    pub alloc_cap: usize,
    pub warn_cap: usize,
    /// An execution running this long is a hang.
    pub hang_secs: f64,
    /// Child restarts after aborts and hangs, per target.
    pub max_restarts: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seconds: None,
            execs: Some(2000),
            seed: 0,
            crashes: PathBuf::from("target/fuzz/crashes"),
            alloc_cap: alloc::DEFAULT_CAP,
            warn_cap: alloc::DEFAULT_WARN,
            hang_secs: 20.0,
            max_restarts: 10,
        }
    }
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn save(dir: &Path, kind: &str, input: &[u8], note: &str) -> String {
    let _ = std::fs::create_dir_all(dir);
    let base = dir.join(format!("{kind}-{:016x}", fnv(input)));
    let bin = base.with_extension("bin");
    let _ = std::fs::write(&bin, input);
    let _ = std::fs::write(base.with_extension("txt"), note);
    bin.display().to_string()
}

static LAST_PANIC: Mutex<Option<(String, String)>> = Mutex::new(None);

/// The thread whose panics the hook records (`None`: every thread, as in a
/// child process); other threads' panics go to the previous hook.
static FUZZ_THREAD: Mutex<Option<std::thread::ThreadId>> = Mutex::new(None);

/// Installs (once) the hook that records panics of the fuzzed thread quietly.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let fuzzed = *FUZZ_THREAD.lock().unwrap_or_else(|e| e.into_inner());
            if fuzzed.is_some_and(|t| t != std::thread::current().id()) {
                return previous(info);
            }
            record_panic(info);
        }));
    });
}

fn record_panic(info: &std::panic::PanicHookInfo<'_>) {
    {
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_else(|| "unknown".into());
        let payload = info.payload();
        let message = selfsup_core::error::panic_message(payload)
            .unwrap_or_else(|| "(non-string panic payload)".into());
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some((location, message));
    }
}

/// The child side: runs `target` within the budget, writing counters to the
/// state file. Returns normally when the budget is spent.
pub fn child_main(
    target: &Target,
    state: &Path,
    seed: u64,
    execs: Option<u64>,
    millis: Option<u64>,
    opts: &Options,
) -> std::io::Result<()> {
    let region = Region::map(state, false)?;
    // SAFETY: the region is never unmapped before the process ends (`region`
    // lives to the end of this function, after which the process exits).
    unsafe { fuzz_loop(target, &region, seed, execs, millis, opts) };
    let _ = std::fs::remove_dir_all(scratch_dir());
    Ok(())
}

/// Runs `target` in this process for `opts.execs` executions with the seed a
/// first child process would use (so the inputs are the same as those of
/// `selfsup-fuzz <target> --execs N --seed S`). A panic is caught and counted;
/// an abort (an allocation above the cap) ends this process, and the same
/// command line replays it in a child that saves the input. For tests: no
/// process start per target.
pub fn run_in_process(target: &Target, opts: &Options) -> Report {
    let start = Instant::now();
    let region = Region::anon();
    *FUZZ_THREAD.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::thread::current().id());
    // SAFETY: the region is leaked below: it outlives the process's use of it
    // as the allocator's refused slot.
    unsafe {
        fuzz_loop(
            target,
            &region,
            child_seed(opts.seed, target.name, 0),
            opts.execs,
            opts.seconds.map(|s| (s * 1000.0) as u64),
            opts,
        )
    };
    let _ = std::fs::remove_dir_all(scratch_dir());
    let s = region.shared();
    let seconds = start.elapsed().as_secs_f64();
    let rep = Report {
        target: target.name.to_string(),
        executions: s.execs.load(Relaxed),
        seconds,
        execs_per_sec: s.execs.load(Relaxed) as f64 / seconds.max(1e-9),
        accepted: s.accepted.load(Relaxed),
        seeds: s.seeds.load(Relaxed),
        panics: s.panics.load(Relaxed),
        alloc_cap_hits: s.cap_hits.load(Relaxed),
        max_alloc: s.max_alloc.load(Relaxed),
        over_warn: s.over_warn.load(Relaxed),
        saved: saved_in(&opts.crashes.join(target.name), &[]),
        ..Default::default()
    };
    std::mem::forget(region);
    rep
}

/// The fuzz loop of a child (or of [`run_in_process`]).
///
/// # Safety
/// `region` must stay mapped for the rest of the process (the allocator
/// writes refused sizes into it).
unsafe fn fuzz_loop(
    target: &Target,
    region: &Region,
    seed: u64,
    execs: Option<u64>,
    millis: Option<u64>,
    opts: &Options,
) {
    let s = region.shared();
    s.magic.store(MAGIC, Relaxed);
    alloc::set_cap(opts.alloc_cap);
    alloc::set_refused_slot(&s.refused);
    install_panic_hook();
    let dir = opts.crashes.join(target.name);
    let deadline = millis.map(|m| Instant::now() + Duration::from_millis(m));
    let max_execs = execs.unwrap_or(u64::MAX);
    let max_len = target.max_len.min(MAX_INPUT);
    let mut corpus: Vec<Vec<u8>> = (target.seeds)()
        .into_iter()
        .map(|mut v| {
            v.truncate(max_len);
            v
        })
        .collect();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let n_seeds = corpus.len();
    s.seeds.store(n_seeds as u64, Relaxed);
    let mutator = Mutator::new(max_len, target.dict);
    let mut rng = Rng::new(seed);
    let mut panic_sites: std::collections::HashMap<String, usize> = Default::default();
    let mut big_saved = 0usize;
    let (mut n, mut panics, mut accepted, mut over, mut max_alloc) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut cap_hits = 0u64;
    while n < max_execs {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        // Every seed once as it is, then mutations.
        let input = if (n as usize) < n_seeds && seed_round(seed) {
            corpus[n as usize].clone()
        } else {
            mutator.mutate(&corpus, n_seeds, &mut rng)
        };
        region.set_input(&input);
        alloc::reset_exec_max();
        s.in_exec.store(1, Relaxed);
        let result = catch_unwind(AssertUnwindSafe(|| (target.run)(&input)));
        s.in_exec.store(0, Relaxed);
        let refused = s.refused.swap(0, Relaxed);
        if refused > 0 {
            // Refused, and the reader coped (`try_reserve`): still a request
            // over the cap, so counted and saved.
            cap_hits += 1;
            s.cap_hits.store(cap_hits, Relaxed);
            save(
                &dir,
                "alloc-refused",
                &input,
                &format!(
                    "target {}\nan allocation of {refused} bytes was refused (cap {} bytes); the reader returned\n",
                    target.name, opts.alloc_cap
                ),
            );
        }
        let biggest = alloc::exec_max() as u64;
        if biggest > max_alloc {
            max_alloc = biggest;
            s.max_alloc.store(max_alloc, Relaxed);
        }
        if biggest > opts.warn_cap as u64 {
            over += 1;
            s.over_warn.store(over, Relaxed);
            if big_saved < SAVE_BIG {
                big_saved += 1;
                save(
                    &dir,
                    "big-alloc",
                    &input,
                    &format!(
                        "one allocation of {biggest} bytes, over the warning cap of {} bytes\n",
                        opts.warn_cap
                    ),
                );
            }
        }
        match result {
            Ok(Ok(())) => {
                accepted += 1;
                s.accepted.store(accepted, Relaxed);
                // Accepted inputs join the corpus (no coverage feedback: a
                // reader accepting an input is the signal that it went deep);
                // tiny ones would only make the inputs tiny.
                if input.len() >= 8 {
                    if corpus.len() < n_seeds + POOL {
                        corpus.push(input);
                    } else if rng.one_in(4) {
                        let i = n_seeds + rng.below(POOL);
                        corpus[i] = input;
                    }
                }
            }
            Ok(Err(_)) => {}
            Err(_) => {
                panics += 1;
                s.panics.store(panics, Relaxed);
                let (site, message) = LAST_PANIC
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .unwrap_or_else(|| ("unknown".into(), "(no message)".into()));
                let seen = panic_sites.entry(site.clone()).or_insert(0);
                *seen += 1;
                if *seen <= SAVE_PER_KIND {
                    let path = save(
                        &dir,
                        "panic",
                        &input,
                        &format!("target {}\npanicked at {site}:\n{message}\n", target.name),
                    );
                    eprintln!(
                        "selfsup-fuzz: {}: panic at {site}: {message} (input: {path})",
                        target.name
                    );
                }
            }
        }
        n += 1;
        s.execs.store(n, Relaxed);
    }
    s.done.store(1, Relaxed);
}

/// Seeds run unmutated only in a target's first child (seed round 0).
fn seed_round(seed: u64) -> bool {
    seed & 0xffff == 0
}

fn child_seed(base: u64, target: &str, restart: u64) -> u64 {
    // Low 16 bits: the restart count (0 = the first child, which also runs
    // every seed unmutated); the rest: the run seed and the target.
    ((base ^ fnv(target.as_bytes())) << 16) | (restart & 0xffff)
}

/// Runs `target` in child processes of `exe` (this binary) until the budget
/// in `opts` is spent, restarting after aborts and hangs.
pub fn run_target(exe: &Path, target: &Target, opts: &Options) -> std::io::Result<Report> {
    let dir = opts.crashes.join(target.name);
    std::fs::create_dir_all(&opts.crashes)?;
    let state = opts
        .crashes
        .join(format!(".state-{}-{}", target.name, std::process::id()));
    let stderr_path = opts
        .crashes
        .join(format!(".stderr-{}-{}", target.name, std::process::id()));
    let start = Instant::now();
    let mut rep = Report {
        target: target.name.to_string(),
        ..Default::default()
    };
    let mut restart = 0u64;
    loop {
        let execs_left = opts.execs.map(|n| n.saturating_sub(rep.executions));
        let millis_left = opts
            .seconds
            .map(|s| (s * 1000.0 - start.elapsed().as_millis() as f64).max(0.0) as u64);
        if execs_left == Some(0) || millis_left == Some(0) {
            break;
        }
        let region = Region::map(&state, true)?;
        let mut cmd = Command::new(exe);
        cmd.arg("--child")
            .arg(target.name)
            .arg("--state")
            .arg(&state)
            .arg("--seed")
            .arg(child_seed(opts.seed, target.name, restart).to_string())
            .arg("--crashes")
            .arg(&opts.crashes)
            .arg("--alloc-cap")
            .arg(opts.alloc_cap.to_string())
            .arg("--warn-cap")
            .arg(opts.warn_cap.to_string());
        if let Some(n) = execs_left {
            cmd.arg("--execs").arg(n.to_string());
        }
        if let Some(m) = millis_left {
            cmd.arg("--millis").arg(m.to_string());
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr_path)?);
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let s = region.shared();
        let (mut last, mut since) = (0u64, Instant::now());
        let mut hung = false;
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            std::thread::sleep(Duration::from_millis(20));
            let now = s.execs.load(Relaxed);
            if now != last {
                (last, since) = (now, Instant::now());
            } else if s.in_exec.load(Relaxed) == 1 && since.elapsed().as_secs_f64() > opts.hang_secs
            {
                hung = true;
                let _ = child.kill();
                break child.wait()?;
            }
        };
        let _ = std::fs::remove_dir_all(scratch_for(pid));
        let execs = s.execs.load(Relaxed);
        rep.executions += execs;
        rep.panics += s.panics.load(Relaxed);
        rep.accepted += s.accepted.load(Relaxed);
        rep.seeds = rep.seeds.max(s.seeds.load(Relaxed));
        rep.max_alloc = rep.max_alloc.max(s.max_alloc.load(Relaxed));
        rep.over_warn += s.over_warn.load(Relaxed);
        rep.alloc_cap_hits += s.cap_hits.load(Relaxed);
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        // Panic messages the child printed are already in its crash notes.
        for line in stderr.lines().filter(|l| l.starts_with("selfsup-fuzz:")) {
            eprintln!("{line}");
        }
        if status.success() && s.done.load(Relaxed) == 1 {
            break;
        }
        // The child died: the input in the state file killed it (or it died
        // outside an execution, e.g. building its seeds).
        rep.executions += 1;
        let refused = s.refused.load(Relaxed);
        let in_exec = s.in_exec.load(Relaxed) == 1;
        let kind = if hung {
            rep.hangs += 1;
            "hang"
        } else {
            rep.aborts += 1;
            if refused > 0 {
                rep.alloc_cap_hits += 1;
                "alloc-cap"
            } else {
                "abort"
            }
        };
        let input = region.input();
        let tail: String = {
            let lines: Vec<&str> = stderr.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        let note = format!(
            "target {}\n{kind}: child {status}{}{}\nstderr (last lines):\n{tail}\n",
            target.name,
            if refused > 0 {
                format!(
                    ", an allocation of {refused} bytes was refused (cap {} bytes)",
                    opts.alloc_cap
                )
            } else {
                String::new()
            },
            if in_exec {
                ""
            } else {
                " (outside an execution: while building seeds or starting)"
            },
        );
        let path = save(&dir, kind, &input, &note);
        eprintln!(
            "selfsup-fuzz: {}: {kind} ({status}), input saved to {path}",
            target.name
        );
        rep.saved.push(path);
        restart += 1;
        if !in_exec || restart > opts.max_restarts {
            break;
        }
    }
    let _ = std::fs::remove_file(&state);
    let _ = std::fs::remove_file(&stderr_path);
    rep.seconds = start.elapsed().as_secs_f64();
    rep.execs_per_sec = rep.executions as f64 / rep.seconds.max(1e-9);
    // Panic and big-allocation inputs the children saved.
    let more = saved_in(&dir, &rep.saved);
    rep.saved.extend(more);
    Ok(rep)
}

/// The saved inputs (`*.bin`) in `dir`, sorted, except those in `known`.
fn saved_in(dir: &Path, known: &[String]) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut saved: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .map(|p| p.display().to_string())
        .filter(|p| !known.contains(p))
        .collect();
    saved.sort();
    saved
}
