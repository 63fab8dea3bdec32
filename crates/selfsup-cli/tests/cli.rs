//! The `selfsup` binary end to end on a tiny Fashion-MNIST-format fixture:
//! pretrain, interrupt + resume with identical losses, eval, export, and the
//! errors a user gets for bad input.
mod common;
mod fashion_fixture;

use common::{step_losses, text};
use fashion_fixture::write_fixture;
use std::path::PathBuf;
use std::process::{Command, Output};

const CONFIG: &str = r#"
[run]
device = "cpu"
batch_size = 32
threads = 1

[data]
format = "fashion-mnist"

[model]
arch = "small_cnn"
channels = [8, 16, 16, 32]

[method]
name = "simclr"
head = { hidden_dim = 32, out_dim = 16, layers = 2, batch_norm = true }

[trainer]
epochs = 3
seed = 7
checkpoint_every = 2
optimizer = { kind = "sgd", lr = 0.3 }
schedule = { warmup_epochs = 0.0 }

[eval]
monitor_images = 64
linear = { epochs = 20 }
"#;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        write_fixture(&dir.path().join("data"), 192, 64);
        std::fs::write(dir.path().join("run.toml"), CONFIG).unwrap();
        Self { dir }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn selfsup(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_selfsup"))
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }
    fn pretrain(&self, run: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            "pretrain",
            "--config",
            "run.toml",
            "--data",
            "data",
            "--run-dir",
            run,
        ];
        args.extend_from_slice(extra);
        self.selfsup(&args)
    }
}

#[test]
fn pretrain_interrupt_resume_eval_export() {
    let fx = Fixture::new();
    let out = fx.pretrain("full", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.path("full/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["steps"], 18);
    for f in [
        "checkpoint.safetensors",
        "metrics.jsonl",
        "curves.svg",
        "config.toml",
        "export/model.safetensors",
        "export/config.json",
    ] {
        assert!(fx.path("full").join(f).exists(), "missing {f}");
    }
    let knn = summary["knn_top1"].as_f64().unwrap();
    assert!(
        knn > 0.5,
        "kNN on a 4-class toy set should beat chance by far: {knn}"
    );
    assert!(
        text(&out).contains("raw-pixel kNN baseline"),
        "{}",
        text(&out)
    );

    // Interrupted after step 5 (mid-epoch), then resumed: the same losses as the uninterrupted run.
    let out = fx.pretrain("part", &["--stop-after", "5"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--resume"), "{}", text(&out));
    let out = fx.pretrain("part", &["--resume"]);
    assert!(out.status.success(), "{}", text(&out));
    let (a, b) = (step_losses(&fx.path("full")), step_losses(&fx.path("part")));
    assert_eq!(a.len(), b.len());
    for ((s, la), (_, lb)) in a.iter().zip(&b) {
        assert!(
            (la - lb).abs() <= 1e-5 * la.abs().max(1.0),
            "step {s}: {la} vs {lb}"
        );
    }

    // No record is lost across interruptions: interrupted mid-epoch ("part")
    // or right at an epoch's end ("edge", whose checkpoint carries the epoch
    // record's own step), the resumed log holds exactly the records of the
    // uninterrupted run, in order.
    let out = fx.pretrain("edge", &["--stop-after", "6"]);
    assert!(!out.status.success(), "{}", text(&out));
    let out = fx.pretrain("edge", &["--resume"]);
    assert!(out.status.success(), "{}", text(&out));
    let records = |run: &str| -> Vec<(String, u64)> {
        std::fs::read_to_string(fx.path(run).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| {
                (
                    v["kind"].as_str().unwrap().to_string(),
                    v["step"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let full = records("full");
    assert_eq!(
        full.iter().filter(|r| r.0 == "epoch").count(),
        3,
        "{full:?}"
    );
    assert_eq!(records("part"), full);
    assert_eq!(records("edge"), full);

    // eval and export from the checkpoint alone.
    let out = fx.selfsup(&[
        "eval",
        "knn",
        "--checkpoint",
        "full/checkpoint.safetensors",
        "--data",
        "data",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("kNN top-1"), "{}", text(&out));
    let out = fx.selfsup(&[
        "export",
        "--checkpoint",
        "full/checkpoint.safetensors",
        "--out",
        "exported",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    // The same checkpoint exports to the same bytes (sorted metadata), so a
    // sha256 of the weights identifies the model.
    let out = fx.selfsup(&[
        "export",
        "--checkpoint",
        "full/checkpoint.safetensors",
        "--out",
        "exported-again",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    for f in ["model.safetensors", "config.json"] {
        assert_eq!(
            std::fs::read(fx.path("exported").join(f)).unwrap(),
            std::fs::read(fx.path("exported-again").join(f)).unwrap(),
            "{f} differs between two exports of one checkpoint"
        );
    }
    let a = selfsup_core::tensor_io::load(&fx.path("exported/model.safetensors")).unwrap();
    let b = selfsup_core::tensor_io::load(&fx.path("full/export/model.safetensors")).unwrap();
    assert_eq!(
        a.tensors.keys().collect::<Vec<_>>(),
        b.tensors.keys().collect::<Vec<_>>()
    );
    for (k, t) in &a.tensors {
        assert!(
            t.equal(&b.tensors[k]),
            "{k} differs between the run's export and `selfsup export`"
        );
    }
}

#[test]
fn unknown_config_key_is_refused_with_its_name() {
    let fx = Fixture::new();
    std::fs::write(
        fx.path("run.toml"),
        CONFIG.replace("threads = 1", "threads = 1\nbatchsize = 4"),
    )
    .unwrap();
    let out = fx.pretrain("r", &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("batchsize") && text(&out).contains("run.toml"),
        "{}",
        text(&out)
    );
}

#[test]
fn missing_dataset_says_how_to_fetch_it() {
    let fx = Fixture::new();
    let out = fx.selfsup(&[
        "pretrain",
        "--config",
        "run.toml",
        "--data",
        "nowhere",
        "--run-dir",
        "r",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("nowhere") && text(&out).contains("cargo xtask fetch"),
        "{}",
        text(&out)
    );
}

#[test]
fn corrupt_dataset_names_the_file_and_leaves_no_run() {
    let fx = Fixture::new();
    let f = fx.path("data/train-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let out = fx.pretrain("r", &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("train-images-idx3-ubyte.gz"),
        "{}",
        text(&out)
    );
    assert!(!fx.path("r/checkpoint.safetensors").exists());
}

#[test]
fn checkpoint_of_another_model_is_refused() {
    let fx = Fixture::new();
    let out = fx.pretrain("a", &["--epochs", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    // Same run folder, wider encoder: --resume must refuse the checkpoint.
    std::fs::write(
        fx.path("run.toml"),
        CONFIG.replace("[8, 16, 16, 32]", "[8, 16, 16, 64]"),
    )
    .unwrap();
    // The config change is named first ...
    let out = fx.pretrain("a", &["--resume"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("model.channels: [8, 16, 16, 32] -> [8, 16, 16, 64]")
            && text(&out).contains("--allow-config-change"),
        "{}",
        text(&out)
    );
    // ... and, allowed, the checkpoint still does not fit: file and fix named.
    let out = fx.pretrain("a", &["--resume", "--allow-config-change"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("checkpoint.safetensors")
            && text(&out).contains("shape mismatch")
            && text(&out).contains("--overwrite"),
        "{}",
        text(&out)
    );
}
