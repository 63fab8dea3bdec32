//! `selfsup pretrain` on a CLIP config end to end, on a folder of coloured
//! squares with a captions file: dispatch by `[method] name = "clip"`,
//! training, evaluation beside random weights, export, `selfsup embed`; a bad
//! caption line stops the run naming file and line unless `skip_bad` counts it.
mod common;

use common::{step_losses, text};
use std::path::Path;
use std::process::{Command, Output};

const CONFIG: &str = r#"
[run]
device = "cpu"
batch_size = 8
threads = 1

[data]
image_size = 8
held_out = 0.25
skip_bad = SKIP
[[data.sources]]
format = "captions"
file = "pairs/captions.csv"

[tokenizer]
kind = "train-wordpiece"
vocab_size = 100
min_frequency = 1

[model]
embed_dim = 8
[model.vision]
arch = "small_cnn"
channels = [8, 16]
[model.text]
size = "tiny"
layers = 1
hidden = 16
heads = 2
intermediate = 32
max_len = 8
max_position = 8
dropout = 0.0

[method]
name = "clip"

[augment]
views = 1
color_jitter = { p = 0.0 }
grayscale = { p = 0.0 }

[trainer]
epochs = 2
seed = 1
optimizer = { kind = "adamw", lr = 0.01, weight_decay = 0.0 }
schedule = { warmup_epochs = 0.0 }

[eval]
monitor_pairs = 8
"#;

const COLOURS: [(&str, [u8; 3]); 4] = [
    ("red", [220, 20, 20]),
    ("green", [20, 200, 20]),
    ("blue", [20, 20, 220]),
    ("yellow", [230, 220, 20]),
];

fn fixture(root: &Path, bad_line: bool) {
    let dir = root.join("pairs");
    std::fs::create_dir_all(&dir).unwrap();
    let mut csv = String::from("image,caption\n");
    for i in 0..32 {
        let (word, rgb) = COLOURS[i % 4];
        let name = format!("{i}.png");
        image::RgbImage::from_fn(8, 8, |x, y| {
            if (2..6).contains(&x) && (2..6).contains(&y) {
                image::Rgb(rgb)
            } else {
                image::Rgb([128, 128, 128])
            }
        })
        .save(dir.join(&name))
        .unwrap();
        csv += &format!("{name},a {word} square\n{name},{word}\n");
    }
    if bad_line {
        csv += "missing.png,a lost square\n"; // line 66
    }
    std::fs::write(dir.join("captions.csv"), csv).unwrap();
}

fn selfsup(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_selfsup"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn clip_trains_evaluates_exports_and_embeds() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fixture(root, true);
    let cfg = root.join("clip.toml");
    let run = root.join("run");
    let run_s = run.to_str().unwrap();
    let args = |cfg: &Path| {
        vec![
            "pretrain".to_string(),
            "--config".into(),
            cfg.to_str().unwrap().into(),
            "--data".into(),
            root.to_str().unwrap().into(),
            "--run-dir".into(),
            run_s.into(),
        ]
    };
    std::fs::write(&cfg, CONFIG.replace("SKIP", "false")).unwrap();
    let a = args(&cfg);
    let out = selfsup(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("captions.csv: line 66: image") && t.contains("missing.png"),
        "{t}"
    );

    std::fs::write(&cfg, CONFIG.replace("SKIP", "true")).unwrap();
    let out = selfsup(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("1 pairs skipped"), "{t}");
    assert!(t.contains("captions.csv held-out i->t R@1"), "{t}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["method"], "clip");
    assert_eq!(summary["skipped"]["missing_images"], 1);
    assert!(summary["random_weights"].as_array().unwrap().len() >= 6);
    assert!(run.join("curves.svg").exists());
    let steps = step_losses(&run);
    assert_eq!(steps.len() as u64, summary["steps"].as_u64().unwrap());
    assert!(steps.iter().all(|(_, l)| l.is_finite()));

    let export = run.join("export");
    let out_file = root.join("texts.jsonl");
    let texts = root.join("texts.txt");
    std::fs::write(&texts, "a red square\nblue\n").unwrap();
    let out = selfsup(&[
        "embed",
        "--checkpoint",
        export.to_str().unwrap(),
        "--texts",
        texts.to_str().unwrap(),
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], "a red square");
    assert_eq!(lines[0]["embedding"].as_array().unwrap().len(), 8);
    // The run's checkpoint embeds the same images as its export.
    let from = |ck: &Path, out: &Path| {
        let o = selfsup(&[
            "embed",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--images",
            root.join("pairs").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains("1 skipped"),
            "captions.csv is not an image"
        );
        std::fs::read_to_string(out).unwrap()
    };
    let a = from(&export, &root.join("a.jsonl"));
    let b = from(&run.join("checkpoint.safetensors"), &root.join("b.jsonl"));
    assert_eq!(a.lines().count(), 32);
    let first = |s: &str| -> Vec<f64> {
        let v: serde_json::Value = serde_json::from_str(s.lines().next().unwrap()).unwrap();
        serde_json::from_value(v["embedding"].clone()).unwrap()
    };
    let (ea, eb) = (first(&a), first(&b));
    assert!(ea.iter().zip(&eb).all(|(x, y)| (x - y).abs() < 1e-5));
}
