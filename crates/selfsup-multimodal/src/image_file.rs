//! One image file -> `size x size` RGB bytes (HWC).
//!
//! Unlike selfsup-vision's ImageFolder reader (which drops alpha), images with
//! an alpha channel are composited over white: emoji are RGBA with transparent
//! backgrounds whose hidden colour is arbitrary. Non-square images are
//! resized to the square (bilinear), as CLIP's data loaders do after a
//! centre crop; captions describe the whole image, so nothing is cut.
//!
//! The header's dimensions are checked before decoding: an image wider or
//! higher than [`MAX_IMAGE_SIDE`] or with more than [`MAX_IMAGE_PIXELS`]
//! pixels is refused with the limit in the message. [`decode_rgb`] reads
//! from memory without the file system.
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageReader, Limits};
use std::io::{BufRead, Seek};
use std::path::Path;

/// File extensions read as images (any case).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The widest or highest image decoded (pixels).
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// The most pixels an image may hold (40 megapixels).
pub const MAX_IMAGE_PIXELS: u64 = 40_000_000;
/// The largest output side [`read_rgb`] and [`decode_rgb`] produce
/// (`[data] image_size`).
pub const MAX_OUTPUT_SIZE: usize = 4_096;

/// Why an image could not be used; the caller names the captions line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageFault {
    /// No such file.
    Missing,
    /// Not a png / jpg / jpeg file.
    Unsupported,
    /// The file exists but does not decode (or is larger than the limits).
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
    let file = std::fs::File::open(path).map_err(|e| ImageFault::Unreadable(e.to_string()))?;
    decode_from(std::io::BufReader::new(file), size)
}

/// Decodes the bytes of one PNG or JPEG file (the format from its content)
/// into `size * size * 3` bytes, alpha composited over white; reads no file.
/// The caller names the file in its error.
pub fn decode_rgb(bytes: &[u8], size: usize) -> Result<Vec<u8>, ImageFault> {
    decode_from(std::io::Cursor::new(bytes), size)
}

/// Runs the decoder; a panic inside it (a decoder bug on a malformed file)
/// becomes [`ImageFault::Unreadable`] instead of aborting the whole load. (A
/// fuzzer's abort-on-panic hook still sees it.)
fn decode_from<R: BufRead + Seek>(input: R, size: usize) -> Result<Vec<u8>, ImageFault> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode_unguarded(input, size)
    }))
    .unwrap_or_else(|panic| {
        let why = selfsup_core::error::panic_message(panic.as_ref()).unwrap_or_default();
        Err(ImageFault::Unreadable(format!(
            "the decoder failed on this file ({why})"
        )))
    })
}

fn decode_unguarded<R: BufRead + Seek>(input: R, size: usize) -> Result<Vec<u8>, ImageFault> {
    let unreadable = |e: &dyn std::fmt::Display| ImageFault::Unreadable(e.to_string());
    if size == 0 || size > MAX_OUTPUT_SIZE {
        return Err(ImageFault::Unreadable(format!(
            "cannot resize to {size}x{size} pixels: the side must be in 1..={MAX_OUTPUT_SIZE}"
        )));
    }
    // image's default limits (512 MiB of decoder allocations) stay on; the
    // dimensions are checked below so the message can state ours.
    let mut reader = ImageReader::new(input)
        .with_guessed_format()
        .map_err(|e| unreadable(&e))?;
    reader.limits(Limits::default());
    let decoder = reader.into_decoder().map_err(|e| unreadable(&e))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(ImageFault::Unreadable("the image is empty".into()));
    }
    if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE || u64::from(w) * u64::from(h) > MAX_IMAGE_PIXELS {
        return Err(ImageFault::Unreadable(format!(
            "its header says {w}x{h} pixels, above the limit of {MAX_IMAGE_SIDE} pixels a side and {MAX_IMAGE_PIXELS} pixels in all (shrink the image)"
        )));
    }
    let img = DynamicImage::from_decoder(decoder).map_err(|e| unreadable(&e))?;
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

    /// One PNG chunk: length, type, data, CRC-32 (ISO-HDLC) of type + data.
    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        let mut crc = 0xFFFF_FFFFu32;
        for &b in &body {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(&(!crc).to_be_bytes());
        out
    }

    /// A PNG whose IHDR claims `w x h` RGBA, with a token IDAT chunk.
    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut ihdr = w.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        out.extend(chunk(b"IHDR", &ihdr));
        out.extend(chunk(
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        ));
        out.extend(chunk(b"IEND", &[]));
        out
    }

    #[test]
    fn huge_header_dimensions_are_refused_before_decoding() {
        for (w, h) in [(100_000, 10), (10_000, 10_000)] {
            let Err(ImageFault::Unreadable(why)) = decode_rgb(&png_header(w, h), 4) else {
                panic!("{w}x{h} accepted");
            };
            assert!(
                why.contains(&format!("{w}x{h}"))
                    && why.contains("16384")
                    && why.contains("40000000"),
                "{why}"
            );
        }
    }

    #[test]
    fn decoding_from_memory_matches_the_file_and_bounds_the_output_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        let mut img = image::RgbaImage::new(3, 5);
        img.put_pixel(1, 1, image::Rgba([10, 20, 30, 128]));
        img.save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(decode_rgb(&bytes, 4), read_rgb(&path, 4));
        for size in [0, MAX_OUTPUT_SIZE + 1] {
            let Err(ImageFault::Unreadable(why)) = decode_rgb(&bytes, size) else {
                panic!("size {size} accepted");
            };
            assert!(why.contains("1..=4096"), "{why}");
        }
        assert!(matches!(decode_rgb(b"", 4), Err(ImageFault::Unreadable(_))));
        // Found by the fuzzer: this JPEG makes zune-jpeg's AVX2 IDCT panic
        // (on AVX2 machines); it must be an error, not a crash.
        let jpeg =
            include_bytes!("../../selfsup-vision/tests/fixtures/jpeg-idct-out-of-bounds.jpg");
        assert!(matches!(
            decode_rgb(jpeg, 8),
            Err(ImageFault::Unreadable(_))
        ));
    }
}
