//! `cargo xtask bench --image-folder [--images N] [--epochs E]`: pre-training
//! on a folder of JPEGs beside the same images read from Fashion-MNIST's IDX
//! files (target/bench/image_folder.{json,md}).
//!
//! The folder holds the first N Fashion-MNIST training images upscaled 28 ->
//! 64 px as RGB JPEGs in class folders, and a test folder of the test images
//! the IDX run scores. The same SimCLR CPU preset (configs/vision/simclr-cpu.toml,
//! eval settings included) then runs on:
//! 1. the IDX files (28 px grey, N training images);
//! 2. the folder read at 28 px grey: the same shape of work as 1, so its
//!    images/s is the like-for-like comparison (cold cache, then warm);
//! 3. the folder read at 64 px RGB (cold, then warm): the cost of bigger images.
//!
//! Figures come from each run's metrics.jsonl (images/s of every epoch) and
//! summary.json (peak RSS = the process's VmHWM, cache build time, wall time).
use crate::paths::{target_dir, workspace_root};
use crate::{fetch, run, torch_env};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Training images written when `--images` is not given.
pub const DEFAULT_IMAGES: usize = 50_000;
/// Epochs of every run when `--epochs` is not given.
pub const DEFAULT_EPOCHS: usize = 2;
/// Side of the JPEGs written.
const SIDE: u32 = 64;
/// Most training images in the kNN bank / probe set of every run (the image
/// folder default, applied to the IDX run too).
const EVAL_TRAIN: usize = 5000;

/// An IDX file (gzip) as its dimensions and bytes.
pub(crate) fn read_idx(path: &Path, dims: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
    )
    .read_to_end(&mut bytes)
    .with_context(|| format!("decompressing {}", path.display()))?;
    let header = 4 + 4 * dims;
    if bytes.len() < header {
        bail!("{}: shorter than its IDX header", path.display());
    }
    let mut shape = Vec::with_capacity(dims);
    for d in 0..dims {
        let at = 4 + 4 * d;
        let b: [u8; 4] = bytes
            .get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .context("IDX header")?;
        shape.push(u32::from_be_bytes(b) as usize);
    }
    let want = shape.iter().product::<usize>();
    let data = bytes.split_off(header);
    if data.len() != want {
        bail!(
            "{}: {} data bytes, its header says {want}",
            path.display(),
            data.len()
        );
    }
    Ok((shape, data))
}

/// `k` indices evenly spread over `0..n` (the rule of `EvalData::capped`).
fn spread(n: usize, k: usize) -> Vec<usize> {
    if k >= n {
        (0..n).collect()
    } else {
        (0..k).map(|i| i * n / k).collect()
    }
}

/// Writes `indices` of a 28x28 grey split as 64 px RGB JPEGs into
/// `dir/c<label>/<index>.jpg`, on every core.
fn write_jpegs(dir: &Path, images: &[u8], labels: &[u8], indices: &[usize]) -> Result<()> {
    for c in 0..10 {
        std::fs::create_dir_all(dir.join(format!("c{c}")))?;
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per = indices.len().div_ceil(threads).max(1);
    std::thread::scope(|s| -> Result<()> {
        let jobs: Vec<_> = indices
            .chunks(per)
            .map(|chunk| {
                s.spawn(move || -> Result<()> {
                    for &i in chunk {
                        let px = images
                            .get(i * 784..(i + 1) * 784)
                            .context("image index out of the IDX file")?;
                        let label = labels.get(i).copied().context("label index")?;
                        let grey = image::GrayImage::from_raw(28, 28, px.to_vec())
                            .context("28x28 image")?;
                        let big = image::imageops::resize(
                            &grey,
                            SIDE,
                            SIDE,
                            image::imageops::FilterType::Triangle,
                        );
                        let rgb = image::DynamicImage::ImageLuma8(big).to_rgb8();
                        let path = dir.join(format!("c{label}/{i:06}.jpg"));
                        let f = std::io::BufWriter::new(std::fs::File::create(&path)?);
                        image::codecs::jpeg::JpegEncoder::new_with_quality(f, 90)
                            .encode_image(&rgb)
                            .with_context(|| format!("writing {}", path.display()))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for j in jobs {
            j.join()
                .map_err(|_| anyhow::anyhow!("a JPEG writer panicked"))??;
        }
        Ok(())
    })
}

/// The folders for `n` training and `m` test images (written once; a
/// `complete.json` marks a finished tree).
fn ensure_folders(fm: &Path, root: &Path, n: usize, m: usize) -> Result<f64> {
    let marker = root.join("complete.json");
    let want = json!({"train": n, "test": m, "side": SIDE, "version": 1});
    if std::fs::read_to_string(&marker)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        == Some(want.clone())
    {
        return Ok(0.0);
    }
    if root.exists() {
        std::fs::remove_dir_all(root)?;
    }
    let t = std::time::Instant::now();
    let (_, train_x) = read_idx(&fm.join("train-images-idx3-ubyte.gz"), 3)?;
    let (_, train_y) = read_idx(&fm.join("train-labels-idx1-ubyte.gz"), 1)?;
    let (_, test_x) = read_idx(&fm.join("t10k-images-idx3-ubyte.gz"), 3)?;
    let (_, test_y) = read_idx(&fm.join("t10k-labels-idx1-ubyte.gz"), 1)?;
    let train_idx: Vec<usize> = (0..n).collect();
    write_jpegs(&root.join("train"), &train_x, &train_y, &train_idx)?;
    write_jpegs(
        &root.join("test"),
        &test_x,
        &test_y,
        &spread(test_y.len(), m),
    )?;
    std::fs::write(&marker, want.to_string())?;
    Ok(t.elapsed().as_secs_f64())
}

/// One run's config: the SimCLR CPU preset with `data` replaced and the
/// shared eval caps.
fn config(
    base: &toml::Value,
    data: toml::Table,
    n: usize,
    m: usize,
    path: &Path,
) -> Result<PathBuf> {
    let mut v = base.clone();
    let t = v.as_table_mut().context("preset is not a table")?;
    t.insert("data".into(), toml::Value::Table(data));
    let eval = t
        .entry("eval")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .context("[eval] is not a table")?;
    eval.insert(
        "knn_train_images".into(),
        toml::Value::Integer(EVAL_TRAIN.min(n) as i64),
    );
    eval.insert("test_images".into(), toml::Value::Integer(m as i64));
    std::fs::write(path, toml::to_string(&v)?)?;
    Ok(path.to_path_buf())
}

/// What one run measured.
fn measure(run_dir: &Path) -> Result<Value> {
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join("summary.json"))
            .with_context(|| format!("{}/summary.json", run_dir.display()))?,
    )?;
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl"))?;
    let per_epoch: Vec<f64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "epoch")
        .filter_map(|v| v["samples_per_s"].as_f64())
        .collect();
    Ok(json!({
        "images_per_s_per_epoch": per_epoch,
        "train_images_per_s": summary["train_images_per_s"],
        "wall_seconds": summary["wall_seconds"],
        "peak_rss_mb": summary["peak_rss_mb"],
        "cache_hit": summary["image_cache"]["hit"],
        "cache_build_seconds": summary["image_cache"]["build_seconds"],
        "knn_top1": summary["knn_top1"],
        "raw_knn_top1": summary["raw_knn_top1"],
        "train_images": summary["train_images"],
        "test_images": summary["test_images"],
        "eval_train_images": summary["eval_train_images"],
    }))
}

/// The runs, in the order they run and are shown.
const RUNS: [&str; 5] = [
    "idx-28-grey",
    "folder-28-grey-cold",
    "folder-28-grey-warm",
    "folder-64-rgb-cold",
    "folder-64-rgb-warm",
];

/// Epochs of one run: the 28 px runs (the like-for-like comparison, which
/// needs the epochs after the first) train `epochs`; the 64 px RGB runs,
/// which show what bigger images cost and whether a warm cache decodes
/// nothing, train one (each is about 5x the work of a 28 px epoch).
fn run_epochs(name: &str, epochs: usize) -> usize {
    if name.starts_with("folder-64") {
        1
    } else {
        epochs
    }
}

/// Decoded size of `n` images of `side x side x c` bytes, in MB.
fn decoded_mb(n: usize, side: usize, c: usize) -> f64 {
    (n * side * side * c) as f64 / 1e6
}

/// Runs the comparison and writes target/bench/image_folder.{json,md}.
pub fn bench(images: Option<usize>, epochs: Option<usize>) -> Result<()> {
    let n = images.unwrap_or(DEFAULT_IMAGES);
    if !(10..=60_000).contains(&n) {
        bail!("--images {n}: give 10..=60000 (Fashion-MNIST has 60000 training images)");
    }
    let epochs = epochs.unwrap_or(DEFAULT_EPOCHS).max(1);
    let m = (n / 5).clamp(50, 10_000);
    let env = torch_env::ensure()?;
    let fm = fetch::fetch("fashion-mnist", false)?;
    let bin = crate::build_cli(&env)?;
    let out = target_dir().join("bench");
    let work = out.join("image-folder");
    std::fs::create_dir_all(&work)?;
    let folders = work.join(format!("data-n{n}-m{m}"));
    println!(
        "writing {n} + {m} JPEGs of {SIDE} px under {}",
        folders.display()
    );
    let write_seconds = ensure_folders(&fm, &folders, n, m)?;
    let (train_dir, test_dir) = (folders.join("train"), folders.join("test"));
    let cache = work.join("cache");
    if cache.exists() {
        std::fs::remove_dir_all(&cache)?;
    }
    let preset = workspace_root().join("configs/vision/simclr-cpu.toml");
    let base: toml::Value = toml::from_str(&std::fs::read_to_string(&preset)?)?;
    let threads = "2";

    let mut idx_data = toml::Table::new();
    idx_data.insert("format".into(), "fashion-mnist".into());
    idx_data.insert("train_images".into(), toml::Value::Integer(n as i64));
    let folder_data = |side: i64, channels: i64| {
        let mut d = toml::Table::new();
        d.insert("format".into(), "image-folder".into());
        d.insert("image_size".into(), toml::Value::Integer(side));
        d.insert("channels".into(), toml::Value::Integer(channels));
        d.insert("test_path".into(), test_dir.display().to_string().into());
        d.insert("cache_dir".into(), cache.display().to_string().into());
        d
    };
    let runs: [(&str, toml::Table, &Path); 5] = [
        (RUNS[0], idx_data, &fm),
        (RUNS[1], folder_data(28, 1), &train_dir),
        (RUNS[2], folder_data(28, 1), &train_dir),
        (RUNS[3], folder_data(64, 3), &train_dir),
        (RUNS[4], folder_data(64, 3), &train_dir),
    ];
    let mut results = serde_json::Map::new();
    for (name, data, data_dir) in runs {
        let cfg = config(&base, data, n, m, &work.join(format!("{name}.toml")))?;
        let run_dir = work.join(format!("run-{name}"));
        let mut cmd = Command::new(&bin);
        cmd.arg("pretrain")
            .arg("--config")
            .arg(&cfg)
            .arg("--data")
            .arg(data_dir)
            .arg("--run-dir")
            .arg(&run_dir)
            .arg("--overwrite")
            .args(["--threads", threads, "--epochs"])
            .arg(run_epochs(name, epochs).to_string());
        env.apply(&mut cmd);
        println!("\n== {name}");
        run(&mut cmd)?;
        let mut r = measure(&run_dir)?;
        r["command"] = json!(format!("{cmd:?}"));
        results.insert(name.to_string(), r);
    }
    let report = json!({
        "images": n,
        "test_images": m,
        "epochs": epochs,
        "threads": threads,
        "jpeg_side": SIDE,
        "jpeg_write_seconds": write_seconds,
        "eval_train_images": EVAL_TRAIN.min(n),
        "decoded_mb": {
            "28x28x1": decoded_mb(n, 28, 1),
            "64x64x3": decoded_mb(n, 64, 3),
        },
        "runs": results,
    });
    std::fs::write(
        out.join("image_folder.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let md = markdown(&report);
    std::fs::write(out.join("image_folder.md"), &md)?;
    println!("\n{md}");
    println!("wrote {}", out.join("image_folder.{json,md}").display());
    Ok(())
}

fn markdown(r: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mut s = format!(
        "# Pre-training on an image folder vs the IDX files\n\n\
         SimCLR CPU preset (configs/vision/simclr-cpu.toml: small CNN, batch 256, same \
         augmentations and eval settings), {} epoch(s) (the 64 px runs: 1), {} threads, the first {} Fashion-MNIST \
         training images; evaluation on {} test images (the same ones in every run) with a kNN \
         bank / probe set of {} training images (evenly spread over each run's order).\n\n\
         The folder holds those images as {} px RGB JPEGs (upscaled from 28 px, quality 90). \
         **Like for like** is `idx-28-grey` vs `folder-28-grey-*`: the folder read back at 28 px \
         grey is the same shape of work as the IDX files (pixels differ slightly: JPEG and two \
         resamplings). `folder-64-rgb-*` shows what the bigger RGB images cost. *cold* builds the \
         decoded-image cache (timed in `cache build s`), *warm* maps it and decodes nothing. Peak \
         RSS is the process's VmHWM (summary.json); the memory target is the decoded dataset \
         ({:.0} MB at 28x28x1, {:.0} MB at 64x64x3) plus 1 GB over the training's own memory: \
         compare `folder-28-*` with `idx-28-grey` (same model, same activations); at 64 px the \
         CNN's activations alone grow about (64/28)^2 = 5.2 times, so `folder-64-*` has no IDX \
         twin to subtract.\n\n\
         | run | images/s per epoch | train img/s | cache build s | wall s | peak RSS MB | kNN top-1 | raw kNN |\n\
         |---|---|---|---|---|---|---|---|\n",
        r["epochs"],
        r["threads"].as_str().unwrap_or("?"),
        r["images"],
        r["test_images"],
        r["eval_train_images"],
        r["jpeg_side"],
        f(&r["decoded_mb"]["28x28x1"]),
        f(&r["decoded_mb"]["64x64x3"]),
    );
    if let Some(runs) = r["runs"].as_object() {
        // In the order they ran (the JSON map is sorted by name).
        let order = RUNS.iter().filter_map(|n| runs.get(*n).map(|v| (*n, v)));
        for (name, v) in order {
            let per: Vec<String> = v["images_per_s_per_epoch"]
                .as_array()
                .map(|a| a.iter().map(|x| format!("{:.0}", f(x))).collect())
                .unwrap_or_default();
            let build = match (&v["cache_hit"], f(&v["cache_build_seconds"])) {
                (Value::Bool(true), _) => "hit".to_string(),
                (Value::Bool(false), b) => format!("{b:.2}"),
                _ => "-".to_string(),
            };
            s.push_str(&format!(
                "| {name} | {} | {:.0} | {build} | {:.1} | {:.0} | {:.2}% | {:.2}% |\n",
                per.join(", "),
                f(&v["train_images_per_s"]),
                f(&v["wall_seconds"]),
                f(&v["peak_rss_mb"]),
                f(&v["knn_top1"]) * 100.0,
                f(&v["raw_knn_top1"]) * 100.0,
            ));
        }
    }
    s.push_str(&format!(
        "\nJPEGs written in {:.1} s (0: reused from an earlier bench).\n",
        f(&r["jpeg_write_seconds"])
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_matches_the_eval_rule() {
        assert_eq!(spread(10, 3), vec![0, 3, 6]);
        assert_eq!(spread(3, 5), vec![0, 1, 2]);
    }

    #[test]
    fn the_markdown_names_every_run() {
        let r = json!({
            "images": 600, "test_images": 120, "epochs": 1, "threads": "2", "jpeg_side": 64,
            "jpeg_write_seconds": 1.0, "eval_train_images": 600,
            "decoded_mb": {"28x28x1": 0.47, "64x64x3": 7.4},
            "runs": {
                "idx-28-grey": {"images_per_s_per_epoch": [500.0], "train_images_per_s": 500.0,
                    "wall_seconds": 9.0, "peak_rss_mb": 700.0, "cache_hit": null,
                    "knn_top1": 0.5, "raw_knn_top1": 0.6},
                "folder-28-grey-warm": {"images_per_s_per_epoch": [480.0], "train_images_per_s": 480.0,
                    "wall_seconds": 9.5, "peak_rss_mb": 710.0, "cache_hit": true,
                    "cache_build_seconds": 0.0, "knn_top1": 0.5, "raw_knn_top1": 0.6},
            }
        });
        let md = markdown(&r);
        assert!(md.contains("| idx-28-grey | 500 | 500 | - |"), "{md}");
        assert!(
            md.contains("| folder-28-grey-warm | 480 | 480 | hit |"),
            "{md}"
        );
        assert!(md.contains("Like for like"), "{md}");
    }
}
