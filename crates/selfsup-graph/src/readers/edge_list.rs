//! Edge lists: one edge per line, `u v` or `u v w`, separated by spaces,
//! tabs or commas; node ids are integers from 0; `#` and `%` start comments.
//!
//! With a node count, an id at or beyond it is an error naming the line;
//! without one, the graph has `max id + 1` nodes. A weight that is not a
//! number is an error naming the line. Directed lists are read as
//! undirected: self-loops are dropped and repeated edges merged (weights
//! summed), both counted (see [`crate::graph::GraphBuilder`]).
use crate::error::{read_text, GraphError, GraphResult};
use crate::graph::GraphBuilder;
use std::path::Path;

/// Reads `path` into a builder (features and labels are the caller's).
pub fn read_edge_list(path: &Path, num_nodes: Option<usize>) -> GraphResult<GraphBuilder> {
    let text = read_text(path)?;
    let mut edges = Vec::new();
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
        if !(2..=3).contains(&fields.len()) {
            return Err(GraphError::line(
                path,
                line,
                format!(
                    "expected `u v` or `u v weight`, found {} fields: {body:?}",
                    fields.len()
                ),
            ));
        }
        let node = |f: &str| -> GraphResult<usize> {
            let id: usize = f.parse().map_err(|_| {
                GraphError::line(
                    path,
                    line,
                    format!("node id {f:?} is not a non-negative integer"),
                )
            })?;
            if let Some(n) = num_nodes.filter(|&n| id >= n) {
                return Err(GraphError::line(
                    path,
                    line,
                    format!(
                        "node {id} is beyond the node count ({n} nodes: ids 0..{})",
                        n - 1
                    ),
                ));
            }
            Ok(id)
        };
        let (u, v) = (node(fields[0])?, node(fields[1])?);
        let w = match fields.get(2) {
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
        edges.push((u, v, w));
    }
    let n = num_nodes.unwrap_or_else(|| {
        edges
            .iter()
            .map(|&(u, v, _)| u.max(v) + 1)
            .max()
            .unwrap_or(0)
    });
    if n == 0 {
        return Err(GraphError::format(
            path,
            "no edge and no node count: an empty graph",
        ));
    }
    let mut b = GraphBuilder::new(n);
    for (u, v, w) in edges {
        b.add_edge(u, v, w);
    }
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
}
