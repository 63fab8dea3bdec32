//! `examples/` on tiny data: the step of `cargo xtask test` (and `cargo
//! xtask examples`) that builds the examples for downstream users and runs
//! each one as its README says, on exports made here and now.
//!
//! In a temporary folder: a ResNet-18 SimCLR export (`selfsup pretrain`, one
//! epoch on 512 Fashion-MNIST images), a BERT export (one epoch on a small
//! generated corpus), a folder of 4 x 12 labelled PNGs cut from
//! Fashion-MNIST's test split and a file of sentences with one line twice.
//! Then `finetune-vision` on the IDX files (1% of the labels) and on the
//! folder, `embed-text` on the sentences, and `examples/python/
//! finetune_export.py` on both exports with the test Python. Each must
//! succeed and print what it should: the linear head on the frozen encoder
//! well above chance, the duplicated sentence as the most similar pair at
//! cosine 1, a strict load into torchvision and transformers, and
//! transformers' cosine table equal to `embed-text`'s.
use crate::paths::{target_dir, workspace_root};
use crate::torch_env::TorchEnv;
use crate::{bench_folder, cargo, fetch, run, selfsup_pretrain, PretrainArgs};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Classes and images per class of the labelled PNG folder.
const FOLDER_CLASSES: [&str; 4] = ["t-shirt", "trouser", "pullover", "dress"];
const FOLDER_PER_CLASS: usize = 12;
/// The linear head on the frozen encoder must beat this held-out accuracy
/// (chance is 10%; ~65% is usual even after one epoch of pre-training).
const MIN_PROBE_ACCURACY: f64 = 30.0;

/// The BERT run: one epoch of a 2-layer BERT on the generated corpus.
const TEXT_CONFIG: &str = r#"[run]
device = "cpu"
batch_size = 16

[data]
validation_fraction = 0.1
[[data.sources]]
format = "text"
path = "corpus"

[tokenizer]
kind = "train-wordpiece"
vocab_size = 400
min_frequency = 1
lowercase = true

[model]
size = "tiny"
max_len = 32

[method]
name = "mlm"

[trainer]
epochs = 1
seed = 0
optimizer = { kind = "adamw", lr = 8e-3, weight_decay = 0.01 }

[eval]
val_sequences = 32
monitor_sequences = 32
"#;

/// Sentences for `embed-text`: lines 2 and 5 are the same text.
const SENTENCES: &str = "the cat sleeps on the warm mat\n\
                         a dog runs across the green field\n\
                         the president speaks to the nation\n\
                         stock prices fell sharply today\n\
                         a dog runs across the green field\n";

/// A small deterministic English-like corpus: 24 files of 20 lines.
fn write_corpus(dir: &Path) -> Result<()> {
    let subjects = [
        "the cat",
        "a dog",
        "the president",
        "our nation",
        "the river",
        "a child",
    ];
    let verbs = [
        "sees",
        "follows",
        "remembers",
        "crosses",
        "builds",
        "defends",
    ];
    let objects = [
        "the old bridge",
        "a red bird",
        "the union",
        "the green field",
        "our future",
    ];
    std::fs::create_dir_all(dir)?;
    for f in 0..24usize {
        let text: String = (0..20usize)
            .map(|l| {
                let k = f * 20 + l;
                format!(
                    "{} {} {} and {} {}.\n",
                    subjects[k % subjects.len()],
                    verbs[(k / 3) % verbs.len()],
                    objects[(k / 7) % objects.len()],
                    subjects[(k / 5 + 1) % subjects.len()],
                    verbs[(k / 2 + 2) % verbs.len()],
                )
            })
            .collect();
        std::fs::write(dir.join(format!("doc{f:02}.txt")), text)?;
    }
    Ok(())
}

/// `root/<class>/<k>.png`: the first images of each folder class in
/// Fashion-MNIST's test split (labels 0..4).
fn write_image_folder(fmnist: &Path, root: &Path) -> Result<()> {
    let (_, images) = bench_folder::read_idx(&fmnist.join("t10k-images-idx3-ubyte.gz"), 3)?;
    let (_, labels) = bench_folder::read_idx(&fmnist.join("t10k-labels-idx1-ubyte.gz"), 1)?;
    for (label, class) in FOLDER_CLASSES.iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir)?;
        let which = labels
            .iter()
            .enumerate()
            .filter(|(_, &l)| usize::from(l) == label)
            .map(|(i, _)| i)
            .take(FOLDER_PER_CLASS);
        for (k, i) in which.enumerate() {
            let px = images
                .get(i * 784..(i + 1) * 784)
                .context("image index out of the IDX file")?;
            let img = image::GrayImage::from_raw(28, 28, px.to_vec()).context("28x28 image")?;
            let path = dir.join(format!("{k:02}.png"));
            img.save(&path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Runs `cmd`, echoes its standard output, and returns it; fails with its
/// command line and standard error when it fails.
fn output(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    eprintln!("xtask: {shown}");
    let out = cmd
        .output()
        .with_context(|| format!("could not start {shown}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{stdout}");
    if !out.status.success() {
        bail!(
            "{shown} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// The percentage after `held-out accuracy ` on the line starting with `prefix`.
fn accuracy_on(out: &str, prefix: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.starts_with(prefix))?;
    let rest = line.split("held-out accuracy ").nth(1)?;
    rest.split('%').next()?.trim().parse().ok()
}

/// The rows of an `n` x `n` cosine table in `out`: lines whose first `n`
/// words (after a row number when `numbered`) are all numbers.
fn cosine_rows(out: &str, n: usize, numbered: bool) -> Vec<Vec<f64>> {
    out.lines()
        .filter_map(|line| {
            let row: Vec<f64> = line
                .split_whitespace()
                .skip(usize::from(numbered))
                .take(n)
                .map_while(|w| w.parse().ok())
                .collect();
            (row.len() == n).then_some(row)
        })
        .collect()
}

/// Builds the examples and runs each on tiny data; `python` (torchvision,
/// timm, transformers) runs the Python example, which is skipped without
/// one. `threads` limits every run's CPU threads; `selfsup` is the binary
/// that makes the exports (default: selfsup-cli, built here).
///
/// `after_workspace_tests`: `cargo test --workspace` has just built the
/// workspace, so the bins are built with the same selection (`--workspace
/// --bins --tests`): the same feature unification reuses every compiled
/// dependency and only links the bins. Selecting the three packages alone
/// unifies features differently and compiles a second copy of tch and its
/// dependencies (on CI's disk, one copy too many).
pub fn check(
    env: &TorchEnv,
    python: Option<&Path>,
    threads: Option<usize>,
    selfsup: Option<PathBuf>,
    after_workspace_tests: bool,
) -> Result<()> {
    let root = workspace_root();
    let mut build = Command::new(cargo());
    if after_workspace_tests {
        build.args(["build", "--workspace", "--bins", "--tests"]);
    } else {
        build.args(["build", "-p", "finetune-vision", "-p", "embed-text"]);
        if selfsup.is_none() {
            build.args(["-p", "selfsup-cli"]);
        }
    }
    env.apply(&mut build);
    run(&mut build)?;
    let bin = |name: &str| -> PathBuf { target_dir().join("debug").join(name) };
    let selfsup = selfsup.unwrap_or_else(|| bin("selfsup"));
    let fmnist = fetch::fetch("fashion-mnist", false)?;
    let tmp = tempfile::tempdir().context("creating a temporary folder")?;
    let dir = tmp.path();
    let opts = PretrainArgs {
        epochs: Some(1),
        device: Some("cpu".into()),
        threads,
        ..PretrainArgs::default()
    };
    let thread_args: Vec<String> = threads
        .map(|t| vec!["--threads".to_string(), t.to_string()])
        .unwrap_or_default();

    // A ResNet-18 export (torchvision loads it) from 512 images.
    let vision_run = dir.join("vision-run");
    let mut cmd = selfsup_pretrain(
        &selfsup,
        &root.join("configs/vision/simclr-cpu.toml"),
        &fmnist,
        &vision_run,
        &opts,
    );
    for set in [
        "data.train_images=512",
        "model.arch=\"resnet18\"",
        "eval.knn_train_images=500",
        "eval.test_images=200",
        "eval.linear_probe=false",
        "eval.knn_every_epoch=false",
        "eval.monitor_images=64",
    ] {
        cmd.args(["--set", set]);
    }
    env.apply(&mut cmd);
    output(&mut cmd)?;
    let vision_export = vision_run.join("export");

    // A BERT export from a generated corpus.
    write_corpus(&dir.join("text-data/corpus"))?;
    let text_config = dir.join("text.toml");
    std::fs::write(&text_config, TEXT_CONFIG)?;
    let text_run = dir.join("text-run");
    let mut cmd = selfsup_pretrain(
        &selfsup,
        &text_config,
        &dir.join("text-data"),
        &text_run,
        &opts,
    );
    env.apply(&mut cmd);
    output(&mut cmd)?;
    let text_export = text_run.join("export");

    // finetune-vision: 1% of Fashion-MNIST's labels, then the PNG folder.
    let mut cmd = Command::new(bin("finetune-vision"));
    cmd.arg(&vision_export)
        .arg(&fmnist)
        .args(["1", "0.01", "--max-test", "1000", "--probe-epochs", "10"])
        .args(&thread_args);
    env.apply(&mut cmd);
    let out = output(&mut cmd)?;
    let probe = accuracy_on(&out, "before fine-tuning").with_context(|| {
        format!("finetune-vision printed no accuracy before fine-tuning:\n{out}")
    })?;
    if probe < MIN_PROBE_ACCURACY || accuracy_on(&out, "after fine-tuning").is_none() {
        bail!(
            "finetune-vision: a linear head on the frozen encoder reached {probe}% on \
             Fashion-MNIST (expected above {MIN_PROBE_ACCURACY}%), or no accuracy after \
             fine-tuning:\n{out}"
        );
    }
    let images = dir.join("images");
    write_image_folder(&fmnist, &images)?;
    let mut cmd = Command::new(bin("finetune-vision"));
    cmd.arg(&vision_export)
        .arg(&images)
        .args(["2", "1.0", "--batch-size", "8", "--probe-epochs", "10"])
        .args(&thread_args);
    env.apply(&mut cmd);
    let out = output(&mut cmd)?;
    if !out.contains("40 of 40 training images labelled") || accuracy_on(&out, "after").is_none() {
        bail!(
            "finetune-vision on {}: unexpected output:\n{out}",
            images.display()
        );
    }

    // embed-text: the duplicated line is the most similar pair.
    let sentences = dir.join("sentences.txt");
    std::fs::write(&sentences, SENTENCES)?;
    let mut cmd = Command::new(bin("embed-text"));
    cmd.arg(&text_export).arg(&sentences).args(&thread_args);
    env.apply(&mut cmd);
    let out = output(&mut cmd)?;
    let rust_table = cosine_rows(&out, SENTENCES.lines().count(), true);
    if !out.contains("most similar pair: lines 2 and 5 (cosine 1.000)") {
        bail!("embed-text: the duplicated sentence (lines 2 and 5) is not the most similar pair:\n{out}");
    }

    // The Python example: torchvision and transformers load the exports.
    let Some(py) = python else {
        eprintln!(
            "xtask: no Python with torchvision, timm and transformers: examples/python skipped"
        );
        return Ok(());
    };
    let mut cmd = Command::new(py);
    cmd.arg(root.join("examples/python/finetune_export.py"))
        .arg("--vision")
        .arg(&vision_export)
        .arg("--images")
        .arg(&images)
        .args(["--steps", "3"])
        .arg("--text")
        .arg(&text_export)
        .arg("--texts")
        .arg(&sentences);
    if let Some(t) = threads {
        cmd.env("OMP_NUM_THREADS", t.to_string());
    }
    let out = output(&mut cmd)?;
    if !out.contains("strict load") || !out.contains("fill-mask") {
        bail!("examples/python/finetune_export.py: unexpected output:\n{out}");
    }
    // transformers embeds the sentences as selfsup-text does (3 decimals).
    let py_table = cosine_rows(&out, SENTENCES.lines().count(), false);
    let agree = py_table.len() == rust_table.len()
        && !py_table.is_empty()
        && py_table
            .iter()
            .flatten()
            .zip(rust_table.iter().flatten())
            .all(|(a, b)| (a - b).abs() <= 0.0015);
    if !agree {
        bail!(
            "the cosine tables of embed-text and transformers differ: {rust_table:?} vs \
             {py_table:?}"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracies_are_read_from_their_lines() {
        let out = "data: x\nbefore fine-tuning (frozen encoder, linear head 10 epochs, loss 0.7): \
                   held-out accuracy 67.20%\nafter fine-tuning (encoder + head, 1 epochs): \
                   held-out accuracy 59.70% (-7.50 points)\n";
        assert_eq!(accuracy_on(out, "before fine-tuning"), Some(67.2));
        assert_eq!(accuracy_on(out, "after"), Some(59.7));
        assert_eq!(accuracy_on(out, "data"), None);
    }

    #[test]
    fn cosine_tables_are_read_with_or_without_row_numbers() {
        let rust = "texts: x (2 lines)\ncosine similarity (texts numbered by line):\n\
                    \x20         1      2\n   1  1.000  0.250  a b\n   2  0.250  1.000  c 3.5\n\
                    most similar pair: lines 1 and 2 (cosine 0.250)\n";
        let py = "text: e -> BertForMaskedLM; cosine similarity:\n  1.000  0.251  a b\n\
                  \x20 0.251  1.000  c 3.5\nfill-mask 'x': ['a']\n";
        assert_eq!(
            cosine_rows(rust, 2, true),
            vec![vec![1.0, 0.25], vec![0.25, 1.0]]
        );
        assert_eq!(
            cosine_rows(py, 2, false),
            vec![vec![1.0, 0.251], vec![0.251, 1.0]]
        );
    }

    #[test]
    fn the_corpus_is_deterministic_and_the_sentences_repeat_one_line() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write_corpus(a.path()).unwrap();
        write_corpus(b.path()).unwrap();
        let read = |d: &Path| std::fs::read_to_string(d.join("doc05.txt")).unwrap();
        assert_eq!(read(a.path()), read(b.path()));
        assert_eq!(read(a.path()).lines().count(), 20);
        let lines: Vec<&str> = SENTENCES.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[1], lines[4]);
        assert!(lines.iter().all(|l| l == &l.trim()));
    }
}
