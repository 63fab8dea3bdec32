//! Random-walk subgraphs (GraphCL's "subgraph"; PyGCL's `RWSampling`): in
//! each graph, a walk starts at a random node and moves to random
//! neighbours, jumping to a random visited node when stuck (and to a random
//! unvisited one when the visited part has no way out), until it has
//! visited `ceil(keep * n)` nodes; the view is the induced subgraph.
use super::{endpoints, graph_nodes, induced};
use crate::graph::View;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The random-walk subgraph of every graph of `v`, `keep` of its nodes.
pub fn random_walk_subgraph(v: &View, keep: f64, rng: &mut ChaCha8Rng) -> View {
    let n = v.nodes() as usize;
    let (src, dst) = endpoints(v);
    let mut adj = vec![Vec::new(); n];
    for (&a, &b) in src.iter().zip(&dst) {
        adj[a as usize].push(b as usize);
        adj[b as usize].push(a as usize);
    }
    let mut mask = vec![false; n];
    for nodes in graph_nodes(v) {
        if nodes.is_empty() {
            continue;
        }
        let target = ((keep * nodes.len() as f64).ceil() as usize).clamp(1, nodes.len());
        let mut visited = vec![nodes[rng.gen_range(0..nodes.len())]];
        mask[visited[0]] = true;
        let mut at = visited[0];
        let mut stuck = 0;
        while visited.len() < target {
            let next = if adj[at].is_empty() {
                None
            } else {
                Some(adj[at][rng.gen_range(0..adj[at].len())])
            };
            match next {
                Some(u) if !mask[u] => {
                    mask[u] = true;
                    visited.push(u);
                    at = u;
                    stuck = 0;
                }
                Some(u) if stuck < 4 * target => {
                    at = u;
                    stuck += 1;
                }
                _ => {
                    // No way out: jump to an unvisited node of this graph.
                    let rest: Vec<usize> = nodes.iter().copied().filter(|&u| !mask[u]).collect();
                    let u = rest[rng.gen_range(0..rest.len())];
                    mask[u] = true;
                    visited.push(u);
                    at = u;
                    stuck = 0;
                }
            }
        }
    }
    induced(v, &mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::testing::{assert_valid, random_view};
    use rand::SeedableRng;

    #[test]
    fn keeps_the_fraction_of_each_graph() {
        let g = random_view(40, 120, 7);
        let both = View::batch_of(&[&g, &g, &g]);
        let out = random_walk_subgraph(&both, 0.6, &mut ChaCha8Rng::seed_from_u64(3));
        assert_valid(&out);
        assert_eq!(out.nodes(), 3 * 24);
        assert_eq!(
            out.batch
                .bincount::<&tch::Tensor>(None, 3)
                .min()
                .int64_value(&[]),
            24
        );
        assert!(out.edge_count() > 0);
    }
}
