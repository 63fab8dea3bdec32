//! `selfsup embed` for every modality's export or checkpoint: vision (a
//! tiny Fashion-MNIST-format run; images of any size), graph (the karate
//! preset; its own graph as an edge list gives the export's embeddings
//! back), text (a BERT export) into JSON Lines, `.npy` and `.safetensors`
//! with the ids beside; inputs that do not fit the model, missing
//! config.json and unknown formats are one-line errors naming the path.
mod common;
mod fashion_fixture;

use common::{step_losses, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn selfsup(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_selfsup"))
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An `.npy` file read by hand: (shape, float32 data).
fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
    let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = std::str::from_utf8(&b[10..10 + hl]).unwrap();
    assert!(header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"));
    let shape_at = header.find("'shape': (").unwrap() + 10;
    let inner = &header[shape_at..shape_at + header[shape_at..].find(')').unwrap()];
    let shape = inner
        .split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| x.trim().parse().unwrap())
        .collect();
    let data = b[10 + hl..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (shape, data)
}

/// The `embeddings` tensor of a `.safetensors` file: (shape, data).
fn read_safetensors(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let t = selfsup_core::tensor_io::load(path).unwrap().tensors;
    let e = &t["embeddings"];
    let shape = e.size().iter().map(|&d| d as usize).collect();
    (shape, Vec::<f32>::try_from(e.view([-1])).unwrap())
}

fn ids(out: &Path) -> Vec<String> {
    let stem = out.file_stem().unwrap().to_str().unwrap();
    std::fs::read_to_string(out.with_file_name(format!("{stem}.ids.txt")))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
}

const VISION: &str = r#"
[run]
device = "cpu"
batch_size = 32
threads = 1

[data]
format = "fashion-mnist"

[model]
arch = "small_cnn"
channels = [8, 16]

[method]
name = "simclr"
head = { hidden_dim = 16, out_dim = 8, layers = 2, batch_norm = true }

[trainer]
epochs = 1
seed = 3
optimizer = { kind = "sgd", lr = 0.1 }
schedule = { warmup_epochs = 0.0 }

[eval]
monitor_images = 32
linear_probe = false
"#;

#[test]
fn a_vision_export_and_its_checkpoint_embed_images_of_any_size() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("data")).unwrap();
    fashion_fixture::write_fixture(&root.join("data"), 64, 32);
    std::fs::write(root.join("run.toml"), VISION).unwrap();
    let run = root.join("run");
    let o = selfsup(&[
        "pretrain",
        "--config",
        s(&root.join("run.toml")),
        "--data",
        s(&root.join("data")),
        "--run-dir",
        s(&run),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!step_losses(&run).is_empty());
    let images = root.join("images");
    std::fs::create_dir(&images).unwrap();
    for (name, w, h) in [
        ("a.png", 28u32, 28u32),
        ("b.jpg", 40, 30),
        ("c.png", 12, 50),
    ] {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 9 % 256) as u8,
                (y * 5 % 256) as u8,
                ((x + y) * 3 % 256) as u8,
            ])
        });
        img.save(images.join(name)).unwrap();
    }
    std::fs::write(images.join("notes.txt"), "skip me").unwrap();
    let from_export = root.join("e.npy");
    let o = selfsup(&[
        "embed",
        "--checkpoint",
        s(&run.join("export")),
        "--images",
        s(&images),
        "--out",
        s(&from_export),
        "--batch-size",
        "2",
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("wrote 3 embeddings of dimension 16") && out.contains("1 skipped"),
        "{out}"
    );
    let (shape, a) = read_npy(&from_export);
    assert_eq!(shape, vec![3, 16]);
    assert_eq!(ids(&from_export), vec!["a.png", "b.jpg", "c.png"]);
    // The checkpoint (exported on the fly; image size from its dataset).
    let from_ckpt = root.join("c.safetensors");
    let o = selfsup(&[
        "embed",
        "--checkpoint",
        s(&run.join("checkpoint.safetensors")),
        "--images",
        s(&images),
        "--out",
        s(&from_ckpt),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let (shape, b) = read_safetensors(&from_ckpt);
    assert_eq!(shape, vec![3, 16]);
    assert!(close(&a, &b));
    assert_eq!(ids(&from_ckpt), ids(&from_export));
    // A vision export given texts.
    let texts = root.join("t.txt");
    std::fs::write(&texts, "hello\n").unwrap();
    let o = selfsup(&[
        "embed",
        "--checkpoint",
        s(&run.join("export")),
        "--texts",
        s(&texts),
        "--out",
        s(&root.join("x.npy")),
    ]);
    let out = text(&o);
    assert!(
        !o.status.success() && out.contains("is a vision export: give --images DIR"),
        "{out}"
    );
    assert_eq!(out.trim().lines().count(), 1, "{out}");
}

#[test]
fn a_graph_export_and_its_checkpoint_embed_a_graph_file_per_node() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let run = root.join("run");
    let preset =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/graph/grace-karate-cpu.toml");
    let o = selfsup(&[
        "pretrain",
        "--config",
        s(&preset),
        "--data",
        s(root),
        "--run-dir",
        s(&run),
        "--epochs",
        "1",
        "--threads",
        "1",
        "--set",
        "eval.splits=2",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let export = run.join("export");
    // The training graph as an edge list, from the export's own edges.npy.
    let b = std::fs::read(export.join("graph/edges.npy")).unwrap();
    let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
    let e: Vec<i64> = b[10 + hl..]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let m = e.len() / 2;
    let list: String = (0..m).map(|i| format!("{} {}\n", e[i], e[m + i])).collect();
    let edges = root.join("karate.txt");
    std::fs::write(&edges, list).unwrap();
    let out_file = root.join("nodes.npy");
    let o = selfsup(&[
        "embed",
        "--checkpoint",
        s(&export),
        "--graph",
        s(&edges),
        "--out",
        s(&out_file),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let (shape, got) = read_npy(&out_file);
    assert_eq!(shape, vec![34, 32]);
    assert_eq!(
        ids(&out_file),
        (0..34).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    let (_, want) = read_npy(&export.join("embeddings.npy"));
    assert!(close(&got, &want), "the export's own embeddings");
    let jsonl = root.join("nodes.jsonl");
    let o = selfsup(&[
        "embed",
        "--checkpoint",
        s(&run.join("checkpoint.safetensors")),
        "--graph",
        s(&edges),
        "--out",
        s(&jsonl),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 34);
    assert_eq!(rows[5]["id"], "5");
    let r5: Vec<f32> = serde_json::from_value(rows[5]["embedding"].clone()).unwrap();
    assert!(close(&r5, &want[5 * 32..6 * 32]));
    // A graph checkpoint given an audio folder.
    let o = selfsup(&[
        "embed",
        "--checkpoint",
        s(&run.join("checkpoint.safetensors")),
        "--audio",
        s(root),
        "--out",
        s(&jsonl),
    ]);
    let out = text(&o);
    assert!(
        !o.status.success() && out.contains("graph checkpoint (method 'grace'): give --graph FILE"),
        "{out}"
    );
}

fn text_export(dir: &Path) -> PathBuf {
    use selfsup_text::corpus::Document;
    let docs: Vec<Document> = (0..6)
        .map(|i| Document {
            id: format!("d{i}"),
            text: format!("the cat {i} sees the dog\na red bird over the river {i}"),
            label: None,
        })
        .collect();
    let tok = selfsup_text::tokenizer::TextTokenizer::train(&docs, 80, 1, true).unwrap();
    let cfg = selfsup_text::model::ModelConfig {
        layers: Some(1),
        hidden: Some(8),
        heads: Some(2),
        intermediate: Some(16),
        max_len: 10,
        max_position: 16,
        ..Default::default()
    }
    .resolve(tok.vocab_size, tok.pad_id)
    .unwrap();
    let mlm = selfsup_text::methods::Mlm::new(&cfg, tch::Device::Cpu);
    let out = dir.join("text-export");
    selfsup_text::export::export_mlm(&mlm, &tok, 10, &out).unwrap();
    out
}

#[test]
fn a_text_export_embeds_lines_and_bad_input_is_one_line_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let export = text_export(root);
    let texts = root.join("texts.txt");
    std::fs::write(&texts, "the cat sees the dog\na red bird\n").unwrap();
    let out_file = root.join("t.safetensors");
    let o = selfsup(&[
        "embed",
        "--checkpoint",
        s(&export),
        "--texts",
        s(&texts),
        "--out",
        s(&out_file),
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("ids in") && out.contains("t.ids.txt"), "{out}");
    let (shape, _) = read_safetensors(&out_file);
    assert_eq!(shape, vec![2, 8]);
    assert_eq!(ids(&out_file), vec!["the cat sees the dog", "a red bird"]);

    let fails = |args: &[&str], needles: &[&str]| {
        let o = selfsup(args);
        let out = text(&o);
        assert!(!o.status.success(), "{args:?}: {out}");
        assert_eq!(out.trim().lines().count(), 1, "{args:?}: one line: {out}");
        for n in needles {
            assert!(out.contains(n), "{args:?}: {n:?} in {out}");
        }
    };
    let x = root.join("x.npy");
    // Input of another modality.
    fails(
        &[
            "embed",
            "--checkpoint",
            s(&export),
            "--images",
            s(root),
            "--out",
            s(&x),
        ],
        &["text (BERT) export: give --texts FILE"],
    );
    // A text file with no lines.
    let empty = root.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    fails(
        &[
            "embed",
            "--checkpoint",
            s(&export),
            "--texts",
            s(&empty),
            "--out",
            s(&x),
        ],
        &["empty.txt", "no text"],
    );
    // An export folder without config.json.
    let bare = root.join("bare");
    std::fs::create_dir(&bare).unwrap();
    fails(
        &[
            "embed",
            "--checkpoint",
            s(&bare),
            "--texts",
            s(&texts),
            "--out",
            s(&x),
        ],
        &["bare/config.json", "no such file"],
    );
    // An unknown output format, refused before anything is loaded.
    fails(
        &[
            "embed",
            "--checkpoint",
            s(&bare),
            "--texts",
            s(&texts),
            "--out",
            s(&root.join("o.csv")),
        ],
        &["o.csv", ".jsonl, .npy, .safetensors"],
    );
    // Two inputs.
    fails(
        &[
            "embed",
            "--checkpoint",
            s(&export),
            "--texts",
            s(&texts),
            "--graph",
            s(&texts),
            "--out",
            s(&x),
        ],
        &["exactly one of --images"],
    );
    assert!(!x.exists());
}

/// Mono 16 kHz 16-bit tones of 0.6 s.
fn write_tones(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(dir.join(format!("clip{i}.wav")), spec).unwrap();
        let f = 180.0 + 50.0 * i as f64;
        for t in 0..9600 {
            let x = 0.4 * (std::f64::consts::TAU * f * t as f64 / 16_000.0).sin();
            w.write_sample((x * 20_000.0) as i16).unwrap();
        }
        w.finalize().unwrap();
    }
}

const AUDIO: &str = r#"
[run]
device = "cpu"
batch_size = 4
threads = 1

[data]
sources = ["."]
crop_seconds = 0.5
monitor_clips = 2

[model]
conv_dim = [16, 16, 16, 16, 16, 16, 16]
hidden_size = 16
num_hidden_layers = 1
num_attention_heads = 2
intermediate_size = 32
num_conv_pos_embeddings = 8
num_conv_pos_embedding_groups = 2
num_codevector_groups = 2
num_codevectors_per_group = 8
codevector_dim = 16
proj_codevector_dim = 16
num_negatives = 5

[method]
name = "wav2vec2"

[trainer]
epochs = 1
seed = 0
"#;

#[test]
fn an_audio_export_and_its_checkpoint_embed_the_same_clips() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_tones(&root.join("data"), 8);
    std::fs::write(root.join("audio.toml"), AUDIO).unwrap();
    let run = root.join("run");
    let o = selfsup(&[
        "pretrain",
        "--config",
        s(&root.join("audio.toml")),
        "--data",
        s(&root.join("data")),
        "--run-dir",
        s(&run),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let clips = root.join("clips");
    write_tones(&clips, 3);
    std::fs::write(clips.join("cover.png"), b"not audio").unwrap();
    let mut got = Vec::new();
    for (ck, out) in [
        (run.join("export"), root.join("a.npy")),
        (run.join("checkpoint.safetensors"), root.join("b.npy")),
    ] {
        let o = selfsup(&[
            "embed",
            "--checkpoint",
            s(&ck),
            "--audio",
            s(&clips),
            "--out",
            s(&out),
        ]);
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        assert!(
            t.contains("wrote 3 embeddings of dimension 16") && t.contains("1 skipped"),
            "{t}"
        );
        assert_eq!(ids(&out), vec!["clip0.wav", "clip1.wav", "clip2.wav"]);
        let (shape, data) = read_npy(&out);
        assert_eq!(shape, vec![3, 16]);
        got.push(data);
    }
    assert!(close(&got[0], &got[1]));
    // An unreadable WAV is named.
    std::fs::write(clips.join("clip9.wav"), b"RIFF\x10\x00\x00\x00WAVEjunk").unwrap();
    let o = selfsup(&[
        "embed",
        "--checkpoint",
        s(&run.join("export")),
        "--audio",
        s(&clips),
        "--out",
        s(&root.join("c.npy")),
    ]);
    let t = text(&o);
    assert!(!o.status.success() && t.contains("clip9.wav"), "{t}");
    assert_eq!(t.trim().lines().count(), 1, "{t}");
}

const TEXT: &str = r#"
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
vocab_size = 120
min_frequency = 1

[model]
size = "tiny"
hidden = 16
heads = 2
intermediate = 32
max_len = 16
max_position = 32
dropout = 0.0

[method]
name = "mlm"

[trainer]
epochs = 1
seed = 3

[eval]
val_sequences = 8
monitor_sequences = 8
"#;

#[test]
fn a_text_run_export_and_checkpoint_embed_the_same_lines() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let texts_dir = root.join("data/texts");
    std::fs::create_dir_all(&texts_dir).unwrap();
    for d in 0..10 {
        let body: Vec<String> = (0..8)
            .map(|k| format!("the cat {} sees the dog near river {}", (d + k) % 5, k % 3))
            .collect();
        std::fs::write(texts_dir.join(format!("d{d}.txt")), body.join("\n")).unwrap();
    }
    std::fs::write(root.join("mlm.toml"), TEXT).unwrap();
    let run = root.join("run");
    let o = selfsup(&[
        "pretrain",
        "--config",
        s(&root.join("mlm.toml")),
        "--data",
        s(&root.join("data")),
        "--run-dir",
        s(&run),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let lines = root.join("lines.txt");
    std::fs::write(&lines, "the cat sees the dog\nnear river 2\n").unwrap();
    let mut got = Vec::new();
    for (ck, out) in [
        (run.join("export"), root.join("a.safetensors")),
        (
            run.join("checkpoint.safetensors"),
            root.join("b.safetensors"),
        ),
    ] {
        let o = selfsup(&[
            "embed",
            "--checkpoint",
            s(&ck),
            "--texts",
            s(&lines),
            "--out",
            s(&out),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(ids(&out), vec!["the cat sees the dog", "near river 2"]);
        let (shape, data) = read_safetensors(&out);
        assert_eq!(shape, vec![2, 16]);
        got.push(data);
    }
    assert!(close(&got[0], &got[1]));
}
