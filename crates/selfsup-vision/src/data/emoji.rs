//! The emoji images of the npm packages `emoji-datasource-google` /
//! `emoji-datasource-twitter` (`cargo xtask fetch emoji-google` /
//! `emoji-twitter`) as a labelled colour dataset: one image per emoji,
//! labelled by its category, split into train and test by emoji.
//!
//! * **Layout**: `emoji.json` and `img/<file>.png` (the fetched layout), or
//!   the unpacked npm package: `package/emoji.json` and
//!   `package/img/<set>/64/<file>.png`.
//! * **Which images**: the base image of every entry (`image`) whose
//!   `has_img_<set>` is not `false`; the skin-tone variations are left out
//!   (a variation differs from its base emoji only in skin colour: on two
//!   sides of the split it would be a near copy). Images whose decoded pixels
//!   equal an earlier one's (some flags render alike) are dropped and
//!   counted, so no image is on both sides. Categories with fewer than
//!   [`MIN_CATEGORY_IMAGES`] images (`Component`: the 5 skin-tone swatches)
//!   are dropped and named in the report.
//! * **Pixels**: decoded by the image-folder code ([`decode_square`]): RGBA
//!   laid over **white**, the largest centred square kept (emoji are square),
//!   resized with a triangle filter to `side` (default 32).
//! * **Labels**: the category's index among the kept categories sorted by
//!   name; the names are the dataset's `classes`.
//! * **Split**: within every category, the emoji are ordered by a seeded hash
//!   of their image file name and the first `round(test_fraction * n)` are
//!   the test split (at least one image on each side of a category with two
//!   or more). The split depends on the seed and each emoji's own name, not on
//!   which other files could be read, and the two renderings share it. Both
//!   splits are returned in that hash order (categories mixed).
//!
//! Bad input: a missing `emoji.json` or `img/` folder is an error saying how
//! to fetch the set; a listed image that is missing or unreadable is an error
//! naming the file and the entry, or, with `skip_bad`, skipped and counted.
use super::folder_cache::{read_bounded, SkippedFile, MAX_CACHE_SIDE, MAX_NAMED_SKIPPED};
use super::image_folder::decode_square;
use super::ImageDataset;
use crate::{Error, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path, PathBuf};

/// Side of the square emoji images when `image_size` is not given.
pub const DEFAULT_EMOJI_SIDE: usize = 32;
/// Share of each category's emoji in the test split by default.
pub const DEFAULT_TEST_FRACTION: f64 = 0.2;
/// Categories with fewer images than this are left out (too few to train,
/// validate and test a class on).
pub const MIN_CATEGORY_IMAGES: usize = 20;
/// Largest `emoji.json` read (64 MiB; the real one has 1.3 MB).
pub const MAX_JSON_BYTES: u64 = 64 << 20;
/// Most entries read from `emoji.json` (the real one has 1911).
pub const MAX_ENTRIES: usize = 100_000;
/// Most decoded pixel bytes held (2 GiB).
pub const MAX_PIXEL_BYTES: usize = 2 << 30;

/// Which rendering of the emoji to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmojiSet {
    /// Google's Noto emoji (`emoji-datasource-google`).
    #[default]
    Google,
    /// Twitter's Twemoji (`emoji-datasource-twitter`).
    Twitter,
}

impl EmojiSet {
    /// `google` or `twitter`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Google => "google",
            Self::Twitter => "twitter",
        }
    }

    /// The dataset name `cargo xtask fetch` knows (`emoji-google`).
    pub fn dataset(self) -> &'static str {
        match self {
            Self::Google => "emoji-google",
            Self::Twitter => "emoji-twitter",
        }
    }
}

/// How the emoji are read and split.
#[derive(Debug, Clone, PartialEq)]
pub struct EmojiOptions {
    /// Which rendering.
    pub set: EmojiSet,
    /// Side of the square images (1 ..= 1024).
    pub side: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Skip (and count) missing or unreadable images instead of failing.
    pub skip_bad: bool,
    /// Share of each category in the test split, in `(0, 1)`.
    pub test_fraction: f64,
    /// Seed of the train / test split.
    pub split_seed: u64,
}

impl Default for EmojiOptions {
    fn default() -> Self {
        Self {
            set: EmojiSet::Google,
            side: DEFAULT_EMOJI_SIDE,
            channels: 3,
            skip_bad: false,
            test_fraction: DEFAULT_TEST_FRACTION,
            split_seed: 0,
        }
    }
}

/// What reading the emoji kept and left out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EmojiReport {
    /// Entries in `emoji.json`.
    pub entries: usize,
    /// Entries whose `has_img_<set>` is `false`.
    pub without_image: usize,
    /// Categories left out (fewer than [`MIN_CATEGORY_IMAGES`] images), with
    /// their image counts.
    pub dropped_categories: Vec<(String, usize)>,
    /// Images equal, pixel for pixel, to an earlier one: left out.
    pub duplicates: usize,
    /// Images skipped as missing or unreadable (only with `skip_bad`).
    pub skipped_count: usize,
    /// The first [`MAX_NAMED_SKIPPED`] of them.
    pub skipped: Vec<SkippedFile>,
}

impl EmojiReport {
    /// One line: what was left out and why.
    pub fn left_out(&self) -> String {
        let dropped = self
            .dropped_categories
            .iter()
            .map(|(c, n)| format!("{c} ({n})"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{} entries; left out: {} without an image of this set, {} duplicate image(s), \
             {} unreadable (skip_bad), categories under {MIN_CATEGORY_IMAGES} images: {}",
            self.entries,
            self.without_image,
            self.duplicates,
            self.skipped_count,
            if dropped.is_empty() { "none" } else { &dropped }
        )
    }
}

/// The emoji of one set, split by emoji.
#[derive(Debug, Clone)]
pub struct EmojiData {
    /// The training split.
    pub train: ImageDataset,
    /// The test split.
    pub test: ImageDataset,
    /// The image file name of every training image, in order.
    pub train_files: Vec<String>,
    /// The image file name of every test image, in order.
    pub test_files: Vec<String>,
    /// What was left out.
    pub report: EmojiReport,
}

/// One `emoji.json` entry: only the fields read here (the others are ignored).
#[derive(Debug, Deserialize)]
struct Entry {
    image: String,
    category: String,
    #[serde(default)]
    has_img_google: Option<bool>,
    #[serde(default)]
    has_img_twitter: Option<bool>,
}

impl Entry {
    fn has_image(&self, set: EmojiSet) -> bool {
        match set {
            EmojiSet::Google => self.has_img_google,
            EmojiSet::Twitter => self.has_img_twitter,
        }
        .unwrap_or(true)
    }
}

/// `emoji.json` and the image folder of `root` (fetched or npm layout).
fn locate(root: &Path, set: EmojiSet) -> Result<(PathBuf, PathBuf)> {
    let fetch_hint = || {
        format!(
            "fetch it with `cargo xtask fetch {}` (a folder holding emoji.json and img/*.png, or \
             the unpacked npm package emoji-datasource-{})",
            set.dataset(),
            set.as_str()
        )
    };
    let (json, img) = if root.join("emoji.json").is_file() {
        (root.join("emoji.json"), root.join("img"))
    } else if root.join("package/emoji.json").is_file() {
        (
            root.join("package/emoji.json"),
            root.join("package/img").join(set.as_str()).join("64"),
        )
    } else {
        return Err(Error::MissingDataset {
            path: root.join("emoji.json"),
            what: "no emoji.json (nor package/emoji.json)".into(),
            hint: fetch_hint(),
        });
    };
    if !img.is_dir() {
        return Err(Error::MissingDataset {
            path: img,
            what: format!(
                "no image folder of the {} emoji beside emoji.json",
                set.as_str()
            ),
            hint: fetch_hint(),
        });
    }
    Ok((json, img))
}

/// The entries of `emoji.json`, bounded in bytes and count.
fn read_entries(json: &Path, set: EmojiSet) -> Result<Vec<Entry>> {
    let refetch = format!(
        "fetch it again with `cargo xtask fetch {} --force`",
        set.dataset()
    );
    let len = std::fs::metadata(json)
        .map_err(|e| Error::io(json, e))?
        .len();
    if len > MAX_JSON_BYTES {
        return Err(Error::bad_length(
            json,
            format!(
                "{len} bytes, above the {} MiB an emoji.json may have; {refetch}",
                MAX_JSON_BYTES >> 20
            ),
        ));
    }
    let text = std::fs::read_to_string(json).map_err(|e| Error::io(json, e))?;
    let entries: Vec<Entry> = serde_json::from_str(&text).map_err(|e| Error::MissingDataset {
        path: json.to_path_buf(),
        what: format!(
            "not an emoji-datasource emoji.json (a list of entries with `image` and \
             `category`): {e}"
        ),
        hint: refetch.clone(),
    })?;
    if entries.len() > MAX_ENTRIES {
        return Err(Error::bad_length(
            json,
            format!(
                "{} entries, above the {MAX_ENTRIES} read; {refetch}",
                entries.len()
            ),
        ));
    }
    Ok(entries)
}

/// Whether `name` is one plain file name (no folder part, no `..`).
fn plain_file_name(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    matches!(
        (parts.next(), parts.next()),
        (Some(Component::Normal(_)), None)
    ) && !name.contains(['/', '\\'])
}

/// A 64-bit hash of `seed` and `name` (FNV-1a, then a SplitMix64 finaliser
/// so that close names land far apart), stable across runs and platforms.
fn split_hash(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in seed.to_le_bytes().iter().chain(name.as_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// How many of a category's `n` emoji go to the test split: the rounded
/// share, kept in `1..n` when `n >= 2`.
fn test_count(n: usize, fraction: f64) -> usize {
    if n < 2 {
        return 0;
    }
    ((n as f64 * fraction).round() as usize).clamp(1, n - 1)
}

/// Reads the emoji of `root` (see the module documentation) as a train and a
/// test split.
pub fn read_emoji(root: &Path, opts: &EmojiOptions) -> Result<EmojiData> {
    if !(1..=MAX_CACHE_SIDE).contains(&opts.side) || !(opts.channels == 1 || opts.channels == 3) {
        return Err(Error::Config(format!(
            "emoji {}: image_size = {} and channels = {}: the side must be in \
             1..={MAX_CACHE_SIDE} and the channels 1 or 3",
            root.display(),
            opts.side,
            opts.channels
        )));
    }
    if !(opts.test_fraction > 0.0 && opts.test_fraction < 1.0) {
        return Err(Error::Config(format!(
            "emoji: test_fraction = {}: give a share in (0, 1), e.g. {DEFAULT_TEST_FRACTION}",
            opts.test_fraction
        )));
    }
    let (json, img_dir) = locate(root, opts.set)?;
    let entries = read_entries(&json, opts.set)?;
    let mut report = EmojiReport {
        entries: entries.len(),
        ..EmojiReport::default()
    };
    let mut listed: Vec<(usize, &Entry)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if !e.has_image(opts.set) {
            report.without_image += 1;
            continue;
        }
        if !plain_file_name(&e.image) {
            return Err(Error::Config(format!(
                "{}: entry {i} ({}): image \"{}\" is not a plain file name inside {}; \
                 fetch the set again with `cargo xtask fetch {} --force`",
                json.display(),
                e.category,
                e.image,
                img_dir.display(),
                opts.set.dataset()
            )));
        }
        listed.push((i, e));
    }
    // Categories with enough images, sorted by name: label = index.
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, e) in &listed {
        *counts.entry(e.category.as_str()).or_default() += 1;
    }
    let classes: Vec<String> = counts
        .iter()
        .filter(|(_, &n)| n >= MIN_CATEGORY_IMAGES)
        .map(|(c, _)| c.to_string())
        .collect();
    report.dropped_categories = counts
        .iter()
        .filter(|(_, &n)| n < MIN_CATEGORY_IMAGES)
        .map(|(c, &n)| (c.to_string(), n))
        .collect();
    let listed: Vec<(usize, &Entry, i64)> = listed
        .into_iter()
        .filter_map(|(i, e)| {
            let label = classes.iter().position(|c| *c == e.category)?;
            Some((i, e, label as i64))
        })
        .collect();
    if classes.len() < 2 {
        return Err(Error::Empty {
            path: json.clone(),
            what: format!(
                "{} categor(ies) with at least {MIN_CATEGORY_IMAGES} images of the {} set; \
                 a labelled dataset needs two",
                classes.len(),
                opts.set.as_str()
            ),
        });
    }
    let per = opts.side * opts.side * opts.channels;
    if listed.len().saturating_mul(per) > MAX_PIXEL_BYTES {
        return Err(Error::Config(format!(
            "emoji {}: {} images of {}x{}x{} exceed the {} GiB of pixels held; give a smaller \
             [data] image_size",
            root.display(),
            listed.len(),
            opts.side,
            opts.side,
            opts.channels,
            MAX_PIXEL_BYTES >> 30
        )));
    }
    let decoded: Vec<Result<Vec<u8>>> = listed
        .par_iter()
        .map(|(_, e, _)| {
            let path = img_dir.join(&e.image);
            let bytes = read_bounded(&path)?;
            decode_square(&path, &bytes, opts.side, opts.channels)
        })
        .collect();
    // (file name, label, pixels) of the readable, distinct images.
    let mut kept: Vec<(&str, i64, Vec<u8>)> = Vec::with_capacity(listed.len());
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    for ((i, e, label), d) in listed.iter().zip(decoded) {
        match d {
            Ok(px) => {
                if !seen.insert(px.clone()) {
                    report.duplicates += 1;
                    continue;
                }
                kept.push((e.image.as_str(), *label, px));
            }
            Err(err) => {
                let reason = match err {
                    Error::CorruptImage { reason, .. } => reason,
                    other => other.to_string(),
                };
                if !opts.skip_bad {
                    return Err(Error::CorruptImage {
                        path: img_dir.join(&e.image),
                        reason: format!(
                            "{reason} (entry {i} of {}; fetch the set again with `cargo xtask \
                             fetch {} --force`, or set [data] skip_bad = true to skip such \
                             images and count them)",
                            json.display(),
                            opts.set.dataset()
                        ),
                    });
                }
                report.skipped_count += 1;
                if report.skipped.len() < MAX_NAMED_SKIPPED {
                    report.skipped.push(SkippedFile {
                        file: e.image.clone(),
                        reason,
                    });
                }
            }
        }
    }
    drop(seen);
    // Per category: hash order, the first share to the test split.
    let mut order: Vec<usize> = (0..kept.len()).collect();
    let key = |j: usize| split_hash(opts.split_seed, kept[j].0);
    order.sort_by_key(|&j| (key(j), kept[j].0));
    let mut per_class = vec![0usize; classes.len()];
    for (_, label, _) in &kept {
        per_class[*label as usize] += 1;
    }
    let mut want_test: Vec<usize> = per_class
        .iter()
        .map(|&n| test_count(n, opts.test_fraction))
        .collect();
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for j in order {
        let slot = &mut want_test[kept[j].1 as usize];
        if *slot > 0 {
            *slot -= 1;
            test.push(j);
        } else {
            train.push(j);
        }
    }
    let build = |part: &[usize], split: &str| -> Result<(ImageDataset, Vec<String>)> {
        let mut pixels = Vec::with_capacity(part.len() * per);
        for &j in part {
            pixels.extend_from_slice(&kept[j].2);
        }
        let ds = ImageDataset::new(
            format!("{}/{split}", opts.set.dataset()),
            opts.side,
            opts.side,
            opts.channels,
            pixels,
            Some(part.iter().map(|&j| kept[j].1).collect()),
            classes.clone(),
        )?;
        Ok((ds, part.iter().map(|&j| kept[j].0.to_string()).collect()))
    };
    let (train, train_files) = build(&train, "train")?;
    let (test, test_files) = build(&test, "test")?;
    if train.is_empty() || test.is_empty() {
        return Err(Error::Empty {
            path: img_dir,
            what: format!(
                "{} training and {} test images could be read: too few to split",
                train.len(),
                test.len()
            ),
        });
    }
    Ok(EmojiData {
        train,
        test,
        train_files,
        test_files,
        report,
    })
}

#[cfg(test)]
mod tests;
