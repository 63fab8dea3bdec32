//! The images of a run: the training split (or folder), the test split (or
//! `test_path` folder) when there is one to evaluate on, and what
//! evaluation will measure or why it cannot.
use crate::config::{DataConfig, DataFormat, VisionRunConfig};
use crate::data::folder_cache::{load_image_folder, CacheReport, SkippedFile};
use crate::data::{self, ImageDataset, Split};
use selfsup_core::trainer::Observer;
use selfsup_core::{Error, Result};
use std::path::Path;

fn load_split(cfg: &DataConfig, dir: &Path, split: Split) -> Result<ImageDataset> {
    let ds = match cfg.format {
        DataFormat::FashionMnist => data::idx::read_fashion_mnist(dir, split),
        DataFormat::Cifar10 => data::cifar::read_cifar10(dir, split),
        DataFormat::Cifar100 => data::cifar::read_cifar100(dir, split),
        DataFormat::ImageFolder => {
            return Err(Error::Config(
                "an image folder has no built-in splits: give [data] test_path".into(),
            ))
        }
        DataFormat::Emoji => {
            data::emoji::read_emoji(dir, &cfg.emoji_options()).map(|d| match split {
                Split::Train => d.train,
                Split::Test => d.test,
            })
        }
    };
    ds.map_err(Error::from)
}

/// `k` indices evenly spread over `0..n` (all of them when `k >= n`).
pub fn spread(n: usize, k: usize) -> Vec<usize> {
    if k >= n {
        (0..n).collect()
    } else {
        (0..k).map(|i| i * n / k).collect()
    }
}

/// The data of a run: the training images, the test images when there are
/// any to evaluate on, and what evaluation will measure (or why it cannot).
pub struct LoadedData {
    pub train: ImageDataset,
    pub test: Option<ImageDataset>,
    /// "test split", "test folder DIR", or why evaluation is skipped.
    pub evaluation: String,
    /// Image folders: the training folder's cache.
    pub cache: Option<CacheReport>,
    /// Image folders: skipped files of both folders, and the first ones.
    pub skipped: (usize, Vec<SkippedFile>),
}

/// Train split (cut to `train_images`) and test split (an image folder's
/// `test_path`, when given).
pub fn load_data(cfg: &VisionRunConfig, dir: &Path, obs: &mut dyn Observer) -> Result<LoadedData> {
    let dc = &cfg.data;
    if dc.format == DataFormat::Emoji {
        obs.phase("reading emoji", 0, 1);
        let d = data::emoji::read_emoji(dir, &dc.emoji_options())?;
        obs.phase("reading emoji", 1, 1);
        let mut train = d.train;
        if let Some(n) = dc.train_images {
            train = train.prefix(n);
        }
        let evaluation = format!(
            "test split: {:.0} % of each category's emoji (seeded by [data] split_seed); {} \
             training and {} test images; {}",
            dc.emoji_options().test_fraction * 100.0,
            train.len(),
            d.test.len(),
            d.report.left_out()
        );
        return Ok(LoadedData {
            train,
            test: Some(d.test),
            evaluation,
            cache: None,
            skipped: (d.report.skipped_count, d.report.skipped),
        });
    }
    if dc.format != DataFormat::ImageFolder {
        obs.phase("reading data", 0, 2);
        let mut train = load_split(dc, dir, Split::Train)?;
        if let Some(n) = dc.train_images {
            train = train.prefix(n);
        }
        obs.phase("reading data", 1, 2);
        let test = load_split(dc, dir, Split::Test)?;
        obs.phase("reading data", 2, 2);
        return Ok(LoadedData {
            train,
            test: Some(test),
            evaluation: "test split".into(),
            cache: None,
            skipped: (0, Vec::new()),
        });
    }
    let opts = dc.folder_options();
    let (mut train, report) =
        load_image_folder(dir, &opts, &mut |d, t| obs.phase("reading images", d, t))?;
    if let Some(n) = dc.train_images {
        if n < train.len() {
            train = train.subset(&spread(train.len(), n));
        }
    }
    let mut skipped = (report.skipped_count, report.skipped.clone());
    let (test, evaluation) = match (&dc.test_path, train.labels.is_some()) {
        (_, false) => (
            None,
            format!(
                "skipped: {} is unlabelled (images directly in the folder, no class folders), \
                 so there is no kNN, linear probe or raw-pixel baseline; the collapse monitors \
                 still run",
                dir.display()
            ),
        ),
        (None, true) => (
            None,
            "skipped: no [data] test_path (a labelled folder with the same class folders) was \
             given, so there is no kNN, linear probe or raw-pixel baseline; the collapse \
             monitors still run"
                .to_string(),
        ),
        (Some(tp), true) => {
            let (mut test, tr) = load_image_folder(tp, &opts, &mut |d, t| {
                obs.phase("reading test images", d, t)
            })?;
            skipped.0 += tr.skipped_count;
            skipped.1.extend(tr.skipped);
            remap_test_labels(&train, &mut test, tp)?;
            (Some(test), format!("test folder {}", tp.display()))
        }
    };
    Ok(LoadedData {
        train,
        test,
        evaluation,
        cache: Some(report),
        skipped,
    })
}

/// Gives the test folder's images the training folder's label of their
/// class name; a class the training folder lacks (or an unlabelled test
/// folder) is an error naming it.
fn remap_test_labels(
    train: &ImageDataset,
    test: &mut ImageDataset,
    test_path: &Path,
) -> Result<()> {
    let Some(labels) = &test.labels else {
        return Err(Error::Config(format!(
            "[data] test_path = {}: the test folder must be labelled (class folders with the \
             training folder's class names), not a folder of images",
            test_path.display()
        )));
    };
    let mut map = Vec::with_capacity(test.classes.len());
    for name in &test.classes {
        let Some(i) = train.classes.iter().position(|c| c == name) else {
            return Err(Error::Config(format!(
                "[data] test_path = {}: class folder '{name}' is not a class of the training \
                 folder (its classes: {})",
                test_path.display(),
                train.classes.join(", ")
            )));
        };
        map.push(i as i64);
    }
    let remapped = labels
        .iter()
        .map(|&l| map.get(l as usize).copied().unwrap_or(0))
        .collect();
    test.labels = Some(remapped);
    test.classes = train.classes.clone();
    Ok(())
}
