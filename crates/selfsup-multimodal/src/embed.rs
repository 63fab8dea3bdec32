//! A trained dual encoder back from disk (an export folder, or a run's
//! `checkpoint.safetensors` with the run's `tokenizer/`), and embeddings of
//! image folders and text files for downstream use.
use crate::captions::tokenize_all;
use crate::config::ClipRunConfig;
use crate::eval::{encode_images, encode_texts};
use crate::export::{load_weights, ExportMeta, CONFIG_FILE, WEIGHTS_FILE};
use crate::image_file::{is_supported, read_rgb, ImageFault};
use crate::method::Clip;
use selfsup_core::checkpoint::{read_meta, restore_model};
use selfsup_core::method::Method;
use selfsup_core::{Error, Result};
use selfsup_text::tokenizer::TextTokenizer;
use selfsup_vision::data::ImageDataset;
use std::path::{Path, PathBuf};
use tch::Device;

/// A model ready to embed.
pub struct LoadedClip {
    pub clip: Clip,
    pub tok: TextTokenizer,
    pub meta: ExportMeta,
    device: Device,
}

/// What was embedded: one id (file name or text) per row of `embeddings`
/// (unit rows), and the files that were not images, skipped; written by
/// `selfsup_core::embeddings::write_embeddings` (JSON Lines, `.npy`,
/// `.safetensors`).
pub use selfsup_core::embeddings::Embedded;

/// Loads an export folder (`config.json`, `model.safetensors`,
/// `tokenizer.json`) or a run checkpoint (`<run>/checkpoint.safetensors`,
/// tokenizer from `<run>/tokenizer/`).
pub fn load(path: &Path, device: Device) -> Result<LoadedClip> {
    if path.is_dir() {
        let cfg_path = path.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Data(format!("{}: {e}", cfg_path.display())))?;
        let meta: ExportMeta = serde_json::from_value(v["selfsup"].clone()).map_err(|e| {
            Error::Data(format!(
                "{}: not a selfsup CLIP export (`selfsup` field: {e})",
                cfg_path.display()
            ))
        })?;
        check_meta(&meta).map_err(|e| Error::Data(format!("{}: {e}", cfg_path.display())))?;
        let tok = TextTokenizer::from_file(&path.join("tokenizer.json"))?;
        let model = crate::model::ClipModelConfig {
            vision: meta.vision.clone(),
            embed_dim: meta.embed_dim,
            ..Default::default()
        };
        let clip = Clip::new(&model, &meta.clip, &meta.text, device)?;
        load_weights(&clip, &path.join(WEIGHTS_FILE))?;
        return Ok(LoadedClip {
            clip,
            tok,
            meta,
            device,
        });
    }
    let ck = read_meta(path)?;
    let cfg = ClipRunConfig::from_toml(&ck.config, path)?;
    let run_dir = path.parent().unwrap_or(Path::new("."));
    let tok = TextTokenizer::from_file(&run_dir.join("tokenizer").join("tokenizer.json"))?;
    let text = cfg.text_tower(&tok)?;
    let mut model = cfg.model.clone();
    model.vision_init = None;
    let clip = Clip::new(&model, cfg.method.clip(), &text, device)?;
    restore_model(path, clip.var_store(), "clip")?;
    let meta = cfg.export_meta(&text);
    Ok(LoadedClip {
        clip,
        tok,
        meta,
        device,
    })
}

/// The largest text tower an export may describe (a corrupt `config.json`
/// must not allocate without bound): vocabulary, width, depth, positions.
pub const MAX_EXPORT_VOCAB: i64 = 1_000_000;
pub const MAX_EXPORT_WIDTH: i64 = 16_384;
pub const MAX_EXPORT_LAYERS: i64 = 256;
pub const MAX_EXPORT_POSITIONS: i64 = 65_536;

/// Refuses an export description the model cannot be built from, or one
/// larger than the stated limits, naming the field.
pub fn check_meta(meta: &ExportMeta) -> std::result::Result<(), String> {
    use crate::image_file::MAX_OUTPUT_SIZE;
    let t = &meta.text;
    if meta.image_size == 0 || meta.image_size > MAX_OUTPUT_SIZE {
        return Err(format!(
            "selfsup.image_size = {}: must be in 1..={MAX_OUTPUT_SIZE}",
            meta.image_size
        ));
    }
    for (key, v, max) in [
        ("selfsup.embed_dim", meta.embed_dim, MAX_EXPORT_WIDTH),
        ("selfsup.text.vocab_size", t.vocab_size, MAX_EXPORT_VOCAB),
        ("selfsup.text.hidden", t.hidden, MAX_EXPORT_WIDTH),
        ("selfsup.text.layers", t.layers, MAX_EXPORT_LAYERS),
        ("selfsup.text.heads", t.heads, MAX_EXPORT_WIDTH),
        (
            "selfsup.text.intermediate",
            t.intermediate,
            4 * MAX_EXPORT_WIDTH,
        ),
        (
            "selfsup.text.max_position",
            t.max_position,
            MAX_EXPORT_POSITIONS,
        ),
        ("selfsup.text.type_vocab", t.type_vocab, 16),
    ] {
        if !(1..=max).contains(&v) {
            return Err(format!("{key} = {v}: must be in 1..={max}"));
        }
    }
    if t.hidden % t.heads != 0 {
        return Err(format!(
            "selfsup.text.hidden = {} is not a multiple of heads = {}",
            t.hidden, t.heads
        ));
    }
    if !(0..t.vocab_size).contains(&t.pad_token_id) {
        return Err(format!(
            "selfsup.text.pad_token_id = {}: must be below vocab_size = {}",
            t.pad_token_id, t.vocab_size
        ));
    }
    if meta.max_len < 2 || meta.max_len as i64 > t.max_position {
        return Err(format!(
            "selfsup.max_len = {}: must be in 2..={} (max_position)",
            meta.max_len, t.max_position
        ));
    }
    Ok(())
}

impl LoadedClip {
    /// Embeds every png / jpg / jpeg file of `dir` (sorted by name; other
    /// files are skipped and listed). An image that does not decode is an
    /// error naming it.
    pub fn embed_images(&self, dir: &Path) -> Result<Embedded> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let (files, skipped): (Vec<PathBuf>, Vec<PathBuf>) =
            files.into_iter().partition(|p| is_supported(p));
        if files.is_empty() {
            return Err(Error::Data(format!(
                "{}: no png / jpg / jpeg image to embed",
                dir.display()
            )));
        }
        let s = self.meta.image_size;
        let mut pixels = Vec::new();
        for f in &files {
            match read_rgb(f, s) {
                Ok(b) => pixels.extend_from_slice(&b),
                Err(ImageFault::Unreadable(r)) => {
                    return Err(Error::Data(format!("{}: cannot be read: {r}", f.display())))
                }
                Err(ImageFault::Missing) => {
                    return Err(Error::Data(format!("{}: no such file", f.display())))
                }
                Err(ImageFault::Unsupported) => {
                    return Err(Error::Data(format!(
                        "{}: not a png / jpg / jpeg file",
                        f.display()
                    )))
                }
            }
        }
        let ds = ImageDataset::new(dir.display().to_string(), s, s, 3, pixels, None, Vec::new())?;
        let xs = ds.to_tensor(&(0..files.len()).collect::<Vec<_>>(), &self.meta.normalize);
        Ok(Embedded {
            ids: files
                .iter()
                .map(|f| {
                    f.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .to_string()
                })
                .collect(),
            embeddings: encode_images(&self.clip.model, &xs, self.device),
            skipped,
        })
    }

    /// Embeds every line of `file` (one text a line; an empty line is an
    /// error naming it).
    pub fn embed_texts(&self, file: &Path) -> Result<Embedded> {
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
            texts.push(t.to_string());
        }
        if texts.is_empty() {
            return Err(Error::Data(format!("{}: no text to embed", file.display())));
        }
        let rows = tokenize_all(&self.tok, &texts, self.meta.max_len)?;
        Ok(Embedded {
            embeddings: encode_texts(&self.clip.model, &rows, self.tok.pad_id, self.device),
            ids: texts,
            skipped: Vec::new(),
        })
    }
}

/// The normalisation of the RGB images of every run (defined with the
/// config, which records it in every export).
pub use crate::config::image_normalize;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClipRunConfig;

    #[test]
    fn corrupt_export_descriptions_are_refused_naming_the_field() {
        let cfg = ClipRunConfig::default();
        let text = cfg.model.text.resolve(100, 0).unwrap();
        let ok = cfg.export_meta(&text);
        assert_eq!(check_meta(&ok), Ok(()));
        let mut m = ok.clone();
        m.image_size = 1 << 40;
        assert!(check_meta(&m).unwrap_err().contains("image_size"));
        let mut m = ok.clone();
        m.text.heads = 0;
        assert!(check_meta(&m)
            .unwrap_err()
            .contains("selfsup.text.heads = 0"));
        let mut m = ok.clone();
        m.text.vocab_size = i64::MAX;
        assert!(check_meta(&m).unwrap_err().contains("vocab_size"));
        let mut m = ok;
        m.max_len = 10_000;
        assert!(check_meta(&m).unwrap_err().contains("max_len"));
    }
}
