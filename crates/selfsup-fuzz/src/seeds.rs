//! Seed helpers: the dataset cache (real files, when fetched), the two-file
//! input format, and small valid files built in code.
use std::path::{Path, PathBuf};

/// Bytes of a real file kept as a seed (the head of bigger files), so
/// executions stay fast.
pub const SEED_CAP: usize = 64 << 10;
/// Real files taken per dataset.
pub const REAL_FILES: usize = 6;

/// Separates the files of a multi-file input (IDX images + labels, captions +
/// image, ...). Mutations may destroy it; the input is then one file.
pub const SPLIT: &[u8] = b"\n%%selfsup-fuzz-next-file%%\n";

/// `parts` joined with [`SPLIT`].
pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(SPLIT);
        }
        out.extend_from_slice(p);
    }
    out
}

/// The first two files of an input made by [`join`] (the second empty when
/// there is no separator).
pub fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    match find(data, SPLIT) {
        Some(i) => (&data[..i], &data[i + SPLIT.len()..]),
        None => (data, &[]),
    }
}

/// The first `n` files of an input made by [`join`] (missing ones empty; the
/// last holds the rest).
pub fn split_n(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(n);
    let mut rest = data;
    while out.len() + 1 < n {
        match find(rest, SPLIT) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + SPLIT.len()..];
            }
            None => break,
        }
    }
    out.push(rest);
    while out.len() < n {
        out.push(&[]);
    }
    out
}

/// The files of a folder of the workspace (test fixtures), by name, when the
/// binary runs from a checkout.
pub fn workspace_file(rel: &str) -> Option<Vec<u8>> {
    head(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(rel),
        SEED_CAP,
    )
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The dataset cache: `$SELFSUP_CACHE`, else `$XDG_CACHE_HOME/selfsup`, else
/// `~/.cache/selfsup` (as xtask's `fetch` fills it), then `datasets/`.
pub fn datasets_dir() -> PathBuf {
    let cache = if let Some(d) = std::env::var_os("SELFSUP_CACHE") {
        PathBuf::from(d)
    } else if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        PathBuf::from(d).join("selfsup")
    } else {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".cache/selfsup")
    };
    cache.join("datasets")
}

/// Up to `max` files under `datasets/<name>/` that `keep` accepts, spread
/// evenly over the sorted list; none when the dataset is not fetched.
pub fn dataset_files(name: &str, keep: impl Fn(&Path) -> bool, max: usize) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() && depth < 6 {
                walk(&p, out, depth + 1);
            } else if p.is_file() {
                out.push(p);
            }
        }
    }
    let mut all = Vec::new();
    walk(&datasets_dir().join(name), &mut all, 0);
    all.retain(|p| keep(p));
    if all.len() <= max {
        return all;
    }
    let step = all.len() as f64 / max as f64;
    (0..max)
        .map(|i| all[(i as f64 * step) as usize].clone())
        .collect()
}

/// The first `cap` bytes of `path`.
pub fn head(path: &Path, cap: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let mut out = Vec::new();
    f.take(cap as u64).read_to_end(&mut out).ok()?;
    Some(out)
}

/// Heads of up to [`REAL_FILES`] files of a dataset with one of `exts`.
pub fn real(name: &str, exts: &[&str]) -> Vec<Vec<u8>> {
    dataset_files(
        name,
        |p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.iter().any(|x| x.eq_ignore_ascii_case(e)))
        },
        REAL_FILES,
    )
    .iter()
    .filter_map(|p| head(p, SEED_CAP))
    .collect()
}

/// Heads of up to [`REAL_FILES`] files of a dataset whose file name passes `keep`.
pub fn real_named(name: &str, keep: impl Fn(&str) -> bool) -> Vec<Vec<u8>> {
    dataset_files(
        name,
        |p| p.file_name().and_then(|n| n.to_str()).is_some_and(&keep),
        REAL_FILES,
    )
    .iter()
    .filter_map(|p| head(p, SEED_CAP))
    .collect()
}

/// Gzip of `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = e.write_all(bytes);
    e.finish().unwrap_or_default()
}

/// Gunzip of `bytes` (at most `cap` bytes), when it is gzip.
pub fn gunzip(bytes: &[u8], cap: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(cap as u64)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// Text files of the workspace's `configs/<sub>/` folder (the presets), when
/// the binary runs from a checkout.
pub fn workspace_configs(sub: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs")
        .join(sub);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files.iter().filter_map(|p| head(p, SEED_CAP)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_and_split() {
        let j = join(&[b"abc", b"de"]);
        assert_eq!(split2(&j), (&b"abc"[..], &b"de"[..]));
        assert_eq!(split2(b"plain"), (&b"plain"[..], &b""[..]));
        let j = join(&[b"a", b"b", b"c"]);
        assert_eq!(split_n(&j, 2), vec![&b"a"[..], &j[1 + SPLIT.len()..]]);
        assert_eq!(split_n(&j, 4), vec![&b"a"[..], b"b", b"c", b""]);
    }
}
