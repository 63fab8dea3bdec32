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

#[test]
fn set_overrides_are_checked_like_the_config_file() {
    let fx = Fixture::new();
    let cases: [(&str, &[&str]); 5] = [
        ("trainer.bogus=1", &["bogus", "run.toml"]),
        ("trainer.optimizer.lr=-1", &["lr"]),
        ("noequals", &["--set noequals", "KEY=VALUE"]),
        ("=1", &["--set =1", "empty"]),
        ("run.device.x=1", &["--set run.device.x=1", "not a table"]),
    ];
    for (set, wanted) in cases {
        let out = fx.pretrain("r", &["--set", set]);
        assert!(!out.status.success(), "--set {set} was accepted");
        for w in wanted {
            assert!(text(&out).contains(w), "--set {set}: {}", text(&out));
        }
    }
}

#[test]
fn include_merges_under_the_including_file() {
    let fx = Fixture::new();
    std::fs::create_dir(fx.path("presets")).unwrap();
    std::fs::write(fx.path("presets/base.toml"), CONFIG).unwrap();
    let write = |name: &str, body: &str| std::fs::write(fx.path(name), body).unwrap();
    let run = |name: &str| {
        fx.selfsup(&[
            "pretrain",
            "--config",
            name,
            "--data",
            "data",
            "--run-dir",
            "r",
        ])
    };
    // The including file wins: its bad epochs is what is refused.
    write(
        "presets/child.toml",
        "include = \"base.toml\"\n[trainer]\nepochs = 0\n",
    );
    let out = run("presets/child.toml");
    assert!(!out.status.success());
    assert!(text(&out).contains("epochs"), "{}", text(&out));
    // The method comes from the base; a misspelt one in the child is named with its nearest match.
    write(
        "presets/typo.toml",
        "include = \"child.toml\"\n[method]\nname = \"simclar\"\n",
    );
    let out = run("presets/typo.toml");
    assert!(
        text(&out).contains("did you mean \"simclr\"") && text(&out).contains("mlm"),
        "{}",
        text(&out)
    );
    write("presets/missing.toml", "include = \"nothere.toml\"\n");
    let out = run("presets/missing.toml");
    assert!(text(&out).contains("nothere.toml"), "{}", text(&out));
    write("presets/a.toml", "include = \"b.toml\"\n");
    write("presets/b.toml", "include = \"a.toml\"\n");
    let out = run("presets/a.toml");
    assert!(
        text(&out).contains("cycle") && text(&out).contains("b.toml"),
        "{}",
        text(&out)
    );
    // A good chain trains like the file itself would (refused here only for the missing data).
    write("presets/ok.toml", "include = \"base.toml\"\n");
    let out = fx.selfsup(&[
        "pretrain",
        "--config",
        "presets/ok.toml",
        "--data",
        "nowhere",
        "--run-dir",
        "r",
    ]);
    assert!(text(&out).contains("nowhere"), "{}", text(&out));
}

#[test]
fn resume_auto_says_what_it_did() {
    let fx = Fixture::new();
    let out = fx.selfsup(&[
        "pretrain",
        "--config",
        "run.toml",
        "--data",
        "nowhere",
        "--run-dir",
        "empty",
        "--resume-auto",
    ]);
    assert!(
        text(&out).contains("--resume-auto: no checkpoint"),
        "{}",
        text(&out)
    );
    for other in ["--resume", "--overwrite"] {
        let out = fx.pretrain("r", &["--resume-auto", other]);
        assert!(!out.status.success());
        assert!(text(&out).contains("cannot be used with"), "{}", text(&out));
    }
}

#[test]
fn set_overrides_are_part_of_the_resumed_config() {
    let fx = Fixture::new();
    let out = fx.pretrain(
        "r",
        &["--set", "trainer.optimizer.lr=0.1", "--stop-after", "1"],
    );
    assert!(!out.status.success());
    assert!(
        fx.path("r/checkpoint.safetensors").exists(),
        "{}",
        text(&out)
    );
    // Without the override the config differs from the checkpoint's.
    let out = fx.pretrain("r", &["--resume-auto", "--stop-after", "2"]);
    assert!(
        text(&out).contains("--resume-auto: resuming from") && text(&out).contains("lr"),
        "{}",
        text(&out)
    );
    assert!(!fx.path("r/summary.json").exists());
    let out = fx.pretrain("r", &["--resume-auto", "--set", "trainer.optimizer.lr=0.1"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn every_flag_is_documented_with_its_default() {
    let fx = Fixture::new();
    for sub in ["pretrain", "eval", "export", "embed"] {
        let out = fx.selfsup(&[sub, "--help"]);
        assert!(out.status.success(), "{}", text(&out));
        let help = text(&out);
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            if t.starts_with("--") || t.starts_with("-h") || t.starts_with('<') {
                // Short layout: "--flag <X>  doc"; long layout: the doc on the next line.
                let inline = t
                    .split_once("  ")
                    .is_some_and(|(_, doc)| !doc.trim().is_empty());
                let next = lines.get(i + 1).map_or("", |l| l.trim());
                assert!(
                    inline || !next.is_empty(),
                    "{sub}: {t} has no help:\n{help}"
                );
            }
        }
    }
    let pretrain = text(&fx.selfsup(&["pretrain", "--help"]));
    for w in [
        "[default: auto]",
        "[default: 1800]",
        "default: the config's [trainer] epochs",
    ] {
        assert!(pretrain.contains(w), "{w}:\n{pretrain}");
    }
    let embed = text(&fx.selfsup(&["embed", "--help"]));
    assert!(embed.contains("[default: cpu]"), "{embed}");
}

#[test]
fn device_accepts_a_gpu_number() {
    let fx = Fixture::new();
    let out = fx.pretrain("r", &["--device", "cuda:x"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("cuda:N"), "{}", text(&out));
    // cuda:0 parses: what stops this run (no GPU, or no data) is not the flag.
    let out = fx.selfsup(&[
        "pretrain",
        "--config",
        "run.toml",
        "--data",
        "nowhere",
        "--run-dir",
        "r",
        "--device",
        "cuda:0",
    ]);
    assert!(!out.status.success());
    assert!(!text(&out).contains("unknown device"), "{}", text(&out));
}
