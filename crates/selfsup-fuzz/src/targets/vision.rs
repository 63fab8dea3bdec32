//! Vision readers: IDX (Fashion-MNIST), CIFAR binary batches, image files.
use crate::engine::Target;
use crate::seeds::{self, gunzip, gzip, join, split2};
use selfsup_vision::data::cifar::{self, CifarKind};
use selfsup_vision::data::idx::{self, IMAGES_MAGIC, LABELS_MAGIC};
use selfsup_vision::data::image_folder::decode_image_bytes;
use selfsup_vision::data::ImageDataset;
use std::path::Path;

pub const TARGETS: [Target; 4] = [
    Target {
        name: "idx",
        about: "selfsup_vision::data::idx::parse_idx_pair (IDX images + labels, plain or gzip)",
        run: run_idx,
        seeds: seeds_idx,
        dict: &[
            b"\x00\x00\x08\x03",
            b"\x00\x00\x08\x01",
            b"\x1f\x8b\x08\x00",
            seeds::SPLIT,
        ],
        max_len: 256 << 10,
    },
    Target {
        name: "cifar10",
        about: "selfsup_vision::data::cifar::parse_cifar (CIFAR-10 binary batch)",
        run: run_cifar10,
        seeds: seeds_cifar10,
        dict: &[b"\x1f\x8b\x08\x00"],
        max_len: 64 << 10,
    },
    Target {
        name: "cifar100",
        about: "selfsup_vision::data::cifar::parse_cifar (CIFAR-100 binary batch)",
        run: run_cifar100,
        seeds: seeds_cifar100,
        dict: &[b"\x1f\x8b\x08\x00"],
        max_len: 64 << 10,
    },
    Target {
        name: "image",
        about: "selfsup_vision::data::image_folder::decode_image_bytes (PNG / JPEG)",
        run: run_image,
        seeds: seeds_image,
        dict: &[
            b"\x89PNG\r\n\x1a\n",
            b"IHDR",
            b"IDAT",
            b"IEND",
            b"PLTE",
            b"tRNS",
            b"acTL",
            b"fcTL",
            b"\xff\xd8\xff\xe0",
            b"\xff\xc0",
            b"\xff\xc2",
            b"\xff\xc4",
            b"\xff\xda",
            b"\xff\xdb",
            b"\xff\xd9",
        ],
        max_len: 128 << 10,
    },
];

/// The reader must hand back a dataset whose shape and buffers agree.
fn check(ds: &ImageDataset) -> Result<(), String> {
    let per = ds.height * ds.width * ds.channels;
    assert!(per > 0, "empty image shape accepted");
    assert_eq!(ds.pixels.len() % per, 0, "pixel buffer not whole images");
    let n = ds.pixels.len() / per;
    if let Some(l) = &ds.labels {
        assert_eq!(l.len(), n, "labels and images disagree");
        assert!(
            l.iter()
                .all(|&c| c >= 0 && (c as usize) < ds.classes.len().max(1)),
            "a label without a class name"
        );
    }
    if n > 0 {
        let _ = ds.image(n - 1);
    }
    Ok(())
}

fn run_idx(data: &[u8]) -> Result<(), String> {
    let (a, b) = split2(data);
    let ds = idx::parse_idx_pair(
        Path::new("fuzz-images-idx3-ubyte"),
        a.to_vec(),
        Path::new("fuzz-labels-idx1-ubyte"),
        b.to_vec(),
        "fuzz",
    )
    .map_err(|e| e.to_string())?;
    check(&ds)
}

fn idx_images(n: usize, h: usize, w: usize) -> Vec<u8> {
    let mut b = IMAGES_MAGIC.to_be_bytes().to_vec();
    for d in [n, h, w] {
        b.extend_from_slice(&(d as u32).to_be_bytes());
    }
    b.extend((0..n * h * w).map(|p| (p * 7 % 251) as u8));
    b
}

fn idx_labels(n: usize) -> Vec<u8> {
    let mut b = LABELS_MAGIC.to_be_bytes().to_vec();
    b.extend_from_slice(&(n as u32).to_be_bytes());
    b.extend((0..n).map(|i| (i % 10) as u8));
    b
}

/// `bytes` (a whole IDX file) cut to its first `n` items, header rewritten.
fn idx_head(bytes: &[u8], header: usize, item: usize, n: usize) -> Option<Vec<u8>> {
    let have = bytes.len().checked_sub(header)? / item.max(1);
    let n = n.min(have);
    let mut out = bytes.get(..header + n * item)?.to_vec();
    out[4..8].copy_from_slice(&(n as u32).to_be_bytes());
    Some(out)
}

fn seeds_idx() -> Vec<Vec<u8>> {
    let mut out = vec![
        join(&[&idx_images(3, 4, 5), &idx_labels(3)]),
        join(&[&idx_images(1, 1, 1), &idx_labels(1)]),
        join(&[&gzip(&idx_images(4, 3, 3)), &gzip(&idx_labels(4))]),
        join(&[&idx_images(2, 28, 28), &gzip(&idx_labels(2))]),
    ];
    // Real Fashion-MNIST, cut to its first 20 images.
    let files = seeds::dataset_files("fashion-mnist", |p| p.to_string_lossy().contains("t10k"), 4);
    let whole = |kind: &str| {
        files
            .iter()
            .find(|p| p.to_string_lossy().contains(kind))
            .and_then(|p| std::fs::read(p).ok())
            .map(|raw| {
                gunzip(&raw, 1 << 26)
                    .filter(|v| !v.is_empty())
                    .unwrap_or(raw)
            })
    };
    if let (Some(img), Some(lab)) = (whole("images"), whole("labels")) {
        if let (Some(i), Some(l)) = (idx_head(&img, 16, 784, 20), idx_head(&lab, 8, 1, 20)) {
            out.push(join(&[&i, &l]));
            out.push(join(&[&gzip(&i), &gzip(&l)]));
        }
    }
    out
}

fn cifar_records(n: usize, kind: CifarKind) -> Vec<u8> {
    let mut b = Vec::new();
    for r in 0..n {
        if kind == CifarKind::Cifar100 {
            b.push((r % 20) as u8);
        }
        b.push((r % 10) as u8);
        b.extend((0..cifar::PIXELS).map(|p| ((r + p) % 256) as u8));
    }
    b
}

fn run_cifar(data: &[u8], kind: CifarKind) -> Result<(), String> {
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    cifar::parse_cifar(
        Path::new("fuzz_batch.bin"),
        data.to_vec(),
        kind,
        &mut pixels,
        &mut labels,
    )
    .map_err(|e| e.to_string())?;
    assert_eq!(
        pixels.len(),
        labels.len() * cifar::PIXELS,
        "pixels and labels disagree"
    );
    assert!(
        labels
            .iter()
            .all(|&l| l >= 0 && (l as usize) < kind.classes()),
        "label out of range accepted"
    );
    Ok(())
}

fn run_cifar10(data: &[u8]) -> Result<(), String> {
    run_cifar(data, CifarKind::Cifar10)
}

fn run_cifar100(data: &[u8]) -> Result<(), String> {
    run_cifar(data, CifarKind::Cifar100)
}

fn real_cifar(kind: CifarKind) -> Vec<Vec<u8>> {
    // Not a registry dataset: used when the user put one in the cache.
    let (name, rs) = match kind {
        CifarKind::Cifar10 => ("cifar10", CifarKind::Cifar10.record_size()),
        CifarKind::Cifar100 => ("cifar100", CifarKind::Cifar100.record_size()),
    };
    seeds::real(name, &["bin"])
        .into_iter()
        .map(|mut v| {
            v.truncate(v.len() / rs * rs);
            v
        })
        .filter(|v| !v.is_empty())
        .collect()
}

fn seeds_cifar10() -> Vec<Vec<u8>> {
    let k = CifarKind::Cifar10;
    let mut out = vec![
        cifar_records(1, k),
        cifar_records(3, k),
        gzip(&cifar_records(2, k)),
    ];
    out.extend(real_cifar(k));
    out
}

fn seeds_cifar100() -> Vec<Vec<u8>> {
    let k = CifarKind::Cifar100;
    let mut out = vec![
        cifar_records(1, k),
        cifar_records(3, k),
        gzip(&cifar_records(2, k)),
    ];
    out.extend(real_cifar(k));
    out
}

fn run_image(data: &[u8]) -> Result<(), String> {
    // Grey or RGB, the size picked by the input's length.
    let (h, w, c) = match data.len() % 3 {
        0 => (8, 8, 3),
        1 => (5, 7, 1),
        _ => (16, 12, 3),
    };
    let out =
        decode_image_bytes(Path::new("fuzz.png"), data, h, w, c).map_err(|e| e.to_string())?;
    assert_eq!(out.len(), h * w * c, "wrong decoded size");
    Ok(())
}

/// `img` encoded as `format`.
pub fn encode(img: &image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = img.write_to(&mut std::io::Cursor::new(&mut out), format);
    out
}

/// Small PNG and JPEG files of several colour types, plus real emoji.
pub fn image_seeds() -> Vec<Vec<u8>> {
    use image::{DynamicImage, GrayImage, ImageFormat, Luma, Rgb, RgbImage, Rgba, RgbaImage};
    let rgb = RgbImage::from_fn(9, 6, |x, y| Rgb([(x * 25) as u8, (y * 40) as u8, 128]));
    let rgba = RgbaImage::from_fn(5, 5, |x, y| Rgba([200, (x * 50) as u8, 10, (y * 60) as u8]));
    let grey = GrayImage::from_fn(4, 3, |x, y| Luma([(x * 60 + y) as u8]));
    let grey16 = image::ImageBuffer::<Luma<u16>, Vec<u16>>::from_fn(3, 3, |x, y| {
        Luma([(x * 20000 + y) as u16])
    });
    let mut out = vec![
        encode(&DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::Png),
        encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png),
        encode(&DynamicImage::ImageLuma8(grey.clone()), ImageFormat::Png),
        encode(&DynamicImage::ImageLuma16(grey16), ImageFormat::Png),
        encode(&DynamicImage::ImageRgb8(rgb), ImageFormat::Jpeg),
        encode(&DynamicImage::ImageLuma8(grey), ImageFormat::Jpeg),
    ];
    out.retain(|v| !v.is_empty());
    out.extend(seeds::real("emoji-google", &["png"]));
    out.extend(seeds::real("emoji-twitter", &["png"]).into_iter().take(2));
    out
}

fn seeds_image() -> Vec<Vec<u8>> {
    let mut out = image_seeds();
    // Inputs that once crashed the decoder (regression seeds).
    out.extend(seeds::workspace_file(
        "crates/selfsup-vision/tests/fixtures/jpeg-idct-out-of-bounds.jpg",
    ));
    out
}
