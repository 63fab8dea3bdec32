use super::*;
use crate::workflow::{ClipModality, RETRIEVAL, ZERO_SHOT};
use selfsup_core::device::DeviceChoice;
use selfsup_core::trainer::Silent;
use selfsup_core::workflow::{EvalRequest, Modality};

fn preset(name: &str) -> (String, PathBuf) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs/multimodal")
        .join(name);
    (std::fs::read_to_string(&path).unwrap(), path)
}

#[test]
fn the_presets_are_speech_configs_holding_out_speakers() {
    for name in ["speech-text-cpu.toml", "speech-text-gpu.toml"] {
        let (text, path) = preset(name);
        assert!(is_speech_config(&text), "{name}");
        let cfg = SpeechRunConfig::from_toml(&text, &path).unwrap();
        assert!(!cfg.data.test_speakers.is_empty());
        assert!(cfg.data.validation_fraction > 0.0);
        assert_eq!(
            SpeechRunConfig::from_toml(&cfg.to_toml(), &path).unwrap(),
            cfg
        );
        let mut plan = ClipModality.parse(&text, &path).unwrap();
        assert_eq!(*plan.common().batch_size, cfg.run.batch_size);
    }
    // A config written before `kind` existed is a wav2vec 2.0 one.
    let (cpu, path) = preset("speech-text-cpu.toml");
    let start = cpu.find("\n[model.audio]").unwrap() + 1;
    let end = cpu.find("\n[model.text]").unwrap() + 1;
    let sizes = "conv_dim = [32, 32]\nconv_kernel = [10, 3]\nconv_stride = [5, 2]\n\
                 hidden_size = 32\nnum_hidden_layers = 1\nnum_attention_heads = 2\n\
                 intermediate_size = 64\nnum_conv_pos_embeddings = 8\n\
                 num_conv_pos_embedding_groups = 4\n";
    let with_kind = format!(
        "{}[model.audio]\nkind = \"wav2vec2\"\n{sizes}{}",
        &cpu[..start],
        &cpu[end..]
    );
    let old = format!("{}[model.audio]\n{sizes}{}", &cpu[..start], &cpu[end..]);
    assert_eq!(
        SpeechRunConfig::from_toml(&old, &path).unwrap(),
        SpeechRunConfig::from_toml(&with_kind, &path).unwrap()
    );
    assert!(matches!(
        SpeechRunConfig::from_toml(&old, &path).unwrap().model.audio,
        AudioTowerConfig::Wav2Vec2(_)
    ));
    assert!(matches!(
        SpeechRunConfig::from_toml(&cpu, &path).unwrap().model.audio,
        AudioTowerConfig::LogMel(_)
    ));
    let (clip, _) = preset("clip-cpu.toml");
    assert!(!is_speech_config(&clip));
    assert_eq!(SpeechRunConfig::default().run.batch_size, 64);
}

#[test]
fn out_of_range_settings_are_refused_naming_the_key() {
    let (text, path) = preset("speech-text-cpu.toml");
    for (from, to, want) in [
        (
            "validation_fraction = 0.15",
            "validation_fraction = 1.0",
            "validation_fraction",
        ),
        (
            "crop_seconds = 1.0",
            "crop_seconds = 0.0",
            "crop_seconds = 0",
        ),
        (
            "crop_seconds = 1.0",
            "crop_seconds = 0.01",
            "receptive field",
        ),
        (
            "templates = [\"{}\"]",
            "templates = [\"a\"]",
            "[eval] templates",
        ),
        ("batch_size = 64", "batch_size = 1", "batch_size"),
        (
            "kernels = [5, 5, 5, 5]",
            "kernels = [5, 4, 5, 5]",
            "[model.audio] kernels = 4",
        ),
        (
            "kind = \"log_mel\"",
            "kind = \"log_mel\"\nconv_dim = [64]",
            "conv_dim",
        ),
        (
            "kind = \"log_mel\"",
            "kind = \"mfcc\"",
            "[model.audio] kind = \"mfcc\"",
        ),
        (
            "embed_dim = 128",
            "embed_dim = 128\naudio_init = \"w2v/model.safetensors\"",
            "audio_init",
        ),
        (
            "init_temperature = 0.07",
            "init_temperature = 0.001",
            "max_logit_scale",
        ),
    ] {
        assert!(text.contains(from), "{from}");
        let err = SpeechRunConfig::from_toml(&text.replacen(from, to, 1), &path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("speech-text-cpu.toml") && err.contains(want),
            "{want}: {err}"
        );
    }
    let none = text.replacen(
        &text[text.find("test_speakers").unwrap()..]
            .lines()
            .next()
            .unwrap()
            .to_string(),
        "test_speakers = []",
        1,
    );
    let err = SpeechRunConfig::from_toml(&none, &path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("test_speakers"), "{err}");
}

/// Four forms, each a tone (300, 500, 700, 900 Hz) with a speaker-dependent
/// shift and loudness: five speakers train, one is held out.
fn write_tones(root: &Path) {
    let forms = [("a", 300.0f32), ("b", 500.0), ("c", 700.0), ("d", 900.0)];
    for s in 0..6 {
        for (k, (form, hz)) in forms.iter().enumerate() {
            for take in 0..2 {
                let path = root.join(format!("tones/sp{s}/{form}{}.wav", ["", "_"][take]));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let spec = hound::WavSpec {
                    channels: 1,
                    sample_rate: 16_000,
                    bits_per_sample: 16,
                    sample_format: hound::SampleFormat::Int,
                };
                let mut w = hound::WavWriter::create(&path, spec).unwrap();
                let f = hz * (1.0 + 0.03 * s as f32) + 7.0 * take as f32;
                let amp = 4000.0 + 1500.0 * ((s + k) % 3) as f32;
                for i in 0..4000 {
                    let t = i as f32 / 16_000.0;
                    w.write_sample((amp * (std::f32::consts::TAU * f * t).sin()) as i16)
                        .unwrap();
                }
                w.finalize().unwrap();
            }
        }
    }
}

fn tiny(root: &Path, log_mel: bool) -> SpeechRunConfig {
    write_tones(root);
    let (text, path) = preset("speech-text-cpu.toml");
    let mut cfg = SpeechRunConfig::from_toml(&text, &path).unwrap();
    cfg.data.sources = vec![SpeechSource::Klettres {
        path: "tones".into(),
    }];
    cfg.data.test_speakers = vec!["klettres/sp5".into()];
    cfg.data.validation_fraction = 0.2;
    cfg.data.crop_seconds = 0.25;
    cfg.data.eval_seconds = 0.25;
    cfg.model.audio = AudioTowerConfig::Wav2Vec2(selfsup_audio::model::Wav2Vec2Config {
        conv_dim: vec![16, 16, 16],
        conv_kernel: vec![10, 4, 4],
        conv_stride: vec![5, 4, 4],
        hidden_size: 32,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        intermediate_size: 64,
        num_conv_pos_embeddings: 4,
        num_conv_pos_embedding_groups: 2,
        hidden_dropout: 0.0,
        attention_dropout: 0.0,
        ..selfsup_audio::model::Wav2Vec2Config::default()
    });
    if log_mel {
        cfg.model.audio = AudioTowerConfig::LogMel(crate::model::logmel_tower::LogMelConfig {
            channels: vec![16, 16],
            kernels: vec![3, 3],
            strides: vec![1, 2],
            dropout: 0.0,
            freq_mask: 0,
            time_mask: 0,
        });
        // The lr is per 256 pairs: batch 4 trains at 1/64 of it.
        cfg.trainer.optimizer.lr = 2e-2;
    }
    cfg.model.text.hidden = Some(32);
    cfg.model.text.intermediate = Some(64);
    cfg.model.text.layers = Some(1);
    cfg.model.embed_dim = 16;
    cfg.run.batch_size = 4;
    cfg.run.device = DeviceChoice::Cpu;
    cfg.trainer.epochs = 15;
    cfg.trainer.checkpoint_every = 0;
    cfg.eval.monitor_pairs = 8;
    cfg
}

/// A whole run on tones, with either audio tower: the held-out speaker's
/// forms are recognised far above chance and above random weights; the
/// checkpoint evaluates to the run's own figures and exports as the run did.
#[test]
fn a_run_learns_tones_and_its_checkpoint_evaluates_as_the_run_did() {
    let _rng = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    for log_mel in [true, false] {
        learns_tones(log_mel);
    }
}

fn learns_tones(log_mel: bool) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(dir.path(), log_mel);
    let mut observer = Silent;
    let mut log = |_: &str| {};
    let plan = SpeechPlan(cfg.clone());
    let report = selfsup_core::workflow::Plan::pretrain(
        &plan,
        RunOptions {
            data: Some(dir.path().to_path_buf()),
            run_dir: dir.path().join("run"),
            resume: false,
            observer: &mut observer,
            stop: Default::default(),
            git_commit: None,
            log: &mut log,
            distributed: None,
        },
    )
    .unwrap();
    let lines = report.lines();
    let row = |name: &str| -> String {
        lines
            .iter()
            .find(|l| l.trim_start().starts_with(name))
            .cloned()
            .unwrap_or_else(|| panic!("{name}: {lines:?}"))
    };
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("run/summary.json")).unwrap(),
    )
    .unwrap();
    let figure = |list: &str, name: &str| -> f64 {
        summary[list]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v[0] == name)
            .unwrap_or_else(|| panic!("{list} {name}: {summary}"))[1]
            .as_f64()
            .unwrap()
    };
    let zs = "klettres held-out speakers zero-shot top-1";
    assert_eq!(figure("chance", zs), 0.25);
    assert!(figure("metrics", zs) >= 0.75, "{lines:?}");
    assert!(
        figure("metrics", zs) > figure("random_weights", zs),
        "{lines:?}"
    );
    assert_eq!(figure("chance", "klettres/sp5 s->t R@1"), 0.25);
    assert_eq!(summary["test_pairs"], 8);
    assert_eq!(
        summary["train_pairs"].as_u64().unwrap() + summary["validation_pairs"].as_u64().unwrap(),
        40
    );
    assert!(
        lines[1].starts_with("selfsup speech-text clip on "),
        "{lines:?}"
    );
    let checkpoint = dir.path().join("run/checkpoint.safetensors");
    let config = std::fs::read_to_string(dir.path().join("run/config.toml")).unwrap();
    let request = |protocol| EvalRequest {
        protocol,
        checkpoint: &checkpoint,
        config_toml: &config,
        data: Some(dir.path()),
        device: DeviceChoice::Cpu,
    };
    let zero = ClipModality.evaluate(&request(ZERO_SHOT)).unwrap();
    assert_eq!(zero.len(), 3, "{zero:?}");
    assert_eq!(zero[2], row(zs));
    let retrieval = ClipModality.evaluate(&request(RETRIEVAL)).unwrap();
    assert_eq!(retrieval.len(), 2 + 6, "{retrieval:?}");
    for l in &retrieval[2..] {
        let name = l.trim_start().split("  ").next().unwrap().trim_end();
        assert_eq!(l, &row(name));
    }
    // `selfsup export` of the checkpoint: the run's export again.
    let out = dir.path().join("out");
    let said = ClipModality.export(&checkpoint, &config, &out).unwrap();
    assert!(said.contains("speech-text"), "{said}");
    let ours = selfsup_core::tensor_io::load(&out.join("model.safetensors"))
        .unwrap()
        .tensors;
    let runs = selfsup_core::tensor_io::load(&dir.path().join("run/export/model.safetensors"))
        .unwrap()
        .tensors;
    assert_eq!(ours.len(), runs.len());
    for (k, v) in &ours {
        assert!(v.equal(&runs[k]), "{k}");
    }
    assert_eq!(
        std::fs::read_to_string(out.join("vocab.txt")).unwrap(),
        std::fs::read_to_string(dir.path().join("run/export/vocab.txt")).unwrap()
    );
    std::fs::remove_file(dir.path().join("run/vocab.txt")).unwrap();
    let err = ClipModality
        .export(&checkpoint, &config, &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("vocab.txt"), "{err}");
}
