//! A small reader of the IDX files Fashion-MNIST ships in (gzip or plain):
//! `u8` images `[N, rows, cols]` and `u8` labels `[N]`. Every size the
//! header declares is checked against the bytes present and against
//! [`MAX_ITEMS`] before anything is allocated.
use selfsup_core::{Error, Result};
use std::io::Read;
use std::path::Path;

/// The most items (images or labels) one file may declare.
pub const MAX_ITEMS: usize = 10_000_000;
/// The largest image side one file may declare.
pub const MAX_SIDE: usize = 4096;
/// The most bytes a (decompressed) IDX file may hold.
pub const MAX_BYTES: u64 = 1 << 32;

/// Grey images of one size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    pub rows: usize,
    pub cols: usize,
    /// `rows * cols` bytes per image, image after image.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.pixels.len() / (self.rows * self.cols).max(1)
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pixels of image `i` (`None` past the end).
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let n = self.rows * self.cols;
        self.pixels.get(i * n..(i + 1) * n)
    }
}

/// The bytes of `path`, gunzipped when the name ends in `.gz`; at most
/// [`MAX_BYTES`].
fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    let gz = path.extension().is_some_and(|e| e == "gz");
    let read = if gz {
        flate2::read::GzDecoder::new(file)
            .take(MAX_BYTES + 1)
            .read_to_end(&mut out)
    } else {
        file.take(MAX_BYTES + 1).read_to_end(&mut out)
    };
    read.map_err(|e| Error::Data(format!("{}: not a readable IDX file: {e}", path.display())))?;
    if out.len() as u64 > MAX_BYTES {
        return Err(Error::Data(format!(
            "{}: more than {MAX_BYTES} bytes, larger than any IDX file this reader takes",
            path.display()
        )));
    }
    Ok(out)
}

fn header(bytes: &[u8], dims: usize, origin: &str) -> Result<Vec<usize>> {
    let need = 4 + 4 * dims;
    if bytes.len() < need {
        return Err(Error::Data(format!(
            "{origin}: {} bytes, shorter than an IDX header of {need} bytes",
            bytes.len()
        )));
    }
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 || bytes[3] as usize != dims {
        return Err(Error::Data(format!(
            "{origin}: magic {:02x}{:02x}{:02x}{:02x}, expected 000008{dims:02x} (unsigned bytes, \
             {dims} dimension(s)): not an IDX file of this kind",
            bytes[0], bytes[1], bytes[2], bytes[3]
        )));
    }
    Ok((0..dims)
        .map(|d| {
            let o = 4 + 4 * d;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect())
}

/// Parses IDX image bytes (`origin` names them in errors).
pub fn parse_images(bytes: &[u8], origin: &str) -> Result<IdxImages> {
    let dims = header(bytes, 3, origin)?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    if n > MAX_ITEMS || rows == 0 || cols == 0 || rows > MAX_SIDE || cols > MAX_SIDE {
        return Err(Error::Data(format!(
            "{origin}: declares {n} images of {rows}x{cols}: give at most {MAX_ITEMS} images of \
             1 to {MAX_SIDE} pixels a side"
        )));
    }
    let body = &bytes[16..];
    let want = n * rows * cols;
    if body.len() != want {
        return Err(Error::Data(format!(
            "{origin}: declares {n} images of {rows}x{cols} ({want} bytes) but holds {} bytes: \
             the file is truncated or not what its header says; fetch it again",
            body.len()
        )));
    }
    Ok(IdxImages {
        rows,
        cols,
        pixels: body.to_vec(),
    })
}

/// Parses IDX label bytes (`origin` names them in errors).
pub fn parse_labels(bytes: &[u8], origin: &str) -> Result<Vec<u8>> {
    let dims = header(bytes, 1, origin)?;
    let n = dims[0];
    if n > MAX_ITEMS {
        return Err(Error::Data(format!(
            "{origin}: declares {n} labels, more than {MAX_ITEMS}"
        )));
    }
    let body = &bytes[8..];
    if body.len() != n {
        return Err(Error::Data(format!(
            "{origin}: declares {n} labels but holds {} bytes: the file is truncated; fetch it again",
            body.len()
        )));
    }
    Ok(body.to_vec())
}

/// Reads an IDX image file.
pub fn read_images(path: &Path) -> Result<IdxImages> {
    parse_images(&read_bytes(path)?, &path.display().to_string())
}

/// Reads an IDX label file.
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    parse_labels(&read_bytes(path)?, &path.display().to_string())
}

/// Images with their labels (one per image).
#[derive(Debug, Clone)]
pub struct Labelled {
    pub images: IdxImages,
    pub labels: Vec<u8>,
}

/// One Fashion-MNIST split under `dir`: `train` or `t10k` (`.gz` or not).
pub fn read_split(dir: &Path, split: &str) -> Result<Labelled> {
    let find = |stem: &str| {
        let gz = dir.join(format!("{stem}.gz"));
        if gz.is_file() {
            gz
        } else {
            dir.join(stem)
        }
    };
    let images_path = find(&format!("{split}-images-idx3-ubyte"));
    let labels_path = find(&format!("{split}-labels-idx1-ubyte"));
    for p in [&images_path, &labels_path] {
        if !p.is_file() {
            return Err(Error::Data(format!(
                "{}: not there: the Moving Fashion-MNIST generator reads Fashion-MNIST's IDX \
                 files; fetch them with `cargo xtask fetch fashion-mnist` or point [data] \
                 fashion_mnist (or --data) at the folder that holds them",
                p.display()
            )));
        }
    }
    let images = read_images(&images_path)?;
    let labels = read_labels(&labels_path)?;
    if labels.len() != images.len() {
        return Err(Error::Data(format!(
            "{} holds {} labels but {} holds {} images: the two files must be of one split",
            labels_path.display(),
            labels.len(),
            images_path.display(),
            images.len()
        )));
    }
    if let Some(bad) = labels.iter().position(|&l| l > 9) {
        return Err(Error::Data(format!(
            "{}: label {} of record {bad} is not a Fashion-MNIST class (0 to 9)",
            labels_path.display(),
            labels[bad]
        )));
    }
    Ok(Labelled { images, labels })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IDX bytes of `n` images `rows x cols` whose pixel `k` of image `i` is `i + k`.
    pub(crate) fn images_bytes(n: usize, rows: usize, cols: usize) -> Vec<u8> {
        let mut b = vec![0, 0, 8, 3];
        for d in [n, rows, cols] {
            b.extend_from_slice(&(d as u32).to_be_bytes());
        }
        for i in 0..n {
            for k in 0..rows * cols {
                b.push((i + k) as u8);
            }
        }
        b
    }

    #[test]
    fn images_and_labels_parse_and_bad_headers_are_refused() {
        let img = parse_images(&images_bytes(3, 2, 4), "x").unwrap();
        assert_eq!((img.len(), img.rows, img.cols), (3, 2, 4));
        assert_eq!(img.image(2).unwrap(), &[2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(img.image(3).is_none());
        let mut truncated = images_bytes(3, 2, 4);
        truncated.pop();
        let e = parse_images(&truncated, "f.idx").unwrap_err().to_string();
        assert!(e.contains("f.idx") && e.contains("truncated"), "{e}");
        let mut huge = images_bytes(1, 2, 2);
        huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_images(&huge, "h")
            .unwrap_err()
            .to_string()
            .contains("at most"));
        let e = parse_labels(&[0, 0, 8, 3, 0, 0, 0, 1, 5], "l").unwrap_err();
        assert!(e.to_string().contains("magic"), "{e}");
        assert_eq!(
            parse_labels(&[0, 0, 8, 1, 0, 0, 0, 2, 5, 7], "l").unwrap(),
            vec![5, 7]
        );
        assert!(parse_labels(&[0, 0, 8], "l").is_err());
    }
}
