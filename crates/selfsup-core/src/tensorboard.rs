//! TensorBoard event files, written without TensorFlow or a protobuf crate.
//!
//! [`TensorBoardWriter`] writes `events.out.tfevents.<unix secs>.<hostname>`
//! into a folder (e.g. `runs/<name>/tb/`), readable by
//! `tensorboard --logdir runs`. The file is a sequence of TFRecords (`u64`
//! length, little-endian; masked CRC-32C of those 8 bytes; the data; masked
//! CRC-32C of the data), each holding one `tensorflow.Event` protobuf encoded
//! by hand: the first carries `file_version: "brain.Event:2"`, every later one
//! a wall time, a step and a `Summary` of one scalar (`simple_value`, a
//! float32, which TensorBoard shows as a scalar chart).
//!
//! [`TensorBoardWriter::scalars_from_record`] turns one `metrics.jsonl` record
//! of the trainer into scalars (see [`record_scalars`] for the tags).
//!
//! Every process writes its own file, which starts (after `file_version`)
//! with `SessionLog START` at the step it starts from, as TensorFlow does: 0
//! for a fresh run ([`TensorBoardWriter::create`]), the checkpoint's step for
//! a resumed one ([`TensorBoardWriter::create_resumed`]). TensorBoard then
//! drops what an interrupted process logged from that step on (the resumed
//! run logs it again; TensorBoard's Python reader ignores the first START it
//! sees, hence the one at step 0); `create_resumed` writes again the kept
//! records that this drop would hide.
use crate::{Error, Result};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The CRC-32C (Castagnoli, reflected polynomial `0x82F63B78`) lookup table.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// The CRC-32C of `data` (what TFRecord framing uses).
pub fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC32C_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// TFRecord's masked CRC: `((crc >> 15) | (crc << 17)) + 0xa282ead8`.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xA282_EAD8)
}

/// Appends `v` as a protobuf varint.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends the key of field `field` with wire type `wire`.
fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

/// Appends a length-delimited field (string, bytes or message).
fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The event file's first event: `wall_time`, `file_version`.
fn file_version_event(wall_time: f64) -> Vec<u8> {
    let mut e = Vec::with_capacity(32);
    put_key(&mut e, 1, 1);
    e.extend_from_slice(&wall_time.to_le_bytes());
    put_bytes(&mut e, 3, b"brain.Event:2");
    e
}

/// An event with `wall_time`, `step` and `summary { value { tag, simple_value } }`.
fn scalar_event(wall_time: f64, step: i64, tag: &str, value: f32) -> Vec<u8> {
    let mut v = Vec::with_capacity(tag.len() + 16);
    put_bytes(&mut v, 1, tag.as_bytes());
    put_key(&mut v, 2, 5);
    v.extend_from_slice(&value.to_le_bytes());
    let mut summary = Vec::with_capacity(v.len() + 4);
    put_bytes(&mut summary, 1, &v);
    let mut e = Vec::with_capacity(summary.len() + 24);
    put_key(&mut e, 1, 1);
    e.extend_from_slice(&wall_time.to_le_bytes());
    put_key(&mut e, 2, 0);
    put_varint(&mut e, step as u64);
    put_bytes(&mut e, 5, &summary);
    e
}

/// An event with `wall_time`, `step` and `session_log { status: START }`:
/// TensorBoard drops every earlier-read event whose step is `>= step`.
fn session_start_event(wall_time: f64, step: i64) -> Vec<u8> {
    let mut log = Vec::with_capacity(2);
    put_key(&mut log, 1, 0);
    put_varint(&mut log, 1);
    let mut e = Vec::with_capacity(24);
    put_key(&mut e, 1, 1);
    e.extend_from_slice(&wall_time.to_le_bytes());
    put_key(&mut e, 2, 0);
    put_varint(&mut e, step as u64);
    put_bytes(&mut e, 7, &log);
    e
}

/// One TFRecord: length, masked CRC of the length, data, masked CRC of the data.
fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut r = Vec::with_capacity(data.len() + 16);
    r.extend_from_slice(&len);
    r.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    r.extend_from_slice(data);
    r.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    r
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The host name for the file name (letters, digits, `-`, `_`, `.` only).
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// Files tried per second and host before giving up (`<name>`, `<name>.1`, ...).
const MAX_NAME_TRIES: u32 = 1000;

/// A step and the `(tag, value)` scalars logged at it.
pub type StepScalars = (u64, Vec<(String, f64)>);

/// The scalars of one `metrics.jsonl` record: `(step, [(tag, value)])`, or
/// `None` for a record of another kind (nothing to chart).
///
/// * `"step"`: every numeric field but `step` and `epoch`, as `train/<name>`
///   (`train/loss`, `train/lr`, `train/grad_norm`, `train/samples_per_s` and
///   the loss terms);
/// * `"epoch"`: `metrics` (`[[name, value], ...]`) as `eval/<name>`, the
///   numeric fields of `collapse` as `collapse/<name>`, `mean_loss` as
///   `train/epoch_loss`, `samples_per_s` as `train/epoch_samples_per_s`,
///   `train_seconds` as `train/epoch_seconds`;
/// * `"init"`: the numeric fields of `collapse` as `collapse/<name>` at step 0.
///
/// The trainer's `f64` fields (all but `collapse`'s) that are `null` (how
/// serde_json writes a NaN or infinity) are charted as NaN, so that they are
/// not silently missing; `null` in `collapse` is a statistic that was not
/// measured (`alignment` without pairs) and is left out, as are bools and
/// strings. A record of one of these kinds
/// without a `step` that fits TensorBoard's int64 is an error.
pub fn record_scalars(record: &Value) -> Result<Option<StepScalars>> {
    let kind = record.get("kind").and_then(Value::as_str);
    if !matches!(kind, Some("step" | "epoch" | "init")) {
        return Ok(None);
    }
    let step = match kind {
        Some("init") => 0,
        _ => record
            .get("step")
            .and_then(Value::as_u64)
            .filter(|&s| i64::try_from(s).is_ok())
            .ok_or_else(|| {
                Error::Data(format!(
                    "metrics record without a step between 0 and {}: {}",
                    i64::MAX,
                    short(record)
                ))
            })?,
    };
    let mut out = Vec::new();
    let collapse = |out: &mut Vec<(String, f64)>| {
        if let Some(Value::Object(c)) = record.get("collapse") {
            for (k, v) in c {
                if let Some(x) = number(v) {
                    out.push((format!("collapse/{k}"), x));
                }
            }
        }
    };
    match kind {
        Some("step") => {
            if let Value::Object(m) = record {
                for (k, v) in m {
                    if k == "step" || k == "epoch" {
                        continue;
                    }
                    if let Some(x) = number_or_nan(v) {
                        out.push((format!("train/{k}"), x));
                    }
                }
            }
        }
        Some("epoch") => {
            if let Some(Value::Array(ms)) = record.get("metrics") {
                for m in ms {
                    if let Some([Value::String(name), v]) = m.as_array().map(Vec::as_slice) {
                        if let Some(x) = number_or_nan(v) {
                            out.push((format!("eval/{name}"), x));
                        }
                    }
                }
            }
            collapse(&mut out);
            for (field, tag) in [
                ("mean_loss", "train/epoch_loss"),
                ("samples_per_s", "train/epoch_samples_per_s"),
                ("train_seconds", "train/epoch_seconds"),
            ] {
                if let Some(x) = record.get(field).and_then(number_or_nan) {
                    out.push((tag.into(), x));
                }
            }
        }
        _ => collapse(&mut out),
    }
    Ok(Some((step, out)))
}

/// A JSON number (not a bool, string or null).
fn number(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// A JSON number, or NaN for `null` (what serde_json writes for a NaN or
/// infinite `f64`), for fields that are always `f64` in the trainer.
fn number_or_nan(v: &Value) -> Option<f64> {
    if v.is_null() {
        Some(f64::NAN)
    } else {
        v.as_f64()
    }
}

/// A record for an error message, cut to 200 characters.
fn short(record: &Value) -> String {
    let s = record.to_string();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// Writes scalars into a TensorBoard event file.
#[derive(Debug)]
pub struct TensorBoardWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl TensorBoardWriter {
    /// For a run that starts at step 0: creates `dir` (and its parents) and
    /// a new event file in it, `events.out.tfevents.<unix secs>.<hostname>`
    /// (with `.1`, `.2`, ... appended when that name is taken), and writes its
    /// `file_version` event and `SessionLog START` at step 0. Not for a
    /// resumed run: its START at 0 would hide everything logged before (use
    /// [`create_resumed`](Self::create_resumed)).
    pub fn create(dir: &Path) -> Result<Self> {
        let mut w = Self::open(dir)?;
        w.write_record(&session_start_event(now(), 0))?;
        Ok(w)
    }

    /// A new event file in `dir` with its `file_version` event.
    fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let wall = now();
        let base = format!("events.out.tfevents.{}.{}", wall as u64, hostname());
        let mut tries = 0u32;
        let (path, file) = loop {
            let name = if tries == 0 {
                base.clone()
            } else {
                format!("{base}.{tries}")
            };
            let path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    tries += 1;
                    if tries >= MAX_NAME_TRIES {
                        return Err(Error::Data(format!(
                            "{}: {MAX_NAME_TRIES} event files of this second and host \
                             already exist in {}; remove old ones or write elsewhere",
                            dir.join(&base).display(),
                            dir.display()
                        )));
                    }
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        };
        let mut w = Self {
            path,
            out: BufWriter::new(file),
        };
        w.write_record(&file_version_event(wall))?;
        Ok(w)
    }

    /// [`create`](Self::create) for a run resumed from the checkpoint at
    /// `step`: a new event file whose `SessionLog START` is at `step`, so that
    /// TensorBoard drops what earlier processes logged at steps `>= step`
    /// (the resumed run logs those again); then the scalars of the `kept`
    /// records (those `MetricsLog::resume` kept) at steps `>= step` are
    /// written again, which that drop would otherwise hide (the epoch record
    /// at the checkpoint's own step).
    pub fn create_resumed(dir: &Path, step: u64, kept: &[Value]) -> Result<Self> {
        let mut w = Self::open(dir)?;
        let s = w.step(step)?;
        w.write_record(&session_start_event(now(), s))?;
        for r in kept {
            if let Some((rs, scalars)) = record_scalars(r).map_err(|e| w.named(e))? {
                if rs >= step {
                    for (tag, v) in scalars {
                        w.scalar(&tag, rs, v)?;
                    }
                }
            }
        }
        Ok(w)
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `value` (stored as float32, as TensorBoard's scalars are; NaN
    /// and infinities are written as they are) under `tag` at `step`.
    pub fn scalar(&mut self, tag: &str, step: u64, value: f64) -> Result<()> {
        let s = self.step(step)?;
        self.write_record(&scalar_event(now(), s, tag, value as f32))
    }

    /// Writes the scalars of one `metrics.jsonl` record (see
    /// [`record_scalars`]); records of other kinds are ignored.
    pub fn scalars_from_record(&mut self, record: &Value) -> Result<()> {
        let Some((step, scalars)) = record_scalars(record).map_err(|e| self.named(e))? else {
            return Ok(());
        };
        for (tag, v) in scalars {
            self.scalar(&tag, step, v)?;
        }
        Ok(())
    }

    /// Flushes what was written to the file.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::io(&self.path, e))
    }

    fn step(&self, step: u64) -> Result<i64> {
        i64::try_from(step).map_err(|_| {
            Error::Data(format!(
                "{}: step {step} is beyond TensorBoard's int64 steps (at most {})",
                self.path.display(),
                i64::MAX
            ))
        })
    }

    /// A data error with this writer's file in front.
    fn named(&self, e: Error) -> Error {
        match e {
            Error::Data(m) => Error::Data(format!("{}: {m}", self.path.display())),
            other => other,
        }
    }

    fn write_record(&mut self, data: &[u8]) -> Result<()> {
        self.out
            .write_all(&frame(data))
            .map_err(|e| Error::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests;
