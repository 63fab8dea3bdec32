//! What a representation is worth: protocols that score frozen features
//! against labels, without touching the encoder.
//!
//! * [`knn_top1`]: weighted k-nearest-neighbour classification (Wu et al.
//!   2018), cheap enough to run after every epoch.
//! * [`linear_probe_top1`]: a linear classifier trained on the frozen,
//!   standardised features.
//! * [`few_shot`]: N-way K-shot episodes, nearest class mean.
//! * [`finetune`]: label efficiency, the encoder trained end to end on
//!   fractions of the labels against the same network from scratch.
//! * [`split`]: the seeded validation part of a training set, on which
//!   every choice is made (the test split is read once, at the end).
//!
//! Both take features `[N, D]` and integer labels `[N]` on any device and
//! return top-1 accuracy in `[0, 1]`.
pub mod few_shot;
pub mod finetune;
pub mod knn;
pub mod linear_probe;
pub mod split;

pub use few_shot::{few_shot, FewShotConfig, FewShotScore};
pub use knn::{knn_top1, KnnConfig};
pub use linear_probe::{linear_probe_top1, LinearProbe, LinearProbeConfig};

use crate::{Error, Result};
use serde::Serialize;
use tch::{Kind, Tensor};

/// Scores of one evaluation run; `None` where the protocol was not run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct EvalReport {
    /// Weighted kNN top-1 accuracy in `[0, 1]`.
    pub knn_top1: Option<f64>,
    /// Linear-probe top-1 accuracy in `[0, 1]`.
    pub linear_top1: Option<f64>,
}

/// Checks one labelled split and returns its features as detached `Float`
/// and its labels as `Int64` on the features' device.
pub(crate) fn check_split(
    split: &str,
    feats: &Tensor,
    labels: &Tensor,
    num_classes: i64,
) -> Result<(Tensor, Tensor)> {
    if num_classes < 1 {
        return Err(Error::Eval(format!(
            "num_classes must be at least 1, got {num_classes}"
        )));
    }
    let fs = feats.size();
    if fs.len() != 2 {
        return Err(Error::Eval(format!(
            "{split} features must be [N, D], got shape {fs:?}"
        )));
    }
    let ls = labels.size();
    if ls.len() != 1 {
        return Err(Error::Eval(format!(
            "{split} labels must be [N], got shape {ls:?}"
        )));
    }
    if fs[0] == 0 {
        return Err(Error::Eval(format!("the {split} set is empty")));
    }
    if fs[1] == 0 {
        return Err(Error::Eval(format!(
            "{split} features have zero dimensions"
        )));
    }
    if fs[0] != ls[0] {
        return Err(Error::Eval(format!(
            "{split} set: {} feature rows but {} labels",
            fs[0], ls[0]
        )));
    }
    if labels.is_floating_point() || labels.kind() == Kind::Bool || labels.is_complex() {
        return Err(Error::Eval(format!(
            "{split} labels must be integers, got {:?}",
            labels.kind()
        )));
    }
    let feats = feats.detach().to_kind(Kind::Float);
    let labels = labels
        .detach()
        .to_device(feats.device())
        .to_kind(Kind::Int64);
    let (lo, hi) = (labels.min().int64_value(&[]), labels.max().int64_value(&[]));
    if lo < 0 || hi >= num_classes {
        return Err(Error::Eval(format!(
            "{split} labels range over [{lo}, {hi}], outside [0, {num_classes}) for {num_classes} classes"
        )));
    }
    if feats.isfinite().all().int64_value(&[]) == 0 {
        return Err(Error::Eval(format!(
            "{split} features contain NaN or infinite values"
        )));
    }
    Ok((feats, labels))
}

/// Checks that train and test features have the same width.
pub(crate) fn check_same_dim(train: &Tensor, test: &Tensor) -> Result<()> {
    let (a, b) = (train.size()[1], test.size()[1]);
    if a != b {
        return Err(Error::Eval(format!(
            "train features have {a} dimensions but test features have {b}"
        )));
    }
    Ok(())
}

/// The file an evaluation writes beside its checkpoint: `default` (e.g.
/// `robustness.json`) on the config's own data; with `--data DIR`,
/// `<stem>-<DIR's name>.json`, so evaluating on a second dataset keeps the
/// first one's table. Characters other than ASCII letters, digits, `.`,
/// `_` and `-` become `_`; the name is cut at 64 characters.
pub fn result_file_name(default: &str, data: Option<&std::path::Path>) -> String {
    let Some(folder) = data.and_then(|d| d.file_name()) else {
        return default.to_string();
    };
    let folder: String = folder
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let (stem, ext) = default.rsplit_once('.').unwrap_or((default, "json"));
    format!("{stem}-{folder}.{ext}")
}

/// Writes `table` as pretty JSON into `file` beside `checkpoint`
/// (atomically) and returns the path written.
pub fn write_beside(
    checkpoint: &std::path::Path,
    file: &str,
    table: &serde_json::Value,
) -> Result<std::path::PathBuf> {
    let out = checkpoint
        .parent()
        .unwrap_or_else(|| std::path::Path::new("."))
        .join(file);
    let text = serde_json::to_string_pretty(table)
        .map_err(|e| crate::Error::Config(format!("{}: {e}", out.display())))?;
    crate::tensor_io::write_atomic(&out, text.as_bytes())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::result_file_name;
    use std::path::Path;

    #[test]
    fn a_second_dataset_gets_its_own_result_file() {
        assert_eq!(result_file_name("robustness.json", None), "robustness.json");
        assert_eq!(
            result_file_name("robustness.json", Some(Path::new("/data/mnist"))),
            "robustness-mnist.json"
        );
        assert_eq!(
            result_file_name("finetune.json", Some(Path::new("/d/my photos/"))),
            "finetune-my_photos.json"
        );
        assert_eq!(
            result_file_name("finetune.json", Some(Path::new("/"))),
            "finetune.json"
        );
        let long = "x".repeat(300);
        assert_eq!(
            result_file_name("finetune.json", Some(Path::new(&long))).len(),
            "finetune-.json".len() + 64
        );
    }
}
