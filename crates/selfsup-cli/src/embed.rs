//! `selfsup embed`: the data of any modality through a saved encoder, to
//! JSON Lines, `.npy` or `.safetensors` (core's `embeddings` writer).
//!
//! The modality is told by the export's `config.json` (vision:
//! `format = selfsup-encoder-v1`; text: `model_type = bert`; audio:
//! `model_type = wav2vec2`; graph: `encoder` + `in_features`; CLIP:
//! `model_type = selfsup-clip`) or by a checkpoint's `[method] name`; an
//! input of another modality is refused, saying which one fits.
use anyhow::{bail, Context, Result};
use selfsup_core::embeddings::{ids_path, read_export_config, write_embeddings, Embedded, Format};
use std::path::{Path, PathBuf};

/// What `selfsup embed` was given.
pub struct Args {
    pub checkpoint: PathBuf,
    pub images: Option<PathBuf>,
    pub texts: Option<PathBuf>,
    pub audio: Option<PathBuf>,
    pub graph: Option<PathBuf>,
    pub out: PathBuf,
    pub device: String,
    pub batch_size: usize,
    pub image_size: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Modality {
    Vision,
    Text,
    Audio,
    Graph,
    Clip,
}

impl Modality {
    /// How an error names it.
    fn name(self) -> &'static str {
        match self {
            Modality::Vision => "vision",
            Modality::Text => "text (BERT)",
            Modality::Audio => "audio (wav2vec 2.0)",
            Modality::Graph => "graph",
            Modality::Clip => "image-text (CLIP)",
        }
    }

    /// The inputs it embeds, as flags.
    fn wants(self) -> &'static str {
        match self {
            Modality::Vision => "--images DIR (a folder of png / jpg / webp images)",
            Modality::Text => "--texts FILE (one text per line)",
            Modality::Audio => "--audio DIR (a folder of .wav / .ogg clips)",
            Modality::Graph => "--graph FILE (an edge list, or an adjacency matrix .csv)",
            Modality::Clip => "--images DIR or --texts FILE",
        }
    }
}

/// The one input given.
enum Input {
    Images(PathBuf),
    Texts(PathBuf),
    Audio(PathBuf),
    Graph(PathBuf),
}

impl Input {
    fn fits(&self, m: Modality) -> bool {
        matches!(
            (self, m),
            (Input::Images(_), Modality::Vision | Modality::Clip)
                | (Input::Texts(_), Modality::Text | Modality::Clip)
                | (Input::Audio(_), Modality::Audio)
                | (Input::Graph(_), Modality::Graph)
        )
    }
}

fn one_input(a: &Args) -> Result<Input> {
    let given: Vec<Input> = [
        a.images.clone().map(Input::Images),
        a.texts.clone().map(Input::Texts),
        a.audio.clone().map(Input::Audio),
        a.graph.clone().map(Input::Graph),
    ]
    .into_iter()
    .flatten()
    .collect();
    match <[Input; 1]>::try_from(given) {
        Ok([input]) => Ok(input),
        Err(v) => bail!(
            "give exactly one of --images DIR, --texts FILE, --audio DIR and --graph FILE ({} given)",
            v.len()
        ),
    }
}

/// The modality of an export folder, from its `config.json`.
fn export_modality(dir: &Path) -> Result<Modality> {
    let v = read_export_config(dir)?;
    let model_type = v.get("model_type").and_then(|m| m.as_str());
    Ok(
        if model_type == Some("selfsup-clip")
            || v.get("selfsup").is_some_and(|s| s.get("clip").is_some())
        {
            Modality::Clip
        } else if v.get("format").and_then(|f| f.as_str())
            == Some(selfsup_vision::export::EXPORT_FORMAT)
        {
            Modality::Vision
        } else if model_type == Some("bert") {
            Modality::Text
        } else if model_type == Some("wav2vec2") {
            Modality::Audio
        } else if v.get("encoder").is_some() && v.get("in_features").is_some() {
            Modality::Graph
        } else {
            bail!(
                "{}: not the config.json of a selfsup export (vision, text, audio, graph or CLIP): \
                 give the export folder a pretrain run wrote (runs/<name>/export)",
                dir.join("config.json").display()
            )
        },
    )
}

/// The modality and method of a run checkpoint (its owner in the registry).
fn checkpoint_modality(path: &Path) -> Result<(Modality, String)> {
    let (method, _) = selfsup_core::workflow::checkpoint_method(path)?;
    let owns = |m: &dyn selfsup_core::workflow::Modality| m.methods().contains(&method.as_str());
    let m = if owns(selfsup_vision::MODALITY) {
        Modality::Vision
    } else if owns(selfsup_text::MODALITY) {
        Modality::Text
    } else if owns(selfsup_audio::MODALITY) {
        Modality::Audio
    } else if owns(selfsup_graph::MODALITY) {
        Modality::Graph
    } else if owns(selfsup_multimodal::MODALITY) {
        Modality::Clip
    } else {
        bail!(
            "{}: a checkpoint of method '{method}', which `selfsup embed` does not know",
            path.display()
        )
    };
    Ok((m, method))
}

/// The training image side a vision checkpoint's config implies: its
/// `[data] image_size`, else the dataset's own (Fashion-MNIST 28, CIFAR 32,
/// image folders 64), else a ViT's `image_size`.
fn checkpoint_image_size(path: &Path) -> Option<usize> {
    let meta = selfsup_core::checkpoint::read_meta(path).ok()?;
    let v: toml::Value = meta.config.parse().ok()?;
    let data = v.get("data");
    let given = data
        .and_then(|d| d.get("image_size"))
        .and_then(|s| s.as_integer());
    let by_format = match data
        .and_then(|d| d.get("format"))
        .and_then(|f| f.as_str())
        .unwrap_or("fashion-mnist")
    {
        "fashion-mnist" => Some(28),
        "cifar10" | "cifar100" => Some(32),
        "image-folder" => Some(selfsup_vision::pretrain::DEFAULT_IMAGE_SIZE as i64),
        _ => None,
    };
    let vit = v
        .get("model")
        .and_then(|m| m.get("image_size"))
        .and_then(|s| s.as_integer());
    given
        .or(by_format)
        .or(vit)
        .and_then(|s| usize::try_from(s).ok())
}

/// A temporary folder removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("selfsup-embed-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `selfsup embed`.
pub fn run(a: Args) -> Result<()> {
    let format = Format::of(&a.out)?;
    let input = one_input(&a)?;
    if a.batch_size == 0 {
        bail!("--batch-size 0: give at least 1");
    }
    let device = a
        .device
        .parse::<selfsup_core::device::DeviceChoice>()?
        .resolve()?;
    let ck = &a.checkpoint;
    let is_export = ck.is_dir();
    let (modality, method) = if is_export {
        (export_modality(ck)?, None)
    } else {
        let (m, method) = checkpoint_modality(ck)?;
        (m, Some(method))
    };
    if !input.fits(modality) {
        let what = match &method {
            Some(m) => format!("a {} checkpoint (method '{m}')", modality.name()),
            None => format!("a {} export", modality.name()),
        };
        let also = if modality == Modality::Vision && !is_export {
            " (`selfsup eval knn|linear` measures it, `selfsup export` exports it)"
        } else {
            ""
        };
        bail!(
            "{} is {what}: give {}{also}",
            ck.display(),
            modality.wants()
        );
    }
    let loading = || format!("loading {}", ck.display());
    let e: Embedded = match (modality, input) {
        (Modality::Clip, input) => {
            let loaded = selfsup_multimodal::embed::load(ck, device).with_context(loading)?;
            let e = match input {
                Input::Images(dir) => loaded.embed_images(&dir)?,
                Input::Texts(file) => loaded.embed_texts(&file)?,
                _ => bail!("a CLIP model embeds --images DIR or --texts FILE"),
            };
            for s in &e.skipped {
                eprintln!("skipped {} (not a png / jpg / jpeg file)", s.display());
            }
            e
        }
        (Modality::Vision, Input::Images(dir)) => {
            use selfsup_vision::embed::VisionEmbedder;
            let emb = if is_export {
                VisionEmbedder::load_export(ck, a.image_size, device).with_context(loading)?
            } else {
                // The checkpoint's encoder, exported as `selfsup export` does.
                let tmp = TempDir::new()?;
                let (_, config) = selfsup_core::workflow::checkpoint_method(ck)?;
                selfsup_vision::MODALITY.export(ck, &config, &tmp.0)?;
                let side = a.image_size.or_else(|| checkpoint_image_size(ck));
                VisionEmbedder::load_export(&tmp.0, side, device).with_context(loading)?
            };
            let e = emb.embed_folder(&dir, a.batch_size)?;
            for s in &e.skipped {
                eprintln!("skipped {} (not a png / jpg / webp file)", s.display());
            }
            e
        }
        (Modality::Text, Input::Texts(file)) => {
            use selfsup_text::embed::TextEmbedder;
            let emb = if is_export {
                TextEmbedder::load_export(ck, device)
            } else {
                TextEmbedder::load_checkpoint(ck, device)
            }
            .with_context(loading)?;
            emb.embed_file(&file, a.batch_size)?
        }
        (Modality::Audio, Input::Audio(dir)) => {
            use selfsup_audio::embed::AudioEmbedder;
            let emb = if is_export {
                AudioEmbedder::load_export(ck, device)
            } else {
                AudioEmbedder::load_checkpoint(ck, device)
            }
            .with_context(loading)?;
            let e = emb.embed_folder(&dir)?;
            for s in &e.skipped {
                eprintln!("skipped {} (not a .wav / .ogg file)", s.display());
            }
            e
        }
        (Modality::Graph, Input::Graph(file)) => {
            use selfsup_graph::embed::GraphEmbedder;
            let emb = if is_export {
                GraphEmbedder::load_export(ck, device)
            } else {
                GraphEmbedder::load_checkpoint(ck, device)
            }
            .with_context(loading)?;
            emb.embed_file(&file)?
        }
        (m, _) => bail!("{}: give {}", ck.display(), m.wants()),
    };
    write_embeddings(&a.out, &e.ids, &e.embeddings)?;
    let dim = e.embeddings.size().get(1).copied().unwrap_or(0);
    let ids = match format {
        Format::Jsonl => String::new(),
        _ => format!(", ids in {}", ids_path(&a.out).display()),
    };
    println!(
        "wrote {} embeddings of dimension {dim} to {} ({} skipped{ids})",
        e.ids.len(),
        a.out.display(),
        e.skipped.len()
    );
    Ok(())
}
