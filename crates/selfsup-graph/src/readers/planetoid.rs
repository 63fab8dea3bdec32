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
//!
//! Sizes the files state are bounded before allocating: node ids by
//! [`MAX_NODES`], dense matrices (sparse ones made dense, the node features)
//! by [`MAX_DENSE_ENTRIES`]; shapes that disagree between files, malformed
//! CSR index arrays, non-finite values and a graph with no edge left are
//! errors naming the file.
use crate::error::{decode_text, read_bytes, GraphError, GraphResult};
use crate::graph::{Graph, GraphBuilder, MAX_DENSE_ENTRIES, MAX_NODES};
use crate::pickle::{unpickle, Pickle, V};
use std::path::{Path, PathBuf};

struct Array {
    shape: Vec<usize>,
    data: Vec<f64>,
}

/// A dense matrix read from a pickled numpy array or scipy CSR matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    /// Row-major `rows x cols`.
    pub data: Vec<f64>,
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

/// `shape` as sizes, their product bounded by [`MAX_DENSE_ENTRIES`].
fn sizes(shape: &[i64]) -> Result<(Vec<usize>, usize), String> {
    let mut dims = Vec::with_capacity(shape.len());
    let mut total = 1usize;
    for &d in shape {
        let d = usize::try_from(d).map_err(|_| format!("negative size in shape {shape:?}"))?;
        total = total
            .checked_mul(d)
            .filter(|&t| t <= MAX_DENSE_ENTRIES)
            .ok_or_else(|| {
                format!("shape {shape:?} is above the limit of {MAX_DENSE_ENTRIES} entries")
            })?;
        dims.push(d);
    }
    Ok((dims, total))
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
    let &[_, shape_id, dtype_id, fortran_id, data_id, ..] = st.as_slice() else {
        return Err("numpy state too short".into());
    };
    let (shape, n) = sizes(&ints(p, shape_id).ok_or("bad shape")?)?;
    let V::Obj {
        args,
        state: dstate,
        ..
    } = p.get(dtype_id)
    else {
        return Err("bad dtype".into());
    };
    let code = match p.get(*args) {
        V::Tuple(a) => match a.first().map(|&c| p.get(c)) {
            Some(V::Str(s)) => s.clone(),
            Some(V::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => return Err("bad dtype".into()),
        },
        _ => return Err("bad dtype".into()),
    };
    let big = match dstate.map(|s| p.get(s)) {
        Some(V::Tuple(t)) => {
            matches!(t.get(1).map(|&o| p.get(o)), Some(V::Str(s)) if s == ">")
        }
        _ => false,
    };
    if matches!(p.get(fortran_id), V::Bool(true)) && shape.len() > 1 {
        return Err("Fortran-ordered arrays are not supported".into());
    }
    let V::Bytes(raw) = p.get(data_id) else {
        return Err("numpy data is not raw bytes".into());
    };
    let (kind, width) = match (code.get(..1), code.get(1..).map(str::parse::<usize>)) {
        (Some(k @ ("f" | "i")), Some(Ok(w @ (4 | 8)))) => (k, w),
        (Some(k @ ("u" | "b" | "i")), Some(Ok(1))) => (k, 1),
        _ => {
            return Err(format!(
                "unsupported dtype {code:?} (float32/64, int8/32/64, uint8, bool)"
            ))
        }
    };
    let conv = |c: &[u8]| -> f64 {
        let mut b = [0u8; 8];
        b[..width].copy_from_slice(c);
        if big {
            b[..width].reverse();
        }
        let [b0, b1, b2, b3, ..] = b;
        match (kind, width) {
            ("f", 8) => f64::from_le_bytes(b),
            ("f", 4) => f32::from_le_bytes([b0, b1, b2, b3]) as f64,
            ("i", 8) => i64::from_le_bytes(b) as f64,
            ("i", 4) => i32::from_le_bytes([b0, b1, b2, b3]) as f64,
            ("i", 1) => b0 as i8 as f64,
            _ => b0 as f64,
        }
    };
    if Some(raw.len()) != n.checked_mul(width) {
        return Err(format!(
            "{} data bytes for shape {shape:?} of {code}",
            raw.len()
        ));
    }
    let data: Vec<f64> = raw.chunks_exact(width).map(conv).collect();
    if let Some(k) = data.iter().position(|v| !v.is_finite()) {
        return Err(format!("entry {k} is not a finite number ({})", data[k]));
    }
    Ok(Array { shape, data })
}

/// A dense `[rows, cols]` from a scipy CSR matrix or a 2-D numpy array.
fn matrix(p: &Pickle) -> Result<Array, String> {
    if let V::Obj { class, .. } = p.get(p.root) {
        if matches!(global_name(p, *class), Some((m, "_reconstruct")) if m.starts_with("numpy")) {
            return ndarray(p, p.root);
        }
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
    let (dims, total) = sizes(&shape)?;
    let &[rows, cols] = dims.as_slice() else {
        return Err(format!("a sparse matrix of shape {shape:?}, not 2-D"));
    };
    if indices.data.len() != data.data.len() || indptr.data.len() != rows + 1 {
        return Err(format!(
            "CSR arrays disagree: {} values, {} column indices, {} row pointers for {rows} rows",
            data.data.len(),
            indices.data.len(),
            indptr.data.len()
        ));
    }
    let as_index = |v: f64, what: &str, limit: usize| -> Result<usize, String> {
        if v >= 0.0 && v.fract() == 0.0 && v <= limit as f64 {
            Ok(v as usize)
        } else {
            Err(format!("{what} {v} is not an index in 0..={limit}"))
        }
    };
    let mut dense = vec![0f64; total];
    let mut start = as_index(indptr.data[0], "row pointer", data.data.len())?;
    for r in 0..rows {
        let end = as_index(indptr.data[r + 1], "row pointer", data.data.len())?;
        if end < start {
            return Err(format!("row pointers decrease at row {r}"));
        }
        for k in start..end {
            let c = as_index(indices.data[k], "column", cols)?;
            if c >= cols {
                return Err(format!("column {c} beyond {cols}"));
            }
            dense[r * cols + c] = data.data[k];
        }
        start = end;
    }
    Ok(Array {
        shape: dims,
        data: dense,
    })
}

fn pickle_at(bytes: &[u8], path: &Path) -> GraphResult<Pickle> {
    unpickle(bytes).map_err(|e| GraphError::format(path, e))
}

fn matrix_at(bytes: &[u8], path: &Path) -> GraphResult<Matrix> {
    let a = matrix(&pickle_at(bytes, path)?).map_err(|e| GraphError::format(path, e))?;
    match a.shape[..] {
        [rows, cols] => Ok(Matrix {
            rows,
            cols,
            data: a.data,
        }),
        _ => Err(GraphError::format(
            path,
            format!("expected a matrix, shape {:?}", a.shape),
        )),
    }
}

/// Parses one pickled feature or label matrix (a scipy CSR matrix or a 2-D
/// numpy array) held in memory; `name` stands for the file in errors.
/// Touches no file.
pub fn parse_matrix(bytes: &[u8], name: &str) -> GraphResult<Matrix> {
    matrix_at(bytes, Path::new(name))
}

/// The Planetoid files `read_planetoid` reads, held in memory.
#[derive(Debug, Clone, Copy)]
pub struct PlanetoidFiles<'a> {
    pub allx: &'a [u8],
    pub tx: &'a [u8],
    pub ally: &'a [u8],
    pub ty: &'a [u8],
    pub graph: &'a [u8],
    pub test_index: &'a [u8],
}

/// Reads `ind.<name>.*` in `dir`; returns the graph (labelled) and class names.
pub fn read_planetoid(dir: &Path, name: &str) -> GraphResult<(Graph, Vec<String>)> {
    let file = |ext: &str| dir.join(format!("ind.{}.{ext}", name.to_lowercase()));
    let (allx, tx, ally, ty) = (
        read_bytes(&file("allx"))?,
        read_bytes(&file("tx"))?,
        read_bytes(&file("ally"))?,
        read_bytes(&file("ty"))?,
    );
    let test_index = read_bytes(&file("test.index"))?;
    let graph = read_bytes(&file("graph"))?;
    let files = PlanetoidFiles {
        allx: &allx,
        tx: &tx,
        ally: &ally,
        ty: &ty,
        graph: &graph,
        test_index: &test_index,
    };
    planetoid_at(&files, &file)
}

/// Parses Planetoid files held in memory; errors name them
/// `ind.<name>.<ext>`. Touches no file.
pub fn parse_planetoid(
    files: &PlanetoidFiles<'_>,
    name: &str,
) -> GraphResult<(Graph, Vec<String>)> {
    planetoid_at(files, &|ext: &str| {
        PathBuf::from(format!("ind.{}.{ext}", name.to_lowercase()))
    })
}

fn planetoid_at(
    files: &PlanetoidFiles<'_>,
    file: &dyn Fn(&str) -> PathBuf,
) -> GraphResult<(Graph, Vec<String>)> {
    let allx = matrix_at(files.allx, &file("allx"))?;
    let tx = matrix_at(files.tx, &file("tx"))?;
    let ally = matrix_at(files.ally, &file("ally"))?;
    let ty = matrix_at(files.ty, &file("ty"))?;
    if tx.cols != allx.cols {
        return Err(GraphError::format(
            &file("tx"),
            format!("{} feature columns, allx has {}", tx.cols, allx.cols),
        ));
    }
    if ty.cols != ally.cols {
        return Err(GraphError::format(
            &file("ty"),
            format!("{} label columns, ally has {}", ty.cols, ally.cols),
        ));
    }
    if ally.cols == 0 {
        return Err(GraphError::format(
            &file("ally"),
            "no label column (labels are one-hot rows)",
        ));
    }
    let idx_path = file("test.index");
    let mut test: Vec<usize> = Vec::new();
    for (i, l) in decode_text(files.test_index, &idx_path)?
        .lines()
        .enumerate()
    {
        let l = l.trim();
        if l.is_empty() {
            continue;
        }
        let id = l
            .parse::<usize>()
            .ok()
            .filter(|&id| id < MAX_NODES)
            .ok_or_else(|| {
                GraphError::line(
                    &idx_path,
                    i + 1,
                    format!("{l:?} is not a node id in 0..{MAX_NODES}"),
                )
            })?;
        test.push(id);
    }
    if test.len() != tx.rows || tx.rows != ty.rows || allx.rows != ally.rows {
        return Err(GraphError::format(
            &idx_path,
            format!(
                "{} test ids, tx has {} rows, ty {}, allx {}, ally {}",
                test.len(),
                tx.rows,
                ty.rows,
                allx.rows,
                ally.rows
            ),
        ));
    }
    let (f, c) = (allx.cols, ally.cols);
    let lo = *test.iter().min().unwrap_or(&allx.rows);
    let hi = *test.iter().max().unwrap_or(&0);
    if lo < allx.rows {
        return Err(GraphError::format(
            &idx_path,
            format!("test id {lo} overlaps the {} allx rows", allx.rows),
        ));
    }
    let n = (hi + 1).max(allx.rows);
    if n.checked_mul(f)
        .filter(|&e| e <= MAX_DENSE_ENTRIES)
        .is_none()
    {
        return Err(GraphError::format(
            &idx_path,
            format!(
                "{n} nodes x {f} features is above the limit of {MAX_DENSE_ENTRIES} feature \
                 entries"
            ),
        ));
    }
    let mut x = vec![0f32; n * f];
    let mut y = vec![0i64; n];
    let mut seen = vec![false; n];
    let argmax = |row: &[f64]| {
        row.iter()
            .enumerate()
            .fold((0, f64::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
            .0 as i64
    };
    for r in 0..allx.rows {
        for k in 0..f {
            x[r * f + k] = allx.data[r * f + k] as f32;
        }
        y[r] = argmax(&ally.data[r * c..(r + 1) * c]);
    }
    for (r, &node) in test.iter().enumerate() {
        if std::mem::replace(&mut seen[node], true) {
            return Err(GraphError::format(
                &idx_path,
                format!("test id {node} appears twice"),
            ));
        }
        for k in 0..f {
            x[node * f + k] = tx.data[r * f + k] as f32;
        }
        y[node] = argmax(&ty.data[r * c..(r + 1) * c]);
    }
    let gpath = file("graph");
    let p = pickle_at(files.graph, &gpath)?;
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
        let index = |w: i64| usize::try_from(w).ok().filter(|&w| w < n);
        if let Some(w) = std::iter::once(*u)
            .chain(nbrs.iter().copied())
            .find(|&w| index(w).is_none())
        {
            return Err(GraphError::format(
                &gpath,
                format!("node {w} (in the list of node {u}) is beyond the {n} nodes"),
            ));
        }
        for w in nbrs {
            if let (Some(a), Some(b2)) = (index(*u), index(w)) {
                b.add_edge(a, b2, 1.0);
            }
        }
    }
    b.check_trainable(&gpath)?;
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

    fn fixture() -> Vec<Vec<u8>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/planetoid");
        ["allx", "tx", "ally", "ty", "graph", "test.index"]
            .iter()
            .map(|e| std::fs::read(dir.join(format!("ind.tiny.{e}"))).unwrap())
            .collect()
    }

    fn parse(f: &[Vec<u8>]) -> GraphResult<(Graph, Vec<String>)> {
        let files = PlanetoidFiles {
            allx: &f[0],
            tx: &f[1],
            ally: &f[2],
            ty: &f[3],
            graph: &f[4],
            test_index: &f[5],
        };
        parse_planetoid(&files, "tiny")
    }

    fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        let at = bytes
            .windows(from.len())
            .position(|w| w == from)
            .expect("pattern in fixture");
        [&bytes[..at], to, &bytes[at + from.len()..]].concat()
    }

    #[test]
    fn parses_from_memory_like_the_files() {
        let (g, classes) = parse(&fixture()).unwrap();
        assert_eq!((g.nodes(), g.edges(), classes.len()), (6, 6, 3));
        let m = parse_matrix(&fixture()[0], "allx").unwrap();
        assert_eq!((m.rows, m.cols), (4, 4));
    }

    #[test]
    fn malformed_files_are_errors_naming_them_not_panics() {
        // An empty dtype code (used to slice `code[1..]`).
        let mut f = fixture();
        f[2] = replace(&f[2], b"X\x02\x00\x00\x00i8", b"X\x00\x00\x00\x00");
        let e = parse(&f).unwrap_err().to_string();
        assert!(e.contains("ind.tiny.ally") && e.contains("dtype"), "{e}");
        // A CSR row pointer beyond the stored values (used to index past them).
        let mut f = fixture();
        f[0] = replace(
            &f[0],
            b"\x03\x00\x00\x00\x04\x00\x00\x00q+",
            b"\x03\x00\x00\x00\x09\x00\x00\x00q+",
        );
        let e = parse(&f).unwrap_err().to_string();
        assert!(
            e.contains("ind.tiny.allx") && e.contains("row pointer"),
            "{e}"
        );
        // A sparse shape far beyond the limit (used to allocate it).
        let mut f = fixture();
        f[0] = replace(
            &f[0],
            b"K\x04K\x04\x86q0",
            b"J\xff\xff\xff\x7fJ\xff\xff\xff\x7f\x86q0",
        );
        let e = parse(&f).unwrap_err().to_string();
        assert!(e.contains("ind.tiny.allx") && e.contains("limit"), "{e}");
    }

    #[test]
    fn test_ids_that_are_huge_or_repeated_are_refused() {
        let mut f = fixture();
        f[5] = b"5\n3000000000\n".to_vec();
        let e = parse(&f).unwrap_err().to_string();
        assert!(e.contains("ind.tiny.test.index: line 2"), "{e}");
        f[5] = b"5\n5\n".to_vec();
        let e = parse(&f).unwrap_err().to_string();
        assert!(e.contains("test id 5 appears twice"), "{e}");
    }

    #[test]
    fn a_graph_of_self_loops_only_is_refused() {
        let mut f = fixture();
        // {0: [0], 1: [1]}
        f[4] = b"\x80\x02}(K\x00]K\x00aK\x01]K\x01au.".to_vec();
        let e = parse(&f).unwrap_err().to_string();
        assert!(
            e.contains("ind.tiny.graph") && e.contains("2 self-loop(s)"),
            "{e}"
        );
    }
}
