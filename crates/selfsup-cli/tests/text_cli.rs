//! `selfsup pretrain` on a text config end to end, on a tiny corpus written
//! in the real formats (a folder of .txt, Brown word/tag files, SpamAssassin
//! mail folders): train, evaluate, probe, export; interrupt + resume replays
//! the uninterrupted losses; invalid UTF-8 is named or, when asked, replaced.
mod common;

use common::{step_losses, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
[[data.sources]]
format = "brown"
path = "brown"

[tokenizer]
kind = "train-wordpiece"
vocab_size = 300
min_frequency = 1

[model]
size = "tiny"
hidden = 32
heads = 2
intermediate = 64
max_len = 32
max_position = 64
dropout = 0.0

[method]
name = "mlm"

[trainer]
epochs = 2
seed = 3
checkpoint_every = 3
optimizer = { kind = "adamw", lr = 0.08, weight_decay = 0.01 }
schedule = { warmup_epochs = 0.5, decay = "linear" }

[eval]
val_sequences = 32
monitor_sequences = 32
probe = { epochs = 20 }
[[eval.downstream]]
name = "spam"
source = { format = "spam-assassin", path = "mail" }
[[eval.downstream]]
name = "genre"
source = { format = "brown", path = "brown" }
chunks_per_doc = 2
"#;

const TOPICS: [[&str; 4]; 4] = [
    ["cat", "dog", "bird", "horse"],
    ["red", "green", "blue", "yellow"],
    ["river", "mountain", "forest", "lake"],
    ["piano", "violin", "drum", "flute"],
];

fn sentence(t: usize, k: usize) -> String {
    let w = &TOPICS[t % 4];
    format!(
        "the {} sees the {} near a {}.",
        w[k % 4],
        w[(k + 1) % 4],
        w[(k / 4) % 4]
    )
}

fn write_corpus(dir: &Path) {
    let texts = dir.join("texts");
    std::fs::create_dir_all(&texts).unwrap();
    for d in 0..12 {
        let body: Vec<String> = (0..12).map(|k| sentence(d, k + d)).collect();
        std::fs::write(texts.join(format!("doc{d:02}.txt")), body.join("\n")).unwrap();
    }
    std::fs::write(texts.join("empty.txt"), "\n").unwrap();
    let brown = dir.join("brown");
    std::fs::create_dir_all(&brown).unwrap();
    let mut cats = String::new();
    for d in 0..10 {
        let name = format!("c{}{:02}", ['a', 'b'][d % 2], d);
        let lines: Vec<String> = (0..10)
            .map(|k| {
                sentence(d % 2, k)
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
    for (folder, t) in [("spam-1", 1), ("easy-ham-1", 3)] {
        let p = dir.join("mail").join(folder);
        std::fs::create_dir_all(&p).unwrap();
        for i in 0..10 {
            std::fs::write(
                p.join(format!("{i:04}")),
                format!(
                    "From: x\nSubject: y\n\n{}\n{}\n",
                    sentence(t, i),
                    sentence(t, i + 1)
                ),
            )
            .unwrap();
        }
    }
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_corpus(&dir.path().join("data"));
        std::fs::write(dir.path().join("mlm.toml"), CONFIG).unwrap();
        Self { dir }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn pretrain(&self, config: &str, run: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            "pretrain",
            "--config",
            config,
            "--data",
            "data",
            "--run-dir",
            run,
        ];
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_selfsup"))
            .args(&args)
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }
}

#[test]
fn text_pretrain_evaluates_exports_and_resumes_exactly() {
    let fx = Fixture::new();
    let out = fx.pretrain("mlm.toml", "full", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.path("full/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["corpus"]["empty_skipped"], 1, "{summary}");
    assert_eq!(summary["downstream"].as_array().unwrap().len(), 2);
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
        "tokenizer_config.json",
    ] {
        assert!(
            fx.path("full/export").join(f).exists(),
            "missing export/{f}"
        );
    }
    assert!(fx.path("full/tokenizer/tokenizer.json").exists());
    let printed = text(&out);
    for needle in [
        "unigram baseline",
        "random weights",
        "bag of words",
        "exported BertForMaskedLM",
    ] {
        assert!(
            printed.contains(needle),
            "{needle} missing from:\n{printed}"
        );
    }

    // Interrupted after step 4 (mid-epoch), then resumed: the same losses.
    // The same tokenizer too: WordPiece training is not bit-reproducible
    // across processes (ties), so the second run loads the first one's.
    let same_tok = CONFIG.replace(
        "kind = \"train-wordpiece\"\nvocab_size = 300\nmin_frequency = 1",
        &format!(
            "kind = \"file\"\npath = {:?}",
            fx.path("full/tokenizer/tokenizer.json")
        ),
    );
    assert_ne!(same_tok, CONFIG);
    std::fs::write(fx.path("same-tok.toml"), same_tok).unwrap();
    let out = fx.pretrain("same-tok.toml", "part", &["--stop-after", "4"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--resume"), "{}", text(&out));
    let out = fx.pretrain("same-tok.toml", "part", &["--resume"]);
    assert!(out.status.success(), "{}", text(&out));
    let (a, b) = (step_losses(&fx.path("full")), step_losses(&fx.path("part")));
    assert_eq!(a.len(), b.len());
    for ((s, la), (_, lb)) in a.iter().zip(&b) {
        assert!(
            (la - lb).abs() <= 1e-5 * la.abs().max(1.0),
            "step {s}: {la} vs {lb}"
        );
    }
}

#[test]
fn invalid_utf8_is_named_or_replaced_when_asked() {
    let fx = Fixture::new();
    std::fs::write(
        fx.path("data/texts/latin1.txt"),
        b"the caf\xe9 sees the river.\n",
    )
    .unwrap();
    let out = fx.pretrain("mlm.toml", "bad", &[]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("latin1.txt") && t.contains("byte offset 7") && t.contains("lossy_utf8"),
        "{t}"
    );
    let lossy = CONFIG.replace(
        "validation_fraction = 0.2",
        "validation_fraction = 0.2\nlossy_utf8 = true",
    );
    std::fs::write(
        fx.path("lossy.toml"),
        lossy.replace("epochs = 2", "epochs = 1"),
    )
    .unwrap();
    let out = fx.pretrain("lossy.toml", "lossy", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.path("lossy/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["corpus"]["lossy_files"], 1, "{summary}");
}

/// Two Gloo ranks on loopback: rank 0 trains the tokenizer and rank 1 loads
/// its file; only rank 0 evaluates, probes, exports and writes the summary.
#[test]
fn text_pretrain_on_two_ranks_shares_the_tokenizer() {
    let fx = Fixture::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ranks: Vec<_> = (0..2)
        .map(|rank| {
            Command::new(env!("CARGO_BIN_EXE_selfsup"))
                .args(["pretrain", "--config", "mlm.toml", "--data", "data"])
                .args(["--run-dir", "dp", "--batch-size", "4"])
                .current_dir(fx.dir.path())
                .env("WORLD_SIZE", "2")
                .env("RANK", rank.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = ranks
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for (r, o) in outs.iter().enumerate() {
        assert!(o.status.success(), "rank {r}: {}", text(o));
    }
    assert!(text(&outs[0]).contains("exported BertForMaskedLM"));
    assert!(!text(&outs[1]).contains("exported"), "{}", text(&outs[1]));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.path("dp/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["downstream"].as_array().unwrap().len(), 2);
    // Global batch 2 x 4: as many steps as one process with batch 8.
    let single = fx.pretrain("mlm.toml", "single", &[]);
    assert!(single.status.success(), "{}", text(&single));
    assert_eq!(
        step_losses(&fx.path("dp")).len(),
        step_losses(&fx.path("single")).len()
    );
}
