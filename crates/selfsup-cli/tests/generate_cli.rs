//! `selfsup generate` on a tiny next-token run: the continuation printed
//! is exactly the one the run computed in memory for its summary (greedy
//! and seeded top-k), from the run folder and from its checkpoint; greedy
//! is the same for `--top-k 1` and `--temperature 0`; a seed repeats its
//! text; an MLM checkpoint, an export folder, an empty prompt and a
//! `--max-new-tokens` out of range are refused with the fix.
use std::path::Path;
use std::process::{Command, Output};

/// stdout and stderr of a finished `selfsup` call.
fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const NEXT_TOKEN: &str = r#"
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
max_len = 32
max_position = 64
dropout = 0.0

[method]
name = "next_token"

[trainer]
epochs = 2
seed = 3
optimizer = { kind = "adamw", lr = 0.08, weight_decay = 0.01 }
schedule = { warmup_epochs = 0.5 }

[eval]
val_sequences = 16
monitor_sequences = 16
"#;

fn write_corpus(dir: &Path) {
    let words = [
        "the",
        "president",
        "said",
        "that",
        "it",
        "was",
        "a",
        "dark",
        "night",
    ];
    let texts = dir.join("texts");
    std::fs::create_dir_all(&texts).unwrap();
    for d in 0..10 {
        let lines: Vec<String> = (0..12)
            .map(|k| {
                (0..8)
                    .map(|i| words[(d + k * 3 + i * 5) % words.len()])
                    .collect::<Vec<_>>()
                    .join(" ")
                    + "."
            })
            .collect();
        std::fs::write(texts.join(format!("doc{d:02}.txt")), lines.join("\n")).unwrap();
    }
}

fn selfsup(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_selfsup"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn pretrain(dir: &Path, config: &str, run: &str) {
    let out = selfsup(
        dir,
        &[
            "pretrain",
            "--config",
            config,
            "--data",
            "data",
            "--run-dir",
            run,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim_end().to_string()
}

#[test]
fn generate_reproduces_the_runs_samples_and_refuses_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_corpus(&d.join("data"));
    std::fs::write(d.join("gpt.toml"), NEXT_TOKEN).unwrap();
    pretrain(d, "gpt.toml", "gpt");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("gpt/summary.json")).unwrap())
            .unwrap();
    let samples = summary["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 4, "{summary}");
    let generate = |target: &str, extra: &[&str]| {
        let mut args = vec!["generate", target];
        args.extend_from_slice(extra);
        selfsup(d, &args)
    };

    // The summary's samples: 24 tokens, greedy and top-k 40 at temperature 1, seed 3.
    for s in samples {
        let prompt = s["prompt"].as_str().unwrap();
        let expected = match s["text"].as_str().unwrap() {
            "" => prompt.to_string(),
            t => format!("{prompt} {t}"),
        };
        let sampling = s["sampling"].as_str().unwrap();
        let flags: &[&str] = if sampling == "greedy" {
            &["--top-k", "1"]
        } else {
            assert!(sampling.contains("k = 40") && sampling.contains("seed = 3"));
            &["--top-k", "40", "--temperature", "1", "--seed", "3"]
        };
        for target in ["gpt", "gpt/checkpoint.safetensors"] {
            let mut args = vec!["--prompt", prompt, "--max-new-tokens", "24"];
            args.extend_from_slice(flags);
            let out = generate(target, &args);
            assert!(out.status.success(), "{}", text(&out));
            assert_eq!(stdout(&out), expected, "{sampling} from {target}");
            assert!(text(&out).contains(sampling), "{}", text(&out));
        }
    }

    // Greedy three ways; a seed repeats itself and another seed may differ.
    let prompt = ["--prompt", "the dark night", "--max-new-tokens", "12"];
    let run = |extra: &[&str]| {
        let out = generate("gpt", &[&prompt[..], extra].concat());
        assert!(out.status.success(), "{}", text(&out));
        stdout(&out)
    };
    let greedy = run(&["--top-k", "1", "--temperature", "0.5"]);
    assert_eq!(run(&["--temperature", "0"]), greedy);
    assert_eq!(run(&["--top-k", "1", "--seed", "9"]), greedy);
    assert!(greedy.starts_with("the dark night"), "{greedy}");
    assert_eq!(run(&["--seed", "5"]), run(&["--seed", "5"]));

    // Refusals, each naming the fix.
    let refused = |target: &str, extra: &[&str], needles: &[&str]| {
        let out = generate(target, extra);
        assert!(!out.status.success(), "{}", text(&out));
        let msg = text(&out);
        for n in needles {
            assert!(msg.contains(n), "{n} missing from: {msg}");
        }
    };
    refused("gpt", &["--prompt", "  "], &["--prompt is empty"]);
    refused(
        "gpt",
        &["--prompt", "a", "--max-new-tokens", "0"],
        &["1 to 4096"],
    );
    refused(
        "gpt",
        &["--prompt", "a", "--max-new-tokens", "5000"],
        &["1 to 4096"],
    );
    refused("gpt", &["--prompt", "a", "--top-k", "0"], &["--top-k 0"]);
    refused(
        "gpt",
        &["--prompt", "a", "--temperature=-1"],
        &["--temperature -1"],
    );
    refused(
        "gpt/export",
        &["--prompt", "a"],
        &["export folder", "give the run folder"],
    );
    refused("nowhere", &["--prompt", "a"], &["no such file"]);

    // An MLM run is not a language model to continue text with.
    let mlm = NEXT_TOKEN
        .replace("name = \"next_token\"", "name = \"mlm\"")
        .replace("epochs = 2", "epochs = 1");
    std::fs::write(d.join("mlm.toml"), mlm).unwrap();
    pretrain(d, "mlm.toml", "mlm");
    refused(
        "mlm",
        &["--prompt", "a"],
        &["method 'mlm'", "name = \"next_token\""],
    );
}
