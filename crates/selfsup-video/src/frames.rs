//! User video as folders of frames: `ROOT/<clip>/<frames>`, one folder per
//! clip, one PNG or JPEG per frame, numbered by the digits at the end of
//! the file stem (`0001.png`, `frame_12.jpg`), consecutively.
//!
//! Frames are read as grey (luma) and, when their side differs from the
//! model's, each clip is resized to `size x size` (counted in the report).
//! Refused before training, each naming the file or folder and the fix:
//! a file that is not a numbered frame, a gap in the numbering (a missing
//! frame), frames of different sizes within one clip, a clip with fewer
//! frames than the model's `[model] frames`, an unreadable image, and a
//! root without clip folders. Sizes are checked from the image header
//! before a frame is decoded.
use crate::clips::{Clip, DataReport, VideoSet};
use image::imageops::FilterType;
use selfsup_core::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The largest frame side read.
pub const MAX_SIDE: u32 = 8192;
/// The most frames one clip may hold.
pub const MAX_FRAMES: usize = 100_000;
/// The most clips a root may hold.
pub const MAX_CLIPS: usize = 1_000_000;
/// The most bytes all clips may take once resized.
pub const MAX_TOTAL_BYTES: u64 = 16 << 30;

fn is_frame_ext(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// The frame number at the end of `path`'s stem.
fn frame_number(path: &Path) -> Option<u64> {
    let stem = path.file_stem()?.to_str()?;
    let digits: String = stem
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    digits.parse().ok()
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        out.push(e.path());
    }
    out.sort();
    Ok(out)
}

/// The numbered frames of one clip folder, in order.
pub fn list_frames(clip: &Path) -> Result<Vec<PathBuf>> {
    let mut by_number: BTreeMap<u64, PathBuf> = BTreeMap::new();
    for p in sorted_entries(clip)? {
        if p.is_dir() {
            return Err(Error::Data(format!(
                "{}: a folder inside a clip folder; a clip folder holds its frames only \
                 (ROOT/<clip>/<0001.png ...>): move it out",
                p.display()
            )));
        }
        let number = if is_frame_ext(&p) {
            frame_number(&p)
        } else {
            None
        };
        let Some(n) = number else {
            return Err(Error::Data(format!(
                "{}: not a numbered frame; a clip folder holds PNG or JPEG frames whose names end \
                 in their number (0001.png, frame_12.jpg): rename it or move it out",
                p.display()
            )));
        };
        if let Some(other) = by_number.insert(n, p.clone()) {
            return Err(Error::Data(format!(
                "{} and {} are both frame {n}: keep one",
                other.display(),
                p.display()
            )));
        }
        if by_number.len() > MAX_FRAMES {
            return Err(Error::Data(format!(
                "{}: more than {MAX_FRAMES} frames in one clip: split it into several clip folders",
                clip.display()
            )));
        }
    }
    let mut prev: Option<(u64, &PathBuf)> = None;
    for (&n, p) in &by_number {
        if let Some((m, q)) = prev {
            if n != m + 1 {
                return Err(Error::Data(format!(
                    "{}: frame {} is missing between {} and {}: add the frame or renumber the \
                     frames consecutively",
                    clip.display(),
                    m + 1,
                    q.display(),
                    p.display()
                )));
            }
        }
        prev = Some((n, p));
    }
    Ok(by_number.into_values().collect())
}

/// The `(width, height)` in `path`'s header, without decoding it.
fn dimensions(path: &Path) -> Result<(u32, u32)> {
    image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| Error::io(path, e))?
        .into_dimensions()
        .map_err(|e| {
            Error::Data(format!(
                "{}: not a readable PNG or JPEG frame ({e}): replace it",
                path.display()
            ))
        })
}

fn decode_grey(path: &Path) -> Result<image::GrayImage> {
    let decoded = std::panic::catch_unwind(|| image::open(path)).map_err(|_| {
        Error::Data(format!(
            "{}: the image decoder failed on this frame: replace it",
            path.display()
        ))
    })?;
    decoded.map(|i| i.to_luma8()).map_err(|e| {
        Error::Data(format!(
            "{}: not a readable PNG or JPEG frame ({e}): replace it",
            path.display()
        ))
    })
}

/// One clip folder: every frame, grey, resized to `size x size` when needed
/// (the returned flag). `min_frames` is the model's `[model] frames`.
pub fn read_clip(dir: &Path, size: usize, min_frames: usize) -> Result<(Clip, bool)> {
    let frames = list_frames(dir)?;
    if frames.len() < min_frames {
        return Err(Error::Data(format!(
            "{}: {} frame(s), fewer than the model's [model] frames = {min_frames}: drop the clip, \
             add frames, or lower [model] frames",
            dir.display(),
            frames.len()
        )));
    }
    let Some(first) = frames.first() else {
        return Err(Error::Data(format!("{}: no frame", dir.display())));
    };
    let (w, h) = dimensions(first)?;
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE {
        return Err(Error::Data(format!(
            "{}: {w}x{h} pixels: give frames of 1 to {MAX_SIDE} pixels a side",
            first.display()
        )));
    }
    let resize = w as usize != size || h as usize != size;
    let mut pixels = Vec::with_capacity(frames.len() * size * size);
    for f in &frames {
        let (fw, fh) = dimensions(f)?;
        if (fw, fh) != (w, h) {
            return Err(Error::Data(format!(
                "{}: {fw}x{fh} pixels but {} is {w}x{h}: every frame of a clip must have one \
                 size; resize the clip's frames to one size",
                f.display(),
                first.display()
            )));
        }
        let grey = decode_grey(f)?;
        if grey.dimensions() != (w, h) {
            return Err(Error::Data(format!(
                "{}: decoded to {:?}, not the {w}x{h} its header declares: replace it",
                f.display(),
                grey.dimensions()
            )));
        }
        let grey = if resize {
            image::imageops::resize(&grey, size as u32, size as u32, FilterType::Triangle)
        } else {
            grey
        };
        pixels.extend_from_slice(grey.as_raw());
    }
    Ok((
        Clip {
            frames: frames.len(),
            pixels,
        },
        resize,
    ))
}

/// Every clip folder under `root` (sorted by name), read as [`read_clip`]
/// reads it.
pub fn read_folder(root: &Path, size: usize, min_frames: usize) -> Result<(VideoSet, DataReport)> {
    if !root.is_dir() {
        return Err(Error::Data(format!(
            "{}: not a folder; [data] folder (or --data) names a folder of clip folders \
             (ROOT/<clip>/<0001.png ...>)",
            root.display()
        )));
    }
    let mut set = VideoSet {
        size,
        clips: Vec::new(),
        names: Vec::new(),
    };
    let mut report = DataReport {
        name: root.display().to_string(),
        ..DataReport::default()
    };
    let mut bytes = 0u64;
    for p in sorted_entries(root)? {
        if !p.is_dir() {
            return Err(Error::Data(format!(
                "{}: a file directly under the frames root; put each clip's frames in a folder of \
                 its own (ROOT/<clip>/<0001.png ...>) or move the file out",
                p.display()
            )));
        }
        if set.clips.len() >= MAX_CLIPS {
            return Err(Error::Data(format!(
                "{}: more than {MAX_CLIPS} clip folders",
                root.display()
            )));
        }
        let (clip, resized) = read_clip(&p, size, min_frames)?;
        bytes += clip.pixels.len() as u64;
        if bytes > MAX_TOTAL_BYTES {
            return Err(Error::Data(format!(
                "{}: the clips take more than {MAX_TOTAL_BYTES} bytes at {size}x{size}: use fewer \
                 or shorter clips",
                root.display()
            )));
        }
        report.frames_read += clip.frames;
        report.resized_clips += usize::from(resized);
        set.names.push(
            p.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        );
        set.clips.push(clip);
    }
    if set.clips.is_empty() {
        return Err(Error::Data(format!(
            "{}: no clip folder; put each clip's frames in a folder of its own \
             (ROOT/<clip>/<0001.png ...>)",
            root.display()
        )));
    }
    report.train_clips = set.clips.len();
    Ok((set, report))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes a `w x h` grey PNG whose every pixel is `value`.
    pub(crate) fn write_frame(path: &Path, w: u32, h: u32, value: u8) {
        image::GrayImage::from_pixel(w, h, image::Luma([value]))
            .save(path)
            .unwrap();
    }

    /// A root with clip folders `a` (5 frames) and `b` (4 frames) of 8x8.
    pub(crate) fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (clip, n) in [("a", 5), ("b", 4)] {
            let c = dir.path().join(clip);
            std::fs::create_dir(&c).unwrap();
            for i in 0..n {
                write_frame(
                    &c.join(format!("frame_{:03}.png", i + 1)),
                    8,
                    8,
                    10 * i as u8,
                );
            }
        }
        dir
    }

    #[test]
    fn clip_folders_are_read_in_frame_order_and_resized() {
        let dir = fixture();
        let (set, report) = read_folder(dir.path(), 8, 4).unwrap();
        assert_eq!(set.names, vec!["a", "b"]);
        assert_eq!((set.clips[0].frames, set.clips[1].frames), (5, 4));
        assert_eq!(set.clips[0].pixels[4 * 64], 40, "frame 5 comes last");
        assert_eq!((report.frames_read, report.resized_clips), (9, 0));
        let (set, report) = read_folder(dir.path(), 16, 4).unwrap();
        assert_eq!(set.clips[1].pixels.len(), 4 * 256);
        assert_eq!(set.clips[1].pixels[3 * 256 + 100], 30);
        assert_eq!(report.resized_clips, 2);
    }

    #[test]
    fn bad_folders_are_refused_naming_the_file_and_the_fix() {
        // A clip shorter than the model's frames.
        let dir = fixture();
        let e = read_folder(dir.path(), 8, 5).unwrap_err().to_string();
        assert!(
            e.contains(&dir.path().join("b").display().to_string())
                && e.contains("[model] frames = 5"),
            "{e}"
        );
        // A missing frame.
        let dir = fixture();
        std::fs::remove_file(dir.path().join("a/frame_003.png")).unwrap();
        let e = read_folder(dir.path(), 8, 2).unwrap_err().to_string();
        assert!(
            e.contains("frame 3 is missing") && e.contains("frame_002.png"),
            "{e}"
        );
        // Frames of mixed sizes.
        let dir = fixture();
        write_frame(&dir.path().join("b/frame_003.png"), 9, 8, 0);
        let e = read_folder(dir.path(), 8, 2).unwrap_err().to_string();
        assert!(
            e.contains("b/frame_003.png") && e.contains("9x8") && e.contains("one size"),
            "{e}"
        );
        // A file that is not a numbered frame, a file at the root, no clips.
        let dir = fixture();
        std::fs::write(dir.path().join("a/notes.txt"), "x").unwrap();
        let e = read_folder(dir.path(), 8, 2).unwrap_err().to_string();
        assert!(
            e.contains("notes.txt") && e.contains("numbered frame"),
            "{e}"
        );
        let dir = fixture();
        std::fs::write(dir.path().join("loose.png"), "x").unwrap();
        let e = read_folder(dir.path(), 8, 2).unwrap_err().to_string();
        assert!(e.contains("loose.png") && e.contains("folder of"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        let e = read_folder(empty.path(), 8, 2).unwrap_err().to_string();
        assert!(e.contains("no clip folder"), "{e}");
        // A frame that is not an image.
        let dir = fixture();
        std::fs::write(dir.path().join("a/frame_002.png"), "not a png").unwrap();
        let e = read_folder(dir.path(), 8, 2).unwrap_err().to_string();
        assert!(
            e.contains("a/frame_002.png") && e.contains("replace it"),
            "{e}"
        );
    }
}
