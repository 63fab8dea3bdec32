//! Corpora: folders of `.txt`, JSON Lines, the Brown corpus and SpamAssassin
//! mail folders, read into whole documents.
//!
//! A document is the unit of the train/validation split (never a line), so
//! no text of a validation document is ever seen in training. Every problem
//! names its file (and line or byte offset); what is skipped is counted in a
//! [`ReadReport`], never dropped silently.
mod brown;
mod jsonl;
mod spam;
mod text_folder;

pub use brown::{parse_brown, parse_brown_genres, read_brown, read_brown_genres};
pub use jsonl::{parse_jsonl, read_jsonl};
pub use spam::{parse_spam_assassin, read_spam_assassin};
pub use text_folder::{parse_text, read_text_folder};

use crate::error::{TextError, TextResult};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One document: a file, a JSON record, a Brown text, an e-mail.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Where it came from (`path` or `path:line`; relative to the source
    /// when read by [`read_source`]): the key of the split.
    pub id: String,
    /// Its text, lines separated by `\n`.
    pub text: String,
    /// A class label when the source has one (Brown genre, spam / ham).
    pub label: Option<String>,
}

/// What reading a source counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReadReport {
    /// Files opened.
    pub files: usize,
    /// Documents produced.
    pub documents: usize,
    /// Empty (or whitespace-only) files and records, skipped.
    pub empty_skipped: usize,
    /// A few of those, for the log.
    pub empty_examples: Vec<String>,
    /// Files decoded with invalid UTF-8 bytes replaced (lossy mode only).
    pub lossy_files: usize,
    /// Paths skipped because they lead to a file or folder already read
    /// (symbolic links, link loops): each real file is read once.
    pub duplicates_skipped: usize,
    /// A few of those, for the log.
    pub duplicate_examples: Vec<String>,
}

impl ReadReport {
    pub(crate) fn skip_empty(&mut self, what: &str) {
        self.empty_skipped += 1;
        if self.empty_examples.len() < 5 {
            self.empty_examples.push(what.to_string());
        }
    }

    pub(crate) fn skip_duplicate(&mut self, what: &str) {
        self.duplicates_skipped += 1;
        if self.duplicate_examples.len() < 5 {
            self.duplicate_examples.push(what.to_string());
        }
    }

    /// Adds another report's counts to this one.
    pub fn merge(&mut self, other: &ReadReport) {
        self.files += other.files;
        self.documents += other.documents;
        self.empty_skipped += other.empty_skipped;
        for e in &other.empty_examples {
            if self.empty_examples.len() < 5 {
                self.empty_examples.push(e.clone());
            }
        }
        self.lossy_files += other.lossy_files;
        self.duplicates_skipped += other.duplicates_skipped;
        for e in &other.duplicate_examples {
            if self.duplicate_examples.len() < 5 {
                self.duplicate_examples.push(e.clone());
            }
        }
    }
}

/// One source of a corpus (`[[data.sources]]`), by on-disk format. Paths
/// are files or folders; relative ones are taken from the data root (`--data`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "format", deny_unknown_fields)]
pub enum SourceConfig {
    /// A `.txt` file or a folder of them (searched recursively); one file, one document.
    Text { path: PathBuf },
    /// JSON Lines: one document per record, its text under `text_field`.
    Jsonl {
        path: PathBuf,
        #[serde(default = "default_text_field")]
        text_field: String,
    },
    /// The Brown corpus: `word/tag` tokens (tags are stripped), one file per text.
    Brown { path: PathBuf },
    /// SpamAssassin folders (`spam*` are spam, the others ham); the body of each mail.
    SpamAssassin { path: PathBuf },
}

fn default_text_field() -> String {
    "text".into()
}

impl SourceConfig {
    /// The configured path.
    pub fn path(&self) -> &Path {
        match self {
            SourceConfig::Text { path }
            | SourceConfig::Jsonl { path, .. }
            | SourceConfig::Brown { path }
            | SourceConfig::SpamAssassin { path } => path,
        }
    }
}

/// Where `src` is (relative paths are taken from `root`); an error naming
/// it when there is nothing there.
pub fn source_path(src: &SourceConfig, root: &Path) -> TextResult<PathBuf> {
    let path = if src.path().is_absolute() {
        src.path().to_path_buf()
    } else {
        root.join(src.path())
    };
    if !path.exists() {
        return Err(TextError::Io {
            path: path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file or folder (fetch the registry datasets with `cargo xtask fetch <name>`, or point [[data.sources]] path / --data at your corpus)",
            ),
        });
    }
    Ok(path)
}

/// Reads one source. Document ids (the keys of every split) are relative to
/// the source (`sub/a.txt`, `m.jsonl:3`), so a corpus splits the same
/// wherever it is kept.
pub fn read_source(
    src: &SourceConfig,
    root: &Path,
    lossy: bool,
) -> TextResult<(Vec<Document>, ReadReport)> {
    let path = source_path(src, root)?;
    let (mut docs, report) = match src {
        SourceConfig::Text { .. } => read_text_folder(&path, lossy),
        SourceConfig::Jsonl { text_field, .. } => read_jsonl(&path, text_field, lossy),
        SourceConfig::Brown { .. } => read_brown(&path),
        SourceConfig::SpamAssassin { .. } => read_spam_assassin(&path),
    }?;
    let base = if path.is_file() {
        path.parent().unwrap_or(Path::new("")).to_path_buf()
    } else {
        path
    };
    for d in &mut docs {
        d.id = relative_id(&d.id, &base);
    }
    Ok((docs, report))
}

/// `id` (a path, or `path:line`) relative to `base`; unchanged when it does
/// not lie under `base`.
fn relative_id(id: &str, base: &Path) -> String {
    Path::new(id)
        .strip_prefix(base)
        .ok()
        .filter(|r| !r.as_os_str().is_empty())
        .map_or_else(|| id.to_string(), |r| r.display().to_string())
}

/// Decodes `bytes` as UTF-8 (a leading BOM is dropped). Invalid bytes are an
/// error naming the file and byte offset, or replaced when `lossy`; returns
/// whether anything was replaced.
pub fn decode_utf8(path: &Path, bytes: Vec<u8>, lossy: bool) -> TextResult<(String, bool)> {
    let bytes = match bytes.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => rest.to_vec(),
        None => bytes,
    };
    match String::from_utf8(bytes) {
        Ok(s) => Ok((s, false)),
        Err(e) if lossy => Ok((String::from_utf8_lossy(e.as_bytes()).into_owned(), true)),
        Err(e) => Err(TextError::Utf8 {
            path: path.to_path_buf(),
            offset: e.utf8_error().valid_up_to(),
        }),
    }
}

/// Every regular file under `path` (or `path` itself), sorted, hidden files
/// skipped, each real file once.
///
/// Links are followed, but every folder is listed once (by its canonical
/// path), so a link loop ends, and a file reached by several paths is read
/// once: the path without a link in it when there is one (the walk lists the
/// real tree before following links), else the smallest. The other paths are
/// counted in `report` (`duplicates_skipped`).
pub(crate) fn files_under(path: &Path, report: &mut ReadReport) -> TextResult<Vec<PathBuf>> {
    use std::collections::{BTreeMap, HashSet};
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut listed: HashSet<PathBuf> = HashSet::new();
    // Canonical path -> (whether reached through a link, the path as found).
    let mut files: BTreeMap<PathBuf, (bool, PathBuf)> = BTreeMap::new();
    // Folders to list: the real tree first, then those reached through links.
    let mut real_dirs = vec![path.to_path_buf()];
    let mut linked_dirs: Vec<PathBuf> = Vec::new();
    loop {
        let (dir, via_link) = match real_dirs.pop() {
            Some(d) => (d, false),
            None => match linked_dirs.pop() {
                Some(d) => (d, true),
                None => break,
            },
        };
        let real = std::fs::canonicalize(&dir).map_err(|e| TextError::io(&dir, e))?;
        if !listed.insert(real) {
            report.skip_duplicate(&format!(
                "{} (a link to a folder already read)",
                dir.display()
            ));
            continue;
        }
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| TextError::io(&dir, e))? {
            let entry = entry.map_err(|e| TextError::io(&dir, e))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
            entries.push((entry.path(), via_link || is_link));
        }
        entries.sort();
        // Reversed so that the stacks list folders in name order.
        for (p, linked) in entries.into_iter().rev() {
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => {
                    if linked {
                        linked_dirs.push(p);
                    } else {
                        real_dirs.push(p);
                    }
                }
                Ok(_) => {
                    let real = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
                    let keep = match files.get(&real) {
                        None => true,
                        Some((old_linked, old)) => (linked, &p) < (*old_linked, old),
                    };
                    if keep {
                        if let Some((_, old)) = files.insert(real, (linked, p)) {
                            report.skip_duplicate(&old.display().to_string());
                        }
                    } else {
                        report.skip_duplicate(&p.display().to_string());
                    }
                }
                // A broken link: kept, so that reading it names it.
                Err(_) => {
                    files.insert(p.clone(), (linked, p));
                }
            }
        }
    }
    let mut out: Vec<PathBuf> = files.into_values().map(|(_, p)| p).collect();
    out.sort();
    Ok(out)
}

/// Stable 64-bit hash: FNV-1a, then the SplitMix64 finaliser so that the
/// high bits mix too (the split must not change between Rust versions).
pub(crate) fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Whether document `id` belongs to the held-out part (`fraction` of documents,
/// decided by a hash of the id and `seed`, so it never depends on order).
pub fn is_held_out(id: &str, fraction: f64, seed: u64) -> bool {
    let h = stable_hash(&format!("{seed}:{id}"));
    (h as f64 / u64::MAX as f64) < fraction
}

/// Splits documents into (train, held out) by document. With at least two
/// documents, each side gets at least one.
pub fn split_documents(
    docs: Vec<Document>,
    fraction: f64,
    seed: u64,
) -> (Vec<Document>, Vec<Document>) {
    let (mut held, mut train): (Vec<_>, Vec<_>) = docs
        .into_iter()
        .partition(|d| is_held_out(&d.id, fraction, seed));
    if fraction > 0.0 && held.is_empty() && train.len() >= 2 {
        held.extend(train.pop());
    } else if train.is_empty() && held.len() >= 2 {
        train.extend(held.pop());
    }
    (train, held)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str) -> Document {
        Document {
            id: id.into(),
            text: "x".into(),
            label: None,
        }
    }

    #[test]
    fn ids_and_so_splits_do_not_depend_on_where_the_corpus_is_kept() {
        let write = |root: &Path| {
            std::fs::create_dir_all(root.join("corpus/sub")).unwrap();
            for i in 0..40 {
                std::fs::write(root.join(format!("corpus/sub/d{i}.txt")), "some words").unwrap();
            }
            std::fs::write(root.join("m.jsonl"), "{\"text\": \"a\"}\n").unwrap();
        };
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let b_root = b.path().join("elsewhere/deeper");
        write(a.path());
        write(&b_root);
        let text = SourceConfig::Text {
            path: "corpus".into(),
        };
        let (da, _) = read_source(&text, a.path(), false).unwrap();
        let (db, _) = read_source(&text, &b_root, false).unwrap();
        assert_eq!(da, db);
        assert!(da.iter().any(|d| d.id == "sub/d7.txt"), "{:?}", da[0].id);
        let (_, held_a) = split_documents(da, 0.2, 3);
        let (_, held_b) = split_documents(db, 0.2, 3);
        assert_eq!(held_a, held_b);
        // One file as the source: its name, then the line.
        let jsonl = SourceConfig::Jsonl {
            path: a.path().join("m.jsonl"),
            text_field: "text".into(),
        };
        let (d, _) = read_source(&jsonl, Path::new("/unused"), false).unwrap();
        assert_eq!(d[0].id, "m.jsonl:1");
    }

    #[test]
    fn split_is_by_document_and_stable() {
        let docs: Vec<_> = (0..1000).map(|i| doc(&format!("d{i}"))).collect();
        let (train, val) = split_documents(docs.clone(), 0.1, 7);
        assert_eq!(train.len() + val.len(), 1000);
        assert!((60..140).contains(&val.len()), "{} held out", val.len());
        // Order does not matter: reversed input, same split.
        let mut rev = docs;
        rev.reverse();
        let (_, val2) = split_documents(rev, 0.1, 7);
        let mut a: Vec<_> = val.iter().map(|d| d.id.clone()).collect();
        let mut b: Vec<_> = val2.iter().map(|d| d.id.clone()).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }

    #[test]
    fn two_documents_give_one_each() {
        let (t, v) = split_documents(vec![doc("a"), doc("b")], 0.01, 0);
        assert_eq!((t.len(), v.len()), (1, 1));
    }

    #[test]
    fn invalid_utf8_names_the_offset_or_is_replaced() {
        let p = Path::new("x.txt");
        let err = decode_utf8(p, b"ok \xff bad".to_vec(), false).unwrap_err();
        assert!(err.to_string().contains("byte offset 3"), "{err}");
        assert!(err.to_string().contains("x.txt"));
        let (s, replaced) = decode_utf8(p, b"ok \xff bad".to_vec(), true).unwrap();
        assert!(replaced);
        assert_eq!(s, "ok \u{FFFD} bad");
        let (s, _) = decode_utf8(p, b"\xEF\xBB\xBFhi".to_vec(), false).unwrap();
        assert_eq!(s, "hi");
    }

    #[cfg(unix)]
    #[test]
    fn links_and_link_loops_read_each_file_once() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("a.txt"), "first document").unwrap();
        std::fs::write(root.join("sub/b.txt"), "second document").unwrap();
        // A loop back to the root, a second name for a folder and a file.
        symlink(root, root.join("sub/loop")).unwrap();
        symlink(root.join("sub"), root.join("again")).unwrap();
        symlink(root.join("a.txt"), root.join("0-alias.txt")).unwrap();
        let (docs, report) = read_text_folder(root, false).unwrap();
        let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(docs.len(), 2, "{ids:?}");
        // The real paths are kept, not the links.
        assert!(
            ids[0].ends_with("/a.txt") && ids[1].ends_with("sub/b.txt"),
            "{ids:?}"
        );
        assert_eq!(report.files, 2);
        assert_eq!(
            report.duplicates_skipped, 3,
            "{:?}",
            report.duplicate_examples
        );
        assert!(report.duplicate_examples.iter().any(|e| e.contains("loop")));

        // Every other walker: JSON Lines, SpamAssassin, Brown.
        let j = tempfile::tempdir().unwrap();
        std::fs::write(j.path().join("c.jsonl"), "{\"text\": \"one\"}\n").unwrap();
        symlink(j.path(), j.path().join("loop")).unwrap();
        let (docs, report) = read_jsonl(j.path(), "text", false).unwrap();
        assert_eq!((docs.len(), report.duplicates_skipped), (1, 1));

        let m = tempfile::tempdir().unwrap();
        std::fs::create_dir(m.path().join("spam")).unwrap();
        std::fs::write(m.path().join("spam/1"), "From: x\n\nwin now\n").unwrap();
        symlink(m.path(), m.path().join("spam/loop")).unwrap();
        let (docs, report) = read_spam_assassin(m.path()).unwrap();
        assert_eq!((docs.len(), report.duplicates_skipped), (1, 1));

        let b = tempfile::tempdir().unwrap();
        std::fs::write(b.path().join("ca01"), "The/at cat/nn\n").unwrap();
        symlink(b.path().join("ca01"), b.path().join("ca02")).unwrap();
        let (docs, report) = read_brown(b.path()).unwrap();
        assert_eq!((docs.len(), report.duplicates_skipped), (1, 1));
    }

    #[test]
    fn each_format_parses_one_file_from_memory() {
        let (d, r) = parse_text(b"Hello\r\nworld", "mem.txt", false).unwrap();
        assert_eq!(
            (d[0].id.as_str(), d[0].text.as_str()),
            ("mem.txt", "Hello\nworld")
        );
        assert_eq!(r.documents, 1);
        let (d, r) = parse_text(b" \n", "blank.txt", false).unwrap();
        assert!(d.is_empty() && r.empty_skipped == 1);
        let err = parse_text(b"\xff", "bad.txt", false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad.txt") && err.contains("byte offset 0"),
            "{err}"
        );

        let (d, _) =
            parse_jsonl(b"{\"t\": \"a\"}\n\n{\"t\": \"b\"}\n", "m.jsonl", "t", false).unwrap();
        assert_eq!((d.len(), d[1].id.as_str()), (2, "m.jsonl:3"));
        let err = parse_jsonl(b"[1, 2]\n", "m.jsonl", "t", false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("m.jsonl: line 1"), "{err}");

        let (d, _) = parse_brown(b"\tThe/at cat/nn\n", "ca01", Some("news")).unwrap();
        assert_eq!(
            (d[0].text.as_str(), d[0].label.as_deref()),
            ("The cat", Some("news"))
        );
        let err = parse_brown(b"/x\n", "ca01", None).unwrap_err().to_string();
        assert!(err.contains("ca01") && err.contains("line 1"), "{err}");
        let g = parse_brown_genres(b"ca01 news\n", "cats.txt").unwrap();
        assert_eq!(g["ca01"], "news");
        assert!(parse_brown_genres(b"ca01\n", "cats.txt").is_err());

        let (d, r) = parse_spam_assassin(b"Subject: x\n\nbody \xff\n", "0001", true).unwrap();
        assert_eq!(d[0].label.as_deref(), Some(spam::SPAM));
        assert_eq!(r.lossy_files, 1);
        let (d, _) = parse_spam_assassin(b"no header break", "0002", false).unwrap();
        assert_eq!(d[0].label.as_deref(), Some(spam::HAM));

        // Garbage never panics.
        let junk: [&[u8]; 6] = [
            b"",
            b"\xEF\xBB\xBF",
            b"\r\n\r\n",
            b"{\"t\": 1}",
            b"/",
            b"\x00\xc3",
        ];
        for bytes in junk {
            for lossy in [false, true] {
                let _ = parse_text(bytes, "j", lossy);
                let _ = parse_jsonl(bytes, "j", "t", lossy);
                let _ = parse_spam_assassin(bytes, "j", lossy);
            }
            let _ = parse_brown(bytes, "j", None);
            let _ = parse_brown_genres(bytes, "j");
        }
    }
}
