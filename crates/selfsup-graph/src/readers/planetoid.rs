//! The Planetoid format of Cora, CiteSeer and PubMed (Yang et al. 2016;
//! kimiyoung/planetoid), as PyTorch Geometric's `Planetoid` reads it:
//! `ind.<name>.{x,tx,allx}` (pickled scipy CSR feature matrices),
//! `ind.<name>.{y,ty,ally}` (pickled one-hot numpy arrays),
//! `ind.<name>.graph` (a pickled dict / defaultdict `node -> [neighbours]`)
//! and `ind.<name>.test.index` (one test node id per line).
//!
//! Nodes are `allx` followed by the test rows, put back at the positions
//! `test.index` names (CiteSeer's missing test nodes become zero rows with
//! no label class of their own: label 0, as in PyG). Neighbours beyond the
//! node count are an error naming the file; self-loops and duplicates are
//! fixed up and counted. Pickles are read by [`crate::pickle`], which runs
//! no code.
use crate::error::{read_text, GraphError, GraphResult};
use crate::graph::{Graph, GraphBuilder};
use crate::pickle::{unpickle, Pickle, V};
use std::path::Path;

struct Array {
    shape: Vec<usize>,
    data: Vec<f64>,
}

fn ints(p: &Pickle, id: usize) -> Option<Vec<i64>> {
    match p.get(id) {
        V::Tuple(t) | V::List(t) => t
            .iter()
            .map(|&i| match p.get(i) {
                V::Int(v) => Some(*v),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn global_name(p: &Pickle, id: usize) -> Option<(&str, &str)> {
    match p.get(id) {
        V::Global(m, n) => Some((m.as_str(), n.as_str())),
        _ => None,
    }
}

/// A numpy array: `_reconstruct(ndarray, ...)` with state
/// `(version, shape, dtype, fortran, data)`.
fn ndarray(p: &Pickle, id: usize) -> Result<Array, String> {
    let V::Obj {
        class,
        state: Some(state),
        ..
    } = p.get(id)
    else {
        return Err("expected a numpy array".into());
    };
    match global_name(p, *class) {
        Some((m, "_reconstruct")) if m.starts_with("numpy") => {}
        other => return Err(format!("expected a numpy array, found {other:?}")),
    }
    let V::Tuple(st) = p.get(*state) else {
        return Err("numpy state is not a tuple".into());
    };
    if st.len() < 5 {
        return Err("numpy state too short".into());
    }
    let shape: Vec<usize> = ints(p, st[1])
        .ok_or("bad shape")?
        .into_iter()
        .map(|v| v as usize)
        .collect();
    let V::Obj {
        args,
        state: dstate,
        ..
    } = p.get(st[2])
    else {
        return Err("bad dtype".into());
    };
    let code = match p.get(*args) {
        V::Tuple(a) if !a.is_empty() => match p.get(a[0]) {
            V::Str(s) => s.clone(),
            V::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            _ => return Err("bad dtype".into()),
        },
        _ => return Err("bad dtype".into()),
    };
    let big = match dstate.map(|s| p.get(s)) {
        Some(V::Tuple(t)) if t.len() > 1 => matches!(p.get(t[1]), V::Str(s) if s == ">"),
        _ => false,
    };
    if matches!(p.get(st[3]), V::Bool(true)) && shape.len() > 1 {
        return Err("Fortran-ordered arrays are not supported".into());
    }
    let V::Bytes(raw) = p.get(st[4]) else {
        return Err("numpy data is not raw bytes".into());
    };
    let width = code[1..]
        .parse::<usize>()
        .map_err(|_| format!("dtype {code:?}"))?;
    let conv = |c: &[u8]| -> f64 {
        let mut b = [0u8; 8];
        b[..width].copy_from_slice(c);
        if big {
            b[..width].reverse();
        }
        match (&code[..1], width) {
            ("f", 8) => f64::from_le_bytes(b),
            ("f", 4) => f32::from_le_bytes(b[..4].try_into().expect("4")) as f64,
            ("i", 8) => i64::from_le_bytes(b) as f64,
            ("i", 4) => i32::from_le_bytes(b[..4].try_into().expect("4")) as f64,
            ("u", 1) | ("b", 1) | ("i", 1) => b[0] as f64,
            _ => f64::NAN,
        }
    };
    let n: usize = shape.iter().product();
    if raw.len() != n * width {
        return Err(format!(
            "{} data bytes for shape {shape:?} of {code}",
            raw.len()
        ));
    }
    let data: Vec<f64> = raw.chunks(width).map(conv).collect();
    if data.iter().any(|v| v.is_nan()) {
        return Err(format!("unsupported dtype {code:?}"));
    }
    Ok(Array { shape, data })
}

/// A dense `[rows, cols]` from a scipy CSR matrix or a 2-D numpy array.
fn matrix(p: &Pickle) -> Result<Array, String> {
    if let Ok(a) = ndarray(p, p.root) {
        return Ok(a);
    }
    let V::Obj {
        state: Some(state), ..
    } = p.get(p.root)
    else {
        return Err("expected a scipy sparse matrix or numpy array".into());
    };
    let V::Dict(d) = p.get(*state) else {
        return Err("sparse matrix state is not a dict".into());
    };
    let field = |name: &str| {
        d.iter()
            .find(|(k, _)| {
                matches!(p.get(*k), V::Str(s) if s == name)
                    || matches!(p.get(*k), V::Bytes(b) if b == name.as_bytes())
            })
            .map(|(_, v)| *v)
    };
    let (data, indices, indptr) = (
        ndarray(p, field("data").ok_or("no data")?)?,
        ndarray(p, field("indices").ok_or("no indices")?)?,
        ndarray(p, field("indptr").ok_or("no indptr")?)?,
    );
    let shape = ints(
        p,
        field("_shape")
            .or_else(|| field("shape"))
            .ok_or("no shape")?,
    )
    .ok_or("bad shape")?;
    let (rows, cols) = (shape[0] as usize, shape[1] as usize);
    let mut dense = vec![0f64; rows * cols];
    for r in 0..rows {
        for k in indptr.data[r] as usize..indptr.data[r + 1] as usize {
            let c = indices.data[k] as usize;
            if c >= cols {
                return Err(format!("column {c} beyond {cols}"));
            }
            dense[r * cols + c] = data.data[k];
        }
    }
    Ok(Array {
        shape: vec![rows, cols],
        data: dense,
    })
}

fn load_pickle(path: &Path) -> GraphResult<Pickle> {
    let bytes = std::fs::read(path).map_err(|e| GraphError::io(path, e))?;
    unpickle(&bytes).map_err(|e| GraphError::format(path, e))
}

/// Reads `ind.<name>.*` in `dir`; returns the graph (labelled) and class names.
pub fn read_planetoid(dir: &Path, name: &str) -> GraphResult<(Graph, Vec<String>)> {
    let file = |ext: &str| dir.join(format!("ind.{}.{ext}", name.to_lowercase()));
    let mat = |ext: &str| -> GraphResult<Array> {
        let path = file(ext);
        let a = matrix(&load_pickle(&path)?).map_err(|e| GraphError::format(&path, e))?;
        if a.shape.len() != 2 {
            return Err(GraphError::format(
                &path,
                format!("expected a matrix, shape {:?}", a.shape),
            ));
        }
        Ok(a)
    };
    let (allx, tx, ally, ty) = (mat("allx")?, mat("tx")?, mat("ally")?, mat("ty")?);
    let idx_path = file("test.index");
    let test: Vec<usize> = read_text(&idx_path)?
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            l.trim()
                .parse()
                .map_err(|_| GraphError::line(&idx_path, i + 1, format!("{l:?} is not a node id")))
        })
        .collect::<GraphResult<_>>()?;
    if test.len() != tx.shape[0] || tx.shape[0] != ty.shape[0] || allx.shape[0] != ally.shape[0] {
        return Err(GraphError::format(
            &idx_path,
            format!(
                "{} test ids, tx has {} rows, ty {}, allx {}, ally {}",
                test.len(),
                tx.shape[0],
                ty.shape[0],
                allx.shape[0],
                ally.shape[0]
            ),
        ));
    }
    let (f, c) = (allx.shape[1], ally.shape[1]);
    let lo = *test.iter().min().unwrap_or(&allx.shape[0]);
    let hi = *test.iter().max().unwrap_or(&0);
    if lo < allx.shape[0] {
        return Err(GraphError::format(
            &idx_path,
            format!("test id {lo} overlaps the {} allx rows", allx.shape[0]),
        ));
    }
    let n = (hi + 1).max(allx.shape[0]);
    let mut x = vec![0f32; n * f];
    let mut y = vec![0i64; n];
    let argmax = |row: &[f64]| {
        row.iter()
            .enumerate()
            .fold((0, f64::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
            .0 as i64
    };
    for r in 0..allx.shape[0] {
        for k in 0..f {
            x[r * f + k] = allx.data[r * f + k] as f32;
        }
        y[r] = argmax(&ally.data[r * c..(r + 1) * c]);
    }
    for (r, &node) in test.iter().enumerate() {
        for k in 0..f {
            x[node * f + k] = tx.data[r * f + k] as f32;
        }
        y[node] = argmax(&ty.data[r * c..(r + 1) * c]);
    }
    let gpath = file("graph");
    let p = load_pickle(&gpath)?;
    let pairs = match p.get(p.root) {
        V::Dict(d) | V::Obj { items: d, .. } => d.clone(),
        _ => {
            return Err(GraphError::format(
                &gpath,
                "expected a dict of adjacency lists",
            ))
        }
    };
    let mut b = GraphBuilder::new(n);
    for (k, v) in pairs {
        let V::Int(u) = p.get(k) else {
            return Err(GraphError::format(
                &gpath,
                "a node id that is not an integer",
            ));
        };
        let nbrs = ints(&p, v).ok_or_else(|| {
            GraphError::format(
                &gpath,
                format!("node {u}: neighbours are not a list of integers"),
            )
        })?;
        if let Some(w) = std::iter::once(*u)
            .chain(nbrs.iter().copied())
            .find(|&w| w < 0 || w as usize >= n)
        {
            return Err(GraphError::format(
                &gpath,
                format!("node {w} (in the list of node {u}) is beyond the {n} nodes"),
            ));
        }
        for w in nbrs {
            b.add_edge(*u as usize, w as usize, 1.0);
        }
    }
    let classes = (0..c).map(|i| format!("class {i}")).collect();
    Ok((b.build(x, f, Some(y)), classes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tests/fixtures/planetoid/ind.tiny.*`: written by
    /// `tests/fixtures/planetoid/make_fixture.py` with numpy's and pickle's
    /// own writers (CSR matrices as scipy pickles them, protocol 2 as the
    /// original files): 6 nodes, 4 features, 3 classes, test ids 5 and 4.
    #[test]
    fn reads_the_fixture_in_planetoid_format() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/planetoid");
        let (g, classes) = read_planetoid(&dir, "tiny").unwrap();
        assert_eq!((g.nodes(), g.feature_dim, classes.len()), (6, 4, 3));
        assert_eq!(g.labels.as_deref(), Some(&[0, 1, 2, 0, 2, 1][..]));
        // node 4 is the second test row (tx row 1), node 5 the first.
        assert_eq!(&g.features[4 * 4..5 * 4], &[0.0, 0.0, 3.0, 1.0]);
        assert_eq!(&g.features[5 * 4..6 * 4], &[1.0, 0.0, 0.0, 2.0]);
        assert_eq!(g.edges(), 6);
        assert_eq!(g.fixups.duplicate_edges, 6);
        assert_eq!(g.fixups.self_loops, 1);
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/planetoid");
        let e = read_planetoid(&dir, "cora").unwrap_err().to_string();
        assert!(e.contains("ind.cora.allx"), "{e}");
    }
}
