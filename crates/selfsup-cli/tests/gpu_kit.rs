//! The GPU kit (benchmarks/gpu/, `cargo xtask gpu-kit`) assembled with this
//! test's own `selfsup` binary and run in its tiny CPU form: the folder fits
//! the 64 MiB the device carries, `run.sh OUT --device cpu --tiny` reports
//! every row of every section ok (each modality trained on the asked device
//! with a falling loss, the exports reproduced by torchvision and
//! transformers, the PyTorch peers, time to accuracy), and a kit out of
//! time reports every row as FAIL and exits non-zero.
//!
//! Needs a Python with torch, torchvision, transformers and safetensors
//! (`SELFSUP_PYTHON`, which `cargo xtask test` sets to the libtorch venv
//! after installing the pinned packages) and the kit's datasets in
//! `SELFSUP_KIT_DATASETS` (default ~/.cache/selfsup/datasets). Under
//! `CI=true` a missing one fails the test; elsewhere it is skipped with a note.
use std::path::{Path, PathBuf};
use std::process::Command;

const LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// The rows results.json must hold, in order.
const ROWS: [&str; 18] = [
    "train-simclr",
    "train-byol",
    "train-dino",
    "train-mae",
    "train-mlm",
    "train-wav2vec2",
    "train-grace",
    "train-dgi",
    "train-clip",
    "export-torchvision",
    "export-transformers-mlm",
    "export-transformers-clip-bert",
    "throughput-simclr-selfsup",
    "throughput-simclr-torch-eager",
    "throughput-simclr-torch-compile",
    "throughput-mlm-selfsup",
    "throughput-mlm-transformers",
    "time-to-accuracy",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Fails under CI, otherwise prints why the test is skipped; `None` then.
fn missing(what: &str) -> Option<()> {
    let message = format!("{what}: run `cargo xtask test`, which installs and sets it");
    if in_ci() {
        panic!("CI=true: {message}");
    }
    eprintln!("gpu_kit skipped: {message}");
    None
}

fn datasets_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SELFSUP_KIT_DATASETS") {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("SELFSUP_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("selfsup")))
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/selfsup")
        });
    cache.join("datasets")
}

/// The test's Python when it imports what the kit needs.
fn python() -> Option<PathBuf> {
    let Some(py) = std::env::var_os("SELFSUP_PYTHON") else {
        return missing(
            "SELFSUP_PYTHON (a Python with torch, torchvision, transformers) is not set",
        )
        .map(|_| PathBuf::new());
    };
    let ok = Command::new(&py)
        .args(["-c", "import torch, torchvision, transformers, safetensors"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        missing(&format!(
            "SELFSUP_PYTHON={} cannot import torch, torchvision, transformers and safetensors",
            Path::new(&py).display()
        ))?;
    }
    Some(PathBuf::from(py))
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                dir_bytes(&e.path())
            } else {
                e.metadata().unwrap().len()
            }
        })
        .sum()
}

fn results(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("results.json"))
        .unwrap_or_else(|e| panic!("{}/results.json: {e}", out.display()));
    serde_json::from_str(&text).unwrap()
}

fn rows(doc: &serde_json::Value) -> Vec<serde_json::Value> {
    doc["rows"].as_array().cloned().unwrap_or_default()
}

#[test]
fn kit_fits_runs_tiny_on_cpu_and_reports_every_row() {
    let Some(py) = python() else { return };
    let datasets = datasets_dir();
    let absent: Vec<&str> = [
        "fashion-mnist",
        "sotu",
        "brown",
        "klettres",
        "graspologic",
        "emoji-google",
    ]
    .into_iter()
    .filter(|d| !datasets.join(d).is_dir())
    .collect();
    if !absent.is_empty() {
        let what = format!("datasets {absent:?} missing in {}", datasets.display());
        if missing(&what).is_none() {
            return;
        }
    }

    let tmp = tempfile::tempdir().unwrap();
    let kit = tmp.path().join("kit");
    let bundle = Command::new(&py)
        .arg(workspace_root().join("benchmarks/gpu/make_bundle.py"))
        .arg("--out")
        .arg(&kit)
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_selfsup"))
        .arg("--datasets")
        .arg(&datasets)
        .output()
        .unwrap();
    assert!(
        bundle.status.success(),
        "make_bundle.py failed:\n{}{}",
        String::from_utf8_lossy(&bundle.stdout),
        String::from_utf8_lossy(&bundle.stderr)
    );
    let bytes = dir_bytes(&kit);
    assert!(
        bytes <= LIMIT_BYTES,
        "the kit is {bytes} bytes, over the 64 MiB the device carries"
    );
    for part in [
        "selfsup",
        "run.sh",
        "kit.py",
        "configs/kit/simclr.toml",
        "MANIFEST.json",
    ] {
        assert!(kit.join(part).is_file(), "{part} missing from the kit");
    }
    // The shipped binary is stripped: smaller than the test's own.
    let own = std::fs::metadata(env!("CARGO_BIN_EXE_selfsup"))
        .unwrap()
        .len();
    assert!(std::fs::metadata(kit.join("selfsup")).unwrap().len() < own);

    let out = tmp.path().join("out");
    let run = Command::new("bash")
        .arg(kit.join("run.sh"))
        .arg(&out)
        .args(["--device", "cpu", "--tiny"])
        .env("SELFSUP_KIT_PYTHON", &py)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let doc = results(&out);
    let got = rows(&doc);
    let names: Vec<&str> = got.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ROWS, "{log}");
    let failed: Vec<String> = got
        .iter()
        .filter(|r| r["status"] != "ok")
        .map(|r| {
            format!(
                "{}: {} {}",
                r["name"],
                r["error"],
                r["stderr_tail"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "failed rows:\n{}\n{log}",
        failed.join("\n")
    );
    assert!(run.status.success(), "{log}");
    assert_eq!(doc["all_ok"], true);
    for r in got
        .iter()
        .filter(|r| r["group"] == "a" && r.get("device_used").is_some())
    {
        let device = r["device_used"].as_str().unwrap_or("");
        assert!(device.starts_with("cpu"), "{}: {device}", r["name"]);
        assert!(r["last_loss"].as_f64() < r["first_loss"].as_f64(), "{r}");
        assert_eq!(r["non_finite_steps"], 0, "{r}");
    }
    let tv = got
        .iter()
        .find(|r| r["name"] == "export-torchvision")
        .unwrap();
    let (a, b) = (
        tv["torch_knn_top1"].as_f64().unwrap(),
        tv["selfsup_knn_top1"].as_f64().unwrap(),
    );
    assert!((a - b).abs() <= 0.005 && a > 0.1, "{tv}");
    let clip = got
        .iter()
        .find(|r| r["name"] == "export-transformers-clip-bert")
        .unwrap();
    assert!(clip["text_min_cosine"].as_f64().unwrap() > 0.9999, "{clip}");
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        md.contains("## c. time to accuracy") && md.contains("| train-clip | ok |"),
        "{md}"
    );

    // Out of time before the first step: every row is reported, as FAIL.
    let late = tmp.path().join("late");
    let run = Command::new("bash")
        .arg(kit.join("run.sh"))
        .arg(&late)
        .args(["--device", "cpu", "--tiny", "--budget", "1"])
        .env("SELFSUP_KIT_PYTHON", &py)
        .output()
        .unwrap();
    assert!(!run.status.success());
    let doc = results(&late);
    let got = rows(&doc);
    let names: Vec<&str> = got.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ROWS);
    assert!(got.iter().all(|r| r["status"] == "FAIL"), "{doc}");
    assert_eq!(doc["all_ok"], false);
}
