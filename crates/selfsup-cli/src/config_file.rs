//! Reading a run config file before its typed parsing: `include = "base.toml"`
//! chains, merged under the including file, then `--set KEY=VALUE` overrides.
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// How many files an `include` chain may hold below the first.
pub const MAX_INCLUDE_DEPTH: usize = 8;

/// A config file read and patched: the TOML text to give `from_toml` (the
/// file's own text when nothing was included or set, so error positions
/// still point into it) and its parsed value.
pub struct Loaded {
    pub text: String,
    pub value: toml::Value,
}

/// Reads `path`, resolves its `include` chain and applies the `--set` flags.
pub fn load(path: &Path, sets: &[String]) -> Result<Loaded> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    let mut value: toml::Value =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let included = value.get("include").is_some();
    if included {
        value = resolve_includes(path, value, &mut vec![chain_key(path)])?;
    }
    for set in sets {
        apply_set(&mut value, set)?;
    }
    if !included && sets.is_empty() {
        return Ok(Loaded { text, value });
    }
    let text = toml::to_string(&value).with_context(|| {
        format!(
            "{}: writing the patched config back to TOML",
            path.display()
        )
    })?;
    Ok(Loaded { text, value })
}

fn chain_key(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Merges the file named by `value`'s `include` (and its own includes) under
/// `value`. `chain` holds the files being read, outermost first.
fn resolve_includes(
    path: &Path,
    mut value: toml::Value,
    chain: &mut Vec<PathBuf>,
) -> Result<toml::Value> {
    let Some(table) = value.as_table_mut() else {
        return Ok(value);
    };
    let Some(include) = table.remove("include") else {
        return Ok(value);
    };
    let Some(name) = include.as_str() else {
        bail!(
            "{}: include = {include} must be a file name in quotes, e.g. include = \"base.toml\"",
            path.display()
        );
    };
    let base = path.parent().unwrap_or(Path::new(".")).join(name);
    if !base.is_file() {
        bail!(
            "{}: include = \"{name}\": {} does not exist (the path is relative to the including file)",
            path.display(),
            base.display()
        );
    }
    let key = chain_key(&base);
    if chain.contains(&key) {
        let files: Vec<String> = chain
            .iter()
            .chain(std::iter::once(&key))
            .map(|p| p.display().to_string())
            .collect();
        bail!(
            "{}: include = \"{name}\" makes a cycle: {}",
            path.display(),
            files.join(" -> ")
        );
    }
    if chain.len() > MAX_INCLUDE_DEPTH {
        bail!(
            "{}: include = \"{name}\": includes nest deeper than {MAX_INCLUDE_DEPTH} files",
            path.display()
        );
    }
    let text = std::fs::read_to_string(&base)
        .with_context(|| format!("{}: reading include {}", path.display(), base.display()))?;
    let base_value: toml::Value = toml::from_str(&text).with_context(|| {
        format!(
            "{} (included by {}) is not valid TOML",
            base.display(),
            path.display()
        )
    })?;
    chain.push(key);
    let mut merged = resolve_includes(&base, base_value, chain)?;
    chain.pop();
    merge(&mut merged, value);
    Ok(merged)
}

/// Writes `over` onto `base`: tables merge key by key, anything else
/// (arrays included) replaces.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_table() && v.is_table() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Applies one `--set KEY=VALUE` flag.
pub fn apply_set(value: &mut toml::Value, set: &str) -> Result<()> {
    let Some((key, raw)) = set.split_once('=') else {
        bail!("--set {set}: expected KEY=VALUE, e.g. --set trainer.optimizer.lr=0.1");
    };
    let key = key.trim();
    let parts: Vec<&str> = key.split('.').map(str::trim).collect();
    if key.is_empty() || parts.iter().any(|p| p.is_empty()) {
        bail!("--set {set}: the key is empty or has an empty part; give a dotted key, e.g. --set trainer.optimizer.lr=0.1");
    }
    let Some((last, tables)) = parts.split_last() else {
        bail!("--set {set}: the key is empty");
    };
    let mut node = value;
    for (i, part) in tables.iter().enumerate() {
        let Some(table) = node.as_table_mut() else {
            bail!(
                "--set {set}: {} is not a table",
                parts.get(..i).unwrap_or_default().join(".")
            );
        };
        node = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    let here = tables.join(".");
    let Some(table) = node.as_table_mut() else {
        bail!(
            "--set {set}: {here} is a {}, not a table: {key} cannot be set",
            node.type_str()
        );
    };
    let parsed = parse_value(raw.trim());
    let new = match (parsed, table.get(*last)) {
        (Some(v), _) => v,
        (None, Some(toml::Value::String(_))) => toml::Value::String(raw.trim().to_string()),
        (None, _) => bail!(
            "--set {set}: {:?} is not a TOML value (numbers, true/false, [arrays], \"quoted strings\")",
            raw.trim()
        ),
    };
    table.insert(last.to_string(), new);
    Ok(())
}

/// `raw` as one TOML value, or None.
fn parse_value(raw: &str) -> Option<toml::Value> {
    let table: toml::Table = toml::from_str(&format!("v = {raw}")).ok()?;
    if table.len() != 1 {
        return None;
    }
    table.get("v").cloned()
}

/// The edit distance of two strings (insertions, deletions, substitutions).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

/// The candidate nearest to `word`, if it is near enough to be a typo.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let (d, best) = candidates
        .into_iter()
        .map(|c| (edit_distance(&word.to_lowercase(), c), c))
        .min_by_key(|(d, _)| *d)?;
    (d <= 3.max(word.chars().count() / 3)).then_some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> toml::Value {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn set_parses_toml_values_and_falls_back_to_strings() {
        let mut v = value("[trainer]\nname = \"a\"\n[trainer.optimizer]\nlr = 0.3\n");
        apply_set(&mut v, "trainer.optimizer.lr=0.1").unwrap();
        apply_set(&mut v, "eval.knn.k=20").unwrap();
        apply_set(&mut v, "trainer.name=bare").unwrap();
        apply_set(&mut v, "model.channels=[1, 2]").unwrap();
        assert_eq!(v["trainer"]["optimizer"]["lr"].as_float(), Some(0.1));
        assert_eq!(v["eval"]["knn"]["k"].as_integer(), Some(20));
        assert_eq!(v["trainer"]["name"].as_str(), Some("bare"));
        assert_eq!(v["model"]["channels"].as_array().map(Vec::len), Some(2));
        for bad in [
            "noequals",
            "=1",
            "a..b=1",
            "trainer.optimizer.lr.x=1",
            "x=bare",
        ] {
            let e = apply_set(&mut v, bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--set {bad}:")), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        assert!(apply_set(&mut v, "x=1\ny = 2").is_err());
    }

    #[test]
    fn includes_merge_tables_replace_arrays_and_stop_at_depth() {
        let dir = tempfile::tempdir().unwrap();
        let w = |n: &str, b: &str| std::fs::write(dir.path().join(n), b).unwrap();
        w(
            "base.toml",
            "[model]\narch = \"a\"\nchannels = [1, 2, 3]\n[run]\nthreads = 2\n",
        );
        w(
            "top.toml",
            "include = \"base.toml\"\n[model]\nchannels = [9]\n",
        );
        let v = load(&dir.path().join("top.toml"), &[]).unwrap().value;
        assert_eq!(v["model"]["arch"].as_str(), Some("a"));
        assert_eq!(v["model"]["channels"].as_array().map(Vec::len), Some(1));
        assert_eq!(v["run"]["threads"].as_integer(), Some(2));
        assert!(v.get("include").is_none());
        for i in 0..=MAX_INCLUDE_DEPTH {
            w(
                &format!("d{i}.toml"),
                &format!("include = \"d{}.toml\"\n", i + 1),
            );
        }
        w(&format!("d{}.toml", MAX_INCLUDE_DEPTH + 1), "[run]\n");
        let e = load(&dir.path().join("d0.toml"), &[])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("deeper than 8"), "{e}");
        assert!(load(&dir.path().join("d1.toml"), &[]).is_ok());
    }

    #[test]
    fn nearest_method() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(nearest("simclar", ["simclr", "byol"]), Some("simclr"));
        assert_eq!(nearest("zzzzzzzzzzzz", ["simclr", "byol"]), None);
    }
}
