//! The short fuzz pass of `cargo xtask test`: every target for a fixed number
//! of executions (not a time), with the 1 GiB allocation cap. Fails on any
//! crash (panic, abort, hang) or allocation above the cap, naming the saved
//! input; and checks that the engine catches each kind of crash in a child
//! process of the `selfsup-fuzz` binary, with its input.
use selfsup_fuzz::engine::{run_in_process, run_target, Options, Report};
use selfsup_fuzz::targets;
use std::path::Path;

/// Executions per target.
const EXECS: u64 = 2000;

/// Crashes known and not yet fixed: (target, text of the saved crash note).
/// None today: the five the fuzzer found are fixed (benchmarks/RESULTS.md).
/// A target with an entry runs in a child process (an abort does not end
/// this test) and passes, with a warning, when every crash it saved matches
/// one of its entries; anything else fails. Remove an entry once its fix lands.
const KNOWN: &[(&str, &str)] = &[];

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_selfsup-fuzz"))
}

fn opts(dir: &Path, execs: u64) -> Options {
    Options {
        seconds: None,
        execs: Some(execs),
        seed: 1,
        crashes: dir.join("crashes"),
        ..Options::default()
    }
}

fn is_known(target: &str) -> bool {
    KNOWN.iter().any(|(t, _)| *t == target)
}

/// Whether every crash of `r` is a [`KNOWN`] one.
fn only_known(r: &Report) -> bool {
    // Every distinct panic site, abort, hang or refused allocation saves its
    // input and a note (inputs over the warning cap are no crash).
    let crashes: Vec<&String> = r
        .saved
        .iter()
        .filter(|p| {
            Path::new(p)
                .file_name()
                .is_some_and(|n| !n.to_string_lossy().starts_with("big-alloc-"))
        })
        .collect();
    !crashes.is_empty()
        && crashes.iter().all(|p| {
            let note =
                std::fs::read_to_string(Path::new(p).with_extension("txt")).unwrap_or_default();
            KNOWN
                .iter()
                .any(|(t, text)| *t == r.target && note.contains(text))
        })
}

/// In this process (one libtorch start, not one per target): the same
/// inputs as `cargo xtask fuzz <target> --execs 2000 --seed 1`, which replays
/// a failure in a child process that saves the input. Targets with [`KNOWN`]
/// crashes run in a child process.
#[test]
fn every_reader_survives_a_short_fuzz_pass() {
    let dir = tempfile::tempdir().unwrap();
    let opts = opts(dir.path(), EXECS);
    let mut failures = Vec::new();
    for t in targets::all() {
        let r = if is_known(t.name) {
            run_target(exe(), &t, &opts).unwrap()
        } else {
            run_in_process(&t, &opts)
        };
        assert!(
            r.executions >= EXECS,
            "{}: {} executions",
            r.target,
            r.executions
        );
        if !r.clean() && only_known(&r) {
            eprintln!(
                "warning: {}: {} known crashes (see KNOWN): {:?}",
                r.target,
                r.crashes() + r.alloc_cap_hits,
                r.saved
            );
        } else if !r.clean() {
            let notes: Vec<String> = r
                .saved
                .iter()
                .map(|p| {
                    let txt = Path::new(p).with_extension("txt");
                    format!("{p}: {}", std::fs::read_to_string(txt).unwrap_or_default())
                })
                .collect();
            failures.push(format!("{r:?}\n{}", notes.join("\n")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn saved(r: &Report, kind: &str) -> Vec<u8> {
    let p = r
        .saved
        .iter()
        .find(|p| {
            Path::new(p)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(kind))
        })
        .unwrap_or_else(|| panic!("no {kind} input saved: {r:?}"));
    std::fs::read(p).unwrap()
}

#[test]
fn panics_aborts_caps_and_hangs_are_caught_with_their_input() {
    let dir = tempfile::tempdir().unwrap();
    let run =
        |name: &str, o: &Options| run_target(exe(), &targets::find(name).unwrap(), o).unwrap();
    let o = Options {
        max_restarts: 1,
        ..opts(dir.path(), 200)
    };

    let r = run("selftest-panic", &o);
    assert!(r.panics > 0 && r.executions == 200, "{r:?}");
    assert_eq!(saved(&r, "panic")[0] & 1, 1);
    let note = std::fs::read_to_string(Path::new(&r.saved[0]).with_extension("txt")).unwrap();
    assert!(
        note.contains("selftest panic") && note.contains("selftest.rs"),
        "{note}"
    );

    let r = run("selftest-alloc", &o);
    assert!(r.aborts > 0 && r.alloc_cap_hits > 0 && !r.clean(), "{r:?}");
    assert_eq!(saved(&r, "alloc-cap")[0] & 1, 1);

    let r = run("selftest-big", &o);
    assert!(
        r.clean() && r.over_warn > 0 && r.max_alloc >= 300 << 20,
        "{r:?}"
    );
    assert_eq!(saved(&r, "big-alloc")[0] & 1, 1);

    let o = Options {
        hang_secs: 0.3,
        max_restarts: 1,
        ..o
    };
    let r = run("selftest-hang", &o);
    assert!(r.hangs > 0, "{r:?}");
    assert_eq!(saved(&r, "hang")[0] & 1, 1);
}
