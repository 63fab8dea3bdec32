//! Tests of `finetune`.
use super::*;
use crate::config::default_settings;
use crate::model::ModelConfig;
use crate::workflow::TextModality;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use selfsup_core::device::DeviceChoice;
use selfsup_core::optim::{OptimConfig, OptimKind};
use selfsup_core::run::{seed_weights, RunOptions};
use selfsup_core::schedule::Decay;
use selfsup_core::workflow::{EvalRequest, Modality};
use std::sync::Mutex;

/// libtorch's generator is global: tests that seed it and build networks
/// hold this, so their draws are not interleaved.
static TORCH_RNG: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// A BERT small enough for the tests: 1 layer, hidden 16, vocabulary 40.
fn tiny_bert() -> BertConfig {
    ModelConfig {
        layers: Some(1),
        hidden: Some(16),
        heads: Some(2),
        intermediate: Some(32),
        max_len: 12,
        max_position: 16,
        dropout: 0.0,
        ..ModelConfig::default()
    }
    .resolve(40, 0)
    .unwrap()
}

/// `per` training and `per / 2` test sequences of each of 2 classes: class
/// `c` draws its 10 words from ids `10 + 10 c ..`, so the bag of tokens
/// separates them; padded to 12 with id 0, `[CLS]` = 2, `[SEP]` = 3.
fn separable(per: usize) -> LabelledSequences {
    let max_len = 12;
    let row = |c: usize, k: usize| -> Vec<i64> {
        let len = 6 + k % 5;
        let mut r = vec![2i64];
        r.extend((0..len).map(|j| (10 + 10 * c + (k * 7 + j * 3) % 10) as i64));
        r.push(3);
        r.resize(max_len, 0);
        r
    };
    let mut data = LabelledSequences {
        name: "separable".into(),
        classes: 2,
        max_len,
        train_ids: Vec::new(),
        train_labels: Vec::new(),
        test_ids: Vec::new(),
        test_labels: Vec::new(),
        scored_on: ScoredOn::Test,
    };
    for k in 0..per {
        for c in 0..2 {
            data.train_ids.extend(row(c, k));
            data.train_labels.push(c as i64);
        }
    }
    for k in 0..per / 2 {
        for c in 0..2 {
            data.test_ids.extend(row(c, per + k));
            data.test_labels.push(c as i64);
        }
    }
    data
}

fn settings(steps: usize, batch: usize) -> FinetuneConfig {
    FinetuneConfig {
        fractions: vec![0.25, 1.0],
        seeds: 2,
        steps,
        batch_size: batch,
        ..default_settings()
    }
}

#[test]
fn text_defaults_fill_the_keys_left_out_and_bad_settings_are_refused() {
    let origin = Path::new("ft.toml");
    let base = "[method]\nname = \"mlm\"\n";
    let cfg = TextRunConfig::from_toml(base, origin).unwrap();
    assert_eq!(cfg.eval.finetune, default_settings());
    assert!(!cfg.to_toml().contains("finetune"), "{}", cfg.to_toml());
    let ft = default_settings();
    assert_eq!(ft.optimizer.kind, OptimKind::AdamW);
    assert!(!ft.augment);
    assert_eq!(ft.fractions, vec![0.01, 0.1, 1.0]);
    // A partial table keeps text's defaults for the other keys, inside the
    // optimizer table too, and round-trips.
    let given = format!(
        "{base}[eval.finetune]\nsteps = 7\n[eval.finetune.optimizer]\nlr = 0.02\n\
         [[eval.downstream]]\nname = \"genre\"\nsource = {{ format = \"brown\", path = \"b\" }}\n"
    );
    let cfg = TextRunConfig::from_toml(&given, origin).unwrap();
    let ft = &cfg.eval.finetune;
    assert_eq!((ft.steps, ft.optimizer.lr, ft.seeds), (7, 0.02, 3));
    assert_eq!(ft.optimizer.kind, OptimKind::AdamW);
    assert_eq!(ft.optimizer.weight_decay, 0.01);
    assert_eq!(ft.schedule.decay, Decay::Linear);
    assert_eq!(
        TextRunConfig::from_toml(&cfg.to_toml(), origin).unwrap(),
        cfg
    );
    let with_sets = given.replace(
        "[eval.finetune]\n",
        "[eval]\nfinetune_sets = [\"genre\"]\n[eval.finetune]\n",
    );
    let cfg = TextRunConfig::from_toml(&with_sets, origin).unwrap();
    assert_eq!(cfg.eval.finetune_sets, vec!["genre".to_string()]);
    assert_eq!(
        TextRunConfig::from_toml(&cfg.to_toml(), origin).unwrap(),
        cfg
    );
    for (extra, needle) in [
        ("[eval.finetune]\nstepz = 1\n", "stepz"),
        (
            "[eval.finetune]\nfractions = [0.0]\n",
            "[eval.finetune] fractions: 0",
        ),
        (
            "[eval.finetune]\nfractions = [1.5]\n",
            "[eval.finetune] fractions: 1.5",
        ),
        ("[eval.finetune]\nseeds = 0\n", "seeds = 0"),
        (
            "[eval.finetune.optimizer]\nlr = -1.0\n",
            "[eval.finetune] optimizer.lr",
        ),
        ("[eval.finetune]\naugment = true\n", "no augmentation"),
        (
            "[eval]\nfinetune_sets = [\"genres\"]\n",
            "no [[eval.downstream]] set is named \"genres\"",
        ),
    ] {
        let e = TextRunConfig::from_toml(&format!("{base}{extra}"), origin)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ft.toml") && e.contains(needle), "{needle}: {e}");
    }
}

/// The probe's split, by document: every sequence of a document lands on
/// the same side, and the sides are the probe's `examples`.
#[test]
fn sequences_are_split_by_document_as_the_probe_splits_them() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    write_brown(root, 40);
    let tok = TextTokenizer::train(&brown_docs(root), 60, 1, true).unwrap();
    let d = downstream("genre", 3);
    let set = labelled_set(&d, root).unwrap();
    let data = LabelledSequences::new(&set, &tok, 12, 5, ScoredOn::Test).unwrap();
    let (ex, classes) = examples(&set, &tok, 12, 5).unwrap();
    assert_eq!(classes, 2);
    let n_test = ex.test.iter().filter(|&&x| x).count();
    assert_eq!(
        (data.test_len(), data.train_len()),
        (n_test, ex.labels.len() - n_test)
    );
    assert!(data.test_len() > 0 && data.train_len() > data.test_len());
    assert_eq!(data.train_ids.len(), data.train_len() * 12);
    // Test rows are the held-out documents' rows, in order.
    let test_rows: Vec<&[i64]> = ex
        .ids
        .chunks(12)
        .zip(&ex.test)
        .filter(|(_, &t)| t)
        .map(|(r, _)| r)
        .collect();
    assert_eq!(test_rows, data.test_ids.chunks(12).collect::<Vec<_>>());
    // Scored on validation: the test documents are left out, and the
    // training documents split in two, by document (each Brown text here
    // is one distinct row).
    let val = LabelledSequences::new(&set, &tok, 12, 5, ScoredOn::Validation).unwrap();
    assert_eq!(val.scored_on, ScoredOn::Validation);
    assert_eq!(val.train_len() + val.test_len(), data.train_len());
    assert!(val.test_len() > 0 && val.train_len() > val.test_len());
    let train_rows: Vec<&[i64]> = data.train_ids.chunks(12).collect();
    for row in val.test_ids.chunks(12).chain(val.train_ids.chunks(12)) {
        assert!(train_rows.contains(&row));
    }
    // An unlabelled set is refused naming it.
    std::fs::create_dir_all(root.join("plain")).unwrap();
    std::fs::write(root.join("plain/a.txt"), "the cat sees the dog").unwrap();
    std::fs::write(root.join("plain/b.txt"), "the dog sees the cat").unwrap();
    let plain = DownstreamConfig {
        name: "plain".into(),
        source: crate::corpus::SourceConfig::Text {
            path: "plain".into(),
        },
        chunks_per_doc: 1,
    };
    let e = LabelledSequences::new(
        &labelled_set(&plain, root).unwrap(),
        &tok,
        12,
        5,
        ScoredOn::Test,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("plain: fine-tuning needs labelled documents"),
        "{e}"
    );
}

/// Both arms of a seed train on the same sequences in the same order for
/// the same steps; the pre-trained arm starts from the checkpoint's BERT
/// (every variable but the classifier), the scratch arm does not.
#[test]
fn both_arms_share_the_subsets_batches_and_budget() {
    let _g = lock();
    let data = separable(12);
    let bert = tiny_bert();
    seed_weights(11);
    let pretrained = Mlm::new(&bert, Device::Cpu);
    let mut net = Net::new(&bert, 2, Device::Cpu);
    net.load_encoder(&pretrained).unwrap();
    let theirs = pretrained.var_store().variables();
    let mine = net.var_store().variables();
    for (name, t) in &mine {
        match theirs.get(name) {
            Some(s) => assert!(t.equal(s), "{name}"),
            None => assert!(name.starts_with("classifier."), "{name}"),
        }
    }
    // The MLM head is frozen; BERT and the classifier train.
    let trainable = Params::of(net.var_store()).names;
    assert!(
        trainable.iter().all(|n| !n.starts_with("cls.")),
        "{trainable:?}"
    );
    assert!(trainable.iter().any(|n| n == "classifier.weight"));
    assert!(trainable
        .iter()
        .any(|n| n.starts_with("bert.encoder.layer.0.")));

    let ft = settings(5, 8);
    let mut lines = Vec::new();
    let rows = finetune(&pretrained, &data, &ft, 4, Device::Cpu, &mut |l| {
        lines.push(l.to_string())
    })
    .unwrap();
    assert_eq!(lines.len(), 2 * 2 * 2);
    assert!(
        lines[0].starts_with("  25% labels, seed 0, pre-trained: final loss "),
        "{}",
        lines[0]
    );
    assert_eq!(rows.len(), 2);
    // 25 % of 24: 6, each class 3; 100 %: 24.
    assert_eq!(rows[0].labelled, vec![6, 6]);
    assert_eq!(rows[1].labelled, vec![24, 24]);
    for row in &rows {
        for (p, s) in row.pretrained.iter().zip(&row.scratch) {
            assert_eq!(p.batches_digest, s.batches_digest);
            assert_eq!(
                (p.steps, p.sequences_seen, p.distinct_sequences),
                (s.steps, s.sequences_seen, s.distinct_sequences)
            );
            assert_eq!(p.steps, 5);
            assert!((0.0..=1.0).contains(&p.accuracy) && (0.0..=1.0).contains(&s.accuracy));
            // Different encoders: different losses on the same batches.
            assert_ne!(p.first_loss, s.first_loss);
        }
        // Another seed draws another order.
        assert_ne!(
            row.pretrained[0].batches_digest,
            row.pretrained[1].batches_digest
        );
    }
    assert_eq!(rows[0].pretrained[0].sequences_seen, 5 * 6);
    assert_eq!(rows[1].pretrained[0].distinct_sequences, 24);
    let json = serde_json::to_value(&rows[1]).unwrap();
    assert_eq!(json["sequences"], serde_json::json!([24, 24]));
    let back: SequenceRun = serde_json::from_value(json["scratch"][1].clone()).unwrap();
    assert_eq!(back, rows[1].scratch[1]);
}

/// Trained end to end on a separable fixture, the classifier's loss falls
/// by far more than it moves between batches with the weights fixed, and
/// held-out accuracy is far above chance (1/2).
#[test]
fn training_end_to_end_learns_a_separable_set() {
    let _g = lock();
    let data = separable(24);
    let bert = tiny_bert();
    let ft = FinetuneConfig {
        steps: 40,
        batch_size: 8,
        optimizer: OptimConfig {
            lr: 0.05,
            ..default_settings().optimizer
        },
        ..default_settings()
    };
    let subset: Vec<usize> = (0..data.train_len()).collect();
    seed_weights(3);
    let net = Net::new(&bert, 2, Device::Cpu);
    // The noise: the untrained loss over the batches the run will see.
    let mut order = subset.clone();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut untrained = Vec::new();
    for _ in 0..6 {
        order.shuffle(&mut rng);
        for b in order.chunks(8) {
            let xs = data.rows(&data.train_ids, b);
            let y: Vec<i64> = b.iter().map(|&i| data.train_labels[i]).collect();
            let loss = tch::no_grad(|| {
                net.logits(&xs, false)
                    .cross_entropy_for_logits(&Tensor::from_slice(&y))
                    .double_value(&[])
            });
            untrained.push(loss);
        }
    }
    let (mean, std) = protocol::mean_std(&untrained);
    let run = train(&net, &data, &subset, &ft, 9).unwrap();
    let acc = net.accuracy(&data);
    assert!(
        run.first_loss - run.last_loss > 3.0 * std.max(1e-3) && run.last_loss < 0.5 * mean,
        "loss {} -> {} (untrained {mean} ± {std})",
        run.first_loss,
        run.last_loss
    );
    assert!(acc > 0.9, "test accuracy {acc}");
    assert_eq!(
        (run.steps, run.sequences_seen, run.distinct_sequences),
        (40, 320, 48)
    );
    // Too few labelled sequences, or rows outside the set: refused.
    let e = train(&net, &data, &[0], &ft, 0).unwrap_err().to_string();
    assert!(e.contains("at least 2 labelled sequences"), "{e}");
    let e = train(&net, &data, &[0, 999], &ft, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("999 is not one of the 48"), "{e}");
}

/// `n` Brown files of two genres (news: animals, music: instruments).
fn write_brown(root: &Path, n: usize) {
    let topics = [
        ["cat", "dog", "bird", "horse", "fish", "mouse"],
        ["piano", "violin", "drum", "flute", "guitar", "trumpet"],
    ];
    let brown = root.join("brown");
    std::fs::create_dir_all(&brown).unwrap();
    let mut cats = String::new();
    for d in 0..n {
        let w = &topics[d % 2];
        let name = format!("c{}{:02}", ['a', 'b'][d % 2], d);
        let lines: Vec<String> = (0..4)
            .map(|k| {
                format!(
                    "the/at {}/nn sees/vb the/at {}/nn ./.",
                    w[(d + k) % 6],
                    w[(d * 3 + k + 1) % 6]
                )
            })
            .collect();
        std::fs::write(brown.join(&name), format!("\n\t{}\n", lines.join("\n\t"))).unwrap();
        cats.push_str(&format!("{name} {}\n", ["news", "music"][d % 2]));
    }
    std::fs::write(brown.join("cats.txt"), cats).unwrap();
}

fn downstream(name: &str, chunks: usize) -> DownstreamConfig {
    DownstreamConfig {
        name: name.into(),
        source: crate::corpus::SourceConfig::Brown {
            path: "brown".into(),
        },
        chunks_per_doc: chunks,
    }
}

fn brown_docs(root: &Path) -> Vec<crate::corpus::Document> {
    labelled_set(&downstream("genre", 1), root).unwrap().docs
}

const CONFIG: &str = r#"
[run]
device = "cpu"
batch_size = 8
threads = 1

[data]
validation_fraction = 0.2
[[data.sources]]
format = "brown"
path = "brown"

[tokenizer]
kind = "train-wordpiece"
vocab_size = 80
min_frequency = 1

[model]
size = "tiny"
hidden = 16
heads = 2
layers = 1
intermediate = 32
max_len = 16
max_position = 16
dropout = 0.0

[method]
name = "mlm"

[trainer]
epochs = 1
seed = 3

[eval]
val_sequences = 8
monitor_sequences = 8
probe = { epochs = 5 }
[eval.finetune]
fractions = [0.2, 1.0]
seeds = 2
steps = 6
batch_size = 8
[[eval.downstream]]
name = "genre"
source = { format = "brown", path = "brown" }
chunks_per_doc = 1
"#;

/// `selfsup eval finetune` on a tiny MLM run: a header, a line per set
/// and per fraction, and finetune.json beside the checkpoint with both arms
/// of every seed; a config without labelled sets, an unknown set, and
/// another modality's config are refused naming the checkpoint.
#[test]
fn eval_finetune_on_a_checkpoint_writes_its_rows_and_refuses_bad_input() {
    let _g = lock();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("data");
    write_brown(&root, 30);
    let plan = TextModality.parse(CONFIG, Path::new("ft.toml")).unwrap();
    let run = t.path().join("run");
    let mut observer = selfsup_core::trainer::Silent;
    let mut log = |_: &str| {};
    plan.pretrain(RunOptions {
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
    let checkpoint = run.join("checkpoint.safetensors");
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("[eval.finetune]"), "{config}");
    let request = |config_toml| EvalRequest {
        protocol: FINETUNE,
        checkpoint: &checkpoint,
        config_toml,
        data: Some(&root),
        device: DeviceChoice::Cpu,
    };
    assert!(TextModality.evaluations().contains(&FINETUNE));
    // With --data, the file is named after the folder (core's rule).
    let written = selfsup_core::eval::result_file_name(FINETUNE_FILE, Some(&root));
    assert_eq!(written, "finetune-data.json");
    let lines = TextModality.evaluate(&request(&config)).unwrap();
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(
        lines[0].starts_with("mlm checkpoint ") && lines[0].contains("6 steps of up to 8"),
        "{}",
        lines[0]
    );
    assert!(lines[1].starts_with("genre (2 classes, "), "{}", lines[1]);
    assert!(
        lines[2].starts_with("  fine-tuning on 20% of the labels (")
            && lines[2].contains("sequences, 2 seeds): pre-trained "),
        "{}",
        lines[2]
    );
    assert!(lines[4].starts_with("wrote "), "{}", lines[4]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join(&written)).unwrap()).unwrap();
    assert_eq!(json["method"], "mlm");
    assert_eq!(json["settings"]["steps"], 6);
    let set = &json["sets"][0];
    assert_eq!(set["name"], "genre");
    let train = set["train_sequences"].as_u64().unwrap();
    assert_eq!(set["scored_on"], "test");
    assert_eq!(train + set["scored_sequences"].as_u64().unwrap(), 30);
    let rows = set["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["fraction"], 0.2);
    assert_eq!(rows[1]["sequences"][0].as_u64(), Some(train));
    for row in rows {
        for arm in ["pretrained", "scratch"] {
            let runs = row[arm].as_array().unwrap();
            assert_eq!(runs.len(), 2);
            let r: SequenceRun = serde_json::from_value(runs[0].clone()).unwrap();
            assert!((0.0..=1.0).contains(&r.accuracy) && r.last_loss.is_finite());
        }
        assert_eq!(
            row["pretrained"][1]["batches_digest"],
            row["scratch"][1]["batches_digest"]
        );
    }

    // Scored on the validation part: the training documents split in two.
    let on_val = config.replace("scored_on = \"test\"", "scored_on = \"validation\"");
    assert_ne!(on_val, config);
    let lines = TextModality.evaluate(&request(&on_val)).unwrap();
    assert!(lines[0].contains("validation accuracy"), "{}", lines[0]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join(&written)).unwrap()).unwrap();
    let set = &json["sets"][0];
    assert_eq!(set["scored_on"], "validation");
    assert_eq!(
        set["train_sequences"].as_u64().unwrap() + set["scored_sequences"].as_u64().unwrap(),
        train
    );

    // No labelled set in the config.
    let bare = config.replace("[[eval.downstream]]", "[[eval.ignored]]");
    let bare = bare.split("[[eval.ignored]]").next().unwrap().to_string();
    let e = TextModality
        .evaluate(&request(&bare))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("checkpoint.safetensors") && e.contains("no [[eval.downstream]] labelled set"),
        "{e}"
    );
    // An unknown set name.
    let unknown = config.replace("[eval]\n", "[eval]\nfinetune_sets = [\"topic\"]\n");
    assert_ne!(unknown, config);
    let e = TextModality
        .evaluate(&request(&unknown))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("checkpoint.safetensors") && e.contains("\"topic\"") && e.contains("\"genre\""),
        "{e}"
    );
    // Another modality's config.
    let vision = "[model]\nkind = \"resnet18\"\n[method]\nname = \"simclr\"\n";
    let e = TextModality
        .evaluate(&request(vision))
        .unwrap_err()
        .to_string();
    assert!(e.contains("checkpoint.safetensors"), "{e}");
}
