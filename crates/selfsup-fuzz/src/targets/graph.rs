//! Graph readers: edge lists, adjacency CSV, node labels, Planetoid pickles,
//! SMILES and QM9 CSV.
use crate::engine::Target;
use crate::seeds::{self, join, split_n};
use selfsup_graph::graph::{Featurize, GraphBuilder};
use selfsup_graph::readers::planetoid::PlanetoidFiles;
use selfsup_graph::readers::qm9::Qm9Config;
use selfsup_graph::readers::{adjacency_csv, edge_list, planetoid, qm9};

const CSV_DICT: &[&[u8]] = &[
    b",", b" ", b"\t", b"\n", b"-", b".", b"e", b"nan", b"inf", b"#",
];
const PICKLE_DICT: &[&[u8]] = &[
    b"\x80\x02",
    b"\x80\x04\x95",
    b"cnumpy.core.multiarray\n_reconstruct\n",
    b"cscipy.sparse.csr\ncsr_matrix\n",
    b"cnumpy\nndarray\n",
    b"cnumpy\ndtype\n",
    b"ccollections\ndefaultdict\n",
    b"c__builtin__\nlist\n",
    b"}q\x00",
    b"]q\x00",
    b"(",
    b"t",
    b"R",
    b"b",
    b"s",
    b"u",
    b"e",
    b"a",
    b"J\xff\xff\xff\x7f",
    b"K\x05",
    b"M\xff\xff",
    b"h\x00",
    b"q\x01",
    b"U\x02<f8",
    b"U\x02<i8",
    b"C\x08",
    b"X\x04\x00\x00\x00",
    b"\x85",
    b"\x86",
    b"\x87",
    b".",
];
const SMILES_DICT: &[&[u8]] = &[
    b"C", b"c", b"N", b"n", b"O", b"o", b"F", b"Cl", b"Br", b"S", b"(", b")", b"=", b"#", b"1",
    b"2", b"%10", b"[", b"]", b"@", b"@@", b"H", b"+", b"-", b"/", b"\\", b".", b"[nH]", b"[O-]",
    b"[NH3+]", b"[2H]", b"[C@@H]", b":",
];

pub const TARGETS: [Target; 8] = [
    Target {
        name: "edge-list",
        about: "selfsup_graph::readers::edge_list::parse_edge_list + degree features",
        run: run_edge_list,
        seeds: seeds_edge_list,
        dict: CSV_DICT,
        max_len: 64 << 10,
    },
    Target {
        name: "adjacency-csv",
        about: "selfsup_graph::readers::adjacency_csv::parse_adjacency + degree features",
        run: run_adjacency,
        seeds: seeds_adjacency,
        dict: CSV_DICT,
        max_len: 64 << 10,
    },
    Target {
        name: "node-labels",
        about: "selfsup_graph::readers::adjacency_csv::parse_node_labels",
        run: run_labels,
        seeds: seeds_labels,
        dict: CSV_DICT,
        max_len: 64 << 10,
    },
    Target {
        name: "pickle",
        about: "selfsup_graph::pickle::unpickle (the pickle VM)",
        run: run_pickle,
        seeds: seeds_pickle,
        dict: PICKLE_DICT,
        max_len: 64 << 10,
    },
    Target {
        name: "planetoid-matrix",
        about: "selfsup_graph::readers::planetoid::parse_matrix (CSR / ndarray pickles)",
        run: run_matrix,
        seeds: seeds_pickle,
        dict: PICKLE_DICT,
        max_len: 64 << 10,
    },
    Target {
        name: "planetoid",
        about: "selfsup_graph::readers::planetoid::parse_planetoid (the six ind.* files)",
        run: run_planetoid,
        seeds: seeds_planetoid,
        dict: PICKLE_DICT,
        max_len: 128 << 10,
    },
    Target {
        name: "smiles",
        about: "selfsup_graph::readers::qm9::molecule_graph (SMILES parser)",
        run: run_smiles,
        seeds: seeds_smiles,
        dict: SMILES_DICT,
        max_len: 512,
    },
    Target {
        name: "qm9-csv",
        about: "selfsup_graph::readers::qm9::parse_qm9 (QM9 CSV)",
        run: run_qm9,
        seeds: seeds_qm9,
        dict: SMILES_DICT,
        max_len: 64 << 10,
    },
];

fn finish(b: GraphBuilder) -> Result<(), String> {
    let (features, dim) = Featurize::Degree.apply(&b).map_err(|e| e.to_string())?;
    let g = b.build(features, dim, None);
    let _ = g.nodes();
    Ok(())
}

fn run_edge_list(data: &[u8]) -> Result<(), String> {
    let nodes = (crate::targets::pick(data, 3) == 0).then_some(64);
    let b = edge_list::parse_edge_list(data, "fuzz.edgelist", nodes).map_err(|e| e.to_string())?;
    finish(b)
}

fn seeds_edge_list() -> Vec<Vec<u8>> {
    let mut out = vec![
        b"0 1\n1 2\n2 0\n".to_vec(),
        b"0 1 0.5\n1 2 2.0\n2 3 1\n3 0 1e-3\n".to_vec(),
        b"# comment\n5\t7\n7\t5\n5 5\n".to_vec(),
    ];
    out.extend(
        seeds::real("graspologic", &["edgelist"])
            .into_iter()
            .map(whole_lines),
    );
    out
}

fn run_adjacency(data: &[u8]) -> Result<(), String> {
    let b =
        adjacency_csv::parse_adjacency(data, "fuzz_adjacency.csv").map_err(|e| e.to_string())?;
    finish(b)
}

fn seeds_adjacency() -> Vec<Vec<u8>> {
    let mut out = vec![
        b"0,1,0\n1,0,2\n0,2,0\n".to_vec(),
        b"0 1 1 0\n1 0 0 1\n1 0 0 1\n0 1 1 0\n".to_vec(),
        b"0.0,0.5\n0.5,0.0\n".to_vec(),
    ];
    // The real connectomes' top-left 48 x 48 corner: still square, still real.
    out.extend(
        seeds::real_named("graspologic", |n| n.ends_with("_adjacency.csv"))
            .iter()
            .map(|v| corner(v, 48)),
    );
    out
}

/// The first `k` rows of a matrix (CSV or whitespace) cut to their first `k` fields.
fn corner(text: &[u8], k: usize) -> Vec<u8> {
    let text = String::from_utf8_lossy(text);
    let sep = if text.contains(',') { "," } else { " " };
    let mut out = String::new();
    for line in text.lines().take(k) {
        let fields: Vec<&str> = line.split(sep).filter(|f| !f.is_empty()).take(k).collect();
        out.push_str(&fields.join(sep));
        out.push('\n');
    }
    out.into_bytes()
}

/// `v` without its last, possibly cut, line.
fn whole_lines(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(p) = v.iter().rposition(|&b| b == b'\n') {
        v.truncate(p + 1);
    }
    v
}

fn run_labels(data: &[u8]) -> Result<(), String> {
    // As many nodes as the file has lines, or one fewer.
    let lines = data.iter().filter(|&&b| b == b'\n').count();
    let n = if crate::targets::pick(data, 2) == 0 {
        lines
    } else {
        lines.saturating_sub(1).max(1)
    };
    let l =
        adjacency_csv::parse_node_labels(data, "fuzz_labels.csv", n).map_err(|e| e.to_string())?;
    assert!(
        l.ids
            .iter()
            .all(|&i| i >= 0 && (i as usize) < l.classes.len()),
        "a label id without a class"
    );
    Ok(())
}

fn seeds_labels() -> Vec<Vec<u8>> {
    let mut out = vec![
        b"KC\nMBON\nKC\nPN\n".to_vec(),
        b"0,a\n1,b\n2,a\n".to_vec(),
        b"x\ny\n".to_vec(),
    ];
    out.extend(
        seeds::real_named("graspologic", |n| n.ends_with("_cell_labels.csv"))
            .into_iter()
            .map(whole_lines),
    );
    out
}

fn run_pickle(data: &[u8]) -> Result<(), String> {
    selfsup_graph::pickle::unpickle(data).map(|_| ())
}

fn run_matrix(data: &[u8]) -> Result<(), String> {
    planetoid::parse_matrix(data, "ind.fuzz.x")
        .map(|_| ())
        .map_err(|e| e.to_string())
}

const PLANETOID: [&str; 6] = ["allx", "tx", "ally", "ty", "graph", "test.index"];

fn fixture(ext: &str) -> Option<Vec<u8>> {
    seeds::workspace_file(&format!(
        "crates/selfsup-graph/tests/fixtures/planetoid/ind.tiny.{ext}"
    ))
}

fn seeds_pickle() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = ["x", "allx", "tx", "y", "ally", "ty", "graph"]
        .iter()
        .filter_map(|e| fixture(e))
        .collect();
    // Protocol 2 by hand: a list of ints, a dict of lists.
    out.push(b"\x80\x02]q\x00(K\x01K\x02J\x00\x00\x01\x00e.".to_vec());
    out.push(b"\x80\x02}q\x00(K\x00]q\x01(K\x01K\x02eK\x01]q\x02K\x00au.".to_vec());
    out
}

fn run_planetoid(data: &[u8]) -> Result<(), String> {
    let f = split_n(data, 6);
    let files = PlanetoidFiles {
        allx: f[0],
        tx: f[1],
        ally: f[2],
        ty: f[3],
        graph: f[4],
        test_index: f[5],
    };
    planetoid::parse_planetoid(&files, "fuzz")
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn seeds_planetoid() -> Vec<Vec<u8>> {
    let parts: Vec<Vec<u8>> = PLANETOID.iter().filter_map(|e| fixture(e)).collect();
    if parts.len() != PLANETOID.len() {
        return Vec::new();
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    vec![join(&refs)]
}

fn run_smiles(data: &[u8]) -> Result<(), String> {
    let g = qm9::molecule_graph(&String::from_utf8_lossy(data))?;
    let _ = g.nodes();
    Ok(())
}

const SMILES: [&str; 14] = [
    "CCO",
    "c1ccccc1",
    "C(=O)O",
    "[NH4+]",
    "C1CC1",
    "N#N",
    "[C@@H](F)(Cl)Br",
    "OC[C@H]1OC(O)[C@@H](O)[C@@H]1O",
    "C/C=C/C",
    "[2H]O",
    "c1ccc2[nH]ccc2c1",
    "C%10CC%10",
    "[O-][N+](=O)C",
    "CC(C)(C)C#N",
];

fn seeds_smiles() -> Vec<Vec<u8>> {
    SMILES.iter().map(|s| s.as_bytes().to_vec()).collect()
}

fn run_qm9(data: &[u8]) -> Result<(), String> {
    let cfg = Qm9Config {
        molecules: usize::MAX,
        skip_unparsable: crate::targets::pick(data, 2) == 0,
        ..Qm9Config::default()
    };
    let set = qm9::parse_qm9(&[("fuzz_qm9.csv", data)], &cfg).map_err(|e| e.to_string())?;
    let _ = set;
    Ok(())
}

fn seeds_qm9() -> Vec<Vec<u8>> {
    let mut csv = String::from("XYZ_file,Index,SMILES,InChi,N_atoms,Elements,HOMO_LUMO_gap_au\n");
    for (i, s) in SMILES.iter().enumerate() {
        csv.push_str(&format!(
            "dsgdb9nsd_{i:06}.xyz,{i},\"{s}\",\"InChI=1S/X\",5,\"C,H\",0.{}\n",
            250 + i
        ));
    }
    let mut out = vec![csv.into_bytes()];
    out.extend(seeds::real("qm9", &["csv"]).into_iter().map(whole_lines));
    out
}
