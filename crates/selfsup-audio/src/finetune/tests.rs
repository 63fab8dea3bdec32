//! Tests of `finetune`.
use super::*;
use crate::config::{default_settings, is_default_settings};
use crate::dataset::Clip;
use crate::methods::Wav2Vec2MethodConfig;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use selfsup_core::optim::{OptimConfig, OptimKind};
use std::path::PathBuf;

/// A small wav2vec 2.0 (16-channel convs, one transformer layer of 32).
fn tiny_model() -> Wav2Vec2Config {
    Wav2Vec2Config {
        conv_dim: vec![16; 7],
        hidden_size: 32,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        intermediate_size: 64,
        num_conv_pos_embeddings: 8,
        num_conv_pos_embedding_groups: 2,
        num_codevector_groups: 2,
        num_codevectors_per_group: 8,
        codevector_dim: 16,
        proj_codevector_dim: 16,
        num_negatives: 5,
        ..Wav2Vec2Config::default()
    }
}

/// `n` samples of a tone of `f` Hz with a little seeded noise.
fn tone(f: f64, n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|t| {
            let x = 0.4 * (std::f64::consts::TAU * f * t as f64 / 16_000.0).sin();
            (x + rng.gen_range(-0.05..0.05)) as f32
        })
        .collect()
}

/// Speakers `s0..s{speakers}` (training) and `t0` (test), each saying
/// `per` low (~150 Hz) and `per` high (~1.2 kHz) tones of 0.3-0.5 s.
fn tones_task(speakers: usize, per: usize) -> ProbeTask {
    let clip = |s: &str, label: &str, i: usize, k: u64| {
        let (f, n) = match label {
            "low" => (140.0 + 7.0 * i as f64 + k as f64, 4_800 + 400 * (i % 4)),
            _ => (1_150.0 + 13.0 * i as f64 + k as f64, 5_200 + 300 * (i % 5)),
        };
        Clip {
            path: PathBuf::from(format!("{s}/{label}{i}.wav")),
            samples: tone(f, n, k * 1_000 + i as u64),
            label: Some(label.into()),
        }
    };
    let (mut train, mut train_speakers, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for s in 0..speakers {
        for label in ["low", "high"] {
            for i in 0..per {
                train.push(clip(&format!("s{s}"), label, i, s as u64));
                train_speakers.push(format!("s{s}"));
            }
        }
    }
    for label in ["low", "high"] {
        for i in 0..per {
            test.push(clip("t0", label, i, 99));
        }
    }
    ProbeTask {
        name: "pitch".into(),
        train,
        train_speakers,
        test,
    }
}

fn split() -> ValidationSplit {
    ValidationSplit {
        fraction: 0.25,
        seed: 0,
    }
}

/// A tiny setting: `steps` steps of 8 clips, AdamW at 2e-3, no augmentation.
fn settings(steps: usize) -> FinetuneConfig {
    let mut ft = default_settings();
    (ft.fractions, ft.seeds, ft.steps, ft.batch_size) = (vec![0.25, 1.0], 2, steps, 8);
    ft.optimizer.lr = 2e-3 * 256.0 / 8.0;
    ft
}

#[test]
fn the_task_is_split_as_the_probe_splits_it() {
    let task = tones_task(4, 3);
    let c = TaskClips::new(&task, &split(), 5_000).unwrap();
    let p = plan(&task, &split()).unwrap();
    assert_eq!(c.classes, 2);
    assert_eq!(c.validation_speakers, p.validation_speakers);
    assert_eq!(c.validation_speakers.len(), 1, "25 % of 4 speakers");
    assert_eq!(
        (c.train.len(), c.validation.len(), c.test.len()),
        (18, 6, 6)
    );
    assert_eq!(c.train_labels.len(), 18);
    // Capped at 5 000 samples; scored clips normalised, training clips not.
    assert!(c.train.iter().chain(&c.test).all(|x| x.len() <= 5_000));
    assert!(c.train.iter().any(|x| x.len() == 5_000));
    assert!(c.train.iter().any(|x| x.len() < 5_000));
    let mean = |x: &[f32]| x.iter().map(|&v| f64::from(v)).sum::<f64>() / x.len() as f64;
    let var = |x: &[f32]| {
        let m = mean(x);
        x.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>() / x.len() as f64
    };
    assert!(c.test.iter().all(|x| (var(x) - 1.0).abs() < 1e-3));
    assert!(c.train.iter().all(|x| var(x) < 0.2));
    // Too short a cap, or too few speakers, are errors that say what to give.
    let e = TaskClips::new(&task, &split(), 100)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[eval] max_seconds"), "{e}");
    let mut one = tones_task(1, 3);
    one.train_speakers = vec!["s0".into(); one.train.len()];
    let e = TaskClips::new(&one, &split(), 6_000)
        .unwrap_err()
        .to_string();
    assert!(e.contains("pitch") && e.contains("two"), "{e}");
}

#[test]
fn windows_keep_85_to_100_percent_of_the_clip_and_are_normalised() {
    let clip = tone(300.0, 10_000, 1);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let whole = example(&clip, 8_000, false, &mut rng);
    assert_eq!(whole.len(), 8_000);
    let mut widths = std::collections::BTreeSet::new();
    for _ in 0..50 {
        let w = example(&clip, 8_000, true, &mut rng);
        assert!((6_800..=8_000).contains(&w.len()), "{}", w.len());
        let m = w.iter().map(|&v| f64::from(v)).sum::<f64>() / w.len() as f64;
        assert!(m.abs() < 1e-4);
        widths.insert(w.len());
    }
    assert!(widths.len() > 10, "{widths:?}");
    // Never under one frame, even on a clip of barely one frame.
    let short = tone(300.0, 450, 2);
    for _ in 0..20 {
        let w = example(&short, 8_000, true, &mut rng);
        assert!((RECEPTIVE_FIELD..=450).contains(&w.len()));
    }
}

#[test]
fn both_arms_start_alike_but_for_the_encoder_and_share_subsets_and_batches() {
    let model = tiny_model();
    tch::manual_seed(11);
    let method = Wav2Vec2Method::new(&model, &Wav2Vec2MethodConfig::default(), 0, Device::Cpu);
    // The pre-trained arm's encoder is the checkpoint's; its head is the
    // scratch arm's.
    seed_random_weights(5);
    let scratch = Net::new(&model, 2, Device::Cpu);
    seed_random_weights(5);
    let mut pre = Net::new(&model, 2, Device::Cpu);
    pre.load_encoder(&method).unwrap();
    let var =
        |vs: &nn::VarStore, n: &str| vs.variables().remove(n).unwrap_or_else(|| panic!("no {n}"));
    let conv = "wav2vec2.feature_extractor.conv_layers.0.conv.weight";
    assert!(var(&pre.vs, conv).equal(&var(method.var_store(), conv)));
    assert!(!var(&scratch.vs, conv).equal(&var(method.var_store(), conv)));
    assert!(var(&pre.vs, "head.weight").equal(&var(&scratch.vs, "head.weight")));
    // Only the encoder and the head train.
    let names = pre.params().names;
    assert!(names.iter().any(|n| n.starts_with("wav2vec2.encoder.")));
    assert!(names.iter().any(|n| n == "head.bias"));
    assert!(!names
        .iter()
        .any(|n| n.starts_with("quantizer") || n.starts_with("project") || n.contains("masked")));

    let clips = TaskClips::new(&tones_task(4, 3), &split(), 6_000).unwrap();
    let ft = settings(3);
    let mut lines = Vec::new();
    let rows = finetune(&method, &clips, &ft, 6_000, 7, Device::Cpu, &mut |l| {
        lines.push(l.to_string())
    })
    .unwrap();
    assert_eq!(lines.len(), 2 * 2 * 2);
    assert!(lines[0].contains("pre-trained") && lines[1].contains("from scratch"));
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!((row.pretrained.len(), row.scratch.len()), (2, 2));
        for (p, s) in row.pretrained.iter().zip(&row.scratch) {
            assert_eq!(p.batches_digest, s.batches_digest);
            assert_eq!(
                (p.steps, p.clips_seen, p.distinct_clips, p.audio_seconds),
                (s.steps, s.clips_seen, s.distinct_clips, s.audio_seconds)
            );
            assert!(p.test_accuracy.is_some() && s.test_accuracy.is_some());
            assert_ne!(p, s, "the arms are different models");
        }
        assert_ne!(
            row.pretrained[0].batches_digest, row.pretrained[1].batches_digest,
            "the seeds draw other subsets or orders"
        );
    }
    // 25 % of 18 clips: round(4.5) = 5, 3 per class after rounding (6 clips,
    // one batch each step); 100 %: 18 clips in batches of 8.
    assert_eq!(rows[0].labelled, vec![6, 6]);
    assert_eq!(rows[0].pretrained[0].clips_seen, 18);
    assert_eq!(rows[0].pretrained[0].distinct_clips, 6);
    assert_eq!(rows[1].labelled, vec![18, 18]);
    assert_eq!(rows[1].pretrained[0].clips_seen, 24);
    let json = serde_json::to_value(&rows[1]).unwrap();
    assert_eq!(json["clips"], serde_json::json!([18, 18]));
    assert!(json["scratch"][0]["validation_accuracy"].is_number());
    // Scored on validation: the test clips are left unscored.
    let mut on_validation = settings(2);
    on_validation.fractions = vec![1.0];
    on_validation.seeds = 1;
    on_validation.scored_on = ScoredOn::Validation;
    let rows = finetune(
        &method,
        &clips,
        &on_validation,
        6_000,
        7,
        Device::Cpu,
        &mut |_| {},
    )
    .unwrap();
    let r = &rows[0].pretrained[0];
    assert_eq!((r.test_accuracy, r.score()), (None, r.validation_accuracy));
}

#[test]
fn bad_subsets_are_errors_not_panics() {
    seed_random_weights(0);
    let net = Net::new(&tiny_model(), 2, Device::Cpu);
    let clips = vec![tone(200.0, 2_000, 0), tone(900.0, 2_000, 1)];
    let ft = settings(1);
    let e = train(&net, &clips, &[0, 1], &[0], &ft, 4_000, 0).unwrap_err();
    assert!(e.to_string().contains("at least 2 labelled clips"), "{e}");
    let e = train(&net, &clips, &[0, 1], &[0, 5], &ft, 4_000, 0).unwrap_err();
    assert!(e.to_string().contains("labelled clip 5"), "{e}");
    let e = train(&net, &clips, &[0], &[0, 1], &ft, 4_000, 0).unwrap_err();
    assert!(e.to_string().contains("one label per clip"), "{e}");
    // A learning rate that blows the loss up is stopped, naming the key.
    let mut wild = settings(20);
    wild.optimizer.kind = OptimKind::Sgd;
    wild.optimizer.lr = 1e12;
    match train(&net, &clips, &[0, 1], &[0, 1], &wild, 4_000, 0) {
        Err(e) => assert!(e.to_string().contains("optimizer.lr"), "{e}"),
        Ok(r) => assert!(r.last_loss.is_finite()),
    }
}

/// On pitch, separable whatever the speaker, the loss of a network from
/// scratch falls by far more than it moves on the same batches with the
/// weights (nearly) still, and the held-out speaker's clips are classified.
#[test]
fn fine_tuning_learns_a_separable_task_beyond_the_noise() {
    let clips = TaskClips::new(&tones_task(4, 4), &split(), 6_000).unwrap();
    let all: Vec<usize> = (0..clips.train.len()).collect();
    let ft = FinetuneConfig {
        steps: 30,
        ..settings(30)
    };
    let still = FinetuneConfig {
        optimizer: OptimConfig {
            lr: 1e-12,
            ..ft.optimizer.clone()
        },
        ..ft.clone()
    };
    let run = |ft: &FinetuneConfig| {
        seed_random_weights(1);
        let net = Net::new(&tiny_model(), 2, Device::Cpu);
        let before = net.accuracy(&clips.test, &clips.test_labels).unwrap();
        let r = train(&net, &clips.train, &clips.train_labels, &all, ft, 6_000, 9).unwrap();
        let after = net.accuracy(&clips.test, &clips.test_labels).unwrap();
        (r, before, after)
    };
    let (noise, _, _) = run(&still);
    let (learnt, before, after) = run(&ft);
    assert_eq!(noise.batches_digest, learnt.batches_digest);
    let moved = (noise.first_loss - noise.last_loss).abs();
    let fell = learnt.first_loss - learnt.last_loss;
    assert!(
        fell > 3.0 * moved + 0.1 && learnt.last_loss < 0.5 * learnt.first_loss,
        "loss {} -> {} (weights still: {} -> {})",
        learnt.first_loss,
        learnt.last_loss,
        noise.first_loss,
        noise.last_loss
    );
    assert!(after >= 0.9 && after > before, "test {before} -> {after}");
}

#[test]
fn audio_defaults_fill_the_keys_a_config_leaves_out() {
    let path = Path::new("ft.toml");
    let cfg = AudioRunConfig::from_toml("", path).unwrap();
    assert!(is_default_settings(&cfg.eval.finetune));
    assert!(!cfg.to_toml().contains("finetune"));
    assert_eq!(cfg.eval.finetune.optimizer.kind, OptimKind::AdamW);
    let text = "[eval.finetune]\nsteps = 5\n[eval.finetune.optimizer]\nlr = 0.5\n";
    let cfg = AudioRunConfig::from_toml(text, path).unwrap();
    let ft = &cfg.eval.finetune;
    assert_eq!((ft.steps, ft.batch_size, ft.seeds), (5, 16, 3));
    assert_eq!(
        (ft.optimizer.kind, ft.optimizer.lr),
        (OptimKind::AdamW, 0.5)
    );
    assert_eq!(ft.optimizer.betas, (0.9, 0.98));
    let again = AudioRunConfig::from_toml(&cfg.to_toml(), path).unwrap();
    assert_eq!(again, cfg);
    for (text, want) in [
        ("[eval.finetune]\nstepz = 5\n", "stepz"),
        ("[eval.finetune]\nfractions = [1.5]\n", "fractions: 1.5"),
        ("[eval.finetune]\nseeds = 0\n", "seeds = 0"),
        ("[eval.finetune.optimizer]\nlr = -1.0\n", "optimizer.lr"),
        ("[eval]\nfinetune_task = \"letters\"\n", "finetune_task"),
    ] {
        let e = AudioRunConfig::from_toml(text, path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ft.toml") && e.contains(want), "{want}: {e}");
    }
}
