//! IDX files (the MNIST / Fashion-MNIST format), plain or gzipped.
//!
//! An IDX file is a big-endian header — magic number `0x000008DD` (`08` = u8
//! data, `DD` = number of dimensions), then one u32 per dimension — followed
//! by the data. Images are `0x00000803` (N, H, W), labels `0x00000801` (N).
//! Gzip is recognised by its magic bytes `1f 8b`, not by the file name.
use super::{ImageDataset, Split};
use crate::{Error, Result};
use flate2::read::MultiGzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Magic number of an IDX file of u8 images (N, H, W).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of u8 labels (N).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// The ten Fashion-MNIST classes, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Largest decompressed size of a gzipped dataset file (1 GiB). The largest
/// real one, Fashion-MNIST's training images, is 47 MB; a stream that inflates
/// past this is corrupt or a decompression bomb, and is refused before the
/// memory is taken.
pub const MAX_DECOMPRESSED: usize = 1 << 30;

/// Reads a whole file, decompressing it when it starts with the gzip magic
/// bytes `1f 8b`.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_maybe_gzip(path, raw)
}

/// The bytes of a file read by [`read_maybe_gzip`]: `raw` itself, or its
/// decompression when it starts with the gzip magic bytes `1f 8b`. `path` is
/// only named in errors. More than [`MAX_DECOMPRESSED`] bytes of output is an
/// error.
pub fn decode_maybe_gzip(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>> {
    inflate_at_most(path, raw, MAX_DECOMPRESSED)
}

fn inflate_at_most(path: &Path, raw: Vec<u8>, limit: usize) -> Result<Vec<u8>> {
    if raw.len() < 2 || raw[..2] != [0x1f, 0x8b] {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    let mut dec = MultiGzDecoder::new(raw.as_slice());
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match dec.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if out.len().saturating_add(n) > limit {
                    return Err(Error::bad_length(
                        path,
                        format!(
                            "the gzip stream inflates to more than {limit} bytes, the limit for a \
                             dataset file; the file is corrupt or not a dataset file: download it again"
                        ),
                    ));
                }
                out.extend_from_slice(&buf[..n])
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(Error::Gzip {
                    path: path.to_path_buf(),
                    decoded: out.len(),
                    source,
                })
            }
        }
    }
    Ok(out)
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Parses the header of an IDX u8 file with `ndims` dimensions and checks that
/// the data that follows has exactly the length the dimensions imply.
/// Returns the dimensions.
fn parse_idx(path: &Path, bytes: &[u8], expected: u32, kind: &'static str) -> Result<Vec<usize>> {
    if bytes.len() < 4 {
        return Err(Error::bad_length(
            path,
            format!(
                "{} bytes is too short for an IDX magic number (4 bytes)",
                bytes.len()
            ),
        ));
    }
    let magic = be_u32(bytes);
    if magic != expected {
        return Err(Error::IdxMagic {
            path: path.to_path_buf(),
            found: magic,
            expected,
            kind,
        });
    }
    let ndims = (expected & 0xff) as usize;
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(Error::bad_length(
            path,
            format!(
                "{} bytes is too short for the {header}-byte IDX header of {ndims} dimension(s)",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|d| be_u32(&bytes[4 + 4 * d..]) as usize)
        .collect();
    let item: usize = dims[1..].iter().product();
    let shown = dims
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(" x ");
    let want = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::bad_length(path, format!("header dimensions {shown} overflow")))?;
    let have = bytes.len() - header;
    if have != want {
        let detail = if have < want && item > 0 {
            format!(
                "; item {} (byte offset {}) is the first incomplete one",
                have / item,
                header + (have / item) * item
            )
        } else if have > want {
            format!(
                "; {} trailing bytes from byte offset {}",
                have - want,
                header + want
            )
        } else {
            String::new()
        };
        return Err(Error::bad_length(
            path,
            format!(
                "header declares {shown} = {want} bytes of {kind} after the {header}-byte header, \
                 but the file holds {have}{detail}"
            ),
        ));
    }
    Ok(dims)
}

/// Reads an IDX images file and its IDX labels file into one dataset named
/// `name`. Class names are the label values (`"0"`, `"1"`, ...) up to the
/// largest label.
pub fn read_idx_pair(images: &Path, labels: &Path, name: &str) -> Result<ImageDataset> {
    let img_bytes = read_maybe_gzip(images)?;
    let lab_bytes = read_maybe_gzip(labels)?;
    parse_idx_pair(images, img_bytes, labels, lab_bytes, name)
}

/// [`read_idx_pair`] on bytes already in memory (each plain or gzipped):
/// `images` and `labels` are only named in errors. Reads no file.
pub fn parse_idx_pair(
    images: &Path,
    img_bytes: Vec<u8>,
    labels: &Path,
    lab_bytes: Vec<u8>,
    name: &str,
) -> Result<ImageDataset> {
    let img_bytes = decode_maybe_gzip(images, img_bytes)?;
    let dims = parse_idx(images, &img_bytes, IMAGES_MAGIC, "images")?;
    let (n, h, w) = (dims[0], dims[1], dims[2]);
    if n == 0 || h == 0 || w == 0 {
        return Err(Error::Empty {
            path: images.to_path_buf(),
            what: format!("holds no image ({n} x {h} x {w})"),
        });
    }
    let lab_bytes = decode_maybe_gzip(labels, lab_bytes)?;
    let ldims = parse_idx(labels, &lab_bytes, LABELS_MAGIC, "labels")?;
    if ldims[0] != n {
        return Err(Error::CountMismatch {
            images: images.to_path_buf(),
            n_images: n,
            labels: labels.to_path_buf(),
            n_labels: ldims[0],
        });
    }
    let label_vec: Vec<i64> = lab_bytes[8..].iter().map(|&l| l as i64).collect();
    let max = label_vec.iter().copied().max().unwrap_or(0);
    let classes = (0..=max).map(|c| c.to_string()).collect();
    let mut pixels = img_bytes;
    pixels.drain(..16);
    Ok(ImageDataset {
        name: name.to_string(),
        height: h,
        width: w,
        channels: 1,
        pixels: pixels.into(),
        labels: Some(label_vec),
        classes,
    })
}

/// `dir/base` or `dir/base.gz`, whichever exists (the plain file first).
fn find_file(dir: &Path, base: &str, dataset: &str) -> Result<PathBuf> {
    let plain = dir.join(base);
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{base}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(Error::missing_dataset(
        dir,
        format!("no {base} or {base}.gz in this folder"),
        dataset,
    ))
}

/// The ten MNIST classes, by label.
pub const MNIST_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// Reads one split of Fashion-MNIST from `dir`, which holds
/// `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`, with the ten class
/// names. Labels must be below 10. MNIST has the same files: a folder named
/// `mnist` (where `cargo xtask fetch mnist` puts it) is read as MNIST, with
/// its name and the digits as class names (a Fashion-MNIST encoder probed
/// on digits, for transfer).
pub fn read_fashion_mnist(dir: &Path, split: Split) -> Result<ImageDataset> {
    let (name, class_names) = if dir.file_name().is_some_and(|n| n == "mnist") {
        ("mnist", MNIST_CLASSES)
    } else {
        ("fashion-mnist", FASHION_MNIST_CLASSES)
    };
    if !dir.is_dir() {
        return Err(Error::missing_dataset(dir, "no such dataset folder", name));
    }
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let images = find_file(dir, &format!("{prefix}-images-idx3-ubyte"), name)?;
    let labels = find_file(dir, &format!("{prefix}-labels-idx1-ubyte"), name)?;
    let mut ds = read_idx_pair(&images, &labels, &format!("{name}/{}", split.as_str()))?;
    let n_classes = class_names.len();
    if let Some(labels_vec) = &ds.labels {
        if let Some((i, &l)) = labels_vec
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= n_classes)
        {
            return Err(Error::BadLabel {
                path: labels,
                record: i,
                offset: 8 + i,
                label: l as u32,
                classes: n_classes,
            });
        }
    }
    ds.classes = class_names.iter().map(|s| s.to_string()).collect();
    Ok(ds)
}

/// Builders of IDX files, for tests and fixtures.
#[cfg(test)]
pub(crate) mod fixture {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    /// IDX bytes of `n` images of `h x w` with pixel `(i*7 + p) % 256`.
    pub fn images(n: usize, h: usize, w: usize) -> Vec<u8> {
        let mut b = IMAGES_MAGIC.to_be_bytes().to_vec();
        for d in [n, h, w] {
            b.extend_from_slice(&(d as u32).to_be_bytes());
        }
        b.extend((0..n * h * w).map(|p| ((p / (h * w)) * 7 + p % (h * w)) as u8));
        b
    }

    /// IDX bytes of the labels `0, 1, .., n-1` modulo 10.
    pub fn labels(n: usize) -> Vec<u8> {
        let mut b = LABELS_MAGIC.to_be_bytes().to_vec();
        b.extend_from_slice(&(n as u32).to_be_bytes());
        b.extend((0..n).map(|i| (i % 10) as u8));
        b
    }

    pub fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::*;
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn plain_and_gzip_round_trip() {
        let t = tempfile::tempdir().unwrap();
        let ip = write(t.path(), "i", &images(5, 3, 4));
        let lp = write(t.path(), "l", &labels(5));
        // Gzipped files without a .gz extension: detection is by magic bytes.
        let igz = write(t.path(), "i2", &gzip(&images(5, 3, 4)));
        let lgz = write(t.path(), "l2.gz", &gzip(&labels(5)));
        let a = read_idx_pair(&ip, &lp, "a").unwrap();
        let b = read_idx_pair(&igz, &lgz, "b").unwrap();
        assert_eq!((a.len(), a.height, a.width, a.channels), (5, 3, 4, 1));
        assert_eq!(a.pixels, b.pixels);
        assert_eq!(a.labels, Some(vec![0, 1, 2, 3, 4]));
        assert_eq!(a.image(1)[0], 7);
        assert_eq!(a.classes.len(), 5);
    }

    /// The same files in a folder named `mnist` are MNIST: its name, digit
    /// classes, and the fetch hint names MNIST.
    #[test]
    fn an_mnist_folder_is_read_as_mnist() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("mnist");
        std::fs::create_dir(&dir).unwrap();
        write(&dir, "t10k-images-idx3-ubyte", &images(4, 28, 28));
        write(&dir, "t10k-labels-idx1-ubyte", &labels(4));
        let d = read_fashion_mnist(&dir, Split::Test).unwrap();
        assert_eq!(d.name, "mnist/test");
        assert_eq!(d.classes[9], "9");
        let e = read_fashion_mnist(&dir, Split::Train)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cargo xtask fetch mnist"), "{e}");
    }

    #[test]
    fn fashion_mnist_layout() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            "t10k-images-idx3-ubyte.gz",
            &gzip(&images(4, 28, 28)),
        );
        write(t.path(), "t10k-labels-idx1-ubyte", &labels(4));
        let d = read_fashion_mnist(t.path(), Split::Test).unwrap();
        assert_eq!(d.len(), 4);
        assert_eq!(d.classes[9], "Ankle boot");
        assert_eq!(d.name, "fashion-mnist/test");
        let e = read_fashion_mnist(t.path(), Split::Train)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("train-images-idx3-ubyte") && e.contains("cargo xtask fetch fashion-mnist"),
            "{e}"
        );
        let e = read_fashion_mnist(&t.path().join("nope"), Split::Train)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nope") && e.contains("cargo xtask fetch fashion-mnist"),
            "{e}"
        );
    }

    #[test]
    fn wrong_magic_is_named() {
        let t = tempfile::tempdir().unwrap();
        // Labels given where images are expected.
        let lp = write(t.path(), "labels", &labels(3));
        let e = read_idx_pair(&lp, &lp, "x").unwrap_err();
        assert!(matches!(e, Error::IdxMagic { found: 0x801, .. }), "{e}");
        let s = e.to_string();
        assert!(
            s.contains("labels") && s.contains("0x00000801") && s.contains("0x00000803"),
            "{s}"
        );
    }

    #[test]
    fn truncated_gzip_names_the_file() {
        let t = tempfile::tempdir().unwrap();
        let gz = gzip(&images(50, 28, 28));
        for cut in [gz.len() - 4, gz.len() / 2, 12] {
            let ip = write(t.path(), "cut-images.gz", &gz[..cut]);
            let lp = write(t.path(), "l", &labels(50));
            let e = read_idx_pair(&ip, &lp, "x").unwrap_err();
            let s = e.to_string();
            assert!(matches!(e, Error::Gzip { .. }), "cut {cut}: {s}");
            assert!(s.contains("cut-images.gz") && s.contains("gzip"), "{s}");
        }
        // Corrupt (not truncated) stream.
        let mut bad = gz.clone();
        for b in &mut bad[20..40] {
            *b ^= 0x5a;
        }
        let ip = write(t.path(), "corrupt.gz", &bad);
        let e = read_maybe_gzip(&ip).unwrap_err().to_string();
        assert!(e.contains("corrupt.gz"), "{e}");
    }

    #[test]
    fn gzip_bomb_is_refused_at_the_limit() {
        let gz = gzip(&vec![0u8; 100_000]);
        let p = Path::new("bomb-images.gz");
        let e = inflate_at_most(p, gz.clone(), 50_000)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bomb-images.gz") && e.contains("more than 50000 bytes"),
            "{e}"
        );
        assert_eq!(inflate_at_most(p, gz, 100_000).unwrap().len(), 100_000);
    }

    #[test]
    fn in_memory_pair_matches_the_files() {
        let t = tempfile::tempdir().unwrap();
        let ip = write(t.path(), "i", &images(3, 2, 5));
        let lp = write(t.path(), "l", &labels(3));
        let a = read_idx_pair(&ip, &lp, "a").unwrap();
        let b = parse_idx_pair(&ip, gzip(&images(3, 2, 5)), &lp, labels(3), "a").unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn count_mismatch() {
        let t = tempfile::tempdir().unwrap();
        let ip = write(t.path(), "imgs", &images(4, 2, 2));
        let lp = write(t.path(), "labs", &labels(3));
        let e = read_idx_pair(&ip, &lp, "x").unwrap_err();
        assert!(
            matches!(
                e,
                Error::CountMismatch {
                    n_images: 4,
                    n_labels: 3,
                    ..
                }
            ),
            "{e}"
        );
        let s = e.to_string();
        assert!(s.contains("imgs") && s.contains("labs"), "{s}");
    }

    #[test]
    fn header_longer_than_data() {
        let t = tempfile::tempdir().unwrap();
        let mut b = images(4, 3, 3);
        b.truncate(b.len() - 10); // image 2 is incomplete
        let ip = write(t.path(), "short", &b);
        let lp = write(t.path(), "l", &labels(4));
        let e = read_idx_pair(&ip, &lp, "x").unwrap_err();
        let s = e.to_string();
        assert!(matches!(e, Error::BadLength { .. }), "{s}");
        assert!(
            s.contains("short") && s.contains("item 2") && s.contains("byte offset 34"),
            "{s}"
        );
        // Trailing bytes are an error too.
        let mut b = images(2, 3, 3);
        b.push(0);
        let ip = write(t.path(), "long", &b);
        let s = read_idx_pair(&ip, &lp, "x").unwrap_err().to_string();
        assert!(s.contains("long") && s.contains("trailing"), "{s}");
        // A header cut short.
        let ip = write(t.path(), "tiny", &images(1, 1, 1)[..9]);
        let s = read_idx_pair(&ip, &lp, "x").unwrap_err().to_string();
        assert!(s.contains("tiny") && s.contains("too short"), "{s}");
    }

    #[test]
    fn fashion_label_out_of_range() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "train-images-idx3-ubyte", &images(3, 2, 2));
        let mut l = labels(3);
        l[8 + 1] = 12;
        write(t.path(), "train-labels-idx1-ubyte", &l);
        let s = read_fashion_mnist(t.path(), Split::Train)
            .unwrap_err()
            .to_string();
        assert!(
            s.contains("train-labels-idx1-ubyte")
                && s.contains("record 1")
                && s.contains("label 12"),
            "{s}"
        );
    }

    /// Reads the real Fashion-MNIST when `SELFSUP_FASHION_MNIST` names its
    /// folder (e.g. `~/.cache/selfsup/datasets/fashion-mnist`); skipped otherwise.
    #[test]
    fn real_fashion_mnist_when_available() {
        let Some(dir) = std::env::var_os("SELFSUP_FASHION_MNIST") else {
            return;
        };
        let train = read_fashion_mnist(Path::new(&dir), Split::Train).unwrap();
        let test = read_fashion_mnist(Path::new(&dir), Split::Test).unwrap();
        assert_eq!((train.len(), test.len()), (60000, 10000));
        assert_eq!((train.height, train.width, train.channels), (28, 28, 1));
        let mean =
            train.pixels.iter().map(|&p| p as f64).sum::<f64>() / train.pixels.len() as f64 / 255.0;
        assert!((mean - 0.2860).abs() < 1e-3, "mean {mean}");
        let mut counts = [0usize; 10];
        for &l in train.labels.as_ref().unwrap() {
            counts[l as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c == 6000), "{counts:?}");
    }
}
