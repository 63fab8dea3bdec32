//! Edge dropping (GRACE; DropEdge, Rong et al. 2020): each undirected edge
//! is removed with probability `p`, so both directions go together.
use crate::graph::View;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

/// `v` without the dropped edges.
pub fn drop_edges(v: &View, p: f64, rng: &mut ChaCha8Rng) -> View {
    let keep: Vec<bool> = (0..v.edge_count()).map(|_| rng.gen::<f64>() >= p).collect();
    let idx = Tensor::from_slice(&keep).nonzero().squeeze_dim(1);
    View {
        x: v.x.shallow_clone(),
        edges: v.edges.index_select(1, &idx),
        weights: v.weights.index_select(0, &idx),
        batch: v.batch.shallow_clone(),
        num_graphs: v.num_graphs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::testing::{assert_valid, random_view};
    use rand::SeedableRng;

    #[test]
    fn hits_the_drop_rate_and_keeps_the_graph_valid() {
        let v = random_view(2000, 20_000, 1);
        let before = v.edge_count() as f64;
        let out = drop_edges(&v, 0.3, &mut ChaCha8Rng::seed_from_u64(5));
        assert_valid(&out);
        let rate = 1.0 - out.edge_count() as f64 / before;
        assert!((rate - 0.3).abs() < 0.015, "{rate}");
        assert_eq!(out.nodes(), v.nodes());
        let again = drop_edges(&v, 0.3, &mut ChaCha8Rng::seed_from_u64(5));
        assert!(again.edges.equal(&out.edges), "seeded");
    }
}
