//! Adjacency matrices as text (`N` rows of `N` numbers, separated by commas,
//! spaces or tabs; a header-less CSV) and node-label files.
//!
//! Entry `(i, j)` is the weight of edge `i -> j`; the matrix is read as
//! undirected with weight `A_ij + A_ji` for `i < j` (so a symmetric matrix
//! gives each edge twice its entry; a directed one, the total in both
//! directions). Non-zero diagonal entries are dropped and counted as
//! self-loops. A row of the wrong length or an entry that is not a number is
//! an error naming the line.
//!
//! Labels: one label per line, line `i` for node `i`, or `node,label` pairs
//! (a header line `node,label` is skipped). A count that disagrees with the
//! graph, an id beyond it, a node labelled twice or not at all are errors
//! naming the file (and line). Class ids follow the sorted class names.
//!
//! A graph with no edge left (all zero, or only a diagonal) is refused.
//! Labels are either all one per line or all `node,label` pairs: a file
//! mixing both is an error naming the first line of the other form.
use crate::error::{decode_text, read_bytes, GraphError, GraphResult};
use crate::graph::{GraphBuilder, Origin, MAX_NODES};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Reads a square adjacency matrix into a builder.
pub fn read_adjacency(path: &Path) -> GraphResult<GraphBuilder> {
    adjacency_at(&read_bytes(path)?, path)
}

/// Parses an adjacency matrix held in memory; `name` stands for the file in
/// errors. Touches no file.
pub fn parse_adjacency(bytes: &[u8], name: &str) -> GraphResult<GraphBuilder> {
    adjacency_at(bytes, Path::new(name))
}

fn adjacency_at(bytes: &[u8], path: &Path) -> GraphResult<GraphBuilder> {
    let text = decode_text(bytes, path)?;
    let mut rows: Vec<(usize, Vec<f32>)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let body = raw.trim();
        if body.is_empty() {
            continue;
        }
        let row = body
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|f| !f.is_empty())
            .map(|f| match f.parse::<f32>() {
                Ok(w) if w.is_finite() => Ok(w),
                _ => Err(GraphError::line(
                    path,
                    i + 1,
                    format!("entry {f:?} is not a finite number"),
                )),
            })
            .collect::<GraphResult<Vec<f32>>>()?;
        rows.push((i + 1, row));
    }
    let n = rows.len();
    if n == 0 {
        return Err(GraphError::format(path, "empty adjacency matrix"));
    }
    for (line, r) in &rows {
        if r.len() != n {
            return Err(GraphError::line(
                path,
                *line,
                format!(
                    "row has {} entries, the matrix has {n} rows (must be square)",
                    r.len()
                ),
            ));
        }
    }
    // n x n entries were read from the file, so n is far below MAX_NODES.
    let mut b = GraphBuilder::new(n).with_origin(Origin {
        path: path.to_path_buf(),
        line: None,
        what: format!("a {n} x {n} matrix"),
    });
    for i in 0..n {
        let (line, row) = (rows[i].0, &rows[i].1);
        if row[i] != 0.0 {
            b.add_edge(i, i, row[i]);
        }
        for j in i + 1..n {
            let (a, t) = (row[j], rows[j].1[i]);
            if a != 0.0 || t != 0.0 {
                let w = a + t;
                if !w.is_finite() {
                    return Err(GraphError::line(
                        path,
                        line,
                        format!(
                            "entries ({i}, {j}) = {a} and ({j}, {i}) = {t} sum to {w} (the \
                             undirected weight); scale the matrix down"
                        ),
                    ));
                }
                b.add_edge(i, j, w);
            }
        }
    }
    b.check_trainable(path)?;
    Ok(b)
}

/// Node labels as class ids, with the class names (sorted).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeLabels {
    pub ids: Vec<i64>,
    pub classes: Vec<String>,
}

/// Reads the labels of a graph of `n` nodes.
pub fn read_node_labels(path: &Path, n: usize) -> GraphResult<NodeLabels> {
    labels_at(&read_bytes(path)?, path, n)
}

/// Parses the labels of a graph of `n` nodes held in memory; `name` stands
/// for the file in errors. Touches no file.
pub fn parse_node_labels(bytes: &[u8], name: &str, n: usize) -> GraphResult<NodeLabels> {
    labels_at(bytes, Path::new(name), n)
}

fn labels_at(bytes: &[u8], path: &Path, n: usize) -> GraphResult<NodeLabels> {
    if n > MAX_NODES {
        return Err(GraphError::format(
            path,
            format!("labels for {n} nodes: above the limit of {MAX_NODES} nodes"),
        ));
    }
    let text = decode_text(bytes, path)?;
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    let first_pair = lines.iter().find(|(_, l)| l.contains(',')).map(|p| p.0);
    let mut names: Vec<Option<String>> = vec![None; n];
    if let Some(pair_line) = first_pair {
        for (k, &(line, l)) in lines.iter().enumerate() {
            let Some((node, label)) = l.split_once(',') else {
                return Err(GraphError::line(
                    path,
                    line,
                    format!(
                        "{l:?} is a bare label, but line {pair_line} is a `node,label` pair: \
                         write every line as `node,label`, or every line as a bare label \
                         (line i for node i)"
                    ),
                ));
            };
            let (node, label) = (node.trim(), label.trim());
            if k == 0 && node.parse::<usize>().is_err() {
                continue; // header
            }
            let id: usize = node.parse().map_err(|_| {
                GraphError::line(
                    path,
                    line,
                    format!("node id {node:?} is not a non-negative integer"),
                )
            })?;
            if id >= n {
                return Err(GraphError::line(
                    path,
                    line,
                    format!("node {id} is beyond the graph's {n} nodes"),
                ));
            }
            if names[id].replace(label.to_string()).is_some() {
                return Err(GraphError::line(
                    path,
                    line,
                    format!("node {id} is labelled twice"),
                ));
            }
        }
    } else {
        if lines.len() != n {
            return Err(GraphError::format(
                path,
                format!(
                    "{} labels for a graph of {n} nodes (one label per line, line i for node i)",
                    lines.len()
                ),
            ));
        }
        for (slot, &(_, l)) in names.iter_mut().zip(&lines) {
            *slot = Some(l.to_string());
        }
    }
    let names: Vec<String> = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            name.ok_or_else(|| {
                GraphError::format(
                    path,
                    format!("node {i} has no label (the graph has {n} nodes)"),
                )
            })
        })
        .collect::<GraphResult<_>>()?;
    let classes: Vec<String> = names
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let index: BTreeMap<&str, i64> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as i64))
        .collect();
    Ok(NodeLabels {
        ids: names
            .iter()
            .map(|n| index.get(n.as_str()).copied().unwrap_or(0))
            .collect(),
        classes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn reads_a_directed_weighted_matrix_as_undirected() {
        let f = file("0 2 0\n1,0,3\n0 0 4\n");
        let g = read_adjacency(f.path())
            .unwrap()
            .build(vec![0.0; 3], 1, None);
        assert_eq!(g.edges(), 2);
        assert_eq!(g.fixups.self_loops, 1);
        let w: Vec<f32> = g.graph.edge_weights().copied().collect();
        assert_eq!(w, vec![3.0, 3.0]);
    }

    #[test]
    fn ragged_rows_and_text_entries_name_the_line() {
        let f = file("0 1\n1 0 0\n");
        let e = read_adjacency(f.path()).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("square"), "{e}");
        let f = file("0 x\n1 0\n");
        assert!(read_adjacency(f.path())
            .unwrap_err()
            .to_string()
            .contains("line 1"));
    }

    #[test]
    fn labels_one_per_line_or_paired() {
        let f = file("b\na\nb\n");
        let l = read_node_labels(f.path(), 3).unwrap();
        assert_eq!(l.classes, vec!["a", "b"]);
        assert_eq!(l.ids, vec![1, 0, 1]);
        let f = file("node,label\n2,x\n0,y\n1,x\n");
        assert_eq!(read_node_labels(f.path(), 3).unwrap().ids, vec![1, 0, 0]);
    }

    #[test]
    fn labels_that_disagree_with_the_graph_are_errors() {
        let f = file("a\nb\n");
        let e = read_node_labels(f.path(), 3).unwrap_err().to_string();
        assert!(e.contains("2 labels for a graph of 3 nodes"), "{e}");
        let f = file("0,a\n5,b\n");
        let e = read_node_labels(f.path(), 3).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("beyond"), "{e}");
        let f = file("0,a\n1,b\n");
        assert!(read_node_labels(f.path(), 3)
            .unwrap_err()
            .to_string()
            .contains("node 2 has no label"));
        let f = file("0,a\n0,b\n1,b\n");
        assert!(read_node_labels(f.path(), 2)
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }

    #[test]
    fn labels_mixing_pairs_and_bare_lines_name_file_and_line() {
        let f = file("0,a\nb\n1,c\n");
        let e = read_node_labels(f.path(), 3).unwrap_err().to_string();
        assert!(
            e.contains(&f.path().display().to_string())
                && e.contains("line 2")
                && e.contains("bare label")
                && e.contains("line 1"),
            "{e}"
        );
        // A bare first line before pairs.
        let e = parse_node_labels(b"a\n0,b\n1,c\n", "labels.csv", 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("labels.csv: line 1"), "{e}");
        let e = parse_node_labels(b"a\n", "labels.csv", usize::MAX)
            .unwrap_err()
            .to_string();
        assert!(e.contains("limit"), "{e}");
    }

    #[test]
    fn a_matrix_without_an_edge_left_is_refused() {
        let f = file("1 0\n0 2\n");
        let e = read_adjacency(f.path()).unwrap_err().to_string();
        assert!(
            e.contains(&f.path().display().to_string()) && e.contains("2 self-loop(s)"),
            "{e}"
        );
        let e = parse_adjacency(b"0 0\n0 0\n", "zero.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("zero.csv") && e.contains("no edge"), "{e}");
        let e = parse_adjacency(b"0 3e38\n3e38 0\n", "big.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("big.csv: line 1") && e.contains("scale"), "{e}");
    }
}
