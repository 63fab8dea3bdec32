//! The Drosophila larva mushroom-body connectome (Eichler et al. 2017) as
//! shipped in graspologic 3.4.4 (`cargo xtask fetch graspologic`):
//! `drosophila/{left,right}_adjacency.csv` (synapse counts, a directed
//! 209 x 209 / 213 x 213 matrix written with spaces) and
//! `drosophila/{left,right}_cell_labels.csv` (one cell type per line: K
//! Kenyon cells, I input, O output, P projection neurons). Node
//! classification: 4 classes.
use super::adjacency_csv::{read_adjacency, read_node_labels};
use crate::error::GraphResult;
use crate::graph::{Featurize, Graph};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which hemisphere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hemisphere {
    Left,
    #[default]
    Right,
}

impl Hemisphere {
    fn prefix(self) -> &'static str {
        match self {
            Hemisphere::Left => "left",
            Hemisphere::Right => "right",
        }
    }
}

/// Reads one hemisphere below `dir` (the `graspologic` dataset folder);
/// returns the graph with its labels and the class names.
pub fn read_drosophila(
    dir: &Path,
    hemisphere: Hemisphere,
    features: Featurize,
) -> GraphResult<(Graph, Vec<String>)> {
    let base = dir.join("drosophila");
    let adj = base.join(format!("{}_adjacency.csv", hemisphere.prefix()));
    let lab = base.join(format!("{}_cell_labels.csv", hemisphere.prefix()));
    let b = read_adjacency(&adj)?;
    let labels = read_node_labels(&lab, b.node_count())?;
    let (f, d) = features.apply(&b)?;
    Ok((b.build(f, d, Some(labels.ids)), labels.classes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_package_layout() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("drosophila");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("right_adjacency.csv"), "0 3 0\n1 0 0\n0 2 0\n").unwrap();
        std::fs::write(d.join("right_cell_labels.csv"), "K\nK\nP\n").unwrap();
        let (g, classes) =
            read_drosophila(dir.path(), Hemisphere::Right, Featurize::Degree).unwrap();
        assert_eq!((g.nodes(), g.edges()), (3, 2));
        assert_eq!(classes, vec!["K", "P"]);
        assert_eq!(g.labels, Some(vec![0, 0, 1]));
        std::fs::write(d.join("right_cell_labels.csv"), "K\nK\n").unwrap();
        let e = read_drosophila(dir.path(), Hemisphere::Right, Featurize::Degree)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("right_cell_labels.csv") && e.contains("2 labels for a graph of 3"),
            "{e}"
        );
    }
}
