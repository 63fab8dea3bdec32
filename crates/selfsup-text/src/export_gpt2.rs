//! Export of a next-token model in the layout of transformers'
//! `GPT2LMHeadModel`: `config.json`, `model.safetensors` (the var store's
//! names are already transformers' names, `Conv1D` weights `[in, out]` as
//! GPT-2 stores them; the LM head is tied to `transformer.wte.weight` and
//! not stored, as transformers itself saves it), the WordPiece tokenizer
//! (`tokenizer.json`, `vocab.txt`, `tokenizer_config.json`,
//! `special_tokens_map.json`) and `generation_config.json`.
//! `GPT2LMHeadModel.from_pretrained(dir)` loads it with no missing or
//! unexpected keys and gives selfsup's logits (`tests/next_token.rs`, through
//! `benchmarks/check_hf_gpt2.py`).
use crate::methods::NextToken;
use crate::tokenizer::TextTokenizer;
use selfsup_core::method::Method;
use selfsup_core::tensor_io;
use selfsup_core::{Error, Result};
use std::path::Path;

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::Config(e.to_string()))?;
    tensor_io::write_atomic(path, text.as_bytes())
}

/// Writes the model and its tokenizer into `dir`.
pub fn export_gpt2(
    model: &NextToken,
    tok: &TextTokenizer,
    max_len: usize,
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    tensor_io::save_pytorch_weights(&dir.join("model.safetensors"), model.var_store(), |_| true)?;
    let cfg = &model.gpt.cfg;
    write_json(&dir.join("config.json"), &cfg.hf_config_json())?;
    write_json(
        &dir.join("generation_config.json"),
        &serde_json::json!({
            "bos_token_id": cfg.bos_token_id,
            "eos_token_id": cfg.eos_token_id,
            "pad_token_id": cfg.pad_token_id,
        }),
    )?;
    tok.save(dir).map_err(Error::from)?;
    let piece = |id: i64| {
        u32::try_from(id)
            .ok()
            .and_then(|id| tok.id_to_token(id))
            .unwrap_or_default()
    };
    let specials = serde_json::json!({
        "bos_token": piece(tok.cls_id),
        "eos_token": piece(tok.sep_id),
        "pad_token": piece(tok.pad_id),
        "unk_token": piece(tok.unk_id),
        "cls_token": piece(tok.cls_id),
        "sep_token": piece(tok.sep_id),
        "mask_token": piece(tok.mask_id),
    });
    write_json(&dir.join("special_tokens_map.json"), &specials)?;
    let mut tcfg = specials;
    tcfg["tokenizer_class"] = "BertTokenizer".into();
    tcfg["do_lower_case"] = tok.lowercase.into();
    tcfg["model_max_length"] = max_len.into();
    write_json(&dir.join("tokenizer_config.json"), &tcfg)
}
