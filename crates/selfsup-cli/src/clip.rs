//! `selfsup pretrain` for `[method] name = "clip"` configs, its summary, and
//! `selfsup embed`.
use crate::{
    default_data_root, git_commit, install_ctrlc, prepare_run_dir, progress, write_summary,
    Overrides, RunDirFlags,
};
use anyhow::{bail, Context, Result};
use selfsup_core::metrics::peak_rss_mb;
use selfsup_multimodal::embed::{load, Embedded};
use selfsup_multimodal::pretrain::{pretrain, ClipRunConfig, ClipRunSummary, RunOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Pre-trains a dual encoder as `cfg` says (data root: `--data` or the cache).
pub fn pretrain_clip(
    mut cfg: ClipRunConfig,
    o: Overrides,
    data: Option<PathBuf>,
    run_dir: PathBuf,
    resume: bool,
    flags: RunDirFlags,
    stop_after: Option<u64>,
) -> Result<()> {
    o.apply(
        &mut cfg.trainer,
        &mut cfg.run.device,
        &mut cfg.run.batch_size,
        &mut cfg.run.threads,
    )?;
    let _run = prepare_run_dir(&run_dir, &cfg.to_toml(), resume, flags, true)?;
    let stop = Arc::new(AtomicBool::new(false));
    install_ctrlc(&stop)?;
    let mut observer = progress::Bars::new(stop.clone(), stop_after).with_unit(1.0, "pairs/s");
    let mut log = |line: &str| eprintln!("{line}");
    let summary = pretrain(
        &cfg,
        RunOptions {
            data_root: data.unwrap_or_else(default_data_root),
            run_dir: run_dir.clone(),
            resume,
            observer: &mut observer,
            stop,
            git_commit: git_commit(),
            log: &mut log,
            distributed: None,
        },
    );
    observer.finish();
    let summary = summary?;
    write_summary(&run_dir, &summary)?;
    print_clip_summary(&summary, peak_rss_mb());
    Ok(())
}

fn print_clip_summary(s: &ClipRunSummary, peak_rss_mb: Option<f64>) {
    println!();
    println!(
        "selfsup clip on {} images with {} captions ({}; {} pairs skipped)",
        s.train_images,
        s.train_pairs,
        s.device,
        s.skipped.total()
    );
    println!(
        "  image tower {} ({:.2} M), text tower BERT {} layers / hidden {} ({:.2} M), shared space {}, vocabulary {}",
        s.model.vision_arch,
        s.model.vision_params as f64 / 1e6,
        s.model.text_layers,
        s.model.text_hidden,
        s.model.text_params as f64 / 1e6,
        s.model.embed_dim,
        s.vocab_size
    );
    println!(
        "  epochs {}, steps {}, batch {}, final loss {:.4}, logit scale {:.1}",
        s.epochs, s.steps, s.batch_size, s.final_loss, s.logit_scale
    );
    println!(
        "  training {:.1} s ({:.0} pairs/s), whole run {:.1} s, peak memory {}",
        s.train_seconds,
        s.train_pairs_per_s,
        s.wall_seconds,
        peak_rss_mb.map_or("n/a".into(), |m| format!("{m:.0} MB"))
    );
    println!(
        "  {:<52} {:>8} {:>8} {:>8}",
        "", "trained", "random", "chance"
    );
    for ((name, v), (_, r)) in s.metrics.iter().zip(&s.random_weights) {
        let chance = s
            .chance
            .iter()
            .find(|(n, _)| n == name)
            .map_or(String::new(), |(_, c)| format!("{:.2}%", c * 100.0));
        println!(
            "  {:<52} {:>7.2}% {:>7.2}% {:>8}",
            name,
            v * 100.0,
            r * 100.0,
            chance
        );
    }
    for w in &s.warnings {
        println!("  warning: {w}");
    }
    println!(
        "  curves {}, export {}",
        s.curves.display(),
        s.export_dir.display()
    );
}

/// Refuses a checkpoint or export of another modality than CLIP, saying
/// which one it is and what works for it.
fn check_clip(path: &Path) -> Result<()> {
    let what = if path.is_dir() {
        let Ok(text) = std::fs::read_to_string(path.join("config.json")) else {
            return Ok(()); // the loader names the missing file
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            return Ok(());
        };
        let model_type = v.get("model_type").and_then(|m| m.as_str());
        if model_type == Some("selfsup-clip")
            || v.get("selfsup").is_some_and(|s| s.get("clip").is_some())
        {
            return Ok(());
        }
        match model_type {
            Some("bert") => "a text export (BERT); use it with transformers".to_string(),
            Some("wav2vec2") => {
                "an audio export (wav2vec 2.0); use it with transformers".to_string()
            }
            _ => "not a CLIP export (its config.json is not selfsup-clip's)".to_string(),
        }
    } else {
        let Ok(meta) = selfsup_core::checkpoint::read_meta(path) else {
            return Ok(()); // the loader's error names the file and the fix
        };
        let method = meta
            .config
            .parse::<toml::Value>()
            .ok()
            .and_then(|v| crate::method_name(&v).map(str::to_string))
            .unwrap_or(meta.method);
        match crate::modality_of(&method) {
            Some("image-text (CLIP)") => return Ok(()),
            Some("vision") => format!(
                "a vision checkpoint (method '{method}'); use `selfsup eval knn|linear` or \
                 `selfsup export` with it"
            ),
            Some(m) => format!(
                "a {m} checkpoint (method '{method}'); its pretrain run exported it to {}",
                path.parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .join("export")
                    .display()
            ),
            None => format!("not a CLIP checkpoint (method '{method}')"),
        }
    };
    bail!(
        "{} is {what}: `selfsup embed` takes the export folder or checkpoint of a \
         [method] name = \"clip\" run",
        path.display()
    )
}

/// `selfsup embed`: one JSON line per image or text, `{"id", "embedding"}`.
pub fn embed(
    checkpoint: &Path,
    images: Option<PathBuf>,
    texts: Option<PathBuf>,
    out: &Path,
    device: Option<String>,
) -> Result<()> {
    let device = device
        .as_deref()
        .unwrap_or("cpu")
        .parse::<selfsup_core::device::DeviceChoice>()?
        .resolve()?;
    check_clip(checkpoint)?;
    let loaded =
        load(checkpoint, device).with_context(|| format!("loading {}", checkpoint.display()))?;
    let e: Embedded = match (images, texts) {
        (Some(dir), None) => loaded.embed_images(&dir)?,
        (None, Some(file)) => loaded.embed_texts(&file)?,
        _ => bail!("give exactly one of --images DIR and --texts FILE"),
    };
    for s in &e.skipped {
        eprintln!("skipped {} (not a png / jpg / jpeg file)", s.display());
    }
    let rows: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(&e.embeddings)?;
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = std::io::BufWriter::new(file);
    for (id, v) in e.ids.iter().zip(&rows) {
        writeln!(w, "{}", serde_json::json!({"id": id, "embedding": v}))?;
    }
    w.flush()?;
    println!(
        "wrote {} embeddings of dimension {} to {} ({} skipped)",
        rows.len(),
        rows.first().map_or(0, Vec::len),
        out.display(),
        e.skipped.len()
    );
    Ok(())
}
