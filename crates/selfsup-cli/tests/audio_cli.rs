//! `selfsup pretrain` on an audio config end to end, on a user's own folder
//! of recordings written here (mixed rates, mono and stereo, 16-bit and
//! float): it trains, reports what it read, resampled and skipped, and
//! exports in transformers' layout; a truncated WAV stops the run naming
//! the file unless `skip_bad` is set, and then it is counted; a run
//! interrupted after one step and resumed replays the uninterrupted losses;
//! an unknown config key is refused.
mod common;

use common::{step_losses, text};
use std::path::Path;
use std::process::{Command, Output};

fn run_with(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_selfsup"))
        .args(args)
        .output()
        .unwrap()
}

/// A tiny wav2vec 2.0 on every file under `--data`.
fn config(skip_bad: bool, extra: &str) -> String {
    format!(
        r#"
[run]
device = "cpu"
batch_size = 4
threads = 1

[data]
sources = ["."]
crop_seconds = 0.5
skip_bad = {skip_bad}
monitor_clips = 2
{extra}
[model]
conv_dim = [16, 16, 16, 16, 16, 16, 16]
hidden_size = 32
num_hidden_layers = 1
num_attention_heads = 2
intermediate_size = 64
num_conv_pos_embeddings = 8
num_conv_pos_embedding_groups = 2
num_codevector_groups = 2
num_codevectors_per_group = 8
codevector_dim = 16
proj_codevector_dim = 16
num_negatives = 5

[method]
name = "wav2vec2"

[trainer]
epochs = 1
seed = 0
"#
    )
}

/// Tones with a little noise: `n` clips of 0.8 s, alternating 16 kHz mono
/// 16-bit, 22.05 kHz stereo 16-bit and 8 kHz mono float.
fn write_clips(dir: &Path, n: usize) {
    for i in 0..n {
        let (rate, channels, float) = match i % 3 {
            0 => (16_000, 1, false),
            1 => (22_050, 2, false),
            _ => (8_000, 1, true),
        };
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: if float { 32 } else { 16 },
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        };
        let path = dir.join(format!("clip{i:02}.wav"));
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        let f = 150.0 + 40.0 * i as f64;
        for t in 0..(rate as f64 * 0.8) as usize {
            let x = 0.4 * (2.0 * std::f64::consts::PI * f * t as f64 / rate as f64).sin()
                + 0.05 * ((t * 7919 + i * 104_729) % 1000) as f64 / 1000.0;
            for _ in 0..channels {
                if float {
                    w.write_sample(x as f32).unwrap();
                } else {
                    w.write_sample((x * 20_000.0) as i16).unwrap();
                }
            }
        }
        w.finalize().unwrap();
    }
}

#[test]
fn own_folder_trains_counts_the_bad_file_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("recordings");
    std::fs::create_dir(&data).unwrap();
    write_clips(&data, 12);
    // A WAV cut in the middle of its samples.
    let good = std::fs::read(data.join("clip00.wav")).unwrap();
    std::fs::write(data.join("cut.wav"), &good[..good.len() / 3]).unwrap();
    let strict = dir.path().join("strict.toml");
    std::fs::write(&strict, config(false, "")).unwrap();
    let run = dir.path().join("run");
    let args_in = |cfg: &Path, run: &Path| {
        vec![
            "pretrain".to_string(),
            "--config".into(),
            cfg.display().to_string(),
            "--data".into(),
            data.display().to_string(),
            "--run-dir".into(),
            run.display().to_string(),
            "--epochs".into(),
            "2".into(),
        ]
    };
    let args = |cfg: &Path| args_in(cfg, &run);

    // Strict: the truncated file stops the run, named.
    let a = args(&strict);
    let o = run_with(&a);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("cut.wav"), "{out}");

    // skip_bad: trained, the file counted, the export written.
    let lenient = dir.path().join("lenient.toml");
    std::fs::write(&lenient, config(true, "")).unwrap();
    let a = args(&lenient);
    let o = run_with(&a);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("1 skipped"), "{out}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["data"]["clips"], 12, "{summary}");
    assert_eq!(summary["data"]["skipped"], 1, "{summary}");
    // 8 of the 12 clips are not at 16 kHz.
    assert_eq!(summary["data"]["resampled"], 8, "{summary}");
    assert!(summary["final_loss"].as_f64().unwrap().is_finite());
    for f in ["config.json", "model.safetensors"] {
        assert!(run.join("export").join(f).exists(), "{f}");
    }

    // Interrupted after one step, then resumed: the same losses.
    let part = dir.path().join("part");
    let mut a = args_in(&lenient, &part);
    a.extend(["--stop-after".into(), "1".into()]);
    let o = run_with(&a);
    let out = text(&o);
    assert!(!o.status.success() && out.contains("--resume"), "{out}");
    let mut a = args_in(&lenient, &part);
    a.push("--resume".into());
    let o = run_with(&a);
    assert!(o.status.success(), "{}", text(&o));
    let (full, resumed) = (step_losses(&run), step_losses(&part));
    assert!(full.len() >= 4, "{full:?}");
    assert_eq!(full, resumed);

    // A mistyped source folder under --data is an error naming it, not a
    // fall-back to the whole tree ...
    let typo_src = dir.path().join("typo_src.toml");
    std::fs::write(
        &typo_src,
        config(true, "").replace(r#"sources = ["."]"#, r#"sources = ["recordngs"]"#),
    )
    .unwrap();
    let mut a = args_in(&typo_src, &dir.path().join("typo-run"));
    a[4] = dir.path().display().to_string();
    let o = run_with(&a);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("recordngs"), "{out}");
    assert!(!dir.path().join("typo-run/checkpoint.safetensors").exists());
    // ... and --recordings asks for the user's own folder by name.
    a[3] = "--recordings".into();
    a[4] = data.display().to_string();
    let o = run_with(&a);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("--recordings"), "{out}");

    // An unknown key is refused before anything runs.
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, config(true, "crop_secnds = 1.0\n")).unwrap();
    let a = args(&typo);
    let o = run_with(&a);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("crop_secnds"), "{out}");
}
