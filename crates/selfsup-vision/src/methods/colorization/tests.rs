//! Tests of `colorization`.
use super::*;
use selfsup_core::distributed::SingleProcess;
use tch::nn::OptimizerConfig;
use tch::Device;

fn small(cfg: &ColorizationConfig) -> Colorization {
    let enc = EncoderConfig::SmallCnn {
        channels: vec![8, 16],
    };
    let norm = Normalize::for_channels(3);
    Colorization::new(Device::Cpu, &enc, 3, &norm, cfg).unwrap()
}

fn tiny() -> ColorizationConfig {
    ColorizationConfig {
        out_size: 4,
        decoder_channels: 16,
        ..Default::default()
    }
}

/// Fixed pixels through `rgb_to_lab` against numpy, computed with
/// ```python
/// import numpy as np
/// lin = np.where(px > 0.04045, ((px + 0.055) / 1.055) ** 2.4, px / 12.92)
/// M = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
///               [0.019334, 0.119193, 0.950227]])
/// xyz = lin @ M.T / np.array([0.95047, 1.0, 1.08883])
/// f = np.where(xyz > (6/29)**3, np.cbrt(xyz), xyz / (3*(6/29)**2) + 4/29)
/// L, a, b = 116*f[:,1]-16, 500*(f[:,0]-f[:,1]), 200*(f[:,1]-f[:,2])
/// ```
/// (pure red is the textbook (53.24, 80.09, 67.20)).
#[test]
fn lab_matches_numpy_on_fixed_pixels() {
    let cases: [([f32; 3], [f64; 3]); 9] = [
        ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
        ([1.0, 1.0, 1.0], [100.0, -0.0025, 0.0047]),
        ([1.0, 0.0, 0.0], [53.2406, 80.0923, 67.2028]),
        ([0.0, 1.0, 0.0], [87.7351, -86.183, 83.1797]),
        ([0.0, 0.0, 1.0], [32.2957, 79.1856, -107.8573]),
        ([0.5, 0.5, 0.5], [53.389, -0.0015, 0.0028]),
        ([0.2, 0.4, 0.6], [42.008, -0.154, -32.8429]),
        ([0.9, 0.1, 0.3], [49.4856, 73.2156, 27.0912]),
        ([0.01, 0.02, 0.03], [1.3001, -0.3124, -1.1998]),
    ];
    let px: Vec<f32> = cases.iter().flat_map(|(p, _)| *p).collect();
    // [1, 3, 1, 9]: the pixels side by side.
    let rgb = Tensor::from_slice(&px)
        .view([1, 9, 3])
        .permute([0, 2, 1])
        .unsqueeze(2);
    let lab = rgb_to_lab(&rgb);
    for (i, (p, want)) in cases.iter().enumerate() {
        for (c, w) in want.iter().enumerate() {
            let got = lab.double_value(&[0, c as i64, 0, i as i64]);
            assert!((got - w).abs() < 2e-3, "{p:?} channel {c}: {got} vs {w}");
        }
    }
}

/// Under bfloat16 autocast (what `mixed_precision` does on CUDA) the
/// lightness input and the ab classes are the float32 ones. Measured
/// with the colour conversion left to autocast: a* and b* off by up to
/// ~1 unit, and a share of the pixels in a neighbouring bin.
#[test]
fn autocast_does_not_change_inputs_or_targets() {
    use selfsup_core::autocast::{with_autocast, AutocastDevice, AutocastDtype};
    let cfg = ColorizationConfig {
        out_size: 16,
        ..tiny()
    };
    let m = small(&cfg);
    let x = Tensor::rand([4, 3, 16, 16], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let bf16 = |f: &dyn Fn() -> Tensor| {
        with_autocast(AutocastDevice::Cpu, AutocastDtype::BFloat16, f).unwrap()
    };
    let (input, targets) = m.inputs_and_targets(&x).unwrap();
    let under = bf16(&|| m.inputs_and_targets(&x).unwrap().0);
    let under_targets = bf16(&|| m.inputs_and_targets(&x).unwrap().1);
    assert_eq!(under.kind(), Kind::Float);
    let gap = (&input - &under).abs().max().double_value(&[]);
    assert!(gap < 1e-6, "{gap}");
    assert!(targets.equal(&under_targets));
    // The conversion left to autocast moves a* / b* by more than 0.1.
    let rgb = m.to_rgb(&x);
    let naive = bf16(&|| rgb_to_lab_f32(&rgb));
    let exact = rgb_to_lab(&rgb);
    let off = (naive.to_kind(Kind::Float) - exact)
        .abs()
        .max()
        .double_value(&[]);
    assert!(off > 0.1, "{off}");
}

#[test]
fn ab_bins_are_the_grid_cells() {
    let cfg = ColorizationConfig::default();
    assert_eq!(cfg.bins_per_axis(), 23);
    let ab = Tensor::from_slice(&[
        -110.0f32, -0.5, 0.0, 104.9, 500.0, -110.0, 0.001, 4.9, 15.0, -500.0,
    ])
    .view([1, 2, 1, 5]);
    let c = Vec::<i64>::try_from(ab_classes(&ab, 10.0, 23).flatten(0, -1)).unwrap();
    // (a_bin, b_bin): (0, 0), (11, 11) twice (grey is the centre bin),
    // (21, 12) and (22, 0) (clamped at both ends); 15 is a tie, rounded to even.
    assert_eq!(
        c,
        vec![0, 11 * 23 + 11, 11 * 23 + 11, 21 * 23 + 12, 22 * 23]
    );
}

#[test]
fn grey_data_is_refused_with_a_reason() {
    let norm = Normalize::for_channels(1);
    let err = Colorization::new(
        Device::Cpu,
        &EncoderConfig::default(),
        1,
        &norm,
        &ColorizationConfig::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("Fashion-MNIST") && err.contains("RGB"),
        "{err}"
    );
    assert!(err.contains("cifar10"), "{err}");
}

#[test]
fn encoder_sees_lightness_only() {
    let m = small(&tiny());
    let names: Vec<String> = m.vs.variables().into_keys().collect();
    let conv0 = &m.vs.variables()["encoder.blocks.0.conv.weight"];
    assert_eq!(conv0.size()[1], 1, "{names:?}");
    // Same lightness, different colours: same input, different targets.
    let norm = Normalize::for_channels(3);
    let grey = Tensor::full([1, 3, 8, 8], 0.5, (Kind::Float, Device::Cpu));
    let to_norm = |rgb: &Tensor| {
        let mean = Tensor::from_slice(&norm.mean).view([1, 3, 1, 1]);
        let std = Tensor::from_slice(&norm.std).view([1, 3, 1, 1]);
        (rgb - mean) / std
    };
    let (input, t_grey) = m.inputs_and_targets(&to_norm(&grey)).unwrap();
    assert_eq!(input.size(), vec![1, 1, 8, 8]);
    let l = (input.double_value(&[0, 0, 0, 0]) * 0.5 + 0.5) * 100.0;
    assert!((l - 53.389).abs() < 1e-2, "{l}");
    assert_eq!(t_grey.size(), vec![1, 4, 4]);
    assert_eq!(t_grey.int64_value(&[0, 0, 0]), 11 * 23 + 11);
    let red = Tensor::from_slice(&[1.0f32, 0.0, 0.0])
        .view([1, 3, 1, 1])
        .expand([1, 3, 8, 8], false);
    let (_, t_red) = m.inputs_and_targets(&to_norm(&red)).unwrap();
    // a = 80.09, b = 67.20: centres 80 and 70, bins 19 and 18.
    assert_eq!(t_red.int64_value(&[0, 3, 3]), 19 * 23 + 18);
    // embed converts RGB itself, or takes the lightness input as is.
    let a = tch::no_grad(|| m.embed(&to_norm(&grey)));
    let b = tch::no_grad(|| m.embed(&input));
    assert!(a.allclose(&b, 1e-5, 1e-6, false));
}

#[test]
fn loss_is_rebalanced_cross_entropy() {
    let mut m = small(&tiny());
    let q = m.classes();
    // Histogram: class 0 three times, class 5 once.
    m.count(&Tensor::from_slice(&[0i64, 0, 0, 5]).view([1, 2, 2]));
    let logits = Tensor::randn([1, q, 1, 2], (Kind::Float, Device::Cpu));
    let targets = Tensor::from_slice(&[0i64, 5]).view([1, 1, 2]);
    let loss = m.loss(&logits, &targets).double_value(&[]);
    // By hand: p0 = 3/4, p5 = 1/4, w = 1 / (0.5 p + 0.5 / Q), normalised by E_p[w].
    let qf = q as f64;
    let w = |p: f64| 1.0 / (0.5 * p + 0.5 / qf);
    let norm = 0.75 * w(0.75) + 0.25 * w(0.25);
    let col = |j: i64| Vec::<f32>::try_from(logits.select(3, j).contiguous().view([-1])).unwrap();
    let ce = |v: Vec<f32>, k: usize| {
        v.iter().map(|&x| f64::from(x).exp()).sum::<f64>().ln() - f64::from(v[k])
    };
    let want = (w(0.75) / norm * ce(col(0), 0) + w(0.25) / norm * ce(col(1), 5)) / 2.0;
    assert!((loss - want).abs() < 1e-4, "{loss} vs {want}");
    // λ = 1: plain cross-entropy.
    let plain = small(&ColorizationConfig {
        rebalance: 1.0,
        ..tiny()
    });
    let got = plain.loss(&logits, &targets).double_value(&[]);
    let want = (ce(col(0), 0) + ce(col(1), 5)) / 2.0;
    assert!((got - want).abs() < 1e-4, "{got} vs {want}");
}

#[test]
fn a_few_steps_lower_the_loss() {
    // Colour follows structure: the top half is red, the bottom half blue,
    // with brightness noise.
    let mut m = small(&tiny());
    let n = 16;
    let top = Tensor::from_slice(&[0.9f32, 0.1, 0.1]).view([1, 3, 1, 1]);
    let bottom = Tensor::from_slice(&[0.1f32, 0.2, 0.9]).view([1, 3, 1, 1]);
    let rgb = Tensor::cat(
        &[
            top.expand([n, 3, 8, 16], false),
            bottom.expand([n, 3, 8, 16], false),
        ],
        2,
    ) * (Tensor::rand([n, 1, 16, 16], (Kind::Float, Device::Cpu)) * 0.3 + 0.7);
    let norm = Normalize::for_channels(3);
    let x = (rgb - Tensor::from_slice(&norm.mean).view([1, 3, 1, 1]))
        / Tensor::from_slice(&norm.std).view([1, 3, 1, 1]);
    let batch = Batch { views: vec![x] };
    let comm = SingleProcess;
    let ctx = StepCtx {
        step: 0,
        total_steps: 1,
        epoch: 0,
        steps_per_epoch: 1,
        comm: &comm,
    };
    let mut opt = nn::Adam::default().build(m.var_store(), 1e-2).unwrap();
    let mut losses = Vec::new();
    // 60 steps: the initialisation comes from libtorch's global generator,
    // which parallel tests share; 30 steps fell to 0.64x in one CI run.
    for _ in 0..60 {
        let out = m.step(&batch, &ctx).unwrap();
        opt.backward_step(&out.loss);
        losses.push(out.loss.double_value(&[]));
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last < 0.5 * first, "{losses:?}");
    // The histogram counted every target pixel: 60 steps x 16 images x 4 x 4.
    assert_eq!(
        m.counts.sum(Kind::Float).double_value(&[]),
        (60 * 16 * 16) as f64
    );
    let z = Tensor::zeros([1, 3, 8, 8], (Kind::Float, Device::Cpu));
    let two = Batch {
        views: vec![z.shallow_clone(), z],
    };
    assert!(m
        .step(&two, &ctx)
        .unwrap_err()
        .to_string()
        .contains("views = 1"));
}

#[test]
fn bad_configs_are_refused() {
    for bad in [
        ColorizationConfig {
            out_size: 3,
            ..tiny()
        },
        ColorizationConfig {
            bin_size: 7.0,
            ..tiny()
        },
        ColorizationConfig {
            bin_size: 0.0,
            ..tiny()
        },
        ColorizationConfig {
            rebalance: 0.0,
            ..tiny()
        },
        ColorizationConfig {
            decoder_channels: 1,
            ..tiny()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
    let err = toml::from_str::<ColorizationConfig>("space = \"yuv\"\n").unwrap_err();
    assert!(err.to_string().contains("space"), "{err}");
}

/// With the skip, the decoder reads each cell's lightness: the same
/// features with the lightness changed in one cell change that cell's
/// logits only (eval mode: batch norm per channel, 1x1 convolutions);
/// without it the lightness is not read at all.
#[test]
fn lightness_skip_reads_each_cells_lightness() {
    let cfg = ColorizationConfig {
        lightness_skip: true,
        ..tiny()
    };
    let m = small(&cfg);
    let vars = m.vs.variables();
    // 16 decoder channels: 8 after the upsampling, + mean / min / max.
    assert_eq!(
        vars["decoder.mix.conv.weight"].size(),
        vec![8, 8 + LIGHTNESS_STATS, 1, 1]
    );
    let feats = Tensor::randn([2, m.encoder.out_dim()], (Kind::Float, Device::Cpu));
    let input = Tensor::rand([2, 1, 16, 16], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    // out_size 4 on a 16 px input: cell (1, 2) is rows 4..8, columns 8..12.
    let changed = input.copy();
    let _ = changed.narrow(2, 4, 4).narrow(3, 8, 4).fill_(-1.0);
    let (a, b) = tch::no_grad(|| {
        (
            m.decoder.forward_t(&feats, &input, false),
            m.decoder.forward_t(&feats, &changed, false),
        )
    });
    assert_eq!(a.size(), vec![2, m.classes(), 4, 4]);
    let diff = (&a - &b).abs().amax([1], false);
    for i in 0..4 {
        for j in 0..4 {
            let d = diff.double_value(&[0, i, j]);
            if (i, j) == (1, 2) {
                assert!(d > 1e-4, "cell ({i}, {j}) did not change: {d}");
            } else {
                assert!(d < 1e-6, "cell ({i}, {j}) changed by {d}");
            }
        }
    }
    // Without the skip: no `mix` variables, and the lightness is not read.
    let plain = small(&tiny());
    assert!(!plain.vs.variables().keys().any(|k| k.contains("mix")));
    let feats = Tensor::randn([2, plain.encoder.out_dim()], (Kind::Float, Device::Cpu));
    let (a, b) = tch::no_grad(|| {
        (
            plain.decoder.forward_t(&feats, &input, false),
            plain.decoder.forward_t(&feats, &changed, false),
        )
    });
    assert!(a.equal(&b));
    let parsed = toml::from_str::<ColorizationConfig>("lightness_skip = true\n").unwrap();
    assert!(parsed.lightness_skip);
}
