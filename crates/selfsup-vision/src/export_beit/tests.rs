//! Tests of the timm `Beit` export.
use super::*;
use crate::models::{EncoderConfig, PosEmbedInit, Vit, VitOptions};
use std::path::PathBuf;
use tch::nn::ModuleT;
use tch::Device;

fn spec() -> VitSpec {
    EncoderConfig::VitTiny(VitOptions {
        patch_size: 4,
        image_size: 28,
        embed_dim: Some(64),
        depth: Some(2),
        heads: Some(4),
    })
    .vit_spec()
    .unwrap()
}

/// A ViT with every variable moved away from its init (biases included, so
/// a dropped or misplaced bias would show).
fn trained_vit(vs: &nn::VarStore) -> Vit {
    tch::manual_seed(21);
    let vit = Vit::new(&(vs.root() / "encoder"), spec(), 1, PosEmbedInit::Learned);
    tch::no_grad(|| {
        for (_, mut v) in vs.variables() {
            let noise = Tensor::randn_like(&v) * 0.05;
            let _ = v.f_add_(&noise).unwrap();
        }
    });
    vit
}

#[test]
fn names_are_timm_beits_and_the_key_bias_is_dropped() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _vit = trained_vit(&vs);
    let dict = beit_state_dict(&vs, "encoder").unwrap();
    let names: Vec<&str> = dict.iter().map(|(k, _)| k.as_str()).collect();
    for name in [
        "cls_token",
        "pos_embed",
        "patch_embed.proj.weight",
        "blocks.0.attn.qkv.weight",
        "blocks.0.attn.q_bias",
        "blocks.1.attn.v_bias",
        "blocks.1.attn.proj.bias",
        "blocks.1.mlp.fc2.weight",
        "norm.weight",
    ] {
        assert!(names.contains(&name), "{name}: {names:?}");
    }
    assert!(!names.iter().any(|n| n.ends_with("qkv.bias")));
    // Each of the 2 blocks: one qkv bias out, q and v biases in.
    assert_eq!(dict.len(), vs.variables().len() + 2);
    let bias = &vs.variables()["encoder.blocks.0.attn.qkv.bias"];
    let find = |k: &str| dict.iter().find(|(n, _)| n == k).unwrap().1.shallow_clone();
    assert!(find("blocks.0.attn.q_bias").equal(&bias.narrow(0, 0, 64)));
    assert!(find("blocks.0.attn.v_bias").equal(&bias.narrow(0, 128, 64)));
    assert!(beit_state_dict(&vs, "nope").is_err());
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benchmarks/check_timm_beit_export.py")
}

/// The export's config says how timm builds it; with `SELFSUP_TIMM_PYTHON`
/// (torch, timm, safetensors; `cargo xtask test` sets it, and under
/// `CI=true` its absence is a failure) `benchmarks/check_timm_beit_export.py`
/// loads it strictly into timm's `Beit` and must match selfsup's features,
/// and must FAIL on features off by 1e-3.
#[test]
fn timm_beit_loads_the_export_with_the_same_features() {
    let dir = tempfile::tempdir().unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let vit = trained_vit(&vs);
    let export = dir.path().join("beit");
    export_beit(&vs, "encoder", spec(), &export, &json!({"method": "beit"})).unwrap();
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(export.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["format"], BEIT_EXPORT_FORMAT);
    assert_eq!(cfg["method"], "beit");
    assert_eq!(cfg["timm"]["kwargs"]["in_chans"], 1);
    assert_eq!(cfg["timm"]["kwargs"]["global_pool"], "token");
    assert_eq!(cfg["timm"]["kwargs"]["init_values"], 0.0);
    let loaded = tensor_io::load(&export.join("model.safetensors")).unwrap();
    assert_eq!(loaded.metadata["format"], "pt");
    let xs = Tensor::randn([3, 1, 28, 28], (Kind::Float, Device::Cpu));
    let ys = tch::no_grad(|| vit.forward_t(&xs, false));
    let input = dir.path().join("input.safetensors");
    let expected = dir.path().join("expected.safetensors");
    let off = dir.path().join("off.safetensors");
    tensor_io::save(&input, &[("input".into(), xs)], None).unwrap();
    tensor_io::save(&off, &[("features".into(), &ys + 1e-3)], None).unwrap();
    tensor_io::save(&expected, &[("features".into(), ys)], None).unwrap();
    let python = match std::env::var_os("SELFSUP_TIMM_PYTHON") {
        Some(p) => p,
        None if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("CI: SELFSUP_TIMM_PYTHON must name a Python with torch, timm and safetensors (cargo xtask test sets it)")
        }
        None => {
            eprintln!("SELFSUP_TIMM_PYTHON not set: timm Beit check skipped (Rust side checked)");
            return;
        }
    };
    let run = |reference: &Path| {
        let out = std::process::Command::new(&python)
            .arg(script())
            .arg(&export)
            .arg(&input)
            .arg(reference)
            .output()
            .expect("run SELFSUP_TIMM_PYTHON");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{}", text.trim());
        (out.status.code(), text)
    };
    let (code, text) = run(&expected);
    assert!(code == Some(0) && text.contains("PASS: "), "{text}");
    let (code, text) = run(&off);
    assert!(code == Some(1) && text.contains("FAIL: "), "{text}");
}
