//! SpamAssassin's public corpus: folders of raw e-mails; folders whose name
//! starts with `spam` hold spam, the others ham. A document is the body of
//! one mail (after the header block). Mail is not always UTF-8, so invalid
//! bytes are replaced and counted.
use super::{decode_utf8, files_under, Document, ReadReport};
use crate::error::{TextError, TextResult};
use std::path::Path;

/// Label of a spam folder.
pub const SPAM: &str = "spam";
/// Label of a ham folder.
pub const HAM: &str = "ham";

/// The body of a raw e-mail: everything after the first empty line (the
/// whole text when there is none).
fn body(mail: &str) -> &str {
    let mail = mail.trim_start_matches(['\r', '\n']);
    for sep in ["\r\n\r\n", "\n\n"] {
        if let Some(i) = mail.find(sep) {
            return &mail[i + sep.len()..];
        }
    }
    mail
}

/// Parses ONE raw e-mail from memory (no filesystem): `name` is the
/// document id and what errors name; `spam` picks the label ([`SPAM`] or
/// [`HAM`]). Invalid UTF-8 is replaced and counted. Gives no document when
/// the body is empty (counted in the report).
pub fn parse_spam_assassin(
    bytes: &[u8],
    name: &str,
    spam: bool,
) -> TextResult<(Vec<Document>, ReadReport)> {
    let mut report = ReadReport::default();
    let doc = mail_document(Path::new(name), bytes.to_vec(), spam, &mut report)?;
    Ok((doc.into_iter().collect(), report))
}

fn mail_document(
    file: &Path,
    bytes: Vec<u8>,
    spam: bool,
    report: &mut ReadReport,
) -> TextResult<Option<Document>> {
    report.files += 1;
    let (text, replaced) = decode_utf8(file, bytes, true)?;
    report.lossy_files += usize::from(replaced);
    let text = body(&text).replace("\r\n", "\n");
    if text.trim().is_empty() {
        report.skip_empty(&file.display().to_string());
        return Ok(None);
    }
    report.documents += 1;
    let label = if spam { SPAM } else { HAM };
    Ok(Some(Document {
        id: file.display().to_string(),
        text,
        label: Some(label.to_string()),
    }))
}

/// Reads the mail folders under `path` (`spam*` = spam, others = ham; each
/// real file once, however many links lead to it).
/// Files named `cmds` (the original archive's move list) are not mail and
/// are skipped and counted as empty.
pub fn read_spam_assassin(path: &Path) -> TextResult<(Vec<Document>, ReadReport)> {
    let mut report = ReadReport::default();
    let mut docs = Vec::new();
    for file in files_under(path, &mut report)? {
        let folder = file
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if name == "cmds" {
            report.files += 1;
            report.skip_empty(&file.display().to_string());
            continue;
        }
        let bytes = std::fs::read(&file).map_err(|e| TextError::io(&file, e))?;
        docs.extend(mail_document(
            &file,
            bytes,
            folder.starts_with("spam"),
            &mut report,
        )?);
    }
    report.documents = docs.len();
    if docs.is_empty() {
        return Err(TextError::Empty(format!(
            "{}: no e-mail found",
            path.display()
        )));
    }
    Ok((docs, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["spam-1", "easy-ham-1"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        std::fs::write(
            dir.path().join("spam-1/0001"),
            b"From: x\r\nSubject: win\r\n\r\nBuy n\xf6w\r\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("easy-ham-1/0001"),
            "From: y\nSubject: hi\n\nSee you at lunch.\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("easy-ham-1/0002"), "From: z\n\n \n").unwrap();
        let (docs, report) = read_spam_assassin(dir.path()).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].label.as_deref(), Some(HAM));
        assert_eq!(docs[0].text, "See you at lunch.\n");
        assert_eq!(docs[1].label.as_deref(), Some(SPAM));
        assert_eq!(docs[1].text, "Buy n\u{FFFD}w\n");
        assert_eq!((report.lossy_files, report.empty_skipped), (1, 1));
    }
}
