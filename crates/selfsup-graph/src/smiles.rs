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
                    digits.parse().expect("two digits")
                } else {
                    i += 1;
                    c.to_digit(10).expect("digit")
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
    while i < c.len() && c[i] == '@' {
        i += 1;
    }
    let mut hydrogens = 0;
    if i < c.len() && c[i] == 'H' {
        i += 1;
        hydrogens = 1;
        let start = i;
        while i < c.len() && c[i].is_ascii_digit() {
            i += 1;
        }
        if i > start {
            hydrogens = c[start..i]
                .iter()
                .collect::<String>()
                .parse()
                .map_err(|_| "bad H count")?;
        }
    }
    let mut charge = 0i32;
    if i < c.len() && (c[i] == '+' || c[i] == '-') {
        let sign = if c[i] == '+' { 1 } else { -1 };
        let mut n = 1;
        i += 1;
        let start = i;
        while i < c.len() && c[i] == c[start - 1] {
            n += 1;
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
}
