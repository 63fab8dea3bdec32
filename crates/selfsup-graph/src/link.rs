//! Link prediction on frozen node embeddings.
//!
//! The protocol (as GAE, Kipf & Welling 2016, and PyTorch Geometric's
//! `RandomLinkSplit`):
//!
//! 1. [`split_edges`]: a seeded share of the graph's undirected edges is
//!    held out as validation and test positives and **removed from the
//!    graph the encoder trains and passes messages on** (both directions of
//!    an edge go together: the graph is undirected, as the readers build it);
//!    as many negatives, node pairs that are no edge of the *full* graph, are
//!    drawn for each part (distinct pairs, none shared between the parts).
//! 2. [`EdgeSplit::training_graph`]: the graph without the held-out edges;
//!    node features that are computed from the graph (`adjacency`, `degree`)
//!    are computed again from it, so that no held-out edge leaks through them.
//! 3. [`evaluate_link`]: each pair is scored by the dot product or the cosine
//!    of its two embeddings (the one of higher validation AUC is kept, per
//!    representation); [`auc`] (rank based, ties counted half) and
//!    [`average_precision`] (scikit-learn's definition) on the validation and
//!    the test pairs, for the pre-trained encoder, the same encoder with
//!    random weights, the raw node features, and the common-neighbours and
//!    Adamic-Adar heuristics on the training graph.
//!
//! `[eval.link]` ([`LinkConfig`]) switches it on for a pre-training run; the
//! run then trains on the training graph only.
use crate::eval::LinkConfig;
use crate::graph::{Featurize, Graph, GraphBuilder, View};
use crate::methods::GraphMethod;
use crate::readers::{DataConfig, Dataset};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use selfsup_core::{Error, Result};
use serde::Serialize;
use std::collections::HashSet;
use tch::{Kind, Tensor};

/// The `selfsup eval` protocol name of link prediction on a checkpoint.
pub const LINK: &str = "link";

/// Held-out node pairs of one part: edges (positives) and as many non-edges
/// (negatives), each pair `(u, v)` with `u < v`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pairs {
    pub positive: Vec<(usize, usize)>,
    pub negative: Vec<(usize, usize)>,
}

/// A graph's edges split for link prediction (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeSplit {
    /// Number of nodes.
    pub nodes: usize,
    /// The edges kept for training and message passing, with their weights.
    pub train: Vec<(usize, usize, f32)>,
    pub validation: Pairs,
    pub test: Pairs,
}

/// The undirected edges of `g`, `(u, v, w)` with `u < v`, in a fixed order.
fn edges_of(g: &Graph) -> Vec<(usize, usize, f32)> {
    let mut out: Vec<(usize, usize, f32)> = g
        .graph
        .edge_indices()
        .filter_map(|e| {
            g.graph.edge_endpoints(e).map(|(a, b)| {
                let (a, b) = (a.index(), b.index());
                (a.min(b), a.max(b), g.graph[e])
            })
        })
        .collect();
    out.sort_by_key(|x| (x.0, x.1));
    out
}

/// Draws `count` distinct node pairs `u < v` of `n` nodes that are not in
/// `taken` (the graph's edges); adds them to `taken`. The caller has checked
/// that enough such pairs exist. When they are few (at most four times
/// `count`) they are listed and shuffled, else drawn by rejection (each draw
/// then succeeds with probability at least 3/4).
fn draw_non_edges(
    n: usize,
    count: usize,
    free: u64,
    taken: &mut HashSet<(usize, usize)>,
    rng: &mut ChaCha8Rng,
) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(count);
    if free <= 4 * count as u64 {
        let mut all = Vec::with_capacity(free as usize);
        for u in 0..n {
            for v in u + 1..n {
                if !taken.contains(&(u, v)) {
                    all.push((u, v));
                }
            }
        }
        all.shuffle(rng);
        all.truncate(count);
        all.sort_unstable();
        taken.extend(all.iter().copied());
        return all;
    }
    while out.len() < count {
        let (a, b) = (rng.gen_range(0..n), rng.gen_range(0..n));
        if a == b {
            continue;
        }
        let pair = (a.min(b), a.max(b));
        if taken.insert(pair) {
            out.push(pair);
        }
    }
    out
}

/// Splits `g`'s undirected edges as `cfg` says (see the module doc):
/// `round(E * fraction)` positives per part (at least one each), as many
/// negatives, at least one edge left to train on. Deterministic by
/// `cfg.seed`. Errors, saying what to change, when the graph has too few
/// edges or too few non-edges for that.
pub fn split_edges(g: &Graph, cfg: &LinkConfig) -> Result<EdgeSplit> {
    cfg.validate().map_err(Error::Config)?;
    let n = g.nodes();
    let mut edges = edges_of(g);
    let e = edges.len();
    let n_val = ((e as f64 * cfg.validation_fraction).round() as usize).max(1);
    let n_test = ((e as f64 * cfg.test_fraction).round() as usize).max(1);
    if n_val + n_test >= e {
        return Err(Error::Data(format!(
            "link prediction: the graph has {e} edge(s); holding out {n_val} for validation and \
             {n_test} for test leaves none to train on; give a graph with at least 3 edges or \
             lower [eval.link] validation_fraction / test_fraction"
        )));
    }
    let pairs = (n as u64) * (n as u64).saturating_sub(1) / 2;
    let free = pairs - e as u64;
    let need = (n_val + n_test) as u64;
    if free < need {
        return Err(Error::Data(format!(
            "link prediction: the graph of {n} nodes has {free} node pair(s) that are no edge, \
             fewer than the {need} negatives the held-out edges need (as many as positives); \
             lower [eval.link] validation_fraction / test_fraction or give a sparser graph"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    edges.shuffle(&mut rng);
    let mut held = edges.split_off(e - n_val - n_test);
    let test_edges = held.split_off(n_val);
    let mut taken: HashSet<(usize, usize)> = HashSet::with_capacity(e + need as usize);
    taken.extend(
        edges
            .iter()
            .chain(&held)
            .chain(&test_edges)
            .map(|&(u, v, _)| (u, v)),
    );
    let positives = |p: &[(usize, usize, f32)]| {
        let mut out: Vec<(usize, usize)> = p.iter().map(|&(u, v, _)| (u, v)).collect();
        out.sort_unstable();
        out
    };
    let val_neg = draw_non_edges(n, n_val, free, &mut taken, &mut rng);
    let test_neg = draw_non_edges(n, n_test, free - n_val as u64, &mut taken, &mut rng);
    edges.sort_by_key(|x| (x.0, x.1));
    Ok(EdgeSplit {
        nodes: n,
        validation: Pairs {
            positive: positives(&held),
            negative: val_neg,
        },
        test: Pairs {
            positive: positives(&test_edges),
            negative: test_neg,
        },
        train: edges,
    })
}

/// The node features a `[data]` table computes from the graph itself
/// (`adjacency`, `degree`, and `identity`, which does not depend on the
/// edges); `None` when they are read from files (Planetoid) and kept.
pub fn graph_features(data: &DataConfig) -> Option<Featurize> {
    match data {
        DataConfig::Drosophila { features, .. }
        | DataConfig::Karate { features }
        | DataConfig::EdgeList { features, .. }
        | DataConfig::AdjacencyCsv { features, .. }
        | DataConfig::Mice { features, .. } => Some(*features),
        DataConfig::Qm9(_) | DataConfig::Planetoid { .. } => None,
    }
}

impl EdgeSplit {
    /// `g` with only the training edges (weights kept, labels kept);
    /// `features` computed again from those edges when given (see
    /// [`graph_features`]), else `g`'s own.
    pub fn training_graph(&self, g: &Graph, features: Option<Featurize>) -> Result<Graph> {
        if g.nodes() != self.nodes {
            return Err(Error::Data(format!(
                "link prediction: the edge split is of a graph of {} nodes, not {}",
                self.nodes,
                g.nodes()
            )));
        }
        let mut b = GraphBuilder::new(self.nodes);
        for &(u, v, w) in &self.train {
            b.add_edge(u, v, w);
        }
        let (f, d) = match features {
            Some(kind) => kind.apply(&b).map_err(Error::from)?,
            None => (g.features.clone(), g.feature_dim),
        };
        let mut out = b.build(f, d, g.labels.clone());
        // What the reader fixed up stays reported.
        out.fixups = g.fixups;
        Ok(out)
    }

    /// Training, validation and test sizes, for reports.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (
            self.train.len(),
            self.validation.positive.len(),
            self.test.positive.len(),
        )
    }
}

/// With `[eval.link]` in `cfg`, splits the node-level dataset's edges and
/// returns it with the training graph in place of the full one, and the
/// split; without it, the dataset unchanged and `None`. A graph-level
/// dataset with `[eval.link]` is an error.
pub fn hold_out(
    ds: Dataset,
    link: Option<&LinkConfig>,
    data: &DataConfig,
) -> Result<(Dataset, Option<EdgeSplit>)> {
    let Some(cfg) = link else {
        return Ok((ds, None));
    };
    match ds {
        Dataset::Nodes { graph, classes } => {
            let split = split_edges(&graph, cfg)?;
            let graph = split.training_graph(&graph, graph_features(data))?;
            Ok((Dataset::Nodes { graph, classes }, Some(split)))
        }
        Dataset::Graphs { .. } => Err(Error::Config(format!(
            "[eval.link]: {} is a graph-level dataset; link prediction needs one graph \
             (a node-level dataset)",
            data.name()
        ))),
    }
}

/// Area under the ROC curve of scores of positives `pos` and negatives
/// `neg`: the probability that a positive outscores a negative, ties
/// counted half (Mann-Whitney U from average ranks). NaN when either is
/// empty. Scores are ordered by `f64::total_cmp`.
pub fn auc(pos: &[f64], neg: &[f64]) -> f64 {
    if pos.is_empty() || neg.is_empty() {
        return f64::NAN;
    }
    let mut all: Vec<(f64, bool)> = pos
        .iter()
        .map(|&s| (s, true))
        .chain(neg.iter().map(|&s| (s, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0.total_cmp(&all[i].0).is_eq() {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their mean.
        let rank = (i + j) as f64 / 2.0 + 1.0;
        let positives = all[i..=j].iter().filter(|x| x.1).count();
        rank_sum += rank * positives as f64;
        i = j + 1;
    }
    let (p, q) = (pos.len() as f64, neg.len() as f64);
    (rank_sum - p * (p + 1.0) / 2.0) / (p * q)
}

/// Average precision as scikit-learn's `average_precision_score`:
/// `sum_k (R_k - R_{k-1}) P_k` over the distinct score thresholds, highest
/// first (tied scores enter together). NaN without positives.
pub fn average_precision(pos: &[f64], neg: &[f64]) -> f64 {
    if pos.is_empty() {
        return f64::NAN;
    }
    let mut all: Vec<(f64, bool)> = pos
        .iter()
        .map(|&s| (s, true))
        .chain(neg.iter().map(|&s| (s, false)))
        .collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    let p = pos.len() as f64;
    let (mut tp, mut fp, mut ap, mut recall) = (0.0, 0.0, 0.0, 0.0);
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0.total_cmp(&all[i].0).is_eq() {
            if all[j].1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            j += 1;
        }
        let r = tp / p;
        ap += (r - recall) * tp / (tp + fp);
        recall = r;
        i = j;
    }
    ap
}

/// How a pair of embeddings is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Similarity {
    /// `z_u . z_v` (GAE's decoder logit).
    Dot,
    /// `z_u . z_v / (|z_u| |z_v|)` (norms below 1e-12 count as 1e-12).
    Cosine,
}

/// Scores of `pairs` under `sim` from node embeddings `z` `[N, D]` (any
/// device), as `f64`. Pairs must name rows of `z`.
pub fn pair_scores(z: &Tensor, pairs: &[(usize, usize)], sim: Similarity) -> Vec<f64> {
    if pairs.is_empty() {
        return Vec::new();
    }
    let z = z.to_device(tch::Device::Cpu).to_kind(Kind::Double);
    let z = match sim {
        Similarity::Dot => z,
        Similarity::Cosine => {
            let norm = z
                .norm_scalaropt_dim(2, [1i64].as_slice(), true)
                .clamp_min(1e-12);
            z / norm
        }
    };
    let u: Vec<i64> = pairs.iter().map(|p| p.0 as i64).collect();
    let v: Vec<i64> = pairs.iter().map(|p| p.1 as i64).collect();
    let s = (z.index_select(0, &Tensor::from_slice(&u))
        * z.index_select(0, &Tensor::from_slice(&v)))
    .sum_dim_intlist([1i64].as_slice(), false, Kind::Double);
    Vec::<f64>::try_from(s).unwrap_or_default()
}

/// Neighbour lists of a graph (sorted), for the heuristics.
#[derive(Debug, Clone)]
pub struct Neighbours {
    lists: Vec<Vec<usize>>,
}

impl Neighbours {
    /// The neighbours of `n` nodes joined by `edges` (`(u, v, _)`, each
    /// undirected edge once; ids below `n`).
    pub fn new(n: usize, edges: &[(usize, usize, f32)]) -> Self {
        let mut lists = vec![Vec::new(); n];
        for &(u, v, _) in edges {
            if u < n && v < n && u != v {
                lists[u].push(v);
                lists[v].push(u);
            }
        }
        for l in &mut lists {
            l.sort_unstable();
            l.dedup();
        }
        Self { lists }
    }

    /// The common neighbours of `u` and `v`.
    fn common(&self, u: usize, v: usize) -> Vec<usize> {
        let empty = Vec::new();
        let (a, b) = (
            self.lists.get(u).unwrap_or(&empty),
            self.lists.get(v).unwrap_or(&empty),
        );
        let (mut i, mut j, mut out) = (0, 0, Vec::new());
        while i < a.len() && j < b.len() {
            match a[i].cmp(&b[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    out.push(a[i]);
                    i += 1;
                    j += 1;
                }
            }
        }
        out
    }

    /// `|N(u) & N(v)|`.
    pub fn common_neighbours(&self, u: usize, v: usize) -> f64 {
        self.common(u, v).len() as f64
    }

    /// Adamic-Adar: `sum over w in N(u) & N(v) of 1 / ln |N(w)|` (a common
    /// neighbour has degree at least 2, so the logarithm is positive).
    pub fn adamic_adar(&self, u: usize, v: usize) -> f64 {
        self.common(u, v)
            .into_iter()
            .map(|w| 1.0 / (self.lists[w].len() as f64).ln())
            .sum()
    }
}

/// AUC and average precision of one part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LinkScores {
    pub auc: f64,
    pub average_precision: f64,
}

impl LinkScores {
    fn of(pos: &[f64], neg: &[f64]) -> Self {
        Self {
            auc: auc(pos, neg),
            average_precision: average_precision(pos, neg),
        }
    }
}

/// One representation or heuristic: its validation and test figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkEntry {
    /// `pretrained`, `random_weights`, `raw_features`, `common_neighbours`,
    /// `adamic_adar`.
    pub name: String,
    /// The pair score chosen on validation AUC (`None` for heuristics).
    pub similarity: Option<Similarity>,
    pub validation: LinkScores,
    pub test: LinkScores,
}

/// The link-prediction evaluation of a run (in `summary.json` as `link`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkRow {
    /// Undirected edges the encoder trained and passed messages on.
    pub train_edges: usize,
    /// Held-out positives per part (as many negatives each).
    pub validation_edges: usize,
    pub test_edges: usize,
    /// Pre-trained, random weights, raw features, common neighbours,
    /// Adamic-Adar, in that order.
    pub entries: Vec<LinkEntry>,
}

impl LinkRow {
    /// The figures as the terminal shows them.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "  link prediction ({} training edges; {} validation and {} test edges held out, \
             as many non-edges; pair score chosen on validation AUC):",
            self.train_edges, self.validation_edges, self.test_edges
        )];
        for e in &self.entries {
            let sim = match e.similarity {
                Some(Similarity::Dot) => "dot",
                Some(Similarity::Cosine) => "cosine",
                None => "-",
            };
            lines.push(format!(
                "    {:<17} {:<6} validation AUC {:.4} AP {:.4}   test AUC {:.4} AP {:.4}",
                e.name.replace('_', " "),
                sim,
                e.validation.auc,
                e.validation.average_precision,
                e.test.auc,
                e.test.average_precision
            ));
        }
        lines
    }

    /// The entry named `name`.
    pub fn entry(&self, name: &str) -> Option<&LinkEntry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

/// Scores node embeddings `z` on `split`: dot and cosine on the validation
/// pairs, the one of higher validation AUC (dot on a tie) on the test pairs.
/// Non-finite scores are an error naming `name`.
pub fn embedding_entry(name: &str, z: &Tensor, split: &EdgeSplit) -> Result<LinkEntry> {
    let rows = z.size().first().copied().unwrap_or(0);
    if rows != split.nodes as i64 {
        return Err(Error::Data(format!(
            "link prediction: {name} gives {rows} node embeddings for a graph of {} nodes",
            split.nodes
        )));
    }
    let mut best: Option<(Similarity, LinkScores)> = None;
    for sim in [Similarity::Dot, Similarity::Cosine] {
        let pos = pair_scores(z, &split.validation.positive, sim);
        let neg = pair_scores(z, &split.validation.negative, sim);
        if pos.iter().chain(&neg).any(|s| !s.is_finite()) {
            return Err(Error::Data(format!(
                "link prediction: {name}: non-finite {sim:?} scores (the embeddings hold NaN or \
                 infinity); check the run's loss curve"
            )));
        }
        let s = LinkScores::of(&pos, &neg);
        if best.as_ref().is_none_or(|(_, b)| s.auc > b.auc) {
            best = Some((sim, s));
        }
    }
    let Some((sim, validation)) = best else {
        return Err(Error::Data("link prediction: no pair score".into()));
    };
    let test = LinkScores::of(
        &pair_scores(z, &split.test.positive, sim),
        &pair_scores(z, &split.test.negative, sim),
    );
    Ok(LinkEntry {
        name: name.into(),
        similarity: Some(sim),
        validation,
        test,
    })
}

/// A heuristic's entry: `f(u, v)` on the validation and test pairs.
pub fn heuristic_entry(
    name: &str,
    split: &EdgeSplit,
    f: impl Fn(usize, usize) -> f64,
) -> LinkEntry {
    let part = |p: &Pairs| {
        let pos: Vec<f64> = p.positive.iter().map(|&(u, v)| f(u, v)).collect();
        let neg: Vec<f64> = p.negative.iter().map(|&(u, v)| f(u, v)).collect();
        LinkScores::of(&pos, &neg)
    };
    LinkEntry {
        name: name.into(),
        similarity: None,
        validation: part(&split.validation),
        test: part(&split.test),
    }
}

/// The whole evaluation: the frozen embeddings of `trained` and `random`
/// (same architecture, random weights) and the raw features of `train_view`
/// (the training graph, on the training device), then common neighbours and
/// Adamic-Adar on the training edges.
pub fn evaluate_link(
    trained: &dyn GraphMethod,
    random: &dyn GraphMethod,
    train_view: &View,
    split: &EdgeSplit,
) -> Result<LinkRow> {
    let nb = Neighbours::new(split.nodes, &split.train);
    let entries = vec![
        embedding_entry("pretrained", &trained.represent(train_view), split)?,
        embedding_entry("random_weights", &random.represent(train_view), split)?,
        embedding_entry("raw_features", &train_view.x, split)?,
        heuristic_entry("common_neighbours", split, |u, v| {
            nb.common_neighbours(u, v)
        }),
        heuristic_entry("adamic_adar", split, |u, v| nb.adamic_adar(u, v)),
    ];
    let (train_edges, validation_edges, test_edges) = split.sizes();
    Ok(LinkRow {
        train_edges,
        validation_edges,
        test_edges,
        entries,
    })
}

#[cfg(test)]
#[path = "link/tests.rs"]
mod tests;
