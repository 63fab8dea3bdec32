//! Tests of `vit`.
use super::*;
use tch::Device;

fn tiny_spec() -> VitSpec {
    VitSpec {
        patch_size: 4,
        image_size: 28,
        embed_dim: 32,
        depth: 2,
        heads: 4,
    }
}

#[test]
fn token_api_shapes() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let vit = Vit::new(&vs.root(), tiny_spec(), 1, PosEmbedInit::Learned);
    let xs = Tensor::randn([3, 1, 28, 28], (Kind::Float, Device::Cpu));
    assert_eq!(vit.patch_tokens(&xs).size(), vec![3, 49, 32]);
    assert_eq!(vit.forward_features(&xs).size(), vec![3, 50, 32]);
    assert_eq!(vit.forward_t(&xs, true).size(), vec![3, 32]);
    assert_eq!(vit.mean_patch_features(&xs).size(), vec![3, 32]);
    let keep = Tensor::from_slice(&[0i64, 5, 48, 1, 2, 3, 7, 7, 7]).reshape([3, 3]);
    let kept = gather_tokens(&vit.patch_tokens(&xs), &keep);
    assert_eq!(kept.size(), vec![3, 3, 32]);
    assert!(kept
        .get(0)
        .get(1)
        .equal(&vit.patch_tokens(&xs).get(0).get(5)));
    let out = vit.final_norm(&vit.run_blocks(&vit.prepend_cls(&kept)));
    assert_eq!(out.size(), vec![3, 4, 32]);
    // A 16x16 crop has a 4x4 grid: pos_embed is resampled.
    let small = Tensor::randn([2, 1, 16, 16], (Kind::Float, Device::Cpu));
    assert_eq!(vit.forward_features(&small).size(), vec![2, 17, 32]);
}

#[test]
fn class_token_output_depends_on_every_patch() {
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let vit = Vit::new(&vs.root(), tiny_spec(), 1, PosEmbedInit::Learned);
    let xs = Tensor::randn([1, 1, 28, 28], (Kind::Float, Device::Cpu));
    let ys = xs.copy();
    let _ = ys.narrow(2, 24, 4).narrow(3, 24, 4).fill_(3.0);
    let a = vit.forward_t(&xs, false);
    let b = vit.forward_t(&ys, false);
    assert!(!a.allclose(&b, 1e-6, 1e-6, false));
}

#[test]
fn fixed_sincos_pos_embed_does_not_train() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _vit = Vit::new(&vs.root(), tiny_spec(), 3, PosEmbedInit::FixedSinCos);
    let vars = vs.variables();
    let pos = &vars["pos_embed"];
    assert!(!pos.requires_grad());
    assert!(vars["cls_token"].requires_grad());
    assert!(pos
        .get(0)
        .get(0)
        .equal(&Tensor::zeros([32], (Kind::Float, Device::Cpu))));
    assert!(pos
        .get(0)
        .narrow(0, 1, 49)
        .allclose(&sincos_2d(32, 7, 7, false), 0.0, 0.0, false));
}

/// MAE's `get_2d_sincos_pos_embed(8, 3)` (util/pos_embed.py, numpy),
/// rows 0, 1 and 5 (grid position (row 1, column 2)):
/// ```python
/// import numpy as np
/// def one(d, pos):
///     omega = 1. / 10000 ** (np.arange(d // 2, dtype=float) / (d / 2.))
///     out = np.einsum('m,d->md', pos.reshape(-1), omega)
///     return np.concatenate([np.sin(out), np.cos(out)], axis=1)
/// g = np.meshgrid(np.arange(3, dtype=np.float32), np.arange(3, dtype=np.float32))
/// g = np.stack(g, axis=0).reshape([2, 1, 3, 3])
/// e = np.concatenate([one(4, g[0]), one(4, g[1])], axis=1)
/// print(e[[0, 1, 5]].round(6).tolist())
/// ```
#[test]
fn sincos_matches_mae() {
    let want = [
        [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0],
        [0.841471, 0.01, 0.540302, 0.99995, 0.0, 0.0, 1.0, 1.0],
        [
            0.909297, 0.019999, -0.416147, 0.9998, 0.841471, 0.01, 0.540302, 0.99995,
        ],
    ];
    let got = sincos_2d(8, 3, 3, false);
    for (row, w) in [0i64, 1, 5].iter().zip(want) {
        let g: Vec<f32> = Vec::try_from(got.get(*row)).unwrap();
        for (a, b) in g.iter().zip(w) {
            assert!((*a as f64 - b).abs() < 1e-5, "row {row}: {g:?} vs {w:?}");
        }
    }
    assert_eq!(sincos_2d(8, 3, 3, true).size(), vec![10, 8]);
}

/// Resampling a 2x2 grid of position embeddings to 3x3 and to 1x1, as timm's
/// `resample_abs_pos_embed` (bicubic, antialias=True):
/// ```python
/// import torch
/// from timm.layers import resample_abs_pos_embed
/// pos = torch.arange(10, dtype=torch.float32).reshape(1, 5, 2) ** 2 / 10  # cls + 2x2, D=2
/// for s in ([3, 3], [1, 1]):
///     print(resample_abs_pos_embed(pos, s, num_prefix_tokens=1)[0, 1:].flatten().round(decimals=5).tolist())
/// ```
#[test]
fn pos_embed_interpolation_matches_timm() {
    let vs = nn::VarStore::new(Device::Cpu);
    let spec = VitSpec {
        patch_size: 2,
        image_size: 4,
        embed_dim: 2,
        depth: 1,
        heads: 1,
    };
    let vit = Vit::new(&vs.root(), spec, 1, PosEmbedInit::Learned);
    tch::no_grad(|| {
        let pos = Tensor::arange(10, (Kind::Float, Device::Cpu))
            .reshape([1, 5, 2])
            .square()
            / 10.0;
        vit.pos_embed.shallow_clone().copy_(&pos);
    });
    let want_3x3 = [
        0.11745, 0.5385, 0.73684, 1.38421, 1.35623, 2.22992, 1.86842, 2.74211, 3.0, 4.1, 4.13158,
        5.4579, 3.61939, 4.94571, 5.26316, 6.81579, 6.90693, 8.68587,
    ];
    let got: Vec<f32> = Vec::try_from(vit.patch_pos_embed(3, 3).flatten(0, -1)).unwrap();
    for (a, b) in got.iter().zip(want_3x3) {
        assert!((*a as f64 - b).abs() < 1e-4, "{got:?}");
    }
    let got: Vec<f32> = Vec::try_from(vit.patch_pos_embed(1, 1).flatten(0, -1)).unwrap();
    assert_eq!(got.len(), 2);
    let want_1x1 = [3.0, 4.1];
    for (a, b) in got.iter().zip(want_1x1) {
        assert!((*a as f64 - b).abs() < 1e-4, "{got:?}");
    }
    // The native grid is returned untouched.
    assert!(vit
        .patch_pos_embed(2, 2)
        .equal(&vit.pos_embed.narrow(1, 1, 4)));
}

#[test]
fn validation_names_the_key() {
    let mut s = tiny_spec();
    s.image_size = 30;
    let e = s.validate().unwrap_err().to_string();
    assert!(
        e.contains("model.image_size (30)") && e.contains("patch_size (4)"),
        "{e}"
    );
    let mut s = tiny_spec();
    s.heads = 3;
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("model.heads (3)"), "{e}");
    let mut s = tiny_spec();
    s.depth = 0;
    assert!(s
        .validate()
        .unwrap_err()
        .to_string()
        .contains("model.depth"));
}
