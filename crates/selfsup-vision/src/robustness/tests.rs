//! Tests of `robustness` and of evaluating a checkpoint on another dataset.
use super::*;
use crate::augment::corrupt::Corruption;
use crate::config::DataFormat;
use crate::workflow::VisionModality;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use selfsup_core::device::DeviceChoice;
use selfsup_core::workflow::{EvalRequest, Modality};

/// Writes an IDX pair (`{prefix}-images-idx3-ubyte`, `-labels-idx1-ubyte`)
/// of `side x side` grey images into `dir`.
fn write_idx(dir: &Path, prefix: &str, side: u32, px: &[u8], labels: &[i64]) {
    let n = labels.len() as u32;
    assert_eq!(px.len(), (n * side * side) as usize);
    let mut images: Vec<u8> = [0x0803u32, n, side, side]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    images.extend_from_slice(px);
    let mut lab: Vec<u8> = [0x0801u32, n]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    lab.extend(labels.iter().map(|&l| l as u8));
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), lab).unwrap();
}

/// `per_class` 32x32 one-pixel checkerboards of each phase (class 0: a
/// bright top-left pixel, class 1: a dark one), amplitude 40 around a
/// brightness drawn per image from `seed`. A linear probe on raw pixels
/// separates them perfectly; a blur of one pixel erases the pattern.
fn checkerboards(per_class: usize, seed: u64) -> (Vec<u8>, Vec<i64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut px, mut labels) = (Vec::new(), Vec::new());
    for i in 0..2 * per_class {
        let class = (i % 2) as i64;
        let base: i32 = rng.gen_range(90..166);
        for y in 0..32 {
            for x in 0..32 {
                let sign = if (x + y + class) % 2 == 0 { 1 } else { -1 };
                px.push((base + 40 * sign) as u8);
            }
        }
        labels.push(class);
    }
    (px, labels)
}

/// The tiny fine-tuning config with the data path set and a short probe.
fn tiny(path: &Path) -> VisionRunConfig {
    let mut cfg = crate::finetune::tests::tiny_config();
    cfg.data.format = DataFormat::FashionMnist;
    cfg.data.path = Some(path.to_path_buf());
    cfg.eval.knn.k = 5;
    cfg.eval.linear.epochs = 30;
    cfg
}

#[test]
fn robustness_config_refuses_unknown_names_and_severities_naming_the_key() {
    let parse = |table: &str| {
        VisionRunConfig::from_toml(
            &format!("[eval.robustness]\n{table}\n"),
            Path::new("r.toml"),
        )
    };
    for (table, expected) in [
        (
            "corruptions = [\"fog\"]",
            "[eval.robustness] corruptions: 'fog' is not a corruption: give some of \
             gaussian_noise, gaussian_blur, contrast",
        ),
        ("corruptions = []", "[eval.robustness] corruptions = []"),
        (
            "corruptions = [\"contrast\", \"contrast\"]",
            "'contrast' is listed twice",
        ),
        (
            "severities = [1, 4]",
            "[eval.robustness] severities: 4 is out of range: give severities from 1 to 3",
        ),
        ("severities = [0]", "[eval.robustness] severities: 0 is out"),
        (
            "severities = [-2]",
            "[eval.robustness] severities: -2 is out",
        ),
        ("severities = []", "[eval.robustness] severities = []"),
        ("severities = [2, 2]", "severities: 2 is listed twice"),
    ] {
        let err = parse(table).unwrap_err().to_string();
        assert!(
            err.contains("r.toml") && err.contains(expected),
            "{table}: {err}"
        );
    }
    let err = parse("sigma = 1.0").unwrap_err().to_string();
    assert!(err.contains("sigma"), "{err}");
}

#[test]
fn robustness_defaults_stay_out_of_stored_configs_and_choices_round_trip() {
    let cfg = VisionRunConfig::default();
    assert!(cfg.eval.robustness.is_default());
    assert!(!cfg.to_toml().contains("robustness"), "{}", cfg.to_toml());
    assert_eq!(cfg.eval.robustness.sets().unwrap().len(), 9);
    let text = "[eval.robustness]\ncorruptions = [\"contrast\", \"gaussian_noise\"]\n\
                severities = [3, 1]\nseed = 4\nknn = false\n";
    let set = VisionRunConfig::from_toml(text, Path::new("r.toml")).unwrap();
    let back = VisionRunConfig::from_toml(&set.to_toml(), Path::new("back.toml")).unwrap();
    assert_eq!(back.eval.robustness, set.eval.robustness);
    assert_eq!(
        back.eval.robustness.sets().unwrap(),
        vec![
            (Corruption::Contrast, 3),
            (Corruption::Contrast, 1),
            (Corruption::GaussianNoise, 3),
            (Corruption::GaussianNoise, 1),
        ]
    );
}

/// Raw pixels on one-pixel checkerboards: the probe fitted on clean images
/// is perfect on clean test images and at chance once a blur erases the
/// pattern. The rows' drops are clean minus corrupted.
#[test]
fn robustness_of_raw_pixels_falls_where_the_corruption_erases_the_classes() {
    let t = tempfile::tempdir().unwrap();
    let (px, labels) = checkerboards(30, 1);
    write_idx(t.path(), "train", 32, &px, &labels);
    let (px, labels) = checkerboards(20, 2);
    write_idx(t.path(), "t10k", 32, &px, &labels);
    let mut cfg = tiny(t.path());
    cfg.eval.robustness.corruptions = vec!["gaussian_blur".into(), "contrast".into()];
    let data = EvalData::load(&cfg, t.path()).unwrap();
    assert_eq!(data.test.len(), 40);
    let mut heard = Vec::new();
    let rows = robustness(
        &cfg,
        &data,
        &[("raw_pixels", Representation::RawPixels)],
        &mut |l| heard.push(l.to_string()),
    )
    .unwrap();
    assert_eq!(rows.len(), 7, "{rows:#?}");
    assert_eq!(heard.len(), 7);
    assert_eq!(heard[6], "robustness: contrast severity 3 (7/7)");
    let row = |c: &str, s: u8| {
        rows.iter()
            .find(|r| r.corruption == c && r.severity == s)
            .unwrap()
    };
    let clean = row("clean", 0);
    assert_eq!((clean.linear_top1, clean.linear_drop), (1.0, 0.0));
    let blurred = row("gaussian_blur", 3);
    assert!(blurred.linear_top1 <= 0.6, "{blurred:?}");
    assert!((blurred.linear_drop - (1.0 - blurred.linear_top1)).abs() < 1e-12);
    assert_eq!(blurred.parameter, Some(1.0));
    assert!(row("gaussian_blur", 1).linear_top1 >= blurred.linear_top1);
    // Contrast: the probe's bias was fitted at full contrast and loses
    // part; the cosine kNN vote still reads the weaker pattern.
    let faint = row("contrast", 3);
    assert!(faint.linear_drop > 0.0, "{faint:?}");
    assert!(faint.knn_top1.unwrap() >= 0.9, "{faint:?}");
    let knn = (clean.knn_top1.unwrap(), blurred.knn_top1.unwrap());
    assert!(knn.0 > knn.1, "kNN clean {} blurred {}", knn.0, knn.1);
    assert_eq!(blurred.knn_drop, Some(knn.0 - knn.1));

    let lines = table(&rows, "linear probe", |r| {
        Some((r.linear_top1, r.linear_drop))
    });
    assert_eq!(lines.len(), 1 + 7 + 1, "{lines:#?}");
    assert!(
        lines[1].starts_with("clean") && lines[1].contains("100.00"),
        "{}",
        lines[1]
    );
    assert!(
        lines[4].starts_with("gaussian_blur 3 (1.000)"),
        "{}",
        lines[4]
    );
    assert!(lines[4].contains("(-"), "{}", lines[4]);
    assert!(
        lines[8].starts_with("mean of the corrupted sets"),
        "{}",
        lines[8]
    );
}

/// A checkpoint pre-trained on one tiny dataset (A) evaluates, through the
/// registry, on another folder of the same image size (B) given as
/// `--data`: kNN and linear, and robustness, whose file names B and counts
/// B's images (capped by `[eval] test_images`) for the three
/// representations.
#[test]
fn robustness_and_probes_of_a_checkpoint_run_on_another_dataset() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    let (px, labels) = crate::finetune::tests::stripes(8, 1);
    write_idx(&a, "train", 8, &px, &labels);
    let (px, labels) = crate::finetune::tests::stripes(3, 2);
    write_idx(&a, "t10k", 8, &px, &labels);
    // B: the same size, other images (inverted stripes), other counts.
    let (px, labels) = crate::finetune::tests::stripes(12, 3);
    let inverted: Vec<u8> = px.iter().map(|v| 255 - v).collect();
    write_idx(&b, "train", 8, &inverted, &labels);
    let (px, labels) = crate::finetune::tests::stripes(9, 4);
    let inverted: Vec<u8> = px.iter().map(|v| 255 - v).collect();
    write_idx(&b, "t10k", 8, &inverted, &labels);

    let mut cfg = tiny(&a);
    cfg.run.device = DeviceChoice::Cpu;
    cfg.run.batch_size = 8;
    cfg.run.threads = Some(1);
    cfg.trainer.epochs = 1;
    cfg.eval.test_images = Some(20);
    cfg.eval.knn_every_epoch = false;
    cfg.eval.monitor_images = 4;
    let run_dir = t.path().join("run");
    let mut log = |_: &str| {};
    crate::pretrain::pretrain(
        &cfg,
        selfsup_core::run::RunOptions {
            data: None,
            run_dir: run_dir.clone(),
            resume: false,
            observer: &mut selfsup_core::trainer::Silent,
            stop: Default::default(),
            git_commit: None,
            log: &mut log,
            distributed: None,
        },
    )
    .unwrap();
    let ckpt = run_dir.join("checkpoint.safetensors");
    let meta = selfsup_core::checkpoint::read_meta(&ckpt).unwrap();
    assert!(meta.step > 0);
    let evaluate = |protocol: &str, data: Option<&Path>| {
        VisionModality
            .evaluate(&EvalRequest {
                protocol,
                checkpoint: &ckpt,
                config_toml: &meta.config,
                data,
                device: DeviceChoice::Cpu,
            })
            .unwrap()
    };
    for protocol in ["knn", "linear"] {
        let lines = evaluate(protocol, Some(&b));
        assert!(
            lines
                .iter()
                .any(|l| l.contains("test split") && l.ends_with('%')),
            "{protocol}: {lines:?}"
        );
    }

    let lines = evaluate("robustness", Some(&b));
    let b_file = run_dir.join(selfsup_core::eval::result_file_name(
        ROBUSTNESS_FILE,
        Some(&b),
    ));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&b_file).unwrap()).unwrap();
    assert_eq!(json["data"], b.display().to_string());
    // B's 27 test images capped at 20; its bank is drawn from its 36
    // training images (A has 9 and 24).
    assert_eq!(json["test_images"], 20);
    let bank = json["train_images"].as_u64().unwrap();
    assert!((25..=36).contains(&bank), "{bank}");
    assert_eq!(json["image_size"], serde_json::json!([8, 8]));
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3 * 10);
    for (i, name) in REPRESENTATIONS.iter().enumerate() {
        assert_eq!(rows[i]["representation"], *name);
        assert_eq!(rows[i]["corruption"], "clean");
        assert_eq!(rows[i]["linear_drop"], 0.0);
    }
    assert_eq!(json["corruptions"].as_array().unwrap().len(), 9);
    assert_eq!(json["corruptions"][3]["corruption"], "gaussian_blur");
    assert_eq!(json["corruptions"][3]["parameter"], 0.125);
    // Header, the linear table (title, clean, 9 sets, mean), the kNN table, the file.
    assert_eq!(lines.len(), 1 + 12 + 12 + 1, "{lines:#?}");
    assert!(
        lines[1].contains("trained") && lines[1].contains("raw_pixels"),
        "{}",
        lines[1]
    );
    assert!(lines[0].contains("20 test images (8x8"), "{}", lines[0]);

    // Without --data the checkpoint's own dataset (A) is read.
    evaluate("robustness", None);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join(ROBUSTNESS_FILE)).unwrap())
            .unwrap();
    assert_eq!(json["data"], a.display().to_string());
    assert_eq!(json["test_images"], 9);
    // B's table is still there, under its own name.
    assert_ne!(b_file, run_dir.join(ROBUSTNESS_FILE));
    let kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&b_file).unwrap()).unwrap();
    assert_eq!(kept["data"], b.display().to_string());
}
