//! ImageFolder trees: `root/<class>/<image>` (images may sit in nested
//! sub-folders of a class folder).
//!
//! Classes are the sub-folders of `root`, sorted by name; label `i` is the
//! `i`-th class. Files with a `png`, `jpg` or `jpeg` extension (any case) are
//! images; other files and hidden entries are skipped. Images are decoded in
//! parallel, converted to RGB (or grey), and resized to the size the caller
//! asks for with a triangle (bilinear) filter.
use super::ImageDataset;
use crate::{Error, Result};
use image::imageops::FilterType;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// File extensions read as images.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

fn is_image(path: &Path) -> bool {
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

/// Every image file under `dir`, recursively, in sorted order.
fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for path in sorted_entries(dir)? {
        if path.is_dir() {
            collect_images(&path, out)?;
        } else if is_image(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Decodes one image, converts it to `channels` channels and resizes it to
/// `height x width`; returns HWC bytes.
fn decode(path: &Path, height: usize, width: usize, channels: usize) -> Result<Vec<u8>> {
    let corrupt = |reason: String| Error::CorruptImage {
        path: path.to_path_buf(),
        reason,
    };
    let img = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| corrupt(e.to_string()))?;
    let (w, h) = (width as u32, height as u32);
    let bytes = if channels == 1 {
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
    if bytes.len() != height * width * channels {
        return Err(corrupt(format!(
            "decoded to {} bytes, expected {height}x{width}x{channels}",
            bytes.len()
        )));
    }
    Ok(bytes)
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
    for (label, dir) in class_dirs.iter().enumerate() {
        let mut images = Vec::new();
        collect_images(dir, &mut images)?;
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
        files.extend(images.into_iter().map(|p| (p, label as i64)));
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
        pixels: decoded.concat(),
        labels: Some(files.iter().map(|(_, l)| *l).collect()),
        classes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
        image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
            .save(path)
            .unwrap();
    }

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for (class, colour) in [("dog", [200, 10, 10]), ("cat", [10, 200, 10])] {
            let d = t.path().join(class);
            std::fs::create_dir(&d).unwrap();
            png(&d.join("a.png"), 4, 4, colour);
            png(&d.join("b.PNG"), 6, 3, colour);
            std::fs::write(d.join("notes.txt"), "not an image").unwrap();
        }
        t
    }

    #[test]
    fn two_classes_of_two_images() {
        let t = tree();
        let d = read_image_folder(t.path(), 4, 4, 3).unwrap();
        assert_eq!(d.classes, vec!["cat", "dog"]);
        assert_eq!(d.len(), 4);
        assert_eq!(d.labels, Some(vec![0, 0, 1, 1]));
        // Uniform images stay uniform after the resize.
        assert_eq!(&d.image(0)[..3], &[10, 200, 10]);
        assert_eq!(&d.image(3)[45..48], &[200, 10, 10]);
        let g = read_image_folder(t.path(), 2, 3, 1).unwrap();
        assert_eq!(
            (g.height, g.width, g.channels, g.pixels.len()),
            (2, 3, 1, 24)
        );
    }

    #[test]
    fn corrupt_image_is_named() {
        let t = tree();
        std::fs::write(
            t.path().join("cat").join("broken.png"),
            b"\x89PNG\r\n\x1a\n garbage",
        )
        .unwrap();
        let e = read_image_folder(t.path(), 4, 4, 3).unwrap_err();
        assert!(matches!(e, Error::CorruptImage { .. }), "{e}");
        assert!(e.to_string().contains("broken.png"), "{e}");
    }

    #[test]
    fn empty_and_missing_folders() {
        let t = tempfile::tempdir().unwrap();
        let e = read_image_folder(t.path(), 4, 4, 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no class folder"), "{e}");
        std::fs::create_dir(t.path().join("empty")).unwrap();
        let e = read_image_folder(t.path(), 4, 4, 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty") && e.contains("no image"), "{e}");
        let e = read_image_folder(&t.path().join("gone"), 4, 4, 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("gone") && e.contains("ImageFolder"), "{e}");
    }
}
