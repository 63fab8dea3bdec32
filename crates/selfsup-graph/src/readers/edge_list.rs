//! Edge lists: one edge per line, `u v` or `u v w`, separated by spaces,
//! tabs or commas; node ids are integers from 0; `#` and `%` start comments.
//!
//! With a node count, an id at or beyond it is an error naming the line;
//! without one, the graph has `max id + 1` nodes. A weight that is not a
//! number is an error naming the line. Directed lists are read as
//! undirected: self-loops are dropped and repeated edges merged (weights
//! summed), both counted (see [`crate::graph::GraphBuilder`]).
//!
//! Node ids and a given node count are bounded by [`MAX_NODES`] (an error
//! naming the line, before anything is allocated); a graph with no edge left
//! (none given, or only self-loops) is refused.
use crate::error::{decode_text, read_bytes, GraphError, GraphResult};
use crate::graph::{GraphBuilder, Origin, MAX_NODES};
use std::path::Path;

/// Reads `path` into a builder (features and labels are the caller's).
pub fn read_edge_list(path: &Path, num_nodes: Option<usize>) -> GraphResult<GraphBuilder> {
    parse_at(&read_bytes(path)?, path, num_nodes)
}

/// Parses an edge list held in memory; `name` stands for the file in errors.
/// Touches no file.
pub fn parse_edge_list(
    bytes: &[u8],
    name: &str,
    num_nodes: Option<usize>,
) -> GraphResult<GraphBuilder> {
    parse_at(bytes, Path::new(name), num_nodes)
}

fn parse_at(bytes: &[u8], path: &Path, num_nodes: Option<usize>) -> GraphResult<GraphBuilder> {
    if let Some(n) = num_nodes.filter(|&n| n > MAX_NODES) {
        return Err(GraphError::format(
            path,
            format!(
                "num_nodes = {n} is above the limit of {MAX_NODES} nodes; renumber the node ids \
                 contiguously from 0 and give the real count"
            ),
        ));
    }
    let text = decode_text(bytes, path)?;
    let mut edges = Vec::new();
    // The largest id and the line naming it first.
    let mut largest: Option<(usize, usize)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let body = raw.split(['#', '%']).next().unwrap_or("").trim();
        if body.is_empty() {
            continue;
        }
        let fields: Vec<&str> = body
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|f| !f.is_empty())
            .collect();
        let (a, b, weight) = match fields[..] {
            [a, b] => (a, b, None),
            [a, b, w] => (a, b, Some(w)),
            _ => {
                return Err(GraphError::line(
                    path,
                    line,
                    format!(
                        "expected `u v` or `u v weight`, found {} fields: {body:?}",
                        fields.len()
                    ),
                ))
            }
        };
        let node = |f: &str| -> GraphResult<usize> {
            let limit = |shown: &str| {
                GraphError::line(
                    path,
                    line,
                    format!(
                        "node id {shown} is beyond the limit of {MAX_NODES} nodes (ids \
                         0..{}); renumber the node ids contiguously from 0",
                        MAX_NODES - 1
                    ),
                )
            };
            let id: usize = match f.parse() {
                Ok(id) => id,
                Err(_) if !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()) => {
                    return Err(limit(f))
                }
                Err(_) => {
                    return Err(GraphError::line(
                        path,
                        line,
                        format!("node id {f:?} is not a non-negative integer"),
                    ))
                }
            };
            if let Some(n) = num_nodes.filter(|&n| id >= n) {
                return Err(GraphError::line(
                    path,
                    line,
                    match n {
                        0 => format!("node {id}, but num_nodes = 0"),
                        _ => format!(
                            "node {id} is beyond the node count ({n} nodes: ids 0..{})",
                            n - 1
                        ),
                    },
                ));
            }
            if id >= MAX_NODES {
                return Err(limit(&id.to_string()));
            }
            Ok(id)
        };
        let (u, v) = (node(a)?, node(b)?);
        let w = match weight {
            None => 1.0,
            Some(f) => match f.parse::<f32>() {
                Ok(w) if w.is_finite() => w,
                _ => {
                    return Err(GraphError::line(
                        path,
                        line,
                        format!("weight {f:?} is not a finite number"),
                    ))
                }
            },
        };
        if !matches!(largest, Some((m, _)) if u.max(v) <= m) {
            largest = Some((u.max(v), line));
        }
        edges.push((u, v, w));
    }
    let origin = match (num_nodes, largest) {
        (Some(n), _) => Origin {
            path: path.to_path_buf(),
            line: None,
            what: format!("num_nodes = {n}"),
        },
        (None, Some((id, line))) => Origin {
            path: path.to_path_buf(),
            line: Some(line),
            what: format!(
                "node {id} is the largest id, so the graph has {} nodes",
                id + 1
            ),
        },
        (None, None) => {
            return Err(GraphError::format(
                path,
                "no edge and no node count: an empty graph",
            ))
        }
    };
    // Both bounded by MAX_NODES above.
    let n = num_nodes.unwrap_or_else(|| largest.map_or(0, |(id, _)| id + 1));
    let mut b = GraphBuilder::new(n).with_origin(origin);
    for (u, v, w) in edges {
        b.add_edge(u, v, w);
    }
    b.check_trainable(path)?;
    Ok(b)
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
    fn reads_weighted_and_unweighted_lines_with_fixups_counted() {
        let f = file("# a comment\n0 1\n1,2,2.5\n2\t0 0.5 % trailing\n1 0\n3 3\n");
        let b = read_edge_list(f.path(), None).unwrap();
        let g = b.build(vec![0.0; 4], 1, None);
        assert_eq!(g.nodes(), 4);
        assert_eq!(g.edges(), 3);
        assert_eq!(g.fixups.self_loops, 1);
        assert_eq!(g.fixups.duplicate_edges, 1);
        let w: f32 = g.graph.edge_weights().sum();
        assert_eq!(w, 1.0 + 2.5 + 0.5 + 1.0);
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let f = file("0 1\n1 7\n");
        let e = read_edge_list(f.path(), Some(5)).unwrap_err().to_string();
        assert!(
            e.contains("line 2") && e.contains("beyond the node count"),
            "{e}"
        );
        assert!(e.contains(&f.path().display().to_string()), "{e}");
        let f = file("0 1 1.0\n1 2 heavy\n");
        let e = read_edge_list(f.path(), None).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("\"heavy\""), "{e}");
        let f = file("0 -1\n");
        let e = read_edge_list(f.path(), None).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        let f = file("0 1 2 3\n");
        assert!(read_edge_list(f.path(), None)
            .unwrap_err()
            .to_string()
            .contains("4 fields"));
    }

    #[test]
    fn huge_node_ids_are_refused_before_allocating() {
        // An id beyond the node limit, or one that does not fit usize.
        for id in ["3000000000", "99999999999999999999999"] {
            let f = file(&format!("0 1\n1 {id}\n"));
            let e = read_edge_list(f.path(), None).unwrap_err().to_string();
            assert!(
                e.contains(&f.path().display().to_string())
                    && e.contains("line 2")
                    && e.contains(&MAX_NODES.to_string())
                    && e.contains("renumber"),
                "{e}"
            );
        }
        let e = parse_edge_list(b"0 1\n", "big.txt", Some(MAX_NODES + 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("big.txt") && e.contains("num_nodes"), "{e}");
    }

    #[test]
    fn dense_features_of_a_sparse_id_range_are_refused_naming_the_line() {
        use crate::graph::{Featurize, MAX_DENSE_ENTRIES};
        // Node 60000: 60001 nodes; identity features would take 14.4 GB.
        let f = file("0 1\n1 60000\n2 3\n");
        let b = read_edge_list(f.path(), None).unwrap();
        assert_eq!(b.node_count(), 60001);
        for feat in [Featurize::Identity, Featurize::Adjacency] {
            let e = feat.apply(&b).unwrap_err().to_string();
            assert!(
                e.contains(&f.path().display().to_string())
                    && e.contains("line 2")
                    && e.contains("node 60000")
                    && e.contains(&MAX_DENSE_ENTRIES.to_string())
                    && e.contains("degree"),
                "{e}"
            );
        }
        let (x, d) = Featurize::Degree.apply(&b).unwrap();
        assert_eq!((x.len(), d), (60001 * 3, 3));
    }

    #[test]
    fn a_graph_with_no_edge_left_is_refused() {
        let f = file("0 0\n1 1\n2 2\n");
        let e = read_edge_list(f.path(), None).unwrap_err().to_string();
        assert!(
            e.contains(&f.path().display().to_string())
                && e.contains("3 self-loop(s)")
                && e.contains("no edge left"),
            "{e}"
        );
        let e = parse_edge_list(b"# nothing\n", "empty.txt", Some(4))
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty.txt") && e.contains("no edge"), "{e}");
        // Merged duplicate weights that overflow.
        let e = parse_edge_list(b"0 1 3e38\n1 0 3e38\n", "w.txt", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("w.txt") && e.contains("overflow"), "{e}");
    }

    #[test]
    fn parses_from_memory_like_the_file() {
        let text = "0 1\n1 2 2.5\n";
        let f = file(text);
        let a = read_edge_list(f.path(), None).unwrap();
        let b = parse_edge_list(text.as_bytes(), "mem", None).unwrap();
        assert_eq!(
            (a.node_count(), a.edge_count()),
            (b.node_count(), b.edge_count())
        );
        let e = parse_edge_list(b"0 1\n\xff\n", "mem.txt", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mem.txt") && e.contains("UTF-8"), "{e}");
    }

    #[test]
    fn a_weighted_degree_that_overflows_is_refused() {
        use crate::graph::Featurize;
        let b = parse_edge_list(b"0 1 3e38\n0 2 3e38\n", "deg.txt", None).unwrap();
        let e = Featurize::Degree.apply(&b).unwrap_err().to_string();
        assert!(e.contains("deg.txt") && e.contains("node 0"), "{e}");
    }
}
