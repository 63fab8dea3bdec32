//! Data-parallel `selfsup pretrain` on two Gloo ranks over loopback: the
//! same run as one process with the global batch, resumable on another world
//! size, and a clear error (no hang) when a rank dies.
mod common;
mod fashion_fixture;

use common::{step_losses, text};
use fashion_fixture::write_fixture;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// SimCLR with batch norm everywhere (synchronised across ranks) and a
/// checkpoint after every step.
const CONFIG: &str = r#"
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
head = { hidden_dim = 32, out_dim = 16, layers = 2, batch_norm = true }

[trainer]
epochs = 2
seed = 11
checkpoint_every = 1
optimizer = { kind = "sgd", lr = 0.3 }
schedule = { warmup_epochs = 0.0 }

[eval]
monitor_images = 32
linear_probe = false
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("data")).unwrap();
        write_fixture(&root.join("data"), 160, 32);
        std::fs::write(root.join("run.toml"), config).unwrap();
        Self { _dir: dir, root }
    }

    fn cmd(&self, run: &str, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_selfsup"));
        c.arg("pretrain")
            .arg("--config")
            .arg(self.root.join("run.toml"))
            .arg("--data")
            .arg(self.root.join("data"))
            .arg("--run-dir")
            .arg(self.root.join(run))
            .args(extra)
            .env_remove("WORLD_SIZE")
            .env_remove("SLURM_NTASKS");
        c
    }

    fn run_dir(&self, run: &str) -> PathBuf {
        self.root.join(run)
    }

    /// Starts ranks `0..world` of `run` (torchrun's variables, loopback).
    fn spawn_ranks(&self, run: &str, world: usize, extra: &[&str]) -> Vec<Child> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        (0..world)
            .map(|rank| {
                self.cmd(run, extra)
                    .env("WORLD_SIZE", world.to_string())
                    .env("RANK", rank.to_string())
                    .env("LOCAL_RANK", rank.to_string())
                    .env("MASTER_ADDR", "127.0.0.1")
                    .env("MASTER_PORT", port.to_string())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect()
    }
}

fn wait_all(children: Vec<Child>) -> Vec<Output> {
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

/// The checkpoint's model tensors, by name.
fn weights(run_dir: &Path) -> Vec<(String, tch::Tensor)> {
    let mut w: Vec<(String, tch::Tensor)> =
        tch::Tensor::read_safetensors(run_dir.join("checkpoint.safetensors"))
            .unwrap()
            .into_iter()
            .filter(|(k, _)| !k.starts_with("optim"))
            .collect();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

fn assert_same_losses(a: &[(u64, f64)], b: &[(u64, f64)]) {
    assert_eq!(a.len(), b.len(), "{a:?}\n{b:?}");
    for ((sa, la), (sb, lb)) in a.iter().zip(b) {
        assert_eq!(sa, sb);
        assert!(
            (la - lb).abs() <= 1e-4 * la.abs().max(1.0),
            "step {sa}: {la} vs {lb}"
        );
    }
}

#[test]
fn two_ranks_train_like_one_process_with_the_global_batch_and_resume_on_one() {
    let f = Fixture::new(CONFIG);
    let single = f.cmd("single", &[]).output().unwrap();
    assert!(single.status.success(), "{}", text(&single));

    let ranks = wait_all(f.spawn_ranks("dp", 2, &["--batch-size", "16"]));
    for (r, o) in ranks.iter().enumerate() {
        assert!(o.status.success(), "rank {r}: {}", text(o));
    }
    let (want, got) = (
        step_losses(&f.run_dir("single")),
        step_losses(&f.run_dir("dp")),
    );
    assert_eq!(want.len(), 10); // 160 images / 32 per step, 2 epochs
    assert_same_losses(&want, &got);
    for ((name, a), (_, b)) in weights(&f.run_dir("single"))
        .iter()
        .zip(weights(&f.run_dir("dp")))
    {
        let diff = (a - &b).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "{name} differs by {diff}");
    }
    // Only rank 0 writes the run folder's summary and export.
    assert!(f.run_dir("dp").join("summary.json").exists());
    assert!(f.run_dir("dp").join("export").exists());

    // Interrupted on 2 ranks after 3 steps, resumed on 1: the same run.
    let stopped = wait_all(f.spawn_ranks("mixed", 2, &["--batch-size", "16", "--stop-after", "3"]));
    assert!(stopped.iter().all(|o| !o.status.success()));
    let resumed = f.cmd("mixed", &["--resume"]).output().unwrap();
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert_same_losses(&want, &step_losses(&f.run_dir("mixed")));
}

#[test]
fn a_killed_rank_stops_the_others_with_a_clear_error_and_the_run_resumes() {
    let slow = CONFIG.replace("epochs = 2", "epochs = 40");
    let f = Fixture::new(&slow);
    let mut ranks = f.spawn_ranks("killed", 2, &["--batch-size", "16", "--dist-timeout", "30"]);
    let metrics = f.run_dir("killed").join("metrics.jsonl");
    let start = Instant::now();
    while step_count(&metrics) < 4 {
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    ranks[1].kill().unwrap();
    let killed_at = Instant::now();
    let rank0 = ranks.remove(0).wait_with_output().unwrap();
    let _ = ranks[0].wait();
    assert!(
        killed_at.elapsed() < Duration::from_secs(30),
        "rank 0 took {:?}",
        killed_at.elapsed()
    );
    assert!(!rank0.status.success());
    let msg = text(&rank0);
    eprintln!("rank 0 after rank 1 was killed:\n{msg}");
    assert!(
        msg.contains("rank 0 of 2") && msg.contains("failed"),
        "{msg}"
    );

    // The last checkpoint is intact and the run resumes from it on one process.
    let resumed = f
        .cmd("killed", &["--resume", "--epochs", "3"])
        .output()
        .unwrap();
    let out = text(&resumed);
    assert!(
        resumed.status.success() && out.contains("resuming at step"),
        "{out}"
    );
    assert_eq!(step_losses(&f.run_dir("killed")).len(), 15);
}

fn step_count(metrics: &Path) -> usize {
    std::fs::read_to_string(metrics)
        .map(|s| {
            s.lines()
                .filter(|l| l.contains("\"kind\":\"step\""))
                .count()
        })
        .unwrap_or(0)
}
