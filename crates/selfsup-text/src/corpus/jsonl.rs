//! JSON Lines: one document per record, its text in a named string field.
use super::{decode_utf8, files_under, Document, ReadReport};
use crate::error::{TextError, TextResult};
use std::path::Path;

/// Parses the content of ONE JSON Lines file from memory (no filesystem):
/// `name` is what errors and document ids (`name:line`) name. Records whose
/// text is empty are skipped and counted; no record at all is not an error
/// here (the folder reader decides).
pub fn parse_jsonl(
    bytes: &[u8],
    name: &str,
    text_field: &str,
    lossy: bool,
) -> TextResult<(Vec<Document>, ReadReport)> {
    let mut report = ReadReport::default();
    let mut docs = Vec::new();
    jsonl_documents(
        Path::new(name),
        bytes.to_vec(),
        text_field,
        lossy,
        &mut docs,
        &mut report,
    )?;
    report.documents = docs.len();
    Ok((docs, report))
}

/// The records of one file, appended to `docs`.
fn jsonl_documents(
    file: &Path,
    bytes: Vec<u8>,
    field: &str,
    lossy: bool,
    docs: &mut Vec<Document>,
    report: &mut ReadReport,
) -> TextResult<()> {
    report.files += 1;
    let (text, replaced) = decode_utf8(file, bytes, lossy)?;
    report.lossy_files += usize::from(replaced);
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| TextError::Jsonl {
            path: file.to_path_buf(),
            line: i + 1,
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        let text = value
            .get(field)
            .ok_or_else(|| bad(format!("no \"{field}\" field (set text_field)")))?
            .as_str()
            .ok_or_else(|| bad(format!("\"{field}\" is not a string")))?;
        let id = format!("{}:{}", file.display(), i + 1);
        if text.trim().is_empty() {
            report.skip_empty(&id);
            continue;
        }
        docs.push(Document {
            id,
            text: text.to_string(),
            label: None,
        });
    }
    Ok(())
}

/// Reads every `.jsonl` file under `path` (or `path` itself; each real file
/// once, however many links lead to it).
pub fn read_jsonl(
    path: &Path,
    field: &str,
    lossy: bool,
) -> TextResult<(Vec<Document>, ReadReport)> {
    let mut report = ReadReport::default();
    let mut docs = Vec::new();
    let files: Vec<_> = files_under(path, &mut report)?
        .into_iter()
        .filter(|p| path.is_file() || p.extension().is_some_and(|e| e == "jsonl" || e == "json"))
        .collect();
    for file in files {
        let bytes = std::fs::read(&file).map_err(|e| TextError::io(&file, e))?;
        jsonl_documents(&file, bytes, field, lossy, &mut docs, &mut report)?;
    }
    report.documents = docs.len();
    if docs.is_empty() {
        return Err(TextError::Empty(format!(
            "{}: no JSON Lines record with text",
            path.display()
        )));
    }
    Ok((docs, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_records_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.jsonl");
        std::fs::write(
            &f,
            "{\"text\": \"one\"}\n\n{\"text\": \"\"}\n{\"text\": \"two\", \"x\": 1}\n",
        )
        .unwrap();
        let (docs, report) = read_jsonl(&f, "text", false).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].text, "two");
        assert_eq!(report.empty_skipped, 1);
        std::fs::write(&f, "{\"text\": \"one\"}\n{\"body\": \"two\"}\n").unwrap();
        let err = read_jsonl(&f, "text", false).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("\"text\""), "{err}");
        std::fs::write(&f, "{\"text\": \"one\"\n").unwrap();
        let err = read_jsonl(&f, "text", false).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("not JSON"), "{err}");
    }
}
