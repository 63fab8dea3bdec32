//! Readers: files in their own formats -> [`Graph`]s, with labels or targets.
//!
//! - [`edge_list`]: `u v [w]` lines; [`adjacency_csv`]: a square matrix and a
//!   node-labels file; [`planetoid`]: Cora / CiteSeer / PubMed's `ind.*` files
//! - registry datasets: [`drosophila`] (node classes), [`mice`] (graph
//!   classes), [`qm9`] (graph regression), [`karate`] (node classes, built in)
//!
//! [`DataConfig`] is the `[data]` table of a run config; [`load`] reads what
//! it names, relative to the data root.
pub mod adjacency_csv;
pub mod drosophila;
pub mod edge_list;
pub mod karate;
pub mod mice;
pub mod planetoid;
pub mod qm9;

use crate::error::GraphResult;
use crate::graph::{Featurize, FixUps, Graph};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

fn graspologic() -> PathBuf {
    PathBuf::from("graspologic")
}

/// `[data]`: where the graph comes from (`format = ...`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DataConfig {
    /// The Drosophila larva connectome (graspologic), node classes.
    Drosophila {
        #[serde(default)]
        hemisphere: drosophila::Hemisphere,
        #[serde(default)]
        features: Featurize,
        /// The `graspologic` dataset folder, relative to the data root.
        #[serde(default = "graspologic")]
        dir: PathBuf,
    },
    /// The 32 mouse connectomes (graspologic), graph classes.
    Mice {
        #[serde(default)]
        features: Featurize,
        #[serde(default = "graspologic")]
        dir: PathBuf,
    },
    /// Zachary's karate club (built in), node classes.
    Karate {
        #[serde(default)]
        features: Featurize,
    },
    /// A fixed subset of QM9, graph regression.
    Qm9(qm9::Qm9Config),
    /// An edge list, with an optional node-labels file.
    EdgeList {
        path: PathBuf,
        #[serde(default)]
        labels: Option<PathBuf>,
        #[serde(default)]
        num_nodes: Option<usize>,
        #[serde(default)]
        features: Featurize,
    },
    /// A square adjacency matrix, with an optional node-labels file.
    AdjacencyCsv {
        path: PathBuf,
        #[serde(default)]
        labels: Option<PathBuf>,
        #[serde(default)]
        features: Featurize,
    },
    /// Planetoid files `ind.<name>.*` in `dir` (Cora, CiteSeer, PubMed).
    Planetoid { dir: PathBuf, name: String },
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig::Drosophila {
            hemisphere: Default::default(),
            features: Default::default(),
            dir: graspologic(),
        }
    }
}

/// What a graph-level dataset predicts.
#[derive(Debug, Clone)]
pub enum Targets {
    Classes { ids: Vec<i64>, names: Vec<String> },
    Values { values: Vec<f64>, unit: String },
}

/// A dataset as read.
#[derive(Debug)]
pub enum Dataset {
    /// One graph; node classes in `graph.labels` (when it has them).
    Nodes { graph: Graph, classes: Vec<String> },
    /// Many graphs with one target each.
    Graphs {
        graphs: Vec<Graph>,
        targets: Targets,
    },
}

/// What reading did, for the summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReadReport {
    pub name: String,
    pub graphs: usize,
    pub nodes: usize,
    pub edges: usize,
    pub feature_dim: usize,
    pub fixups: FixUps,
    /// Records skipped because the config allows it (unparsable SMILES).
    pub skipped: usize,
}

impl DataConfig {
    /// A short name for reports.
    pub fn name(&self) -> String {
        match self {
            DataConfig::Drosophila { hemisphere, .. } => {
                format!("drosophila-{hemisphere:?}").to_lowercase()
            }
            DataConfig::Mice { .. } => "mice".into(),
            DataConfig::Karate { .. } => "karate".into(),
            DataConfig::Qm9(c) => format!("qm9-{}", c.molecules),
            DataConfig::EdgeList { path, .. } | DataConfig::AdjacencyCsv { path, .. } => {
                path.display().to_string()
            }
            DataConfig::Planetoid { name, .. } => name.clone(),
        }
    }
}

fn with_labels(
    b: crate::graph::GraphBuilder,
    labels: Option<&Path>,
    features: Featurize,
) -> GraphResult<Dataset> {
    let (f, d) = features.apply(&b)?;
    Ok(match labels {
        Some(p) => {
            let l = adjacency_csv::read_node_labels(p, b.node_count())?;
            Dataset::Nodes {
                graph: b.build(f, d, Some(l.ids)),
                classes: l.classes,
            }
        }
        None => Dataset::Nodes {
            graph: b.build(f, d, None),
            classes: Vec::new(),
        },
    })
}

/// Reads the dataset `cfg` names, paths relative to `root`.
pub fn load(cfg: &DataConfig, root: &Path) -> GraphResult<(Dataset, ReadReport)> {
    let mut skipped = 0;
    let ds = match cfg {
        DataConfig::Drosophila {
            hemisphere,
            features,
            dir,
        } => {
            let (graph, classes) =
                drosophila::read_drosophila(&root.join(dir), *hemisphere, *features)?;
            Dataset::Nodes { graph, classes }
        }
        DataConfig::Mice { features, dir } => {
            let (graphs, ids, names) = mice::read_mice(&root.join(dir), *features)?;
            Dataset::Graphs {
                graphs,
                targets: Targets::Classes { ids, names },
            }
        }
        DataConfig::Karate { features } => {
            let (graph, classes) = karate::karate_club(*features)?;
            Dataset::Nodes { graph, classes }
        }
        DataConfig::Qm9(c) => {
            let set = qm9::read_qm9(root, c)?;
            skipped = set.skipped;
            Dataset::Graphs {
                graphs: set.graphs,
                targets: Targets::Values {
                    values: set.targets,
                    unit: c.target_unit.clone(),
                },
            }
        }
        DataConfig::EdgeList {
            path,
            labels,
            num_nodes,
            features,
        } => {
            let b = edge_list::read_edge_list(&root.join(path), *num_nodes)?;
            with_labels(
                b,
                labels.as_ref().map(|l| root.join(l)).as_deref(),
                *features,
            )?
        }
        DataConfig::AdjacencyCsv {
            path,
            labels,
            features,
        } => {
            let b = adjacency_csv::read_adjacency(&root.join(path))?;
            with_labels(
                b,
                labels.as_ref().map(|l| root.join(l)).as_deref(),
                *features,
            )?
        }
        DataConfig::Planetoid { dir, name } => {
            let (graph, classes) = planetoid::read_planetoid(&root.join(dir), name)?;
            Dataset::Nodes { graph, classes }
        }
    };
    let graphs: Vec<&Graph> = match &ds {
        Dataset::Nodes { graph, .. } => vec![graph],
        Dataset::Graphs { graphs, .. } => graphs.iter().collect(),
    };
    let mut fixups = FixUps::default();
    graphs.iter().for_each(|g| fixups.merge(&g.fixups));
    let report = ReadReport {
        name: cfg.name(),
        graphs: graphs.len(),
        nodes: graphs.iter().map(|g| g.nodes()).sum(),
        edges: graphs.iter().map(|g| g.edges()).sum(),
        feature_dim: graphs.first().map_or(0, |g| g.feature_dim),
        fixups,
        skipped,
    };
    Ok((ds, report))
}
