//! Embedding a graph file with a saved encoder: an export folder
//! (`config.json` + `encoder.safetensors`, see [`crate::export`]) or a run's
//! `checkpoint.safetensors`.
//!
//! The graph is an edge list (`u v [w]` lines; any extension but `.csv`) or
//! a header-less adjacency matrix (`.csv`), read by the crate's readers
//! (self-loops dropped, duplicates merged). Its node features are made as in
//! training: the export's `data.features` (`adjacency`, `identity` or
//! `degree`); an export written before `data` was recorded is taken as
//! `degree` when the encoder takes 3 features, else `adjacency` (the
//! default). An encoder trained on a dataset's own node features
//! (Planetoid) or on molecules (QM9) is refused: a graph file has neither.
//!
//! Every method gives one embedding per node, ids `0..N` (the file's node
//! ids): GRACE and DGI their GCN's output (what the export's
//! `embeddings.npy` holds for the training graph), GraphCL its GIN's last
//! layer before the readout.
use crate::encoders::{EncoderConfig, GraphEncoder};
use crate::graph::{Featurize, View};
use crate::methods::{Dgi, Gae, Grace, GraphCl, GraphMethod, GraphMethodConfig};
use crate::pretrain::GraphRunConfig;
use crate::readers::{adjacency_csv, edge_list};
use selfsup_core::embeddings::{load_strict, read_export_config, Embedded};
use selfsup_core::tensor_io;
use selfsup_core::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

/// File name of the encoder weights in an export folder.
pub const ENCODER_FILE: &str = "encoder.safetensors";

/// The widest layer and the most layers an export may describe (a corrupt
/// `config.json` must not allocate without bound).
pub const MAX_WIDTH: i64 = 65_536;
/// See [`MAX_WIDTH`].
pub const MAX_LAYERS: usize = 64;

enum Source {
    Export {
        weights: BTreeMap<String, Tensor>,
        file: PathBuf,
        in_features: i64,
        encoder: EncoderConfig,
    },
    Checkpoint {
        cfg: Box<GraphRunConfig>,
        path: PathBuf,
    },
}

/// A saved graph encoder, ready to embed graph files.
pub struct GraphEmbedder {
    source: Source,
    /// How node features are made from a featureless graph.
    pub features: Featurize,
    /// The method that trained it (`grace`, `dgi`, `graphcl`).
    pub method: String,
    device: Device,
}

fn check_encoder(cfg: &EncoderConfig) -> std::result::Result<(), String> {
    match cfg {
        EncoderConfig::Gcn(c) => {
            if c.dims.is_empty() || c.dims.len() > MAX_LAYERS {
                return Err(format!(
                    "encoder.dims has {} layers: give 1..={MAX_LAYERS}",
                    c.dims.len()
                ));
            }
            if let Some(d) = c.dims.iter().find(|d| !(1..=MAX_WIDTH).contains(*d)) {
                return Err(format!("encoder.dims: width {d} is not in 1..={MAX_WIDTH}"));
            }
        }
        EncoderConfig::Gin(c) => {
            if !(1..=MAX_WIDTH).contains(&c.hidden) || c.layers == 0 || c.layers > MAX_LAYERS {
                return Err(format!(
                    "encoder: hidden = {} and layers = {} must be in 1..={MAX_WIDTH} and 1..={MAX_LAYERS}",
                    c.hidden, c.layers
                ));
            }
        }
    }
    Ok(())
}

/// The features of the training data, from an export's `data` (or its
/// absence) and `in_features`.
fn features_of(
    cfg_path: &Path,
    data: Option<&serde_json::Value>,
    in_features: i64,
) -> Result<Featurize> {
    let Some(data) = data else {
        return Ok(if in_features == 3 {
            Featurize::Degree
        } else {
            Featurize::Adjacency
        });
    };
    let format = data.get("format").and_then(|f| f.as_str()).unwrap_or("");
    if matches!(format, "planetoid" | "qm9") {
        return Err(Error::Data(format!(
            "{}: this encoder was trained on {format}'s own node features, which a graph file \
             does not have: embed graphs whose features are made from their edges (an encoder \
             trained with features = \"adjacency\", \"identity\" or \"degree\")",
            cfg_path.display()
        )));
    }
    match data.get("features") {
        None => Ok(Featurize::default()),
        Some(f) => serde_json::from_value(f.clone())
            .map_err(|e| Error::Data(format!("{}: data.features: {e}", cfg_path.display()))),
    }
}

fn method_name(v: &serde_json::Value) -> String {
    v.get("name")
        .and_then(|n| n.as_str())
        .unwrap_or("unknown")
        .to_string()
}

impl GraphEmbedder {
    /// Loads an export folder: `config.json` (`encoder`, `in_features`,
    /// `method`, `data`) and `encoder.safetensors` (every tensor of the
    /// encoder, nothing else).
    pub fn load_export(dir: &Path, device: Device) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let v = read_export_config(dir)?;
        let bad = |what: String| Error::Data(format!("{}: {what}", cfg_path.display()));
        let encoder: EncoderConfig = serde_json::from_value(
            v.get("encoder")
                .cloned()
                .ok_or_else(|| bad("no `encoder`: not a graph export".into()))?,
        )
        .map_err(|e| bad(format!("encoder: {e}")))?;
        check_encoder(&encoder).map_err(bad)?;
        let in_features = v
            .get("in_features")
            .and_then(|f| f.as_i64())
            .filter(|f| (1..=1 << 26).contains(f))
            .ok_or_else(|| bad("`in_features` must be a number in 1..=67108864".into()))?;
        let features = features_of(&cfg_path, v.get("data"), in_features)?;
        let method = v.get("method").map(method_name).unwrap_or_default();
        let file = dir.join(ENCODER_FILE);
        let weights = tensor_io::load(&file)?.tensors;
        Ok(Self {
            source: Source::Export {
                weights: weights
                    .into_iter()
                    .map(|(k, t)| (format!("encoder.{k}"), t))
                    .collect(),
                file,
                in_features,
                encoder,
            },
            features,
            method,
            device,
        })
    }

    /// Loads a run's `checkpoint.safetensors` (the model is built when the
    /// graph is known: its feature width is the graph's).
    pub fn load_checkpoint(path: &Path, device: Device) -> Result<Self> {
        let meta = selfsup_core::checkpoint::read_meta(path)?;
        let cfg = GraphRunConfig::from_toml(&meta.config, path)?;
        let data = serde_json::to_value(&cfg.data).map_err(|e| Error::Config(e.to_string()))?;
        let features = features_of(path, Some(&data), 0)?;
        Ok(Self {
            method: cfg.method.name().to_string(),
            source: Source::Checkpoint {
                cfg: Box::new(cfg),
                path: path.to_path_buf(),
            },
            features,
            device,
        })
    }

    /// Reads a graph file (`.csv`: adjacency matrix; else an edge list) and
    /// makes its node features as in training.
    pub fn read_graph(&self, file: &Path) -> Result<View> {
        let is_csv = file
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let b = if is_csv {
            adjacency_csv::read_adjacency(file)?
        } else {
            edge_list::read_edge_list(file, None)?
        };
        let (f, d) = self.features.apply(&b)?;
        Ok(b.build(f, d, None).tensors())
    }

    /// Node embeddings `[N, D]` (float32, CPU) of `view`; `file` is named in
    /// errors.
    pub fn embed_view(&self, view: &View, file: &Path) -> Result<Tensor> {
        let width = view.x.size().get(1).copied().unwrap_or(0);
        let v = view.to_device(self.device);
        let out = match &self.source {
            Source::Export {
                weights,
                file: wfile,
                in_features,
                encoder,
            } => {
                if width != *in_features {
                    return Err(Error::Data(format!(
                        "{}: its nodes have {width} features ({:?} features), the encoder takes \
                         {in_features}: {}",
                        file.display(),
                        self.features,
                        if matches!(self.features, Featurize::Degree) {
                            "the export does not fit this graph".to_string()
                        } else {
                            format!(
                                "with {:?} features the graph must have the {in_features} nodes \
                                 of the training graph",
                                self.features
                            )
                        }
                    )));
                }
                let vs = nn::VarStore::new(self.device);
                let enc = GraphEncoder::new(&(vs.root() / "encoder"), *in_features, encoder);
                load_strict(&vs, weights, wfile)?;
                tch::no_grad(|| enc.nodes(&v, false))
            }
            Source::Checkpoint { cfg, path } => {
                let m: Box<dyn GraphMethod> = match &cfg.method {
                    GraphMethodConfig::Grace(c) => {
                        Box::new(Grace::new(v.share(), &cfg.encoder, c, self.device))
                    }
                    GraphMethodConfig::Dgi(c) => {
                        Box::new(Dgi::new(v.share(), &cfg.encoder, c, self.device))
                    }
                    GraphMethodConfig::Graphcl(c) => {
                        Box::new(GraphCl::new(v.share(), &cfg.encoder, c, self.device))
                    }
                    GraphMethodConfig::Gae(c) => Box::new(Gae::new(
                        v.share(),
                        &cfg.encoder,
                        c,
                        cfg.trainer.seed,
                        self.device,
                    )),
                };
                selfsup_core::checkpoint::restore_model(path, m.var_store(), m.name()).map_err(
                    |e| {
                        Error::Data(format!(
                            "{} does not fit the graph {} ({width} features a node): {e}",
                            path.display(),
                            file.display()
                        ))
                    },
                )?;
                // GAE's embedding is its output layer's (see methods/gae.rs).
                match &cfg.method {
                    GraphMethodConfig::Gae(_) => m.represent(&v),
                    _ => tch::no_grad(|| m.encoder().nodes(&v, false)),
                }
            }
        };
        Ok(out.to_kind(Kind::Float).to_device(Device::Cpu))
    }

    /// Embeds every node of a graph file: ids are the node ids `0..N`.
    pub fn embed_file(&self, file: &Path) -> Result<Embedded> {
        let view = self.read_graph(file)?;
        let embeddings = self.embed_view(&view, file)?;
        Ok(Embedded {
            ids: (0..view.nodes()).map(|i| i.to_string()).collect(),
            embeddings,
            skipped: Vec::new(),
        })
    }
}
