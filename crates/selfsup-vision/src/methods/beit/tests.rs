//! Tests of BEiT.
use super::*;
use crate::methods::test_util::{structured_images, train_steps};
use crate::methods::vq_tokenizer::tests::{exported, vit};
use crate::methods::vq_tokenizer::TOKENIZER_CONFIG;
use std::path::Path;

fn cfg_for(tokenizer: &Path) -> BeitConfig {
    BeitConfig {
        tokenizer: tokenizer.to_path_buf(),
        vocab_size: 16,
        mask_ratio: 0.4,
    }
}

/// The loss against a computation by hand in f64: `-log softmax(l)[t]`
/// averaged over the masked patches only, and the arg-max accuracy.
#[test]
fn loss_matches_an_independent_computation() {
    let (b, n, v) = (2i64, 3i64, 4i64);
    let logits: Vec<f32> = (0..b * n * v)
        .map(|i| ((i as f32) * 0.37).sin() * 2.0)
        .collect();
    let codes = [3i64, 0, 2, 1, 1, 0];
    let mask = [true, false, true, false, true, true];
    let lt = Tensor::from_slice(&logits).reshape([b, n, v]);
    let ct = Tensor::from_slice(&codes).reshape([b, n]);
    let mt = Tensor::from_slice(&mask).reshape([b, n]);
    let (loss, acc) = masked_token_loss(&masked_rows(&lt, &mt), &masked_rows(&ct, &mt));
    let (mut want, mut hits, mut count) = (0f64, 0, 0);
    for (i, (&m, &t)) in mask.iter().zip(&codes).enumerate() {
        if !m {
            continue;
        }
        let row: Vec<f64> = logits[i * 4..i * 4 + 4].iter().map(|&x| x as f64).collect();
        let max = row.iter().cloned().fold(f64::MIN, f64::max);
        let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        want += lse - row[t as usize];
        let best = (0..4).max_by(|&a, &c| row[a].total_cmp(&row[c])).unwrap();
        hits += usize::from(best == t as usize);
        count += 1;
    }
    want /= count as f64;
    let got = loss.double_value(&[]);
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    assert!((acc - hits as f64 / count as f64).abs() < 1e-12, "{acc}");
    // The unmasked rows play no part.
    let moved = lt.copy();
    let _ = moved.get(0).get(1).fill_(50.0);
    let (again, _) = masked_token_loss(&masked_rows(&moved, &mt), &masked_rows(&ct, &mt));
    assert_eq!(again.double_value(&[]), got);
}

#[test]
fn masked_rows_keep_row_major_order() {
    let xs = Tensor::arange(12, (Kind::Float, Device::Cpu)).reshape([2, 3, 2]);
    let mask = Tensor::from_slice(&[false, true, true, true, false, false]).reshape([2, 3]);
    let got: Vec<f32> = Vec::try_from(masked_rows(&xs, &mask).flatten(0, -1)).unwrap();
    assert_eq!(got, vec![2., 3., 4., 5., 6., 7.]);
    let ids = Tensor::from_slice(&[5i64, 6, 7, 8, 9, 10]).reshape([2, 3]);
    let got: Vec<i64> = Vec::try_from(masked_rows(&ids, &mask)).unwrap();
    assert_eq!(got, vec![6, 7, 8]);
}

#[test]
fn masks_are_blocks_of_about_the_ratio() {
    let dir = tempfile::tempdir().unwrap();
    exported(&dir.path().join("export"), 4, 28);
    tch::manual_seed(0);
    let beit = Beit::new(Device::Cpu, &vit(4, 28), 1, &cfg_for(dir.path())).unwrap();
    tch::manual_seed(1);
    let masks = beit.masks(64, 7, 7, Device::Cpu);
    assert_eq!(masks.size(), vec![64, 49]);
    let per: Vec<i64> = Vec::try_from(masks.sum_dim_intlist(1, false, Kind::Int64)).unwrap();
    // target round(0.4 * 49) = 20; the generator never exceeds it.
    assert!(per.iter().all(|&c| (1..=20).contains(&c)), "{per:?}");
    let mean = per.iter().sum::<i64>() as f64 / per.len() as f64;
    assert!(mean > 16.0, "{mean}");
    // Blocks: most masked patches have a masked neighbour in their row or column.
    let m: Vec<bool> = Vec::try_from(masks.flatten(0, -1)).unwrap();
    let (mut with, mut all) = (0, 0);
    for img in 0..64 {
        for r in 0..7 {
            for c in 0..7 {
                let at = |r: i64, c: i64| {
                    (0..7).contains(&r) && (0..7).contains(&c) && m[(img * 49 + r * 7 + c) as usize]
                };
                if at(r, c) {
                    all += 1;
                    with +=
                        usize::from(at(r - 1, c) || at(r + 1, c) || at(r, c - 1) || at(r, c + 1));
                }
            }
        }
    }
    assert!(with as f64 > 0.9 * all as f64, "{with} of {all}");
    // Different images, different masks; the same seed, the same masks.
    assert!(!masks.get(0).equal(&masks.get(1)));
    tch::manual_seed(1);
    assert!(masks.equal(&beit.masks(64, 7, 7, Device::Cpu)));
}

#[test]
fn a_tokenizer_that_does_not_fit_is_refused_with_file_key_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    exported(&dir.path().join("export"), 4, 16);
    let config = dir.path().join("export").join(TOKENIZER_CONFIG);
    let shown = config.display().to_string();
    let refuse = |model: EncoderConfig, channels: i64, cfg: BeitConfig| {
        Beit::new(Device::Cpu, &model, channels, &cfg)
            .err()
            .unwrap()
            .to_string()
    };
    let err = refuse(vit(2, 16), 1, cfg_for(dir.path()));
    assert!(
        err.contains(&shown)
            && err.contains("\"arch\".patch_size = 4")
            && err.contains("[model] patch_size = 2")
            && err.contains("set [model] patch_size = 4"),
        "{err}"
    );
    let err = refuse(vit(4, 28), 1, cfg_for(dir.path()));
    assert!(
        err.contains("image_size = 16") && err.contains("set [model] image_size = 16"),
        "{err}"
    );
    let err = refuse(vit(4, 16), 3, cfg_for(dir.path()));
    assert!(
        err.contains("in_channels = 1") && err.contains("3-channel"),
        "{err}"
    );
    let err = refuse(
        vit(4, 16),
        1,
        BeitConfig {
            vocab_size: 8192,
            ..cfg_for(dir.path())
        },
    );
    assert!(
        err.contains("codebook_size = 16") && err.contains("set [method] vocab_size = 16"),
        "{err}"
    );
    let err = refuse(vit(4, 16), 1, cfg_for(&dir.path().join("missing")));
    assert!(
        err.contains("no VQ tokenizer export") && err.contains("missing"),
        "{err}"
    );
    let err = refuse(EncoderConfig::default(), 1, cfg_for(dir.path()));
    assert!(err.contains("needs a ViT encoder"), "{err}");
    // Another normalisation than the data's.
    let text = std::fs::read_to_string(&config).unwrap();
    let mut info: serde_json::Value = serde_json::from_str(&text).unwrap();
    info["normalize"] = serde_json::json!({"mean": [0.5], "std": [0.5]});
    std::fs::write(&config, info.to_string()).unwrap();
    let err = refuse(vit(4, 16), 1, cfg_for(dir.path()));
    assert!(
        err.contains(&shown) && err.contains("\"normalize\""),
        "{err}"
    );
}

#[test]
fn names_shapes_and_a_few_steps_lower_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    exported(&dir.path().join("export"), 4, 16);
    tch::manual_seed(0);
    let mut beit = Beit::new(Device::Cpu, &vit(4, 16), 1, &cfg_for(dir.path())).unwrap();
    let vars = beit.var_store().variables();
    for name in [
        "encoder.cls_token",
        "encoder.pos_embed",
        "mask_token",
        "lm_head.weight",
    ] {
        assert!(vars.contains_key(name), "{name}");
    }
    assert!(vars["encoder.pos_embed"].requires_grad());
    assert_eq!(vars["lm_head.weight"].size(), vec![16, 32]);
    // The tokenizer is not part of the method's variables.
    assert!(!vars.keys().any(|k| k.contains("quantizer")));
    let xs = structured_images(32, 1, 16, 1);
    assert_eq!(beit.embed(&xs).size(), vec![32, 32]);
    let (first, last) = train_steps(&mut beit, &[xs], 120, 3e-3);
    assert!(last < 0.8 * first, "BEiT loss {first} -> {last}");
}

/// The two presets go together: the tokenizer preset trains a step and
/// exports, the BEiT preset (pointed at that export) accepts it, trains a
/// step and exports both its timm ViT and timm Beit encoders.
#[test]
fn the_presets_train_and_export_together() {
    use crate::config::tests::preset;
    use crate::vision_method::{build_method, export};
    let dir = tempfile::tempdir().unwrap();
    let xs = structured_images(4, 1, 28, 0);
    let batch = Batch {
        views: vec![xs.shallow_clone(), xs.shallow_clone()],
    };
    let ctx = StepCtx {
        step: 0,
        total_steps: 10,
        epoch: 0,
        steps_per_epoch: 1,
        comm: &selfsup_core::distributed::SingleProcess,
    };
    let tok_cfg = preset("vq_tokenizer-cpu.toml");
    let mut tok = build_method(&tok_cfg, Device::Cpu, 1).unwrap();
    assert_eq!(tok.name(), "vq_tokenizer");
    assert!(tok
        .step(&batch, &ctx)
        .unwrap()
        .loss
        .double_value(&[])
        .is_finite());
    tok.after_step(&ctx);
    let tok_dir = dir.path().join("tok");
    export(
        &tok_cfg,
        tok.as_ref(),
        1,
        &tok_dir.join("export"),
        serde_json::json!({}),
    )
    .unwrap();

    let mut cfg = preset("beit-cpu.toml");
    assert_eq!(cfg.model, tok_cfg.model, "the two presets share [model]");
    match &mut cfg.method {
        crate::methods::MethodConfig::Beit(b) => b.tokenizer = tok_dir.clone(),
        other => panic!("beit-cpu.toml is {}", other.name()),
    }
    let mut beit = build_method(&cfg, Device::Cpu, 1).unwrap();
    let out = beit.step(&batch, &ctx).unwrap();
    // About log(512) at the start.
    let loss = out.loss.double_value(&[]);
    assert!((loss - 512f64.ln()).abs() < 1.0, "{loss}");
    let out_dir = dir.path().join("beit-export");
    export(&cfg, beit.as_ref(), 1, &out_dir, serde_json::json!({})).unwrap();
    let vit: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(vit["arch"], "vit_tiny");
    assert_eq!(vit["method"], "beit");
    let timm: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("beit").join("config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(timm["timm"]["kwargs"]["embed_dim"], 128);
    assert_eq!(timm["method"], "beit");
}
