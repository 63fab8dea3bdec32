//! Tests of `export`.
use super::*;
use crate::models::tests::{timm_depth2_vit, TIMM_VIT_DEPTH2_KEYS, TORCHVISION_RESNET18_KEYS};
use crate::models::{build_encoder, Stem, VitOptions};
use selfsup_core::encoder::Encoder;
use std::collections::BTreeSet;
use tch::{Device, Kind};

/// An encoder under `encoder.` next to a `head.` variable, with trained-looking
/// batch-norm statistics and affine parameters (so a bad export would show).
fn trained(
    cfg: &EncoderConfig,
    in_channels: i64,
    hw: i64,
    seed: i64,
) -> (nn::VarStore, Box<dyn Encoder>) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let enc = build_encoder(&(vs.root() / "encoder"), cfg, in_channels);
    let _head = vs
        .root()
        .sub("head")
        .var("weight", &[4, enc.out_dim()], nn::Init::Const(0.5));
    tch::no_grad(|| {
        for _ in 0..12 {
            let xs = Tensor::randn([4, in_channels, hw, hw], (Kind::Float, Device::Cpu));
            let _ = enc.forward_t(&xs, true);
        }
        // Batch-norm affine parameters are the only 1-D weights and biases.
        for (name, mut v) in vs.variables() {
            if v.dim() == 1 && name.ends_with(".weight") {
                v.f_copy_(&(Tensor::rand_like(&v) * 0.5 + 0.75)).unwrap();
            } else if v.dim() == 1 && name.ends_with(".bias") {
                v.f_copy_(&(Tensor::rand_like(&v) * 0.2 - 0.1)).unwrap();
            }
        }
    });
    (vs, enc)
}

fn features(enc: &dyn Encoder, xs: &Tensor) -> Tensor {
    tch::no_grad(|| enc.forward_t(xs, false))
}

#[test]
fn resnet18_export_has_exactly_torchvisions_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (vs, _) = trained(&EncoderConfig::Resnet18 { stem: Stem::Cifar }, 1, 28, 1);
    let extra = json!({"method": "simclr", "in_channels": 1, "model": {"arch": "resnet18", "stem": "cifar"},
                       "normalize": {"mean": [0.286], "std": [0.353]}});
    let report = export_encoder(&vs, "encoder", dir.path(), &extra).unwrap();
    assert_eq!(report.tensors, 120);
    assert_eq!(
        report.bytes,
        std::fs::metadata(dir.path().join(WEIGHTS_FILE))
            .unwrap()
            .len()
    );
    let loaded = tensor_io::load(&report.weights).unwrap();
    let got: BTreeSet<&str> = loaded.tensors.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = TORCHVISION_RESNET18_KEYS.iter().copied().collect();
    assert_eq!(got, want);
    assert_eq!(loaded.metadata["format"], "pt");
    let nbt = &loaded.tensors["layer2.0.downsample.1.num_batches_tracked"];
    assert_eq!((nbt.kind(), nbt.size()), (Kind::Int64, vec![]));
    assert_eq!(loaded.tensors["conv1.weight"].size(), vec![64, 1, 3, 3]);
    assert!(loaded.tensors["layer1.0.bn1.running_mean"]
        .equal(&vs.variables()["encoder.layer1.0.bn1.running_mean"]));

    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&report.config).unwrap()).unwrap();
    assert_eq!(cfg["arch"], "resnet18");
    assert_eq!(cfg["stem"], "cifar");
    assert_eq!(cfg["in_channels"], 1);
    assert_eq!(cfg["out_dim"], 512);
    assert_eq!(cfg["method"], "simclr");
    assert_eq!(cfg["normalize"]["std"][0], 0.353);
    assert_eq!(
        cfg["torchvision"]["replace"]["maxpool"],
        "torch.nn.Identity()"
    );
    let conv1 = cfg["torchvision"]["replace"]["conv1"].as_str().unwrap();
    assert!(
        conv1.starts_with("torch.nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1"),
        "{conv1}"
    );
    assert!(!dir.path().join("config.json.tmp").exists());
}

#[test]
fn imagenet_stem_on_colour_images_needs_only_fc_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (vs, _) = trained(
        &EncoderConfig::Resnet18 {
            stem: Stem::Imagenet,
        },
        3,
        32,
        2,
    );
    let report = export_encoder(&vs, "encoder", dir.path(), &Value::Null).unwrap();
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&report.config).unwrap()).unwrap();
    let replace = cfg["torchvision"]["replace"].as_object().unwrap();
    assert_eq!(replace.keys().collect::<Vec<_>>(), vec!["fc"]);
    assert_eq!(cfg["stem"], "imagenet");
}

#[test]
fn export_then_load_gives_identical_features() {
    let cases = [
        (EncoderConfig::default(), 1, 28),
        (EncoderConfig::Resnet18 { stem: Stem::Cifar }, 3, 32),
        (
            EncoderConfig::Resnet18 {
                stem: Stem::Imagenet,
            },
            1,
            28,
        ),
        (timm_depth2_vit(), 1, 28),
    ];
    for (cfg, c, hw) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (vs, enc) = trained(&cfg, c, hw, 3);
        export_encoder(&vs, "encoder", dir.path(), &json!({"in_channels": c})).unwrap();
        tch::manual_seed(99);
        let mut fresh_vs = nn::VarStore::new(Device::Cpu);
        let fresh = build_encoder(&(fresh_vs.root() / "backbone"), &cfg, c);
        let xs = Tensor::randn([3, c, hw, hw], (Kind::Float, Device::Cpu));
        assert!(!features(fresh.as_ref(), &xs).equal(&features(enc.as_ref(), &xs)));
        load_encoder_weights(&mut fresh_vs, "backbone", &dir.path().join(WEIGHTS_FILE)).unwrap();
        assert!(
            features(fresh.as_ref(), &xs).equal(&features(enc.as_ref(), &xs)),
            "{cfg:?}"
        );
    }
}

#[test]
fn loading_resnet18_into_small_cnn_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (vs, _) = trained(&EncoderConfig::Resnet18 { stem: Stem::Cifar }, 1, 28, 4);
    export_encoder(&vs, "encoder", dir.path(), &Value::Null).unwrap();
    let mut small_vs = nn::VarStore::new(Device::Cpu);
    let small = build_encoder(&(small_vs.root() / "encoder"), &EncoderConfig::default(), 1);
    let before = features(
        small.as_ref(),
        &Tensor::ones([1, 1, 28, 28], (Kind::Float, Device::Cpu)),
    );
    let err = load_encoder_weights(&mut small_vs, "encoder", &dir.path().join(WEIGHTS_FILE))
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(
        err.contains("resnet18 (cifar stem, 1 input channel)"),
        "{err}"
    );
    assert!(
        err.contains("small_cnn (channels [32, 64, 128, 256], 1 input channel)"),
        "{err}"
    );
    assert!(
        err.contains("20 missing from the file: blocks.0.bn.bias"),
        "{err}"
    );
    assert!(
        err.contains("100 unexpected in the file: bn1.bias"),
        "{err}"
    );
    assert!(err.contains("and 90 more"), "{err}");
    assert!(!err.contains("num_batches_tracked"), "{err}");
    let after = features(
        small.as_ref(),
        &Tensor::ones([1, 1, 28, 28], (Kind::Float, Device::Cpu)),
    );
    assert!(before.equal(&after), "a failed load must change nothing");
}

#[test]
fn shape_mismatches_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let (vs, _) = trained(&EncoderConfig::Resnet18 { stem: Stem::Cifar }, 1, 28, 5);
    export_encoder(&vs, "encoder", dir.path(), &Value::Null).unwrap();
    let mut vs3 = nn::VarStore::new(Device::Cpu);
    let _enc = build_encoder(
        &(vs3.root() / "encoder"),
        &EncoderConfig::Resnet18 {
            stem: Stem::Imagenet,
        },
        3,
    );
    let err = load_encoder_weights(&mut vs3, "encoder", &dir.path().join(WEIGHTS_FILE))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("1 shape mismatches: conv1.weight (file [64, 1, 3, 3], model [64, 3, 7, 7])"),
        "{err}"
    );
    assert!(!err.contains("missing"), "{err}");
}

#[test]
fn export_refuses_contradictions_and_empty_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let (vs, _) = trained(&EncoderConfig::default(), 3, 32, 6);
    let err = export_encoder(&vs, "encoder", dir.path(), &json!({"in_channels": 1}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("in_channels"), "{err}");
    let err = export_encoder(
        &vs,
        "encoder",
        dir.path(),
        &json!({"model": {"arch": "resnet18"}}),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("model"), "{err}");
    let err = export_encoder(&vs, "student", dir.path(), &Value::Null)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no variables under prefix `student`"), "{err}");
    let ok = export_encoder(
        &vs,
        "encoder",
        dir.path(),
        &json!({"model": {"arch": "small_cnn"}}),
    )
    .unwrap();
    assert_eq!(ok.tensors, 4 * 6);
    assert_eq!(ok.encoder.out_dim(), 256);
}

fn check_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benchmarks/check_torchvision_export.py")
}

/// Writes an export plus an input batch and selfsup's eval-mode features for
/// it into `dir`; with `SELFSUP_PYTHON` set (a Python with torch, torchvision
/// and safetensors), runs `benchmarks/check_torchvision_export.py` on them
/// and requires PASS.
fn check_against_torchvision(cfg: &EncoderConfig, in_channels: i64, hw: i64, batch: i64) {
    let dir = tempfile::tempdir().unwrap();
    let (vs, enc) = trained(cfg, in_channels, hw, 7);
    let export_dir = dir.path().join("export");
    let report = export_encoder(
        &vs,
        "encoder",
        &export_dir,
        &json!({"in_channels": in_channels}),
    )
    .unwrap();
    let xs = Tensor::randn([batch, in_channels, hw, hw], (Kind::Float, Device::Cpu));
    let ys = features(enc.as_ref(), &xs);
    assert_eq!(ys.size(), vec![batch, report.encoder.out_dim()]);
    let input = dir.path().join("input.safetensors");
    let expected = dir.path().join("expected.safetensors");
    let off = dir.path().join("expected_off.safetensors");
    tensor_io::save(&input, &[("input".into(), xs)], None).unwrap();
    tensor_io::save(&off, &[("features".into(), &ys + 1e-3)], None).unwrap();
    tensor_io::save(&expected, &[("features".into(), ys)], None).unwrap();
    let Some(python) = std::env::var_os("SELFSUP_PYTHON") else {
        eprintln!(
            "SELFSUP_PYTHON not set: torchvision check of {cfg:?} skipped (Rust side checked)"
        );
        return;
    };
    let run = |expected: &Path| {
        let out = std::process::Command::new(&python)
            .arg(check_script())
            .args([&export_dir, &input, &expected.to_path_buf()])
            .output()
            .expect("run SELFSUP_PYTHON");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{text}");
        (out.status.code(), text)
    };
    let (code, text) = run(&expected);
    assert!(
        code == Some(0) && text.contains("PASS: "),
        "{cfg:?}: {text}"
    );
    // The script must also notice features that are off by 1e-3.
    let (code, text) = run(&off);
    assert!(
        code == Some(1) && text.contains("FAIL: "),
        "{cfg:?}: {text}"
    );
}

#[test]
fn torchvision_resnet18_cifar_grey_loads_the_export() {
    check_against_torchvision(&EncoderConfig::Resnet18 { stem: Stem::Cifar }, 1, 28, 4);
}

#[test]
fn torchvision_resnet18_imagenet_colour_loads_the_export() {
    check_against_torchvision(
        &EncoderConfig::Resnet18 {
            stem: Stem::Imagenet,
        },
        3,
        32,
        4,
    );
}

#[test]
fn torchvision_resnet50_cifar_loads_the_export() {
    check_against_torchvision(&EncoderConfig::Resnet50 { stem: Stem::Cifar }, 3, 32, 2);
}

#[test]
fn pytorch_small_cnn_loads_the_export() {
    check_against_torchvision(&EncoderConfig::default(), 1, 28, 4);
}

#[test]
fn the_check_script_is_where_the_tests_look() {
    assert!(check_script().is_file(), "{}", check_script().display());
    assert!(timm_script().is_file(), "{}", timm_script().display());
}

#[test]
fn vit_export_has_exactly_timms_keys_and_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = timm_depth2_vit();
    let (vs, _) = trained(&cfg, 1, 28, 11);
    let extra = json!({"method": "mae", "in_channels": 1, "model": cfg, "image_size": 28});
    let report = export_encoder(&vs, "encoder", dir.path(), &extra).unwrap();
    assert_eq!(report.tensors, 30);
    assert_eq!(report.encoder.config, cfg);
    let loaded = tensor_io::load(&report.weights).unwrap();
    let got: BTreeSet<&str> = loaded.tensors.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = TIMM_VIT_DEPTH2_KEYS.iter().copied().collect();
    assert_eq!(got, want);
    let cfg_json: Value =
        serde_json::from_str(&std::fs::read_to_string(&report.config).unwrap()).unwrap();
    assert_eq!(cfg_json["arch"], "vit_tiny");
    assert_eq!(cfg_json["heads"], 4);
    assert_eq!(cfg_json["embed_dim"], 64);
    assert_eq!(cfg_json["depth"], 2);
    assert_eq!(cfg_json["patch_size"], 4);
    assert_eq!(cfg_json["image_size"], 28);
    assert_eq!(cfg_json["out_dim"], 64);
    let python = cfg_json["timm"]["python"][1].as_str().unwrap();
    assert!(
        python.contains("img_size=28, patch_size=4, in_chans=1, num_classes=0, embed_dim=64, depth=2, num_heads=4"),
        "{python}"
    );
    // Without the caller's table the head count is timm's guess (64 / 64).
    let report = export_encoder(&vs, "encoder", dir.path(), &Value::Null).unwrap();
    assert_eq!(report.encoder.config.vit_spec().unwrap().heads, 1);
    assert_eq!(
        report.encoder.to_string(),
        "vit_tiny (patch 4, image 28, embed_dim 64, depth 2, heads 1, 1 input channel)"
    );
    // A table of another depth is refused.
    let mut deeper = cfg.vit_spec().unwrap();
    deeper.depth = 3;
    let err = export_encoder(
        &vs,
        "encoder",
        dir.path(),
        &json!({"model": crate::export::vit_config(deeper)}),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("disagrees"), "{err}");
}

#[test]
fn vit_presets_are_recognised() {
    for cfg in [
        EncoderConfig::VitTiny(VitOptions {
            patch_size: 4,
            image_size: 32,
            depth: Some(1),
            ..Default::default()
        }),
        EncoderConfig::VitSmall(VitOptions {
            patch_size: 8,
            image_size: 32,
            depth: Some(1),
            ..Default::default()
        }),
    ] {
        let vs = nn::VarStore::new(Device::Cpu);
        let _enc = build_encoder(&(vs.root() / "encoder"), &cfg, 3);
        let shapes = shapes_of(&encoder_variables(&vs, "encoder"));
        let got = identify_encoder(&shapes).unwrap();
        assert_eq!(got.config, cfg);
        assert_eq!(got.in_channels, 3);
    }
}

fn timm_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benchmarks/check_timm_export.py")
}

/// Exports a depth-2 ViT and writes selfsup's eval-mode features for
/// 28x28 inputs and for 16x16 ones (pos_embed resampled); with
/// `SELFSUP_TIMM_PYTHON` set (a Python with torch, timm and safetensors),
/// runs `benchmarks/check_timm_export.py` on both and requires PASS, and
/// FAIL for features off by 1e-3.
#[test]
fn timm_loads_the_vit_export() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = timm_depth2_vit();
    let (vs, enc) = trained(&cfg, 1, 28, 12);
    let export_dir = dir.path().join("export");
    export_encoder(
        &vs,
        "encoder",
        &export_dir,
        &json!({"in_channels": 1, "model": cfg}),
    )
    .unwrap();
    let mut cases = Vec::new();
    for hw in [28, 16] {
        let xs = Tensor::randn([3, 1, hw, hw], (Kind::Float, Device::Cpu));
        let ys = features(enc.as_ref(), &xs);
        assert_eq!(ys.size(), vec![3, 64]);
        let input = dir.path().join(format!("input{hw}.safetensors"));
        let expected = dir.path().join(format!("expected{hw}.safetensors"));
        let off = dir.path().join(format!("off{hw}.safetensors"));
        tensor_io::save(&input, &[("input".into(), xs)], None).unwrap();
        tensor_io::save(&off, &[("features".into(), &ys + 1e-3)], None).unwrap();
        tensor_io::save(&expected, &[("features".into(), ys)], None).unwrap();
        cases.push((input, expected, off));
    }
    let Some(python) = std::env::var_os("SELFSUP_TIMM_PYTHON") else {
        eprintln!("SELFSUP_TIMM_PYTHON not set: timm check skipped (Rust side checked)");
        return;
    };
    let run = |input: &Path, expected: &Path| {
        let out = std::process::Command::new(&python)
            .arg(timm_script())
            .args([&export_dir, &input.to_path_buf(), &expected.to_path_buf()])
            .output()
            .expect("run SELFSUP_TIMM_PYTHON");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{text}");
        (out.status.code(), text)
    };
    for (input, expected, off) in &cases {
        let (code, text) = run(input, expected);
        assert!(code == Some(0) && text.contains("PASS: "), "{text}");
        let (code, text) = run(input, off);
        assert!(code == Some(1) && text.contains("FAIL: "), "{text}");
    }
}
