//! What a run found: the per-target report and its markdown / JSON forms.
use super::Options;
use serde::Serialize;
use std::fs::File;
use std::io::Write;
use std::path::Path;

/// What a budget-bound run of one target found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub target: String,
    pub executions: u64,
    pub seconds: f64,
    pub execs_per_sec: f64,
    /// Inputs the reader accepted (the rest it refused with an error).
    pub accepted: u64,
    pub seeds: u64,
    pub panics: u64,
    /// Child processes that died (signal or abnormal exit), hangs excluded.
    pub aborts: u64,
    /// Allocations above the cap (refused): aborts so caused, and refusals the
    /// reader coped with (`try_reserve`).
    pub alloc_cap_hits: u64,
    /// Inputs that ran longer than the hang limit.
    pub hangs: u64,
    /// Largest single (Rust) allocation of any execution, in bytes.
    pub max_alloc: u64,
    /// Executions whose largest allocation exceeded the warning cap.
    pub over_warn: u64,
    /// Saved inputs (crashes, hangs, big allocations).
    pub saved: Vec<String>,
}

impl Report {
    /// Crashes of any kind: panics, aborts (including allocation-cap hits) and hangs.
    pub fn crashes(&self) -> u64 {
        self.panics + self.aborts + self.hangs
    }

    /// No crash and no allocation above the cap.
    pub fn clean(&self) -> bool {
        self.crashes() == 0 && self.alloc_cap_hits == 0
    }
}

/// Human-readable bytes.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The reports as a markdown table.
pub fn markdown(reports: &[Report], opts: &Options) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "allocation cap {} (refused above), warning cap {}\n\n",
        bytes(opts.alloc_cap as u64),
        bytes(opts.warn_cap as u64)
    ));
    s.push_str("| target | executions | execs/s | accepted | crashes (panics / aborts / hangs) | alloc-cap hits | largest allocation | over warning cap |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in reports {
        s.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} ({} / {} / {}) | {} | {} | {} |\n",
            r.target,
            r.executions,
            r.execs_per_sec,
            r.accepted,
            r.crashes(),
            r.panics,
            r.aborts,
            r.hangs,
            r.alloc_cap_hits,
            bytes(r.max_alloc),
            r.over_warn
        ));
    }
    s
}

/// Writes `report.json` and `report.md` into `dir`.
pub fn write_reports(dir: &Path, reports: &[Report], opts: &Options) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::json!({
        "alloc_cap": opts.alloc_cap,
        "warn_cap": opts.warn_cap,
        "seed": opts.seed,
        "seconds_per_target": opts.seconds,
        "execs_per_target": opts.execs,
        "targets": reports,
    });
    let mut f = File::create(dir.join("report.json"))?;
    f.write_all(
        serde_json::to_string_pretty(&json)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    std::fs::write(dir.join("report.md"), markdown(reports, opts))
}
