//! `cargo xtask pretrain-graph` and `cargo xtask bench --graph`.
//!
//! `pretrain-graph` runs `selfsup pretrain` on `configs/graph/<preset>.toml`
//! (default `grace-cpu`: GRACE on the Drosophila connectome), fetching the
//! dataset its `[data] format` needs unless `--data` names a root.
//!
//! `bench --graph` trains the GRACE and DGI presets with selfsup and with
//! PyTorch Geometric (`benchmarks/pyg_graph.py`, with the edge index, a
//! sparse adjacency and DenseGCNConv; DGI's layers cached) on the same graph (the one selfsup
//! exports), the same hyper-parameters (read from the preset) and
//! the same thread count, in the same run, and prints seconds per epoch and
//! probe accuracy side by side (also `target/bench/graph.md`).
use crate::{
    build_cli, fetch, paths, preset_config, run, selfsup_pretrain, torch_env, PretrainArgs,
};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Options of `cargo xtask pretrain-graph`.
#[derive(clap::Args)]
pub struct PretrainGraphArgs {
    /// configs/graph/<preset>.toml: grace-cpu (default), dgi-cpu, graphcl-cpu
    /// (mice), graphcl-qm9-cpu, grace-karate-cpu, gae-cpu, gae-gpu,
    /// grace-link-cpu, dgi-link-cpu.
    #[arg(long, default_value = "grace-cpu")]
    preset: String,
    /// Shorthand for `--preset <method>-cpu` (grace, dgi, graphcl, gae).
    #[arg(long, conflicts_with = "preset")]
    method: Option<String>,
    /// Data root (default: ~/.cache/selfsup/datasets, fetched as needed).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long)]
    epochs: Option<usize>,
    /// cpu, cuda or auto.
    #[arg(long)]
    device: Option<String>,
    /// Run folder (default: runs/<preset>).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Continue the run in the run folder from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Replace an earlier run in the run folder (its checkpoint, metrics,
    /// curves, summary and export); without it such a folder is refused.
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
}

/// The registry dataset a graph config reads (by its `[data] format`).
fn dataset_of(config: &Path) -> Result<Option<&'static str>> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let v: toml::Value =
        toml::from_str(&text).with_context(|| format!("parsing {}", config.display()))?;
    let format = v
        .get("data")
        .and_then(|d| d.get("format"))
        .and_then(|f| f.as_str())
        .unwrap_or("drosophila");
    Ok(match format {
        "drosophila" | "mice" => Some("graspologic"),
        "qm9" => Some("qm9"),
        _ => None,
    })
}

fn pretrain(
    preset: &str,
    data: Option<PathBuf>,
    run_dir: &Path,
    opts: &PretrainArgs,
) -> Result<PathBuf> {
    let config = preset_config(&format!("graph/{preset}.toml"))?;
    let env = torch_env::ensure()?;
    let data = match data {
        Some(d) => d,
        None => {
            if let Some(name) = dataset_of(&config)? {
                fetch::fetch(name, false)?;
            }
            paths::cache_dir().join("datasets")
        }
    };
    let bin = build_cli(&env)?;
    let mut cmd = selfsup_pretrain(&bin, &config, &data, run_dir, opts);
    env.apply(&mut cmd);
    run(&mut cmd)?;
    Ok(config)
}

/// `cargo xtask pretrain-graph`.
pub fn pretrain_graph(a: PretrainGraphArgs) -> Result<()> {
    let preset = a.method.map_or(a.preset, |m| format!("{m}-cpu"));
    let run_dir = a
        .run_dir
        .unwrap_or_else(|| paths::workspace_root().join("runs").join(&preset));
    let opts = PretrainArgs {
        epochs: a.epochs,
        device: a.device,
        threads: None,
        resume: a.resume,
        overwrite: a.overwrite,
        recordings: false,
    };
    pretrain(&preset, a.data, &run_dir, &opts).map(|_| ())
}

fn get<'a>(v: &'a toml::Value, path: &[&str]) -> Option<&'a toml::Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn num(v: &toml::Value, path: &[&str], default: f64) -> f64 {
    get(v, path)
        .and_then(|x| x.as_float().or_else(|| x.as_integer().map(|i| i as f64)))
        .unwrap_or(default)
}

/// The flags of `pyg_graph.py` that reproduce a preset.
fn pyg_flags(config: &Path, epochs: Option<usize>) -> Result<(Vec<String>, usize)> {
    let v: toml::Value = toml::from_str(&std::fs::read_to_string(config)?)?;
    let method = get(&v, &["method", "name"])
        .and_then(|m| m.as_str())
        .unwrap_or("grace")
        .to_string();
    let steps = num(&v, &["run", "steps_per_epoch"], 50.0) as usize;
    let trainer_epochs = epochs.unwrap_or(num(&v, &["trainer", "epochs"], 10.0) as usize);
    let threads = num(&v, &["run", "threads"], 2.0) as usize;
    let dims: Vec<String> = get(&v, &["encoder", "dims"])
        .and_then(|d| d.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_integer())
                .map(|i| i.to_string())
                .collect()
        })
        .unwrap_or_default();
    let pair = |key: &str| {
        format!(
            "{},{}",
            num(&v, &["augment", "view1", key], 0.0),
            num(&v, &["augment", "view2", key], 0.0)
        )
    };
    let flags = vec![
        format!("--method={method}"),
        format!("--epochs={}", trainer_epochs * steps),
        format!("--lr={}", num(&v, &["trainer", "optimizer", "lr"], 5e-4)),
        format!(
            "--weight-decay={}",
            num(&v, &["trainer", "optimizer", "weight_decay"], 0.0)
        ),
        format!("--dims={}", dims.join(",")),
        format!(
            "--proj-hidden={}",
            num(&v, &["method", "proj_hidden"], 128.0)
        ),
        format!("--tau={}", num(&v, &["method", "temperature"], 0.4)),
        format!("--drop-edge={}", pair("edge_drop")),
        format!("--mask-feature={}", pair("feature_mask")),
        format!("--threads={threads}"),
        format!("--seed={}", num(&v, &["trainer", "seed"], 0.0)),
    ];
    Ok((flags, threads))
}

/// `cargo xtask bench --graph [--epochs N]`.
pub fn bench(epochs: Option<usize>) -> Result<()> {
    let Some(py) = crate::bench::python_with("torch_geometric") else {
        bail!(
            "the bench venv cannot import torch_geometric: `{}/bin/pip install torch_geometric`",
            crate::bench::bench_venv().display()
        );
    };
    let root = paths::workspace_root();
    let mut rows = Vec::new();
    for preset in ["grace-cpu", "dgi-cpu"] {
        let run_dir = root.join("target/bench/graph").join(preset);
        let config = preset_config(&format!("graph/{preset}.toml"))?;
        let (flags, threads) = pyg_flags(&config, epochs)?;
        let opts = PretrainArgs {
            epochs,
            device: Some("cpu".into()),
            threads: Some(threads),
            resume: false,
            overwrite: true,
            recordings: false,
        };
        pretrain(preset, None, &run_dir, &opts)?;
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json"))?)?;
        // PyG three times: its usual edge-index form, its sparse-adjacency
        // form and DenseGCNConv (DGI's GCNConv cached, GRACE's cannot be).
        let pyg = |adj: &str| -> Result<serde_json::Value> {
            let out = Command::new(&py)
                .arg(root.join("benchmarks/pyg_graph.py"))
                .arg(format!(
                    "--graph={}",
                    run_dir.join("export/graph").display()
                ))
                .args(&flags)
                .arg(format!("--adj={adj}"))
                .env("OMP_NUM_THREADS", threads.to_string())
                .output()
                .context("running benchmarks/pyg_graph.py")?;
            if !out.status.success() {
                bail!(
                    "pyg_graph.py --adj={adj} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(serde_json::from_str(
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .lines()
                    .last()
                    .unwrap_or(""),
            )?)
        };
        let (p, q, d) = (pyg("edge_index")?, pyg("sparse")?, pyg("dense")?);
        let f = |v: &serde_json::Value, k: &[&str]| {
            k.iter().fold(v, |v, k| &v[*k]).as_f64().unwrap_or(f64::NAN)
        };
        rows.push(format!(
            "| {preset} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} +- {:.2} | {:.2} +- {:.2} | {:.2} | {:.2} |",
            p["epochs"],
            f(&s, &["seconds_per_pass"]) * 1e3,
            f(&p, &["seconds_per_epoch"]) * 1e3,
            f(&q, &["seconds_per_epoch"]) * 1e3,
            f(&d, &["seconds_per_epoch"]) * 1e3,
            f(&s, &["eval", "validation", "pretrained", "mean"]) * 100.0,
            f(&p, &["val_probe_accuracy"]) * 100.0,
            f(&s, &["eval", "pretrained", "mean"]) * 100.0,
            f(&s, &["eval", "pretrained", "std"]) * 100.0,
            f(&p, &["probe_accuracy"]) * 100.0,
            f(&p, &["probe_std"]) * 100.0,
            f(&s, &["eval", "random_weights", "mean"]) * 100.0,
            f(&s, &["eval", "raw_features", "mean"]) * 100.0,
        ));
    }
    let table = format!(
        "| preset | epochs | selfsup ms/epoch | PyG ms/epoch (edge index) | PyG ms/epoch (sparse adjacency) | PyG ms/epoch (dense) | selfsup validation probe % | PyG validation probe % | selfsup test probe % | PyG test probe % | random weights test % | raw features test % |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n{}\n",
        rows.join("\n")
    );
    println!("\n{table}");
    let md = root.join("target/bench/graph.md");
    std::fs::write(&md, &table).with_context(|| format!("writing {}", md.display()))?;
    println!("written to {}", md.display());
    Ok(())
}
