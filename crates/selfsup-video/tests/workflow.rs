//! Video through the registry entry (`selfsup_video::MODALITY`), on a
//! Fashion-MNIST written here in IDX: pre-training on core's `Run` writes
//! `config.toml`, `summary.json`, a checkpoint and the export; the probe
//! table holds both tasks for the method, random weights, raw frames and
//! the constant guess; the checkpoint, evaluated, gives the test figures
//! the run reported; the exported encoder reloads to the same features;
//! a frame-folder run trains without probes, and a bad frame folder is
//! refused before training naming the file.
use selfsup_core::device::DeviceChoice;
use selfsup_core::run::RunOptions;
use selfsup_core::trainer::Silent;
use selfsup_core::workflow::{checkpoint_method, EvalRequest};
use std::path::Path;

const CONFIG: &str = r#"
[run]
device = "cpu"
batch_size = 8
threads = 1

[data]
kind = "moving-fashion-mnist"
train_clips = 48
test_clips = 20
objects = 2
direction_bins = 4

[model]
image_size = 32
frames = 4
patch_size = 8
tubelet = 2
embed_dim = 16
depth = 1
heads = 2

[method]
name = "vjepa"
predictor_embed_dim = 16
predictor_depth = 1
predictor_heads = 2

[trainer]
epochs = 2
seed = 3
mixed_precision = false

[eval]
probe_clips = 40
weight_decays = [1e-4, 1e-2]
monitor_clips = 6
epoch_probe_clips = 16
batch = 16
probe = { epochs = 5 }
"#;

/// IDX files of `n` 28x28 garments (image `i`: a square of grey `25 * (i %
/// 10) + 30`, label `i % 10`) under `dir`, for split `split`.
fn write_split(dir: &Path, split: &str, n: usize) {
    let mut images = vec![0u8, 0, 8, 3];
    for d in [n, 28, 28] {
        images.extend_from_slice(&(d as u32).to_be_bytes());
    }
    let mut labels = vec![0u8, 0, 8, 1];
    labels.extend_from_slice(&(n as u32).to_be_bytes());
    for i in 0..n {
        let grey = 25 * (i % 10) as u8 + 30;
        for r in 0..28 {
            for c in 0..28 {
                let inside = (4..24).contains(&r) && (4 + i % 3..20 + i % 5).contains(&c);
                images.push(if inside { grey } else { 0 });
            }
        }
        labels.push((i % 10) as u8);
    }
    std::fs::write(dir.join(format!("{split}-images-idx3-ubyte")), images).unwrap();
    std::fs::write(dir.join(format!("{split}-labels-idx1-ubyte")), labels).unwrap();
}

fn opts<'a>(
    data: &Path,
    run_dir: &Path,
    obs: &'a mut Silent,
    log: &'a mut dyn FnMut(&str),
) -> RunOptions<'a> {
    RunOptions {
        data: Some(data.to_path_buf()),
        run_dir: run_dir.to_path_buf(),
        resume: false,
        observer: obs,
        stop: Default::default(),
        git_commit: None,
        log,
        distributed: None,
    }
}

/// libtorch's generator is global to the process: the tests of this file
/// take turns so that each run's seeded initialisation and steps are
/// reproducible (the resume test compares two runs bit for bit).
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn pretrain_evaluate_and_export_through_the_registry() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let fm = root.path().join("fashion-mnist");
    std::fs::create_dir(&fm).unwrap();
    write_split(&fm, "train", 60);
    write_split(&fm, "t10k", 30);
    let origin = Path::new("video.toml");
    let m = selfsup_video::MODALITY;
    assert_eq!(m.name(), "video");
    assert!(m.methods().contains(&"vjepa") && m.methods().contains(&"temporal_order"));
    let plan = m.parse(CONFIG, origin).unwrap();
    let run_dir = root.path().join("run");
    let (mut obs, mut log) = (Silent, |_: &str| {});
    let report = plan
        .pretrain(opts(root.path(), &run_dir, &mut obs, &mut log))
        .unwrap();
    let lines = report.lines().join("\n");
    for f in [
        "config.toml",
        "summary.json",
        "checkpoint.safetensors",
        "metrics.jsonl",
    ] {
        assert!(run_dir.join(f).is_file(), "{f}");
    }
    for f in ["encoder.safetensors", "config.json"] {
        assert!(run_dir.join("export").join(f).is_file(), "{f}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["steps"], 12, "48 clips / 8 x 2 epochs");
    assert!(summary["final_loss"].as_f64().unwrap().is_finite());
    let probes = summary["probes"].as_array().unwrap();
    let mut seen: Vec<(String, String)> = probes
        .iter()
        .map(|p| {
            let t = p["test"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&t), "{p}");
            (
                p["task"].as_str().unwrap().to_string(),
                p["features"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    let mut want = Vec::new();
    for task in ["direction", "garment"] {
        for f in ["constant", "random weights", "raw frames", "vjepa"] {
            want.push((task.to_string(), f.to_string()));
        }
    }
    assert_eq!(seen, want, "{lines}");
    assert!(
        lines.contains("raw frames") && lines.contains("hit@1"),
        "{lines}"
    );
    // Every epoch record carries the validation probes.
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.matches("val_direction_hit").count(), 2, "{metrics}");

    // The checkpoint, evaluated, reports the run's figures.
    let ck = run_dir.join("checkpoint.safetensors");
    let (method, config) = checkpoint_method(&ck).unwrap();
    assert_eq!(method, "vjepa");
    let request = EvalRequest {
        protocol: "linear",
        checkpoint: &ck,
        config_toml: &config,
        data: Some(root.path()),
        device: DeviceChoice::Cpu,
    };
    let eval = m.evaluate(&request).unwrap().join("\n");
    for p in probes {
        let line = format!(
            "{:<9} {:<16} validation {:5.1} %  test {:5.1} %",
            p["task"].as_str().unwrap(),
            p["features"].as_str().unwrap(),
            100.0 * p["validation"].as_f64().unwrap(),
            100.0 * p["test"].as_f64().unwrap()
        );
        assert!(eval.contains(&line), "{line}\nnot in\n{eval}");
    }
    let bad = EvalRequest {
        protocol: "knn",
        ..request
    };
    let e = m.evaluate(&bad).unwrap_err().to_string();
    assert!(e.contains("offers linear"), "{e}");

    // `selfsup export` writes the same encoder the run exported.
    let out = root.path().join("export2");
    m.export(&ck, &config, &out).unwrap();
    let a = std::fs::read(run_dir.join("export/encoder.safetensors")).unwrap();
    let b = std::fs::read(out.join("encoder.safetensors")).unwrap();
    assert_eq!(a, b);
}

#[test]
fn frame_folders_train_without_probes_and_bad_ones_are_refused_first() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let clips = root.path().join("clips");
    for c in 0..4 {
        let dir = clips.join(format!("clip{c}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..5u32 {
            image::GrayImage::from_fn(20, 20, |x, y| {
                image::Luma([((x + y + f * 7 + c) % 255) as u8])
            })
            .save(dir.join(format!("{f:04}.png")))
            .unwrap();
        }
    }
    let config = CONFIG
        .replace(
            "kind = \"moving-fashion-mnist\"\ntrain_clips = 48\ntest_clips = 20\nobjects = 2\ndirection_bins = 4",
            "kind = \"frames\"\nfolder = \"clips\"",
        )
        .replace("batch_size = 8", "batch_size = 2")
        .replace("image_size = 32", "image_size = 16");
    let m = selfsup_video::MODALITY;
    let plan = m.parse(&config, Path::new("frames.toml")).unwrap();
    let (mut obs, mut log) = (Silent, |_: &str| {});
    let run_dir = root.path().join("run");
    let report = plan
        .pretrain(opts(root.path(), &run_dir, &mut obs, &mut log))
        .unwrap();
    let lines = report.lines().join("\n");
    assert!(lines.contains("carry no labels"), "{lines}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["data"]["resized_clips"], 4);
    assert_eq!(summary["data"]["frames_read"], 20);
    assert_eq!(summary["steps"], 4);

    // Mixed sizes in one clip: refused before any step, naming the file.
    image::GrayImage::new(21, 20)
        .save(clips.join("clip2/0003.png"))
        .unwrap();
    let run_dir = root.path().join("run2");
    let (mut obs, mut log) = (Silent, |_: &str| {});
    let e = plan
        .pretrain(opts(root.path(), &run_dir, &mut obs, &mut log))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("clip2/0003.png") && e.contains("one size"),
        "{e}"
    );
    assert!(!run_dir.join("checkpoint.safetensors").exists());
}

/// Sets the stop flag once the first epoch is done (as Ctrl-C would).
struct StopAfterFirstEpoch(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl selfsup_core::trainer::Observer for StopAfterFirstEpoch {
    fn on_epoch(&mut self, _: &selfsup_core::trainer::EpochReport) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_run_stopped_after_an_epoch_and_resumed_ends_with_the_uninterrupted_weights() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let fm = root.path().join("fashion-mnist");
    std::fs::create_dir(&fm).unwrap();
    write_split(&fm, "train", 60);
    write_split(&fm, "t10k", 30);
    let m = selfsup_video::MODALITY;
    let plan = m.parse(CONFIG, Path::new("video.toml")).unwrap();
    let (whole, parts) = (root.path().join("whole"), root.path().join("parts"));
    let (mut obs, mut log) = (Silent, |_: &str| {});
    plan.pretrain(opts(root.path(), &whole, &mut obs, &mut log))
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut stopper = StopAfterFirstEpoch(stop.clone());
    let mut log = |_: &str| {};
    let o = RunOptions {
        data: Some(root.path().to_path_buf()),
        run_dir: parts.clone(),
        resume: false,
        observer: &mut stopper,
        stop,
        git_commit: None,
        log: &mut log,
        distributed: None,
    };
    let e = plan.pretrain(o).err().unwrap();
    assert!(
        matches!(e, selfsup_core::Error::Interrupted { step: 6, .. }),
        "{e}"
    );
    let (mut obs, mut log) = (Silent, |_: &str| {});
    let mut o = opts(root.path(), &parts, &mut obs, &mut log);
    o.resume = true;
    plan.pretrain(o).unwrap();
    let a = std::fs::read(whole.join("export/encoder.safetensors")).unwrap();
    let b = std::fs::read(parts.join("export/encoder.safetensors")).unwrap();
    assert!(
        a == b,
        "the resumed run's encoder differs from the uninterrupted one"
    );
}
