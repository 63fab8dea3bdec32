//! Documents -> fixed-length sequences: `[CLS] tokens... [SEP]`, padded.
//!
//! Pre-training packs: the documents of a split are tokenized, joined with
//! `[SEP]` between documents and cut into sequences of `max_len`, so no token
//! is dropped and a line longer than a sequence continues in the next one
//! (counted in [`Packed::long_lines`]). Downstream evaluation chunks each
//! document on its own ([`chunk_document`]).
use crate::corpus::Document;
use crate::error::{TextError, TextResult};
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

/// Text handed to the tokenizer per parallel round of [`pack`], in bytes
/// (bounds what is held besides the documents and the packed ids).
const ROUND_BYTES: usize = 1 << 22;

/// One piece of text to encode, with where it sits.
struct Piece<'a> {
    doc: usize,
    /// The first piece of its line.
    line_start: bool,
    text: &'a str,
}

/// The pieces of `docs`, in order: non-blank lines cut by
/// [`TextTokenizer::pieces`].
fn pieces<'a>(docs: &'a [Document], tok: &'a TextTokenizer) -> impl Iterator<Item = Piece<'a>> {
    docs.iter().enumerate().flat_map(move |(doc, d)| {
        d.text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .flat_map(move |line| {
                tok.pieces(line).enumerate().map(move |(k, text)| Piece {
                    doc,
                    line_start: k == 0,
                    text,
                })
            })
    })
}

fn push_sequence(out: &mut Vec<i64>, tok: &TextTokenizer, body: &[i64], max_len: usize) {
    out.push(tok.cls_id);
    out.extend_from_slice(body);
    out.push(tok.sep_id);
    out.extend(std::iter::repeat_n(
        tok.pad_id,
        max_len.saturating_sub(body.len() + 2),
    ));
}

/// The smallest `max_len` packing accepts.
pub const MIN_MAX_LEN: usize = 8;

fn check_max_len(max_len: usize) -> TextResult<()> {
    if max_len < MIN_MAX_LEN {
        return Err(TextError::Config(format!(
            "[model] max_len = {max_len}: must be at least {MIN_MAX_LEN} ([CLS] and [SEP] take 2 of each sequence)"
        )));
    }
    Ok(())
}

/// Packs as tokens arrive: rows of `[CLS] body [SEP] [PAD]...`.
struct Packer<'t> {
    tok: &'t TextTokenizer,
    max_len: usize,
    body: usize,
    row: Vec<i64>,
    out: Vec<i64>,
    stats: PackStats,
    /// Document whose tokens come now (`None` before the first piece).
    doc: Option<usize>,
    /// Whether the current document has given a token yet.
    doc_started: bool,
    /// Tokens of the current line so far.
    line_tokens: usize,
}

impl Packer<'_> {
    fn token(&mut self, t: i64) {
        self.row.push(t);
        if self.row.len() == self.body {
            push_sequence(&mut self.out, self.tok, &self.row, self.max_len);
            self.row.clear();
        }
    }

    fn end_line(&mut self) {
        self.stats.long_lines += usize::from(self.line_tokens > self.body);
        self.line_tokens = 0;
    }

    fn piece(&mut self, p: &Piece<'_>, ids: &[u32]) {
        if self.doc != Some(p.doc) {
            self.doc = Some(p.doc);
            self.doc_started = false;
        }
        if p.line_start {
            self.end_line();
        }
        if !ids.is_empty() && !self.doc_started {
            self.doc_started = true;
            // Documents are joined by `[SEP]` (before every document but the
            // first one of the split that gives tokens).
            if p.doc > 0 {
                self.token(self.tok.sep_id);
            }
        }
        self.line_tokens += ids.len();
        self.stats.text_tokens += ids.len();
        for &t in ids {
            let t = i64::from(t);
            self.stats.unknown_tokens += usize::from(t == self.tok.unk_id);
            self.token(t);
        }
    }

    fn finish(mut self) -> Packed {
        self.end_line();
        if !self.row.is_empty() {
            push_sequence(&mut self.out, self.tok, &self.row, self.max_len);
        }
        self.stats.sequences = self.out.len() / self.max_len;
        Packed {
            ids: self.out,
            max_len: self.max_len,
            stats: self.stats,
        }
    }
}

/// The order of `rows` packed rows in `epoch`: a shuffle seeded by
/// `seed + salt + 7919 * epoch` (each text method keeps its own salt), the
/// same on every process of a data-parallel run.
pub(crate) fn epoch_order(rows: usize, seed: u64, salt: u64, epoch: usize) -> Vec<usize> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut idx: Vec<usize> = (0..rows).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
        seed.wrapping_add(salt).wrapping_add(epoch as u64 * 7919),
    );
    idx.shuffle(&mut rng);
    idx
}

/// Packs `docs` into sequences of `max_len` (at least [`MIN_MAX_LEN`]) tokens.
///
/// Streams: lines are encoded in pieces of at most
/// [`ENCODE_PIECE_BYTES`](crate::tokenizer::ENCODE_PIECE_BYTES) (cut where
/// the tokenizer splits anyway, so the ids are those of the whole line), a few megabytes of them at a time in parallel, and packed as they
/// come; what is held besides `docs` is the packed ids and one round.
pub fn pack(docs: &[Document], tok: &TextTokenizer, max_len: usize) -> TextResult<Packed> {
    check_max_len(max_len)?;
    let mut packer = Packer {
        tok,
        max_len,
        body: max_len - 2,
        row: Vec::with_capacity(max_len),
        out: Vec::new(),
        stats: PackStats {
            documents: docs.len(),
            ..PackStats::default()
        },
        doc: None,
        doc_started: false,
        line_tokens: 0,
    };
    let mut all = pieces(docs, tok).peekable();
    let mut round = Vec::new();
    while all.peek().is_some() {
        round.clear();
        let mut bytes = 0;
        while bytes < ROUND_BYTES {
            match all.next() {
                Some(p) => {
                    bytes += p.text.len();
                    round.push(p);
                }
                None => break,
            }
        }
        let encoded: Vec<Vec<u32>> = round
            .par_iter()
            .map(|p| tok.encode(p.text))
            .collect::<TextResult<_>>()?;
        for (p, ids) in round.iter().zip(&encoded) {
            packer.piece(p, ids);
        }
    }
    Ok(packer.finish())
}

/// The sequences of one document on its own (at most `max_chunks` of them;
/// only as much of the document as they need is encoded).
pub fn chunk_document(
    doc: &Document,
    tok: &TextTokenizer,
    max_len: usize,
    max_chunks: usize,
) -> TextResult<Vec<Vec<i64>>> {
    check_max_len(max_len)?;
    let body = max_len - 2;
    let wanted = body.saturating_mul(max_chunks);
    let mut ids: Vec<i64> = Vec::new();
    for p in pieces(std::slice::from_ref(doc), tok) {
        if ids.len() >= wanted {
            break;
        }
        ids.extend(tok.encode(p.text)?.into_iter().map(i64::from));
    }
    Ok(ids
        .chunks(body)
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

    #[test]
    fn too_short_sequences_are_an_error_not_an_abort() {
        let docs = vec![doc("a", "the cat sat on the mat")];
        let tok = TextTokenizer::train(&docs, 60, 1, true).unwrap();
        for max_len in [0, 1, 2, 7] {
            let err = pack(&docs, &tok, max_len).unwrap_err().to_string();
            assert!(
                err.contains(&format!("max_len = {max_len}")) && err.contains("at least 8"),
                "{err}"
            );
            assert!(chunk_document(&docs[0], &tok, max_len, 1).is_err());
        }
    }

    #[test]
    fn a_line_longer_than_an_encoding_piece_packs_as_if_encoded_whole() {
        // Over 2 pieces of ENCODE_PIECE_BYTES, with punctuation, a tab,
        // accents and a word the vocabulary lacks.
        let sentence = "The cat sat on the mat, the dog\tsat on the log; caf\u{e9} zebra! ";
        let line = sentence.repeat(2 * crate::tokenizer::ENCODE_PIECE_BYTES / sentence.len() + 7);
        let docs = vec![
            doc("a", "short first line"),
            doc("b", &format!("{line}\nend")),
        ];
        let tok = TextTokenizer::train(&docs[..1], 60, 1, true).unwrap();
        assert!(tok.pieces(&line).count() >= 3);
        let p = pack(&docs, &tok, 16).unwrap();
        // Expected: the whole line encoded at once, packed by hand.
        let mut stream: Vec<i64> = Vec::new();
        stream.extend(
            tok.encode("short first line")
                .unwrap()
                .into_iter()
                .map(i64::from),
        );
        stream.push(tok.sep_id);
        stream.extend(tok.encode(&line).unwrap().into_iter().map(i64::from));
        stream.extend(tok.encode("end").unwrap().into_iter().map(i64::from));
        let mut want = Vec::new();
        for c in stream.chunks(14) {
            push_sequence(&mut want, &tok, c, 16);
        }
        assert_eq!(p.ids, want);
        assert_eq!(p.stats.long_lines, 1);
        assert_eq!(p.stats.text_tokens, stream.len() - 1);
        let first = chunk_document(&docs[1], &tok, 16, 2).unwrap();
        let line_ids: Vec<i64> = tok
            .encode(&line)
            .unwrap()
            .into_iter()
            .map(i64::from)
            .collect();
        let mut want = Vec::new();
        for c in line_ids.chunks(14).take(2) {
            push_sequence(&mut want, &tok, c, 16);
        }
        assert_eq!(first.concat(), want);
    }
}
