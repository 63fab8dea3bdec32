//! Tests of `dinov2`.
use super::*;
use crate::methods::mae::tests::tiny_vit;
use crate::methods::test_util::{structured_images, train_steps};

fn tiny_cfg() -> Dinov2Config {
    Dinov2Config {
        head: DinoHeadConfig {
            layers: 2,
            hidden_dim: 32,
            bottleneck_dim: 16,
            out_dim: 64,
            batch_norm: false,
        },
        freeze_last_layer_epochs: 0.0,
        ..Dinov2Config::default()
    }
}

#[test]
fn block_masks_cover_the_share_in_blocks_and_follow_the_seed() {
    for (rows, cols, target) in [(7, 7, 5), (7, 7, 24), (4, 4, 8), (14, 14, 98), (2, 3, 1)] {
        for seed in 0..30u64 {
            let draw = |s| block_mask(&mut ChaCha8Rng::seed_from_u64(s), rows, cols, target);
            let m = draw(seed);
            assert_eq!(m, draw(seed), "the same seed, the same mask");
            assert_eq!(m.len(), (rows * cols) as usize);
            let count = m.iter().filter(|&&x| x).count() as i64;
            // Never above the share; on these grids it is reached or close.
            assert!(
                count <= target,
                "{rows}x{cols} seed {seed}: {count} > {target}"
            );
            assert!(
                count * 10 >= target * 7,
                "{rows}x{cols} seed {seed}: {count} of {target}"
            );
        }
    }
    // Blocks, not scattered patches: most masked patches of a large mask
    // have a masked neighbour.
    let m = block_mask(&mut ChaCha8Rng::seed_from_u64(3), 14, 14, 60);
    let masked =
        |r: i64, c: i64| (0..14).contains(&r) && (0..14).contains(&c) && m[(r * 14 + c) as usize];
    let with_neighbour = (0..14)
        .flat_map(|r| (0..14).map(move |c| (r, c)))
        .filter(|&(r, c)| masked(r, c))
        .filter(|&(r, c)| {
            masked(r - 1, c) || masked(r + 1, c) || masked(r, c - 1) || masked(r, c + 1)
        })
        .count();
    assert!(
        with_neighbour >= 55,
        "{with_neighbour} of 60 have a masked neighbour"
    );
}

#[test]
fn bad_settings_and_cnn_encoders_are_refused_naming_the_key() {
    let refuse = |cfg: Dinov2Config, key: &str| {
        let e = cfg.check_ranges().unwrap_err();
        assert!(e.contains(key), "{e}");
    };
    refuse(
        Dinov2Config {
            dino_weight: 0.0,
            ibot: IbotConfig {
                weight: 0.0,
                ..IbotConfig::default()
            },
            ..tiny_cfg()
        },
        "nothing would train",
    );
    refuse(
        Dinov2Config {
            ibot: IbotConfig {
                mask_ratio: [0.5, 0.1],
                ..IbotConfig::default()
            },
            ..tiny_cfg()
        },
        "ibot.mask_ratio",
    );
    refuse(
        Dinov2Config {
            ibot: IbotConfig {
                mask_probability: 1.5,
                ..IbotConfig::default()
            },
            ..tiny_cfg()
        },
        "ibot.mask_probability",
    );
    refuse(
        Dinov2Config {
            koleo_weight: -0.1,
            ..tiny_cfg()
        },
        "koleo_weight",
    );
    let cnn = EncoderConfig::default();
    let e = Dinov2::new(Device::Cpu, &cnn, 1, &tiny_cfg())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("needs a ViT encoder"), "{e}");
}

fn one_step(cfg: &Dinov2Config) -> (Dinov2, LossOut) {
    tch::manual_seed(0);
    let mut m = Dinov2::new(Device::Cpu, &tiny_vit(), 1, cfg).unwrap();
    let xs = structured_images(8, 1, 16, 1);
    let local = xs.narrow(2, 0, 8).narrow(3, 0, 8);
    let batch = Batch {
        views: vec![xs.shallow_clone(), xs.flip([3]), local],
    };
    let ctx = StepCtx {
        step: 0,
        total_steps: 10,
        epoch: 0,
        steps_per_epoch: 10,
        comm: &selfsup_core::distributed::SingleProcess,
    };
    let out = m.step(&batch, &ctx).unwrap();
    (m, out)
}

fn term(out: &LossOut, name: &str) -> Option<f64> {
    out.terms.iter().find(|(n, _)| *n == name).map(|t| t.1)
}

/// Every piece reports its term, the total is their weighted sum, each
/// piece switched off leaves its term out, and the masked patches send a
/// gradient to the mask token.
#[test]
fn each_piece_adds_its_term_and_can_be_switched_off() {
    let cfg = Dinov2Config {
        ibot: IbotConfig {
            mask_probability: 1.0,
            ..IbotConfig::default()
        },
        ..tiny_cfg()
    };
    let (m, out) = one_step(&cfg);
    let (dino, ibot, koleo) = (
        term(&out, "dino").unwrap(),
        term(&out, "ibot").unwrap(),
        term(&out, "koleo").unwrap(),
    );
    let total = out.loss.double_value(&[]);
    assert!(
        (total - (dino + ibot + 0.1 * koleo)).abs() < 1e-4,
        "{total}"
    );
    let share = term(&out, "masked_share").unwrap();
    assert!((0.05..=0.55).contains(&share), "masked share {share}");
    out.loss.backward();
    let g = m.var_store().variables()["mask_token"].grad();
    assert!(g.abs().sum(Kind::Float).double_value(&[]) > 0.0);
    // The teacher gets no gradient.
    let tg = m.var_store().variables()["teacher.encoder.cls_token"].grad();
    assert!(!tg.defined() || tg.abs().sum(Kind::Float).double_value(&[]) == 0.0);

    let off = |c: Dinov2Config| one_step(&c).1;
    let no_ibot = off(Dinov2Config {
        ibot: IbotConfig {
            weight: 0.0,
            ..IbotConfig::default()
        },
        ..cfg.clone()
    });
    assert!(term(&no_ibot, "ibot").is_none() && term(&no_ibot, "masked_share").is_none());
    let no_koleo = off(Dinov2Config {
        koleo_weight: 0.0,
        ..cfg.clone()
    });
    assert!(term(&no_koleo, "koleo").is_none());
    let no_dino = off(Dinov2Config {
        dino_weight: 0.0,
        ..cfg.clone()
    });
    assert!(term(&no_dino, "dino").is_none() && term(&no_dino, "ibot").is_some());
    // A separate patch head has its own weights, under the EMA too.
    let (sep, _) = one_step(&Dinov2Config {
        ibot: IbotConfig {
            separate_head: true,
            ..cfg.ibot.clone()
        },
        ..cfg.clone()
    });
    let vars = sep.var_store().variables();
    assert!(vars.contains_key("ibot_head.last_layer.weight"));
    assert!(vars.contains_key("teacher.ibot_head.last_layer.weight"));
    assert!(!m
        .var_store()
        .variables()
        .contains_key("ibot_head.last_layer.weight"));
}

/// With the moving centers (DINO / iBOT's), both centers move after a
/// step; with Sinkhorn-Knopp they stay at 0.
#[test]
fn centers_move_only_when_centring_by_center() {
    let ctx = StepCtx {
        step: 0,
        total_steps: 10,
        epoch: 0,
        steps_per_epoch: 10,
        comm: &selfsup_core::distributed::SingleProcess,
    };
    for (centering, moves) in [(Centering::Center, true), (Centering::SinkhornKnopp, false)] {
        let mut cfg = tiny_cfg();
        cfg.loss.centering = centering;
        let (mut m, _) = one_step(&cfg);
        m.after_step(&ctx);
        let vars = m.var_store().variables();
        for name in ["center", "patch_center"] {
            let moved = vars[name].abs().sum(Kind::Float).double_value(&[]) > 0.0;
            assert_eq!(moved, moves, "{centering:?} {name}");
        }
    }
}

#[test]
fn a_few_steps_lower_the_loss_and_move_the_teacher() {
    tch::manual_seed(0);
    let mut m = Dinov2::new(Device::Cpu, &tiny_vit(), 1, &tiny_cfg()).unwrap();
    let xs = structured_images(32, 1, 16, 2);
    let before = m.var_store().variables()["teacher.encoder.blocks.0.attn.qkv.weight"].copy();
    let (first, last) = train_steps(&mut m, &[xs], 60, 2e-3);
    assert!(last < 0.8 * first, "DINOv2 loss {first} -> {last}");
    let after = &m.var_store().variables()["teacher.encoder.blocks.0.attn.qkv.weight"];
    assert!(!after.equal(&before), "the EMA teacher follows the student");
}
