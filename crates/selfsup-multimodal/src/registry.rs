//! The registry datasets as image-caption pairs (`cargo xtask fetch` puts
//! them under `~/.cache/selfsup/datasets/`):
//!
//! - `emoji-google` / `emoji-twitter` (npm `emoji-datasource-*`): `emoji.json`
//!   and `img/<image>.png`; captions are the lower-cased Unicode name
//!   ("grinning face") and each short name with `_`/`-` as spaces
//!   ("grinning"); the class is the emoji category ("smileys & emotion").
//!   The key of an image is its file name, the same in both renderings, so a
//!   held-out emoji is held out in both.
//! - Fashion-MNIST (Debian `dataset-fashion-mnist`): grey 28x28 images made
//!   RGB at the run's size, captioned from their class names through
//!   templates ("a photo of a sneaker").
use crate::captions::fill;
use crate::error::{PairError, PairResult};
use crate::image_file::{read_rgb, ImageFault};
use crate::pairs::{resolve_under, PairSet, ReadOptions, SkipReport};
use image::imageops::FilterType;
use rayon::prelude::*;
use selfsup_vision::data::idx::{read_fashion_mnist, FASHION_MNIST_CLASSES};
use selfsup_vision::data::{ImageDataset, Split};
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
struct EmojiEntry {
    name: Option<String>,
    #[serde(default)]
    short_names: Vec<String>,
    image: String,
    category: String,
}

/// The captions of one emoji: its name, then its short names, deduplicated.
fn emoji_captions(e: &EmojiEntry) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let names = e
        .name
        .iter()
        .cloned()
        .chain(e.short_names.iter().map(|s| s.replace(['_', '-'], " ")));
    for n in names {
        let n = n
            .to_lowercase()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !n.is_empty() && !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// Reads an emoji-datasource folder (`emoji.json`, `img/`), labelled by
/// category (classes sorted by name, lower-cased).
pub fn read_emoji(dir: &Path, dataset: &str, opts: ReadOptions) -> PairResult<PairSet> {
    let json = dir.join("emoji.json");
    let missing = |what: String| PairError::MissingDataset {
        path: json.clone(),
        what,
        name: dataset.to_string(),
    };
    let text = std::fs::read_to_string(&json).map_err(|e| missing(e.to_string()))?;
    let entries: Vec<EmojiEntry> = serde_json::from_str(&text)
        .map_err(|e| missing(format!("not an emoji-datasource emoji.json: {e}")))?;
    let mut classes: Vec<String> = entries.iter().map(|e| e.category.to_lowercase()).collect();
    classes.sort();
    classes.dedup();
    let img_dir = dir.join("img");
    // An entry's image must stay inside img/ (no absolute path, no `..` out).
    let paths: Vec<Option<std::path::PathBuf>> = entries
        .iter()
        .map(|e| resolve_under(&img_dir, &e.image))
        .collect();
    let decoded: Vec<Option<Result<Vec<u8>, ImageFault>>> = paths
        .par_iter()
        .map(|p| p.as_ref().map(|p| read_rgb(p, opts.image_size)))
        .collect();
    let mut report = SkipReport::default();
    let mut set = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, (e, d)) in entries.iter().zip(decoded).enumerate() {
        let captions = emoji_captions(e);
        let image = img_dir.join(&e.image);
        let label = classes
            .binary_search(&e.category.to_lowercase())
            .map(|l| l as i64);
        let why = match (&d, captions.is_empty(), label) {
            (None, _, _) => Some("leaves the img/ folder (absolute or `..` past it)".to_string()),
            (Some(Err(ImageFault::Missing)), _, _) => Some("is missing".to_string()),
            (Some(Err(ImageFault::Unsupported)), _, _) => Some("is not a png".to_string()),
            (Some(Err(ImageFault::Unreadable(r))), _, _) => Some(format!("cannot be read: {r}")),
            (Some(Ok(_)), true, _) => Some("has no name to caption it with".to_string()),
            (Some(Ok(_)), false, Err(_)) => Some("has no category".to_string()),
            (Some(Ok(_)), false, Ok(_)) => None,
        };
        let (Some(Ok(pixels)), Ok(label), None) = (d.as_ref(), label, why.as_ref()) else {
            let what = format!(
                "entry {} ({}): image {} {}",
                i,
                e.image,
                image.display(),
                why.unwrap_or_default()
            );
            if !opts.skip_bad {
                return Err(missing(what));
            }
            match d {
                None => report.outside_images += 1,
                Some(Err(ImageFault::Missing)) => report.missing_images += 1,
                Some(Err(ImageFault::Unsupported)) => report.unsupported_images += 1,
                Some(Err(ImageFault::Unreadable(_))) => report.unreadable_images += 1,
                Some(Ok(_)) => report.empty_captions += 1,
            }
            if report.examples.len() < 5 {
                report.examples.push(what);
            }
            continue;
        };
        set.0.extend_from_slice(pixels);
        set.1.push(e.image.clone());
        set.2.push(captions);
        set.3.push(label);
    }
    let (pixels, keys, captions, labels) = set;
    let images = ImageDataset::new(
        dataset,
        opts.image_size,
        opts.image_size,
        3,
        pixels,
        Some(labels),
        classes,
    )
    .map_err(|e| PairError::Empty(e.to_string()))?;
    Ok(PairSet {
        images,
        keys,
        captions,
        report,
    })
}

/// Fashion-MNIST's `split` (the first `limit` images) as RGB `image_size`
/// images captioned by `templates` filled with the class name.
pub fn fashion_mnist_pairs(
    dir: &Path,
    split: Split,
    limit: Option<usize>,
    image_size: usize,
    templates: &[String],
) -> PairResult<PairSet> {
    let ds = read_fashion_mnist(dir, split).map_err(|e| PairError::MissingDataset {
        path: dir.to_path_buf(),
        what: e.to_string(),
        name: "fashion-mnist".into(),
    })?;
    let bad = |what: String| PairError::MissingDataset {
        path: dir.to_path_buf(),
        what,
        name: "fashion-mnist".into(),
    };
    let n = limit.map_or(ds.len(), |l| l.min(ds.len()));
    let all_labels = ds.labels.as_deref().unwrap_or_default();
    let labels: Vec<i64> = all_labels
        .get(..n)
        .ok_or_else(|| {
            bad(format!(
                "{} labels for {} images",
                all_labels.len(),
                ds.len()
            ))
        })?
        .to_vec();
    let classes: Vec<String> = FASHION_MNIST_CLASSES
        .iter()
        .map(|c| c.to_lowercase())
        .collect();
    if let Some((i, l)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| usize::try_from(l).map_or(true, |l| l >= classes.len()))
    {
        return Err(bad(format!(
            "image {i} has label {l}, outside the {} classes",
            classes.len()
        )));
    }
    if image_size == 0 || image_size > crate::image_file::MAX_OUTPUT_SIZE {
        return Err(PairError::Empty(format!(
            "image_size {image_size}: must be in 1..={}",
            crate::image_file::MAX_OUTPUT_SIZE
        )));
    }
    let s = image_size as u32;
    let (h, w) = (ds.height as u32, ds.width as u32);
    let per = image_size * image_size * 3;
    let total = n.checked_mul(per).ok_or_else(|| {
        PairError::Empty(format!(
            "{n} images of {image_size}x{image_size} pixels do not fit in memory"
        ))
    })?;
    let mut pixels = vec![0u8; total];
    pixels.par_chunks_mut(per).enumerate().for_each(|(i, out)| {
        // The reader checked every image holds height * width bytes.
        let Some(grey) = image::GrayImage::from_raw(w, h, ds.image(i).to_vec()) else {
            return;
        };
        let grey = if (w, h) == (s, s) {
            grey
        } else {
            image::imageops::resize(&grey, s, s, FilterType::Triangle)
        };
        for (o, g) in out.chunks_mut(3).zip(grey.as_raw()) {
            o.fill(*g);
        }
    });
    let captions = labels
        .iter()
        .map(|&l| {
            let class = classes.get(l as usize).map_or("", String::as_str);
            templates.iter().map(|t| fill(t, class)).collect()
        })
        .collect();
    let images = ImageDataset::new(
        format!("fashion-mnist/{}", split.as_str()),
        image_size,
        image_size,
        3,
        pixels,
        Some(labels),
        classes,
    )
    .map_err(|e| PairError::Empty(e.to_string()))?;
    Ok(PairSet {
        images,
        keys: (0..n)
            .map(|i| format!("fashion-mnist/{}/{i}", split.as_str()))
            .collect(),
        captions,
        report: SkipReport::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emoji_folders_become_captioned_labelled_pairs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("img")).unwrap();
        for (f, c) in [("1f600.png", [250, 200, 0]), ("2764.png", [220, 0, 0])] {
            image::RgbaImage::from_pixel(8, 8, image::Rgba([c[0], c[1], c[2], 255]))
                .save(dir.path().join("img").join(f))
                .unwrap();
        }
        let json = r#"[
          {"name": "GRINNING FACE", "short_names": ["grinning"], "image": "1f600.png", "category": "Smileys & Emotion", "unified": "1F600"},
          {"name": "HEAVY BLACK HEART", "short_names": ["heart", "red_heart"], "image": "2764.png", "category": "Symbols"},
          {"name": "GONE", "short_names": [], "image": "0000.png", "category": "Symbols"}
        ]"#;
        std::fs::write(dir.path().join("emoji.json"), json).unwrap();
        let o = ReadOptions {
            image_size: 4,
            skip_bad: false,
        };
        let e = read_emoji(dir.path(), "emoji-test", o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("0000.png") && e.contains("is missing"), "{e}");
        let p = read_emoji(
            dir.path(),
            "emoji-test",
            ReadOptions {
                skip_bad: true,
                ..o
            },
        )
        .unwrap();
        assert_eq!(p.report.missing_images, 1);
        assert_eq!(p.keys, vec!["1f600.png", "2764.png"]);
        assert_eq!(p.captions[0], vec!["grinning face", "grinning"]);
        assert_eq!(
            p.captions[1],
            vec!["heavy black heart", "heart", "red heart"]
        );
        assert_eq!(p.images.classes, vec!["smileys & emotion", "symbols"]);
        assert_eq!(p.images.labels, Some(vec![0, 1]));
        assert_eq!(&p.images.image(1)[0..3], &[220, 0, 0]);
    }

    #[test]
    fn emoji_images_outside_img_are_refused_or_counted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("img")).unwrap();
        let red = image::RgbaImage::from_pixel(8, 8, image::Rgba([220, 0, 0, 255]));
        red.save(dir.path().join("img").join("2764.png")).unwrap();
        red.save(dir.path().join("outside.png")).unwrap();
        let json = r#"[
          {"name": "HEART", "image": "2764.png", "category": "Symbols"},
          {"name": "ESCAPE", "image": "../outside.png", "category": "Symbols"}
        ]"#;
        std::fs::write(dir.path().join("emoji.json"), json).unwrap();
        let o = ReadOptions {
            image_size: 4,
            skip_bad: false,
        };
        let e = read_emoji(dir.path(), "emoji-test", o)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("entry 1") && e.contains("leaves the img/ folder"),
            "{e}"
        );
        let p = read_emoji(
            dir.path(),
            "emoji-test",
            ReadOptions {
                skip_bad: true,
                ..o
            },
        )
        .unwrap();
        assert_eq!((p.keys.len(), p.report.outside_images), (1, 1));
    }
}
