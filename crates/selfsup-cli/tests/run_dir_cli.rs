//! Run folders as transactions, for every modality's `selfsup pretrain`:
//! a locked folder, an earlier run, a changed config on resume and bad
//! flags are refused before any data is read; `--overwrite` says what it
//! removed; `eval`, `export` and `embed` name the modality of a checkpoint
//! they do not take.
mod common;

use common::{step_losses, text};
use selfsup_core::checkpoint::CheckpointMeta;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn selfsup(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_selfsup"))
        .args(args)
        .output()
        .unwrap()
}

fn preset(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs")
        .join(rel)
}

/// One preset per modality and its resolved config (what a checkpoint stores).
fn presets() -> Vec<(&'static str, PathBuf, String)> {
    let read = |rel: &str| {
        let p = preset(rel);
        (std::fs::read_to_string(&p).unwrap(), p)
    };
    let (t, p) = read("vision/simclr-cpu.toml");
    let vision = selfsup_vision::pretrain::VisionRunConfig::from_toml(&t, &p)
        .unwrap()
        .to_toml();
    let (t, p) = read("text/mlm-cpu.toml");
    let text = selfsup_text::pretrain::TextRunConfig::from_toml(&t, &p)
        .unwrap()
        .to_toml();
    let (t, p) = read("graph/grace-karate-cpu.toml");
    let graph = selfsup_graph::pretrain::GraphRunConfig::from_toml(&t, &p)
        .unwrap()
        .to_toml();
    let (t, p) = read("audio/cpu.toml");
    let audio = selfsup_audio::pretrain::AudioRunConfig::from_toml(&t, &p)
        .unwrap()
        .to_toml();
    let (t, p) = read("multimodal/clip-cpu.toml");
    let clip = selfsup_multimodal::pretrain::ClipRunConfig::from_toml(&t, &p)
        .unwrap()
        .to_toml();
    vec![
        ("vision", preset("vision/simclr-cpu.toml"), vision),
        ("text", preset("text/mlm-cpu.toml"), text),
        ("graph", preset("graph/grace-karate-cpu.toml"), graph),
        ("audio", preset("audio/cpu.toml"), audio),
        ("clip", preset("multimodal/clip-cpu.toml"), clip),
    ]
}

/// A checkpoint file whose metadata stores `config` (one small tensor).
fn fake_checkpoint(path: &Path, method: &str, config: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let meta = CheckpointMeta {
        step: 1,
        steps_per_epoch: 1,
        seed: 0,
        method: method.into(),
        config: config.into(),
        git_commit: None,
        loss: 1.0,
        samples_per_step: 1,
    };
    selfsup_core::tensor_io::save(
        path,
        &[(
            "model.x".into(),
            tch::Tensor::zeros([1], tch::kind::FLOAT_CPU),
        )],
        Some(HashMap::from([(
            "selfsup.checkpoint".to_string(),
            serde_json::to_string(&meta).unwrap(),
        )])),
    )
    .unwrap();
}

fn pretrain(config: &Path, run: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "pretrain",
        "--config",
        config.to_str().unwrap(),
        "--data",
        "/nonexistent/selfsup-data",
        "--run-dir",
        run.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    selfsup(&args)
}

#[test]
fn every_modality_refuses_a_busy_or_used_folder_and_bad_flags_before_reading_data() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (name, config, _)) in presets().into_iter().enumerate() {
        // An earlier run's checkpoint: refused, nothing rewritten.
        let run = dir.path().join(name);
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("checkpoint.safetensors"), b"old").unwrap();
        let o = pretrain(&config, &run, &[]);
        let out = text(&o);
        assert!(!o.status.success(), "{name}: {out}");
        assert!(
            out.contains("already holds a run")
                && out.contains(&run.display().to_string())
                && out.contains("--resume")
                && out.contains("--overwrite")
                && out.contains("--run-dir"),
            "{name}: {out}"
        );
        assert_eq!(
            std::fs::read(run.join("checkpoint.safetensors")).unwrap(),
            b"old"
        );
        assert!(!run.join("config.toml").exists(), "{name}");

        // A folder another run holds: refused with the holder's pid.
        let busy = dir.path().join(format!("{name}-busy"));
        let lock = selfsup_core::run_dir::lock(&busy).unwrap();
        let o = pretrain(&config, &busy, &[]);
        let out = text(&o);
        assert!(
            !o.status.success() && out.contains(&std::process::id().to_string()),
            "{name}: {out}"
        );
        drop(lock);

        // Flags no run can use, named, before any data is read (one of
        // the two per modality: they go through the same check).
        let fresh = dir.path().join(format!("{name}-fresh"));
        let (flag, needle) = [("--threads", "threads = 0"), ("--epochs", "epochs = 0")][i % 2];
        let o = pretrain(&config, &fresh, &[flag, "0"]);
        let out = text(&o);
        assert!(
            !o.status.success() && out.contains(needle),
            "{name} {flag}: {out}"
        );
        assert!(
            !out.contains("selfsup-data"),
            "{name}: read data first: {out}"
        );
    }
}

#[test]
fn every_modality_refuses_to_resume_under_a_changed_config() {
    let dir = tempfile::tempdir().unwrap();
    for (name, config, resolved) in presets() {
        let run = dir.path().join(name);
        let mut changed: toml::Table = resolved.parse().unwrap();
        let trainer = changed["trainer"].as_table_mut().unwrap();
        let seed = trainer
            .get("seed")
            .and_then(|s| s.as_integer())
            .unwrap_or(0);
        trainer.insert("seed".into(), toml::Value::Integer(seed + 1));
        fake_checkpoint(
            &run.join("checkpoint.safetensors"),
            "m",
            &toml::to_string(&changed).unwrap(),
        );
        let o = pretrain(&config, &run, &["--resume"]);
        let out = text(&o);
        assert!(!o.status.success(), "{name}: {out}");
        assert!(
            out.contains(&format!("trainer.seed: {} -> {seed}", seed + 1))
                && out.matches(" -> ").count() == 1
                && out.contains("--allow-config-change"),
            "{name}: {out}"
        );
        assert!(!run.join("config.toml").exists(), "{name}");

        // The same config (epochs, threads and device may change) passes
        // the check and goes on to the data.
        fake_checkpoint(&run.join("checkpoint.safetensors"), "m", &resolved);
        let o = pretrain(
            &config,
            &run,
            &[
                "--resume",
                "--epochs",
                "7",
                "--threads",
                "2",
                "--device",
                "cpu",
            ],
        );
        let out = text(&o);
        assert!(
            !out.contains(" -> ") && !out.contains("--allow-config-change"),
            "{name}: {out}"
        );
    }
}

#[test]
fn a_config_without_a_method_is_refused_listing_every_modality() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("empty.toml");
    std::fs::write(&cfg, "").unwrap();
    let o = pretrain(&cfg, &dir.path().join("r"), &[]);
    let out = text(&o);
    assert!(!o.status.success());
    for needle in [
        "[method] name",
        "simclr",
        "mlm",
        "grace",
        "wav2vec2",
        "clip",
    ] {
        assert!(out.contains(needle), "{needle}: {out}");
    }
    assert!(!dir.path().join("r").exists(), "{out}");
}

#[test]
fn eval_export_and_embed_name_the_modality_of_a_checkpoint_they_do_not_take() {
    let dir = tempfile::tempdir().unwrap();
    let presets = presets();
    let resolved = |n: &str| presets.iter().find(|p| p.0 == n).unwrap().2.clone();
    // Asked for an evaluation its modality does not offer, eval names the
    // modality, the method and what it does offer.
    let graph = dir.path().join("g/checkpoint.safetensors");
    fake_checkpoint(&graph, "grace", &resolved("graph"));
    let text_ckpt = dir.path().join("t/checkpoint.safetensors");
    fake_checkpoint(&text_ckpt, "mlm", &resolved("text"));
    for (ckpt, needles) in [
        (&graph, ["graph checkpoint", "grace", "eval linear"]),
        (
            &text_ckpt,
            ["text checkpoint", "mlm", "eval linear|validation"],
        ),
    ] {
        let o = selfsup(&["eval", "knn", "--checkpoint", ckpt.to_str().unwrap()]);
        let out = text(&o);
        assert!(
            !o.status.success()
                && needles.iter().all(|n| out.contains(n))
                && out.contains("summary.json")
                && !out.contains("steps_per_epoch"),
            "{ckpt:?}: {out}"
        );
    }
    // A checkpoint whose weights do not fit its config: an error naming
    // the file and the tensors, not a panic.
    let o = selfsup(&[
        "export",
        "--checkpoint",
        graph.to_str().unwrap(),
        "--out",
        "/nonexistent/x",
    ]);
    let out = text(&o);
    assert!(
        !o.status.success()
            && out.contains("g/checkpoint.safetensors")
            && out.contains("missing")
            && !out.contains("panicked"),
        "{out}"
    );
    // An I/O error prints its OS error once (not again as its source).
    let o = selfsup(&[
        "export",
        "--checkpoint",
        "/nonexistent/c.safetensors",
        "--out",
        "x",
    ]);
    let out = text(&o);
    assert!(
        out.contains("/nonexistent/c.safetensors") && out.matches("os error 2").count() == 1,
        "{out}"
    );

    let vision = dir.path().join("v/checkpoint.safetensors");
    fake_checkpoint(&vision, "simclr", &resolved("vision"));
    let o = selfsup(&[
        "embed",
        "--checkpoint",
        vision.to_str().unwrap(),
        "--texts",
        "/nonexistent/t.txt",
        "--out",
        "/nonexistent/o.jsonl",
    ]);
    let out = text(&o);
    assert!(
        !o.status.success() && out.contains("vision checkpoint") && out.contains("selfsup eval"),
        "{out}"
    );
}

/// A whole (tiny) graph run, then a fresh run into its folder: refused;
/// with --overwrite the earlier files are removed (and said so), as are
/// partial writes a killed run left.
#[test]
fn overwrite_removes_the_earlier_run_and_says_what() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let config = preset("graph/grace-karate-cpu.toml");
    let data = dir.path().display().to_string();
    let go = |extra: &[&str]| {
        let mut args = vec![
            "pretrain",
            "--config",
            config.to_str().unwrap(),
            "--data",
            &data,
            "--run-dir",
            run.to_str().unwrap(),
            "--epochs",
            "1",
            "--threads",
            "1",
        ];
        args.extend_from_slice(extra);
        selfsup(&args)
    };
    let o = go(&[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!run.join(".lock").exists(), "the lock is released");
    let steps = step_losses(&run).len();
    assert!(steps > 0);
    let o = go(&[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("already holds a run"), "{}", text(&o));
    std::fs::write(run.join("export/config.json.tmp"), b"half").unwrap();
    std::fs::write(run.join("notes.txt"), b"mine").unwrap();
    let o = go(&["--overwrite"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("--overwrite: removed") && out.contains("checkpoint.safetensors"),
        "{out}"
    );
    assert!(out.contains("config.json.tmp"), "{out}");
    assert!(!run.join("export/config.json.tmp").exists());
    assert!(run.join("notes.txt").exists());
    assert!(run.join("checkpoint.safetensors").exists());
    assert_eq!(step_losses(&run).len(), steps, "one run's history, not two");
}
