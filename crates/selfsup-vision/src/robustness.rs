//! `selfsup eval robustness`: how much of a frozen representation's
//! accuracy survives common corruptions of the test images (ImageNet-C
//! style, Hendrycks & Dietterich 2019; the corruptions and their parameters
//! are in [`crate::augment::corrupt`]).
//!
//! The probes see only clean images while they are fitted: the linear probe
//! (`[eval.linear]`) is trained on the clean features of the kNN bank /
//! probe training set, and the kNN bank (`[eval.knn]`) is the same clean
//! features. Then the clean test split and every corrupted copy of it
//! (corrupted in pixel space `[0, 1]`, before the encoder's normalisation)
//! are scored. Each representation's linear probe is fitted once
//! ([`LinearProbe::fit`]) and scores all ten test sets.
//!
//! Three representations go through the same code: the checkpoint's
//! encoder, the same architecture with random weights (seeded by core's
//! random-weights seed, as the pre-training summary's control), and the raw
//! pixels. Each row is top-1 and the drop from that representation's clean
//! top-1, so a representation that is merely worse is not mistaken for one
//! that is more fragile.
use crate::augment::corrupt::corrupt_dataset;
pub use crate::augment::corrupt::RobustnessConfig;
use crate::config::VisionRunConfig;
use crate::data::{ImageDataset, Normalize};
use crate::evaluate::{dataset_features, EvalData};
use crate::vision_method::{build_method, VisionMethod};
use selfsup_core::eval::{knn_top1, LinearProbe};
use selfsup_core::Result;
use serde::Serialize;
use std::borrow::Cow;
use std::path::Path;
use tch::Tensor;

/// The table `selfsup eval robustness` writes beside the checkpoint.
pub const ROBUSTNESS_FILE: &str = "robustness.json";

/// Images embedded per forward pass.
const CHUNK: usize = 512;

/// What a probe reads: a frozen encoder's features, or the raw pixels.
pub enum Representation<'a> {
    /// `embed` of this method.
    Encoder(&'a dyn VisionMethod),
    /// The normalised pixels, flattened.
    RawPixels,
}

impl Representation<'_> {
    /// The features of every image of `d` (on the CPU).
    fn features(&self, d: &ImageDataset, norm: &Normalize) -> Tensor {
        match self {
            Representation::Encoder(m) => dataset_features(*m, d, norm, CHUNK),
            Representation::RawPixels => d
                .to_tensor(&(0..d.len()).collect::<Vec<_>>(), norm)
                .flatten(1, -1),
        }
    }
}

/// One scored set under one representation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// `trained`, `random_weights`, `raw_pixels` (or the caller's name).
    pub representation: String,
    /// `clean` or a corruption name.
    pub corruption: String,
    /// 0 for the clean set, else 1 to 3.
    pub severity: u8,
    /// The corruption's strength at this severity on these images (none
    /// for the clean set); what it measures is in the file's `corruptions`.
    pub parameter: Option<f64>,
    /// Linear-probe top-1 in `[0, 1]`.
    pub linear_top1: f64,
    /// Clean linear-probe top-1 minus this one (positive: worse).
    pub linear_drop: f64,
    /// kNN top-1 in `[0, 1]` (when `[eval.robustness] knn`).
    pub knn_top1: Option<f64>,
    /// Clean kNN top-1 minus this one.
    pub knn_drop: Option<f64>,
}

/// Scores every representation on the clean test split and on each
/// corrupted copy of it (`[eval.robustness]`), the probes fitted on the
/// clean bank of `data`. `progress` hears one line per scored set.
pub fn robustness(
    cfg: &VisionRunConfig,
    data: &EvalData,
    representations: &[(&str, Representation<'_>)],
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Row>> {
    let rc = &cfg.eval.robustness;
    let sets = rc.sets()?;
    let train: Vec<Tensor> = representations
        .iter()
        .map(|(_, r)| r.features(&data.train, &data.norm))
        .collect();
    // One probe per representation, fitted once on its clean training
    // features and scored on every test set.
    let probes = train
        .iter()
        .map(|f| LinearProbe::fit(f, &data.train_y, data.classes, &cfg.eval.linear))
        .collect::<Result<Vec<_>>>()?;
    let side = data.test.height.max(data.test.width);
    let mut clean: Vec<(f64, Option<f64>)> = Vec::new();
    let mut rows = Vec::new();
    let total = sets.len() + 1;
    for (k, set) in std::iter::once(None)
        .chain(sets.into_iter().map(Some))
        .enumerate()
    {
        let (test, corruption, severity, parameter) = match set {
            None => (Cow::Borrowed(&data.test), "clean".to_string(), 0, None),
            Some((c, s)) => (
                Cow::Owned(corrupt_dataset(&data.test, c, s, rc.seed)?),
                c.name().to_string(),
                s,
                Some(c.parameter(s, side)?),
            ),
        };
        progress(&format!(
            "robustness: {corruption}{} ({}/{total})",
            match severity {
                0 => String::new(),
                s => format!(" severity {s}"),
            },
            k + 1
        ));
        for (i, ((name, rep), (train_f, probe))) in representations
            .iter()
            .zip(train.iter().zip(&probes))
            .enumerate()
        {
            let test_f = rep.features(&test, &data.norm);
            let linear = probe.top1(&test_f, &data.test_y)?;
            let knn = match rc.knn {
                true => Some(knn_top1(
                    train_f,
                    &data.train_y,
                    &test_f,
                    &data.test_y,
                    data.classes,
                    &cfg.eval.knn,
                )?),
                false => None,
            };
            if severity == 0 {
                clean.push((linear, knn));
            }
            let (clean_linear, clean_knn) = clean.get(i).copied().unwrap_or((linear, knn));
            rows.push(Row {
                representation: name.to_string(),
                corruption: corruption.clone(),
                severity,
                parameter,
                linear_top1: linear,
                linear_drop: clean_linear - linear,
                knn_top1: knn,
                knn_drop: clean_knn.zip(knn).map(|(c, x)| c - x),
            });
        }
    }
    Ok(rows)
}

/// The names [`report`] gives its three representations, in its order.
pub const REPRESENTATIONS: [&str; 3] = ["trained", "random_weights", "raw_pixels"];

/// `selfsup eval robustness` on a restored checkpoint: loads the
/// evaluation data of `dir` (with the config's caps), builds the
/// random-weights control, scores the three representations, writes
/// `file` (the config's data: [`ROBUSTNESS_FILE`]) beside the checkpoint
/// and returns the lines to print.
pub fn report(
    checkpoint: &Path,
    file: &str,
    cfg: &VisionRunConfig,
    trained: &dyn VisionMethod,
    dir: &Path,
    device: tch::Device,
) -> Result<Vec<String>> {
    let start = std::time::Instant::now();
    let data = EvalData::load(cfg, dir)?;
    selfsup_core::run::seed_random_weights(cfg.trainer.seed);
    let random = build_method(cfg, device, cfg.data.channels())?;
    let reps = [
        (REPRESENTATIONS[0], Representation::Encoder(trained)),
        (REPRESENTATIONS[1], Representation::Encoder(random.as_ref())),
        (REPRESENTATIONS[2], Representation::RawPixels),
    ];
    let rows = robustness(cfg, &data, &reps, &mut |l| eprintln!("{l}"))?;
    let seconds = start.elapsed().as_secs_f64();
    let side = data.test.height.max(data.test.width);
    let rc = &cfg.eval.robustness;
    let mut corruptions = Vec::new();
    for (c, s) in rc.sets()? {
        corruptions.push(serde_json::json!({
            "corruption": c.name(),
            "severity": s,
            "parameter_name": c.parameter_name(),
            "parameter": c.parameter(s, side)?,
        }));
    }
    let json = serde_json::json!({
        "checkpoint": checkpoint.display().to_string(),
        "method": trained.name(),
        "data": dir.display().to_string(),
        "train_images": data.train.len(),
        "test_images": data.test.len(),
        "image_size": [data.test.height, data.test.width],
        "representations": REPRESENTATIONS,
        "corruptions": corruptions,
        "settings": rc,
        "linear": cfg.eval.linear,
        "knn": rc.knn.then_some(&cfg.eval.knn),
        "rows": rows,
        "seconds": seconds,
    });
    let out = selfsup_core::eval::write_beside(checkpoint, file, &json)?;
    let mut lines = vec![format!(
        "robustness to corruptions of the {} test images ({}x{}, corrupted in pixel space before \
         normalisation); the probe and the kNN bank see only the {} clean training images; \
         top-1 %, the change from clean in points in brackets",
        data.test.len(),
        data.test.height,
        data.test.width,
        data.train.len()
    )];
    lines.extend(table(&rows, "linear probe", |r| {
        Some((r.linear_top1, r.linear_drop))
    }));
    if rc.knn {
        lines.extend(table(&rows, "kNN", |r| r.knn_top1.zip(r.knn_drop)));
    }
    lines.push(format!("wrote {} ({seconds:.0} s)", out.display()));
    Ok(lines)
}

/// One table: a line per scored set (clean first, then every corruption
/// and severity, then the mean over the corrupted sets), a column per
/// representation, `score` picking (top-1, drop) out of a row.
pub fn table(rows: &[Row], title: &str, score: impl Fn(&Row) -> Option<(f64, f64)>) -> Vec<String> {
    let mut names: Vec<&str> = Vec::new();
    let mut sets: Vec<(&str, u8, Option<f64>)> = Vec::new();
    for r in rows {
        if !names.contains(&r.representation.as_str()) {
            names.push(&r.representation);
        }
        let set = (r.corruption.as_str(), r.severity, r.parameter);
        if !sets.iter().any(|s| (s.0, s.1) == (set.0, set.1)) {
            sets.push(set);
        }
    }
    let mut lines = vec![format!(
        "{:<34}{}",
        title,
        names.iter().map(|n| format!("{n:<18}")).collect::<String>()
    )];
    let cell = |corruption: &str, severity: u8, name: &str| {
        rows.iter()
            .find(|r| {
                r.corruption == corruption && r.severity == severity && r.representation == name
            })
            .and_then(&score)
    };
    for &(corruption, severity, parameter) in &sets {
        let label = match (severity, parameter) {
            (0, _) | (_, None) => corruption.to_string(),
            (s, Some(p)) => format!("{corruption} {s} ({p:.3})"),
        };
        let cells: String = names
            .iter()
            .map(|n| match cell(corruption, severity, n) {
                Some((top1, _)) if severity == 0 => {
                    format!("{:<18}", format!("{:.2}", top1 * 100.0))
                }
                Some((top1, drop)) => format!(
                    "{:<18}",
                    format!("{:.2} ({:+.2})", top1 * 100.0, -drop * 100.0)
                ),
                None => format!("{:<18}", "-"),
            })
            .collect();
        lines.push(format!("{label:<34}{cells}"));
    }
    if sets.len() > 1 {
        let cells: String = names
            .iter()
            .map(|n| {
                let corrupted: Vec<(f64, f64)> = sets
                    .iter()
                    .filter(|s| s.1 > 0)
                    .filter_map(|s| cell(s.0, s.1, n))
                    .collect();
                let k = corrupted.len().max(1) as f64;
                let (t, d) = corrupted
                    .iter()
                    .fold((0.0, 0.0), |(t, d), (a, b)| (t + a, d + b));
                format!(
                    "{:<18}",
                    format!("{:.2} ({:+.2})", t / k * 100.0, -d / k * 100.0)
                )
            })
            .collect();
        lines.push(format!("{:<34}{cells}", "mean of the corrupted sets"));
    }
    lines
}

#[cfg(test)]
mod tests;
