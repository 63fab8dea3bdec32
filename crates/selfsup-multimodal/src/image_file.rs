//! One image file -> `size x size` RGB bytes (HWC).
//!
//! Unlike selfsup-vision's ImageFolder reader (which drops alpha), images with
//! an alpha channel are composited over white: emoji are RGBA with transparent
//! backgrounds whose hidden colour is arbitrary. Non-square images are
//! resized to the square (bilinear), as CLIP's data loaders do after a
//! centre crop; captions describe the whole image, so nothing is cut.
use image::imageops::FilterType;
use std::path::Path;

/// File extensions read as images (any case).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Why an image could not be used; the caller names the captions line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageFault {
    /// No such file.
    Missing,
    /// Not a png / jpg / jpeg file.
    Unsupported,
    /// The file exists but does not decode.
    Unreadable(String),
}

/// Whether `path` has a supported image extension.
pub fn is_supported(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Decodes `path` into `size * size * 3` bytes, alpha composited over white.
pub fn read_rgb(path: &Path, size: usize) -> Result<Vec<u8>, ImageFault> {
    if !path.is_file() {
        return Err(ImageFault::Missing);
    }
    if !is_supported(path) {
        return Err(ImageFault::Unsupported);
    }
    let img = image::ImageReader::open(path)
        .map_err(|e| ImageFault::Unreadable(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| ImageFault::Unreadable(e.to_string()))?
        .decode()
        .map_err(|e| ImageFault::Unreadable(e.to_string()))?;
    let rgba = img.to_rgba8();
    let (w, h) = rgba.dimensions();
    if w == 0 || h == 0 {
        return Err(ImageFault::Unreadable("the image is empty".into()));
    }
    let mut rgb = image::RgbImage::new(w, h);
    for (dst, src) in rgb.pixels_mut().zip(rgba.pixels()) {
        let a = u32::from(src[3]);
        for c in 0..3 {
            // over white: c * a + 255 * (1 - a), rounded
            dst[c] = ((u32::from(src[c]) * a + 255 * (255 - a) + 127) / 255) as u8;
        }
    }
    let s = size as u32;
    let out = if (w, h) == (s, s) {
        rgb
    } else {
        image::imageops::resize(&rgb, s, s, FilterType::Triangle)
    };
    Ok(out.into_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transparent_pixels_become_white_and_sizes_are_met() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        let mut img = image::RgbaImage::new(4, 2);
        img.put_pixel(0, 0, image::Rgba([200, 0, 0, 255]));
        img.put_pixel(1, 0, image::Rgba([0, 0, 0, 0]));
        img.save(&path).unwrap();
        let same = read_rgb(&path, 4);
        // 4x2 is resized to 4x4
        assert_eq!(same.as_ref().map(|b| b.len()), Ok(48));
        let one = read_rgb(&path, 1).unwrap();
        assert_eq!(one.len(), 3);
        let raw = {
            let mut p = dir.path().join("b.png");
            p.set_extension("png");
            let mut i = image::RgbaImage::new(2, 2);
            i.put_pixel(0, 0, image::Rgba([200, 0, 0, 255]));
            i.save(&p).unwrap();
            read_rgb(&p, 2).unwrap()
        };
        assert_eq!(&raw[0..3], &[200, 0, 0]);
        assert_eq!(&raw[3..6], &[255, 255, 255]);
    }

    #[test]
    fn faults_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read_rgb(&dir.path().join("none.png"), 4),
            Err(ImageFault::Missing)
        );
        let gif = dir.path().join("x.gif");
        std::fs::write(&gif, b"GIF89a").unwrap();
        assert_eq!(read_rgb(&gif, 4), Err(ImageFault::Unsupported));
        let bad = dir.path().join("bad.png");
        std::fs::write(&bad, b"not a png").unwrap();
        assert!(matches!(read_rgb(&bad, 4), Err(ImageFault::Unreadable(_))));
    }
}
