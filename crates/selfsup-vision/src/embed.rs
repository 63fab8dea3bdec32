//! Embedding a folder of images with an exported vision encoder (the
//! `model.safetensors` + `config.json` folder [`crate::export`] writes).
//!
//! Every png / jpg / jpeg / webp file directly in the folder (sorted by
//! name; other files and sub-folders are skipped and counted) is decoded,
//! its largest centred square cut out and resized to the export's
//! `image_size` (torchvision's `Resize` + `CenterCrop`, as image-folder
//! pre-training does), converted to the encoder's `in_channels` (1: grey,
//! 3: RGB), scaled to `[0, 1]` and normalised with the export's
//! `normalize`. A colorization encoder (`preprocess` says CIE L*) gets the
//! L* channel of the RGB image / 100 instead, as it was trained on. A file
//! that does not decode is an error naming it.
//!
//! The embedding is the encoder's representation as the evaluation sees it
//! (`Method::embed`): the pooled features of a CNN, the final-normed class
//! token of a ViT, and for MAE and I-JEPA (whose class token is not
//! trained) the mean final-normed patch token.
//!
//! An export that does not record the training image size (`image_size`;
//! `selfsup export` of a checkpoint) needs it from the caller.
use crate::data::image_folder::{decode_square, IMAGE_EXTENSIONS};
use crate::data::Normalize;
use crate::export::{
    identify_encoder, load_encoder_weights, CONFIG_FILE, EXPORT_FORMAT, WEIGHTS_FILE,
};
use crate::methods::colorization::rgb_to_lab;
use crate::models::{build_encoder, EncoderConfig, PosEmbedInit, Vit};
use selfsup_core::embeddings::{file_id, list_folder, read_export_config, Embedded};
use selfsup_core::encoder::Encoder;
use selfsup_core::tensor_io;
use selfsup_core::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;
use tch::nn::ModuleT;
use tch::{nn, Device, Kind, Tensor};

/// The largest image side an export may ask for.
pub const MAX_IMAGE_SIZE: usize = 4096;

enum Net {
    Cnn(Box<dyn Encoder>),
    Vit { vit: Box<Vit>, mean_patches: bool },
}

/// An exported vision encoder, ready to embed images.
pub struct VisionEmbedder {
    _vs: nn::VarStore,
    net: Net,
    /// Channels the encoder takes.
    pub in_channels: i64,
    /// Per-channel normalisation of its input.
    pub normalize: Normalize,
    /// Side of the square images it is given.
    pub image_size: usize,
    /// Whether its input is the CIE L* channel of RGB images (colorization).
    pub lightness: bool,
    /// The method that trained it (`method` in `config.json`, when there).
    pub method: String,
    /// Width of the embeddings.
    pub dim: i64,
    device: Device,
}

/// Whether `path` has an image extension (any case).
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

impl VisionEmbedder {
    /// Loads an export folder; `image_size` overrides the export's (and is
    /// needed when the export does not say it).
    pub fn load_export(dir: &Path, image_size: Option<usize>, device: Device) -> Result<Self> {
        let cfg_path = dir.join(CONFIG_FILE);
        let bad = |what: String| Error::Data(format!("{}: {what}", cfg_path.display()));
        let v = read_export_config(dir)?;
        if v.get("format").and_then(|f| f.as_str()) != Some(EXPORT_FORMAT) {
            return Err(bad(format!(
                "format is not \"{EXPORT_FORMAT}\": not a vision encoder export"
            )));
        }
        let file = dir.join(WEIGHTS_FILE);
        let shapes: BTreeMap<String, Vec<i64>> = tensor_io::load(&file)?
            .tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.size()))
            .collect();
        let identified = identify_encoder(&shapes).ok_or_else(|| {
            Error::Data(format!(
                "{}: not a small_cnn, resnet18, resnet50 or vit encoder",
                file.display()
            ))
        })?;
        // The `model` table knows a ViT's head count; the weights do not.
        let config = match v.get("model") {
            Some(m) => serde_json::from_value::<EncoderConfig>(m.clone())
                .map_err(|e| bad(format!("model: {e}")))?,
            None => identified.config.clone(),
        };
        config.validate().map_err(|e| bad(format!("model: {e}")))?;
        let same = match (config.vit_spec(), identified.config.vit_spec()) {
            (Some(a), Some(b)) => {
                crate::models::VitSpec {
                    heads: a.heads,
                    ..b
                } == a
            }
            _ => config == identified.config,
        };
        if !same {
            return Err(bad(format!(
                "model ({config:?}) disagrees with {} ({})",
                file.display(),
                identified
            )));
        }
        let in_channels = v
            .get("in_channels")
            .and_then(|c| c.as_i64())
            .unwrap_or(identified.in_channels);
        if in_channels != identified.in_channels
            || !(1..=3).contains(&in_channels)
            || in_channels == 2
        {
            return Err(bad(format!(
                "in_channels = {in_channels}: the weights take {} and images give 1 or 3",
                identified.in_channels
            )));
        }
        let normalize: Normalize = match v.get("normalize") {
            Some(n) => {
                serde_json::from_value(n.clone()).map_err(|e| bad(format!("normalize: {e}")))?
            }
            None => Normalize::for_channels(in_channels as usize),
        };
        normalize
            .validate(in_channels as usize)
            .map_err(|e| bad(format!("normalize: {e}")))?;
        let method = v
            .get("method")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_string();
        let lightness = match v.get("preprocess").and_then(|p| p.as_str()) {
            None => false,
            Some(p) if p.contains("L*") && in_channels == 1 => true,
            Some(p) => {
                return Err(bad(format!(
                    "preprocess {p:?} is not one this embedder applies"
                )))
            }
        };
        let image_size = image_size
            .or_else(|| {
                v.get("image_size")
                    .and_then(|s| s.as_u64())
                    .map(|s| s as usize)
            })
            .or_else(|| config.vit_spec().map(|s| s.image_size as usize))
            .ok_or_else(|| {
                bad("no image_size (the training image side): give it (--image-size N)".into())
            })?;
        let min = config.min_input_size().max(1) as usize;
        if !(min..=MAX_IMAGE_SIZE).contains(&image_size) {
            return Err(bad(format!(
                "image size {image_size}: this encoder takes sides in {min}..={MAX_IMAGE_SIZE}"
            )));
        }
        let mut vs = nn::VarStore::new(device);
        let p = vs.root() / "encoder";
        let net = match config.vit_spec() {
            Some(spec) => Net::Vit {
                vit: Box::new(Vit::new(&p, spec, in_channels, PosEmbedInit::Learned)),
                mean_patches: matches!(method.as_str(), "mae" | "ijepa"),
            },
            None => Net::Cnn(build_encoder(&p, &config, in_channels)),
        };
        load_encoder_weights(&mut vs, "encoder", &file)?;
        let dim = config.out_dim();
        Ok(Self {
            _vs: vs,
            net,
            in_channels,
            normalize,
            image_size,
            lightness,
            method,
            dim,
            device,
        })
    }

    /// The encoder's input `[N, C, S, S]` of decoded images (`S x S` HWC
    /// bytes with 3 channels when [`VisionEmbedder::lightness`], else
    /// `in_channels`).
    pub fn input(&self, images: &[Vec<u8>]) -> Tensor {
        let s = self.image_size as i64;
        let c = if self.lightness { 3 } else { self.in_channels };
        let flat: Vec<u8> = images.concat();
        let x = Tensor::from_slice(&flat)
            .view([images.len() as i64, s, s, c])
            .permute([0, 3, 1, 2])
            .to_kind(Kind::Float)
            / 255.0;
        let x = if self.lightness {
            rgb_to_lab(&x).narrow(1, 0, 1) / 100.0
        } else {
            x
        };
        let n = self.normalize.mean.len() as i64;
        let mean = Tensor::from_slice(&self.normalize.mean).view([1, n, 1, 1]);
        let std = Tensor::from_slice(&self.normalize.std).view([1, n, 1, 1]);
        (x - mean) / std
    }

    /// Embeddings `[N, D]` (float32, CPU) of an encoder input.
    pub fn embed_input(&self, xs: &Tensor) -> Tensor {
        let xs = xs.to_device(self.device);
        tch::no_grad(|| match &self.net {
            Net::Cnn(e) => e.forward_t(&xs, false),
            Net::Vit { vit, mean_patches } => {
                if *mean_patches {
                    vit.mean_patch_features(&xs)
                } else {
                    vit.forward_t(&xs, false)
                }
            }
        })
        .to_kind(Kind::Float)
        .to_device(Device::Cpu)
    }

    /// Decodes one image file as the encoder takes it.
    pub fn decode(&self, file: &Path) -> Result<Vec<u8>> {
        let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
        let c = if self.lightness {
            3
        } else {
            self.in_channels as usize
        };
        // One line: a decoder's own message may hold line breaks.
        decode_square(file, &bytes, self.image_size, c).map_err(|e| {
            Error::Data(
                e.to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        })
    }

    /// Embeds every image directly in `dir`, `batch_size` at a time; ids are
    /// the file names.
    pub fn embed_folder(&self, dir: &Path, batch_size: usize) -> Result<Embedded> {
        let (files, skipped) = list_folder(dir, is_image_file)?;
        if files.is_empty() {
            return Err(Error::Data(format!(
                "{}: no {} image to embed ({} other entries)",
                dir.display(),
                IMAGE_EXTENSIONS.join(" / "),
                skipped.len()
            )));
        }
        let mut parts = Vec::new();
        for chunk in files.chunks(batch_size.max(1)) {
            let images = chunk
                .iter()
                .map(|f| self.decode(f))
                .collect::<Result<Vec<_>>>()?;
            parts.push(self.embed_input(&self.input(&images)));
        }
        Ok(Embedded {
            ids: files.iter().map(|f| file_id(f)).collect(),
            embeddings: Tensor::cat(&parts, 0),
            skipped,
        })
    }
}
