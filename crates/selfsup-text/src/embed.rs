//! Embedding texts with a saved BERT: an export folder (`config.json`,
//! `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`; see
//! [`crate::export`]) or a run's `checkpoint.safetensors` (tokenizer from the
//! run's `tokenizer/` folder).
//!
//! Every line of the text file is one text (an empty line is an error
//! naming it): `[CLS] pieces [SEP]`, cut to the export's `model_max_length`
//! (the run's `max_len`) with `[SEP]` kept, padded per batch. Its embedding
//! is the last hidden state averaged over the non-padding tokens, `[CLS]`
//! and `[SEP]` included: the mean pooling of the text evaluation's probes
//! ([`crate::methods::Mlm::pooled`]).
use crate::methods::Mlm;
use crate::model::BertConfig;
use crate::pretrain::TextRunConfig;
use crate::tokenizer::TextTokenizer;
use selfsup_core::embeddings::{load_strict, read_export_config, Embedded};
use selfsup_core::method::Method;
use selfsup_core::tensor_io;
use selfsup_core::{Error, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The largest vocabulary, width, depth and position count an export may
/// describe (a corrupt `config.json` must not allocate without bound).
pub const MAX_VOCAB: i64 = 1_000_000;
/// See [`MAX_VOCAB`].
pub const MAX_WIDTH: i64 = 16_384;
/// See [`MAX_VOCAB`].
pub const MAX_LAYERS: i64 = 256;
/// See [`MAX_VOCAB`].
pub const MAX_POSITIONS: i64 = 65_536;
/// The most lines a text file may hold.
pub const MAX_TEXTS: usize = 10_000_000;

/// A saved BERT and its tokenizer, ready to embed texts.
pub struct TextEmbedder {
    mlm: Mlm,
    tok: TextTokenizer,
    /// Tokens per text, `[CLS]` and `[SEP]` included.
    pub max_len: usize,
    device: Device,
}

fn int(v: &serde_json::Value, key: &str) -> std::result::Result<i64, String> {
    v.get(key)
        .and_then(|x| x.as_i64())
        .ok_or_else(|| format!("no integer `{key}`"))
}

/// transformers' BERT `config.json` as a [`BertConfig`], every size bounded.
fn bert_config(v: &serde_json::Value) -> std::result::Result<BertConfig, String> {
    if v.get("model_type").and_then(|m| m.as_str()) != Some("bert") {
        return Err("model_type is not \"bert\": not a text (BERT) export".into());
    }
    let f = |key: &str, default: f64| v.get(key).and_then(|x| x.as_f64()).unwrap_or(default);
    let c = BertConfig {
        vocab_size: int(v, "vocab_size")?,
        hidden: int(v, "hidden_size")?,
        layers: int(v, "num_hidden_layers")?,
        heads: int(v, "num_attention_heads")?,
        intermediate: int(v, "intermediate_size")?,
        max_position: int(v, "max_position_embeddings")?,
        type_vocab: v
            .get("type_vocab_size")
            .and_then(|x| x.as_i64())
            .unwrap_or(2),
        dropout: f("hidden_dropout_prob", 0.1),
        layer_norm_eps: f("layer_norm_eps", 1e-12),
        initializer_range: f("initializer_range", 0.02),
        pad_token_id: v.get("pad_token_id").and_then(|x| x.as_i64()).unwrap_or(0),
    };
    for (key, x, max) in [
        ("vocab_size", c.vocab_size, MAX_VOCAB),
        ("hidden_size", c.hidden, MAX_WIDTH),
        ("num_hidden_layers", c.layers, MAX_LAYERS),
        ("num_attention_heads", c.heads, MAX_WIDTH),
        ("intermediate_size", c.intermediate, 4 * MAX_WIDTH),
        ("max_position_embeddings", c.max_position, MAX_POSITIONS),
        ("type_vocab_size", c.type_vocab, 16),
    ] {
        if !(1..=max).contains(&x) {
            return Err(format!("{key} = {x}: must be in 1..={max}"));
        }
    }
    if c.hidden % c.heads != 0 {
        return Err(format!(
            "hidden_size = {} is not a multiple of num_attention_heads = {}",
            c.hidden, c.heads
        ));
    }
    if !(0..c.vocab_size).contains(&c.pad_token_id) {
        return Err(format!(
            "pad_token_id = {} is not below vocab_size = {}",
            c.pad_token_id, c.vocab_size
        ));
    }
    let (v_, h, l, i, p) = (
        c.vocab_size as i128,
        c.hidden as i128,
        c.layers as i128,
        c.intermediate as i128,
        c.max_position as i128,
    );
    let params = (v_ + p) * h + l * (4 * h * h + 2 * h * i);
    if params > 2_000_000_000 {
        return Err(format!(
            "a model of about {params} parameters: at most 2000000000"
        ));
    }
    Ok(c)
}

/// Refuses a tokenizer whose ids the model cannot embed.
fn check_tokenizer(tok: &TextTokenizer, cfg: &BertConfig, file: &Path) -> Result<()> {
    if tok.vocab_size as i64 > cfg.vocab_size || tok.pad_id != cfg.pad_token_id {
        return Err(Error::Data(format!(
            "{}: a vocabulary of {} pieces with [PAD] = {}, the model has {} with pad_token_id = {}: \
             the tokenizer is not this model's",
            file.display(),
            tok.vocab_size,
            tok.pad_id,
            cfg.vocab_size,
            cfg.pad_token_id
        )));
    }
    Ok(())
}

impl TextEmbedder {
    /// Loads an export folder.
    pub fn load_export(dir: &Path, device: Device) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let v = read_export_config(dir)?;
        let cfg =
            bert_config(&v).map_err(|e| Error::Data(format!("{}: {e}", cfg_path.display())))?;
        let tok_file = dir.join("tokenizer.json");
        let tok = TextTokenizer::from_file(&tok_file)?;
        check_tokenizer(&tok, &cfg, &tok_file)?;
        // model_max_length from tokenizer_config.json when it is there.
        let tc_path = dir.join("tokenizer_config.json");
        let max_len = match std::fs::read_to_string(&tc_path) {
            Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
                .map_err(|e| Error::Data(format!("{}: not JSON: {e}", tc_path.display())))?
                .get("model_max_length")
                .and_then(|m| m.as_u64())
                .map_or(cfg.max_position as usize, |m| {
                    (m as usize).min(cfg.max_position as usize)
                }),
            Err(_) => cfg.max_position as usize,
        };
        let mlm = Mlm::new(&cfg, device);
        let file = dir.join("model.safetensors");
        load_strict(mlm.var_store(), &tensor_io::load(&file)?.tensors, &file)?;
        Self::ready(mlm, tok, max_len, device)
    }

    /// Loads a run's `checkpoint.safetensors` with the run's tokenizer
    /// (`<run>/tokenizer/tokenizer.json`).
    pub fn load_checkpoint(path: &Path, device: Device) -> Result<Self> {
        let meta = selfsup_core::checkpoint::read_meta(path)?;
        let cfg = TextRunConfig::from_toml(&meta.config, path)?;
        let run_dir = path.parent().unwrap_or(Path::new("."));
        let tok = TextTokenizer::from_file(&run_dir.join("tokenizer").join("tokenizer.json"))?;
        let bert = cfg
            .model
            .resolve(tok.vocab_size, tok.pad_id)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let mlm = Mlm::new(&bert, device);
        selfsup_core::checkpoint::restore_model(path, mlm.var_store(), mlm.name())?;
        Self::ready(mlm, tok, cfg.model.max_len, device)
    }

    fn ready(mlm: Mlm, tok: TextTokenizer, max_len: usize, device: Device) -> Result<Self> {
        if max_len < 2 {
            return Err(Error::Config(format!(
                "max_len = {max_len}: a text needs room for [CLS] and [SEP]"
            )));
        }
        Ok(Self {
            mlm,
            tok,
            max_len,
            device,
        })
    }

    /// Width of the embeddings.
    pub fn dim(&self) -> i64 {
        self.mlm.bert.cfg.hidden
    }

    /// `[CLS] pieces [SEP]` of `text`, cut to `max_len`.
    pub fn tokenize(&self, text: &str) -> Result<Vec<i64>> {
        let ids = self.tok.encode(text)?;
        let keep = ids.len().min(self.max_len - 2);
        let mut row = Vec::with_capacity(keep + 2);
        row.push(self.tok.cls_id);
        row.extend(ids[..keep].iter().map(|&i| i64::from(i)));
        row.push(self.tok.sep_id);
        Ok(row)
    }

    /// Mean-pooled embeddings `[N, H]` (float32, CPU) of `texts`,
    /// `batch_size` at a time.
    pub fn embed_texts(&self, texts: &[String], batch_size: usize) -> Result<Tensor> {
        let rows = texts
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<Vec<_>>>()?;
        let mut parts = Vec::new();
        for chunk in rows.chunks(batch_size.max(1)) {
            let l = chunk.iter().map(Vec::len).max().unwrap_or(2);
            let mut ids = vec![self.tok.pad_id; chunk.len() * l];
            for (i, r) in chunk.iter().enumerate() {
                ids[i * l..i * l + r.len()].copy_from_slice(r);
            }
            let ids = Tensor::from_slice(&ids)
                .view([chunk.len() as i64, l as i64])
                .to_device(self.device);
            let pooled = tch::no_grad(|| self.mlm.pooled(&ids, false));
            parts.push(pooled.to_kind(Kind::Float).to_device(Device::Cpu));
        }
        if parts.is_empty() {
            return Ok(Tensor::zeros([0, self.dim()], (Kind::Float, Device::Cpu)));
        }
        Ok(Tensor::cat(&parts, 0))
    }

    /// Embeds every line of `file` (one text a line); ids are the texts.
    pub fn embed_file(&self, file: &Path, batch_size: usize) -> Result<Embedded> {
        let texts = read_lines(file)?;
        Ok(Embedded {
            embeddings: self.embed_texts(&texts, batch_size)?,
            ids: texts,
            skipped: Vec::new(),
        })
    }
}

/// The lines of a text file, trimmed; an empty line, or no line at all, is
/// an error naming the file (and line).
pub fn read_lines(file: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    let mut texts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() {
            return Err(Error::Data(format!(
                "{}: line {}: empty text (one text per line)",
                file.display(),
                i + 1
            )));
        }
        if texts.len() == MAX_TEXTS {
            return Err(Error::Data(format!(
                "{}: more than {MAX_TEXTS} lines: split the file",
                file.display()
            )));
        }
        texts.push(t.to_string());
    }
    if texts.is_empty() {
        return Err(Error::Data(format!(
            "{}: no text to embed (one text per line)",
            file.display()
        )));
    }
    Ok(texts)
}
