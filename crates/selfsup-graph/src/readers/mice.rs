//! Mouse connectomes (Wang et al. 2020) as shipped in graspologic 3.4.4:
//! `mice/participants.csv` (`participant_id,genotype,sex`, 32 mice, 4
//! genotypes x 8) and one weighted edge list per mouse,
//! `mice/edgelists/<participant_id>_ses-1_dti.edgelist` (`u v weight`, the
//! 332 regions of the Waxholm atlas, the same ids in every mouse). Graph
//! classification: the genotype. Every graph gets the union vertex set
//! (`max id + 1` over all files), so node features are aligned across mice.
use super::edge_list::read_edge_list;
use crate::error::{read_text, GraphError, GraphResult};
use crate::graph::{Featurize, Graph};
use std::collections::BTreeSet;
use std::path::Path;

/// The mice as graphs, their genotype ids and the genotype names (sorted).
pub fn read_mice(
    dir: &Path,
    features: Featurize,
) -> GraphResult<(Vec<Graph>, Vec<i64>, Vec<String>)> {
    let base = dir.join("mice");
    let part = base.join("participants.csv");
    let text = read_text(&part)?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if i == 0 {
            if fields.first() != Some(&"participant_id") || fields.get(1) != Some(&"genotype") {
                return Err(GraphError::line(
                    &part,
                    1,
                    "expected the header `participant_id,genotype,...`",
                ));
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        if fields.len() < 2 || fields[0].is_empty() || fields[1].is_empty() {
            return Err(GraphError::line(
                &part,
                i + 1,
                format!("expected `participant_id,genotype`, found {line:?}"),
            ));
        }
        let file = base
            .join("edgelists")
            .join(format!("{}_ses-1_dti.edgelist", fields[0]));
        if !file.exists() {
            return Err(GraphError::line(
                &part,
                i + 1,
                format!(
                    "participant {} has no edge list {}",
                    fields[0],
                    file.display()
                ),
            ));
        }
        rows.push((file, fields[1].to_string()));
    }
    if rows.is_empty() {
        return Err(GraphError::format(&part, "no participant"));
    }
    let builders = rows
        .iter()
        .map(|(f, _)| read_edge_list(f, None))
        .collect::<GraphResult<Vec<_>>>()?;
    // The largest graph sets the shared node count (and is named by errors about it).
    let largest = builders.iter().max_by_key(|b| b.node_count());
    let n = largest.map_or(0, |b| b.node_count());
    let origin = largest.and_then(|b| b.origin().cloned());
    let classes: Vec<String> = rows
        .iter()
        .map(|(_, g)| g.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let labels = rows
        .iter()
        .map(|(_, g)| classes.iter().position(|c| c == g).unwrap_or(0) as i64)
        .collect();
    let graphs = builders
        .into_iter()
        .map(|mut b| {
            b.grow(n);
            if let Some(o) = &origin {
                b = b.with_origin(o.clone());
            }
            let (f, d) = features.apply(&b)?;
            Ok(b.build(f, d, None))
        })
        .collect::<GraphResult<_>>()?;
    Ok((graphs, labels, classes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_participants_and_their_edge_lists() {
        let dir = tempfile::tempdir().unwrap();
        let e = dir.path().join("mice/edgelists");
        std::fs::create_dir_all(&e).unwrap();
        std::fs::write(
            dir.path().join("mice/participants.csv"),
            "participant_id,genotype,sex\nsub-1,B6,male\nsub-2,CAST,female\n",
        )
        .unwrap();
        std::fs::write(e.join("sub-1_ses-1_dti.edgelist"), "0 1 5.0\n1 2 3.0\n").unwrap();
        std::fs::write(e.join("sub-2_ses-1_dti.edgelist"), "0 3 1.0\n").unwrap();
        let (graphs, labels, classes) = read_mice(dir.path(), Featurize::Adjacency).unwrap();
        assert_eq!(classes, vec!["B6", "CAST"]);
        assert_eq!(labels, vec![0, 1]);
        assert!(graphs.iter().all(|g| g.nodes() == 4 && g.feature_dim == 4));
        std::fs::write(
            dir.path().join("mice/participants.csv"),
            "participant_id,genotype,sex\nsub-1,B6,male\nsub-9,B6,male\n",
        )
        .unwrap();
        let err = read_mice(dir.path(), Featurize::Adjacency)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("participants.csv: line 3") && err.contains("sub-9"),
            "{err}"
        );
    }

    #[test]
    fn dense_features_of_a_huge_shared_vertex_set_name_the_largest_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = dir.path().join("mice/edgelists");
        std::fs::create_dir_all(&e).unwrap();
        std::fs::write(
            dir.path().join("mice/participants.csv"),
            "participant_id,genotype,sex\nsub-1,B6,male\nsub-2,CAST,female\n",
        )
        .unwrap();
        std::fs::write(e.join("sub-1_ses-1_dti.edgelist"), "0 1 5.0\n").unwrap();
        std::fs::write(e.join("sub-2_ses-1_dti.edgelist"), "0 1\n0 70000 1.0\n").unwrap();
        let err = read_mice(dir.path(), Featurize::Adjacency)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sub-2_ses-1_dti.edgelist: line 2") && err.contains("node 70000"),
            "{err}"
        );
        let (graphs, _, _) = read_mice(dir.path(), Featurize::Degree).unwrap();
        assert!(graphs.iter().all(|g| g.nodes() == 70001));
    }
}
