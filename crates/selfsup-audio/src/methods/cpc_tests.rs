use super::*;
use crate::batch::CropBatches;
use crate::model::FeatExtractNorm;
use rand::Rng;
use selfsup_core::optim::{OptimConfig, OptimKind};
use selfsup_core::trainer::noise::{untrained_losses, LossNoise};
use selfsup_core::trainer::{Silent, Trainer, TrainerConfig};
use std::path::PathBuf;
use std::sync::Arc;

/// A small network: 5 conv layers of stride 5, 2, 2, 2, 2 (80 samples a
/// frame, 5 ms), 16 channels, GRU of 24, 3 steps.
fn small() -> CpcArch {
    CpcArch {
        feat_extract_norm: Default::default(),
        conv_bias: false,
        conv_dim: vec![16; 5],
        conv_kernel: vec![10, 3, 3, 3, 3],
        conv_stride: vec![5, 2, 2, 2, 2],
        layer_norm_eps: 1e-5,
        context_dim: 24,
        context_layers: 1,
        prediction_steps: 3,
    }
}

fn values(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

/// The loss written out with plain loops, in f64: for each step `k`, each
/// anchor `(b, t)` with `t + k < len_b` scores `pred_k[b, t] . z[b', t' + k]`
/// against every anchor `(b', t')` of that step; cross-entropy of its own.
fn loops(z: &[f64], preds: &[Vec<f64>], lens: &[usize], t: usize, c: usize) -> (f64, Vec<f64>) {
    let at = |v: &[f64], b: usize, s: usize| v[(b * t + s) * c..(b * t + s + 1) * c].to_vec();
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>();
    let mut step_losses = Vec::new();
    let mut accs = Vec::new();
    for (i, pred) in preds.iter().enumerate() {
        let k = i + 1;
        let pairs: Vec<(usize, usize)> = lens
            .iter()
            .enumerate()
            .flat_map(|(b, &n)| (0..n.saturating_sub(k)).map(move |s| (b, s)))
            .collect();
        let (mut total, mut right) = (0.0, 0.0);
        for (row, &(b, s)) in pairs.iter().enumerate() {
            let p = at(pred, b, s);
            let logits: Vec<f64> = pairs
                .iter()
                .map(|&(b2, s2)| dot(&p, &at(z, b2, s2 + k)))
                .collect();
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
            total += lse - logits[row];
            if logits[row] >= max {
                right += 1.0;
            }
        }
        step_losses.push(total / pairs.len() as f64);
        accs.push(right / pairs.len() as f64);
    }
    (
        step_losses.iter().sum::<f64>() / step_losses.len() as f64,
        accs,
    )
}

#[test]
fn the_info_nce_loss_matches_plain_loops() {
    let (b, t, c) = (3usize, 6usize, 4usize);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // Row 1 is padded after 4 frames, row 2 after 2 (no anchor at k = 2, 3).
    let lens = [6usize, 4, 2];
    let z = values(&mut rng, b * t * c);
    let preds: Vec<Vec<f64>> = (0..3).map(|_| values(&mut rng, b * t * c)).collect();
    let tensor = |v: &[f64]| {
        Tensor::from_slice(v)
            .to_kind(Kind::Float)
            .view([b as i64, t as i64, c as i64])
    };
    let (loss, accs) = info_nce_steps(
        &tensor(&z),
        &preds.iter().map(|p| tensor(p)).collect::<Vec<_>>(),
        &lens,
    )
    .unwrap();
    let (want, want_accs) = loops(&z, &preds, &lens, t, c);
    let got = loss.double_value(&[]);
    assert!((got - want).abs() < 1e-5, "loss {got} vs loops {want}");
    for (a, w) in accs.iter().zip(&want_accs) {
        assert!((a - w).abs() < 1e-9, "accuracy {accs:?} vs {want_accs:?}");
    }
    // Padding frames are never read: changing them changes nothing.
    let mut z2 = z.clone();
    for v in &mut z2[(2 * t + 2) * c..] {
        *v = 50.0;
    }
    let (again, _) = info_nce_steps(
        &tensor(&z2),
        &preds.iter().map(|p| tensor(p)).collect::<Vec<_>>(),
        &lens,
    )
    .unwrap();
    assert!((again.double_value(&[]) - got).abs() < 1e-6);
    // A target made equal to its prediction (and large) wins its row.
    let mut z3 = z.clone();
    let p = &preds[0];
    z3[c..2 * c].copy_from_slice(&p[0..c].iter().map(|x| x * 40.0).collect::<Vec<_>>());
    let (_, accs3) = info_nce_steps(
        &tensor(&z3),
        &preds.iter().map(|p| tensor(p)).collect::<Vec<_>>(),
        &lens,
    )
    .unwrap();
    let (_, want3) = loops(&z3, &preds, &lens, t, c);
    assert!((accs3[0] - want3[0]).abs() < 1e-9, "{accs3:?} {want3:?}");
}

#[test]
fn step_pairs_stay_inside_each_crop() {
    let (a, tg) = step_pairs(&[4, 2, 0], 4, 2);
    assert_eq!(a, vec![0, 1]);
    assert_eq!(tg, vec![2, 3]);
    let (a, tg) = step_pairs(&[4, 3], 4, 1);
    assert_eq!(a, vec![0, 1, 2, 4, 5]);
    assert_eq!(tg, vec![1, 2, 3, 5, 6]);
    // A batch with no frame k ahead is an error naming the fix.
    let z = Tensor::zeros([1, 2, 3], (Kind::Float, Device::Cpu));
    let err = info_nce_steps(&z, &[z.shallow_clone(), z.shallow_clone()], &[2])
        .unwrap_err()
        .to_string();
    assert!(err.contains("prediction_steps + 1"), "{err}");
}

#[test]
fn impossible_settings_are_refused_naming_the_key() {
    let ok = CpcMethodConfig::default();
    assert!(ok.validate().is_ok());
    for (cfg, want) in [
        (
            CpcMethodConfig {
                context_dim: 0,
                ..ok.clone()
            },
            "context_dim = 0",
        ),
        (
            CpcMethodConfig {
                prediction_steps: -2,
                ..ok.clone()
            },
            "prediction_steps = -2",
        ),
        (
            CpcMethodConfig {
                context_layers: 99,
                ..ok.clone()
            },
            "context_layers = 99",
        ),
    ] {
        let err = cfg.validate().unwrap_err();
        assert!(err.contains(want), "{want}: {err}");
    }
    let model = Wav2Vec2Config::default();
    // 0.2 s: 9 frames of 20 ms, fewer than 12 + 1.
    let err = ok.check_crops(&model, 0.2, 16).unwrap_err();
    assert!(
        err.contains("crop_seconds = 0.2") && err.contains("prediction_steps + 1 = 13"),
        "{err}"
    );
    let err = ok.check_crops(&model, 10.0, 64).unwrap_err();
    assert!(err.contains("batch_size = 64"), "{err}");
    assert!(ok.check_crops(&model, 1.0, 16).is_ok());
}

fn clip(name: &str, n: usize) -> Clip {
    Clip {
        path: PathBuf::from(name),
        samples: (0..n).map(|t| (t as f32 * 0.05).sin()).collect(),
        label: None,
    }
}

#[test]
fn clips_shorter_than_the_horizon_are_refused_or_skipped_and_counted() {
    let arch = small();
    // 3 steps need 4 frames: 10 + 4 * 80 = ... the smallest length is
    // what min_samples finds, and one sample less gives 3 frames.
    let min = arch.min_samples().unwrap() as usize;
    assert_eq!(arch.frames(min as i64), 4);
    assert_eq!(arch.frames(min as i64 - 1), 3);
    let clips = || vec![clip("long.wav", 4000), clip("short.wav", min - 1)];
    let mut report = LoadReport {
        clips: 2,
        ..LoadReport::default()
    };
    let err = keep_predictable(clips(), &arch, false, &mut report)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("short.wav")
            && err.contains("prediction_steps + 1 = 4")
            && err.contains(&format!("at least {min} samples"))
            && err.contains("skip_bad"),
        "{err}"
    );
    let kept = keep_predictable(clips(), &arch, true, &mut report).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].path, PathBuf::from("long.wav"));
    assert_eq!((report.skipped, report.clips), (1, 1));
    assert!(report.skipped_examples[0].contains("short.wav"));
}

/// Clips with structure to predict: tones whose pitch glides.
fn tones(n: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|i| {
            let f0 = 200.0 + 60.0 * (i % 7) as f32;
            (0..4000 + 300 * (i % 4))
                .map(|t| {
                    let s = t as f32 / 16_000.0;
                    let f = f0 * (1.0 + 2.0 * s * (i % 3) as f32);
                    (2.0 * std::f32::consts::PI * f * s).sin()
                })
                .collect()
        })
        .collect()
}

#[test]
fn training_lowers_the_loss_and_the_monitor_figures_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let data = CropBatches::new(Arc::new(tones(32)), 3200, 8, 0);
    // What the loss does on these batches with the weights never moving.
    tch::manual_seed(0);
    let mut still = CpcMethod::new(&small(), Device::Cpu);
    let noise = LossNoise::of(&untrained_losses(&mut still, &data, 8).unwrap());
    tch::manual_seed(0);
    let mut method = CpcMethod::new(&small(), Device::Cpu);
    let cfg = TrainerConfig {
        epochs: 8,
        optimizer: OptimConfig {
            kind: OptimKind::AdamW,
            lr: 0.05,
            weight_decay: 0.0,
            ..OptimConfig::default()
        },
        mixed_precision: false,
        ..TrainerConfig::default()
    };
    let mut eval = CpcEpochEval {
        clips: tones(12),
        crop: 3200,
        batch: 6,
        device: Device::Cpu,
    };
    let summary = Trainer::new(cfg, dir.path(), Device::Cpu)
        .fit(&mut method, &data, &mut eval, &mut Silent, false)
        .unwrap();
    let first = summary.epochs[0].mean_loss;
    let last = summary.epochs.last().unwrap().mean_loss;
    // Falls ~1.56 here, against an untrained spread of ~0.19 (the
    // untrained loss, ~7.5, is above chance, ln(8 * 36) = 5.7: raw dot
    // products are large).
    eprintln!(
        "loss {first:.3} -> {last:.3}; untrained epoch means range {:.4}",
        noise.range
    );
    assert!(
        first - last > 0.5 && first - last > 5.0 * noise.range,
        "loss {first} -> {last}; untrained epoch means {:?}",
        noise.epoch_means
    );
    let log = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    for key in [
        "info_nce",
        "cpc_acc_last_step",
        "val_info_nce",
        "val_cpc_acc",
    ] {
        assert!(log.contains(key), "{key} missing from metrics.jsonl");
    }
    // The probes' two layers: the frames of z [T, 16] and c [T, 24], the
    // same as the batch forward's and as its mean-pooled layers.
    let wave = Tensor::from_slice(&tones(2)[1][..3000]).view([1, -1]);
    let frames = method.clip_frames(&wave);
    let t = small().frames(3000);
    let dims: Vec<Vec<i64>> = frames.iter().map(|l| l.size()).collect();
    assert_eq!(dims, vec![vec![t, 16], vec![t, 24]]);
    let pooled = method.pooled_layers(&wave, &Tensor::from_slice(&[3000i64]));
    for (f, p) in frames.iter().zip(&pooled) {
        let diff = (f.mean_dim(0, false, Kind::Float) - p.select(0, 0))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-5, "frames and pooled layers differ by {diff}");
    }
}

#[test]
fn a_padded_row_counts_only_its_own_frames() {
    padded_row_is_encoded_as_alone(FeatExtractNorm::Group);
}

/// The layer-norm encoder encodes a padded batch in one pass (no row alone):
/// a valid frame's receptive field holds valid samples only, so it must
/// come out as it does for the clip alone.
#[test]
fn a_padded_row_of_the_layer_norm_encoder_is_encoded_as_alone() {
    padded_row_is_encoded_as_alone(FeatExtractNorm::Layer);
}

fn padded_row_is_encoded_as_alone(norm: FeatExtractNorm) {
    tch::manual_seed(3);
    let arch = CpcArch {
        feat_extract_norm: norm,
        ..small()
    };
    let m = CpcMethod::new(&arch, Device::Cpu);
    let clips = tones(2);
    let (wave, lengths) = collate(&[clips[0][..2400].to_vec(), clips[1][..3200].to_vec()]);
    let out = tch::no_grad(|| m.model.forward(&wave, &lengths));
    let want = [small().frames(2400) as usize, small().frames(3200) as usize];
    assert_eq!(out.frame_lens, want);
    assert_eq!(out.z.size()[1], want[1] as i64);
    let valid = Vec::<i64>::try_from(out.valid.sum_dim_intlist(1, false, Kind::Int64)).unwrap();
    assert_eq!(valid, vec![want[0] as i64, want[1] as i64]);
    // The padded row is encoded as it is alone (the probes' way): the zeros
    // after it do not enter the first conv's group norm over time, nor any
    // valid frame's receptive field.
    let alone = Tensor::from_slice(&clips[0][..2400]).view([1, -1]);
    let solo = tch::no_grad(|| m.model.forward(&alone, &Tensor::from_slice(&[2400i64])));
    let n = want[0] as i64;
    for (batched, solo) in [(&out.z, &solo.z), (&out.c, &solo.c)] {
        let diff = (batched.get(0).narrow(0, 0, n) - solo.get(0))
            .abs()
            .max()
            .double_value(&[]);
        assert!(
            diff < 1e-5,
            "padded row differs from the clip alone by {diff}"
        );
    }
}

fn preset(name: &str) -> (String, PathBuf) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs/audio")
        .join(name);
    (std::fs::read_to_string(&path).unwrap(), path)
}

#[test]
fn the_cpc_presets_parse_round_trip_and_refuse_short_crops() {
    use crate::config::{AudioMethodConfig, AudioRunConfig};
    // the CPU preset's horizon was chosen on a validation speaker (4); the
    // GPU preset keeps the paper's 12
    for (name, steps) in [("cpc-cpu.toml", 4), ("cpc-gpu.toml", 12)] {
        let (text, path) = preset(name);
        let cfg = AudioRunConfig::from_toml(&text, &path).unwrap();
        let AudioMethodConfig::Cpc(m) = &cfg.method else {
            panic!("{name}: not cpc");
        };
        assert_eq!(m.prediction_steps, steps, "{name}");
        assert_eq!(cfg.eval.tasks.len(), 2, "{name}");
        // The same encoder geometry as wav2vec 2.0's presets: 20 ms frames.
        assert_eq!(cfg.model.receptive_field(), 400);
        let again = AudioRunConfig::from_toml(&cfg.to_toml(), &path).unwrap();
        assert_eq!(again, cfg);
    }
    let (text, path) = preset("cpc-cpu.toml");
    // 0.05 s = 800 samples: 2 latent frames, fewer than 4 + 1
    let bad = text.replace("crop_seconds = 1.0", "crop_seconds = 0.05");
    let err = AudioRunConfig::from_toml(&bad, &path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cpc-cpu.toml") && err.contains("prediction_steps + 1 = 5"),
        "{err}"
    );
    let bad = text.replace("context_dim = 128", "context_dim = 0");
    let err = AudioRunConfig::from_toml(&bad, &path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[method] context_dim = 0"), "{err}");
}

#[test]
fn the_probe_lines_name_cpc_s_layers() {
    use crate::eval::{LayerChoice, ProbeRow};
    let choice = |v: Vec<f64>, chosen_layer| LayerChoice {
        validation: v,
        chosen_layer,
        test: 0.25,
    };
    let row = ProbeRow {
        name: "spoken-letter".into(),
        classes: 26,
        train_clips: 10,
        validation_speakers: vec!["a".into()],
        validation_clips: 2,
        fit_clips: 8,
        test_clips: 4,
        unseen_label_clips: 0,
        validation_unseen_label_clips: 0,
        layers: CpcMethod::new(&small(), Device::Cpu).layer_names(),
        pretrained: choice(vec![0.1, 0.5], 1),
        random_weights: choice(vec![0.3, 0.2], 0),
        logmel: choice(vec![0.2], 0),
        majority: 0.04,
        validation_majority: 0.04,
    };
    let text = crate::report::probe_lines(&row).join("\n");
    assert!(
        text.contains("GRU context c") && text.contains("pre-trained 25.00% (GRU context c)"),
        "{text}"
    );
    assert!(text.contains("random weights 25.00% (encoder z)"), "{text}");
    assert!(!text.contains("transformer"), "{text}");
}
