//! MLM end to end on a tiny corpus: the loss is the reference cross-entropy
//! over the selected positions only, training lowers it, the pooled
//! embeddings do not collapse, and the export round-trips (in Rust, and in
//! transformers when `SELFSUP_HF_PYTHON` names a Python that has it).
use selfsup_core::distributed::SingleProcess;
use selfsup_core::method::{Batch, Method, StepCtx};
use selfsup_core::optim::OptimConfig;
use selfsup_core::schedule::{Decay, LrSchedule};
use selfsup_core::tensor_io;
use selfsup_core::trainer::noise::{untrained_losses, LossNoise};
use selfsup_core::trainer::{Silent, Trainer, TrainerConfig};
use selfsup_text::corpus::Document;
use selfsup_text::eval::{unigram_baseline, validate, MlmEpochEval};
use selfsup_text::export::export_mlm;
use selfsup_text::loader::{masked_batch, MaskVocab, MlmBatches};
use selfsup_text::masking::{MaskingConfig, IGNORE};
use selfsup_text::methods::Mlm;
use selfsup_text::model::ModelConfig;
use selfsup_text::packing::pack;
use selfsup_text::tokenizer::TextTokenizer;
use std::path::Path;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// A small corpus with structure to learn: templated sentences on eight
/// topics with their own words, so that sequences differ by topic.
fn corpus() -> Vec<Document> {
    let topics: [[&str; 6]; 8] = [
        ["cat", "dog", "bird", "horse", "fish", "mouse"],
        ["red", "green", "blue", "yellow", "purple", "orange"],
        ["river", "mountain", "forest", "valley", "lake", "island"],
        ["piano", "violin", "drum", "flute", "guitar", "trumpet"],
        ["bread", "cheese", "apple", "soup", "rice", "cake"],
        ["train", "car", "ship", "plane", "bicycle", "bus"],
        ["doctor", "farmer", "pilot", "baker", "nurse", "judge"],
        ["winter", "summer", "spring", "autumn", "storm", "rain"],
    ];
    let verbs = ["sees", "likes", "follows", "finds"];
    (0..24)
        .map(|d| {
            let w = &topics[d % 8];
            let text = (0..30)
                .map(|i| {
                    let k = d * 31 + i * 7;
                    // the object follows from the subject: something to learn
                    format!(
                        "the {} {} the {}.",
                        w[k % 6],
                        verbs[(k / 6) % 4],
                        w[(k + 1) % 6]
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            Document {
                id: format!("doc{d}"),
                text,
                label: None,
            }
        })
        .collect()
}

/// libtorch's generator is global to the process: the tests of this file
/// take turns so that each one's seeded initialisation is reproducible.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn tiny_model() -> ModelConfig {
    ModelConfig {
        layers: Some(2),
        hidden: Some(32),
        heads: Some(2),
        intermediate: Some(64),
        max_len: 24,
        max_position: 32,
        dropout: 0.0,
        ..ModelConfig::default()
    }
}

fn ctx(comm: &SingleProcess) -> StepCtx<'_> {
    StepCtx {
        step: 0,
        total_steps: 1,
        epoch: 0,
        steps_per_epoch: 1,
        comm,
    }
}

#[test]
fn loss_is_cross_entropy_over_selected_positions_only() {
    let _turn = serial();
    let docs = corpus();
    let tok = TextTokenizer::train(&docs, 200, 1, true).unwrap();
    let data = pack(&docs, &tok, 24).unwrap();
    let vocab = MaskVocab::of(&tok);
    let cfg = tiny_model().resolve(tok.vocab_size, tok.pad_id).unwrap();
    tch::manual_seed(0);
    let mut mlm = Mlm::new(&cfg, Device::Cpu);
    let batch = masked_batch(
        &data,
        &vocab,
        &MaskingConfig::default(),
        &[0, 1, 2, 3],
        5,
        0,
    );
    let loss = mlm
        .step(&batch, &ctx(&SingleProcess))
        .unwrap()
        .loss
        .double_value(&[]);
    // Reference: logits at *every* position, PyTorch's cross-entropy with
    // ignore_index = -100 (what transformers' BertForMaskedLM computes).
    let hidden = mlm
        .bert
        .forward(&batch.views[0], Some(&batch.views[1]), false);
    let logits = mlm.bert.mlm_logits(&hidden.view([-1, cfg.hidden]));
    let reference = logits
        .cross_entropy_loss::<Tensor>(
            &batch.views[2].view([-1]),
            None,
            tch::Reduction::Mean,
            -100,
            0.0,
        )
        .double_value(&[]);
    assert!((loss - reference).abs() < 1e-5, "{loss} vs {reference}");
    // Unselected positions carry no weight: changing the input's unselected
    // *labels* cannot matter (they are ignored), and the gradient of the loss
    // with respect to the logits of those positions is exactly zero.
    let full = logits.detach().set_requires_grad(true);
    let l = full.cross_entropy_loss::<Tensor>(
        &batch.views[2].view([-1]),
        None,
        tch::Reduction::Mean,
        -100,
        0.0,
    );
    l.backward();
    let unselected = batch.views[2].view([-1]).eq(IGNORE);
    let g = full.grad().abs().sum_dim_intlist(1, false, Kind::Float);
    assert_eq!(g.masked_select(&unselected).max().double_value(&[]), 0.0);
    assert!(
        g.masked_select(&unselected.logical_not())
            .min()
            .double_value(&[])
            > 0.0
    );
}

/// The validation loss (as [`validate`] computes it) under mask draw `seed`.
fn masked_loss(
    mlm: &Mlm,
    val: &selfsup_text::packing::Packed,
    vocab: &MaskVocab,
    masking: &MaskingConfig,
    seed: u64,
) -> f64 {
    let (mut sum, mut count) = (0.0, 0);
    let rows: Vec<usize> = (0..val.len()).collect();
    tch::no_grad(|| {
        for chunk in rows.chunks(16) {
            let e = mlm.evaluate(&masked_batch(val, vocab, masking, chunk, seed, 0));
            sum += e.loss_sum;
            count += e.count;
        }
    });
    sum / count.max(1) as f64
}

#[test]
fn training_lowers_the_loss_and_does_not_collapse() {
    let _turn = serial();
    let docs = corpus();
    let (train_docs, val_docs) = (docs[..20].to_vec(), docs[20..].to_vec());
    let tok = TextTokenizer::train(&train_docs, 200, 1, true).unwrap();
    let train = pack(&train_docs, &tok, 24).unwrap();
    let val = pack(&val_docs, &tok, 24).unwrap();
    let vocab = MaskVocab::of(&tok);
    let masking = MaskingConfig::default();
    let cfg = tiny_model().resolve(tok.vocab_size, tok.pad_id).unwrap();
    tch::manual_seed(0);
    let mut mlm = Mlm::new(&cfg, Device::Cpu);
    let before = validate(&mlm, &val, &vocab, &masking, 16, Device::Cpu);
    let unigram = unigram_baseline(&train, &val, &vocab, &masking, tok.vocab_size);
    let batches = MlmBatches::new(
        Arc::new(train),
        Arc::new(vocab.clone()),
        masking.clone(),
        16,
        0,
    );
    // The noise: the same 20 epochs of batches with no training, and the
    // validation loss under other mask draws.
    let LossNoise {
        epoch_means: means,
        range,
        step_sd,
    } = LossNoise::of(&untrained_losses(&mut mlm, &batches, 20).unwrap());
    let draws: Vec<f64> = (1..=8)
        .map(|seed| masked_loss(&mlm, &val, &vocab, &masking, seed))
        .collect();
    let val_range = draws.iter().cloned().fold(f64::MIN, f64::max)
        - draws.iter().cloned().fold(f64::MAX, f64::min);
    eprintln!(
        "untrained epoch means {means:?}, range {range:.4}, step sd {step_sd:.4}; \
         validation loss over mask draws {draws:?}, range {val_range:.4}"
    );
    let mut eval = MlmEpochEval {
        val: val.clone(),
        monitor: val.clone(),
        vocab: vocab.clone(),
        masking: masking.clone(),
        batch: 16,
        device: Device::Cpu,
        unigram,
        last: None,
    };
    let trainer_cfg = TrainerConfig {
        epochs: 20,
        optimizer: OptimConfig {
            kind: selfsup_core::optim::OptimKind::AdamW,
            // At 1e-2 the pooled embeddings of some seeds sank to rank 2-3
            // (a real collapse the monitor flags); at 5e-3 seeds 0-11 all end
            // at RankMe 11-16 and pass every assertion here.
            lr: 5e-3 * 256.0 / 16.0,
            weight_decay: 0.01,
            ..OptimConfig::default()
        },
        schedule: LrSchedule {
            warmup_epochs: 1.0,
            final_lr_ratio: 0.0,
            decay: Decay::Linear,
        },
        ..TrainerConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let summary = Trainer::new(trainer_cfg, dir.path(), Device::Cpu)
        .fit(&mut mlm, &batches, &mut eval, &mut Silent, false)
        .unwrap();
    let after = eval.last.unwrap();
    let first = summary.epochs.first().unwrap().mean_loss;
    let last = summary.epochs.last().unwrap().mean_loss;
    eprintln!(
        "training loss {first} -> {last}, validation loss {} -> {}",
        before.loss, after.loss
    );
    assert!(last < first - 1.0, "training loss {first} -> {last}");
    assert!(
        after.loss < before.loss - 1.0,
        "validation loss {} -> {}",
        before.loss,
        after.loss
    );
    // Measured on this fixture (seed 0, CPU): untrained, the steps of the 20
    // epochs have a standard deviation of 0.019 and the epoch means
    // (5.343-5.357) a range of 0.014; the validation loss over 8 other mask
    // draws ranges over 0.022 (5.348-5.370). Training takes the epoch mean
    // from 5.04 to 2.97 (a fall of 2.07 = 110 step sd) and the validation
    // loss from 5.36 to 2.91 (2.46 = 110 ranges). Demanded, besides the
    // fixed falls of 1.0 above: 20 times each noise, computed afresh on
    // every run.
    assert!(
        first - last > 20.0 * step_sd && first - last > 20.0 * range,
        "training loss {first} -> {last} against untrained noise (step sd {step_sd}, epoch-mean \
         range {range})"
    );
    assert!(
        before.loss - after.loss > 20.0 * val_range,
        "validation loss {} -> {} against mask-draw noise (range {val_range})",
        before.loss,
        after.loss
    );
    assert!(
        after.perplexity < unigram.perplexity,
        "validation perplexity {} is not below the unigram baseline {}",
        after.perplexity,
        unigram.perplexity
    );
    let end = summary.epochs.last().unwrap();
    assert!(
        end.warnings.is_empty(),
        "collapse warnings at the end: {:?}",
        end.warnings
    );
    // The monitors see centred pooled embeddings (see `eval::centre`); the
    // four validation documents are four topics: at least two effective dims.
    let c = end.collapse.clone().unwrap();
    assert!(c.rankme > 2.0 && c.uniformity < -0.5, "{c:?}");
}

#[test]
fn export_round_trips_and_loads_in_transformers() {
    let _turn = serial();
    let docs = corpus();
    let tok = TextTokenizer::train(&docs, 200, 1, true).unwrap();
    let cfg = tiny_model().resolve(tok.vocab_size, tok.pad_id).unwrap();
    tch::manual_seed(3);
    let mlm = Mlm::new(&cfg, Device::Cpu);
    let dir = tempfile::tempdir().unwrap();
    export_mlm(&mlm, &tok, 24, dir.path()).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["architectures"][0], "BertForMaskedLM");
    assert_eq!(config["vocab_size"], tok.vocab_size as i64);

    // Rust round trip: a fresh model loaded from the export gives the same logits.
    let text = "the cat sees a dog near the river.";
    let mut ids = vec![tok.cls_id];
    ids.extend(tok.encode(text).unwrap().into_iter().map(i64::from));
    ids.push(tok.sep_id);
    let n = ids.len();
    ids.resize(24, tok.pad_id);
    let second: Vec<i64> = (0..24)
        .map(|i| if i < 10 { ids[i] } else { tok.pad_id })
        .collect();
    let input = Tensor::from_slice(&[ids.clone(), second].concat()).view([2, 24]);
    let attention = input.ne(tok.pad_id).to_kind(Kind::Int64);
    let logits = |m: &Mlm| {
        let h = m.bert.forward(&input, Some(&attention), false);
        m.bert
            .mlm_logits(&h.view([-1, cfg.hidden]))
            .view([2, 24, -1])
    };
    let expected = tch::no_grad(|| logits(&mlm));
    let loaded = tensor_io::load(&dir.path().join("model.safetensors")).unwrap();
    tch::manual_seed(99);
    let other = Mlm::new(&cfg, Device::Cpu);
    assert!(!tch::no_grad(|| logits(&other)).allclose(&expected, 1e-4, 1e-4, false));
    let mut names: Vec<_> = other.var_store().variables().into_keys().collect();
    names.sort();
    let mut exported: Vec<_> = loaded.tensors.keys().cloned().collect();
    exported.sort();
    assert_eq!(names, exported);
    tch::no_grad(|| {
        for (k, v) in other.var_store().variables() {
            let mut v = v;
            v.copy_(&loaded.tensors[&k]);
        }
    });
    assert!(tch::no_grad(|| logits(&other)).allclose(&expected, 1e-6, 1e-6, false));
    assert!(n < 24, "the test sentence must leave padding");

    // transformers: from_pretrained with no missing/unexpected keys, same logits, same tokenizer ids.
    let reference = dir.path().join("reference.safetensors");
    tensor_io::save(
        &reference,
        &[
            ("input_ids".into(), input.shallow_clone()),
            ("attention_mask".into(), attention.shallow_clone()),
            ("logits".into(), expected.shallow_clone()),
        ],
        None,
    )
    .unwrap();
    let off = dir.path().join("off.safetensors");
    tensor_io::save(
        &off,
        &[
            ("input_ids".into(), input.shallow_clone()),
            ("attention_mask".into(), attention),
            ("logits".into(), &expected + 1e-3),
        ],
        None,
    )
    .unwrap();
    let Some(python) = std::env::var_os("SELFSUP_HF_PYTHON") else {
        eprintln!("SELFSUP_HF_PYTHON not set: transformers check skipped (Rust side checked)");
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benchmarks/check_hf_export.py");
    let run = |reference: &Path| {
        let out = std::process::Command::new(&python)
            .arg(&script)
            .arg(dir.path())
            .arg(reference)
            .arg(text)
            .output()
            .expect("run SELFSUP_HF_PYTHON");
        let s = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{s}");
        (out.status.code(), s)
    };
    let (code, s) = run(&reference);
    assert!(code == Some(0) && s.contains("PASS: "), "{s}");
    let (code, s) = run(&off);
    assert!(code == Some(1) && s.contains("FAIL: "), "{s}");
}

#[test]
fn batches_are_reproducible_and_masks_change_every_epoch() {
    let _turn = serial();
    let docs = corpus();
    let tok = TextTokenizer::train(&docs, 200, 1, true).unwrap();
    let data = Arc::new(pack(&docs, &tok, 24).unwrap());
    let vocab = Arc::new(MaskVocab::of(&tok));
    let src = MlmBatches::new(data, vocab, MaskingConfig::default(), 8, 4);
    use selfsup_core::source::BatchSource;
    let e0: Vec<Batch> = src.epoch(0, 0).map(|b| b.unwrap()).collect();
    let e0_from_2: Vec<Batch> = src.epoch(0, 2).map(|b| b.unwrap()).collect();
    assert_eq!(e0.len(), e0_from_2.len() + 2);
    for (a, b) in e0[2..].iter().zip(&e0_from_2) {
        for v in 0..3 {
            assert!(a.views[v].equal(&b.views[v]));
        }
    }
    let e1: Vec<Batch> = src.epoch(1, 0).map(|b| b.unwrap()).collect();
    assert!(!e0[0].views[2].equal(&e1[0].views[2]));
}
