use super::*;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn clip(speaker: &str, label: &str, i: usize) -> Clip {
    Clip {
        path: PathBuf::from(format!("{speaker}/{label}{i}.wav")),
        samples: Vec::new(),
        label: Some(label.into()),
    }
}

/// Five training speakers saying a, b, c twice (s5 also says z); one test
/// speaker saying a, b and q.
fn task() -> ProbeTask {
    let mut train = Vec::new();
    let mut train_speakers = Vec::new();
    for s in ["s1", "s2", "s3", "s4", "s5"] {
        for l in ["a", "b", "c"] {
            for i in 0..2 {
                train.push(clip(s, l, i));
                train_speakers.push(s.to_string());
            }
        }
    }
    train.push(clip("s5", "z", 0));
    train_speakers.push("s5".into());
    ProbeTask {
        name: "letters".into(),
        train,
        train_speakers,
        test: vec![clip("t", "a", 0), clip("t", "q", 0), clip("t", "b", 0)],
    }
}

#[test]
fn validation_speakers_are_whole_and_apart_from_the_probe_s_and_the_test_s() {
    let t = task();
    let mut seen = BTreeSet::new();
    for seed in 0..8 {
        let split = ValidationSplit {
            fraction: 0.4,
            seed,
        };
        let p = plan(&t, &split).unwrap();
        assert_eq!(p.classes, 4);
        assert_eq!(p.validation_speakers.len(), 2, "40 % of 5 speakers");
        let speakers = |rows: &[usize]| -> BTreeSet<&str> {
            rows.iter().map(|&i| t.train_speakers[i].as_str()).collect()
        };
        let (fit, val) = (speakers(&p.fit), speakers(&p.validation));
        assert!(fit.is_disjoint(&val), "{fit:?} {val:?}");
        assert_eq!(
            val.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            p.validation_speakers
        );
        // Every row of a validation speaker is on the validation side but
        // the z clip when s5 is a validation speaker (no other says z).
        let s5_out = val.contains("s5");
        assert_eq!(p.validation_unseen, usize::from(s5_out));
        assert_eq!(p.fit.len() + p.validation.len() + p.validation_unseen, 31);
        assert_eq!(p.validation.len(), 12);
        // Test rows: of the test speaker only, q (no training clip) left out.
        assert_eq!(p.test, vec![0, 2]);
        assert_eq!(p.labels.test.size(), vec![2]);
        assert_eq!(plan(&t, &split).unwrap().validation, p.validation, "seeded");
        seen.insert(p.validation_speakers.clone());
    }
    assert!(seen.len() > 1, "the seed draws other speakers: {seen:?}");
}

#[test]
fn a_single_training_speaker_is_an_error_naming_the_key() {
    let mut t = task();
    t.train_speakers = vec!["s1".into(); t.train.len()];
    let split = ValidationSplit {
        fraction: 0.2,
        seed: 0,
    };
    let e = plan(&t, &split).err().unwrap().to_string();
    assert!(
        e.contains("letters") && e.contains("validation_fraction") && e.contains("two"),
        "{e}"
    );
}

/// `[rows, 2]`: the class (+-2, or its opposite where `flip`) and a small
/// noise dimension.
fn features(y: &[i64], flip: impl Fn(usize) -> bool) -> Tensor {
    let v: Vec<f32> = y
        .iter()
        .enumerate()
        .flat_map(|(i, &c)| {
            let c = if flip(i) { 1 - c } else { c };
            [c as f32 * 4.0 - 2.0, ((i * 37) % 11) as f32 / 11.0]
        })
        .collect();
    Tensor::from_slice(&v).view([y.len() as i64, 2])
}

#[test]
fn the_layer_is_the_best_on_validation_even_where_test_would_pick_another() {
    // 40 training rows (30 fit, 10 validation), 20 test rows, 2 classes.
    let ytr: Vec<i64> = (0..40).map(|i| i % 2).collect();
    let yte: Vec<i64> = (0..20).map(|i| i % 2).collect();
    let labels = ProbeLabels {
        train: Tensor::from_slice(&ytr),
        fit: Tensor::arange(30, (Kind::Int64, Device::Cpu)),
        validation: Tensor::arange_start(30, 40, (Kind::Int64, Device::Cpu)),
        test: Tensor::from_slice(&yte),
        classes: 2,
    };
    // Layer 0 tells the class on fit and test rows, the opposite on the
    // validation rows; layer 1 tells it on every training row, the opposite
    // on the test rows.
    let train = [features(&ytr, |i| i >= 30), features(&ytr, |_| false)];
    let test = [features(&yte, |_| false), features(&yte, |_| true)];
    let cfg = LinearProbeConfig {
        epochs: 50,
        ..Default::default()
    };
    let c = choose_layer(&train, &test, &labels, &cfg).unwrap();
    assert_eq!(c.validation.len(), 2);
    assert!(c.validation[0] < 0.1 && c.validation[1] > 0.9, "{c:?}");
    assert_eq!(c.chosen_layer, 1);
    // What test would have chosen: layer 0.
    let on_test = |l: usize| {
        linear_probe_top1(&train[l], &labels.train, &test[l], &labels.test, 2, &cfg).unwrap()
    };
    assert!(on_test(0) > 0.9 && on_test(1) < 0.1);
    assert_eq!(c.test, on_test(1), "the chosen layer's test figure, once");
    // A tie goes to the first layer.
    let same = [features(&ytr, |_| false), features(&ytr, |_| false)];
    let c = choose_layer(&same, &test, &labels, &cfg).unwrap();
    assert_eq!(c.chosen_layer, 0);
}

#[test]
fn frames_are_pooled_into_their_mean_and_spread_as_log_mel_is() {
    // Two dimensions over four frames: [1, 2, 3, 4] and a constant 5.
    let frames = Tensor::from_slice(&[1.0f32, 5.0, 2.0, 5.0, 3.0, 5.0, 4.0, 5.0]).view([4, 2]);
    let pooled = Vec::<f32>::try_from(pool_frames(&frames)).unwrap();
    let want = [2.5f32, 5.0, 1.25f32.sqrt(), 0.0];
    assert_eq!(pooled.len(), 4);
    for (got, want) in pooled.iter().zip(want) {
        assert!((got - want).abs() < 1e-6, "{pooled:?}");
    }
    // Two clips of the same mean but a different spread stay apart (a mean
    // alone would merge them); one frame has no spread.
    let flat = Tensor::from_slice(&[2.5f32; 4]).view([4, 1]);
    let moving = Tensor::from_slice(&[1.0f32, 4.0, 1.0, 4.0]).view([4, 1]);
    let spread = |t: &Tensor| pool_frames(t).double_value(&[1]);
    assert_eq!(spread(&flat), 0.0);
    assert!((spread(&moving) - 1.5).abs() < 1e-6);
    assert_eq!(
        pool_frames(&Tensor::from_slice(&[3.0f32]).view([1, 1])).double_value(&[1]),
        0.0
    );
    // The log-mel baseline is the same summary of its frames: 2 x 40 bands.
    assert_eq!(
        crate::logmel::logmel_summary(&[0.1; 800]).size(),
        vec![2 * crate::logmel::BANDS]
    );
}

#[test]
fn wav2vec2_frames_are_its_pooled_layers_before_the_mean() {
    let model = crate::model::Wav2Vec2Config {
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
        ..crate::model::Wav2Vec2Config::default()
    };
    tch::manual_seed(0);
    let method = Wav2Vec2Method::new(
        &model,
        &crate::methods::Wav2Vec2MethodConfig::default(),
        0,
        Device::Cpu,
    );
    let samples: Vec<f32> = (0..4000).map(|t| (t as f32 * 0.05).sin()).collect();
    let wave = Tensor::from_slice(&samples).view([1, -1]);
    let frames = method.clip_frames(&wave);
    let pooled = method.pooled_layers(&wave, &Tensor::from_slice(&[4000i64]));
    assert_eq!(frames.len(), 3);
    assert_eq!(method.layer_names().len(), 3);
    for (f, p) in frames.iter().zip(&pooled) {
        assert_eq!(f.size()[0], model.frames(4000));
        let diff = (f.mean_dim(0, false, Kind::Float) - p.select(0, 0))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-5, "frames and pooled layers differ by {diff}");
    }
    assert_eq!(pool_frames(&frames[2]).size(), vec![64]);
}
