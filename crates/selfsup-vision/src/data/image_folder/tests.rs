//! Tests of `image_folder`.
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
fn oversized_image_header_is_refused_before_decoding() {
    // A valid PNG of 2x2 whose IHDR claims 60000 x 60000 pixels (CRC fixed
    // up): refused by the limits, naming the file and the limit.
    let mut bytes = Vec::new();
    image::RgbImage::from_pixel(2, 2, image::Rgb([1, 2, 3]))
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    // IHDR data starts at byte 16 (8 signature + 4 length + 4 type).
    bytes[16..20].copy_from_slice(&60000u32.to_be_bytes());
    bytes[20..24].copy_from_slice(&60000u32.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    let e = decode_image_bytes(Path::new("huge.png"), &bytes, 4, 4, 3)
        .unwrap_err()
        .to_string();
    assert!(e.contains("huge.png") && e.contains("8192x8192"), "{e}");
    let e = decode_image_bytes(Path::new("x.png"), &bytes, 0, 4, 3)
        .unwrap_err()
        .to_string();
    assert!(e.contains("x.png") && e.contains("at least 1x1"), "{e}");
    let e = decode_image_bytes(Path::new("x.png"), &bytes, 4, 1 << 40, 3)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at most 8192x8192"), "{e}");
}

/// A 947-byte JPEG found by the fuzzer (selfsup-fuzz `image`) on which
/// zune-jpeg's AVX2 IDCT panics (index out of bounds): an error naming the
/// file, not a panic (on CPUs without AVX2 it is refused by the decoder).
#[test]
fn decoder_panic_is_a_corrupt_image_error() {
    let bytes = include_bytes!("../../../tests/fixtures/jpeg-idct-out-of-bounds.jpg");
    for (h, w, c) in [(8, 8, 3), (5, 7, 1)] {
        let e = decode_image_bytes(Path::new("broken.jpg"), bytes, h, w, c).unwrap_err();
        assert!(matches!(e, Error::CorruptImage { .. }), "{e}");
        assert!(e.to_string().contains("broken.jpg"), "{e}");
    }
}

fn encoded(img: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), format)
        .unwrap();
    bytes
}

/// Grey + alpha over white, a tall image cut to its centre square, and
/// the grey output of a colour image.
#[test]
fn decode_square_converts_modes_and_crops_the_centre() {
    let la =
        image::GrayAlphaImage::from_fn(4, 4, |x, _| image::LumaA([0, if x < 2 { 0 } else { 255 }]));
    let bytes = encoded(la.into(), image::ImageFormat::Png);
    let px = decode_square(Path::new("la.png"), &bytes, 4, 1).unwrap();
    assert_eq!(&px[..4], &[255, 255, 0, 0]);
    // 2 wide, 6 tall: rows 0-1 red, 2-3 green, 4-5 blue; the centre
    // square is the green rows.
    let tall = image::RgbImage::from_fn(2, 6, |_, y| match y / 2 {
        0 => image::Rgb([255, 0, 0]),
        1 => image::Rgb([0, 255, 0]),
        _ => image::Rgb([0, 0, 255]),
    });
    let bytes = encoded(tall.into(), image::ImageFormat::Png);
    let px = decode_square(Path::new("tall.png"), &bytes, 2, 3).unwrap();
    assert_eq!(px, [0, 255, 0].repeat(4));
    let grey = decode_square(Path::new("tall.png"), &bytes, 1, 1).unwrap();
    assert_eq!(grey.len(), 1);
    assert!(grey[0] > 120 && grey[0] < 200, "{grey:?}");
    let e = decode_square(Path::new("tall.png"), &bytes, 0, 3).unwrap_err();
    assert!(e.to_string().contains("at least 1x1"), "{e}");
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
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
