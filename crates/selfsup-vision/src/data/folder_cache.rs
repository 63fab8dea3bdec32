//! A folder of the user's own images as an [`ImageDataset`], decoded once
//! into a cache file and memory-mapped from then on.
//!
//! The first load lists the folder ([`list_folder`]), decodes the images in
//! chunks of [`CHUNK_FILES`] files in parallel (rayon) into `side x side`
//! squares ([`decode_square`]) and appends each chunk to
//! `<cache>/<key>/pixels-<fingerprint>.u8` (N x side x side x channels bytes)
//! beside `index.json` (labels, classes, skipped files). Only the file list and
//! one chunk of decoded images are in memory at once. Both files are written
//! to a `.tmp` and renamed, the pixel file under a name carrying the
//! fingerprint, so two runs building the same cache at once never see a half
//! file nor an index paired with another folder state's pixels.
//!
//! The fingerprint covers every file's relative path, size and modification
//! time, the image side, the channels, the crop policy and
//! [`CACHE_FORMAT_VERSION`]: a file added, removed or modified rebuilds the
//! cache; an unchanged folder maps the cache without decoding anything.
use super::image_folder::{decode_square, list_folder, FolderListing};
use super::{ImageDataset, Pixels};
use crate::{Error, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Bumped whenever the cache layout or the decoding changes.
pub const CACHE_FORMAT_VERSION: u32 = 1;
/// Files decoded per parallel chunk (the decoded chunk is the only pixel
/// buffer held in memory while the cache is built).
pub const CHUNK_FILES: usize = 2048;
/// Skipped files named in `index.json` and in reports (the count is exact).
pub const MAX_NAMED_SKIPPED: usize = 100;
/// Largest image file read (256 MiB); a larger one is a bad file.
pub const MAX_FILE_BYTES: u64 = 256 << 20;
/// Largest image side a cache is built for.
pub const MAX_CACHE_SIDE: usize = 1024;

/// How a folder is turned into a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct FolderOptions {
    /// Side of the square images (shorter side resized, centre crop).
    pub side: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Skip (and count) unreadable images instead of failing on the first.
    pub skip_bad: bool,
    /// Folder under which the caches live (one sub-folder per image folder,
    /// side and channels).
    pub cache_root: PathBuf,
}

/// A file left out because it could not be decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedFile {
    /// Path relative to the image folder.
    pub file: String,
    /// Why.
    pub reason: String,
}

/// What loading a folder did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheReport {
    /// `true`: the cache was valid and mapped without decoding any image.
    pub hit: bool,
    /// The pixel file mapped.
    pub pixels_file: PathBuf,
    /// Images in the dataset.
    pub images: usize,
    /// Files skipped as unreadable (only with `skip_bad`).
    pub skipped_count: usize,
    /// The first [`MAX_NAMED_SKIPPED`] of them.
    pub skipped: Vec<SkippedFile>,
    /// Seconds spent listing and decoding (0 on a hit beyond the listing).
    pub build_seconds: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Index {
    version: u32,
    root: PathBuf,
    image_size: usize,
    channels: usize,
    fingerprint: String,
    pixels_file: String,
    images: usize,
    labels: Option<Vec<i64>>,
    classes: Vec<String>,
    skipped_count: usize,
    skipped: Vec<SkippedFile>,
}

/// `$SELFSUP_CACHE_DIR`, else `$SELFSUP_CACHE/image-cache`, else
/// `$XDG_CACHE_HOME/selfsup/image-cache`, else `~/.cache/selfsup/image-cache`.
pub fn default_cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("SELFSUP_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("SELFSUP_CACHE") {
        return PathBuf::from(d).join("image-cache");
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("selfsup/image-cache");
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache/selfsup/image-cache")
}

/// 64-bit FNV-1a, stable across runs and platforms.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        // The length first, so that ("ab", "c") and ("a", "bc") differ.
        for &x in (b.len() as u64).to_le_bytes().iter().chain(b) {
            self.0 ^= u64::from(x);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }
}

fn fingerprint(listing: &FolderListing, opts: &FolderOptions) -> String {
    let mut a = Fnv::new();
    // A second hash over the same data from another start: 128 bits in all.
    let mut b = Fnv(0x6c62_272e_07bb_0142);
    for h in [&mut a, &mut b] {
        h.bytes(&CACHE_FORMAT_VERSION.to_le_bytes())
            .bytes(b"centre-square-triangle")
            .bytes(&(opts.side as u64).to_le_bytes())
            .bytes(&(opts.channels as u64).to_le_bytes());
        for (i, f) in listing.files.iter().enumerate() {
            h.bytes(listing.relative(i).as_bytes())
                .bytes(&f.size.to_le_bytes())
                .bytes(&f.mtime_ns.to_le_bytes());
            if let Some(l) = &listing.labels {
                h.bytes(&l.get(i).copied().unwrap_or(-1).to_le_bytes());
            }
        }
        for c in &listing.classes {
            h.bytes(c.as_bytes());
        }
    }
    format!("{:016x}{:016x}", a.0, b.0)
}

/// The cache folder of one image folder at one size and channel count.
fn cache_dir(root: &Path, opts: &FolderOptions) -> PathBuf {
    let real = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut h = Fnv::new();
    h.bytes(real.to_string_lossy().as_bytes());
    let name = real
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .take(40)
                .collect::<String>()
        })
        .unwrap_or_default();
    opts.cache_root.join(format!(
        "{name}-{:016x}-{}px-{}ch",
        h.0, opts.side, opts.channels
    ))
}

/// A temporary name beside `path`, unique to this process and call.
fn tmp_beside(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.{n}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// The name shown for a folder's dataset (its last component).
fn folder_name(root: &Path) -> String {
    root.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| root.display().to_string())
}

/// Loads a folder of images (labelled or not, see [`FolderListing`]) as
/// `side x side x channels` images, through the cache. `progress(done,
/// total)` is called after every decoded chunk (and once at the end on a
/// hit). Without `skip_bad` the first unreadable image is an error naming
/// it; with it, such files are skipped and counted in the report.
pub fn load_image_folder(
    root: &Path,
    opts: &FolderOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(ImageDataset, CacheReport)> {
    if !(1..=MAX_CACHE_SIDE).contains(&opts.side) || !(opts.channels == 1 || opts.channels == 3) {
        return Err(Error::Config(format!(
            "image folder {}: image_size = {} and channels = {}: the side must be in 1..={MAX_CACHE_SIDE} \
             and the channels 1 or 3",
            root.display(),
            opts.side,
            opts.channels
        )));
    }
    let start = Instant::now();
    let listing = list_folder(root)?;
    let fp = fingerprint(&listing, opts);
    let dir = cache_dir(root, opts);
    let index_path = dir.join("index.json");
    let total = listing.files.len();
    if let Some((ds, report)) = try_hit(&index_path, &dir, &fp, root, opts)? {
        progress(total, total);
        return Ok((ds, report));
    }
    build(&listing, opts, &dir, &fp, progress)?;
    let (ds, mut report) = try_hit(&index_path, &dir, &fp, root, opts)?.ok_or_else(|| {
        Error::Loader(format!(
            "the image cache {} just written does not read back; delete the folder and retry",
            dir.display()
        ))
    })?;
    report.hit = false;
    report.build_seconds = start.elapsed().as_secs_f64();
    Ok((ds, report))
}

/// Maps the cache when its index matches `fp` and its pixel file has the
/// right length; `None` otherwise (missing, stale or damaged: rebuilt).
fn try_hit(
    index_path: &Path,
    dir: &Path,
    fp: &str,
    root: &Path,
    opts: &FolderOptions,
) -> Result<Option<(ImageDataset, CacheReport)>> {
    let Ok(text) = std::fs::read_to_string(index_path) else {
        return Ok(None);
    };
    let Ok(index) = serde_json::from_str::<Index>(&text) else {
        return Ok(None);
    };
    if index.version != CACHE_FORMAT_VERSION
        || index.fingerprint != fp
        || index.image_size != opts.side
        || index.channels != opts.channels
        || index.pixels_file.contains('/')
        || index.pixels_file.contains('\\')
    {
        return Ok(None);
    }
    if index.skipped_count > 0 && !opts.skip_bad {
        let first = index.skipped.first();
        return Err(Error::CorruptImage {
            path: root.join(first.map_or("", |s| s.file.as_str())),
            reason: format!(
                "{}; {} file(s) of this folder cannot be read: set [data] skip_bad = true to \
                 skip them, or fix them",
                first.map_or("", |s| s.reason.as_str()),
                index.skipped_count
            ),
        });
    }
    let pixels_path = dir.join(&index.pixels_file);
    let Ok(file) = std::fs::File::open(&pixels_path) else {
        return Ok(None);
    };
    let per = opts.side * opts.side * opts.channels;
    let want = index.images.checked_mul(per);
    let len = file
        .metadata()
        .map_err(|e| Error::io(&pixels_path, e))?
        .len();
    if want.map(|w| w as u64) != Some(len) || index.images == 0 {
        return Ok(None);
    }
    // SAFETY: cache pixel files are written once under a temporary name and
    // renamed into place, never modified afterwards (a rebuild writes a new
    // file); the map is read-only. Only a user truncating the file by hand
    // while a run maps it could fault.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&pixels_path, e))?;
    let ds = ImageDataset::from_pixels(
        folder_name(root),
        opts.side,
        opts.side,
        opts.channels,
        Pixels::mapped(map),
        index.labels,
        index.classes,
    )?;
    let report = CacheReport {
        hit: true,
        pixels_file: pixels_path,
        images: index.images,
        skipped_count: index.skipped_count,
        skipped: index.skipped,
        build_seconds: 0.0,
    };
    Ok(Some((ds, report)))
}

/// Decodes every listed file in chunks into the cache folder.
fn build(
    listing: &FolderListing,
    opts: &FolderOptions,
    dir: &Path,
    fp: &str,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let pixels_name = format!("pixels-{fp}.u8");
    let pixels_path = dir.join(&pixels_name);
    let tmp = tmp_beside(&pixels_path);
    let result = write_pixels(listing, opts, &tmp, progress);
    let (kept_labels, kept, skipped_count, skipped) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if kept == 0 {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Empty {
            path: listing.root.clone(),
            what: format!(
                "none of its {} image files could be read (first: {} - {})",
                listing.files.len(),
                skipped.first().map_or("", |s| s.file.as_str()),
                skipped.first().map_or("", |s| s.reason.as_str())
            ),
        });
    }
    std::fs::rename(&tmp, &pixels_path).map_err(|e| Error::io(&pixels_path, e))?;
    let index = Index {
        version: CACHE_FORMAT_VERSION,
        root: listing.root.clone(),
        image_size: opts.side,
        channels: opts.channels,
        fingerprint: fp.to_string(),
        pixels_file: pixels_name.clone(),
        images: kept,
        labels: kept_labels,
        classes: listing.classes.clone(),
        skipped_count,
        skipped,
    };
    let index_path = dir.join("index.json");
    let tmp_index = tmp_beside(&index_path);
    let text = serde_json::to_vec(&index)
        .map_err(|e| Error::Loader(format!("{}: {e}", index_path.display())))?;
    std::fs::write(&tmp_index, text).map_err(|e| Error::io(&tmp_index, e))?;
    std::fs::rename(&tmp_index, &index_path).map_err(|e| Error::io(&index_path, e))?;
    // Pixel files of earlier folder states are no longer indexed (a run that
    // still maps one keeps its pages until it ends).
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("pixels-") && name.ends_with(".u8") && name != pixels_name {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// The bytes of one image file, refused beyond [`MAX_FILE_BYTES`] (before
/// reading, and again while reading should the file grow).
pub(crate) fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let bad = |reason: String| Error::CorruptImage {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let too_big = |n: u64| {
        bad(format!(
            "the file has {n} bytes, above the {} MiB an image file may have",
            MAX_FILE_BYTES >> 20
        ))
    };
    if len > MAX_FILE_BYTES {
        return Err(too_big(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(format!("cannot read it: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

type Written = (Option<Vec<i64>>, usize, usize, Vec<SkippedFile>);

fn write_pixels(
    listing: &FolderListing,
    opts: &FolderOptions,
    tmp: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Written> {
    let file = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let total = listing.files.len();
    let mut labels = listing.labels.as_ref().map(|_| Vec::new());
    let (mut kept, mut skipped_count, mut skipped) = (0usize, 0usize, Vec::new());
    progress(0, total);
    for (c, chunk) in listing.files.chunks(CHUNK_FILES).enumerate() {
        let first = c * CHUNK_FILES;
        let decoded: Vec<Result<Vec<u8>>> = chunk
            .par_iter()
            .map(|f| {
                let bytes = read_bounded(&f.path)?;
                decode_square(&f.path, &bytes, opts.side, opts.channels)
            })
            .collect();
        for (j, r) in decoded.into_iter().enumerate() {
            let i = first + j;
            match r {
                Ok(px) => {
                    out.write_all(&px).map_err(|e| Error::io(tmp, e))?;
                    kept += 1;
                    if let (Some(dst), Some(src)) = (&mut labels, &listing.labels) {
                        dst.push(src.get(i).copied().unwrap_or(0));
                    }
                }
                Err(e) if opts.skip_bad => {
                    skipped_count += 1;
                    if skipped.len() < MAX_NAMED_SKIPPED {
                        let reason = match e {
                            Error::CorruptImage { reason, .. } => reason,
                            other => other.to_string(),
                        };
                        skipped.push(SkippedFile {
                            file: listing.relative(i),
                            reason,
                        });
                    }
                }
                Err(Error::CorruptImage { path, reason }) => {
                    return Err(Error::CorruptImage {
                        path,
                        reason: format!(
                            "{reason} (set [data] skip_bad = true to skip unreadable images \
                             and count them)"
                        ),
                    })
                }
                Err(e) => return Err(e),
            }
        }
        progress((first + chunk.len()).min(total), total);
    }
    let file = out
        .into_inner()
        .map_err(|e| Error::io(tmp, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(tmp, e))?;
    Ok((labels, kept, skipped_count, skipped))
}
