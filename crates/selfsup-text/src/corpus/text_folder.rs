//! Plain text: a `.txt` file or a folder of them; one file is one document.
use super::{decode_utf8, files_under, Document, ReadReport};
use crate::error::{TextError, TextResult};
use std::path::Path;

/// Parses the content of ONE `.txt` file from memory (no filesystem):
/// `name` is the document id and what errors name. Gives no document when
/// the text is empty or whitespace (counted in the report).
pub fn parse_text(
    bytes: &[u8],
    name: &str,
    lossy: bool,
) -> TextResult<(Vec<Document>, ReadReport)> {
    let mut report = ReadReport::default();
    let doc = text_document(Path::new(name), bytes.to_vec(), lossy, &mut report)?;
    Ok((doc.into_iter().collect(), report))
}

/// One file's document (decoded in place: `bytes` is not copied).
fn text_document(
    file: &Path,
    bytes: Vec<u8>,
    lossy: bool,
    report: &mut ReadReport,
) -> TextResult<Option<Document>> {
    report.files += 1;
    let (text, replaced) = decode_utf8(file, bytes, lossy)?;
    report.lossy_files += usize::from(replaced);
    if text.trim().is_empty() {
        report.skip_empty(&file.display().to_string());
        return Ok(None);
    }
    let text = if text.contains("\r\n") {
        text.replace("\r\n", "\n")
    } else {
        text
    };
    report.documents += 1;
    Ok(Some(Document {
        id: file.display().to_string(),
        text,
        label: None,
    }))
}

/// Reads every `.txt` file under `path` (recursively, sorted; each real
/// file once, however many links lead to it).
pub fn read_text_folder(path: &Path, lossy: bool) -> TextResult<(Vec<Document>, ReadReport)> {
    let mut report = ReadReport::default();
    let mut docs = Vec::new();
    let files: Vec<_> = files_under(path, &mut report)?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("txt")))
        .collect();
    if files.is_empty() {
        return Err(TextError::Empty(format!(
            "{}: no .txt file found",
            path.display()
        )));
    }
    for file in files {
        let bytes = std::fs::read(&file).map_err(|e| TextError::io(&file, e))?;
        docs.extend(text_document(&file, bytes, lossy, &mut report)?);
    }
    report.documents = docs.len();
    Ok((docs, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counts_empty_and_rejects_bad_utf8() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a.txt"), "Hello world.\r\nSecond line.").unwrap();
        std::fs::write(dir.path().join("sub/b.txt"), "Another document.").unwrap();
        std::fs::write(dir.path().join("empty.txt"), "  \n").unwrap();
        std::fs::write(dir.path().join("notes.md"), "ignored").unwrap();
        let (docs, report) = read_text_folder(dir.path(), false).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].text, "Hello world.\nSecond line.");
        assert_eq!(report.files, 3);
        assert_eq!(report.empty_skipped, 1);
        assert!(report.empty_examples[0].ends_with("empty.txt"));

        std::fs::write(dir.path().join("bad.txt"), b"caf\xe9").unwrap();
        let err = read_text_folder(dir.path(), false).unwrap_err().to_string();
        assert!(
            err.contains("bad.txt") && err.contains("byte offset 3"),
            "{err}"
        );
        let (docs, report) = read_text_folder(dir.path(), true).unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(report.lossy_files, 1);
    }
}
