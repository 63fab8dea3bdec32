//! Audio through the registry entry (`selfsup_audio::MODALITY`), on tone
//! recordings written here: pre-training on core's `Run` writes
//! `config.toml` and `summary.json`; the run's checkpoint, evaluated,
//! gives the probe figures the run reported; an unknown protocol is refused
//! naming the offered ones; the export is written; `--recordings` trains on
//! a folder of the user's own with the probe tasks it lacks dropped.
use selfsup_audio::pretrain::AudioRunConfig;
use selfsup_core::device::DeviceChoice;
use selfsup_core::run::RunOptions;
use selfsup_core::trainer::Silent;
use selfsup_core::workflow::{checkpoint_method, EvalRequest, Plan, Report};
use std::path::Path;

const CONFIG: &str = r#"
[run]
device = "cpu"
batch_size = 4
threads = 1

[data]
sources = ["rec"]
crop_seconds = 0.5
monitor_clips = 2

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

[eval]
max_seconds = 1.0
probe = { epochs = 10 }
[eval.finetune]
fractions = [0.5, 1.0]
seeds = 2
steps = 3
batch_size = 4
[[eval.tasks]]
name = "pitch"
train = ["probe/s1", "probe/s2"]
test = ["probe/s3"]
"#;

/// A 16 kHz mono 16-bit WAV of a tone with a little noise, 0.8 s.
fn write_tone(path: &Path, f: f64, i: usize) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for t in 0..12_800usize {
        let x = 0.4 * (std::f64::consts::TAU * f * t as f64 / 16_000.0).sin()
            + 0.05 * ((t * 7919 + i * 104_729) % 1000) as f64 / 1000.0;
        w.write_sample((x * 20_000.0) as i16).unwrap();
    }
    w.finalize().unwrap();
}

/// 12 clips in `rec/`; three speakers' `low.wav` and `high.wav` in `probe/`.
fn write_data(root: &Path) {
    std::fs::create_dir_all(root.join("rec")).unwrap();
    for i in 0..12 {
        write_tone(
            &root.join(format!("rec/clip{i:02}.wav")),
            150.0 + 40.0 * i as f64,
            i,
        );
    }
    for (s, shift) in [("s1", 0.0), ("s2", 10.0), ("s3", 20.0)] {
        let dir = root.join("probe").join(s);
        std::fs::create_dir_all(&dir).unwrap();
        write_tone(&dir.join("low.wav"), 120.0 + shift, 1);
        write_tone(&dir.join("high.wav"), 900.0 + shift, 2);
    }
}

fn run_opts<'a>(
    data: &Path,
    run: &Path,
    observer: &'a mut Silent,
    log: &'a mut dyn FnMut(&str),
) -> RunOptions<'a> {
    RunOptions {
        data: Some(data.to_path_buf()),
        run_dir: run.to_path_buf(),
        resume: false,
        observer,
        stop: Default::default(),
        git_commit: None,
        log,
        distributed: None,
    }
}

fn pretrain(plan: &dyn Plan, data: &Path, run: &Path) -> Box<dyn Report> {
    let mut observer = Silent;
    let mut log = |_: &str| {};
    plan.pretrain(run_opts(data, run, &mut observer, &mut log))
        .unwrap()
}

fn summary(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn pretrain_writes_the_run_folder_and_the_checkpoint_evaluates_to_the_same_probes() {
    let m = selfsup_audio::MODALITY;
    assert_eq!((m.name(), m.methods()), ("audio", &["wav2vec2", "cpc"][..]));
    assert_eq!(m.evaluations(), &["linear", "finetune"]);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    write_data(&root);
    let origin = dir.path().join("audio.toml");
    let plan = m.parse(CONFIG, &origin).unwrap();
    assert!(!plan.data_parallel());
    assert_eq!(plan.progress_unit(), Some((0.5, "audio s/s")));

    let run = dir.path().join("run");
    let report = pretrain(plan.as_ref(), &root, &run);
    let written = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert_eq!(
        AudioRunConfig::from_toml(&written, &run.join("config.toml")).unwrap(),
        AudioRunConfig::from_toml(CONFIG, &origin).unwrap()
    );
    let s = summary(&run);
    assert_eq!(s["method"], "wav2vec2");
    // 12 recordings and 6 probe clips, of which s3's 2 are kept out.
    assert_eq!(s["data"]["clips"], 12 + 6, "{s}");
    assert_eq!(s["held_out_clips"], 0, "{s}");
    assert_eq!(
        s["train_clips"].as_u64().unwrap() + s["monitor_clips"].as_u64().unwrap(),
        12
    );
    assert!(s["final_loss"].as_f64().unwrap().is_finite(), "{s}");
    assert!(s.get("peak_rss_mb").is_some(), "{s}");
    let lines = report.lines();
    assert_eq!(lines[0], "");
    assert!(
        lines[1].starts_with("selfsup wav2vec2 on 18 clips"),
        "{lines:?}"
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("  exported (transformers Wav2Vec2ForPreTraining): ")));

    // The checkpoint's probes are the run's, line for line.
    let checkpoint = run.join("checkpoint.safetensors");
    let (method, config_toml) = checkpoint_method(&checkpoint).unwrap();
    assert_eq!(method, "wav2vec2");
    let request = |protocol, data| EvalRequest {
        protocol,
        checkpoint: &checkpoint,
        config_toml: &config_toml,
        data,
        device: DeviceChoice::Cpu,
    };
    let probes = m.evaluate(&request("linear", Some(&root))).unwrap();
    let start = lines
        .iter()
        .position(|l| l.starts_with("  linear probe pitch ("))
        .unwrap();
    assert_eq!(probes[..], lines[start..start + probes.len()], "{probes:?}");
    // Sizes, header, conv, transformer input, 1 layer, log-mel (validation
    // accuracy), the chosen layers' test accuracy.
    assert_eq!(probes.len(), 7, "{probes:?}");
    assert!(
        probes[0].contains("validation: 2 clips of probe/s1")
            || probes[0].contains("validation: 2 clips of probe/s2"),
        "one of the two training speakers validates: {probes:?}"
    );
    assert!(probes[6].starts_with("    test accuracy (layer * chosen on validation"));
    let p = &s["probes"][0];
    let chosen = p["pretrained"]["chosen_layer"].as_u64().unwrap() as usize;
    let val: Vec<f64> = p["pretrained"]["validation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(val.len(), 3, "{p}");
    assert!(val.iter().all(|&v| v <= val[chosen]), "{p}");
    assert_eq!(p["test_clips"], 2, "{p}");
    let err = m
        .evaluate(&request("knn", Some(&root)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("knn") && err.contains("offers linear"),
        "{err}"
    );
    // Fine-tuning on the task's clips: s1 or s2 trains (one clip per
    // class), the other validates, s3 tests; a row per fraction in
    // finetune.json beside the checkpoint.
    let lines = m.evaluate(&request("finetune", Some(&root))).unwrap();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[0].contains("on pitch (2 classes)"), "{lines:?}");
    assert!(
        lines[1].starts_with("fine-tuning on 50% of the labels (2 clips, 2 seeds): pre-trained "),
        "{lines:?}"
    );
    assert!(lines[3].starts_with("wrote "), "{lines:?}");
    let ft: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("finetune.json")).unwrap()).unwrap();
    assert_eq!(ft["task"], "pitch", "{ft}");
    assert_eq!(
        (ft["train_clips"].as_u64(), ft["test_clips"].as_u64()),
        (Some(2), Some(2))
    );
    let rows = ft["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{ft}");
    for (row, f) in rows.iter().zip([0.5, 1.0]) {
        assert_eq!(row["fraction"], f);
        assert_eq!(row["clips"], serde_json::json!([2, 2]));
        for arm in ["pretrained", "scratch"] {
            let runs = row[arm].as_array().unwrap();
            assert_eq!(runs.len(), 2);
            let acc = runs[0]["test_accuracy"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&acc) && runs[0]["steps"] == 3, "{row}");
        }
        assert_eq!(
            row["pretrained"][1]["batches_digest"],
            row["scratch"][1]["batches_digest"]
        );
    }
    let elsewhere = dir.path().join("elsewhere");
    let err = m
        .evaluate(&request("linear", Some(&elsewhere)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("probe/s1") && err.contains("--data"), "{err}");

    let out = dir.path().join("export");
    let line = m.export(&checkpoint, &config_toml, &out).unwrap();
    assert!(line.contains(&out.display().to_string()), "{line}");
    for f in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }

    // --recordings: the folder is the data root, its probe task dropped.
    let mut plan = m.parse(CONFIG, &origin).unwrap();
    assert!(plan.use_recordings(dir.path().join("none")).is_err());
    let note = plan.use_recordings(root.join("rec")).unwrap();
    assert!(note.contains("1 probe task(s) dropped"), "{note}");
    let run = dir.path().join("own");
    pretrain(plan.as_ref(), &elsewhere, &run);
    let s = summary(&run);
    assert_eq!(s["data"]["clips"], 12, "{s}");
    assert_eq!(s["probes"].as_array().map(Vec::len), Some(0), "{s}");
    assert!(std::fs::read_to_string(run.join("config.toml"))
        .unwrap()
        .contains("sources = [\".\"]"));
}
