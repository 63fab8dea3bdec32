//! Image-caption pairs: a captions file (CSV or JSON Lines) naming images in
//! a folder, several captions per image allowed.
//!
//! ```text
//! image,caption                         # CSV: header optional; quote a field
//! cats/1.png,a cat on a red sofa        #   with "..." ("" inside for a quote)
//! cats/1.png,"a cat, asleep"
//! {"image": "cats/1.png", "caption": "a cat on a red sofa"}     # JSON Lines
//! cats/1.png<TAB>a cat on a red sofa    # TSV (.tsv): no quoting
//! ```
//!
//! The format comes from the extension ([`CaptionsFormat::from_path`]).
//! Image paths are relative to the images folder (by default the captions
//! file's folder) and must stay inside it (`..` resolved lexically; absolute
//! paths refused). A caption naming a missing, unreadable or unsupported
//! image, an empty caption and a duplicate pair are errors naming the file and
//! the line; with `skip_bad` they are skipped and counted per kind in a
//! [`SkipReport`].
use crate::error::{PairError, PairResult};
use crate::image_file::{read_rgb, ImageFault};
use rayon::prelude::*;
use selfsup_vision::data::ImageDataset;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Images (RGB, one size) with their captions.
#[derive(Debug, Clone)]
pub struct PairSet {
    /// The images; `labels` and `classes` are set where the source has classes.
    pub images: ImageDataset,
    /// Stable identity of each image (its path in the captions file, the emoji
    /// image name): the key of the train / held-out split.
    pub keys: Vec<String>,
    /// Captions of each image (at least one).
    pub captions: Vec<Vec<String>>,
    /// What reading skipped.
    pub report: SkipReport,
}

/// Pairs skipped while reading (only with `skip_bad`), by kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SkipReport {
    pub missing_images: usize,
    pub unsupported_images: usize,
    pub unreadable_images: usize,
    pub empty_captions: usize,
    pub duplicate_pairs: usize,
    /// Captions naming an image outside the images folder (absolute or `..`).
    pub outside_images: usize,
    /// The first few, as `file:line: why`.
    pub examples: Vec<String>,
}

impl SkipReport {
    /// Pairs skipped in all.
    pub fn total(&self) -> usize {
        self.missing_images
            + self.unsupported_images
            + self.unreadable_images
            + self.empty_captions
            + self.duplicate_pairs
            + self.outside_images
    }

    fn note(&mut self, e: &PairError) {
        match e {
            PairError::MissingImage { .. } => self.missing_images += 1,
            PairError::Unsupported { .. } => self.unsupported_images += 1,
            PairError::Unreadable { .. } => self.unreadable_images += 1,
            PairError::EmptyCaption { .. } => self.empty_captions += 1,
            PairError::Duplicate { .. } => self.duplicate_pairs += 1,
            PairError::OutsideRoot { .. } => self.outside_images += 1,
            _ => {}
        }
        if self.examples.len() < 5 {
            self.examples.push(e.to_string());
        }
    }

    /// Adds another report's counts to this one.
    pub fn merge(&mut self, o: &SkipReport) {
        self.missing_images += o.missing_images;
        self.unsupported_images += o.unsupported_images;
        self.unreadable_images += o.unreadable_images;
        self.empty_captions += o.empty_captions;
        self.duplicate_pairs += o.duplicate_pairs;
        self.outside_images += o.outside_images;
        for e in &o.examples {
            if self.examples.len() < 5 {
                self.examples.push(e.clone());
            }
        }
    }
}

/// How pairs are read.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// Side of the square RGB images.
    pub image_size: usize,
    /// Skip (and count) bad pairs instead of failing on the first one.
    pub skip_bad: bool,
}

impl PairSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Number of (image, caption) pairs.
    pub fn pair_count(&self) -> usize {
        self.captions.iter().map(Vec::len).sum()
    }

    /// The images `idx` with their captions.
    pub fn subset(&self, idx: &[usize]) -> PairSet {
        PairSet {
            images: self.images.subset(idx),
            keys: idx.iter().map(|&i| self.keys[i].clone()).collect(),
            captions: idx.iter().map(|&i| self.captions[i].clone()).collect(),
            report: self.report.clone(),
        }
    }

    /// Several sets of the same image size as one (class labels dropped:
    /// they do not share a class list).
    pub fn concat(name: &str, sets: &[PairSet]) -> PairResult<PairSet> {
        let first = sets
            .first()
            .ok_or_else(|| PairError::Empty(format!("{name}: no pair source")))?;
        let (h, w) = (first.images.height, first.images.width);
        let mut pixels = Vec::new();
        let mut out = PairSet {
            images: first.images.clone(),
            keys: Vec::new(),
            captions: Vec::new(),
            report: SkipReport::default(),
        };
        for s in sets {
            if (s.images.height, s.images.width, s.images.channels) != (h, w, 3) {
                return Err(PairError::Empty(format!(
                    "{name}: {} has {}x{}x{} images, the others {h}x{w}x3",
                    s.images.name, s.images.height, s.images.width, s.images.channels
                )));
            }
            pixels.extend_from_slice(&s.images.pixels);
            out.keys.extend(s.keys.iter().cloned());
            out.captions.extend(s.captions.iter().cloned());
            out.report.merge(&s.report);
        }
        out.images = ImageDataset::new(name, h, w, 3, pixels, None, Vec::new())
            .map_err(|e| PairError::Empty(e.to_string()))?;
        Ok(out)
    }

    /// Indices of the training and the held-out images: an image is held out
    /// when a stable hash of its key falls below `fraction` (the same image
    /// is on the same side in every run and every rendering).
    pub fn split(&self, fraction: f64) -> (Vec<usize>, Vec<usize>) {
        (0..self.len()).partition(|&i| !is_held_out(&self.keys[i], fraction))
    }
}

/// Whether `key` is in the held-out `fraction` (FNV-1a hash of the key).
pub fn is_held_out(key: &str, fraction: f64) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // The high bits mix best.
    ((h >> 11) as f64 / (1u64 << 53) as f64) < fraction
}

/// The format of a captions file, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptionsFormat {
    /// `.csv` (and `.txt`): `image,caption`, `"..."` quoting.
    Csv,
    /// `.tsv`: `image<TAB>caption`, no quoting.
    Tsv,
    /// `.jsonl` / `.ndjson`: `{"image": ..., "caption": ...}` per line.
    JsonLines,
}

/// The captions file extensions read, for messages.
pub const CAPTIONS_EXTENSIONS: &str =
    ".csv, .txt (comma-separated), .tsv (tab-separated), .jsonl, .ndjson (JSON Lines)";

impl CaptionsFormat {
    /// The format of `path` by its extension (any case); an unknown one is an
    /// error naming the file and the supported extensions.
    pub fn from_path(path: &Path) -> PairResult<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("csv") | Some("txt") => Ok(CaptionsFormat::Csv),
            Some("tsv") => Ok(CaptionsFormat::Tsv),
            Some("jsonl") | Some("ndjson") => Ok(CaptionsFormat::JsonLines),
            other => Err(record_err(
                path,
                0,
                format!(
                    "unknown captions file extension {:?}: a captions file must end in {CAPTIONS_EXTENSIONS}",
                    other.map(|e| format!(".{e}")).unwrap_or_default()
                ),
            )),
        }
    }
}

/// One record of a captions file: its line (from 1), the image path as
/// written, the caption as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptionRecord {
    pub line: usize,
    pub image: String,
    pub caption: String,
}

fn record_err(path: &Path, line: usize, reason: impl Into<String>) -> PairError {
    PairError::Record {
        path: path.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

/// A quoted CSV field starting at `s` (which begins with `"`): its text and
/// the rest after the closing quote.
fn quoted(s: &str) -> Result<(String, &str), String> {
    let body = s.strip_prefix('"').ok_or("expected a quoted field")?;
    let mut out = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '"' {
            if let Some((_, '"')) = chars.peek() {
                out.push('"');
                chars.next();
            } else {
                return Ok((out, &body[i + 1..]));
            }
        } else {
            out.push(c);
        }
    }
    Err("unterminated quoted field (quoted fields cannot span lines)".into())
}

/// `image,caption` of one CSV line. An unquoted caption may hold commas.
fn parse_csv_line(line: &str) -> Result<(String, String), String> {
    let (image, rest) = if line.starts_with('"') {
        let (f, rest) = quoted(line)?;
        let rest = rest
            .strip_prefix(',')
            .ok_or("expected a comma after the quoted image path")?;
        (f, rest)
    } else {
        let (f, rest) = line
            .split_once(',')
            .ok_or("expected two fields, image,caption")?;
        (f.trim().to_string(), rest)
    };
    let rest = rest.trim_start();
    let caption = if rest.starts_with('"') {
        let (f, after) = quoted(rest)?;
        if !after.trim().is_empty() {
            return Err(format!(
                "unexpected text after the quoted caption: {:?}",
                after.trim()
            ));
        }
        f
    } else {
        rest.trim_end().to_string()
    };
    Ok((image, caption))
}

/// `image<TAB>caption` of one TSV line (no quoting; the caption is the rest
/// of the line).
fn parse_tsv_line(line: &str) -> Result<(String, String), String> {
    let (image, caption) = line
        .split_once('\t')
        .ok_or("expected two tab-separated fields, image<TAB>caption")?;
    Ok((image.trim().to_string(), caption.trim().to_string()))
}

/// Parses the content of a captions file in `format`; `name` is the file
/// errors name (with the line). Reads no file: the fuzzing entry point of the
/// captions formats. Blank lines are skipped; a first line `image,caption`
/// (`image<TAB>caption`) is a header.
pub fn parse_captions(
    bytes: &[u8],
    format: CaptionsFormat,
    name: &Path,
) -> PairResult<Vec<CaptionRecord>> {
    let path = name;
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes
            .get(..e.valid_up_to())
            .unwrap_or_default()
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        record_err(path, line, "invalid UTF-8")
    })?;
    let mut out = Vec::new();
    let mut first = true;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.trim_end_matches('\r');
        if raw.trim().is_empty() {
            continue;
        }
        let (image, caption) = match format {
            CaptionsFormat::JsonLines => {
                let v: serde_json::Value = serde_json::from_str(raw)
                    .map_err(|e| record_err(path, line, format!("not JSON: {e}")))?;
                let field = |k: &str| {
                    v.get(k).and_then(|x| x.as_str()).map(str::to_string).ok_or_else(|| {
                        record_err(path, line, format!("no string field \"{k}\" (expected {{\"image\": ..., \"caption\": ...}})"))
                    })
                };
                (field("image")?, field("caption")?)
            }
            CaptionsFormat::Csv | CaptionsFormat::Tsv => {
                let parsed = if format == CaptionsFormat::Csv {
                    parse_csv_line(raw)
                } else {
                    parse_tsv_line(raw)
                };
                let (image, caption) = parsed.map_err(|r| record_err(path, line, r))?;
                if first
                    && image.eq_ignore_ascii_case("image")
                    && caption.trim().eq_ignore_ascii_case("caption")
                {
                    first = false;
                    continue;
                }
                (image, caption)
            }
        };
        first = false;
        if image.trim().is_empty() {
            return Err(record_err(path, line, "empty image path"));
        }
        out.push(CaptionRecord {
            line,
            image,
            caption,
        });
    }
    Ok(out)
}

fn read_records(path: &Path) -> PairResult<Vec<CaptionRecord>> {
    let format = CaptionsFormat::from_path(path)?;
    let bytes = std::fs::read(path).map_err(|e| PairError::io(path, e))?;
    parse_captions(&bytes, format, path)
}

/// `image` (as written in a captions file) resolved lexically under `root`:
/// `.` dropped, `..` taken back; `None` when it is absolute or climbs out of
/// `root` ([`selfsup_core::inside::join_inside`]).
pub fn resolve_under(root: &Path, image: &str) -> Option<PathBuf> {
    selfsup_core::inside::join_inside(root, image)
}

/// Reads the pairs of the captions file `file`; image paths are relative to
/// `images` (default: the folder of `file`).
pub fn read_captions(file: &Path, images: Option<&Path>, opts: ReadOptions) -> PairResult<PairSet> {
    if !file.is_file() {
        return Err(PairError::io(
            file,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such captions file"),
        ));
    }
    let root: PathBuf = images
        .map(Path::to_path_buf)
        .unwrap_or_else(|| file.parent().map(Path::to_path_buf).unwrap_or_default());
    let mut report = SkipReport::default();
    let fail_or_skip = |e: PairError, report: &mut SkipReport| {
        if opts.skip_bad {
            report.note(&e);
            Ok(())
        } else {
            Err(e)
        }
    };
    // Records -> distinct images (first appearance order) and their captions.
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut keys: Vec<String> = Vec::new();
    let mut lines: Vec<Vec<usize>> = Vec::new();
    let mut captions: Vec<Vec<String>> = Vec::new();
    let mut resolved: Vec<PathBuf> = Vec::new();
    for r in read_records(file)? {
        let Some(image_path) = resolve_under(&root, &r.image) else {
            fail_or_skip(
                PairError::OutsideRoot {
                    path: file.to_path_buf(),
                    line: r.line,
                    image: r.image.clone(),
                    root: root.clone(),
                },
                &mut report,
            )?;
            continue;
        };
        let caption = r.caption.split_whitespace().collect::<Vec<_>>().join(" ");
        if caption.is_empty() {
            fail_or_skip(
                PairError::EmptyCaption {
                    path: file.to_path_buf(),
                    line: r.line,
                },
                &mut report,
            )?;
            continue;
        }
        if let Some(&first) = seen.get(&(r.image.clone(), caption.clone())) {
            fail_or_skip(
                PairError::Duplicate {
                    path: file.to_path_buf(),
                    line: r.line,
                    first,
                    image: r.image.clone(),
                },
                &mut report,
            )?;
            continue;
        }
        seen.insert((r.image.clone(), caption.clone()), r.line);
        let i = *index.entry(r.image.clone()).or_insert_with(|| {
            keys.push(r.image.clone());
            resolved.push(image_path);
            lines.push(Vec::new());
            captions.push(Vec::new());
            keys.len() - 1
        });
        if let (Some(l), Some(c)) = (lines.get_mut(i), captions.get_mut(i)) {
            l.push(r.line);
            c.push(caption);
        }
    }
    let decoded: Vec<Result<Vec<u8>, ImageFault>> = resolved
        .par_iter()
        .map(|p| read_rgb(p, opts.image_size))
        .collect();
    let mut pixels = Vec::new();
    let mut kept = Vec::new();
    for (i, d) in decoded.into_iter().enumerate() {
        match d {
            Ok(bytes) => {
                pixels.extend_from_slice(&bytes);
                kept.push(i);
            }
            Err(fault) => {
                for &line in lines.get(i).into_iter().flatten() {
                    let image = resolved.get(i).cloned().unwrap_or_default();
                    let path = file.to_path_buf();
                    let e = match &fault {
                        ImageFault::Missing => PairError::MissingImage { path, line, image },
                        ImageFault::Unsupported => PairError::Unsupported { path, line, image },
                        ImageFault::Unreadable(reason) => PairError::Unreadable {
                            path,
                            line,
                            image,
                            reason: reason.clone(),
                        },
                    };
                    fail_or_skip(e, &mut report)?;
                }
            }
        }
    }
    if kept.is_empty() {
        return Err(PairError::Empty(format!(
            "{}: no usable image-caption pair ({} skipped)",
            file.display(),
            report.total()
        )));
    }
    let name = file.display().to_string();
    let images = ImageDataset::new(
        name,
        opts.image_size,
        opts.image_size,
        3,
        pixels,
        None,
        Vec::new(),
    )
    .map_err(|e| PairError::Empty(e.to_string()))?;
    Ok(PairSet {
        images,
        keys: kept.iter().map(|&i| keys[i].clone()).collect(),
        captions: kept.iter().map(|&i| captions[i].clone()).collect(),
        report,
    })
}

#[cfg(test)]
mod tests;
