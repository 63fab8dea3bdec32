//! A small SMILES parser (Weininger 1988; OpenSMILES) for the organic
//! subset QM9 uses, turning a molecule into a heavy-atom graph.
//!
//! Understood: organic-subset atoms `B C N O P S F Cl Br I` and their
//! aromatic forms `b c n o p s`; bracket atoms `[13CH3+]` with isotope,
//! element (any symbol, aromatic `se`/`as` too), chirality `@`/`@@`
//! (ignored), hydrogen count `H`/`Hn`, charge `+`, `-`, `+n`, `--`, `++`
//! and atom class `:n` (ignored); bonds `- = # $ :` and `/ \` (read as
//! single, stereo ignored); branches `( )`; ring closures `1`-`9` and
//! `%nn`, with a bond symbol on either end; `.` between fragments.
//! Hydrogens become a count on their heavy atom (implicit hydrogens of the
//! organic subset from the lowest normal valence that fits: B 3, C 4,
//! N 3/5, O 2, P 3/5, S 2/4/6, halogens 1; an aromatic bond counts 1.5).
//! Anything else is an error with the character position.
//!
//! Chemically impossible input is refused too: an element symbol that is
//! not in the periodic table (`[Xx]`), an aromatic symbol other than
//! `b c n o p s se as`, two bonds between the same atoms, more than one `H`
//! digit or a charge beyond +-15 (OpenSMILES), and an atom whose bonds and
//! hydrogens exceed its largest valence (pentavalent carbon). Valence limits:
//! B 3, C 4, N 5, O 2, P 5, S 6, F 1, Cl / Br / I 7, H and the alkali metals
//! 1, the alkaline earths 2, Al 3, Si / Ge 4, As 5, Se / Te 6, each plus the
//! atom's absolute charge; an aromatic bond counts 1 here (its lowest
//! Kekule order), so a valid aromatic system is never refused. Other
//! elements are not valence-checked.
//!
//! Why SMILES and not coordinates: QM9's SMILES are the molecules' bond
//! graphs as chemists wrote them, while bonding from coordinates needs
//! covalent radii and a tolerance that mis-bonds strained rings and long
//! bonds; the SMILES graph is also what PyTorch Geometric's QM9 (via RDKit)
//! uses.

/// Bond orders.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bond {
    Single,
    Double,
    Triple,
    Quadruple,
    Aromatic,
}

impl Bond {
    /// Contribution to the valence.
    pub fn order(self) -> f32 {
        match self {
            Bond::Single => 1.0,
            Bond::Double => 2.0,
            Bond::Triple => 3.0,
            Bond::Quadruple => 4.0,
            Bond::Aromatic => 1.5,
        }
    }
}

/// One heavy atom.
#[derive(Debug, Clone, PartialEq)]
pub struct Atom {
    /// Element symbol, capitalised (`C`, `Cl`).
    pub element: String,
    pub aromatic: bool,
    pub charge: i32,
    /// Attached hydrogens (explicit in brackets, else implicit).
    pub hydrogens: u32,
}

/// A parsed molecule: atoms and bonds between atom indices.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Molecule {
    pub atoms: Vec<Atom>,
    pub bonds: Vec<(usize, usize, Bond)>,
}

const ORGANIC: [&str; 10] = ["Cl", "Br", "B", "C", "N", "O", "P", "S", "F", "I"];
const AROMATIC: [&str; 6] = ["b", "c", "n", "o", "p", "s"];

fn normal_valences(element: &str) -> &'static [f32] {
    match element {
        "B" => &[3.0],
        "C" => &[4.0],
        "N" | "P" => &[3.0, 5.0],
        "O" => &[2.0],
        "S" => &[2.0, 4.0, 6.0],
        "F" | "Cl" | "Br" | "I" => &[1.0],
        _ => &[],
    }
}

/// Every element symbol (IUPAC, 1-118).
const ELEMENTS: [&str; 118] = [
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S", "Cl",
    "Ar", "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As",
    "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In",
    "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb",
    "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl",
    "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Cm", "Bk",
    "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh",
    "Fl", "Mc", "Lv", "Ts", "Og",
];

/// Aromatic symbols allowed in brackets (OpenSMILES).
const BRACKET_AROMATIC: [&str; 8] = ["b", "c", "n", "o", "p", "s", "se", "as"];

/// The largest valence of an uncharged `element` (see the module docs);
/// `None` for elements that are not checked.
fn max_valence(element: &str) -> Option<f32> {
    Some(match element {
        "H" | "F" | "Li" | "Na" | "K" | "Rb" | "Cs" => 1.0,
        "O" | "Be" | "Mg" | "Ca" | "Sr" | "Ba" => 2.0,
        "B" | "Al" => 3.0,
        "C" | "Si" | "Ge" => 4.0,
        "N" | "P" | "As" => 5.0,
        "S" | "Se" | "Te" => 6.0,
        "Cl" | "Br" | "I" => 7.0,
        _ => return None,
    })
}

struct Pending {
    atom: usize,
    bond: Option<Bond>,
}

/// Parses `s`; the error says what is wrong and at which character (1-based).
pub fn parse_smiles(s: &str) -> Result<Molecule, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut m = Molecule::default();
    let mut bracket = Vec::new(); // whether atom i was written in brackets
    let mut prev: Option<usize> = None;
    let mut bond: Option<Bond> = None;
    let mut stack: Vec<Option<usize>> = Vec::new();
    let mut rings: std::collections::HashMap<u32, Pending> = Default::default();
    let mut i = 0;
    let at = |i: usize| i + 1;
    let add_atom = |m: &mut Molecule,
                    atom: Atom,
                    prev: &mut Option<usize>,
                    bond: &mut Option<Bond>,
                    in_bracket: bool,
                    bracket: &mut Vec<bool>| {
        let idx = m.atoms.len();
        let aromatic = atom.aromatic;
        m.atoms.push(atom);
        bracket.push(in_bracket);
        if let Some(p) = *prev {
            let b = bond.take().unwrap_or(if aromatic && m.atoms[p].aromatic {
                Bond::Aromatic
            } else {
                Bond::Single
            });
            m.bonds.push((p, idx, b));
        }
        *bond = None;
        *prev = Some(idx);
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '-' | '=' | '#' | '$' | ':' | '/' | '\\' => {
                if bond.is_some() {
                    return Err(format!("two bond symbols in a row at character {}", at(i)));
                }
                bond = Some(match c {
                    '=' => Bond::Double,
                    '#' => Bond::Triple,
                    '$' => Bond::Quadruple,
                    ':' => Bond::Aromatic,
                    _ => Bond::Single,
                });
                i += 1;
            }
            '(' => {
                if prev.is_none() {
                    return Err(format!("branch before any atom at character {}", at(i)));
                }
                stack.push(prev);
                i += 1;
            }
            ')' => {
                if bond.is_some() {
                    return Err(format!(
                        "bond without an atom before ')' at character {}",
                        at(i)
                    ));
                }
                prev = stack
                    .pop()
                    .ok_or_else(|| format!("unmatched ')' at character {}", at(i)))?;
                i += 1;
            }
            '.' => {
                if bond.is_some() {
                    return Err(format!("bond before '.' at character {}", at(i)));
                }
                prev = None;
                i += 1;
            }
            '%' | '0'..='9' => {
                let start = i;
                let number = if c == '%' {
                    let digits: String = chars.iter().skip(i + 1).take(2).collect();
                    if digits.len() != 2 || !digits.chars().all(|d| d.is_ascii_digit()) {
                        return Err(format!(
                            "'%' must be followed by two digits at character {}",
                            at(i)
                        ));
                    }
                    i += 3;
                    digits.parse().unwrap_or(0)
                } else {
                    i += 1;
                    c.to_digit(10).unwrap_or(0)
                };
                let p = prev.ok_or_else(|| {
                    format!("ring bond before any atom at character {}", at(start))
                })?;
                match rings.remove(&number) {
                    Some(open) => {
                        if open.atom == p {
                            return Err(format!(
                                "ring bond {number} closes on its own atom at character {}",
                                at(start)
                            ));
                        }
                        let b = match (open.bond, bond.take()) {
                            (Some(a), Some(b)) if a != b => {
                                return Err(format!(
                                "ring bond {number} has two different bond orders at character {}",
                                at(start)
                            ))
                            }
                            (Some(a), _) | (None, Some(a)) => a,
                            (None, None) if m.atoms[open.atom].aromatic && m.atoms[p].aromatic => {
                                Bond::Aromatic
                            }
                            (None, None) => Bond::Single,
                        };
                        m.bonds.push((open.atom, p, b));
                    }
                    None => {
                        rings.insert(
                            number,
                            Pending {
                                atom: p,
                                bond: bond.take(),
                            },
                        );
                    }
                }
            }
            '[' => {
                let end = chars[i..]
                    .iter()
                    .position(|&c| c == ']')
                    .map(|e| i + e)
                    .ok_or_else(|| format!("unclosed '[' at character {}", at(i)))?;
                let atom = parse_bracket(&chars[i + 1..end])
                    .map_err(|e| format!("{e} in the bracket atom at character {}", at(i)))?;
                add_atom(&mut m, atom, &mut prev, &mut bond, true, &mut bracket);
                i = end + 1;
            }
            _ => {
                let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
                let (sym, len) = if ORGANIC.contains(&two.as_str()) && two.len() == 2 {
                    (two.clone(), 2)
                } else {
                    (c.to_string(), 1)
                };
                let aromatic = AROMATIC.contains(&sym.as_str());
                if !aromatic && !ORGANIC.contains(&sym.as_str()) {
                    return Err(format!("unexpected {c:?} at character {} (not an organic-subset atom, bond, branch or ring bond)", at(i)));
                }
                let element = if aromatic { sym.to_uppercase() } else { sym };
                add_atom(
                    &mut m,
                    Atom {
                        element,
                        aromatic,
                        charge: 0,
                        hydrogens: 0,
                    },
                    &mut prev,
                    &mut bond,
                    false,
                    &mut bracket,
                );
                i += len;
            }
        }
    }
    if bond.is_some() {
        return Err("bond symbol at the end".into());
    }
    if !stack.is_empty() {
        return Err("unclosed '('".into());
    }
    if let Some(n) = rings.keys().min() {
        return Err(format!("ring bond {n} is never closed"));
    }
    if m.atoms.is_empty() {
        return Err("no atom".into());
    }
    // Implicit hydrogens of organic-subset atoms.
    let mut used = vec![0f32; m.atoms.len()];
    for &(a, b, o) in &m.bonds {
        used[a] += o.order();
        used[b] += o.order();
    }
    for (k, atom) in m.atoms.iter_mut().enumerate() {
        if bracket[k] {
            continue;
        }
        let v = normal_valences(&atom.element)
            .iter()
            .copied()
            .find(|&v| v >= used[k].floor())
            .unwrap_or(0.0);
        atom.hydrogens = (v - used[k]).max(0.0).floor() as u32;
    }
    // Valence: bonds (aromatic ones at their lowest order, 1) + hydrogens.
    let mut lowest = vec![0f32; m.atoms.len()];
    let mut pairs = std::collections::HashSet::new();
    for &(a, b, o) in &m.bonds {
        if !pairs.insert((a.min(b), a.max(b))) {
            return Err(format!(
                "atoms {} and {} are bonded twice (a ring bond closing on a bonded neighbour)",
                a + 1,
                b + 1
            ));
        }
        let o = if o == Bond::Aromatic { 1.0 } else { o.order() };
        lowest[a] += o;
        lowest[b] += o;
    }
    for (k, atom) in m.atoms.iter().enumerate() {
        if let Some(max) = max_valence(&atom.element) {
            let valence = lowest[k] + atom.hydrogens as f32;
            let allowed = max + atom.charge.unsigned_abs() as f32;
            if valence > allowed {
                return Err(format!(
                    "atom {} ({}{}) has valence {valence} (bonds and hydrogens), above the {allowed} \
                     {} allows: valence exceeded",
                    k + 1,
                    atom.element,
                    match atom.charge {
                        0 => String::new(),
                        c => format!(", charge {c:+}"),
                    },
                    atom.element
                ));
            }
        }
    }
    Ok(m)
}

fn parse_bracket(c: &[char]) -> Result<Atom, String> {
    let mut i = 0;
    while i < c.len() && c[i].is_ascii_digit() {
        i += 1; // isotope
    }
    if i >= c.len() || !c[i].is_ascii_alphabetic() {
        return Err("no element".into());
    }
    let mut sym = c[i].to_string();
    i += 1;
    let aromatic = sym.chars().all(|ch| ch.is_ascii_lowercase());
    // A second lowercase letter belongs to the symbol (Cl, Br, se, as), but
    // not an `H` count.
    if i < c.len() && c[i].is_ascii_lowercase() {
        sym.push(c[i]);
        i += 1;
    }
    let mut chars = sym.chars();
    let element = match chars.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + chars.as_str(),
        None => return Err("no element".into()),
    };
    if aromatic && !BRACKET_AROMATIC.contains(&sym.as_str()) {
        return Err(format!(
            "{sym:?} is not an aromatic element (b, c, n, o, p, s, se, as)"
        ));
    }
    if !ELEMENTS.contains(&element.as_str()) {
        return Err(format!("unknown element {sym:?}"));
    }
    while i < c.len() && c[i] == '@' {
        i += 1;
    }
    let mut hydrogens = 0;
    if i < c.len() && c[i] == 'H' {
        i += 1;
        hydrogens = 1;
        // One digit at most (OpenSMILES: `H` DIGIT?).
        if let Some(d) = c.get(i).and_then(|d| d.to_digit(10)) {
            hydrogens = d;
            i += 1;
        }
    }
    let mut charge = 0i32;
    if i < c.len() && (c[i] == '+' || c[i] == '-') {
        let sign = if c[i] == '+' { 1 } else { -1 };
        let mut n: i32 = 1;
        i += 1;
        let start = i;
        while i < c.len() && c[i] == c[start - 1] {
            n = n.saturating_add(1);
            i += 1;
        }
        let dstart = i;
        while i < c.len() && c[i].is_ascii_digit() {
            i += 1;
        }
        if i > dstart {
            n = c[dstart..i]
                .iter()
                .collect::<String>()
                .parse()
                .map_err(|_| "bad charge")?;
        }
        if n > 15 {
            let s = if sign > 0 { '+' } else { '-' };
            return Err(format!("charge {s}{n} beyond +-15"));
        }
        charge = sign * n;
    }
    if i < c.len() && c[i] == ':' {
        i += 1;
        while i < c.len() && c[i].is_ascii_digit() {
            i += 1;
        }
    }
    if i != c.len() {
        return Err(format!("unexpected {:?}", c[i]));
    }
    Ok(Atom {
        element,
        aromatic,
        charge,
        hydrogens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(s: &str) -> (usize, usize, u32) {
        let m = parse_smiles(s).unwrap();
        (
            m.atoms.len(),
            m.bonds.len(),
            m.atoms.iter().map(|a| a.hydrogens).sum(),
        )
    }

    #[test]
    fn counts_atoms_bonds_and_hydrogens() {
        assert_eq!(summary("C"), (1, 0, 4));
        assert_eq!(summary("CC(=O)O"), (4, 3, 4)); // acetic acid C2H4O2
        assert_eq!(summary("c1ccccc1"), (6, 6, 6)); // benzene
        assert_eq!(summary("C1CC1"), (3, 3, 6)); // cyclopropane
        assert_eq!(summary("C#N"), (2, 1, 1));
        assert_eq!(summary("c1cc[nH]c1"), (5, 5, 5)); // pyrrole C4H5N
        assert_eq!(summary("[NH3+]CC([O-])=O"), (5, 4, 5)); // glycine zwitterion
        assert_eq!(summary("C%12CC%12"), (3, 3, 6));
        assert_eq!(summary("OC1=CC=CN1"), (6, 6, 5));
        assert_eq!(summary("[C@@H]1(O)CC1"), (4, 4, 6));
        assert_eq!(summary("C=1CC1"), (3, 3, 4));
        assert_eq!(summary("ClC(Br)F"), (4, 3, 1));
    }

    #[test]
    fn aromatic_bonds_and_charges() {
        let m = parse_smiles("c1ccncc1").unwrap();
        assert!(m.bonds.iter().all(|b| b.2 == Bond::Aromatic));
        assert_eq!(m.atoms[3].hydrogens, 0);
        let m = parse_smiles("[13CH2-2]").unwrap();
        assert_eq!((m.atoms[0].charge, m.atoms[0].hydrogens), (-2, 2));
        let m = parse_smiles("[O--]").unwrap();
        assert_eq!(m.atoms[0].charge, -2);
    }

    #[test]
    fn unparsable_smiles_say_where() {
        for (bad, want) in [
            ("C1CC", "never closed"),
            ("CC)", "unmatched ')' at character 3"),
            ("C(C", "unclosed '('"),
            ("CX", "unexpected 'X' at character 2"),
            ("C[CH", "unclosed '['"),
            ("C=", "end"),
            ("C==C", "two bond symbols"),
            ("[]", "no element"),
            ("", "no atom"),
        ] {
            let e = parse_smiles(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_elements_and_exceeded_valences_are_refused() {
        for (bad, want) in [
            ("[Xx]", "unknown element \"Xx\""),
            ("C[Ch]C", "unknown element"),
            ("[x]", "not an aromatic element"),
            ("C(C)(C)(C)(C)C", "atom 1 (C) has valence 5"),
            ("[CH4]C", "valence 5"),
            ("O(C)(C)C", "valence 3"),
            ("FC(F)(F)(F)F", "valence exceeded"),
            ("C1C1", "bonded twice"),
            ("[CH12]", "unexpected '2'"),
            ("[C+16]", "beyond +-15"),
        ] {
            let e = parse_smiles(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
        // Valid molecules at their valence limits stay accepted.
        for good in [
            "[NH4+]",
            "C[N+](C)(C)C",
            "c1ccc2ccccc2c1",
            "O=S(=O)(O)O",
            "[O-][N+](=O)C",
            "C#[N+][C-]",
            "[C-]#[N+]C",
            "c1cc[nH]c1",
            "[2H]C",
            "FC(F)(F)F",
        ] {
            parse_smiles(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }
}
