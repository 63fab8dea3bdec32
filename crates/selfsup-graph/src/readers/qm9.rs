//! QM9 (Ramakrishnan et al. 2014) as shipped in the PyPI package
//! `qm9pack==1.0.3` (`cargo xtask fetch qm9`): `qm9_part{1,2,3}.csv`, one
//! molecule per line with its SMILES and DFT properties (quoted CSV; header
//! `XYZ_file,Index,SMILES,...,HOMO_LUMO_gap_au,...`).
//!
//! A molecule becomes its heavy-atom graph from the SMILES ([`crate::smiles`];
//! see there why not from coordinates), one node per atom with 9 features:
//! one-hot C, N, O, F, other; aromatic; formal charge; attached hydrogens;
//! heavy-atom degree. Edges carry the bond order (aromatic 1.5). The target
//! is one numeric column, multiplied by `target_scale` (the HOMO-LUMO gap in
//! hartree x 27.211386 = eV). A fixed subset of `molecules` rows is drawn
//! with its own seed from the files given, so every run sees the same one.
//!
//! An unparsable SMILES or target is an error naming the file and line,
//! unless `skip_unparsable` is set: then the molecule is skipped and counted.
use crate::error::{decode_text, read_bytes, GraphError, GraphResult};
use crate::graph::{Graph, GraphBuilder};
use crate::smiles::parse_smiles;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `[data] format = "qm9"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Qm9Config {
    /// CSV files below the data root.
    pub files: Vec<PathBuf>,
    /// Size of the fixed subset.
    pub molecules: usize,
    /// Seed of the subset (not the training seed).
    pub subset_seed: u64,
    /// Target column.
    pub target: String,
    pub target_scale: f64,
    /// Unit of the scaled target (for reports).
    pub target_unit: String,
    /// Skip (and count) molecules whose SMILES or target do not parse.
    pub skip_unparsable: bool,
}

impl Default for Qm9Config {
    fn default() -> Self {
        Self {
            files: vec![PathBuf::from("qm9/qm9_part1.csv")],
            molecules: 2000,
            subset_seed: 0,
            target: "HOMO_LUMO_gap_au".into(),
            target_scale: 27.211_386,
            target_unit: "eV".into(),
            skip_unparsable: false,
        }
    }
}

/// Molecules read, with their targets.
#[derive(Debug)]
pub struct Qm9Set {
    pub graphs: Vec<Graph>,
    pub targets: Vec<f64>,
    /// Molecules skipped because `skip_unparsable` was set.
    pub skipped: usize,
}

/// Splits one CSV line on commas outside double quotes.
fn csv_fields(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, b) in line.bytes().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                out.push(line[start..i].trim_matches('"'));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(line[start..].trim_matches('"'));
    out
}

/// The molecule graph of `smiles` (9 features per atom, see the module docs).
pub fn molecule_graph(smiles: &str) -> Result<Graph, String> {
    let m = parse_smiles(smiles)?;
    let mut b = GraphBuilder::new(m.atoms.len());
    for &(u, v, bond) in &m.bonds {
        b.add_edge(u, v, bond.order());
    }
    let mut degree = vec![0f32; m.atoms.len()];
    for &(u, v, _) in &m.bonds {
        degree[u] += 1.0;
        degree[v] += 1.0;
    }
    let mut f = Vec::with_capacity(m.atoms.len() * 9);
    for (a, d) in m.atoms.iter().zip(degree) {
        let slot = ["C", "N", "O", "F"]
            .iter()
            .position(|&e| e == a.element)
            .unwrap_or(4);
        let mut one_hot = [0f32; 5];
        one_hot[slot] = 1.0;
        f.extend_from_slice(&one_hot);
        f.extend_from_slice(&[
            f32::from(u8::from(a.aromatic)),
            a.charge as f32,
            a.hydrogens as f32,
            d,
        ]);
    }
    Ok(b.build(f, 9, None))
}

/// Reads the subset below `root`.
pub fn read_qm9(root: &Path, cfg: &Qm9Config) -> GraphResult<Qm9Set> {
    let mut files = Vec::new();
    for f in &cfg.files {
        let path = root.join(f);
        let bytes = read_bytes(&path)?;
        files.push((path, bytes));
    }
    let files: Vec<(&Path, &[u8])> = files
        .iter()
        .map(|(p, b)| (p.as_path(), b.as_slice()))
        .collect();
    qm9_at(&files, cfg)
}

/// Parses QM9 CSV files held in memory, `(name, bytes)` each (`name` stands
/// for the file in errors); `cfg.files` is not used. Touches no file.
pub fn parse_qm9(files: &[(&str, &[u8])], cfg: &Qm9Config) -> GraphResult<Qm9Set> {
    let files: Vec<(&Path, &[u8])> = files.iter().map(|&(n, b)| (Path::new(n), b)).collect();
    qm9_at(&files, cfg)
}

fn qm9_at(files: &[(&Path, &[u8])], cfg: &Qm9Config) -> GraphResult<Qm9Set> {
    let mut texts = Vec::new();
    for &(path, bytes) in files {
        texts.push((path, decode_text(bytes, path)?));
    }
    let mut rows: Vec<(usize, usize, usize, usize)> = Vec::new(); // file, line, smiles col, target col
    let mut lines_of = Vec::new();
    for (k, (path, text)) in texts.iter().enumerate() {
        let lines: Vec<&str> = text.lines().collect();
        let header = csv_fields(lines.first().copied().unwrap_or(""));
        let col = |name: &str| {
            header.iter().position(|h| *h == name).ok_or_else(|| {
                GraphError::line(path, 1, format!("no column {name:?} in the header"))
            })
        };
        let (s, t) = (col("SMILES")?, col(&cfg.target)?);
        for (i, l) in lines.iter().enumerate().skip(1) {
            if !l.trim().is_empty() {
                rows.push((k, i, s, t));
            }
        }
        lines_of.push(lines);
    }
    if cfg.molecules < rows.len() {
        rows.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.subset_seed));
        rows.truncate(cfg.molecules);
        rows.sort_unstable();
    }
    let mut set = Qm9Set {
        graphs: Vec::new(),
        targets: Vec::new(),
        skipped: 0,
    };
    for (k, i, s, t) in rows {
        let path = texts[k].0;
        let fields = csv_fields(lines_of[k][i]);
        let parsed = match (fields.get(s), fields.get(t)) {
            (Some(smiles), Some(target)) => molecule_graph(smiles)
                .map_err(|e| format!("SMILES {smiles:?}: {e}"))
                .and_then(|g| match target.trim().parse::<f64>() {
                    Ok(y) if y.is_finite() => Ok((g, y)),
                    _ => Err(format!(
                        "target {:?} = {target:?} is not a number",
                        cfg.target
                    )),
                }),
            _ => Err(format!("{} fields, fewer than the header's", fields.len())),
        };
        match parsed {
            Ok((g, y)) => {
                set.graphs.push(g);
                set.targets.push(y * cfg.target_scale);
            }
            Err(_) if cfg.skip_unparsable => set.skipped += 1,
            Err(e) => {
                return Err(GraphError::line(
                    path,
                    i + 1,
                    format!(
                        "{e} (set [data] skip_unparsable = true to skip and count such molecules)"
                    ),
                ))
            }
        }
    }
    if set.graphs.is_empty() {
        return Err(GraphError::Invalid(format!(
            "QM9: no molecule was read ({} skipped as unparsable)",
            set.skipped
        )));
    }
    if set.graphs.iter().all(|g| g.edges() == 0) {
        return Err(GraphError::Invalid(format!(
            "QM9: none of the {} molecules read has a bond between heavy atoms, nothing to \
             train on; raise [data] molecules or give other files",
            set.graphs.len()
        )));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "XYZ_file,Index,SMILES,InChi,N_atoms,Elements,HOMO_LUMO_gap_au\n";

    fn write(dir: &Path, body: &str) -> Qm9Config {
        std::fs::write(dir.join("part.csv"), format!("{HEADER}{body}")).unwrap();
        Qm9Config {
            files: vec!["part.csv".into()],
            molecules: 10,
            ..Default::default()
        }
    }

    #[test]
    fn reads_molecules_with_quoted_fields() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(
            dir.path(),
            "\"a.xyz\",1,\"C\",\"InChI=1S/CH4/h1H4\",5,\"['C','H','H','H','H']\",0.5048\n\
             \"b.xyz\",2,\"CC(=O)O\",\"x\",8,\"['C','C']\",0.25\n",
        );
        let set = read_qm9(dir.path(), &cfg).unwrap();
        assert_eq!(set.graphs.len(), 2);
        assert!((set.targets[0] - 0.5048 * 27.211_386).abs() < 1e-9);
        let acetic = &set.graphs[1];
        assert_eq!(
            (acetic.nodes(), acetic.edges(), acetic.feature_dim),
            (4, 3, 9)
        );
    }

    #[test]
    fn an_unparsable_smiles_names_file_and_line_or_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = write(
            dir.path(),
            "\"a\",1,\"CC\",\"x\",1,\"x\",0.5\n\"b\",2,\"C1CC\",\"x\",1,\"x\",0.5\n",
        );
        let e = read_qm9(dir.path(), &cfg).unwrap_err().to_string();
        assert!(
            e.contains("part.csv: line 3") && e.contains("C1CC") && e.contains("never closed"),
            "{e}"
        );
        cfg.skip_unparsable = true;
        let set = read_qm9(dir.path(), &cfg).unwrap();
        assert_eq!((set.graphs.len(), set.skipped), (1, 1));
    }

    #[test]
    fn unknown_elements_and_exceeded_valences_name_file_and_line_or_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = write(
            dir.path(),
            "\"a\",1,\"CC\",\"x\",1,\"x\",0.5\n\"b\",2,\"[Xx]C\",\"x\",1,\"x\",0.5\n\
             \"c\",3,\"C(C)(C)(C)(C)C\",\"x\",1,\"x\",0.5\n",
        );
        let e = read_qm9(dir.path(), &cfg).unwrap_err().to_string();
        assert!(
            e.contains("part.csv: line 3") && e.contains("unknown element"),
            "{e}"
        );
        cfg.skip_unparsable = true;
        let set = read_qm9(dir.path(), &cfg).unwrap();
        assert_eq!((set.graphs.len(), set.skipped), (1, 2));
        let body = "\"c\",3,\"C(C)(C)(C)(C)C\",\"x\",1,\"x\",0.5\n";
        let text = format!("{HEADER}{body}");
        let e = parse_qm9(&[("mem.csv", text.as_bytes())], &Qm9Config::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mem.csv: line 2") && e.contains("valence"),
            "{e}"
        );
    }

    #[test]
    fn molecules_without_any_bond_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(
            dir.path(),
            "\"a\",1,\"C\",\"x\",1,\"x\",0.5\n\"b\",2,\"O\",\"x\",1,\"x\",0.5\n",
        );
        let e = read_qm9(dir.path(), &cfg).unwrap_err().to_string();
        assert!(e.contains("no bond") || e.contains("bond between"), "{e}");
    }
}
