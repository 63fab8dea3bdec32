//! `metrics.jsonl`: one JSON object per line, per step and per epoch.
use crate::{Error, Result};
use serde_json::Value;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Peak resident memory of this process so far, in MB (Linux `VmHWM`; `None`
/// elsewhere). Workflows read it right after training, binaries at the end.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// An append-only JSON-lines log.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsLog {
    /// Starts a new log at `path` (an existing one is replaced).
    pub fn create(path: &Path) -> Result<Self> {
        let f = File::create(path).map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(f),
        })
    }

    /// Reopens the log of a resumed run, dropping records of steps after
    /// `step` (they will be replayed). Returns the kept records.
    pub fn resume(path: &Path, step: u64) -> Result<(Self, Vec<Value>)> {
        let kept: Vec<Value> = match File::open(path) {
            Ok(f) => BufReader::new(f)
                .lines()
                .map_while(std::result::Result::ok)
                .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
                .filter(|v| {
                    v.get("step")
                        .and_then(Value::as_u64)
                        .is_some_and(|s| s < step)
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(path, e)),
        };
        let mut log = Self::create(path)?;
        for v in &kept {
            log.append(v)?;
        }
        log.flush()?;
        Ok((log, kept))
    }

    /// Appends one record.
    pub fn append(&mut self, v: &Value) -> Result<()> {
        serde_json::to_writer(&mut self.out, v).map_err(|e| Error::io(&self.path, e.into()))?;
        self.out
            .write_all(b"\n")
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Flushes to disk.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resume_drops_records_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::create(&path).unwrap();
        for s in 0..10u64 {
            log.append(&json!({"kind": "step", "step": s})).unwrap();
        }
        log.flush().unwrap();
        drop(log);
        let (_, kept) = MetricsLog::resume(&path, 6).unwrap();
        assert_eq!(kept.len(), 6);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 6);
    }
}
