//! Next-token prediction end to end on a tiny corpus: the model is causal,
//! the loss is the reference cross-entropy over the predicted positions,
//! training takes validation perplexity far below the unigram baseline and
//! to the bigram's level (far beyond the untrained loss's noise), generation is greedy / seeded top-k,
//! and the export loads into transformers' `GPT2LMHeadModel` strictly with
//! the same logits and the same greedy continuation.
use selfsup_core::device::DeviceChoice;
use selfsup_core::distributed::SingleProcess;
use selfsup_core::method::{Method, StepCtx};
use selfsup_core::optim::OptimConfig;
use selfsup_core::run::RunOptions;
use selfsup_core::schedule::{Decay, LrSchedule};
use selfsup_core::tensor_io;
use selfsup_core::trainer::noise::{untrained_losses, LossNoise};
use selfsup_core::trainer::{Silent, Trainer, TrainerConfig};
use selfsup_core::workflow::{checkpoint_method, EvalRequest};
use selfsup_text::causal_eval::{validate_lm, NextTokenEpochEval};
use selfsup_text::config::{TextMethodConfig, TextRunConfig};
use selfsup_text::corpus::Document;
use selfsup_text::export_gpt2::export_gpt2;
use selfsup_text::generate::{continue_ids, generate, Sampling};
use selfsup_text::methods::{causal_batch, CausalBatches, NextToken};
use selfsup_text::model::{Gpt2Config, ModelConfig};
use selfsup_text::ngram::{fit_bigram_k, NgramCounts};
use selfsup_text::packing::pack;
use selfsup_text::tokenizer::TextTokenizer;
use std::path::Path;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// Templated sentences on eight topics: "the X verb the Y." where Y follows
/// from X two words back, which a bigram cannot see and a causal model can.
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

/// libtorch's generator is global: the tests take turns.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn tiny(tok: &TextTokenizer) -> Gpt2Config {
    sized(tok, 32)
}

fn sized(tok: &TextTokenizer, hidden: i64) -> Gpt2Config {
    let m = ModelConfig {
        layers: Some(2),
        hidden: Some(hidden),
        heads: Some(2),
        intermediate: Some(2 * hidden),
        max_len: 24,
        max_position: 32,
        dropout: 0.0,
        ..ModelConfig::default()
    };
    Gpt2Config::resolve(&m, tok.vocab_size, tok.cls_id, tok.sep_id, tok.pad_id).unwrap()
}

/// Perturbs every weight by N(0, 0.3): logits far from the near-uniform
/// ones of the 0.02 initialisation, so that a wrong layout cannot pass.
fn perturb(model: &NextToken) {
    tch::no_grad(|| {
        for (_, mut v) in model.var_store().variables() {
            let noise = v.randn_like() * 0.3;
            let _ = v.g_add_(&noise);
        }
    });
}

#[test]
fn the_model_is_causal_and_the_loss_is_the_reference_cross_entropy() {
    let _turn = serial();
    let docs = corpus();
    let tok = TextTokenizer::train(&docs, 200, 1, true).unwrap();
    let data = pack(&docs, &tok, 24).unwrap();
    let cfg = tiny(&tok);
    tch::manual_seed(0);
    let mut model = NextToken::new(&cfg, Device::Cpu);
    perturb(&model);
    let batch = causal_batch(&data, &[0, 1, 2, 3], tok.pad_id, tok.sep_id);
    assert_eq!(batch.views[0].size(), [4, 23]);
    // Causality: changing token 10 leaves the outputs of positions 0..10 as they were.
    let x = batch.views[0].shallow_clone();
    let y = x.copy();
    let _ = y.narrow(1, 10, 1).fill_(tok.unk_id);
    let (hx, hy) = tch::no_grad(|| (model.gpt.forward(&x, false), model.gpt.forward(&y, false)));
    assert!(hx
        .narrow(1, 0, 10)
        .allclose(&hy.narrow(1, 0, 10), 1e-6, 1e-6, false));
    assert!(!hx
        .narrow(1, 10, 1)
        .allclose(&hy.narrow(1, 10, 1), 1e-3, 1e-3, false));
    // The loss: PyTorch's cross-entropy over every position with ignore_index
    // -100 (what GPT2LMHeadModel computes on shifted labels).
    let ctx = StepCtx {
        step: 0,
        total_steps: 1,
        epoch: 0,
        steps_per_epoch: 1,
        comm: &SingleProcess,
    };
    let loss = model.step(&batch, &ctx).unwrap().loss.double_value(&[]);
    let logits = tch::no_grad(|| model.gpt.logits(&model.gpt.forward(&x, false)));
    let reference = logits
        .view([-1, cfg.vocab_size])
        .cross_entropy_loss::<Tensor>(
            &batch.views[1].view([-1]),
            None,
            tch::Reduction::Mean,
            -100,
            0.0,
        )
        .double_value(&[]);
    assert!((loss - reference).abs() < 1e-5, "{loss} vs {reference}");
    // Only padding and each row's closing [SEP] are left out.
    let labels = Vec::<i64>::try_from(batch.views[1].view([-1])).unwrap();
    let ignored = labels.iter().filter(|&&l| l == -100).count();
    assert_eq!(ignored, 4, "full rows: one closing [SEP] each");
}

#[test]
fn training_takes_perplexity_far_below_the_unigram_baseline() {
    let _turn = serial();
    let docs = corpus();
    let (train_docs, val_docs) = (docs[..20].to_vec(), docs[20..].to_vec());
    let tok = TextTokenizer::train(&train_docs, 200, 1, true).unwrap();
    let train = pack(&train_docs, &tok, 24).unwrap();
    let val = pack(&val_docs, &tok, 24).unwrap();
    let counts = NgramCounts::fit(&train, tok.vocab_size, tok.pad_id, tok.sep_id);
    let base = fit_bigram_k(&counts, &val, tok.pad_id, tok.sep_id);
    assert!(base.bigram_perplexity < base.unigram_perplexity, "{base:?}");
    let cfg = tiny(&tok);
    tch::manual_seed(0);
    let mut model = NextToken::new(&cfg, Device::Cpu);
    let before = validate_lm(&model, &val, 16, Device::Cpu);
    let batches = CausalBatches::new(Arc::new(train), 16, 0, tok.pad_id, tok.sep_id);
    let LossNoise {
        epoch_means,
        range,
        step_sd,
    } = LossNoise::of(&untrained_losses(&mut model, &batches, 5).unwrap());
    eprintln!("untrained epoch means {epoch_means:?}, range {range:.4}, step sd {step_sd:.4}");
    let mut eval = NextTokenEpochEval {
        val: val.clone(),
        monitor: val.clone(),
        batch: 16,
        device: Device::Cpu,
        baselines: base,
        last: None,
    };
    let trainer_cfg = TrainerConfig {
        epochs: 40,
        optimizer: OptimConfig {
            kind: selfsup_core::optim::OptimKind::AdamW,
            lr: 1e-2 * 256.0 / 16.0,
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
        .fit(&mut model, &batches, &mut eval, &mut Silent, false)
        .unwrap();
    let after = eval.last.unwrap();
    let first = summary.epochs.first().unwrap().mean_loss;
    let last = summary.epochs.last().unwrap().mean_loss;
    eprintln!(
        "training loss {first} -> {last}; validation perplexity {} -> {} (unigram {}, bigram add-{} {})",
        before.perplexity, after.perplexity, base.unigram_perplexity, base.bigram_add_k, base.bigram_perplexity
    );
    assert!(last < first - 1.0, "training loss {first} -> {last}");
    assert!(
        first - last > 20.0 * step_sd && first - last > 20.0 * range,
        "training loss {first} -> {last} against untrained noise (step sd {step_sd}, range {range})"
    );
    // Measured (seed 0, CPU, 40 epochs): validation perplexity 203 -> 5.3-6.2
    // across runs (libtorch's float sums are not bit-reproducible under
    // threads), unigram 25.1, bigram (add-0.001) 5.8: the 2-layer, 32-wide
    // model of this test reaches the bigram's level but not reliably below
    // it in this budget (the preset's run on the real corpus is where the
    // bigram is compared). Demanded here: under half the unigram's perplexity, and
    // within 25 % of the bigram's.
    assert!(
        after.perplexity < 0.5 * base.unigram_perplexity
            && after.perplexity < 1.25 * base.bigram_perplexity,
        "validation perplexity {} against unigram {} and bigram {}",
        after.perplexity,
        base.unigram_perplexity,
        base.bigram_perplexity
    );
    let end = summary.epochs.last().unwrap();
    assert!(
        end.warnings.is_empty(),
        "collapse warnings: {:?}",
        end.warnings
    );

    // Generation: greedy is the argmax of the model at each step.
    let g = generate(
        &model,
        &tok,
        "the cat sees the",
        6,
        Sampling::Greedy,
        Device::Cpu,
    )
    .unwrap();
    eprintln!("greedy: the cat sees the -> {:?}", g.text);
    let mut ids = vec![tok.cls_id];
    ids.extend(&g.prompt_ids);
    for &next in &g.new_ids {
        let input = Tensor::from_slice(&ids).view([1, -1]);
        let logits = tch::no_grad(|| model.gpt.logits(&model.gpt.forward(&input, false)));
        assert_eq!(
            logits.get(0).get(-1).argmax(-1, false).int64_value(&[]),
            next
        );
        ids.push(next);
    }
    assert!(!g.new_ids.is_empty() && !g.text.is_empty(), "{g:?}");
}

#[test]
fn top_k_sampling_is_seeded_and_stays_in_the_top_k() {
    let _turn = serial();
    let docs = corpus();
    let tok = TextTokenizer::train(&docs, 200, 1, true).unwrap();
    let cfg = tiny(&tok);
    tch::manual_seed(1);
    let model = NextToken::new(&cfg, Device::Cpu);
    perturb(&model);
    let prompt = [tok.cls_id, 10, 11];
    let draw = |k: usize, seed: u64| {
        let s = Sampling::TopK {
            k,
            temperature: 1.0,
            seed,
        };
        continue_ids(&model, &prompt, 20, s, None, Device::Cpu).unwrap()
    };
    let greedy = continue_ids(&model, &prompt, 20, Sampling::Greedy, None, Device::Cpu).unwrap();
    assert_eq!(draw(1, 5), greedy, "top-1 is greedy");
    assert_eq!(draw(8, 5), draw(8, 5), "same seed, same draw");
    assert_ne!(draw(50, 5), draw(50, 6), "another seed, another draw");
    // Every sampled token is among the 3 most likely at its step.
    let sampled = draw(3, 9);
    let mut ids = prompt.to_vec();
    for &t in &sampled {
        let input = Tensor::from_slice(&ids).view([1, -1]);
        let logits = tch::no_grad(|| model.gpt.logits(&model.gpt.forward(&input, false)));
        let (_, top) = logits.get(0).get(-1).topk(3, -1, true, true);
        assert!(Vec::<i64>::try_from(top).unwrap().contains(&t));
        ids.push(t);
    }
    // Generation past the learned positions keeps the last max_position tokens.
    let long = continue_ids(&model, &prompt, 40, Sampling::Greedy, None, Device::Cpu).unwrap();
    assert_eq!(long.len(), 40);
    // Bad requests are errors, not panics.
    let bad = Sampling::TopK {
        k: 0,
        temperature: 1.0,
        seed: 0,
    };
    assert!(continue_ids(&model, &prompt, 4, bad, None, Device::Cpu).is_err());
    assert!(continue_ids(
        &model,
        &[cfg.vocab_size],
        4,
        Sampling::Greedy,
        None,
        Device::Cpu
    )
    .is_err());
    assert!(continue_ids(&model, &[], 4, Sampling::Greedy, None, Device::Cpu).is_err());
}

#[test]
fn export_loads_in_transformers_strictly_with_the_same_logits_and_generation() {
    let _turn = serial();
    let docs = corpus();
    let tok = TextTokenizer::train(&docs, 200, 1, true).unwrap();
    let cfg = tiny(&tok);
    tch::manual_seed(3);
    let model = NextToken::new(&cfg, Device::Cpu);
    perturb(&model);
    let dir = tempfile::tempdir().unwrap();
    export_gpt2(&model, &tok, 24, dir.path()).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["model_type"], "gpt2");
    assert_eq!(config["n_embd"], 32);
    assert_eq!(config["n_inner"], 64);
    let loaded = tensor_io::load(&dir.path().join("model.safetensors")).unwrap();
    // GPT-2's Conv1D layout: [in, out].
    assert_eq!(
        loaded.tensors["transformer.h.0.attn.c_attn.weight"].size(),
        [32, 96]
    );
    assert_eq!(
        loaded.tensors["transformer.h.1.mlp.c_fc.weight"].size(),
        [32, 64]
    );
    assert_eq!(
        loaded.tensors["transformer.h.1.mlp.c_proj.weight"].size(),
        [64, 32]
    );
    assert!(
        !loaded.tensors.contains_key("lm_head.weight"),
        "tied, not stored"
    );
    assert_eq!(loaded.tensors.len(), 2 + 2 * 12 + 2);

    let data = pack(&docs, &tok, 24).unwrap();
    let input = causal_batch(&data, &[0, 5], tok.pad_id, tok.sep_id).views[0].shallow_clone();
    let logits = tch::no_grad(|| model.gpt.logits(&model.gpt.forward(&input, false)));
    let prompt: Vec<i64> = data.row(7)[..6].to_vec();
    let greedy = continue_ids(&model, &prompt, 12, Sampling::Greedy, None, Device::Cpu).unwrap();
    let save = |path: &Path, logits: &Tensor| {
        tensor_io::save(
            path,
            &[
                ("input_ids".into(), input.shallow_clone()),
                ("logits".into(), logits.to_kind(Kind::Float)),
                ("prompt_ids".into(), Tensor::from_slice(&prompt)),
                ("greedy_ids".into(), Tensor::from_slice(&greedy)),
            ],
            None,
        )
        .unwrap();
    };
    let reference = dir.path().join("reference.safetensors");
    save(&reference, &logits);
    let off = dir.path().join("off.safetensors");
    save(&off, &(&logits + 1e-3));
    let python = match std::env::var_os("SELFSUP_HF_PYTHON") {
        Some(p) => p,
        None if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("CI: SELFSUP_HF_PYTHON must name a Python with transformers (cargo xtask test sets it)")
        }
        None => {
            eprintln!("SELFSUP_HF_PYTHON not set: transformers check skipped (Rust side checked)");
            return;
        }
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benchmarks/check_hf_gpt2.py");
    let run = |reference: &Path| {
        let out = std::process::Command::new(&python)
            .arg(&script)
            .arg(dir.path())
            .arg(reference)
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
    assert!(code == Some(1) && s.contains("FAIL: logits differ"), "{s}");
}

#[test]
fn presets_parse_as_next_token() {
    for name in ["next-token-cpu.toml", "next-token-gpu.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../configs/text")
            .join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg = TextRunConfig::from_toml(&text, &path).unwrap();
        assert_eq!(cfg.method, TextMethodConfig::NextToken, "{name}");
        assert_eq!(cfg.data.sources.len(), 4, "{name}");
        let again = TextRunConfig::from_toml(&cfg.to_toml(), &path).unwrap();
        assert_eq!(again, cfg);
    }
}

#[test]
fn the_registry_runs_next_token_and_its_checkpoint_evaluates_and_exports() {
    let _turn = serial();
    let m = selfsup_text::MODALITY;
    assert!(m.methods().contains(&"next_token"));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let texts = root.join("texts");
    std::fs::create_dir_all(&texts).unwrap();
    for d in corpus().iter().take(12) {
        std::fs::write(texts.join(format!("{}.txt", d.id)), &d.text).unwrap();
    }
    let config = r#"
[run]
device = "cpu"
batch_size = 8
threads = 1
[data]
validation_fraction = 0.2
[[data.sources]]
format = "text"
path = "texts"
[tokenizer]
kind = "train-wordpiece"
vocab_size = 200
min_frequency = 1
[model]
hidden = 32
heads = 2
intermediate = 64
max_len = 24
max_position = 32
dropout = 0.0
[method]
name = "next_token"
[trainer]
epochs = 1
seed = 3
[eval]
val_sequences = 16
monitor_sequences = 16
"#;
    let plan = m.parse(config, &dir.path().join("nt.toml")).unwrap();
    let run = dir.path().join("run");
    let mut observer = Silent;
    let mut logged = Vec::new();
    let mut log = |l: &str| logged.push(l.to_string());
    let report = plan
        .pretrain(RunOptions {
            data: Some(root.clone()),
            run_dir: run.clone(),
            resume: false,
            observer: &mut observer,
            stop: Default::default(),
            git_commit: None,
            log: &mut log,
            distributed: None,
        })
        .unwrap();
    assert!(
        logged
            .iter()
            .any(|l| l.starts_with("training next_token: GPT-2")),
        "{logged:?}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["method"], "next_token");
    assert!(summary["baselines"]["bigram_perplexity"].as_f64().unwrap() > 1.0);
    assert_eq!(summary["samples"].as_array().unwrap().len(), 4);
    let lines = report.lines();
    assert!(
        lines[1].starts_with("selfsup next_token on 12 documents"),
        "{lines:?}"
    );
    let baselines = lines
        .iter()
        .find(|l| l.starts_with("  baselines on the same targets:"))
        .unwrap();

    // The checkpoint evaluates to the run's last validation and baselines.
    let checkpoint = run.join("checkpoint.safetensors");
    let (method, config_toml) = checkpoint_method(&checkpoint).unwrap();
    assert_eq!(method, "next_token");
    let request = |protocol| EvalRequest {
        protocol,
        checkpoint: &checkpoint,
        config_toml: &config_toml,
        data: Some(&root),
        device: DeviceChoice::Cpu,
    };
    let val = m.evaluate(&request("validation")).unwrap();
    let v = &summary["val"];
    let want = format!(
        "next-token accuracy {:.2}%, perplexity {:.1} ({} predicted tokens)",
        v["token_acc"].as_f64().unwrap() * 100.0,
        v["perplexity"].as_f64().unwrap(),
        v["predicted_tokens"]
    );
    assert!(val[0].contains(&want), "{val:?} / {want}");
    assert_eq!(&val[1], baselines.trim_start());
    // eval test: the validation documents no validation sequence reaches,
    // the baselines' smoothing kept from validation.
    let test = m.evaluate(&request("test")).unwrap();
    assert!(test[0].starts_with("test ("), "{test:?}");
    assert!(
        test[1]
            .starts_with("baselines on the same targets (add-k and lambda chosen on validation)"),
        "{test:?}"
    );
    let k = summary["baselines"]["bigram_add_k"].as_f64().unwrap();
    assert!(test[1].contains(&format!("(add-{k})")), "{test:?} / {k}");
    let err = m.evaluate(&request("linear")).unwrap_err().to_string();
    assert!(err.contains("[[eval.downstream]]"), "{err}");
    let err = m.evaluate(&request("finetune")).unwrap_err().to_string();
    assert!(err.contains("mlm checkpoint"), "{err}");

    // export: the GPT-2 layout, the same weights as the run's own export.
    let out = dir.path().join("export");
    let line = m.export(&checkpoint, &config_toml, &out).unwrap();
    assert!(line.contains("GPT2LMHeadModel"), "{line}");
    let a = tensor_io::load(&out.join("model.safetensors")).unwrap();
    let b = tensor_io::load(&run.join("export/model.safetensors")).unwrap();
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (name, t) in &a.tensors {
        assert!(t.equal(&b.tensors[name]), "{name}");
    }
}
