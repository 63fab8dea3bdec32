//! Captions as the text tower reads them: `[CLS] pieces [SEP]` rows of at
//! most `max_len` tokens (longer captions are cut, `[SEP]` kept), padded per
//! batch to the longest row with an attention mask; prompt templates.
use selfsup_core::Result;
use selfsup_text::corpus::Document;
use selfsup_text::tokenizer::TextTokenizer;
use tch::Tensor;

/// `template` with `{}` (or `{label}`) replaced by `label`.
pub fn fill(template: &str, label: &str) -> String {
    if template.contains("{label}") {
        template.replace("{label}", label)
    } else {
        template.replace("{}", label)
    }
}

/// The token row of `text`: `[CLS] ... [SEP]`, at most `max_len` ids.
pub fn tokenize(tok: &TextTokenizer, text: &str, max_len: usize) -> Result<Vec<i64>> {
    let ids = tok.encode(text)?;
    let keep = ids.len().min(max_len.saturating_sub(2));
    let mut row = Vec::with_capacity(keep + 2);
    row.push(tok.cls_id);
    row.extend(ids[..keep].iter().map(|&i| i64::from(i)));
    row.push(tok.sep_id);
    Ok(row)
}

/// Token rows of many texts.
pub fn tokenize_all(
    tok: &TextTokenizer,
    texts: &[String],
    max_len: usize,
) -> Result<Vec<Vec<i64>>> {
    texts.iter().map(|t| tokenize(tok, t, max_len)).collect()
}

/// `[B, L]` ids (padded with `pad_id` to the longest row) and `[B, L]`
/// attention (1 = token, 0 = padding), both int64.
pub fn pad_batch(rows: &[&[i64]], pad_id: i64) -> (Tensor, Tensor) {
    let l = rows.iter().map(|r| r.len()).max().unwrap_or(1).max(1);
    let mut ids = vec![pad_id; rows.len() * l];
    let mut att = vec![0i64; rows.len() * l];
    for (i, r) in rows.iter().enumerate() {
        ids[i * l..i * l + r.len()].copy_from_slice(r);
        att[i * l..i * l + r.len()].fill(1);
    }
    let shape = [rows.len() as i64, l as i64];
    (
        Tensor::from_slice(&ids).view(shape),
        Tensor::from_slice(&att).view(shape),
    )
}

/// Captions as documents, to train a WordPiece vocabulary on.
pub fn as_documents(captions: &[Vec<String>]) -> Vec<Document> {
    captions
        .iter()
        .enumerate()
        .map(|(i, c)| Document {
            id: format!("caption{i}"),
            text: c.join("\n"),
            label: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_and_padding() {
        assert_eq!(fill("a photo of a {}", "bag"), "a photo of a bag");
        assert_eq!(fill("an emoji of {label}", "a cat"), "an emoji of a cat");
        let (ids, att) = pad_batch(&[&[2, 7, 3], &[2, 3]], 0);
        assert_eq!(
            Vec::<i64>::try_from(ids.view([-1])).unwrap(),
            vec![2, 7, 3, 2, 3, 0]
        );
        assert_eq!(
            Vec::<i64>::try_from(att.view([-1])).unwrap(),
            vec![1, 1, 1, 1, 1, 0]
        );
    }

    #[test]
    fn rows_are_cut_to_max_len_keeping_sep() {
        let docs = as_documents(&vec![vec!["red green blue red green blue".to_string()]; 3]);
        let tok = TextTokenizer::train(&docs, 100, 1, true).unwrap();
        let row = tokenize(&tok, "red green blue red", 4).unwrap();
        assert_eq!(row.len(), 4);
        assert_eq!((row[0], row[3]), (tok.cls_id, tok.sep_id));
        let full = tokenize(&tok, "red green", 16).unwrap();
        assert_eq!(full.len(), 4);
    }
}
