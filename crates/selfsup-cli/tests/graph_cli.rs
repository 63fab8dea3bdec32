//! `selfsup pretrain` on graph configs end to end: the karate-club preset
//! (built-in data) trains, evaluates beside both baselines and exports; an
//! edge list naming a node beyond the node count stops the run naming the
//! file and line; interrupt + resume replays the uninterrupted losses.
mod common;

use common::{step_losses, text};
use std::path::Path;
use std::process::{Command, Output};

fn selfsup(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_selfsup"))
        .args(args)
        .output()
        .unwrap()
}

fn preset() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs/graph/grace-karate-cpu.toml")
        .display()
        .to_string()
}

#[test]
fn karate_preset_trains_evaluates_exports_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    let data = dir.path().display().to_string();
    let o = selfsup(&[
        "pretrain",
        "--config",
        &preset(),
        "--data",
        &data,
        "--run-dir",
        full.to_str().unwrap(),
        "--epochs",
        "2",
        "--threads",
        "1",
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("pre-trained")
            && out.contains("random weights")
            && out.contains("raw features"),
        "{out}"
    );
    for f in [
        "embeddings.safetensors",
        "embeddings.npy",
        "encoder.safetensors",
        "labels.npy",
        "config.json",
        "graph/edges.npy",
    ] {
        assert!(full.join("export").join(f).exists(), "{f}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["data"]["nodes"], 34);
    // Interrupted after 60 steps (inside the second epoch), then resumed.
    let part = dir.path().join("part");
    let o = selfsup(&[
        "pretrain",
        "--config",
        &preset(),
        "--data",
        &data,
        "--run-dir",
        part.to_str().unwrap(),
        "--epochs",
        "2",
        "--threads",
        "1",
        "--stop-after",
        "60",
    ]);
    assert!(!o.status.success());
    let o = selfsup(&[
        "pretrain",
        "--config",
        &preset(),
        "--data",
        &data,
        "--run-dir",
        part.to_str().unwrap(),
        "--epochs",
        "2",
        "--threads",
        "1",
        "--resume",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let (a, b) = (step_losses(&full), step_losses(&part));
    assert_eq!(a.len(), 100);
    assert_eq!(a, b);
}

#[test]
fn an_edge_beyond_the_node_count_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("g.txt"), "0 1\n1 2\n2 9\n").unwrap();
    let config = dir.path().join("g.toml");
    std::fs::write(
        &config,
        "[run]\ndevice = \"cpu\"\n[data]\nformat = \"edge-list\"\npath = \"g.txt\"\nnum_nodes = 4\n[method]\nname = \"grace\"\n",
    )
    .unwrap();
    let o = selfsup(&[
        "pretrain",
        "--config",
        config.to_str().unwrap(),
        "--data",
        dir.path().to_str().unwrap(),
        "--run-dir",
        dir.path().join("run").to_str().unwrap(),
    ]);
    let out = text(&o);
    assert!(!o.status.success());
    assert!(
        out.contains("g.txt: line 3") && out.contains("node 9 is beyond the node count"),
        "{out}"
    );
}
