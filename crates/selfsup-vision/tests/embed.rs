//! `VisionEmbedder`: encoders exported by the workflow's own `export` embed
//! a folder of images (any size: centre square, resized) to the features the
//! method computes in process; bad folders, images and exports are one-line
//! errors naming them.
use image::{ImageBuffer, Rgb};
use selfsup_vision::data::image_folder::decode_square;
use selfsup_vision::data::Normalize;
use selfsup_vision::embed::VisionEmbedder;
use selfsup_vision::methods::{ColorizationConfig, MaeConfig, MethodConfig, SimClrConfig};
use selfsup_vision::models::{EncoderConfig, VitOptions};
use selfsup_vision::pretrain::{build_method, export, VisionRunConfig};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

const SIDE: usize = 16;

/// A folder of three images (16x16, 24x20, 9x31) and a text file.
fn images(dir: &Path) -> PathBuf {
    let d = dir.join("images");
    std::fs::create_dir_all(&d).unwrap();
    for (i, (w, h)) in [(16u32, 16u32), (24, 20), (9, 31)].into_iter().enumerate() {
        let img = ImageBuffer::from_fn(w, h, |x, y| {
            Rgb([
                ((x * 37 + y * 11 + i as u32 * 50) % 256) as u8,
                ((x * 5 + y * 23) % 256) as u8,
                ((x * y + 90 * i as u32) % 256) as u8,
            ])
        });
        img.save(d.join(format!("img{i}.png"))).unwrap();
    }
    std::fs::write(d.join("readme.txt"), "not an image").unwrap();
    d
}

/// What the method's own `embed` gives for the images, normalised as its
/// training data (`data_norm`, RGB).
fn in_process(
    method: &dyn selfsup_vision::pretrain::VisionMethod,
    dir: &Path,
    channels: usize,
    data_norm: &Normalize,
) -> Tensor {
    let mut xs = Vec::new();
    for i in 0..3 {
        let p = dir.join(format!("img{i}.png"));
        let b = decode_square(&p, &std::fs::read(&p).unwrap(), SIDE, channels).unwrap();
        let t = Tensor::from_slice(&b)
            .view([SIDE as i64, SIDE as i64, channels as i64])
            .permute([2, 0, 1])
            .to_kind(Kind::Float)
            / 255.0;
        xs.push(t);
    }
    let x = Tensor::stack(&xs, 0);
    let c = channels as i64;
    let mean = Tensor::from_slice(&data_norm.mean).view([1, c, 1, 1]);
    let std = Tensor::from_slice(&data_norm.std).view([1, c, 1, 1]);
    tch::no_grad(|| method.embed(&((x - mean) / std)))
}

fn check(cfg: VisionRunConfig, channels: i64, want_dim: i64) {
    let dir = tempfile::tempdir().unwrap();
    let imgs = images(dir.path());
    tch::manual_seed(1);
    let method = build_method(&cfg, Device::Cpu, channels).unwrap();
    let out = dir.path().join("export");
    export(
        &cfg,
        method.as_ref(),
        channels,
        &out,
        serde_json::json!({"image_size": SIDE}),
    )
    .unwrap();
    let emb = VisionEmbedder::load_export(&out, None, Device::Cpu).unwrap();
    assert_eq!(emb.image_size, SIDE);
    let e = emb.embed_folder(&imgs, 2).unwrap();
    assert_eq!(e.ids, vec!["img0.png", "img1.png", "img2.png"]);
    assert_eq!(e.skipped, vec![imgs.join("readme.txt")]);
    assert_eq!(e.embeddings.size(), vec![3, want_dim]);
    let want = in_process(
        method.as_ref(),
        &imgs,
        channels as usize,
        &Normalize::for_channels(channels as usize),
    );
    let diff = (&e.embeddings - &want).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "{:?}: {diff}", cfg.method);
    assert!(want.abs().sum(Kind::Float).double_value(&[]) > 0.0);
}

fn small_cnn(method: MethodConfig) -> VisionRunConfig {
    VisionRunConfig {
        model: EncoderConfig::SmallCnn {
            channels: vec![8, 16],
        },
        method,
        ..Default::default()
    }
}

#[test]
fn simclr_cnn_exports_embed_as_in_process_in_grey_and_colour() {
    check(
        small_cnn(MethodConfig::Simclr(SimClrConfig::default())),
        3,
        16,
    );
    check(
        small_cnn(MethodConfig::Simclr(SimClrConfig::default())),
        1,
        16,
    );
}

#[test]
fn a_colorization_export_embeds_the_lightness_channel() {
    check(
        small_cnn(MethodConfig::Colorization(ColorizationConfig::default())),
        3,
        16,
    );
}

#[test]
fn an_mae_vit_embeds_its_mean_patch_token() {
    let cfg = VisionRunConfig {
        model: EncoderConfig::VitTiny(VitOptions {
            patch_size: 4,
            image_size: 16,
            embed_dim: Some(24),
            depth: Some(1),
            heads: Some(2),
        }),
        method: MethodConfig::Mae(MaeConfig {
            decoder_embed_dim: 16,
            decoder_depth: 1,
            decoder_heads: 2,
            ..MaeConfig::default()
        }),
        ..Default::default()
    };
    check(cfg, 3, 24);
}

#[test]
fn bad_folders_images_and_exports_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_cnn(MethodConfig::Simclr(SimClrConfig::default()));
    let method = build_method(&cfg, Device::Cpu, 3).unwrap();
    let out = dir.path().join("export");
    // `selfsup export` of a checkpoint records no image size.
    export(&cfg, method.as_ref(), 3, &out, serde_json::json!({})).unwrap();
    let one_line = |e: selfsup_core::Error| {
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        s
    };
    let e = one_line(
        VisionEmbedder::load_export(&out, None, Device::Cpu)
            .err()
            .unwrap(),
    );
    assert!(
        e.contains("config.json") && e.contains("--image-size"),
        "{e}"
    );
    let emb = VisionEmbedder::load_export(&out, Some(12), Device::Cpu).unwrap();
    assert_eq!(emb.image_size, 12);

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = one_line(emb.embed_folder(&empty, 4).err().unwrap());
    assert!(e.contains("empty") && e.contains("no png"), "{e}");
    std::fs::write(empty.join("broken.jpg"), b"\xff\xd8\xff not a jpeg").unwrap();
    let e = one_line(emb.embed_folder(&empty, 4).err().unwrap());
    assert!(e.contains("broken.jpg"), "{e}");

    let e = one_line(
        VisionEmbedder::load_export(&empty, None, Device::Cpu)
            .err()
            .unwrap(),
    );
    assert!(e.contains("empty/config.json"), "{e}");
    std::fs::write(empty.join("config.json"), r#"{"model_type": "bert"}"#).unwrap();
    let e = one_line(
        VisionEmbedder::load_export(&empty, None, Device::Cpu)
            .err()
            .unwrap(),
    );
    assert!(
        e.contains("config.json") && e.contains("not a vision encoder export"),
        "{e}"
    );
    // A tensor missing from the weights.
    let w = out.join("model.safetensors");
    let mut t = selfsup_core::tensor_io::load(&w).unwrap().tensors;
    let _ = t.remove("blocks.1.bn.bias").unwrap();
    let t: Vec<(String, Tensor)> = t.into_iter().collect();
    selfsup_core::tensor_io::save(&w, &t, None).unwrap();
    let e = one_line(
        VisionEmbedder::load_export(&out, Some(12), Device::Cpu)
            .err()
            .unwrap(),
    );
    assert!(
        e.contains("model.safetensors") && e.contains("blocks.1.bn.bias"),
        "{e}"
    );
}
