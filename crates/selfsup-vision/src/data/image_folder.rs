//! ImageFolder trees: `root/<class>/<image>` (images may sit in nested
//! sub-folders of a class folder), or a flat folder of unlabelled images.
//!
//! Classes are the sub-folders of `root`, sorted by name; label `i` is the
//! `i`-th class. Files with a `png`, `jpg`, `jpeg` or `webp` extension (any
//! case) are images; other files and hidden entries (names starting with `.`)
//! are skipped. Symbolic links are followed, but every real folder is read
//! once (a visited set of canonical paths), so a link loop ends.
use super::ImageDataset;
use crate::{Error, Result};
use image::imageops::FilterType;
use rayon::prelude::*;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// File extensions read as images.
pub const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

/// Whether `path` has one of the [`IMAGE_EXTENSIONS`] (any case).
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Sorted entries of a folder, hidden ones left out.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if !is_hidden(&path) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// One image file found under a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundImage {
    /// The file (as found: under the root, through any links).
    pub path: PathBuf,
    /// Size in bytes (0 when the file cannot be inspected, e.g. a dangling link).
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch (0 when unknown).
    pub mtime_ns: u128,
}

impl FoundImage {
    fn inspect(path: PathBuf) -> Self {
        let meta = std::fs::metadata(&path).ok();
        let size = meta.as_ref().map_or(0, |m| m.len());
        let mtime_ns = meta
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Self {
            path,
            size,
            mtime_ns,
        }
    }
}

/// Every image file under `dir`, recursively, in sorted order. Links are
/// followed; a folder already visited (same canonical path: a link loop, or
/// a second link to the same folder) is not read again. A dangling link with
/// an image extension is listed (reading it fails and names it).
fn collect_images(
    dir: &Path,
    visited: &mut HashSet<PathBuf>,
    out: &mut Vec<FoundImage>,
) -> Result<()> {
    let start = out.len();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let real = std::fs::canonicalize(&d).map_err(|e| Error::io(&d, e))?;
        if !visited.insert(real) {
            continue;
        }
        let mut subdirs = Vec::new();
        for path in sorted_entries(&d)? {
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => subdirs.push(path),
                Ok(_) | Err(_) if is_image(&path) => out.push(FoundImage::inspect(path)),
                _ => {}
            }
        }
        stack.extend(subdirs);
    }
    if let Some(found) = out.get_mut(start..) {
        found.sort_by(|a, b| a.path.cmp(&b.path));
    }
    Ok(())
}

/// The image files of a folder and, for a labelled tree, their classes.
///
/// The rule: a root that holds image files directly (and no sub-folder with
/// images) is **unlabelled**, its images are the files of the root itself; a
/// root that holds no image file directly is **labelled**: every sub-folder is
/// a class (sorted by name, label = index) and its images are every image
/// file under it, at any depth. A root holding both is refused.
#[derive(Debug, Clone)]
pub struct FolderListing {
    /// The folder.
    pub root: PathBuf,
    /// The image files, sorted by path (so grouped by class).
    pub files: Vec<FoundImage>,
    /// The class of every file (labelled trees only).
    pub labels: Option<Vec<i64>>,
    /// The class names (labelled trees only).
    pub classes: Vec<String>,
}

impl FolderListing {
    /// The path of file `i` relative to the root (as shown in messages).
    pub fn relative(&self, i: usize) -> String {
        self.files.get(i).map_or_else(String::new, |f| {
            f.path
                .strip_prefix(&self.root)
                .unwrap_or(&f.path)
                .display()
                .to_string()
        })
    }
}

/// Lists the images of `root` under the rule of [`FolderListing`]. Errors
/// name the folder: missing, no image at all, a class folder without images,
/// images beside class folders (naming one example of each).
pub fn list_folder(root: &Path) -> Result<FolderListing> {
    if !root.is_dir() {
        return Err(Error::MissingDataset {
            path: root.to_path_buf(),
            what: "no such image folder".into(),
            hint: "give a folder of class folders of images (root/<class>/<image>, labelled) \
                   or a folder of images (unlabelled)"
                .into(),
        });
    }
    let mut visited = HashSet::new();
    let real = std::fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
    visited.insert(real);
    let mut loose = Vec::new();
    let mut class_dirs = Vec::new();
    for path in sorted_entries(root)? {
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => class_dirs.push(path),
            Ok(_) | Err(_) if is_image(&path) => loose.push(FoundImage::inspect(path)),
            _ => {}
        }
    }
    let mut classes = Vec::new();
    let mut per_class = Vec::new();
    for dir in &class_dirs {
        let mut images = Vec::new();
        collect_images(dir, &mut visited, &mut images)?;
        per_class.push((dir, images));
    }
    if let (Some(file), Some((_, imgs))) =
        (loose.first(), per_class.iter().find(|(_, i)| !i.is_empty()))
    {
        let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
        return Err(Error::Empty {
            path: root.to_path_buf(),
            what: format!(
                "holds both image files (e.g. {}) and folders of images (e.g. {}): put every \
                 image in a class folder (labelled: root/<class>/<image>) or every image \
                 directly in the folder (unlabelled)",
                rel(&file.path),
                imgs.first().map_or_else(String::new, |f| rel(&f.path))
            ),
        });
    }
    if !loose.is_empty() {
        return Ok(FolderListing {
            root: root.to_path_buf(),
            files: loose,
            labels: None,
            classes: Vec::new(),
        });
    }
    if per_class.is_empty() || per_class.iter().all(|(_, i)| i.is_empty()) {
        return Err(Error::Empty {
            path: root.to_path_buf(),
            what: format!(
                "no image ({}) in this folder or its sub-folders",
                IMAGE_EXTENSIONS.join(", ")
            ),
        });
    }
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for (label, (dir, images)) in per_class.into_iter().enumerate() {
        if images.is_empty() {
            return Err(Error::Empty {
                path: dir.clone(),
                what: format!(
                    "class folder holds no image ({}); remove it or add its images",
                    IMAGE_EXTENSIONS.join(", ")
                ),
            });
        }
        classes.push(
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        labels.extend(std::iter::repeat_n(label as i64, images.len()));
        files.extend(images);
    }
    Ok(FolderListing {
        root: root.to_path_buf(),
        files,
        labels: Some(labels),
        classes,
    })
}

/// Largest width or height of an image file the readers decode (8192 pixels):
/// the decoded RGB copy of the largest allowed image stays under 200 MiB.
pub const MAX_IMAGE_SIDE: u32 = 8192;
/// Most memory the image decoder may take for one image (256 MiB).
pub const MAX_DECODE_BYTES: u64 = 256 << 20;

/// Decodes one image, converts it to `channels` channels and resizes it to
/// `height x width`; returns HWC bytes.
fn decode(path: &Path, height: usize, width: usize, channels: usize) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_image_bytes(path, &bytes, height, width, channels)
}

fn check_target(path: &Path, height: usize, width: usize, channels: usize) -> Result<(u32, u32)> {
    match (u32::try_from(width), u32::try_from(height)) {
        (Ok(w), Ok(h))
            if (1..=MAX_IMAGE_SIDE).contains(&w)
                && (1..=MAX_IMAGE_SIDE).contains(&h)
                && (channels == 1 || channels == 3) =>
        {
            Ok((w, h))
        }
        _ => Err(Error::Config(format!(
            "cannot decode {} to {height}x{width}x{channels}: the size must be at least 1x1 \
             and at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}, with 1 or 3 channels",
            path.display()
        ))),
    }
}

/// Decodes the bytes of one image file (format told by its content) under
/// the limits; a decoder panic is this file's error.
fn decode_limited(path: &Path, bytes: &[u8]) -> Result<image::DynamicImage> {
    let corrupt = |reason: String| Error::CorruptImage {
        path: path.to_path_buf(),
        reason,
    };
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    reader.limits(limits);
    // The decoders are third-party code that can panic on a corrupt file
    // (zune-jpeg 0.5 indexes out of bounds in its AVX2 IDCT on some malformed
    // JPEGs): a panic is this file's error, not the end of the run.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.decode()))
        .map_err(|payload| {
            let what = selfsup_core::error::panic_message(payload.as_ref()).unwrap_or_default();
            corrupt(format!(
                "the image decoder failed on it ({what}); the file is corrupt: replace or delete it"
            ))
        })?;
    decoded.map_err(|e| match e {
        image::ImageError::Limits(l) => corrupt(format!(
            "{l}: images up to {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} pixels and {} MiB decoded are \
             read; scale the image down",
            MAX_DECODE_BYTES >> 20
        )),
        // Some decoder messages end in a newline or span lines: one line.
        e => corrupt(
            e.to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        ),
    })
}

/// Decodes the bytes of one image file (PNG, JPEG or WebP, told by its
/// content), converts it to `channels` channels (1 or 3) and resizes it to
/// `height x width` (both at least 1); returns HWC bytes. `path` is only named in
/// errors. Images wider or taller than [`MAX_IMAGE_SIDE`], or whose decoding
/// needs more than [`MAX_DECODE_BYTES`], are refused before decoding.
pub fn decode_image_bytes(
    path: &Path,
    bytes: &[u8],
    height: usize,
    width: usize,
    channels: usize,
) -> Result<Vec<u8>> {
    let (w, h) = check_target(path, height, width, channels)?;
    let img = decode_limited(path, bytes)?;
    let out = if channels == 1 {
        let g = img.to_luma8();
        if g.dimensions() == (w, h) {
            g.into_raw()
        } else {
            image::imageops::resize(&g, w, h, FilterType::Triangle).into_raw()
        }
    } else {
        let c = img.to_rgb8();
        if c.dimensions() == (w, h) {
            c.into_raw()
        } else {
            image::imageops::resize(&c, w, h, FilterType::Triangle).into_raw()
        }
    };
    check_len(path, out, height, width, channels)
}

fn check_len(
    path: &Path,
    out: Vec<u8>,
    height: usize,
    width: usize,
    channels: usize,
) -> Result<Vec<u8>> {
    let want = height
        .checked_mul(width)
        .and_then(|p| p.checked_mul(channels));
    if Some(out.len()) != want {
        return Err(Error::CorruptImage {
            path: path.to_path_buf(),
            reason: format!(
                "decoded to {} bytes, expected {height}x{width}x{channels}",
                out.len()
            ),
        });
    }
    Ok(out)
}

/// Decodes the bytes of one image file into a `side x side` square with
/// `channels` channels (1 or 3), torchvision's habit: the largest centred
/// square of the image is cut out (so the shorter side is kept whole and
/// the longer one loses equal margins), then resized to `side` with a
/// triangle (antialiased bilinear) filter. Transparent pixels are laid over
/// white; grey, palette and 16-bit images are converted. The limits of
/// [`decode_image_bytes`] apply; `path` is only named in errors.
pub fn decode_square(path: &Path, bytes: &[u8], side: usize, channels: usize) -> Result<Vec<u8>> {
    let (s, _) = check_target(path, side, side, channels)?;
    let img = decode_limited(path, bytes)?;
    let rgb = if img.color().has_alpha() {
        let rgba = img.to_rgba8();
        let mut rgb = image::RgbImage::new(rgba.width(), rgba.height());
        for (dst, src) in rgb.pixels_mut().zip(rgba.pixels()) {
            let a = u32::from(src.0[3]);
            for c in 0..3 {
                let v = (u32::from(src.0[c]) * a + 255 * (255 - a) + 127) / 255;
                dst.0[c] = v.min(255) as u8;
            }
        }
        image::DynamicImage::ImageRgb8(rgb)
    } else {
        img
    };
    let (w, h) = (rgb.width(), rgb.height());
    let m = w.min(h);
    if m == 0 {
        return Err(Error::CorruptImage {
            path: path.to_path_buf(),
            reason: format!("the image is {w}x{h} pixels"),
        });
    }
    let square = rgb.crop_imm((w - m) / 2, (h - m) / 2, m, m);
    let out = if channels == 1 {
        let g = square.to_luma8();
        if m == s {
            g.into_raw()
        } else {
            image::imageops::resize(&g, s, s, FilterType::Triangle).into_raw()
        }
    } else {
        let c = square.to_rgb8();
        if m == s {
            c.into_raw()
        } else {
            image::imageops::resize(&c, s, s, FilterType::Triangle).into_raw()
        }
    };
    check_len(path, out, side, side, channels)
}

/// Reads an ImageFolder tree into a dataset of `height x width` images with
/// `channels` channels (1 = grey, 3 = RGB), labelled by class folder.
///
/// Errors name the folder or file at fault: missing root, no class folder, a
/// class folder without images, an image that cannot be decoded.
pub fn read_image_folder(
    root: &Path,
    height: usize,
    width: usize,
    channels: usize,
) -> Result<ImageDataset> {
    if channels != 1 && channels != 3 {
        return Err(Error::Config(format!(
            "ImageFolder images must have 1 or 3 channels, not {channels}"
        )));
    }
    if height == 0 || width == 0 {
        return Err(Error::Config(format!(
            "ImageFolder image size {height}x{width} is empty"
        )));
    }
    if !root.is_dir() {
        return Err(Error::MissingDataset {
            path: root.to_path_buf(),
            what: "no such dataset folder".into(),
            hint: "an ImageFolder dataset is a folder of class folders of images (root/<class>/<image>)".into(),
        });
    }
    let class_dirs: Vec<PathBuf> = sorted_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if class_dirs.is_empty() {
        return Err(Error::Empty {
            path: root.to_path_buf(),
            what: "no class folder (expected root/<class>/<image>)".into(),
        });
    }
    let mut classes = Vec::with_capacity(class_dirs.len());
    let mut files: Vec<(PathBuf, i64)> = Vec::new();
    let mut visited = HashSet::new();
    for (label, dir) in class_dirs.iter().enumerate() {
        let mut images = Vec::new();
        collect_images(dir, &mut visited, &mut images)?;
        if images.is_empty() {
            return Err(Error::Empty {
                path: dir.clone(),
                what: format!(
                    "class folder holds no image ({})",
                    IMAGE_EXTENSIONS.join(", ")
                ),
            });
        }
        classes.push(
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        files.extend(images.into_iter().map(|f| (f.path, label as i64)));
    }
    let decoded: Vec<Vec<u8>> = files
        .par_iter()
        .map(|(p, _)| decode(p, height, width, channels))
        .collect::<Result<_>>()?;
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| root.display().to_string());
    Ok(ImageDataset {
        name,
        height,
        width,
        channels,
        pixels: decoded.concat().into(),
        labels: Some(files.iter().map(|(_, l)| *l).collect()),
        classes,
    })
}

#[cfg(test)]
mod tests;
