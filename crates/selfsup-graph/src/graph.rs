//! Graphs on `petgraph`, and the tensors the encoders need, built once.
//!
//! A [`Graph`] is undirected and weighted, with no self-loop and no duplicate
//! edge: [`GraphBuilder`] symmetrises directed input, **drops self-loops**
//! (the GCN adds its own, once) and **merges duplicate edges by summing their
//! weights** (`u v` and `v u` in a directed edge list become one undirected
//! edge of weight `w(u,v) + w(v,u)`), and counts both in [`FixUps`], which the
//! readers report. An edge naming a node beyond the node count is an error
//! the reader raises with file and line, never a fix-up.
//!
//! [`Graph::tensors`] converts it once into a [`View`]: node features
//! `[N, F]`, the undirected edge list `[2, E]` (`u < v`), weights `[E]`,
//! and the graph id of every node (`batch`, all zero for one graph).
//! Augmentations work on views; [`View::directed`] gives the message-passing
//! edge index (both directions) and [`gcn_norm`] the symmetric normalisation
//! `D^-1/2 (A + I) D^-1/2` as per-edge coefficients. [`View::batch_of`] puts
//! several graphs side by side as one disjoint graph for graph-level work.
use crate::error::{GraphError, GraphResult};
use petgraph::graph::{NodeIndex, UnGraph};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use tch::{Kind, Tensor};

/// The most nodes a graph read from a file may have (node ids `0..2^24`):
/// readers refuse larger ids and node counts, naming the file and line,
/// before allocating anything sized by them.
pub const MAX_NODES: usize = 1 << 24;

/// The most entries of a dense matrix built from sizes a file states rather
/// than from its bytes (one-hot / adjacency node features `N x N`, Planetoid's
/// sparse feature matrices made dense): `2^26` (256 MiB of `f32`).
pub const MAX_DENSE_ENTRIES: usize = 1 << 26;

/// Where a builder's node count comes from, for errors about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub path: PathBuf,
    /// The line that set the node count (an edge list's largest id).
    pub line: Option<usize>,
    /// What sets the count, e.g. "node 60000 is the largest id".
    pub what: String,
}

/// What graph construction corrected, counted (never silent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FixUps {
    /// `u u` edges dropped.
    pub self_loops: usize,
    /// Edges seen again (either direction) and merged into the first.
    pub duplicate_edges: usize,
}

impl FixUps {
    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &FixUps) {
        self.self_loops += other.self_loops;
        self.duplicate_edges += other.duplicate_edges;
    }
}

/// An undirected weighted graph with node features and optional node labels.
#[derive(Debug, Clone)]
pub struct Graph {
    pub graph: UnGraph<(), f32>,
    /// Row-major `[N, feature_dim]`.
    pub features: Vec<f32>,
    pub feature_dim: usize,
    /// One class id per node, when the dataset has node classes.
    pub labels: Option<Vec<i64>>,
    pub fixups: FixUps,
}

/// Collects edges into a [`Graph`], applying and counting the fix-ups.
#[derive(Debug)]
pub struct GraphBuilder {
    graph: UnGraph<(), f32>,
    index: HashMap<(u32, u32), petgraph::graph::EdgeIndex>,
    fixups: FixUps,
    origin: Option<Origin>,
}

impl GraphBuilder {
    /// A graph of `nodes` isolated nodes. Readers check `nodes` against
    /// [`MAX_NODES`] first, naming the file.
    pub fn new(nodes: usize) -> Self {
        let mut graph = UnGraph::with_capacity(nodes, 0);
        for _ in 0..nodes {
            graph.add_node(());
        }
        Self {
            graph,
            index: HashMap::new(),
            fixups: FixUps::default(),
            origin: None,
        }
    }

    /// Records where the node count comes from (named by feature errors).
    pub fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = Some(origin);
        self
    }

    /// Where the node count comes from, when the reader said.
    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    /// Number of undirected edges so far.
    pub fn edge_count(&self) -> usize {
        self.graph.edge_count()
    }

    /// What was fixed up so far.
    pub fn fixups(&self) -> FixUps {
        self.fixups
    }

    /// An error naming `path` when the graph cannot be trained on: no edge
    /// left (none given, or only self-loops, which are dropped), or a merged
    /// weight that overflowed to infinity (duplicate edges sum their weights).
    pub fn check_trainable(&self, path: &std::path::Path) -> GraphResult<()> {
        if self.edge_count() == 0 {
            let why = match self.fixups.self_loops {
                0 => "it has no edge".to_string(),
                k => format!(
                    "its only edges are {k} self-loop(s), which are dropped (the GCN adds its \
                     own)"
                ),
            };
            return Err(GraphError::format(
                path,
                format!(
                    "no edge left to train on: {why}; give a graph with edges between distinct \
                     nodes"
                ),
            ));
        }
        if let Some(e) = self
            .graph
            .edge_indices()
            .find(|&e| !self.graph[e].is_finite())
        {
            let (u, v) = self
                .graph
                .edge_endpoints(e)
                .map_or((0, 0), |(u, v)| (u.index(), v.index()));
            return Err(GraphError::format(
                path,
                format!(
                    "edge {u} - {v}: its weights (repeated edges are summed) overflow to {}; \
                     scale the weights down",
                    self.graph[e]
                ),
            ));
        }
        Ok(())
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    /// Adds isolated nodes until there are `nodes` (graphs of one dataset
    /// share a vertex set that a file may not use entirely).
    pub fn grow(&mut self, nodes: usize) {
        while self.graph.node_count() < nodes {
            self.graph.add_node(());
        }
    }

    /// Adds edge `u - v` of weight `w`. Both must be `< node_count()` (the
    /// readers check first, to name the line); a self-loop is dropped and
    /// counted, a repeated edge adds its weight to the first one.
    pub fn add_edge(&mut self, u: usize, v: usize, w: f32) {
        assert!(u < self.node_count() && v < self.node_count());
        if u == v {
            self.fixups.self_loops += 1;
            return;
        }
        let key = (u.min(v) as u32, u.max(v) as u32);
        if let Some(&e) = self.index.get(&key) {
            self.fixups.duplicate_edges += 1;
            self.graph[e] += w;
        } else {
            let e = self.graph.add_edge(
                NodeIndex::new(key.0 as usize),
                NodeIndex::new(key.1 as usize),
                w,
            );
            self.index.insert(key, e);
        }
    }

    /// The graph with `features` (`[N, dim]`, row-major) and `labels`.
    pub fn build(self, features: Vec<f32>, feature_dim: usize, labels: Option<Vec<i64>>) -> Graph {
        assert_eq!(features.len(), self.graph.node_count() * feature_dim);
        Graph {
            graph: self.graph,
            features,
            feature_dim,
            labels,
            fixups: self.fixups,
        }
    }
}

/// Node features a featureless graph is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Featurize {
    /// The node's row of the weighted adjacency matrix, `log(1 + w)`: who
    /// the node connects to (meaningful across graphs whose nodes are aligned,
    /// like atlas-registered connectomes).
    #[default]
    Adjacency,
    /// One-hot node ids.
    Identity,
    /// `[1, log(1 + degree), log(1 + weighted degree)]`.
    Degree,
}

impl Featurize {
    /// Features `[N, dim]` of `b`'s graph and their width. `adjacency` and
    /// `identity` are `N x N`: above [`MAX_DENSE_ENTRIES`] entries they are
    /// refused (naming where the node count comes from) before allocating.
    pub fn apply(self, b: &GraphBuilder) -> GraphResult<(Vec<f32>, usize)> {
        let g = &b.graph;
        let n = g.node_count();
        if matches!(self, Featurize::Adjacency | Featurize::Identity) {
            let entries = n.checked_mul(n).filter(|&e| e <= MAX_DENSE_ENTRIES);
            if entries.is_none() {
                let name = if self == Featurize::Adjacency {
                    "adjacency"
                } else {
                    "identity"
                };
                let reason = format!(
                    "`features = \"{name}\"` would be a dense {n} x {n} matrix, above the \
                     limit of {MAX_DENSE_ENTRIES} entries (a graph of at most 8192 nodes); use \
                     `features = \"degree\"`, give node features, or renumber the node ids \
                     contiguously from 0"
                );
                return Err(match &b.origin {
                    Some(o) => {
                        let reason = format!("{}: {reason}", o.what);
                        match o.line {
                            Some(line) => GraphError::line(&o.path, line, reason),
                            None => GraphError::format(&o.path, reason),
                        }
                    }
                    None => GraphError::Invalid(reason),
                });
            }
        }
        Ok(match self {
            Featurize::Adjacency => {
                let mut f = vec![0f32; n * n];
                for e in g.edge_indices() {
                    if let Some((u, v)) = g.edge_endpoints(e) {
                        let w = g[e].abs().ln_1p();
                        f[u.index() * n + v.index()] = w;
                        f[v.index() * n + u.index()] = w;
                    }
                }
                (f, n)
            }
            Featurize::Identity => {
                let mut f = vec![0f32; n * n];
                for i in 0..n {
                    f[i * n + i] = 1.0;
                }
                (f, n)
            }
            Featurize::Degree => {
                let mut f = Vec::with_capacity(n * 3);
                for u in g.node_indices() {
                    let (d, w) = g
                        .edges(u)
                        .fold((0f32, 0f32), |(d, w), e| (d + 1.0, w + e.weight().abs()));
                    f.extend_from_slice(&[1.0, d.ln_1p(), w.ln_1p()]);
                }
                if let Some(k) = f.iter().position(|v| !v.is_finite()) {
                    let reason = format!(
                        "node {}: its weighted degree overflows a 32-bit float; scale the edge \
                         weights down",
                        k / 3
                    );
                    return Err(match &b.origin {
                        Some(o) => GraphError::format(&o.path, reason),
                        None => GraphError::Invalid(reason),
                    });
                }
                (f, 3)
            }
        })
    }
}

/// One graph, or several side by side, as tensors (on the CPU unless moved).
#[derive(Debug)]
pub struct View {
    /// `[N, F]` float.
    pub x: Tensor,
    /// `[2, E]` int64, each undirected edge once.
    pub edges: Tensor,
    /// `[E]` float.
    pub weights: Tensor,
    /// `[N]` int64: which graph each node belongs to.
    pub batch: Tensor,
    pub num_graphs: i64,
}

/// How many tensors one view takes in a `Batch` (see [`View::push_into`]).
pub const VIEW_TENSORS: usize = 4;

impl Graph {
    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.graph.node_count()
    }

    /// Number of undirected edges.
    pub fn edges(&self) -> usize {
        self.graph.edge_count()
    }

    /// The tensors of this graph (converted once, then reused).
    pub fn tensors(&self) -> View {
        let n = self.nodes() as i64;
        let mut src = Vec::with_capacity(self.edges());
        let mut dst = Vec::with_capacity(self.edges());
        let mut w = Vec::with_capacity(self.edges());
        for e in self.graph.edge_indices() {
            let (u, v) = self.graph.edge_endpoints(e).expect("edge of the graph");
            src.push(u.index() as i64);
            dst.push(v.index() as i64);
            w.push(self.graph[e]);
        }
        let e = src.len() as i64;
        src.extend(dst);
        View {
            x: Tensor::from_slice(&self.features).view([n, self.feature_dim as i64]),
            edges: Tensor::from_slice(&src).view([2, e]),
            weights: Tensor::from_slice(&w),
            batch: Tensor::zeros([n], (Kind::Int64, tch::Device::Cpu)),
            num_graphs: 1,
        }
    }
}

impl View {
    /// Number of nodes.
    pub fn nodes(&self) -> i64 {
        self.x.size()[0]
    }

    /// Number of undirected edges.
    pub fn edge_count(&self) -> i64 {
        self.edges.size()[1]
    }

    /// The message-passing edge index `[2, 2E]` (`u -> v` and `v -> u`) and
    /// its weights `[2E]`.
    pub fn directed(&self) -> (Tensor, Tensor) {
        let flipped = self.edges.flip([0]);
        (
            Tensor::cat(&[&self.edges, &flipped], 1),
            Tensor::cat(&[&self.weights, &self.weights], 0),
        )
    }

    /// Several views as one disjoint graph: node ids shifted, `batch` set
    /// to the position of each view in `views`.
    pub fn batch_of(views: &[&View]) -> View {
        let mut offset = 0i64;
        let mut edges = Vec::with_capacity(views.len());
        let mut batch = Vec::with_capacity(views.len());
        for (g, v) in views.iter().enumerate() {
            edges.push(&v.edges + offset);
            batch.push(Tensor::full(
                [v.nodes()],
                g as i64,
                (Kind::Int64, tch::Device::Cpu),
            ));
            offset += v.nodes();
        }
        let xs: Vec<&Tensor> = views.iter().map(|v| &v.x).collect();
        let ws: Vec<&Tensor> = views.iter().map(|v| &v.weights).collect();
        View {
            x: Tensor::cat(&xs, 0),
            edges: Tensor::cat(&edges, 1),
            weights: Tensor::cat(&ws, 0),
            batch: Tensor::cat(&batch, 0),
            num_graphs: views.len() as i64,
        }
    }

    /// Appends the view's [`VIEW_TENSORS`] tensors to a `Batch`'s list:
    /// `x, edges, weights` and the batch vector with the graph count
    /// appended (a graph may have no node left after augmentation, so the
    /// count cannot be read off the batch vector).
    pub fn push_into(&self, out: &mut Vec<Tensor>) {
        out.push(self.x.shallow_clone());
        out.push(self.edges.shallow_clone());
        out.push(self.weights.shallow_clone());
        // The graph count rides at the end of the batch vector.
        out.push(Tensor::cat(
            &[&self.batch, &Tensor::from_slice(&[self.num_graphs])],
            0,
        ));
    }

    /// The view stored by [`View::push_into`] at `ts[0..VIEW_TENSORS]`.
    pub fn from_slice(ts: &[Tensor]) -> View {
        let n = ts[3].size()[0] - 1;
        View {
            x: ts[0].shallow_clone(),
            edges: ts[1].shallow_clone(),
            weights: ts[2].shallow_clone(),
            batch: ts[3].narrow(0, 0, n),
            num_graphs: ts[3].int64_value(&[n]),
        }
    }

    /// The view on `device`.
    pub fn to_device(&self, device: tch::Device) -> View {
        View {
            x: self.x.to_device(device),
            edges: self.edges.to_device(device),
            weights: self.weights.to_device(device),
            batch: self.batch.to_device(device),
            num_graphs: self.num_graphs,
        }
    }

    /// A shallow copy (tensors shared).
    pub fn share(&self) -> View {
        View {
            x: self.x.shallow_clone(),
            edges: self.edges.shallow_clone(),
            weights: self.weights.shallow_clone(),
            batch: self.batch.shallow_clone(),
            num_graphs: self.num_graphs,
        }
    }
}

/// GCN propagation coefficients (Kipf & Welling 2017): self-loops added to
/// the directed edge index `[2, M]` of a graph of `n` nodes, then
/// `w_uv / sqrt(deg(u) deg(v))` with degrees counted on `A + I` (weighted
/// when `weights` is given, else 1 per edge). Returns the index with the
/// loops appended `[2, M + n]` and the coefficients `[M + n]`. O(M), no
/// dense matrix.
pub fn gcn_norm(edge_index: &Tensor, weights: Option<&Tensor>, n: i64) -> (Tensor, Tensor) {
    let device = edge_index.device();
    let loops = Tensor::arange(n, (Kind::Int64, device));
    let index = Tensor::cat(&[edge_index, &Tensor::stack(&[&loops, &loops], 0)], 1);
    let m = edge_index.size()[1];
    let w = match weights {
        Some(w) => Tensor::cat(
            &[
                w.to_kind(Kind::Float),
                Tensor::ones([n], (Kind::Float, device)),
            ],
            0,
        ),
        None => Tensor::ones([m + n], (Kind::Float, device)),
    };
    let dst = index.get(1);
    let deg = Tensor::zeros([n], (Kind::Float, device)).index_add(0, &dst, &w);
    let inv_sqrt = deg.clamp_min(1e-12).rsqrt();
    let coef = inv_sqrt.index_select(0, &index.get(0)) * &w * inv_sqrt.index_select(0, &dst);
    (index, coef)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Path 0 - 1 - 2 plus the edge 1 - 3 (a star on node 1 with a tail):
    /// degrees on A + I: [2, 4, 2, 2].
    fn small() -> Graph {
        let mut b = GraphBuilder::new(4);
        b.add_edge(0, 1, 1.0);
        b.add_edge(1, 2, 1.0);
        b.add_edge(3, 1, 1.0);
        b.add_edge(2, 2, 1.0); // self-loop: dropped
        b.add_edge(1, 0, 1.0); // duplicate: merged
        let (f, d) = Featurize::Identity.apply(&b).unwrap();
        b.build(f, d, None)
    }

    #[test]
    fn builder_drops_self_loops_and_merges_duplicates() {
        let g = small();
        assert_eq!(g.edges(), 3);
        assert_eq!(
            g.fixups,
            FixUps {
                self_loops: 1,
                duplicate_edges: 1
            }
        );
        let e01 = g
            .graph
            .find_edge(NodeIndex::new(0), NodeIndex::new(1))
            .unwrap();
        assert_eq!(g.graph[e01], 2.0);
    }

    #[test]
    fn normalised_adjacency_matches_hand_computed_values() {
        let g = small();
        let v = g.tensors();
        let (ei, _) = v.directed();
        let (index, coef) = gcn_norm(&ei, None, 4);
        // Dense D^-1/2 (A + I) D^-1/2, from the coefficients.
        let dense = Tensor::zeros([4, 4], (Kind::Float, tch::Device::Cpu)).index_put(
            &[Some(index.get(1)), Some(index.get(0))],
            &coef,
            true,
        );
        let s8 = 1.0 / 8f64.sqrt();
        #[rustfmt::skip]
        let expected = [
            0.5, s8,   0.0, 0.0,
            s8,  0.25, s8,  s8,
            0.0, s8,   0.5, 0.0,
            0.0, s8,   0.0, 0.5,
        ];
        let got = Vec::<f32>::try_from(dense.view([-1])).unwrap();
        for (g, e) in got.iter().zip(expected) {
            assert!((*g as f64 - e).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn views_round_trip_through_a_batch_and_batch_side_by_side() {
        let g = small();
        let v = g.tensors();
        let both = View::batch_of(&[&v, &v]);
        assert_eq!(both.nodes(), 8);
        assert_eq!(both.num_graphs, 2);
        assert_eq!(both.edges.max().int64_value(&[]), 7);
        let mut ts = Vec::new();
        both.push_into(&mut ts);
        let back = View::from_slice(&ts);
        assert_eq!(back.num_graphs, 2);
        assert_eq!(back.batch.size(), [8]);
        assert_eq!(back.batch.int64_value(&[7]), 1);
    }
}
