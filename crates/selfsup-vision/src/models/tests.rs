//! Tests of `models` (and helpers the model tests share).
use super::*;
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

/// torchvision 0.26 `resnet18().state_dict()` keys without `fc.*`, in
/// torchvision's order: 120 = 100 parameters and running statistics + 20
/// `num_batches_tracked` (the full state dict has 122 with `fc.weight` and
/// `fc.bias`; 102 is the full count without `num_batches_tracked`).
/// Printed by
/// ```python
/// import torchvision
/// sd = torchvision.models.resnet18().state_dict()
/// keys = [k for k in sd if not k.startswith("fc.")]; print(len(keys), keys)
/// ```
pub(crate) const TORCHVISION_RESNET18_KEYS: [&str; 120] = [
    "conv1.weight",
    "bn1.weight",
    "bn1.bias",
    "bn1.running_mean",
    "bn1.running_var",
    "bn1.num_batches_tracked",
    "layer1.0.conv1.weight",
    "layer1.0.bn1.weight",
    "layer1.0.bn1.bias",
    "layer1.0.bn1.running_mean",
    "layer1.0.bn1.running_var",
    "layer1.0.bn1.num_batches_tracked",
    "layer1.0.conv2.weight",
    "layer1.0.bn2.weight",
    "layer1.0.bn2.bias",
    "layer1.0.bn2.running_mean",
    "layer1.0.bn2.running_var",
    "layer1.0.bn2.num_batches_tracked",
    "layer1.1.conv1.weight",
    "layer1.1.bn1.weight",
    "layer1.1.bn1.bias",
    "layer1.1.bn1.running_mean",
    "layer1.1.bn1.running_var",
    "layer1.1.bn1.num_batches_tracked",
    "layer1.1.conv2.weight",
    "layer1.1.bn2.weight",
    "layer1.1.bn2.bias",
    "layer1.1.bn2.running_mean",
    "layer1.1.bn2.running_var",
    "layer1.1.bn2.num_batches_tracked",
    "layer2.0.conv1.weight",
    "layer2.0.bn1.weight",
    "layer2.0.bn1.bias",
    "layer2.0.bn1.running_mean",
    "layer2.0.bn1.running_var",
    "layer2.0.bn1.num_batches_tracked",
    "layer2.0.conv2.weight",
    "layer2.0.bn2.weight",
    "layer2.0.bn2.bias",
    "layer2.0.bn2.running_mean",
    "layer2.0.bn2.running_var",
    "layer2.0.bn2.num_batches_tracked",
    "layer2.0.downsample.0.weight",
    "layer2.0.downsample.1.weight",
    "layer2.0.downsample.1.bias",
    "layer2.0.downsample.1.running_mean",
    "layer2.0.downsample.1.running_var",
    "layer2.0.downsample.1.num_batches_tracked",
    "layer2.1.conv1.weight",
    "layer2.1.bn1.weight",
    "layer2.1.bn1.bias",
    "layer2.1.bn1.running_mean",
    "layer2.1.bn1.running_var",
    "layer2.1.bn1.num_batches_tracked",
    "layer2.1.conv2.weight",
    "layer2.1.bn2.weight",
    "layer2.1.bn2.bias",
    "layer2.1.bn2.running_mean",
    "layer2.1.bn2.running_var",
    "layer2.1.bn2.num_batches_tracked",
    "layer3.0.conv1.weight",
    "layer3.0.bn1.weight",
    "layer3.0.bn1.bias",
    "layer3.0.bn1.running_mean",
    "layer3.0.bn1.running_var",
    "layer3.0.bn1.num_batches_tracked",
    "layer3.0.conv2.weight",
    "layer3.0.bn2.weight",
    "layer3.0.bn2.bias",
    "layer3.0.bn2.running_mean",
    "layer3.0.bn2.running_var",
    "layer3.0.bn2.num_batches_tracked",
    "layer3.0.downsample.0.weight",
    "layer3.0.downsample.1.weight",
    "layer3.0.downsample.1.bias",
    "layer3.0.downsample.1.running_mean",
    "layer3.0.downsample.1.running_var",
    "layer3.0.downsample.1.num_batches_tracked",
    "layer3.1.conv1.weight",
    "layer3.1.bn1.weight",
    "layer3.1.bn1.bias",
    "layer3.1.bn1.running_mean",
    "layer3.1.bn1.running_var",
    "layer3.1.bn1.num_batches_tracked",
    "layer3.1.conv2.weight",
    "layer3.1.bn2.weight",
    "layer3.1.bn2.bias",
    "layer3.1.bn2.running_mean",
    "layer3.1.bn2.running_var",
    "layer3.1.bn2.num_batches_tracked",
    "layer4.0.conv1.weight",
    "layer4.0.bn1.weight",
    "layer4.0.bn1.bias",
    "layer4.0.bn1.running_mean",
    "layer4.0.bn1.running_var",
    "layer4.0.bn1.num_batches_tracked",
    "layer4.0.conv2.weight",
    "layer4.0.bn2.weight",
    "layer4.0.bn2.bias",
    "layer4.0.bn2.running_mean",
    "layer4.0.bn2.running_var",
    "layer4.0.bn2.num_batches_tracked",
    "layer4.0.downsample.0.weight",
    "layer4.0.downsample.1.weight",
    "layer4.0.downsample.1.bias",
    "layer4.0.downsample.1.running_mean",
    "layer4.0.downsample.1.running_var",
    "layer4.0.downsample.1.num_batches_tracked",
    "layer4.1.conv1.weight",
    "layer4.1.bn1.weight",
    "layer4.1.bn1.bias",
    "layer4.1.bn1.running_mean",
    "layer4.1.bn1.running_var",
    "layer4.1.bn1.num_batches_tracked",
    "layer4.1.conv2.weight",
    "layer4.1.bn2.weight",
    "layer4.1.bn2.bias",
    "layer4.1.bn2.running_mean",
    "layer4.1.bn2.running_var",
    "layer4.1.bn2.num_batches_tracked",
];

/// Variable names and shapes under `prefix.`, prefix stripped.
pub(crate) fn names_and_shapes(vs: &nn::VarStore, prefix: &str) -> BTreeMap<String, Vec<i64>> {
    vs.variables()
        .into_iter()
        .filter_map(|(n, t)| {
            n.strip_prefix(&format!("{prefix}."))
                .map(|s| (s.to_string(), t.size()))
        })
        .collect()
}

fn forward_shape(cfg: &EncoderConfig, in_channels: i64, hw: i64, batch: i64) -> Vec<i64> {
    let vs = nn::VarStore::new(Device::Cpu);
    let enc = build_encoder(&(vs.root() / "encoder"), cfg, in_channels);
    assert_eq!(enc.out_dim(), cfg.out_dim());
    let xs = Tensor::randn([batch, in_channels, hw, hw], (Kind::Float, Device::Cpu));
    let train = enc.forward_t(&xs, true).size();
    let eval = enc.forward_t(&xs, false).size();
    assert_eq!(train, eval);
    eval
}

#[test]
fn small_cnn_shapes_for_grey_and_colour() {
    let cfg = EncoderConfig::default();
    for (c, hw) in [(1, 28), (3, 28), (1, 32), (3, 32)] {
        assert_eq!(forward_shape(&cfg, c, hw, 3), vec![3, 256], "{c}x{hw}x{hw}");
    }
    let narrow = EncoderConfig::SmallCnn {
        channels: vec![8, 16],
    };
    assert_eq!(forward_shape(&narrow, 1, 28, 2), vec![2, 16]);
    // The smallest input it takes: 8 pixels for 4 blocks, 2 for 2.
    assert_eq!(cfg.min_input_size(), 8);
    assert_eq!(forward_shape(&cfg, 1, 8, 2), vec![2, 256]);
    assert_eq!(narrow.min_input_size(), 2);
    assert_eq!(forward_shape(&narrow, 1, 2, 2), vec![2, 16]);
}

#[test]
fn resnet18_shapes_for_both_stems() {
    for stem in [Stem::Imagenet, Stem::Cifar] {
        let cfg = EncoderConfig::Resnet18 { stem };
        for (c, hw) in [(1, 28), (3, 28), (1, 32), (3, 32)] {
            assert_eq!(
                forward_shape(&cfg, c, hw, 2),
                vec![2, 512],
                "{stem:?} {c}x{hw}x{hw}"
            );
        }
    }
}

#[test]
fn resnet50_shapes_tiny() {
    assert_eq!(
        forward_shape(&EncoderConfig::Resnet50 { stem: Stem::Cifar }, 3, 32, 2),
        vec![2, 2048]
    );
    assert_eq!(
        forward_shape(
            &EncoderConfig::Resnet50 {
                stem: Stem::Imagenet
            },
            1,
            28,
            2
        ),
        vec![2, 2048]
    );
}

#[test]
fn resnet18_names_are_torchvision_state_dict_keys() {
    let expected_vars: Vec<String> = TORCHVISION_RESNET18_KEYS
        .iter()
        .filter(|k| !k.ends_with("num_batches_tracked"))
        .map(|k| k.to_string())
        .collect();
    assert_eq!(expected_vars.len(), 100);
    for stem in [Stem::Imagenet, Stem::Cifar] {
        let vs = nn::VarStore::new(Device::Cpu);
        let _enc = build_encoder(
            &(vs.root() / "encoder"),
            &EncoderConfig::Resnet18 { stem },
            3,
        );
        let got: Vec<String> = names_and_shapes(&vs, "encoder").into_keys().collect();
        let mut want = expected_vars.clone();
        want.sort();
        assert_eq!(got, want);
    }
}

#[test]
fn resnet18_shapes_match_torchvision() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _enc = build_encoder(
        &vs.root(),
        &EncoderConfig::Resnet18 {
            stem: Stem::Imagenet,
        },
        3,
    );
    let shapes = names_and_shapes_root(&vs);
    assert_eq!(shapes["conv1.weight"], vec![64, 3, 7, 7]);
    assert_eq!(shapes["layer2.0.conv1.weight"], vec![128, 64, 3, 3]);
    assert_eq!(shapes["layer2.0.downsample.0.weight"], vec![128, 64, 1, 1]);
    assert_eq!(shapes["layer4.1.bn2.running_var"], vec![512]);
    let vs = nn::VarStore::new(Device::Cpu);
    let _enc = build_encoder(
        &vs.root(),
        &EncoderConfig::Resnet18 { stem: Stem::Cifar },
        1,
    );
    assert_eq!(
        names_and_shapes_root(&vs)["conv1.weight"],
        vec![64, 1, 3, 3]
    );
}

fn names_and_shapes_root(vs: &nn::VarStore) -> BTreeMap<String, Vec<i64>> {
    vs.variables()
        .into_iter()
        .map(|(n, t)| (n, t.size()))
        .collect()
}

#[test]
fn resnet50_names_and_shapes_match_torchvision() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _enc = build_encoder(
        &vs.root(),
        &EncoderConfig::Resnet50 {
            stem: Stem::Imagenet,
        },
        3,
    );
    let shapes = names_and_shapes_root(&vs);
    // torchvision: 318 state-dict keys without fc, 53 of them num_batches_tracked.
    assert_eq!(shapes.len(), 318 - 53);
    assert_eq!(shapes["layer1.0.conv1.weight"], vec![64, 64, 1, 1]);
    assert_eq!(shapes["layer1.0.conv3.weight"], vec![256, 64, 1, 1]);
    assert_eq!(shapes["layer1.0.downsample.0.weight"], vec![256, 64, 1, 1]);
    assert_eq!(shapes["layer2.0.conv2.weight"], vec![128, 128, 3, 3]);
    assert_eq!(shapes["layer3.5.bn3.running_mean"], vec![1024]);
    assert_eq!(shapes["layer4.2.conv3.weight"], vec![2048, 512, 1, 1]);
    assert!(!shapes.contains_key("layer1.1.downsample.0.weight"));
    assert!(!shapes.keys().any(|k| k.starts_with("fc.")));
}

#[test]
fn init_matches_torchvision() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _enc = build_encoder(
        &vs.root(),
        &EncoderConfig::Resnet18 {
            stem: Stem::Imagenet,
        },
        3,
    );
    let vars = vs.variables();
    assert!(vars["bn1.weight"].equal(&Tensor::ones([64], (Kind::Float, Device::Cpu))));
    assert!(vars["layer3.1.bn2.bias"].equal(&Tensor::zeros([256], (Kind::Float, Device::Cpu))));
    // Kaiming normal, fan_out: std = sqrt(2 / (out * k * k)).
    let w = &vars["layer4.0.conv2.weight"];
    let std = w.std(true).double_value(&[]);
    let want = (2.0 / (512.0 * 9.0f64)).sqrt();
    assert!((std / want - 1.0).abs() < 0.02, "std {std} vs {want}");
    assert!(w.mean(Kind::Float).double_value(&[]).abs() < 0.01 * want * 10.0);
}

#[test]
fn batch_norm_momentum_is_pytorch_default() {
    let vs = nn::VarStore::new(Device::Cpu);
    let bn = batch_norm(vs.root() / "bn", 2);
    let xs = Tensor::from_slice(&[1f32, 3., 5., 7.]).reshape([2, 2, 1, 1]);
    let _ = nn::ModuleT::forward_t(&bn, &xs, true);
    // Batch means are [3, 5]; running_mean = 0.9 * 0 + 0.1 * mean.
    let rm = Vec::<f32>::try_from(bn.running_mean()).unwrap();
    assert!(
        (rm[0] - 0.3).abs() < 1e-6 && (rm[1] - 0.5).abs() < 1e-6,
        "{rm:?}"
    );
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Wrapper {
    #[serde(default)]
    model: EncoderConfig,
}

#[test]
fn toml_tables_parse_and_round_trip() {
    let w: Wrapper = toml::from_str("[model]\narch = \"resnet18\"\nstem = \"cifar\"\n").unwrap();
    assert_eq!(w.model, EncoderConfig::Resnet18 { stem: Stem::Cifar });
    let w: Wrapper = toml::from_str("[model]\narch = \"resnet50\"\n").unwrap();
    assert_eq!(
        w.model,
        EncoderConfig::Resnet50 {
            stem: Stem::Imagenet
        }
    );
    let w: Wrapper = toml::from_str("[model]\narch = \"small_cnn\"\nchannels = [8, 16]\n").unwrap();
    assert_eq!(
        w.model,
        EncoderConfig::SmallCnn {
            channels: vec![8, 16]
        }
    );
    let w: Wrapper = toml::from_str("").unwrap();
    assert_eq!(w.model, EncoderConfig::default());
    for cfg in [
        EncoderConfig::default(),
        EncoderConfig::Resnet18 { stem: Stem::Cifar },
        EncoderConfig::Resnet50 {
            stem: Stem::Imagenet,
        },
    ] {
        let text = toml::to_string_pretty(&Wrapper { model: cfg.clone() }).unwrap();
        assert!(
            text.contains(&format!("arch = \"{}\"", cfg.arch())),
            "{text}"
        );
        assert_eq!(
            toml::from_str::<Wrapper>(&text).unwrap().model,
            cfg,
            "{text}"
        );
    }
}

/// timm 1.0.31 `VisionTransformer` state-dict keys, in timm's order, of a
/// depth-2 ViT (every depth has the same 4 + 12 * depth + 2 keys; timm's
/// `vit_tiny_patch16_224` has 150). Printed by
/// ```python
/// import timm
/// m = timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=28, patch_size=4,
///                       in_chans=1, num_classes=0, embed_dim=64, depth=2, num_heads=4)
/// sd = m.state_dict(); print(len(sd), [(k, list(v.shape)) for k, v in sd.items()])
/// ```
/// (shapes: `cls_token` [1, 1, 64], `pos_embed` [1, 50, 64],
/// `patch_embed.proj.weight` [64, 1, 4, 4], `blocks.0.attn.qkv.weight`
/// [192, 64], `blocks.0.mlp.fc1.weight` [256, 64], `blocks.0.mlp.fc2.weight` [64, 256]).
pub(crate) const TIMM_VIT_DEPTH2_KEYS: [&str; 30] = [
    "cls_token",
    "pos_embed",
    "patch_embed.proj.weight",
    "patch_embed.proj.bias",
    "blocks.0.norm1.weight",
    "blocks.0.norm1.bias",
    "blocks.0.attn.qkv.weight",
    "blocks.0.attn.qkv.bias",
    "blocks.0.attn.proj.weight",
    "blocks.0.attn.proj.bias",
    "blocks.0.norm2.weight",
    "blocks.0.norm2.bias",
    "blocks.0.mlp.fc1.weight",
    "blocks.0.mlp.fc1.bias",
    "blocks.0.mlp.fc2.weight",
    "blocks.0.mlp.fc2.bias",
    "blocks.1.norm1.weight",
    "blocks.1.norm1.bias",
    "blocks.1.attn.qkv.weight",
    "blocks.1.attn.qkv.bias",
    "blocks.1.attn.proj.weight",
    "blocks.1.attn.proj.bias",
    "blocks.1.norm2.weight",
    "blocks.1.norm2.bias",
    "blocks.1.mlp.fc1.weight",
    "blocks.1.mlp.fc1.bias",
    "blocks.1.mlp.fc2.weight",
    "blocks.1.mlp.fc2.bias",
    "norm.weight",
    "norm.bias",
];

/// The `[model]` table of the ViT whose keys are [`TIMM_VIT_DEPTH2_KEYS`].
pub(crate) fn timm_depth2_vit() -> EncoderConfig {
    EncoderConfig::VitTiny(VitOptions {
        patch_size: 4,
        image_size: 28,
        embed_dim: Some(64),
        depth: Some(2),
        heads: Some(4),
    })
}

#[test]
fn vit_names_and_shapes_are_timms() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _enc = build_encoder(&(vs.root() / "encoder"), &timm_depth2_vit(), 1);
    let shapes = names_and_shapes(&vs, "encoder");
    let mut want: Vec<&str> = TIMM_VIT_DEPTH2_KEYS.to_vec();
    want.sort();
    assert_eq!(shapes.keys().map(String::as_str).collect::<Vec<_>>(), want);
    assert_eq!(shapes["cls_token"], vec![1, 1, 64]);
    assert_eq!(shapes["pos_embed"], vec![1, 50, 64]);
    assert_eq!(shapes["patch_embed.proj.weight"], vec![64, 1, 4, 4]);
    assert_eq!(shapes["blocks.1.attn.qkv.weight"], vec![192, 64]);
    assert_eq!(shapes["blocks.1.mlp.fc1.weight"], vec![256, 64]);
    assert_eq!(shapes["blocks.0.mlp.fc2.weight"], vec![64, 256]);
    // The presets: 150 keys for ViT-Ti/16 at 224, like timm.
    let vs = nn::VarStore::new(Device::Cpu);
    let tiny = EncoderConfig::VitTiny(VitOptions::default());
    let enc = build_encoder(&vs.root(), &tiny, 3);
    assert_eq!(enc.out_dim(), 192);
    let shapes = names_and_shapes_root(&vs);
    assert_eq!(shapes.len(), 150);
    assert_eq!(shapes["pos_embed"], vec![1, 197, 192]);
    assert_eq!(shapes["blocks.11.attn.proj.weight"], vec![192, 192]);
    let small = EncoderConfig::VitSmall(VitOptions {
        patch_size: 4,
        image_size: 32,
        depth: Some(1),
        ..Default::default()
    });
    assert_eq!(small.out_dim(), 384);
    assert_eq!(small.vit_spec().unwrap().heads, 6);
    assert_eq!(forward_shape(&small, 3, 32, 2), vec![2, 384]);
    // Other input sizes resample pos_embed.
    assert_eq!(forward_shape(&timm_depth2_vit(), 1, 16, 2), vec![2, 64]);
}

#[test]
fn vit_tables_parse_validate_and_round_trip() {
    let w: Wrapper = toml::from_str(
        "[model]\narch = \"vit_tiny\"\npatch_size = 4\nimage_size = 28\ndepth = 2\n",
    )
    .unwrap();
    let want = EncoderConfig::VitTiny(VitOptions {
        patch_size: 4,
        image_size: 28,
        depth: Some(2),
        ..Default::default()
    });
    assert_eq!(w.model, want);
    let text = toml::to_string_pretty(&w).unwrap();
    assert!(!text.contains("embed_dim"), "{text}");
    assert_eq!(toml::from_str::<Wrapper>(&text).unwrap().model, want);
    let w: Wrapper = toml::from_str("[model]\narch = \"vit_small\"\n").unwrap();
    assert_eq!(w.model, EncoderConfig::VitSmall(VitOptions::default()));
    assert_eq!(w.model.vit_spec().unwrap().grid(), 14);
    let err = toml::from_str::<Wrapper>("[model]\narch = \"vit_tiny\"\nstem = \"cifar\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("stem"), "{err}");
    let bad = EncoderConfig::VitTiny(VitOptions {
        patch_size: 5,
        image_size: 28,
        ..Default::default()
    });
    let err = bad.validate().unwrap_err().to_string();
    assert!(
        err.contains("image_size (28)") && err.contains("patch_size (5)"),
        "{err}"
    );
    let bad = EncoderConfig::VitSmall(VitOptions {
        heads: Some(5),
        ..Default::default()
    });
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("heads (5)"));
}

#[test]
fn toml_mistakes_are_named() {
    let err = toml::from_str::<Wrapper>("[model]\narch = \"resnet18\"\nchannels = [8]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("channels"), "{err}");
    let err = toml::from_str::<Wrapper>("[model]\narch = \"resnet34\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("resnet34"), "{err}");
    let err = toml::from_str::<Wrapper>("[model]\narch = \"resnet18\"\nstem = \"tiny\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("tiny"), "{err}");
    let bad = EncoderConfig::SmallCnn { channels: vec![] };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("at least one block"));
    let bad = EncoderConfig::SmallCnn {
        channels: vec![8, 0],
    };
    assert!(bad.validate().is_err());
}
