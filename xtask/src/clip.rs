//! `cargo xtask pretrain-clip` (fetch the pairs, build, run the CLIP preset)
//! and `cargo xtask bench --clip` (that run beside `benchmarks/openclip_clip.py`,
//! the same towers, batch and optimiser in PyTorch with open_clip's loss).
use crate::paths::{cache_dir, target_dir, workspace_root};
use crate::{
    bench, build_cli, fetch, preset_config, run, selfsup_pretrain, torch_env, PretrainArgs,
};
use anyhow::{Context, Result};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// The datasets of the CLIP presets: Google emoji (training), Twitter emoji
/// (held-out rendering), Fashion-MNIST (captioned from its classes).
pub(crate) const CLIP_DATASETS: [&str; 3] = ["emoji-google", "emoji-twitter", "fashion-mnist"];

/// Runs `selfsup pretrain` on `configs/multimodal/clip-<preset>.toml` with
/// `data` (default: the datasets root, fetched) as `--data`; returns the run folder.
pub(crate) fn pretrain_clip(
    preset: &str,
    data: Option<PathBuf>,
    opts: PretrainArgs,
    run_dir: Option<PathBuf>,
) -> Result<PathBuf> {
    let config = preset_config(&format!("multimodal/clip-{preset}.toml"))?;
    let env = torch_env::ensure()?;
    let data = match data {
        Some(d) => d,
        None => {
            for name in CLIP_DATASETS {
                fetch::fetch(name, false)?;
            }
            cache_dir().join("datasets")
        }
    };
    let bin = build_cli(&env)?;
    let run_dir = run_dir.unwrap_or_else(|| workspace_root().join(format!("runs/clip-{preset}")));
    let mut cmd = selfsup_pretrain(&bin, &config, &data, &run_dir, &opts);
    env.apply(&mut cmd);
    run(&mut cmd)?;
    Ok(run_dir)
}

fn read_json(path: &std::path::Path) -> Result<Value> {
    serde_json::from_str(
        &std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))
}

/// What the peer must share with the selfsup run, from its summary and config.
fn peer_args(summary: &Value, config: &toml::Value) -> Result<Vec<String>> {
    let int = |v: &Value, k: &str| {
        v[k].as_u64()
            .with_context(|| format!("summary.json: no integer '{k}'"))
    };
    let m = &summary["model"];
    let channels = config
        .get("model")
        .and_then(|m| m.get("vision"))
        .and_then(|v| v.get("channels"))
        .and_then(|c| c.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_integer().map(|c| c.to_string()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_else(|| "32,64,128,256".into());
    let opt = config
        .get("trainer")
        .and_then(|t| t.get("optimizer"))
        .context("config: no [trainer] optimizer")?;
    let num = |k: &str, d: f64| {
        opt.get(k)
            .and_then(|v| v.as_float().or(v.as_integer().map(|i| i as f64)))
            .unwrap_or(d)
    };
    let betas = opt
        .get("betas")
        .and_then(|b| b.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|b| b.as_float())
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_else(|| "0.9,0.999".into());
    let max_position = config
        .get("model")
        .and_then(|m| m.get("text"))
        .and_then(|t| t.get("max_position"))
        .and_then(|v| v.as_integer())
        .unwrap_or(512);
    Ok(vec![
        "--image-size".into(),
        int(summary, "image_size")?.to_string(),
        "--cnn-channels".into(),
        channels,
        "--layers".into(),
        int(m, "text_layers")?.to_string(),
        "--hidden".into(),
        int(m, "text_hidden")?.to_string(),
        "--heads".into(),
        int(m, "text_heads")?.to_string(),
        "--intermediate".into(),
        int(m, "text_intermediate")?.to_string(),
        "--max-position".into(),
        max_position.to_string(),
        "--vocab-size".into(),
        int(summary, "vocab_size")?.to_string(),
        "--seq-len".into(),
        int(summary, "max_caption_tokens")?.to_string(),
        "--embed-dim".into(),
        int(m, "embed_dim")?.to_string(),
        "--batch-size".into(),
        int(summary, "batch_size")?.to_string(),
        "--lr".into(),
        summary["lr"]
            .as_f64()
            .context("summary.json: no 'lr'")?
            .to_string(),
        "--weight-decay".into(),
        num("weight_decay", 0.0).to_string(),
        "--betas".into(),
        betas,
        "--eps".into(),
        num("eps", 1e-8).to_string(),
        "--threads".into(),
        summary["threads"].as_u64().unwrap_or(2).to_string(),
    ])
}

/// `cargo xtask bench --clip`: the CPU preset (all its figures) and the
/// open_clip peer's training throughput, one after the other on the same
/// cores; writes `target/bench/clip.md` and `target/bench/clip.json`.
pub(crate) fn bench(epochs: Option<usize>) -> Result<()> {
    let py = bench::ensure_bench_venv()?;
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let run_dir = out_dir.join("clip-run");
    let _ = std::fs::remove_dir_all(&run_dir);
    let opts = PretrainArgs {
        epochs,
        threads: Some(2),
        overwrite: true,
        ..PretrainArgs::default()
    };
    pretrain_clip("cpu", None, opts, Some(run_dir.clone()))?;
    let ours = read_json(&run_dir.join("summary.json"))?;
    let config: toml::Value = toml::from_str(
        &std::fs::read_to_string(run_dir.join("config.toml"))
            .context("reading the run's config.toml")?,
    )?;
    let mut args = peer_args(&ours, &config)?;
    let steps = ours["steps"].as_u64().unwrap_or(40).clamp(20, 60);
    // The peer twice, in both memory orders of its CNN; its faster run is
    // the one compared (a peer gets its best settings).
    let mut peers = Vec::new();
    for channels_last in [false, true] {
        let mut cmd = Command::new(&py);
        cmd.arg(workspace_root().join("benchmarks/openclip_clip.py"))
            .args(&args)
            .args(["--steps", &steps.to_string()])
            .env("OMP_NUM_THREADS", "2");
        if channels_last {
            cmd.arg("--channels-last");
        }
        peers.push(bench::json_of(&mut cmd)?);
    }
    let rate = |v: &Value| v["pairs_per_s"].as_f64().unwrap_or(0.0);
    let best = usize::from(rate(&peers[1]) > rate(&peers[0]));
    let peer = peers[best].clone();
    if best == 1 {
        args.push("--channels-last".into());
    }
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let (ours_pps, peer_pps) = (f(&ours, "train_pairs_per_s"), f(&peer, "pairs_per_s"));
    let ratio = ours_pps / peer_pps;
    let m = &ours["model"];
    let mut md = format!(
        "CLIP on the CPU, 2 threads: image tower {} ({} px RGB), text tower BERT {} layers / hidden {}, shared space {}, batch {}, vocabulary {}, {} epochs over {} images ({} captions).\n\n",
        m["vision_arch"].as_str().unwrap_or("?"),
        ours["image_size"],
        m["text_layers"],
        m["text_hidden"],
        m["embed_dim"],
        ours["batch_size"],
        ours["vocab_size"],
        ours["epochs"],
        ours["train_images"],
        ours["train_pairs"],
    );
    md += "| | trained | random weights | chance |\n|---|---|---|---|\n";
    let pairs = |k: &str| -> Vec<(String, f64)> {
        serde_json::from_value(ours[k].clone()).unwrap_or_default()
    };
    let (trained, random, chance) = (pairs("metrics"), pairs("random_weights"), pairs("chance"));
    for ((name, t), (_, r)) in trained.iter().zip(&random) {
        let c = chance
            .iter()
            .find(|(n, _)| n == name)
            .map_or(String::new(), |(_, c)| format!("{:.1} %", c * 100.0));
        md += &format!(
            "| {name} | {:.1} % | {:.1} % | {c} |\n",
            t * 100.0,
            r * 100.0
        );
    }
    md += "\n| | train pairs/s | peak RSS MB | command |\n|---|---|---|---|\n";
    md += &format!(
        "| selfsup | {ours_pps:.0} | {:.0} (whole run) | `cargo xtask pretrain-clip` (threads 2) |\n",
        f(&ours, "peak_rss_mb")
    );
    md += &format!(
        "| PyTorch {} + open_clip {} ClipLoss + transformers {} BertModel | {peer_pps:.0} | {:.0} | `benchmarks/openclip_clip.py {}` |\n",
        peer["torch"].as_str().unwrap_or("?"),
        peer["open_clip"].as_str().unwrap_or("?"),
        peer["transformers"].as_str().unwrap_or("?"),
        f(&peer, "peak_rss_mb"),
        args.join(" "),
    );
    md += &format!(
        "| (the peer's other memory order: {}) | {:.0} | | |\n",
        if best == 1 { "NCHW" } else { "channels-last" },
        rate(&peers[1 - best])
    );
    md += &format!("| ratio selfsup / peer | {ratio:.2}x | | |\n");
    md += &format!(
        "\nselfsup: pairs/s over its whole training (augmentation, caption sampling and batch building included; evaluation excluded), wall time of the run {:.0} s. Peer: {} timed steps after {} untimed on pre-made random tensors of the same shapes, captions padded to the longest training caption ({} tokens).\n",
        f(&ours, "wall_seconds"),
        peer["steps"],
        peer["warmup_steps"],
        ours["max_caption_tokens"],
    );
    println!("\n{md}");
    let md_path = out_dir.join("clip.md");
    std::fs::write(&md_path, &md)?;
    let json_path = out_dir.join("clip.json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&serde_json::json!({
            "selfsup": ours,
            "open_clip": peer,
            "open_clip_runs": peers,
            "ratio_pairs_per_s": ratio,
        }))?,
    )?;
    println!("written {} and {}", md_path.display(), json_path.display());
    Ok(())
}
