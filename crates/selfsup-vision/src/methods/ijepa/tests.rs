//! Tests of `ijepa`.
use super::*;
use crate::methods::mae::tests::tiny_vit;
use crate::methods::test_util::{structured_images, train_steps};
use std::collections::BTreeSet;

fn is_rectangle(block: &[i64], cols: i64) -> Option<(i64, i64)> {
    let rows: BTreeSet<i64> = block.iter().map(|i| i / cols).collect();
    let cs: BTreeSet<i64> = block.iter().map(|i| i % cols).collect();
    let contiguous = |s: &BTreeSet<i64>| {
        s.iter().next_back().unwrap() - s.iter().next().unwrap() + 1 == s.len() as i64
    };
    (contiguous(&rows) && contiguous(&cs) && rows.len() * cs.len() == block.len())
        .then_some((rows.len() as i64, cs.len() as i64))
}

#[test]
fn blocks_are_inside_disjoint_and_non_empty() {
    for (rows, cols) in [(7, 7), (14, 14), (4, 4), (2, 3)] {
        let sampler = BlockMaskSampler::new(BlockMaskConfig::default(), rows, cols).unwrap();
        for seed in 0..50u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let masks = sampler.sample(6, &mut rng);
            assert_eq!(masks.targets.len(), 4);
            let kc = masks.context[0].len();
            let kt = masks.targets[0][0].len();
            assert!(kc >= 1 && kt >= 1, "{rows}x{cols} seed {seed}: {masks:?}");
            let mut shape = None;
            for b in 0..6 {
                let ctx = &masks.context[b];
                assert_eq!(ctx.len(), kc, "every context has the batch's count");
                assert!(ctx.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
                for m in 0..4 {
                    let t = &masks.targets[m][b];
                    assert_eq!(t.len(), kt);
                    assert!(t.iter().all(|&i| (0..rows * cols).contains(&i)));
                    let s = is_rectangle(t, cols).expect("a target is a block");
                    assert_eq!(*shape.get_or_insert(s), s, "one target size per batch");
                    assert!(
                        ctx.iter().all(|i| !t.contains(i)),
                        "{rows}x{cols} seed {seed}: context {ctx:?} meets target {t:?}"
                    );
                }
            }
            let tensor = masks.targets_tensor(Device::Cpu);
            assert_eq!(tensor.size(), vec![24, kt as i64]);
            // Row m * B + b is target m of sample b.
            let row: Vec<i64> = Vec::try_from(tensor.get(2 * 6 + 5)).unwrap();
            assert_eq!(row, masks.targets[2][5]);
        }
    }
}

#[test]
fn block_sizes_follow_the_paper_on_a_14x14_grid() {
    let sampler = BlockMaskSampler::new(BlockMaskConfig::default(), 14, 14).unwrap();
    let mut ctx_sizes = Vec::new();
    for seed in 0..200u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let masks = sampler.sample(1, &mut rng);
        let kt = masks.targets[0][0].len();
        // 15-20% of 196 patches, up to rounding of the sides.
        assert!((20..=48).contains(&kt), "target of {kt} patches");
        ctx_sizes.push(masks.context[0].len());
    }
    let mean = ctx_sizes.iter().sum::<usize>() as f64 / ctx_sizes.len() as f64;
    assert!(mean > 60.0 && mean < 190.0, "mean context {mean}");
    // Same seed, same blocks.
    let a = sampler.sample(3, &mut ChaCha8Rng::seed_from_u64(9));
    let b = sampler.sample(3, &mut ChaCha8Rng::seed_from_u64(9));
    assert_eq!(a, b);
}

/// Reference numbers from PyTorch 2.11.0:
/// ```python
/// import torch, torch.nn.functional as F
/// z = (torch.arange(24, dtype=torch.float32) * 0.37).sin().reshape(2, 3, 4) * 2
/// h = (torch.arange(24, dtype=torch.float32) * 0.11).cos().reshape(2, 3, 4)
/// print(F.mse_loss(z, h).item(), F.smooth_l1_loss(z, h).item())
/// ```
#[test]
fn losses_match_pytorch() {
    let z = (Tensor::arange(24, (Kind::Float, Device::Cpu)) * 0.37)
        .sin()
        .reshape([2, 3, 4])
        * 2.0;
    let h = (Tensor::arange(24, (Kind::Float, Device::Cpu)) * 0.11)
        .cos()
        .reshape([2, 3, 4]);
    let l2 = JepaLoss::L2.forward(&z, &h).double_value(&[]);
    let sl1 = JepaLoss::SmoothL1.forward(&z, &h).double_value(&[]);
    assert!((l2 - 2.374_962_568_283_081).abs() < 1e-5, "{l2}");
    assert!((sl1 - 0.879_514_873_027_801_5).abs() < 1e-5, "{sl1}");
}

fn tiny_ijepa() -> Ijepa {
    let cfg = IjepaConfig {
        predictor_embed_dim: 16,
        predictor_depth: 1,
        masks: BlockMaskConfig {
            min_keep: 4,
            ..Default::default()
        },
        ..Default::default()
    };
    Ijepa::new(Device::Cpu, &tiny_vit(), 1, &cfg).unwrap()
}

#[test]
fn names_shapes_and_teacher() {
    tch::manual_seed(0);
    let ij = tiny_ijepa();
    let vars = ij.var_store().variables();
    for name in [
        "encoder.blocks.1.attn.qkv.weight",
        "target_encoder.blocks.1.attn.qkv.weight",
        "predictor.predictor_embed.weight",
        "predictor.mask_token",
        "predictor.predictor_blocks.0.mlp.fc1.weight",
        "predictor.predictor_norm.weight",
        "predictor.predictor_proj.bias",
    ] {
        assert!(vars.contains_key(name), "{name}");
    }
    assert_eq!(
        vars["predictor.predictor_pos_embed"].size(),
        vec![1, 16, 16]
    );
    assert!(!vars["predictor.predictor_pos_embed"].requires_grad());
    assert!(!vars["target_encoder.norm.weight"].requires_grad());
    assert!(vars["encoder.norm.weight"].requires_grad());
    assert!(vars["target_encoder.blocks.0.mlp.fc1.weight"]
        .equal(&vars["encoder.blocks.0.mlp.fc1.weight"]));
    let xs = structured_images(3, 1, 16, 0);
    let masks = ij.sampler.sample(3, &mut ChaCha8Rng::seed_from_u64(1));
    let (pred, target) = ij.predict(&xs, &masks);
    let kt = masks.targets[0][0].len() as i64;
    assert_eq!(pred.size(), vec![12, kt, 32]);
    assert_eq!(target.size(), pred.size());
    assert!(!target.requires_grad());
    // Targets are layer-normed per token.
    let mean = target
        .mean_dim(-1, false, Kind::Float)
        .abs()
        .max()
        .double_value(&[]);
    assert!(mean < 1e-4, "{mean}");
    assert_eq!(ij.embed(&xs).size(), vec![3, 32]);
}

#[test]
fn cnn_encoders_are_refused() {
    let err = Ijepa::new(
        Device::Cpu,
        &EncoderConfig::default(),
        1,
        &IjepaConfig::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("needs a ViT encoder"), "{err}");
    let bad = IjepaConfig {
        predictor_embed_dim: 18,
        ..Default::default()
    };
    let err = Ijepa::new(Device::Cpu, &tiny_vit(), 1, &bad)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("predictor_embed_dim (18)"), "{err}");
}

#[test]
fn a_few_steps_lower_the_loss_and_move_the_teacher() {
    tch::manual_seed(0);
    let mut ij = tiny_ijepa();
    let xs = structured_images(32, 1, 16, 2);
    let before = ij.var_store().variables()["target_encoder.blocks.0.attn.qkv.weight"].copy();
    let (first, last) = train_steps(&mut ij, &[xs], 60, 2e-3);
    assert!(last < 0.75 * first, "I-JEPA loss {first} -> {last}");
    let after = &ij.var_store().variables()["target_encoder.blocks.0.attn.qkv.weight"];
    assert!(!after.equal(&before), "the EMA teacher follows the student");
    assert!(ij.last_momentum() > 0.996 && ij.last_momentum() < 1.0);
}
