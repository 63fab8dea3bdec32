//! A trained dual encoder back from disk (an export folder, or a run's
//! `checkpoint.safetensors` with the run's `tokenizer/`), and embeddings of
//! image folders and text files for downstream use.
use crate::captions::tokenize_all;
use crate::eval::{encode_images, encode_texts};
use crate::export::{load_weights, ExportMeta, CONFIG_FILE, WEIGHTS_FILE};
use crate::image_file::{is_supported, read_rgb, ImageFault};
use crate::method::Clip;
use crate::pretrain::ClipRunConfig;
use selfsup_core::checkpoint::{read_meta, restore_model};
use selfsup_core::method::Method;
use selfsup_core::{Error, Result};
use selfsup_text::tokenizer::TextTokenizer;
use selfsup_vision::data::{ImageDataset, Normalize};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// A model ready to embed.
pub struct LoadedClip {
    pub clip: Clip,
    pub tok: TextTokenizer,
    pub meta: ExportMeta,
    device: Device,
}

/// What was embedded: one id (file name or text) per row of `embeddings`
/// (unit rows), and the files that were not images, skipped.
pub struct Embedded {
    pub ids: Vec<String>,
    pub embeddings: Tensor,
    pub skipped: Vec<PathBuf>,
}

/// Loads an export folder (`config.json`, `model.safetensors`,
/// `tokenizer.json`) or a run checkpoint (`<run>/checkpoint.safetensors`,
/// tokenizer from `<run>/tokenizer/`).
pub fn load(path: &Path, device: Device) -> Result<LoadedClip> {
    if path.is_dir() {
        let cfg_path = path.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", cfg_path.display())))?;
        let meta: ExportMeta = serde_json::from_value(v["selfsup"].clone()).map_err(|e| {
            Error::Config(format!(
                "{}: not a selfsup CLIP export (`selfsup` field: {e})",
                cfg_path.display()
            ))
        })?;
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
    let text = cfg
        .model
        .text
        .resolve(tok.vocab_size, tok.pad_id)
        .map_err(Error::Config)?;
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
            return Err(Error::Config(format!(
                "{}: no png / jpg / jpeg image to embed",
                dir.display()
            )));
        }
        let s = self.meta.image_size;
        let mut pixels = Vec::with_capacity(files.len() * s * s * 3);
        for f in &files {
            match read_rgb(f, s) {
                Ok(b) => pixels.extend_from_slice(&b),
                Err(ImageFault::Unreadable(r)) => {
                    return Err(Error::Config(format!(
                        "{}: cannot be read: {r}",
                        f.display()
                    )))
                }
                Err(other) => return Err(Error::Config(format!("{}: {other:?}", f.display()))),
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
                return Err(Error::Config(format!(
                    "{}: line {}: empty text (one text per line)",
                    file.display(),
                    i + 1
                )));
            }
            texts.push(t.to_string());
        }
        if texts.is_empty() {
            return Err(Error::Config(format!(
                "{}: no text to embed",
                file.display()
            )));
        }
        let rows = tokenize_all(&self.tok, &texts, self.meta.max_len)?;
        Ok(Embedded {
            embeddings: encode_texts(&self.clip.model, &rows, self.tok.pad_id, self.device),
            ids: texts,
            skipped: Vec::new(),
        })
    }
}

/// The normalisation of the RGB images of every run.
pub fn image_normalize() -> Normalize {
    Normalize::for_channels(3)
}
