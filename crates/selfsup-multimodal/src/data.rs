//! What a CLIP run reads and evaluates on, shared by pre-training, the
//! evaluation of a checkpoint and nothing else: the sources as training
//! pairs and named evaluation sets ([`read_data`]), and those sets as an
//! [`EvalSuite`] for a tokenizer ([`build_suite`]).
use crate::captions::{fill, tokenize_all};
use crate::config::{ClipRunConfig, PairSource};
use crate::eval::{EvalSuite, RetrievalSet, ZeroShotSet};
use crate::pairs::{read_captions, PairSet, ReadOptions};
use crate::registry::{fashion_mnist_pairs, read_emoji};
use selfsup_core::{Error, Result};
use selfsup_text::tokenizer::TextTokenizer;
use selfsup_vision::data::{Normalize, Split};
use std::path::{Path, PathBuf};

/// Pairs to train on and to evaluate with, read from the sources.
pub struct RunData {
    pub train: PairSet,
    pub names: Vec<String>,
    /// Named retrieval sets (held-out pairs).
    pub retrieval: Vec<(String, PairSet)>,
    /// Named labelled sets with their prompt templates.
    pub zero_shot: Vec<(String, PairSet, Vec<String>)>,
}

fn resolve(root: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    }
}

/// Reads every source under the data root `root` (`--data`, or its
/// default) and splits it into training and evaluation sets. A file that
/// is not there is an error naming it, the root and `--data`.
pub fn read_data(cfg: &ClipRunConfig, root: &Path) -> Result<RunData> {
    read_sources(cfg, root).map_err(|e| match e {
        Error::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
            Error::Data(format!(
                "{}: not found ({source}); [[data.sources]] paths are relative to the data root \
                 {}: give the folder that holds them with --data",
                path.display(),
                root.display()
            ))
        }
        other => other,
    })
}

fn read_sources(cfg: &ClipRunConfig, root: &Path) -> Result<RunData> {
    let opts = ReadOptions {
        image_size: cfg.data.image_size,
        skip_bad: cfg.data.skip_bad,
    };
    let mut train = Vec::new();
    let mut names = Vec::new();
    let mut retrieval: Vec<(String, PairSet)> = Vec::new();
    let mut zero_shot: Vec<(String, PairSet, Vec<String>)> = Vec::new();
    for src in &cfg.data.sources {
        match src {
            PairSource::Captions { file, images } => {
                let file = resolve(root, file);
                let images = images.as_ref().map(|p| resolve(root, p));
                let set = read_captions(&file, images.as_deref(), opts)?;
                let (tr, ho) = set.split(cfg.data.held_out);
                let name = file
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                if !ho.is_empty() {
                    retrieval.push((format!("{name} held-out"), set.subset(&ho)));
                }
                names.push(file.display().to_string());
                train.push(set.subset(&tr));
            }
            PairSource::Emoji { path } => {
                let dir = resolve(root, path);
                let name = dir
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                let set = read_emoji(&dir, &name, opts)?;
                let (tr, ho) = set.split(cfg.data.held_out);
                if !ho.is_empty() {
                    let held = set.subset(&ho);
                    retrieval.push((format!("{name} held-out"), held.clone()));
                    if cfg.eval.second_rendering.is_none() {
                        zero_shot.push((
                            format!("{name} held-out categories"),
                            held,
                            cfg.eval.emoji_templates.clone(),
                        ));
                    }
                }
                names.push(dir.display().to_string());
                train.push(set.subset(&tr));
            }
            PairSource::FashionMnist {
                path,
                train_images,
                test_images,
                captions,
            } => {
                let dir = resolve(root, path);
                let s = cfg.data.image_size;
                train.push(fashion_mnist_pairs(
                    &dir,
                    Split::Train,
                    *train_images,
                    s,
                    captions,
                )?);
                let test = fashion_mnist_pairs(&dir, Split::Test, Some(*test_images), s, captions)?;
                zero_shot.push((
                    "fashion-mnist test".into(),
                    test,
                    cfg.eval.photo_templates.clone(),
                ));
                names.push(dir.display().to_string());
            }
        }
    }
    if let Some(second) = &cfg.eval.second_rendering {
        let dir = resolve(root, second);
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let set = read_emoji(&dir, &name, opts)?;
        let (tr, ho) = set.split(cfg.data.held_out);
        if !ho.is_empty() {
            let held = set.subset(&ho);
            retrieval.push((format!("{name} held-out emoji"), held.clone()));
            zero_shot.push((
                format!("{name} held-out categories"),
                held,
                cfg.eval.emoji_templates.clone(),
            ));
        }
        let seen: Vec<usize> = tr.into_iter().take(cfg.eval.seen_images).collect();
        if !seen.is_empty() {
            retrieval.push((format!("{name} training emoji"), set.subset(&seen)));
        }
    }
    Ok(RunData {
        train: PairSet::concat("train", &train)?,
        names,
        retrieval,
        zero_shot,
    })
}

/// The evaluation suite of `data` for tokenizer `tok`.
pub fn build_suite(
    data: &RunData,
    tok: &TextTokenizer,
    max_len: usize,
    norm: &Normalize,
) -> Result<EvalSuite> {
    let mut retrieval = Vec::new();
    for (name, set) in &data.retrieval {
        let mut texts = Vec::new();
        let mut text_image = Vec::new();
        for (i, caps) in set.captions.iter().enumerate() {
            texts.extend(caps.iter().cloned());
            text_image.extend(std::iter::repeat_n(i as i64, caps.len()));
        }
        retrieval.push(RetrievalSet {
            name: name.clone(),
            images: set
                .images
                .to_tensor(&(0..set.len()).collect::<Vec<_>>(), norm),
            texts: tokenize_all(tok, &texts, max_len)?,
            text_image,
        });
    }
    let mut zero_shot = Vec::new();
    for (name, set, templates) in &data.zero_shot {
        let labels = set
            .images
            .labels_tensor()
            .ok_or_else(|| Error::Config(format!("{name}: zero-shot needs class labels")))?;
        let prompts = set
            .images
            .classes
            .iter()
            .map(|c| {
                let texts: Vec<String> = templates.iter().map(|t| fill(t, c)).collect();
                tokenize_all(tok, &texts, max_len)
            })
            .collect::<Result<Vec<_>>>()?;
        zero_shot.push(ZeroShotSet {
            name: name.clone(),
            images: set
                .images
                .to_tensor(&(0..set.len()).collect::<Vec<_>>(), norm),
            labels,
            chance: 1.0 / set.images.classes.len().max(1) as f64,
            prompts,
        });
    }
    Ok(EvalSuite {
        retrieval,
        zero_shot,
        pad_id: tok.pad_id,
    })
}
