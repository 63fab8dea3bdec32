//! Text through the registry entry (`selfsup_text::MODALITY`), on a tiny
//! corpus written as files: pre-training on core's `Run` writes
//! `config.toml` and `summary.json`; evaluating the run's checkpoint
//! reproduces the figures the run reported (validation, downstream probes
//! with their random-weights and bag-of-words baselines); an unknown
//! protocol is refused naming the offered ones; the export is written.
use selfsup_core::device::DeviceChoice;
use selfsup_core::run::RunOptions;
use selfsup_core::trainer::Silent;
use selfsup_core::workflow::{checkpoint_method, EvalRequest};
use selfsup_text::pretrain::TextRunConfig;
use std::path::Path;

const CONFIG: &str = r#"
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
size = "tiny"
hidden = 32
heads = 2
intermediate = 64
max_len = 24
max_position = 32
dropout = 0.0

[method]
name = "mlm"

[trainer]
epochs = 1
seed = 3

[eval]
val_sequences = 16
monitor_sequences = 16
probe = { epochs = 10 }
[[eval.downstream]]
name = "topic"
source = { format = "brown", path = "brown" }
"#;

const TOPICS: [[&str; 6]; 4] = [
    ["cat", "dog", "bird", "horse", "fish", "mouse"],
    ["red", "green", "blue", "yellow", "purple", "orange"],
    ["river", "mountain", "forest", "valley", "lake", "island"],
    ["piano", "violin", "drum", "flute", "guitar", "trumpet"],
];

fn sentence(t: usize, k: usize) -> String {
    let w = &TOPICS[t % 4];
    let verbs = ["sees", "likes", "follows", "finds"];
    format!(
        "the {} {} the {}.",
        w[k % 6],
        verbs[(k / 6) % 4],
        w[(k + 1) % 6]
    )
}

/// 16 documents of templated sentences in `texts/`, 12 labelled Brown
/// files (two genres, two topics) in `brown/`.
fn write_corpus(root: &Path) {
    let texts = root.join("texts");
    std::fs::create_dir_all(&texts).unwrap();
    for d in 0..16 {
        let body: Vec<String> = (0..12).map(|i| sentence(d, d * 31 + i * 7)).collect();
        std::fs::write(texts.join(format!("doc{d:02}.txt")), body.join("\n")).unwrap();
    }
    let brown = root.join("brown");
    std::fs::create_dir_all(&brown).unwrap();
    let mut cats = String::new();
    for d in 0..12 {
        let name = format!("c{}{:02}", ['a', 'b'][d % 2], d);
        let lines: Vec<String> = (0..6)
            .map(|k| {
                sentence(d % 2, d + k)
                    .split(' ')
                    .map(|w| format!("{w}/nn"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        std::fs::write(brown.join(&name), format!("\n\t{}\n", lines.join("\n\t"))).unwrap();
        cats.push_str(&format!("{name} {}\n", ["news", "music"][d % 2]));
    }
    std::fs::write(brown.join("cats.txt"), cats).unwrap();
}

#[test]
fn pretrain_writes_the_run_folder_and_the_checkpoint_evaluates_to_the_same_figures() {
    let m = selfsup_text::MODALITY;
    assert_eq!(
        (m.name(), m.methods()),
        ("text", &["mlm", "next_token"][..])
    );
    assert_eq!(
        m.evaluations(),
        &["linear", "validation", "finetune", "test"]
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    write_corpus(&root);
    let origin = dir.path().join("mlm.toml");
    let plan = m.parse(CONFIG, &origin).unwrap();
    assert!(plan.data_parallel());
    assert_eq!(plan.progress_unit(), Some((24.0, "tokens/s")));
    let err = m
        .parse(
            &CONFIG.replace("threads = 1", "threads = 1\nsteps = 2"),
            &origin,
        )
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("mlm.toml") && err.contains("steps"), "{err}");

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
        logged.iter().any(|l| l.starts_with("training mlm: BERT")),
        "{logged:?}"
    );

    // config.toml: the resolved config, which parses back to the plan's.
    let written = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let cfg = TextRunConfig::from_toml(&written, &run.join("config.toml")).unwrap();
    assert_eq!(cfg, TextRunConfig::from_toml(CONFIG, &origin).unwrap());
    assert_eq!(written, plan.to_toml());
    // summary.json: the summary, with the peak memory added by core.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["method"], "mlm");
    assert_eq!(
        summary["train_documents"].as_u64().unwrap()
            + summary["validation_documents"].as_u64().unwrap(),
        16
    );
    assert!(summary["final_loss"].as_f64().unwrap().is_finite());
    assert!(summary.get("peak_rss_mb").is_some(), "{summary}");
    assert_eq!(summary["downstream"][0]["task"], "topic");

    let lines = report.lines();
    assert_eq!(lines[0], "");
    assert!(
        lines[1].starts_with("selfsup mlm on 16 documents ("),
        "{lines:?}"
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("  exported BertForMaskedLM: ")));
    assert!(lines
        .iter()
        .any(|l| l.starts_with("  run folder: ") && l.contains(&run.display().to_string())));

    // The checkpoint, evaluated: the run's last validation and its probes.
    let checkpoint = run.join("checkpoint.safetensors");
    let (method, config_toml) = checkpoint_method(&checkpoint).unwrap();
    assert_eq!(method, "mlm");
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
        "masked-token accuracy {:.2}%, perplexity {:.1} ({} predicted tokens)",
        v["masked_acc"].as_f64().unwrap() * 100.0,
        v["perplexity"].as_f64().unwrap(),
        v["predicted_tokens"]
    );
    assert!(val[0].contains(&want), "{val:?} / {want}");
    let unigram = lines
        .iter()
        .find(|l| l.starts_with("  unigram baseline:"))
        .unwrap();
    assert_eq!(&val[1], unigram.trim_start(), "{val:?}");

    let linear = m.evaluate(&request("linear")).unwrap();
    let row = lines.iter().find(|l| l.starts_with("    topic ")).unwrap();
    assert_eq!(linear.last(), Some(row), "{linear:?} / {lines:?}");

    let err = m.evaluate(&request("knn")).unwrap_err().to_string();
    assert!(
        err.contains("knn") && err.contains("linear, validation"),
        "{err}"
    );
    let err = m.evaluate(&request("test")).unwrap_err().to_string();
    assert!(err.contains("only a next_token checkpoint"), "{err}");

    let out = dir.path().join("export");
    let line = m.export(&checkpoint, &config_toml, &out).unwrap();
    assert!(line.contains(&out.display().to_string()), "{line}");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // The same weights as the run's own export.
    let a = selfsup_core::tensor_io::load(&out.join("model.safetensors")).unwrap();
    let b = selfsup_core::tensor_io::load(&run.join("export/model.safetensors")).unwrap();
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (name, t) in &a.tensors {
        assert!(t.equal(&b.tensors[name]), "{name}");
    }
}
