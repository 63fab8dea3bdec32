//! Graph augmentations, seeded: every random choice comes from the ChaCha
//! generator handed in (derived from `(seed, step)` by the view sources),
//! never from libtorch's global generator, so views are reproducible and
//! tests may run in parallel.
//!
//! - [`edge_drop`]: remove each undirected edge with probability `p` (GRACE)
//! - [`feature_mask`]: zero each feature column with probability `p`, the
//!   same columns for every node (GRACE)
//! - [`node_drop`]: remove each node with probability `p`, with its edges,
//!   keeping at least one node per graph (GraphCL)
//! - [`subgraph`]: keep the nodes a random walk visits, a fraction of each
//!   graph (GraphCL's subgraph)
//!
//! Every augmentation returns a valid [`View`]: edge ids within the node
//! count, `u < v` kept, the batch vector of the surviving nodes.
pub mod edge_drop;
pub mod feature_mask;
pub mod node_drop;
pub mod subgraph;

use crate::graph::View;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// The augmentations of one view (0 = off); applied in the order
/// subgraph, node drop, edge drop, feature mask.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ViewAugment {
    /// Probability of dropping each edge.
    pub edge_drop: f64,
    /// Probability of masking each feature column.
    pub feature_mask: f64,
    /// Probability of dropping each node.
    pub node_drop: f64,
    /// Fraction of each graph's nodes a random walk keeps (0 = off).
    pub subgraph: f64,
}

impl ViewAugment {
    /// Checks the probabilities; the error names the key.
    pub fn validate(&self, which: &str) -> Result<(), String> {
        for (k, v) in [
            ("edge_drop", self.edge_drop),
            ("feature_mask", self.feature_mask),
            ("node_drop", self.node_drop),
            ("subgraph", self.subgraph),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(format!("[augment.{which}] {k} = {v} must be in [0, 1)"));
            }
        }
        Ok(())
    }

    /// Applies the augmentations to `v` (on the CPU).
    pub fn apply(&self, v: &View, rng: &mut ChaCha8Rng) -> View {
        let mut out = v.share();
        if self.subgraph > 0.0 {
            out = subgraph::random_walk_subgraph(&out, self.subgraph, rng);
        }
        if self.node_drop > 0.0 {
            out = node_drop::drop_nodes(&out, self.node_drop, rng);
        }
        if self.edge_drop > 0.0 {
            out = edge_drop::drop_edges(&out, self.edge_drop, rng);
        }
        if self.feature_mask > 0.0 {
            out = feature_mask::mask_features(&out, self.feature_mask, rng);
        }
        out
    }
}

/// `[augment]`: one set of augmentations per view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    pub view1: ViewAugment,
    pub view2: ViewAugment,
}

impl Default for AugmentConfig {
    /// GRACE's Cora settings.
    fn default() -> Self {
        Self {
            view1: ViewAugment {
                edge_drop: 0.2,
                feature_mask: 0.3,
                ..Default::default()
            },
            view2: ViewAugment {
                edge_drop: 0.4,
                feature_mask: 0.4,
                ..Default::default()
            },
        }
    }
}

/// Keeps the nodes where `keep` is true: the induced subgraph, renumbered.
pub(crate) fn induced(v: &View, keep: &[bool]) -> View {
    let mut new_id = vec![-1i64; keep.len()];
    let mut kept = Vec::new();
    for (i, &k) in keep.iter().enumerate() {
        if k {
            new_id[i] = kept.len() as i64;
            kept.push(i as i64);
        }
    }
    let (src, dst) = endpoints(v);
    let w = Vec::<f32>::try_from(&v.weights).expect("float weights");
    let (mut s, mut d, mut ww) = (Vec::new(), Vec::new(), Vec::new());
    for e in 0..src.len() {
        let (a, b) = (new_id[src[e] as usize], new_id[dst[e] as usize]);
        if a >= 0 && b >= 0 {
            s.push(a);
            d.push(b);
            ww.push(w[e]);
        }
    }
    let idx = Tensor::from_slice(&kept);
    let m = s.len() as i64;
    s.extend(d);
    View {
        x: v.x.index_select(0, &idx),
        edges: Tensor::from_slice(&s).view([2, m]),
        weights: Tensor::from_slice(&ww),
        batch: v.batch.index_select(0, &idx),
        num_graphs: v.num_graphs,
    }
}

/// The edges' endpoints as vectors.
pub(crate) fn endpoints(v: &View) -> (Vec<i64>, Vec<i64>) {
    (
        Vec::<i64>::try_from(v.edges.get(0)).expect("int64 edges"),
        Vec::<i64>::try_from(v.edges.get(1)).expect("int64 edges"),
    )
}

/// Node ranges of each graph of a view (nodes of one graph are contiguous).
pub(crate) fn graph_nodes(v: &View) -> Vec<Vec<usize>> {
    let batch = Vec::<i64>::try_from(&v.batch).expect("int64 batch");
    let mut out = vec![Vec::new(); v.num_graphs as usize];
    for (i, g) in batch.into_iter().enumerate() {
        out[g as usize].push(i);
    }
    out
}

#[cfg(test)]
pub(crate) mod testing {
    use crate::graph::{GraphBuilder, View};
    use rand::{Rng, SeedableRng};

    /// A random graph of `n` nodes and about `m` edges with 8 features.
    pub fn random_view(n: usize, m: usize, seed: u64) -> View {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut b = GraphBuilder::new(n);
        for _ in 0..m {
            b.add_edge(rng.gen_range(0..n), rng.gen_range(0..n), 1.0);
        }
        let f: Vec<f32> = (0..n * 8).map(|_| rng.gen_range(0.5..1.5)).collect();
        b.build(f, 8, None).tensors()
    }

    /// Checks a view is a valid graph.
    pub fn assert_valid(v: &View) {
        let n = v.nodes();
        assert_eq!(v.batch.size(), [n]);
        assert_eq!(v.weights.size(), [v.edge_count()]);
        if v.edge_count() > 0 {
            assert!(v.edges.min().int64_value(&[]) >= 0);
            assert!(v.edges.max().int64_value(&[]) < n);
            assert_eq!(
                v.edges
                    .get(0)
                    .lt_tensor(&v.edges.get(1))
                    .all()
                    .int64_value(&[]),
                1
            );
        }
    }
}
