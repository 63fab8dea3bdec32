//! Node dropping (GraphCL, You et al. 2020): each node is removed with
//! probability `p` together with its edges; a graph that would lose every
//! node keeps one (chosen at random), so no graph of a batch vanishes.
use super::{graph_nodes, induced};
use crate::graph::View;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// `v` without the dropped nodes (renumbered).
pub fn drop_nodes(v: &View, p: f64, rng: &mut ChaCha8Rng) -> View {
    let mut keep = vec![false; v.nodes() as usize];
    for nodes in graph_nodes(v) {
        let mut any = false;
        for &i in &nodes {
            keep[i] = rng.gen::<f64>() >= p;
            any |= keep[i];
        }
        if !any && !nodes.is_empty() {
            keep[nodes[rng.gen_range(0..nodes.len())]] = true;
        }
    }
    induced(v, &keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::testing::{assert_valid, random_view};
    use rand::SeedableRng;
    use tch::Kind;

    #[test]
    fn hits_the_drop_rate_and_keeps_every_graph() {
        let v = random_view(4000, 12_000, 3);
        let out = drop_nodes(&v, 0.2, &mut ChaCha8Rng::seed_from_u64(1));
        assert_valid(&out);
        let rate = 1.0 - out.nodes() as f64 / 4000.0;
        assert!((rate - 0.2).abs() < 0.02, "{rate}");
        assert!(out.edge_count() < v.edge_count());
        // Tiny graphs side by side: each keeps at least one node.
        let small = random_view(2, 1, 4);
        let many: Vec<&View> = std::iter::repeat_n(&small, 50).collect();
        let batch = View::batch_of(&many);
        let out = drop_nodes(&batch, 0.9, &mut ChaCha8Rng::seed_from_u64(2));
        assert_valid(&out);
        let counts = out.batch.bincount::<&tch::Tensor>(None, 50);
        assert_eq!(counts.ge(1).all().int64_value(&[]), 1);
        assert!(counts.sum(Kind::Int64).int64_value(&[]) < 100);
    }
}
