//! Documents -> fixed-length sequences: `[CLS] tokens... [SEP]`, padded.
//!
//! Pre-training packs: the documents of a split are tokenized, joined with
//! `[SEP]` between documents and cut into sequences of `max_len`, so no token
//! is dropped and a line longer than a sequence continues in the next one
//! (counted in [`Packed::long_lines`]). Downstream evaluation chunks each
//! document on its own ([`chunk_document`]).
use crate::corpus::Document;
use crate::error::TextResult;
use crate::tokenizer::TextTokenizer;
use rayon::prelude::*;
use serde::Serialize;

/// Sequences of `max_len` token ids, row-major.
#[derive(Debug, Clone)]
pub struct Packed {
    /// `[n, max_len]` ids, row-major.
    pub ids: Vec<i64>,
    pub max_len: usize,
    pub stats: PackStats,
}

/// What packing counted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PackStats {
    pub documents: usize,
    pub sequences: usize,
    /// Tokens of text (no [CLS] / [SEP] / [PAD]).
    pub text_tokens: usize,
    /// Lines longer than one sequence: split across consecutive sequences.
    pub long_lines: usize,
    /// Tokens mapped to [UNK].
    pub unknown_tokens: usize,
}

impl Packed {
    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.ids.len() / self.max_len.max(1)
    }
    /// Whether there is no sequence.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    /// Sequence `i`.
    pub fn row(&self, i: usize) -> &[i64] {
        &self.ids[i * self.max_len..(i + 1) * self.max_len]
    }
    /// The first `n` sequences.
    pub fn take(&self, n: usize) -> Packed {
        let n = n.min(self.len());
        let mut p = self.clone();
        p.ids.truncate(n * self.max_len);
        p.stats.sequences = n;
        p
    }
}

/// Tokens of one document, line by line; returns the ids and how many lines
/// were longer than `line_limit` tokens.
fn encode_document(
    tok: &TextTokenizer,
    doc: &Document,
    line_limit: usize,
) -> TextResult<(Vec<u32>, usize)> {
    let mut ids = Vec::new();
    let mut long = 0;
    for line in doc.text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let l = tok.encode(line)?;
        long += usize::from(l.len() > line_limit);
        ids.extend(l);
    }
    Ok((ids, long))
}

fn push_sequence(out: &mut Vec<i64>, tok: &TextTokenizer, body: &[i64], max_len: usize) {
    out.push(tok.cls_id);
    out.extend_from_slice(body);
    out.push(tok.sep_id);
    out.extend(std::iter::repeat_n(tok.pad_id, max_len - body.len() - 2));
}

/// Packs `docs` into sequences of `max_len` (at least 8) tokens.
pub fn pack(docs: &[Document], tok: &TextTokenizer, max_len: usize) -> TextResult<Packed> {
    assert!(max_len >= 8, "max_len must be at least 8");
    let body = max_len - 2;
    let encoded: Vec<(Vec<u32>, usize)> = docs
        .par_iter()
        .map(|d| encode_document(tok, d, body))
        .collect::<TextResult<_>>()?;
    let mut stats = PackStats {
        documents: docs.len(),
        ..PackStats::default()
    };
    let mut stream: Vec<i64> = Vec::new();
    for (i, (ids, long)) in encoded.iter().enumerate() {
        stats.long_lines += long;
        stats.text_tokens += ids.len();
        stats.unknown_tokens += ids.iter().filter(|&&t| i64::from(t) == tok.unk_id).count();
        if i > 0 && !ids.is_empty() {
            stream.push(tok.sep_id);
        }
        stream.extend(ids.iter().map(|&t| i64::from(t)));
    }
    let mut out = Vec::with_capacity((stream.len() / body + 1) * max_len);
    for chunk in stream.chunks(body) {
        push_sequence(&mut out, tok, chunk, max_len);
    }
    stats.sequences = out.len() / max_len;
    Ok(Packed {
        ids: out,
        max_len,
        stats,
    })
}

/// The sequences of one document on its own (at most `max_chunks` of them).
pub fn chunk_document(
    doc: &Document,
    tok: &TextTokenizer,
    max_len: usize,
    max_chunks: usize,
) -> TextResult<Vec<Vec<i64>>> {
    let (ids, _) = encode_document(tok, doc, max_len - 2)?;
    let ids: Vec<i64> = ids.into_iter().map(i64::from).collect();
    Ok(ids
        .chunks(max_len - 2)
        .take(max_chunks)
        .map(|c| {
            let mut row = Vec::with_capacity(max_len);
            push_sequence(&mut row, tok, c, max_len);
            row
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::TextTokenizer;

    fn doc(id: &str, text: &str) -> Document {
        Document {
            id: id.into(),
            text: text.into(),
            label: None,
        }
    }

    #[test]
    fn packing_keeps_every_token_and_counts_long_lines() {
        let docs = vec![
            doc("a", "the cat sat on the mat\nthe dog"),
            doc("b", &"the cat sat on the mat ".repeat(5)),
        ];
        let tok = TextTokenizer::train(&docs, 60, 1, true).unwrap();
        let p = pack(&docs, &tok, 10).unwrap();
        let body: Vec<i64> = (0..p.len())
            .flat_map(|i| {
                let r = p.row(i);
                assert_eq!(r[0], tok.cls_id);
                r[1..]
                    .iter()
                    .copied()
                    .filter(|&t| t != tok.pad_id)
                    .collect::<Vec<_>>()
            })
            .collect();
        // 8 from doc a, 1 separator, 30 from doc b; each row ends with [SEP].
        assert_eq!(p.stats.text_tokens, 38);
        assert_eq!(body.len(), 38 + 1 + p.len());
        assert_eq!(p.stats.long_lines, 1);
        assert_eq!(p.len(), 5); // 39 tokens in rows of 8
        assert_eq!(p.row(4)[9], tok.pad_id);
        let chunks = chunk_document(&docs[1], &tok, 10, 2).unwrap();
        assert_eq!(chunks.len(), 2);
        assert!(chunks.iter().all(|c| c.len() == 10));
    }
}
