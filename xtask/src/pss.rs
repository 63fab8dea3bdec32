//! Peak memory of a whole process tree measured the same way for selfsup and
//! its peers: the proportional set size (PSS, `/proc/PID/smaps_rollup`)
//! summed over the started process and every descendant (DataLoader
//! workers, torchrun ranks), sampled every 100 ms while it runs. PSS divides
//! each shared page among the processes mapping it, so a forked worker's
//! copy-on-write pages are not counted twice, as adding the processes' peak
//! RSS does. Linux only: elsewhere the peak is `None`.
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

/// What a sampled run printed on stdout, and its peak PSS in MB.
pub(crate) struct Sampled {
    pub stdout: String,
    pub peak_pss_mb: Option<f64>,
}

/// Runs `cmd` (stderr inherited, stdout captured) and samples its process
/// tree's PSS until it exits; fails with the command line if it fails.
pub(crate) fn run_sampled(cmd: &mut Command) -> Result<Sampled> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    let mut pipe = child.stdout.take().context("stdout was not piped")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        pipe.read_to_string(&mut s).map(|_| s)
    });
    let mut peak: Option<f64> = None;
    let status = loop {
        if let Some(kb) = tree_pss_kb(child.id()) {
            let mb = kb as f64 / 1024.0;
            peak = Some(peak.map_or(mb, |p| p.max(mb)));
        }
        if let Some(status) = child.try_wait().context("waiting for the child")? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = match reader.join() {
        Ok(r) => r.with_context(|| format!("reading the stdout of {shown}"))?,
        Err(_) => bail!("the stdout reader of {shown} panicked"),
    };
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(Sampled {
        stdout,
        peak_pss_mb: peak,
    })
}

/// PSS in kB of `root` and its descendants now; `None` where /proc has no
/// smaps_rollup (not Linux, or the process is gone).
fn tree_pss_kb(root: u32) -> Option<u64> {
    let parents = parents()?;
    let mut stack = vec![root];
    let mut total = 0u64;
    let mut seen = false;
    while let Some(pid) = stack.pop() {
        if let Some(kb) = pss_kb(pid) {
            total += kb;
            seen = true;
        }
        stack.extend(
            parents
                .iter()
                .filter(|&(_, &parent)| parent == pid)
                .map(|(&child, _)| child),
        );
    }
    seen.then_some(total)
}

/// Every process's parent, from /proc/PID/stat.
fn parents() -> Option<HashMap<u32, u32>> {
    let mut map = HashMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| ppid_of(&s))
        {
            map.insert(pid, ppid);
        }
    }
    Some(map)
}

/// The parent pid in a /proc/PID/stat line: the second field after the
/// command name, which is in parentheses and may itself hold spaces or ')'.
fn ppid_of(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The `Pss:` line of /proc/PID/smaps_rollup, in kB.
fn pss_kb(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    pss_line(&text)
}

fn pss_line(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_rollup_lines_are_read() {
        assert_eq!(ppid_of("123 (a b) c) S 45 6 7"), Some(45));
        assert_eq!(ppid_of("garbage"), None);
        let rollup = "00400000-7ffd [rollup]\nRss:  2048 kB\nPss:  1500 kB\nPss_Anon: 10 kB\n";
        assert_eq!(pss_line(rollup), Some(1500));
    }

    /// A child that holds 64 MB in a grandchild is counted through the tree.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_grandchild_s_memory_is_in_the_peak() {
        let mut cmd = Command::new("python3");
        cmd.args([
            "-c",
            "import subprocess,sys; subprocess.run([sys.executable,'-c',\
             'import time; b=bytearray(64<<20); b[::4096]=b\"x\"*len(b[::4096]); time.sleep(1.5)'])",
        ]);
        let s = run_sampled(&mut cmd).unwrap();
        let peak = s.peak_pss_mb.unwrap();
        assert!(
            peak > 64.0,
            "peak PSS {peak} MB misses the grandchild's 64 MB"
        );
    }
}
