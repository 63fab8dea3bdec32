//! `metrics.jsonl`: one JSON object per line, per step and per epoch; the
//! same records go, as scalars, to TensorBoard event files in `tb/` beside
//! it ([`crate::tensorboard`]), so `tensorboard --logdir runs` shows them.
use crate::tensorboard::TensorBoardWriter;
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

/// The TensorBoard folder of a run: `tb/` beside `metrics.jsonl`.
pub const TENSORBOARD_DIR: &str = "tb";

/// An append-only JSON-lines log, mirrored into TensorBoard event files.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    out: BufWriter<File>,
    tb: TensorBoardWriter,
}

fn tb_dir(path: &Path) -> PathBuf {
    path.parent()
        .unwrap_or_else(|| Path::new("."))
        .join(TENSORBOARD_DIR)
}

/// Whether a record of a resumed run's log happened before its checkpoint
/// at `step`: the `init` record, steps before it (step `s` is the update
/// that makes `s + 1` steps), epoch records up to and including it (an
/// epoch record carries the step count at the epoch's end, which is the
/// checkpoint's own step when the checkpoint ends that epoch).
fn before_checkpoint(v: &Value, step: u64) -> bool {
    let Some(s) = v.get("step").and_then(Value::as_u64) else {
        return false;
    };
    match v.get("kind").and_then(Value::as_str) {
        Some("init") => true,
        Some("epoch") => s <= step,
        _ => s < step,
    }
}

impl MetricsLog {
    /// Starts a new log at `path` (an existing one is replaced).
    pub fn create(path: &Path) -> Result<Self> {
        let f = File::create(path).map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(f),
            tb: TensorBoardWriter::create(&tb_dir(path))?,
        })
    }

    /// Reopens the log of a resumed run, cut exactly at the checkpoint of
    /// `step`: it keeps the `init` record, step records before `step` and
    /// epoch records up to and including it (later ones will be replayed).
    /// Lines that are not JSON (a last line cut short by a crash) are dropped
    /// and counted. The cut log is written beside the old one and renamed
    /// over it, so a crash while resuming loses nothing; then records are
    /// appended. Returns the log, the kept records and the dropped lines.
    pub fn resume(path: &Path, step: u64) -> Result<(Self, Vec<Value>, usize)> {
        let mut kept = Vec::new();
        let mut corrupt = 0usize;
        match File::open(path) {
            Ok(f) => {
                let mut r = BufReader::new(f);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    let n = r
                        .read_until(b'\n', &mut line)
                        .map_err(|e| Error::io(path, e))?;
                    if n == 0 {
                        break;
                    }
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    match serde_json::from_slice::<Value>(&line) {
                        Ok(v) if before_checkpoint(&v, step) => kept.push(v),
                        Ok(_) => {}
                        Err(_) => corrupt += 1,
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(path, e)),
        }
        let mut text = Vec::new();
        for v in &kept {
            serde_json::to_writer(&mut text, v).map_err(|e| Error::io(path, e.into()))?;
            text.push(b'\n');
        }
        crate::tensor_io::write_atomic(path, &text)?;
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let log = Self {
            path: path.to_path_buf(),
            out: BufWriter::new(f),
            tb: TensorBoardWriter::create_resumed(&tb_dir(path), step, &kept)?,
        };
        Ok((log, kept, corrupt))
    }

    /// Appends one record (and its scalars to the TensorBoard file).
    pub fn append(&mut self, v: &Value) -> Result<()> {
        serde_json::to_writer(&mut self.out, v).map_err(|e| Error::io(&self.path, e.into()))?;
        self.out
            .write_all(b"\n")
            .map_err(|e| Error::io(&self.path, e))?;
        self.tb.scalars_from_record(v)
    }

    /// Flushes both to disk.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::io(&self.path, e))?;
        self.tb.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every record also lands in `tb/` beside the log, as TensorBoard
    /// scalars (the event format itself is tested in `tensorboard`).
    #[test]
    fn records_are_mirrored_into_tensorboard_event_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::create(&path).unwrap();
        log.append(&json!({"kind": "step", "step": 0, "loss": 2.5}))
            .unwrap();
        log.flush().unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path().join(TENSORBOARD_DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let name = files[0].file_name().unwrap().to_string_lossy().to_string();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        let bytes = std::fs::read(&files[0]).unwrap();
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(
            has(b"train/loss") && has(&2.5f32.to_le_bytes()),
            "tag or value missing"
        );
    }

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
        let (_, kept, corrupt) = MetricsLog::resume(&path, 6).unwrap();
        assert_eq!(kept.len(), 6);
        assert_eq!(corrupt, 0);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 6);
    }

    /// Resuming at the end of an epoch keeps that epoch's record (it carries
    /// the checkpoint's own step) and the init record; a last line cut short
    /// by kill -9 is dropped and counted; new records are appended after the
    /// kept ones.
    #[test]
    fn resume_cuts_exactly_at_the_checkpoint_and_survives_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::create(&path).unwrap();
        log.append(&json!({"kind": "init", "step": 0})).unwrap();
        for s in 0..4u64 {
            log.append(&json!({"kind": "step", "step": s})).unwrap();
        }
        log.append(&json!({"kind": "epoch", "epoch": 0, "step": 4}))
            .unwrap();
        for s in 4..6u64 {
            log.append(&json!({"kind": "step", "step": s})).unwrap();
        }
        log.flush().unwrap();
        drop(log);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"kind\": \"step\", \"st").unwrap();
        drop(f);
        let (mut log, kept, corrupt) = MetricsLog::resume(&path, 4).unwrap();
        assert_eq!(corrupt, 1);
        let kinds: Vec<(String, u64)> = kept
            .iter()
            .map(|v| {
                (
                    v["kind"].as_str().unwrap().to_string(),
                    v["step"].as_u64().unwrap(),
                )
            })
            .collect();
        let want: Vec<(String, u64)> = [
            ("init", 0),
            ("step", 0),
            ("step", 1),
            ("step", 2),
            ("step", 3),
            ("epoch", 4),
        ]
        .iter()
        .map(|(k, s)| (k.to_string(), *s))
        .collect();
        assert_eq!(kinds, want);
        log.append(&json!({"kind": "step", "step": 4})).unwrap();
        log.flush().unwrap();
        let lines: Vec<Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 7);
        assert_eq!(lines[5]["kind"], "epoch");
        assert_eq!(lines[6]["step"], 4);
        assert!(!dir.path().join("metrics.jsonl.tmp").exists());
    }
}
