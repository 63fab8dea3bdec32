//! `cargo xtask bench`: selfsup beside its references, measured in the same run
//! on the same cores, results in `target/bench/`.
//!
//! 1. augmentation throughput: the criterion bench of selfsup-vision against
//!    `benchmarks/torchvision_augment.py` (same two-view pipeline);
//! 2. end-to-end SimCLR training (skipped with `--quick`): `selfsup pretrain`
//!    with `configs/vision/simclr-cpu.toml` against
//!    `benchmarks/lightly_simclr.py` (same encoder, batch, augmentations, epochs).
//!
//! `--methods` trains every vision CPU preset into one table; `--text` compares
//! MLM training throughput with transformers' `BertForMaskedLM`
//! (`benchmarks/hf_mlm.py`) on the model, vocabulary, sequence length, batch,
//! learning rate and threads of `pretrain-text`'s CPU run.
use crate::paths::{cache_dir, target_dir, workspace_root};
use crate::{fetch, pss, run, torch_env};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// The benchmark venv (`benchmarks/requirements.txt`: torch, torchvision,
/// lightly, timm, transformers, open_clip), separate from libtorch's.
pub(crate) fn bench_venv() -> PathBuf {
    cache_dir().join("bench-venv")
}

/// The bench venv's python when it can import `module`.
pub fn python_with(module: &str) -> Option<PathBuf> {
    let py = bench_venv().join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", &format!("import {module}")])
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then_some(py)
}

/// What `benchmarks/requirements.txt` provides, as imported.
const BENCH_MODULES: [&str; 7] = [
    "torch",
    "torchvision",
    "lightly",
    "timm",
    "transformers",
    "open_clip",
    "tensorboard",
];

/// The bench venv's python, able to import every module of the requirements:
/// creates the venv from `benchmarks/requirements.txt`, or installs the
/// requirements again into an existing venv that lacks one (a requirement
/// added since the venv was made).
pub(crate) fn ensure_bench_venv() -> Result<PathBuf> {
    let py = bench_venv().join("bin/python");
    let imports = BENCH_MODULES.join(", ");
    let can_import = || {
        Command::new(&py)
            .args(["-c", &format!("import {imports}")])
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if can_import() {
        return Ok(py);
    }
    let requirements = workspace_root().join("benchmarks/requirements.txt");
    if py.exists() {
        eprintln!(
            "xtask: the benchmark venv {} cannot import {imports}; installing {}",
            bench_venv().display(),
            requirements.display()
        );
        run(Command::new(&py)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements))?;
    } else {
        eprintln!(
            "xtask: creating the benchmark venv {} ({})",
            bench_venv().display(),
            requirements.display()
        );
        crate::venv::create_venv(
            &bench_venv(),
            &["-r".into(), requirements.display().to_string()],
        )?;
    }
    if !can_import() {
        bail!(
            "{} still cannot import {imports} after installing {}",
            py.display(),
            requirements.display()
        );
    }
    Ok(py)
}

/// Runs `cmd` and returns the last line of its stdout parsed as JSON.
pub(crate) fn json_of(cmd: &mut Command) -> Result<Value> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("starting {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed ({})", out.status);
    }
    last_json(&shown, &String::from_utf8_lossy(&out.stdout))
}

/// The last line of `text` that starts with '{', parsed as JSON.
fn last_json(shown: &str, text: &str) -> Result<Value> {
    let last = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{shown} printed no JSON line"))?;
    serde_json::from_str(last).with_context(|| format!("{shown}: bad JSON {last}"))
}

/// Images/s of a criterion benchmark from its estimates (mean time per iteration).
fn criterion_images_per_s(group: &str, id: &str, images: f64) -> Result<f64> {
    let path = target_dir().join(format!("criterion/{group}/{id}/new/estimates.json"));
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let ns = v["mean"]["point_estimate"]
        .as_f64()
        .context("no mean estimate")?;
    Ok(images / (ns * 1e-9))
}

/// The settings of selfsup's CPU preset that the lightly script must share,
/// read from the preset itself so the two never drift apart.
pub(crate) struct PeerSettings {
    epochs: i64,
    train_images: i64,
    batch: i64,
    lr: f64,
    temperature: f64,
    min_scale: f64,
    /// lightly's `cj_strength`: brightness = contrast = saturation = 0.8 s, hue = 0.2 s.
    cj_strength: f64,
    /// Probability of the Gaussian blur.
    blur: f64,
    /// The blur's kernel width (`[augment] blur.kernel_size`, required when
    /// the blur is on): lightly's own blur (PIL, support growing with sigma)
    /// is replaced by torchvision's `GaussianBlur` of this width, as selfsup's.
    blur_kernel: i64,
}

impl PeerSettings {
    pub(crate) fn from_config(path: &std::path::Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let v: toml::Value =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let get = |keys: &[&str]| -> Option<toml::Value> {
            let mut cur = &v;
            for k in keys {
                cur = cur.get(k)?;
            }
            Some(cur.clone())
        };
        let num = |keys: &[&str], default: f64| -> f64 {
            match get(keys) {
                Some(toml::Value::Float(f)) => f,
                Some(toml::Value::Integer(i)) => i as f64,
                _ => default,
            }
        };
        let min_scale = get(&["augment", "crop", "scale"])
            .and_then(|s| s.as_array().and_then(|a| a.first().cloned()))
            .and_then(|f| f.as_float())
            .unwrap_or(0.08);
        let blur = num(&["augment", "blur", "p"], 0.0);
        let blur_kernel = num(&["augment", "blur", "kernel_size"], 0.0) as i64;
        if blur > 0.0 && blur_kernel < 3 {
            bail!(
                "{}: [augment] blur.kernel_size must be set (odd, >= 3) for the peer to blur with \
                 the same kernel",
                path.display()
            );
        }
        Ok(Self {
            blur,
            blur_kernel,
            epochs: num(&["trainer", "epochs"], 10.0) as i64,
            train_images: num(&["data", "train_images"], 60000.0) as i64,
            batch: num(&["run", "batch_size"], 256.0) as i64,
            lr: num(&["trainer", "optimizer", "lr"], 0.06),
            temperature: num(&["method", "loss", "temperature"], 0.5),
            min_scale,
            cj_strength: num(&["augment", "color_jitter", "brightness"], 0.4) / 0.8,
        })
    }

    pub(crate) fn args(&self) -> Vec<String> {
        vec![
            "--epochs".into(),
            self.epochs.to_string(),
            "--train-images".into(),
            self.train_images.to_string(),
            "--batch".into(),
            self.batch.to_string(),
            "--lr".into(),
            self.lr.to_string(),
            "--temperature".into(),
            self.temperature.to_string(),
            "--cj-strength".into(),
            self.cj_strength.to_string(),
            "--blur".into(),
            self.blur.to_string(),
            "--blur-kernel".into(),
            self.blur_kernel.to_string(),
            "--min-scale".into(),
            self.min_scale.to_string(),
        ]
    }
}

pub fn bench(quick: bool) -> Result<()> {
    let env = torch_env::ensure()?;
    let py = ensure_bench_venv()?;
    let data = fetch::fetch("fashion-mnist", false)?;
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let threads = "2";
    let mut report = serde_json::Map::new();

    // 1. Augmentation throughput.
    let mut cmd = Command::new(crate::cargo());
    cmd.args(["bench", "-p", "selfsup-vision", "--bench", "augment"]);
    env.apply(&mut cmd);
    cmd.env("RAYON_NUM_THREADS", threads);
    run(&mut cmd)?;
    let ours_28 = criterion_images_per_s("simclr_two_views", "28x28x1", 256.0)?;
    let ours_32 = criterion_images_per_s("simclr_two_views", "32x32x3", 256.0)?;
    let script = workspace_root().join("benchmarks/torchvision_augment.py");
    let tv_28 = json_of(
        Command::new(&py)
            .arg(&script)
            .args([
                "--threads",
                threads,
                "--size",
                "28",
                "--channels",
                "1",
                "--data",
            ])
            .arg(&data),
    )?;
    let tv_32 = json_of(Command::new(&py).arg(&script).args([
        "--threads",
        threads,
        "--size",
        "32",
        "--channels",
        "3",
    ]))?;
    let ratio = |ours: f64, tv: &Value| ours / tv["images_per_s"].as_f64().unwrap_or(f64::NAN);
    println!("\naugmentation, two views per image, {threads} threads:");
    println!(
        "  28x28x1: selfsup {ours_28:.0} img/s, torchvision {:.0} img/s, ratio {:.2}x",
        tv_28["images_per_s"].as_f64().unwrap_or(f64::NAN),
        ratio(ours_28, &tv_28)
    );
    println!(
        "  32x32x3: selfsup {ours_32:.0} img/s, torchvision {:.0} img/s, ratio {:.2}x",
        tv_32["images_per_s"].as_f64().unwrap_or(f64::NAN),
        ratio(ours_32, &tv_32)
    );
    report.insert(
        "augment".into(),
        serde_json::json!({
            "selfsup_28x28x1": ours_28, "torchvision_28x28x1": tv_28,
            "selfsup_32x32x3": ours_32, "torchvision_32x32x3": tv_32,
        }),
    );

    // 2. End-to-end SimCLR against lightly.
    if !quick {
        let bin = crate::build_cli(&env)?;
        let run_dir = out_dir.join("simclr-bench-run");
        let mut cmd = Command::new(bin);
        cmd.arg("pretrain")
            .arg("--config")
            .arg(workspace_root().join("configs/vision/simclr-cpu.toml"))
            .arg("--data")
            .arg(&data)
            .arg("--run-dir")
            .arg(&run_dir)
            .arg("--overwrite")
            .args(["--threads", threads]);
        env.apply(&mut cmd);
        // Both sides' peak memory is the PSS of their process tree, sampled
        // by the same code (pss.rs).
        let sampled = pss::run_sampled(&mut cmd)?;
        print!("{}", sampled.stdout);
        let mut ours: Value =
            serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json"))?)?;
        ours["peak_pss_mb"] = serde_json::json!(sampled.peak_pss_mb);
        let peer =
            PeerSettings::from_config(&workspace_root().join("configs/vision/simclr-cpu.toml"))?;
        let mut peer_cmd = Command::new(&py);
        peer_cmd
            .arg(workspace_root().join("benchmarks/lightly_simclr.py"))
            .args(["--threads", threads, "--data"])
            .arg(&data)
            .args(peer.args());
        let shown = format!("{peer_cmd:?}");
        let sampled = pss::run_sampled(&mut peer_cmd)?;
        let mut lightly = last_json(&shown, &sampled.stdout)?;
        lightly["peak_pss_mb"] = serde_json::json!(sampled.peak_pss_mb);
        let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "\nSimCLR, small CNN, batch {}, {} epochs x {} Fashion-MNIST images, temperature {}, blur kernel {}, {threads} threads:",
            peer.batch, peer.epochs, peer.train_images, peer.temperature, peer.blur_kernel
        );
        println!(
            "  {:<10} {:>10} {:>12} {:>10} {:>10}",
            "", "images/s", "peak PSS MB", "kNN top-1", "raw kNN"
        );
        for (name, v, ips) in [
            ("selfsup", &ours, "train_images_per_s"),
            ("lightly", &lightly, "images_per_s"),
        ] {
            println!(
                "  {:<10} {:>10.0} {:>12.0} {:>10.4} {:>10.4}",
                name,
                f(v, ips),
                f(v, "peak_pss_mb"),
                f(v, "knn_top1"),
                f(v, "raw_knn_top1")
            );
        }
        println!(
            "  selfsup/lightly: throughput {:.2}x, peak PSS {:.2}x",
            f(&ours, "train_images_per_s") / f(&lightly, "images_per_s"),
            f(&ours, "peak_pss_mb") / f(&lightly, "peak_pss_mb")
        );
        report.insert(
            "simclr_vs_lightly".into(),
            serde_json::json!({"selfsup": ours, "lightly": lightly}),
        );
    }
    let path = out_dir.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(report))?)?;
    println!("\nwritten {}", path.display());
    Ok(())
}

/// Pre-trains every vision method on its CPU preset and prints one markdown
/// table per dataset: Fashion-MNIST presets (the same encoder, batch, images
/// and epochs) and the colour emoji presets. Each row: final-epoch kNN and
/// linear probe on the test split beside the same encoder's random weights
/// (each preset's own architecture, through the same code), wall time,
/// training images/s, peak RSS; then the raw-pixel baselines. BEiT predicts
/// the codes of the bench's own `vq_tokenizer` run, trained first. Written to
/// `target/bench/methods.md`.
pub fn methods_table(which: &str, epochs: Option<usize>) -> Result<()> {
    let env = torch_env::ensure()?;
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let mut presets: Vec<String> = std::fs::read_dir(workspace_root().join("configs/vision"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix("-cpu.toml").map(str::to_string)
        })
        .collect();
    presets.sort();
    if which != "all" {
        let wanted: Vec<&str> = which.split(',').map(str::trim).collect();
        if let Some(bad) = wanted.iter().find(|w| !presets.iter().any(|p| p == *w)) {
            anyhow::bail!(
                "no preset configs/vision/{bad}-cpu.toml; available: {}",
                presets.join(", ")
            );
        }
        presets.retain(|p| wanted.contains(&p.as_str()));
    }
    // A method that predicts a tokenizer's codes runs after the tokenizer.
    let needs_tokenizer = |m: &str| m == "beit";
    if presets.iter().any(|m| needs_tokenizer(m)) && !presets.iter().any(|m| m == "vq_tokenizer") {
        presets.push("vq_tokenizer".into());
    }
    presets.sort_by_key(|m| (needs_tokenizer(m), m.clone()));
    let bin = crate::build_cli(&env)?;
    let mut tables: Vec<(&str, Vec<(String, Value)>)> =
        vec![("fashion-mnist", Vec::new()), ("emoji", Vec::new())];
    for m in &presets {
        let config = workspace_root().join(format!("configs/vision/{m}-cpu.toml"));
        let text = std::fs::read_to_string(&config)?;
        let Some(t) = tables
            .iter()
            .position(|(format, _)| text.contains(&format!("format = \"{format}\"")))
        else {
            println!(
                "\n== {m}: skipped (its preset reads neither Fashion-MNIST nor the emoji images)"
            );
            continue;
        };
        let data = fetch::fetch(
            if t == 0 {
                "fashion-mnist"
            } else {
                "emoji-google"
            },
            false,
        )?;
        let run_dir = out_dir.join(format!("methods/{m}"));
        let _ = std::fs::remove_dir_all(&run_dir);
        let opts = crate::PretrainArgs {
            epochs,
            ..Default::default()
        };
        let mut cmd = crate::selfsup_pretrain(&bin, &config, &data, &run_dir, &opts);
        if needs_tokenizer(m) {
            let tok = out_dir.join("methods/vq_tokenizer");
            cmd.arg("--set")
                .arg(format!("method.tokenizer={:?}", tok.display().to_string()));
        }
        env.apply(&mut cmd);
        println!("\n== {m}");
        run(&mut cmd)?;
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json"))?)?;
        tables[t].1.push((m.clone(), v));
    }
    let budget = epochs.map_or("each preset's epochs".to_string(), |e| {
        format!("{e} epochs")
    });
    let mut md = String::new();
    for (format, rows) in &tables {
        if rows.is_empty() {
            continue;
        }
        md += &match *format {
            "fashion-mnist" => format!("Fashion-MNIST, small CNN (ViT for mae / ijepa / dinov2 / beit; vq_tokenizer's own patch encoder), batch 256, 20000 images, {budget}; kNN k=200 and linear probe on the 10000 test images.\n\n"),
            _ => format!("Google's emoji (9 categories, 32 px colour), small CNN, {budget}; kNN and linear probe on the 379 test images.\n\n"),
        };
        md += &methods_rows(rows, format, epochs);
    }
    println!("\n{md}");
    let path = out_dir.join("methods.md");
    std::fs::write(&path, &md)?;
    println!("written {}", path.display());
    Ok(())
}

/// One dataset's table of [`methods_table`], its raw-pixel row last.
fn methods_rows(rows: &[(String, Value)], format: &str, epochs: Option<usize>) -> String {
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let pct = |x: f64| {
        if x.is_finite() {
            format!("{:.2}", 100.0 * x)
        } else {
            "n/a".into()
        }
    };
    let data = if format == "fashion-mnist" {
        "<fashion-mnist>"
    } else {
        "<emoji-google>"
    };
    let mut md = String::from(
        "| method | kNN top-1 % | random-weights kNN % | linear top-1 % | random-weights linear % | wall s | train img/s | peak RSS MB | collapse warnings | command |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (m, v) in rows {
        let warnings = v["collapse_warnings"].as_array().map_or(0, Vec::len);
        md += &format!(
            "| {m} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {warnings} | `selfsup pretrain --config configs/vision/{m}-cpu.toml --data {data}{}` |\n",
            pct(f(v, "knn_top1")),
            pct(f(v, "random_knn_top1")),
            pct(f(v, "linear_top1")),
            pct(f(v, "random_linear_top1")),
            f(v, "wall_seconds"),
            f(v, "train_images_per_s"),
            f(v, "peak_rss_mb"),
            epochs.map_or(String::new(), |e| format!(" --epochs {e}"))
                + if m == "beit" {
                    " --set method.tokenizer='\"<the vq_tokenizer row's run>\"'"
                } else {
                    ""
                },
        );
    }
    if let Some((_, v)) = rows.first() {
        md += &format!(
            "| raw pixels (baseline) | {} | | {} | | | | | | same code, no encoder |\n\n",
            pct(f(v, "raw_knn_top1")),
            pct(f(v, "raw_linear_top1"))
        );
    }
    md
}

/// What `benchmarks/hf_mlm.py` must share with selfsup's MLM run, read from
/// the run's `summary.json` so the two never drift apart.
struct MlmSettings {
    layers: u64,
    hidden: u64,
    heads: u64,
    intermediate: u64,
    vocab_size: u64,
    max_len: u64,
    batch_size: u64,
    threads: u64,
    lr: f64,
}

impl MlmSettings {
    fn from_summary(v: &Value, path: &std::path::Path) -> Result<Self> {
        let int = |v: &Value, key: &str| {
            v[key]
                .as_u64()
                .with_context(|| format!("{}: no integer '{key}'", path.display()))
        };
        let model = &v["model"];
        Ok(Self {
            layers: int(model, "layers")?,
            hidden: int(model, "hidden")?,
            heads: int(model, "heads")?,
            intermediate: int(model, "intermediate")?,
            vocab_size: int(v, "vocab_size")?,
            max_len: int(v, "max_len")?,
            batch_size: int(v, "batch_size")?,
            // A run that left the thread count to libtorch ran with the bench's 2.
            threads: v["threads"].as_u64().unwrap_or(2),
            lr: v["lr"]
                .as_f64()
                .with_context(|| format!("{}: no number 'lr'", path.display()))?,
        })
    }

    fn args(&self) -> Vec<String> {
        [
            ("--layers", self.layers.to_string()),
            ("--hidden", self.hidden.to_string()),
            ("--heads", self.heads.to_string()),
            ("--intermediate", self.intermediate.to_string()),
            ("--vocab-size", self.vocab_size.to_string()),
            ("--max-len", self.max_len.to_string()),
            ("--batch-size", self.batch_size.to_string()),
            ("--threads", self.threads.to_string()),
            ("--lr", self.lr.to_string()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v])
        .collect()
    }
}

/// MLM training throughput: `pretrain-text`'s CPU run (in
/// `target/bench/text-run`) against transformers' `BertForMaskedLM` with the
/// same model, vocabulary, sequence length, batch, learning rate and threads.
/// Writes `target/bench/text.md` and `target/bench/text.json`.
pub fn text() -> Result<()> {
    // The venv first: a missing Python package fails in seconds, not after the run.
    let py = ensure_bench_venv()?;
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let run_dir = out_dir.join("text-run");
    let _ = std::fs::remove_dir_all(&run_dir);
    let threads = 2;
    let opts = crate::PretrainArgs {
        threads: Some(threads),
        ..Default::default()
    };
    crate::pretrain_text("mlm-cpu", opts, Some(run_dir.clone()), 1)?;
    let summary_path = run_dir.join("summary.json");
    let ours: Value = serde_json::from_str(
        &std::fs::read_to_string(&summary_path)
            .with_context(|| format!("reading {}", summary_path.display()))?,
    )
    .with_context(|| format!("parsing {}", summary_path.display()))?;
    let s = MlmSettings::from_summary(&ours, &summary_path)?;
    let hf = json_of(
        Command::new(&py)
            .arg(workspace_root().join("benchmarks/hf_mlm.py"))
            .args(s.args())
            .env("OMP_NUM_THREADS", s.threads.to_string()),
    )?;
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let ours_tps = f(&ours, "train_tokens_per_s");
    let hf_tps = f(&hf, "tokens_per_s");
    let ratio = ours_tps / hf_tps;
    // Training memory against training memory: the RSS when selfsup's
    // training ended (the downstream probes after it build bag-of-words
    // matrices that transformers' script never does).
    let ours_rss = ours["train_peak_rss_mb"]
        .as_f64()
        .unwrap_or(f(&ours, "peak_rss_mb"));
    let rss_ratio = ours_rss / f(&hf, "peak_rss_mb");
    let transformers = hf["transformers"].as_str().unwrap_or("?");
    let mut md = format!(
        "MLM training on the CPU, BERT {} layers, hidden {}, {} heads, intermediate {}, vocabulary {}, batch {} x {} tokens, {} threads, float32.\n\n",
        s.layers, s.hidden, s.heads, s.intermediate, s.vocab_size, s.batch_size, s.max_len, s.threads
    );
    md +=
        "| | train tokens/s | peak RSS MB (training) | wall s | command |\n|---|---|---|---|---|\n";
    md += &format!(
        "| selfsup | {ours_tps:.0} | {ours_rss:.0} | {:.0} | `cargo xtask pretrain-text --run-dir target/bench/text-run` (threads 2) |\n",
        f(&ours, "wall_seconds"),
    );
    md += &format!(
        "| transformers {transformers} BertForMaskedLM (sdpa) | {hf_tps:.0} | {:.0} | {:.0} | `benchmarks/hf_mlm.py {}` |\n",
        f(&hf, "peak_rss_mb"),
        f(&hf, "seconds"),
        s.args().join(" "),
    );
    md += &format!("| ratio selfsup / transformers | {ratio:.2}x | {rss_ratio:.2}x | | |\n");
    md += &format!(
        "\nselfsup: tokens/s over its whole training, peak RSS when training ended, wall time of the whole run (tokenizer training, packing, evaluation and probes included; whole-run peak RSS {:.0} MB). transformers: {} timed steps after {} untimed, random token ids (the same shape of work), peak RSS of the process.\n",
        f(&ours, "peak_rss_mb"),
        hf["steps"],
        hf["warmup_steps"]
    );
    println!("\n{md}");
    let md_path = out_dir.join("text.md");
    std::fs::write(&md_path, &md)?;
    let json_path = out_dir.join("text.json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&serde_json::json!({
            "selfsup": ours,
            "transformers": hf,
            "ratio_tokens_per_s": ratio,
            "ratio_peak_rss": rss_ratio,
        }))?,
    )?;
    println!("written {} and {}", md_path.display(), json_path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlm_settings_come_from_the_summary() {
        let v: Value = serde_json::from_str(
            r#"{"train_tokens_per_s": 1000.0, "vocab_size": 8192, "max_len": 128, "batch_size": 32,
                "threads": null, "lr": 0.001, "wall_seconds": 60.0, "peak_rss_mb": 900.0,
                "model": {"layers": 2, "hidden": 128, "heads": 2, "intermediate": 512}}"#,
        )
        .unwrap();
        let s = MlmSettings::from_summary(&v, std::path::Path::new("summary.json")).unwrap();
        assert_eq!(
            s.args().join(" "),
            "--layers 2 --hidden 128 --heads 2 --intermediate 512 --vocab-size 8192 \
             --max-len 128 --batch-size 32 --threads 2 --lr 0.001"
        );
        let mut missing = v.clone();
        missing["model"]["heads"] = Value::Null;
        let err = MlmSettings::from_summary(&missing, std::path::Path::new("summary.json"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("'heads'"), "{err}");
    }
}
