//! CIFAR-10 / CIFAR-100 binary batches.
//!
//! A CIFAR-10 record is one label byte followed by 3072 pixel bytes (1024 red,
//! 1024 green, 1024 blue, each 32x32 row-major: CHW). A CIFAR-100 record has
//! two label bytes (coarse, then fine) before the same 3072 bytes; the fine
//! label is used. Pixels are converted to HWC. Files may be gzipped.
use super::idx::{decode_maybe_gzip, read_maybe_gzip};
use super::{ImageDataset, Split};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Side of a CIFAR image.
pub const SIDE: usize = 32;
/// Pixel bytes of one CIFAR image (3 x 32 x 32).
pub const PIXELS: usize = 3 * SIDE * SIDE;

/// The ten CIFAR-10 classes, used when `batches.meta.txt` is absent.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Which CIFAR layout a file follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarKind {
    /// 1 label byte per record, 10 classes.
    Cifar10,
    /// 2 label bytes per record (coarse, fine), 100 fine classes.
    Cifar100,
}

impl CifarKind {
    /// Label bytes before the pixels of every record.
    pub fn label_bytes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 1,
            CifarKind::Cifar100 => 2,
        }
    }
    /// Bytes per record.
    pub fn record_size(self) -> usize {
        self.label_bytes() + PIXELS
    }
    /// Number of (fine) classes.
    pub fn classes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 10,
            CifarKind::Cifar100 => 100,
        }
    }
    fn fetch_name(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "cifar10",
            CifarKind::Cifar100 => "cifar100",
        }
    }
    /// Folder the official archive extracts to.
    fn archive_folder(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "cifar-10-batches-bin",
            CifarKind::Cifar100 => "cifar-100-binary",
        }
    }
}

/// Appends the records of one CIFAR binary file to `pixels` (as HWC) and
/// `labels`.
pub fn read_cifar_file(
    path: &Path,
    kind: CifarKind,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<i64>,
) -> Result<()> {
    let bytes = read_maybe_gzip(path)?;
    parse_cifar_bytes(path, &bytes, kind, pixels, labels)
}

/// [`read_cifar_file`] on bytes already in memory (plain or gzipped): `path`
/// is only named in errors. Reads no file.
pub fn parse_cifar(
    path: &Path,
    raw: Vec<u8>,
    kind: CifarKind,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<i64>,
) -> Result<()> {
    let bytes = decode_maybe_gzip(path, raw)?;
    parse_cifar_bytes(path, &bytes, kind, pixels, labels)
}

fn parse_cifar_bytes(
    path: &Path,
    bytes: &[u8],
    kind: CifarKind,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<i64>,
) -> Result<()> {
    let rs = kind.record_size();
    if bytes.is_empty() {
        return Err(Error::Empty {
            path: path.to_path_buf(),
            what: "empty file, no CIFAR record".into(),
        });
    }
    if !bytes.len().is_multiple_of(rs) {
        let record = bytes.len() / rs;
        return Err(Error::CifarLength {
            path: path.to_path_buf(),
            len: bytes.len(),
            record_size: rs,
            record,
            offset: record * rs,
            have: bytes.len() % rs,
        });
    }
    let lb = kind.label_bytes();
    let hw = SIDE * SIDE;
    pixels.reserve(bytes.len() / rs * PIXELS);
    for (r, rec) in bytes.chunks_exact(rs).enumerate() {
        let label = rec[lb - 1];
        if label as usize >= kind.classes() {
            return Err(Error::BadLabel {
                path: path.to_path_buf(),
                record: r,
                offset: r * rs + lb - 1,
                label: label as u32,
                classes: kind.classes(),
            });
        }
        labels.push(label as i64);
        let chw = &rec[lb..];
        let (red, rest) = chw.split_at(hw);
        let (green, blue) = rest.split_at(hw);
        for p in 0..hw {
            pixels.extend_from_slice(&[red[p], green[p], blue[p]]);
        }
    }
    Ok(())
}

/// Class names from a text file of one name per line, if present.
fn class_names(path: &Path) -> Result<Option<Vec<String>>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    Ok((!names.is_empty()).then_some(names))
}

/// `dir`, or its sub-folder named like the official archive when the files
/// are there.
fn data_dir(dir: &Path, kind: CifarKind, probe: &str) -> Result<PathBuf> {
    if !dir.is_dir() {
        return Err(Error::missing_dataset(
            dir,
            "no such dataset folder",
            kind.fetch_name(),
        ));
    }
    let nested = dir.join(kind.archive_folder());
    if !dir.join(probe).is_file() && nested.join(probe).is_file() {
        return Ok(nested);
    }
    Ok(dir.to_path_buf())
}

fn read_files(dir: &Path, files: &[String], kind: CifarKind, name: String) -> Result<ImageDataset> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        let path = dir.join(f);
        if !path.is_file() {
            return Err(Error::missing_dataset(
                dir,
                format!("no {f} in this folder"),
                kind.fetch_name(),
            ));
        }
        read_cifar_file(&path, kind, &mut pixels, &mut labels)?;
    }
    let classes = match kind {
        CifarKind::Cifar10 => class_names(&dir.join("batches.meta.txt"))?
            .unwrap_or_else(|| CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()),
        CifarKind::Cifar100 => class_names(&dir.join("fine_label_names.txt"))?
            .unwrap_or_else(|| (0..100).map(|c| c.to_string()).collect()),
    };
    if classes.len() < kind.classes() {
        return Err(Error::Config(format!(
            "{}: {} class names for {} classes",
            dir.display(),
            classes.len(),
            kind.classes()
        )));
    }
    Ok(ImageDataset {
        name,
        height: SIDE,
        width: SIDE,
        channels: 3,
        pixels: pixels.into(),
        labels: Some(labels),
        classes,
    })
}

/// Reads one split of CIFAR-10 from `dir` (`data_batch_1.bin` ..
/// `data_batch_5.bin` for train, `test_batch.bin` for test; class names from
/// `batches.meta.txt` when present). `dir` may also be the folder that holds
/// `cifar-10-batches-bin/`.
pub fn read_cifar10(dir: &Path, split: Split) -> Result<ImageDataset> {
    let files: Vec<String> = match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".into()],
    };
    let kind = CifarKind::Cifar10;
    let dir = data_dir(dir, kind, &files[0])?;
    read_files(&dir, &files, kind, format!("cifar10/{}", split.as_str()))
}

/// Reads one split of CIFAR-100 from `dir` (`train.bin` / `test.bin`, fine
/// labels; class names from `fine_label_names.txt` when present). `dir` may
/// also be the folder that holds `cifar-100-binary/`.
pub fn read_cifar100(dir: &Path, split: Split) -> Result<ImageDataset> {
    let files = vec![format!("{}.bin", split.as_str())];
    let kind = CifarKind::Cifar100;
    let dir = data_dir(dir, kind, &files[0])?;
    read_files(&dir, &files, kind, format!("cifar100/{}", split.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` records; record r has label r % 10 and pixel (c, p) = (r + 3c + p) % 256.
    fn records(n: usize, kind: CifarKind) -> Vec<u8> {
        let mut b = Vec::new();
        for r in 0..n {
            if kind == CifarKind::Cifar100 {
                b.push((r % 20) as u8);
            }
            b.push((r % 10) as u8);
            for c in 0..3 {
                for p in 0..SIDE * SIDE {
                    b.push(((r + 3 * c + p) % 256) as u8);
                }
            }
        }
        b
    }

    #[test]
    fn cifar10_three_records() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("test_batch.bin"),
            records(3, CifarKind::Cifar10),
        )
        .unwrap();
        let d = read_cifar10(t.path(), Split::Test).unwrap();
        assert_eq!((d.len(), d.height, d.width, d.channels), (3, 32, 32, 3));
        assert_eq!(d.labels, Some(vec![0, 1, 2]));
        assert_eq!(d.classes[0], "airplane");
        // HWC: pixel p of record 2 is (2 + p, 5 + p, 8 + p).
        let img = d.image(2);
        assert_eq!(&img[..3], &[2, 5, 8]);
        assert_eq!(&img[3 * 100..3 * 100 + 3], &[102, 105, 108]);
        // Train needs all five batches.
        let e = read_cifar10(t.path(), Split::Train)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("data_batch_1.bin") && e.contains("cargo xtask fetch cifar10"),
            "{e}"
        );
    }

    #[test]
    fn cifar10_meta_and_nested_folder() {
        let t = tempfile::tempdir().unwrap();
        let nested = t.path().join("cifar-10-batches-bin");
        std::fs::create_dir(&nested).unwrap();
        for i in 1..=5 {
            std::fs::write(
                nested.join(format!("data_batch_{i}.bin")),
                records(2, CifarKind::Cifar10),
            )
            .unwrap();
        }
        let names: String = (0..10).map(|c| format!("class{c}\n")).collect();
        std::fs::write(nested.join("batches.meta.txt"), names + "\n").unwrap();
        let d = read_cifar10(t.path(), Split::Train).unwrap();
        assert_eq!(d.len(), 10);
        assert_eq!(d.classes.len(), 10);
        assert_eq!(d.classes[3], "class3");
    }

    #[test]
    fn cifar100_fine_labels() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("train.bin"), records(3, CifarKind::Cifar100)).unwrap();
        let d = read_cifar100(t.path(), Split::Train).unwrap();
        assert_eq!(d.labels, Some(vec![0, 1, 2]));
        assert_eq!(d.classes.len(), 100);
        assert_eq!(&d.image(1)[..3], &[1, 4, 7]);
    }

    #[test]
    fn bad_length_names_the_record() {
        let t = tempfile::tempdir().unwrap();
        let mut b = records(3, CifarKind::Cifar10);
        b.truncate(b.len() - 100);
        let p = t.path().join("test_batch.bin");
        std::fs::write(&p, b).unwrap();
        let e = read_cifar10(t.path(), Split::Test).unwrap_err();
        assert!(
            matches!(
                e,
                Error::CifarLength {
                    record: 2,
                    offset: 6146,
                    have: 2973,
                    ..
                }
            ),
            "{e}"
        );
        let s = e.to_string();
        assert!(
            s.contains("test_batch.bin") && s.contains("record 2") && s.contains("3073"),
            "{s}"
        );
    }

    #[test]
    fn bad_label_names_the_record() {
        let t = tempfile::tempdir().unwrap();
        let mut b = records(3, CifarKind::Cifar10);
        b[3073] = 42;
        std::fs::write(t.path().join("test_batch.bin"), b).unwrap();
        let s = read_cifar10(t.path(), Split::Test).unwrap_err().to_string();
        assert!(s.contains("record 1") && s.contains("label 42"), "{s}");
    }

    #[test]
    fn in_memory_gzip_matches_the_file() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("train.bin");
        std::fs::write(&path, records(2, CifarKind::Cifar100)).unwrap();
        let (mut p1, mut l1) = (Vec::new(), Vec::new());
        read_cifar_file(&path, CifarKind::Cifar100, &mut p1, &mut l1).unwrap();
        let gz = crate::data::idx::fixture::gzip(&records(2, CifarKind::Cifar100));
        let (mut p2, mut l2) = (Vec::new(), Vec::new());
        parse_cifar(&path, gz, CifarKind::Cifar100, &mut p2, &mut l2).unwrap();
        assert_eq!((&p1, &l1), (&p2, &l2));
        let e = parse_cifar(&path, vec![1; 10], CifarKind::Cifar100, &mut p2, &mut l2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("train.bin") && e.contains("record 0"), "{e}");
    }
}
