//! Zachary's karate club (Zachary 1977): 34 members, 78 friendships, and the
//! club each member joined after the split ("Mr. Hi" or "Officer"). Written
//! out from networkx's `karate_club_graph()` (networkx 3.x), small enough to
//! live here as a fixture. Node classification: 2 classes.
use crate::error::GraphResult;
use crate::graph::{Featurize, Graph, GraphBuilder};

#[rustfmt::skip]
const EDGES: [(usize, usize); 78] = [
    (0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (0, 6), (0, 7), (0, 8), (0, 10), (0, 11), (0, 12),
    (0, 13), (0, 17), (0, 19), (0, 21), (0, 31), (1, 2), (1, 3), (1, 7), (1, 13), (1, 17),
    (1, 19), (1, 21), (1, 30), (2, 3), (2, 7), (2, 8), (2, 9), (2, 13), (2, 27), (2, 28),
    (2, 32), (3, 7), (3, 12), (3, 13), (4, 6), (4, 10), (5, 6), (5, 10), (5, 16), (6, 16),
    (8, 30), (8, 32), (8, 33), (9, 33), (13, 33), (14, 32), (14, 33), (15, 32), (15, 33),
    (18, 32), (18, 33), (19, 33), (20, 32), (20, 33), (22, 32), (22, 33), (23, 25), (23, 27),
    (23, 29), (23, 32), (23, 33), (24, 25), (24, 27), (24, 31), (25, 31), (26, 29), (26, 33),
    (27, 33), (28, 31), (28, 33), (29, 32), (29, 33), (30, 32), (30, 33), (31, 32), (31, 33),
    (32, 33),
];

/// Members who joined the officer's club (the others stayed with Mr. Hi).
const OFFICER: [usize; 17] = [
    9, 14, 15, 18, 20, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33,
];

/// The club as a graph labelled 0 = "Mr. Hi", 1 = "Officer".
pub fn karate_club(features: Featurize) -> GraphResult<(Graph, Vec<String>)> {
    let mut b = GraphBuilder::new(34);
    for (u, v) in EDGES {
        b.add_edge(u, v, 1.0);
    }
    let labels = (0..34).map(|i| i64::from(OFFICER.contains(&i))).collect();
    let (f, d) = features.apply(&b)?;
    Ok((
        b.build(f, d, Some(labels)),
        vec!["Mr. Hi".into(), "Officer".into()],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_networkx_counts() {
        let (g, _) = karate_club(Featurize::Identity).unwrap();
        assert_eq!((g.nodes(), g.edges()), (34, 78));
        let officers = g.labels.unwrap().iter().sum::<i64>();
        assert_eq!(officers, 17);
        // Node 33 (the officer) has degree 17, node 0 (Mr. Hi) 16.
        let deg = |i| {
            g.graph
                .neighbors(petgraph::graph::NodeIndex::new(i))
                .count()
        };
        assert_eq!((deg(0), deg(33)), (16, 17));
    }
}
