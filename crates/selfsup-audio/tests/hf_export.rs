//! The export in transformers' layout: the Rust side always (every tensor
//! named as `Wav2Vec2ForPreTraining` names it, reloads to the same
//! outputs), and transformers itself when `SELFSUP_HF_PYTHON` names a
//! Python with torch, transformers and safetensors: both
//! `Wav2Vec2ForPreTraining` and `Wav2Vec2Model` load the folder with no
//! missing keys (and no unexpected ones for the pre-training model), and
//! every hidden state equals selfsup's within 1e-4.
use selfsup_audio::export::{export_wav2vec2, load_export};
use selfsup_audio::methods::{Wav2Vec2Method, Wav2Vec2MethodConfig};
use selfsup_audio::model::{FeatExtractNorm, Wav2Vec2Config};
use selfsup_core::method::Method;
use selfsup_core::tensor_io;
use tch::{Device, Kind, Tensor};

fn small(feat_extract_norm: FeatExtractNorm) -> Wav2Vec2Config {
    Wav2Vec2Config {
        feat_extract_norm,
        // the layer-norm encoder as wav2vec 2.0 LARGE-LV60 has it
        conv_bias: feat_extract_norm == FeatExtractNorm::Layer,
        conv_dim: vec![32, 32, 32, 32, 32, 32, 48],
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 64,
        num_conv_pos_embeddings: 16,
        num_conv_pos_embedding_groups: 4,
        num_codevectors_per_group: 16,
        codevector_dim: 32,
        proj_codevector_dim: 24,
        ..Wav2Vec2Config::default()
    }
}

const CHECK: &str = r#"
import sys, torch
from safetensors.torch import load_file
from transformers import Wav2Vec2ForPreTraining, Wav2Vec2Model
export, reference = sys.argv[1], sys.argv[2]
ref = load_file(reference)
model, info = Wav2Vec2ForPreTraining.from_pretrained(export, output_loading_info=True)
problems = {k: v for k, v in info.items() if v}
if problems:
    print(f"FAIL: Wav2Vec2ForPreTraining loading info not clean: {problems}"); sys.exit(1)
base, info = Wav2Vec2Model.from_pretrained(export, output_loading_info=True)
if info["missing_keys"] or info["mismatched_keys"]:
    print(f"FAIL: Wav2Vec2Model: {info}"); sys.exit(1)
model.eval(); base.eval()
with torch.no_grad():
    hs = model.wav2vec2(ref["wave"], output_hidden_states=True).hidden_states
    hb = base(ref["wave"], output_hidden_states=True).hidden_states
got = torch.stack(hs)
diff = (got - ref["hidden"]).abs().max().item()
diff_base = (torch.stack(hb) - ref["hidden"]).abs().max().item()
if max(diff, diff_base) > 1e-4:
    print(f"FAIL: hidden states differ by {diff:.3g} / {diff_base:.3g}"); sys.exit(1)
print(f"PASS: loaded with no missing/unexpected keys, max |hidden diff| {diff:.2e}")
"#;

#[test]
fn the_export_loads_in_transformers_with_the_same_hidden_states() {
    check_export(FeatExtractNorm::Group);
}

/// `feat_extract_norm = "layer"`: a LayerNorm after every conv, under
/// transformers' `conv_layers.{i}.layer_norm` names.
#[test]
fn the_layer_norm_encoder_exports_as_transformers_names_it() {
    check_export(FeatExtractNorm::Layer);
}

fn check_export(norm: FeatExtractNorm) {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export");
    tch::manual_seed(11);
    let a = Wav2Vec2Method::new(
        &small(norm),
        &Wav2Vec2MethodConfig::default(),
        0,
        Device::Cpu,
    );
    export_wav2vec2(&a, &export).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ] {
        assert!(export.join(f).is_file(), "{f}");
    }
    // Every variable is exported under its transformers name, nothing else.
    let saved = tensor_io::load(&export.join("model.safetensors")).unwrap();
    let vars = a.var_store().variables();
    assert_eq!(saved.tensors.len(), vars.len());
    assert!(saved
        .tensors
        .contains_key("wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original1"));
    assert!(saved.tensors.contains_key("wav2vec2.masked_spec_embed"));
    let last_norm = "wav2vec2.feature_extractor.conv_layers.6.layer_norm.weight";
    let last_bias = "wav2vec2.feature_extractor.conv_layers.6.conv.bias";
    for key in [last_norm, last_bias] {
        assert_eq!(
            saved.tensors.contains_key(key),
            norm == FeatExtractNorm::Layer,
            "{key}"
        );
    }

    let wave = (Tensor::arange(2 * 6000, (Kind::Float, Device::Cpu)) * 0.013)
        .sin()
        .view([2, 6000]);
    let lengths = Tensor::from_slice(&[6000i64, 6000]);
    let hidden = tch::no_grad(|| {
        Tensor::stack(
            &a.model
                .forward_t(&wave, &lengths, None, false)
                .hidden_states,
            0,
        )
    });
    tch::manual_seed(12);
    let mut b = Wav2Vec2Method::new(
        &small(norm),
        &Wav2Vec2MethodConfig::default(),
        0,
        Device::Cpu,
    );
    load_export(&mut b, &export).unwrap();
    let again = tch::no_grad(|| {
        Tensor::stack(
            &b.model
                .forward_t(&wave, &lengths, None, false)
                .hidden_states,
            0,
        )
    });
    assert!(hidden.allclose(&again, 1e-6, 1e-6, false));

    let Some(python) = std::env::var_os("SELFSUP_HF_PYTHON") else {
        eprintln!("SELFSUP_HF_PYTHON not set: transformers check skipped (Rust side checked)");
        return;
    };
    let reference = dir.path().join("reference.safetensors");
    tensor_io::save(
        &reference,
        &[("wave".to_string(), wave), ("hidden".to_string(), hidden)],
        None,
    )
    .unwrap();
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(CHECK)
        .arg(&export)
        .arg(&reference)
        .output()
        .expect("run SELFSUP_HF_PYTHON");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{}", text.trim());
    assert!(out.status.success() && text.contains("PASS"), "{text}");
}
