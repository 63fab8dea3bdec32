//! Export in the layout of transformers' `BertForMaskedLM`:
//! `config.json`, `model.safetensors` (the var store's names are already
//! transformers' names; the decoder weight is tied to the word embeddings and
//! not stored, as transformers itself saves it), `tokenizer.json`,
//! `vocab.txt`, `tokenizer_config.json`, `special_tokens_map.json`.
//! `BertForMaskedLM.from_pretrained(dir)` and `AutoTokenizer.from_pretrained(dir)`
//! load it unchanged (checked by `benchmarks/check_hf_export.py`).
use crate::methods::Mlm;
use crate::tokenizer::TextTokenizer;
use selfsup_core::method::Method;
use selfsup_core::tensor_io;
use selfsup_core::{Error, Result};
use std::path::Path;

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::Config(e.to_string()))?;
    tensor_io::write_atomic(path, text.as_bytes())
}

/// Writes the model and tokenizer into `dir`.
pub fn export_mlm(mlm: &Mlm, tok: &TextTokenizer, max_len: usize, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    tensor_io::save_pytorch_weights(&dir.join("model.safetensors"), mlm.var_store(), |_| true)?;
    write_json(&dir.join("config.json"), &mlm.bert.cfg.hf_config_json())?;
    tok.save(dir).map_err(Error::from)?;
    let piece = |id: i64| tok.id_to_token(id as u32).unwrap_or_default();
    let specials = serde_json::json!({
        "pad_token": piece(tok.pad_id),
        "unk_token": piece(tok.unk_id),
        "cls_token": piece(tok.cls_id),
        "sep_token": piece(tok.sep_id),
        "mask_token": piece(tok.mask_id),
    });
    write_json(&dir.join("special_tokens_map.json"), &specials)?;
    let mut cfg = specials;
    cfg["tokenizer_class"] = "BertTokenizer".into();
    cfg["do_lower_case"] = tok.lowercase.into();
    cfg["model_max_length"] = max_len.into();
    write_json(&dir.join("tokenizer_config.json"), &cfg)
}
