//! Tests of `eval::finetune`.
use super::*;
use std::cell::RefCell;

/// 350 labels in proportions 4 : 2 : 1.
fn labels() -> Vec<i64> {
    (0..350).map(|i| [0, 0, 0, 0, 1, 1, 2][i % 7]).collect()
}

fn count(labels: &[i64], idx: &[usize], c: i64) -> usize {
    idx.iter().filter(|&&i| labels[i] == c).count()
}

#[test]
fn a_fraction_draws_each_class_its_share_by_seed() {
    let labels = labels();
    let shares = |idx: &[usize]| {
        (
            count(&labels, idx, 0),
            count(&labels, idx, 1),
            count(&labels, idx, 2),
        )
    };
    let a = stratified(&labels, 0.1, 10_000, 7);
    assert_eq!(shares(&a), (20, 10, 5));
    assert_eq!(a, stratified(&labels, 0.1, 10_000, 7));
    assert_ne!(a, stratified(&labels, 0.1, 10_000, 8));
    assert!(a.windows(2).all(|w| w[0] < w[1]), "sorted, no repeat");
    // The cap keeps the proportions; a tiny fraction keeps every class.
    assert_eq!(shares(&stratified(&labels, 1.0, 35, 0)), (20, 10, 5));
    assert_eq!(shares(&stratified(&labels, 0.001, 10_000, 0)), (1, 1, 1));
    assert_eq!(stratified(&labels, 1.0, 10_000, 3).len(), 350);
}

#[test]
fn with_one_seed_smaller_fractions_nest_inside_larger_ones() {
    let labels = labels();
    let mut previous: Vec<usize> = Vec::new();
    for f in [0.01, 0.05, 0.1, 0.5, 1.0] {
        let s = stratified(&labels, f, 10_000, 11);
        assert!(previous.iter().all(|i| s.contains(i)), "{f}");
        assert!(s.len() >= previous.len());
        previous = s;
    }
    // Labels out of order and sparse ids: classes by id, nothing allocated
    // per id (a huge id is one class among others).
    let odd = [5_000_000_000i64, 3, 3, 5_000_000_000, 3, 3];
    let s = stratified(&odd, 0.5, 10, 0);
    assert_eq!((count(&odd, &s, 3), count(&odd, &s, 5_000_000_000)), (2, 1));
}

#[test]
fn mean_and_sample_std() {
    let (m, s) = mean_std(&[0.5, 0.7, 0.6]);
    assert!(
        (m - 0.6).abs() < 1e-12 && (s - 0.1).abs() < 1e-12,
        "{m} {s}"
    );
    assert_eq!(mean_std(&[0.3]), (0.3, 0.0));
    assert_eq!(mean_std(&[]), (0.0, 0.0));
}

#[test]
fn fractions_outside_0_1_are_refused_naming_the_key() {
    for bad in [0.0, 1.5, f64::NAN, -0.1, f64::INFINITY] {
        let ft = FinetuneConfig {
            fractions: vec![0.1, bad],
            ..Default::default()
        };
        let err = ft.validate().unwrap_err();
        assert!(err.contains("[eval.finetune] fractions"), "{err}");
    }
    let cases: [(FinetuneConfig, &str); 5] = [
        (
            FinetuneConfig {
                fractions: vec![],
                ..Default::default()
            },
            "fractions = []",
        ),
        (
            FinetuneConfig {
                seeds: 0,
                ..Default::default()
            },
            "seeds = 0",
        ),
        (
            FinetuneConfig {
                steps: 0,
                ..Default::default()
            },
            "steps = 0",
        ),
        (
            FinetuneConfig {
                batch_size: 1,
                ..Default::default()
            },
            "batch_size = 1",
        ),
        (
            FinetuneConfig {
                max_images: 1,
                ..Default::default()
            },
            "max_images = 1",
        ),
    ];
    for (cfg, needle) in cases {
        let err = cfg.validate().unwrap_err();
        assert!(
            err.contains("[eval.finetune]") && err.contains(needle),
            "{err}"
        );
    }
    assert!(FinetuneConfig::default().validate().is_ok());
    assert!(FinetuneConfig::default().is_default());
}

/// One call of the fake: arm, fraction, seed index, subset, draw seed, init seed.
type Call = (Arm, f64, u64, Vec<usize>, u64, u64);

/// A fake modality: the score of a model is a fixed function of the
/// fraction, the arm and the seed; it records every call.
struct Fake {
    labels: Vec<i64>,
    calls: RefCell<Vec<Call>>,
}

impl FineTune for Fake {
    type Run = f64;
    fn labels(&self) -> &[i64] {
        &self.labels
    }
    fn run(&self, arm: Arm, t: &Trial<'_>) -> Result<f64> {
        self.calls.borrow_mut().push((
            arm,
            t.fraction,
            t.seed_index,
            t.labelled.to_vec(),
            t.draw_seed,
            t.init_seed,
        ));
        let base = match arm {
            Arm::Pretrained => 0.5 + 0.4 * t.fraction,
            Arm::Scratch => 0.2 + 0.6 * t.fraction,
        };
        Ok(base + 0.01 * t.seed_index as f64)
    }
}

#[test]
fn the_loop_runs_every_fraction_seed_and_arm_on_shared_subsets() {
    let fake = Fake {
        labels: labels(),
        calls: RefCell::new(Vec::new()),
    };
    let cfg = FinetuneConfig {
        fractions: vec![0.1, 1.0],
        seeds: 3,
        max_images: 100,
        ..Default::default()
    };
    let mut lines = Vec::new();
    let rows = finetune(&fake, &cfg, 40, "nodes", &mut |l| lines.push(l.to_string())).unwrap();
    assert_eq!(lines.len(), 2 * 3 * 2);
    assert_eq!(
        lines[0],
        "  10% labels, seed 0, pre-trained: test accuracy 54.00%"
    );
    assert_eq!(
        lines[1],
        "  10% labels, seed 0, from scratch: test accuracy 26.00%"
    );
    let calls = fake.calls.borrow();
    assert_eq!(calls.len(), 12);
    for pair in calls.chunks(2) {
        let (p, s) = (&pair[0], &pair[1]);
        assert_eq!((p.0, s.0), (Arm::Pretrained, Arm::Scratch));
        // Both arms: the same fraction, seed, subset and seeds.
        assert_eq!((p.1, p.2, &p.3, p.4, p.5), (s.1, s.2, &s.3, s.4, s.5));
        assert_eq!(p.5, 40 + p.2);
        assert_eq!(p.4, (40 + p.2) ^ p.1.to_bits().rotate_left(17));
        assert_eq!(p.3, stratified(&fake.labels, p.1, 100, p.4));
    }
    // The seeds of a fraction draw different subsets.
    assert_ne!(calls[0].3, calls[2].3);
    assert_eq!(rows.len(), 2);
    // 10 % of 350 = 35 labelled; 100 % is capped at 100 (57 + 29 + 14).
    assert_eq!(rows[0].labelled, vec![35, 35, 35]);
    assert_eq!(rows[1].labelled, vec![100, 100, 100]);
    // Pre-trained at 10 %: 0.54, 0.55, 0.56 -> mean 0.55, std 0.01.
    let ((p, ps), (s, ss)) = rows[0].summary();
    assert!((p - 0.55).abs() < 1e-12 && (ps - 0.01).abs() < 1e-12);
    assert!((s - 0.27).abs() < 1e-12 && (ss - 0.01).abs() < 1e-12);
    assert_eq!(
        rows[0].line(),
        "fine-tuning on 10% of the labels (35 nodes, 3 seeds): pre-trained 55.0 ± 1.0 %, \
         from scratch 27.0 ± 1.0 %, gain +28.0 points"
    );
    assert_eq!(
        rows[1].line(),
        "fine-tuning on 100% of the labels (100 nodes, 3 seeds): pre-trained 91.0 ± 1.0 %, \
         from scratch 81.0 ± 1.0 %, gain +10.0 points"
    );
    let json = serde_json::to_value(&rows[0]).unwrap();
    assert_eq!(json["fraction"], 0.1);
    assert_eq!(json["nodes"], serde_json::json!([35, 35, 35]));
    assert_eq!(json["pretrained"].as_array().unwrap().len(), 3);
    assert_eq!(
        json["scratch"][2].as_f64(),
        Some(0.2 + 0.6 * 0.1 + 0.01 * 2.0)
    );
    assert_eq!(json.as_object().unwrap().len(), 4);
}

#[test]
fn a_bad_config_or_a_failing_arm_stops_the_loop() {
    let fake = Fake {
        labels: labels(),
        calls: RefCell::new(Vec::new()),
    };
    let bad = FinetuneConfig {
        fractions: vec![2.0],
        ..Default::default()
    };
    let err = finetune(&fake, &bad, 0, "images", &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("fractions: 2"), "{err}");
    assert!(
        fake.calls.borrow().is_empty(),
        "refused before anything ran"
    );

    struct Failing;
    impl FineTune for Failing {
        type Run = f64;
        fn labels(&self) -> &[i64] {
            &[0, 1, 0, 1]
        }
        fn run(&self, arm: Arm, _: &Trial<'_>) -> Result<f64> {
            match arm {
                Arm::Pretrained => Ok(1.0),
                Arm::Scratch => Err(crate::Error::Data("scratch failed".into())),
            }
        }
    }
    let err = finetune(
        &Failing,
        &FinetuneConfig::default(),
        0,
        "images",
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("scratch failed"), "{err}");
}

#[test]
fn a_loss_trace_averages_the_first_and_last_tenth_and_stops_divergence() {
    let mut t = LossTrace::new(20);
    for step in 0..20 {
        t.record(step, step as f64).unwrap();
    }
    // Tenth = 2 steps: (0 + 1) / 2 and (18 + 19) / 2.
    assert_eq!((t.first, t.last), (0.5, 18.5));
    let mut short = LossTrace::new(3);
    for step in 0..3 {
        short.record(step, 10.0 * (step + 1) as f64).unwrap();
    }
    assert_eq!(
        (short.first, short.last),
        (10.0, 30.0),
        "at least one step each"
    );
    let e = LossTrace::new(5)
        .record(2, f64::NAN)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("diverged at step 2") && e.contains("optimizer.lr"),
        "{e}"
    );
}

#[test]
fn a_table_is_written_beside_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("checkpoint.safetensors");
    let out = crate::eval::write_beside(&ckpt, "table.json", &serde_json::json!({"rows": [1, 2]}))
        .unwrap();
    assert_eq!(out, dir.path().join("table.json"));
    let back: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(back["rows"][1], 2);
}

#[test]
fn scoring_on_validation_is_refused_by_a_modality_that_scores_on_test_only() {
    let fake = Fake {
        labels: labels(),
        calls: RefCell::new(Vec::new()),
    };
    let cfg = FinetuneConfig {
        scored_on: ScoredOn::Validation,
        ..Default::default()
    };
    let err = finetune(&fake, &cfg, 0, "nodes", &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("scored_on = \"validation\"") && err.contains("test samples only"),
        "{err}"
    );
    assert!(fake.calls.borrow().is_empty(), "nothing trained");
    let parsed: FinetuneConfig = toml::from_str("scored_on = \"validation\"").unwrap();
    assert_eq!(parsed.scored_on, ScoredOn::Validation);
    assert!(toml::from_str::<FinetuneConfig>("scored_on = \"train\"").is_err());
}

#[test]
fn a_subset_order_cycles_every_sample_once_per_pass_by_seed() {
    let subset = [3, 7, 11, 20];
    let mut a = SubsetOrder::new(&subset, 21, 5);
    let first: Vec<usize> = a.next_batch(4);
    let second: Vec<usize> = a.next_batch(4);
    for pass in [&first, &second] {
        let mut sorted = pass.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, subset);
    }
    assert_ne!(first, second, "reshuffled between passes");
    assert_eq!(a.distinct(), 4);
    let mut b = SubsetOrder::new(&subset, 21, 5);
    assert_eq!(b.next_batch(8), [first.clone(), second].concat());
    assert_eq!(a.digest(), b.digest());
    b.fold(1);
    assert_ne!(a.digest(), b.digest());
    let mut c = SubsetOrder::new(&subset, 21, 6);
    assert_ne!(c.next_batch(4), first);
    assert!(SubsetOrder::new(&[], 3, 0).next_batch(2).is_empty());
    // FNV-1a of the bytes of 3u64, computed by hand: the digest of one draw.
    let mut d = SubsetOrder::new(&[3], 4, 0);
    d.next_index();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in [3u8, 0, 0, 0, 0, 0, 0, 0] {
        h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    assert_eq!(d.digest(), format!("{h:016x}"));
}

#[test]
fn given_keys_override_a_modalitys_defaults_and_nothing_else() {
    let defaults = FinetuneConfig {
        steps: 40,
        optimizer: OptimConfig {
            kind: OptimKind::AdamW,
            lr: 1e-3,
            ..OptimConfig::default()
        },
        ..FinetuneConfig::default()
    };
    let given: toml::Table = toml::from_str("steps = 20\n[optimizer]\nlr = 0.5\n").unwrap();
    let merged = settings_over(&defaults, given).unwrap();
    assert_eq!(merged.steps, 20);
    assert_eq!(
        merged.optimizer.kind,
        OptimKind::AdamW,
        "kept from the defaults"
    );
    assert_eq!(merged.optimizer.lr, 0.5);
    assert_eq!(merged.seeds, defaults.seeds);
    assert_eq!(
        settings_over(&defaults, toml::Table::new()).unwrap(),
        defaults
    );
    let err = settings_over(&defaults, toml::from_str("stepz = 3").unwrap()).unwrap_err();
    assert!(
        err.contains("[eval.finetune]") && err.contains("stepz"),
        "{err}"
    );
}
