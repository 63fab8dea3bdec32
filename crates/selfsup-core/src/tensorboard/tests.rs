//! Tests of `tensorboard`.
use super::*;
use serde_json::json;

/// One decoded event: step, file_version, (tag, value)s, session_log status.
#[derive(Debug, Default, PartialEq)]
struct Event {
    wall_time: f64,
    step: i64,
    file_version: Option<String>,
    values: Vec<(String, f32)>,
    session_status: Option<u64>,
}

fn get_varint(b: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let byte = b[*pos];
        *pos += 1;
        v |= u64::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

/// The fields of a message: (field number, wire type, varint or fixed value, bytes).
fn fields(b: &[u8]) -> Vec<(u64, u64, u64, Vec<u8>)> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < b.len() {
        let key = get_varint(b, &mut pos);
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => out.push((field, wire, get_varint(b, &mut pos), vec![])),
            1 => {
                let v = u64::from_le_bytes(b[pos..pos + 8].try_into().unwrap());
                pos += 8;
                out.push((field, wire, v, vec![]));
            }
            2 => {
                let n = get_varint(b, &mut pos) as usize;
                out.push((field, wire, 0, b[pos..pos + n].to_vec()));
                pos += n;
            }
            5 => {
                let v = u32::from_le_bytes(b[pos..pos + 4].try_into().unwrap());
                pos += 4;
                out.push((field, wire, u64::from(v), vec![]));
            }
            w => panic!("wire type {w}"),
        }
    }
    out
}

/// Reads an event file back, checking the framing and both CRCs of every record.
fn read_events(path: &Path) -> Vec<Event> {
    let b = std::fs::read(path).unwrap();
    let mut pos = 0;
    let mut events = Vec::new();
    while pos < b.len() {
        let len_bytes = &b[pos..pos + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let len_crc = u32::from_le_bytes(b[pos + 8..pos + 12].try_into().unwrap());
        assert_eq!(len_crc, masked_crc32c(len_bytes), "length CRC at {pos}");
        let data = &b[pos + 12..pos + 12 + len];
        let crc = u32::from_le_bytes(b[pos + 12 + len..pos + 16 + len].try_into().unwrap());
        assert_eq!(crc, masked_crc32c(data), "data CRC at {pos}");
        pos += 16 + len;
        let mut e = Event::default();
        for (f, wire, v, bytes) in fields(data) {
            match (f, wire) {
                (1, 1) => e.wall_time = f64::from_bits(v),
                (2, 0) => e.step = v as i64,
                (3, 2) => e.file_version = Some(String::from_utf8(bytes).unwrap()),
                (5, 2) => {
                    for (f, wire, _, value) in fields(&bytes) {
                        assert_eq!((f, wire), (1, 2));
                        let (mut tag, mut x) = (String::new(), f32::NAN);
                        for (f, wire, v, bytes) in fields(&value) {
                            match (f, wire) {
                                (1, 2) => tag = String::from_utf8(bytes).unwrap(),
                                (2, 5) => x = f32::from_bits(v as u32),
                                other => panic!("Summary.Value field {other:?}"),
                            }
                        }
                        e.values.push((tag, x));
                    }
                }
                (7, 2) => {
                    let f = fields(&bytes);
                    assert_eq!((f[0].0, f[0].1), (1, 0));
                    e.session_status = Some(f[0].2);
                }
                other => panic!("Event field {other:?}"),
            }
        }
        events.push(e);
    }
    events
}

/// (tag, step, value) of every scalar event after the first.
fn scalars(events: &[Event]) -> Vec<(String, i64, f32)> {
    events
        .iter()
        .flat_map(|e| e.values.iter().map(|(t, v)| (t.clone(), e.step, *v)))
        .collect()
}

fn only_file(dir: &Path) -> PathBuf {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().unwrap()
}

#[test]
fn crc32c_matches_known_vectors() {
    assert_eq!(crc32c(b""), 0);
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
    let inc: Vec<u8> = (0..32).collect();
    assert_eq!(crc32c(&inc), 0x46DD_794E);
}

#[test]
fn masked_crc_rotates_and_adds_the_delta() {
    // ((crc >> 15) | (crc << 17)) + 0xa282ead8, computed independently.
    assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
    // The addition wraps around instead of overflowing.
    assert_eq!(masked_crc32c(&[0u8; 32]), 0x0FD7_FFFA);
}

#[test]
fn varints_round_trip() {
    for v in [
        0,
        1,
        127,
        128,
        300,
        16_383,
        16_384,
        u64::from(u32::MAX),
        i64::MAX as u64,
        u64::MAX,
    ] {
        let mut b = Vec::new();
        put_varint(&mut b, v);
        assert_eq!(
            b.len(),
            (64 - v.leading_zeros() as usize).div_ceil(7).max(1)
        );
        let mut pos = 0;
        assert_eq!(get_varint(&b, &mut pos), v);
        assert_eq!(pos, b.len());
    }
    let mut b = Vec::new();
    put_varint(&mut b, 300);
    assert_eq!(b, [0xAC, 0x02]);
}

#[test]
fn a_written_file_reads_back_with_its_tags_steps_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let tb = dir.path().join("runs/demo/tb");
    let mut w = TensorBoardWriter::create(&tb).unwrap();
    w.scalar("train/loss", 0, 2.5).unwrap();
    w.scalar("train/loss", 1, 1.25).unwrap();
    w.scalar("odd/nan", 7, f64::NAN).unwrap();
    w.scalar("odd/inf", 8, f64::NEG_INFINITY).unwrap();
    w.scalar("big/step", i64::MAX as u64, 0.1).unwrap();
    let err = w.scalar("big/step", u64::MAX, 0.1).unwrap_err().to_string();
    assert!(err.contains("tfevents") && err.contains("int64"), "{err}");
    w.flush().unwrap();
    let path = only_file(&tb);
    assert_eq!(w.path(), path);
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("events.out.tfevents."), "{name}");
    let events = read_events(&path);
    assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
    assert!(events[0].wall_time > 1.6e9, "{}", events[0].wall_time);
    assert_eq!((events[1].step, events[1].session_status), (0, Some(1)));
    assert!(events[1].values.is_empty());
    let got = scalars(&events);
    assert_eq!(got.len(), 5);
    assert_eq!(got[0], ("train/loss".into(), 0, 2.5));
    assert_eq!(got[1], ("train/loss".into(), 1, 1.25));
    assert!(got[2].0 == "odd/nan" && got[2].1 == 7 && got[2].2.is_nan());
    assert_eq!(got[3], ("odd/inf".into(), 8, f32::NEG_INFINITY));
    assert_eq!(got[4], ("big/step".into(), i64::MAX, 0.1f32));
    assert!(events[1..]
        .iter()
        .all(|e| e.wall_time >= events[0].wall_time));
}

#[test]
fn a_second_writer_in_the_same_second_gets_its_own_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = TensorBoardWriter::create(dir.path()).unwrap();
    let b = TensorBoardWriter::create(dir.path()).unwrap();
    assert_ne!(a.path(), b.path());
    // TensorBoard reads a folder's files in name order: the later one sorts last.
    assert!(a.path() < b.path(), "{:?} {:?}", a.path(), b.path());
}

#[test]
fn an_unwritable_folder_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = TensorBoardWriter::create(&file.join("tb"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not-a-dir"), "{err}");
}

/// What the trainer writes to metrics.jsonl (see trainer.rs).
fn records() -> Vec<Value> {
    let collapse = json!({"samples": 64, "dim": 8, "std_normalized": 0.3, "std_ratio": 0.9,
        "rankme": 5.5, "rank_ratio": 0.69, "alignment": null, "uniformity": -1.5,
        "non_finite": false});
    vec![
        json!({"kind": "init", "step": 0, "collapse": collapse}),
        json!({"kind": "step", "step": 0, "epoch": 0, "loss": 4.0, "lr": 0.1,
            "grad_norm": 2.0, "samples_per_s": 100.0, "invariance": 1.5}),
        json!({"kind": "step", "step": 1, "epoch": 0, "loss": 3.0, "lr": 0.1,
            "grad_norm": null, "samples_per_s": 110.0, "invariance": 1.0}),
        json!({"kind": "epoch", "epoch": 0, "step": 2, "mean_loss": 3.5, "train_seconds": 0.5,
            "samples_per_s": 105.0, "metrics": [["knn_top1", 0.25], ["linear_top1", 0.5]],
            "collapse": collapse, "warnings": ["something"]}),
        json!({"kind": "note", "text": "ignored"}),
    ]
}

#[test]
fn metrics_records_become_tagged_scalars() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = TensorBoardWriter::create(dir.path()).unwrap();
    for r in records() {
        w.scalars_from_record(&r).unwrap();
    }
    w.flush().unwrap();
    let mut got = scalars(&read_events(w.path()));
    got.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    let want: Vec<(String, i64, f32)> = [
        ("collapse/dim", 0, 8.0),
        ("collapse/rank_ratio", 0, 0.69),
        ("collapse/rankme", 0, 5.5),
        ("collapse/samples", 0, 64.0),
        ("collapse/std_normalized", 0, 0.3),
        ("collapse/std_ratio", 0, 0.9),
        ("collapse/uniformity", 0, -1.5),
        ("train/grad_norm", 0, 2.0),
        ("train/invariance", 0, 1.5),
        ("train/loss", 0, 4.0),
        ("train/lr", 0, 0.1),
        ("train/samples_per_s", 0, 100.0),
        ("train/grad_norm", 1, f64::NAN),
        ("train/invariance", 1, 1.0),
        ("train/loss", 1, 3.0),
        ("train/lr", 1, 0.1),
        ("train/samples_per_s", 1, 110.0),
        ("collapse/dim", 2, 8.0),
        ("collapse/rank_ratio", 2, 0.69),
        ("collapse/rankme", 2, 5.5),
        ("collapse/samples", 2, 64.0),
        ("collapse/std_normalized", 2, 0.3),
        ("collapse/std_ratio", 2, 0.9),
        ("collapse/uniformity", 2, -1.5),
        ("eval/knn_top1", 2, 0.25),
        ("eval/linear_top1", 2, 0.5),
        ("train/epoch_loss", 2, 3.5),
        ("train/epoch_samples_per_s", 2, 105.0),
        ("train/epoch_seconds", 2, 0.5),
    ]
    .into_iter()
    .map(|(t, s, v)| (t.to_string(), s, v as f32))
    .collect();
    // NaN-aware: compare the float32 bits.
    let bits = |v: &[(String, i64, f32)]| -> Vec<(String, i64, u32)> {
        v.iter()
            .map(|(t, s, x)| (t.clone(), *s, x.to_bits()))
            .collect()
    };
    assert_eq!(bits(&got), bits(&want));
}

#[test]
fn a_record_without_a_step_is_an_error_naming_the_event_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = TensorBoardWriter::create(dir.path()).unwrap();
    for bad in [
        json!({"kind": "step", "loss": 1.0}),
        json!({"kind": "epoch", "step": -3}),
        json!({"kind": "step", "step": u64::MAX}),
    ] {
        let err = w.scalars_from_record(&bad).unwrap_err().to_string();
        assert!(
            err.contains("tfevents") && err.contains("without a step"),
            "{err}"
        );
    }
}

#[test]
fn a_resumed_writer_starts_a_session_and_rewrites_the_checkpoint_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let kept = records();
    // Resumed from the checkpoint at the end of the epoch (step 2).
    let w = TensorBoardWriter::create_resumed(dir.path(), 2, &kept).unwrap();
    drop(w);
    let events = read_events(&only_file(dir.path()));
    assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
    assert_eq!((events[1].step, events[1].session_status), (2, Some(1)));
    let got = scalars(&events);
    assert_eq!(got.len(), 12, "{got:?}");
    assert!(got.iter().all(|(_, s, _)| *s == 2), "{got:?}");
    assert!(got.contains(&("eval/knn_top1".into(), 2, 0.25)));
}

fn check_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benchmarks/check_tensorboard.py")
}

/// With `SELFSUP_TB_PYTHON` set (a Python with `tensorboard`), TensorBoard's
/// own reader must load what we write: `benchmarks/check_tensorboard.py`
/// passes on the right counts and values and fails on wrong ones; a
/// resumed run's file hides what the first process logged past the
/// checkpoint.
#[test]
fn tensorboard_itself_reads_the_files() {
    let Some(python) = std::env::var_os("SELFSUP_TB_PYTHON") else {
        eprintln!("SELFSUP_TB_PYTHON not set: TensorBoard check skipped (Rust side checked)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tb = dir.path().join("tb");
    let mut w = TensorBoardWriter::create(&tb).unwrap();
    for r in records() {
        w.scalars_from_record(&r).unwrap();
    }
    // Steps past the checkpoint (2) that the resumed run replaces.
    w.scalar("train/loss", 2, 99.0).unwrap();
    w.scalar("train/loss", 3, 99.0).unwrap();
    w.scalar("odd/nan", 1, f64::NAN).unwrap();
    w.flush().unwrap();
    drop(w);
    let mut w = TensorBoardWriter::create_resumed(&tb, 2, &records()).unwrap();
    w.scalar("train/loss", 2, 2.0).unwrap();
    w.flush().unwrap();
    drop(w);
    let values = dir.path().join("values.json");
    std::fs::write(
        &values,
        json!({
            "train/loss": [[0, 4.0], [1, 3.0], [2, 2.0]],
            "eval/knn_top1": [[2, 0.25]],
            "collapse/rankme": [[0, 5.5], [2, 5.5]],
            "odd/nan": [[1, "nan"]],
        })
        .to_string(),
    )
    .unwrap();
    let wrong = dir.path().join("wrong.json");
    std::fs::write(
        &wrong,
        json!({"train/loss": [[0, 4.0], [1, 3.0], [2, 99.0]]}).to_string(),
    )
    .unwrap();
    let run = |values: &Path, extra: &[&str]| {
        let out = std::process::Command::new(&python)
            .arg(check_script())
            .arg(&tb)
            .args(["--values".as_ref(), values.as_os_str()])
            .args(extra)
            .output()
            .expect("run SELFSUP_TB_PYTHON");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{text}");
        (out.status.code(), text)
    };
    let (code, text) = run(
        &values,
        &[
            "--expect",
            "train/loss=3",
            "train/lr=2",
            "eval/linear_top1=1",
            "collapse/uniformity=2",
            "train/epoch_loss=1",
        ],
    );
    assert!(code == Some(0) && text.contains("PASS"), "{text}");
    let (code, text) = run(&values, &["--expect", "train/loss=4"]);
    assert!(code == Some(1) && text.contains("FAIL"), "{text}");
    let (code, text) = run(&values, &["--expect", "train/missing=1"]);
    assert!(code == Some(1) && text.contains("FAIL"), "{text}");
    let (code, text) = run(&wrong, &[]);
    assert!(code == Some(1) && text.contains("FAIL"), "{text}");
}
