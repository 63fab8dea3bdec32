//! Tests of `fetch`.
use super::*;
use std::io::Write;

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// The folder of the tree-hash example. Paths sort bytewise (as with
/// `LC_ALL=C sort`): `B` (0x42) < `a` (0x61) < `n` < `s`.
fn example(root: &Path) {
    write(root, "a.txt", b"hello\n");
    write(root, "sub/b.txt", b"x");
    write(root, "B.txt", b"");
    write(root, "notes.json", b"{}");
}

#[test]
fn tree_hash_matches_the_sha256sum_pipeline() {
    let t = tempfile::tempdir().unwrap();
    example(t.path());
    let listing = tree_listing(t.path(), None).unwrap();
    let paths: Vec<&str> = listing.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["B.txt", "a.txt", "notes.json", "sub/b.txt"]);
    assert_eq!(
        listing[1].1,
        "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    );
    // printf '' > B.txt; printf 'hello\n' > a.txt; printf '{}' > notes.json;
    // mkdir sub; printf x > sub/b.txt
    // find . -type f | sed 's|^\./||' | LC_ALL=C sort | xargs sha256sum | sha256sum
    assert_eq!(
        tree_hash(&listing),
        "ea720ddce6ca5beeeb1b4423386b872b2342f3a4342c03e55fe3f5f7f914a455"
    );
}

#[test]
fn include_filters_relative_paths() {
    let t = tempfile::tempdir().unwrap();
    example(t.path());
    let paths = |re: &str| -> Vec<String> {
        let re = Regex::new(re).unwrap();
        tree_listing(t.path(), Some(&re))
            .unwrap()
            .into_iter()
            .map(|(p, _)| p)
            .collect()
    };
    assert_eq!(paths(r"\.txt$"), ["B.txt", "a.txt", "sub/b.txt"]);
    assert_eq!(paths(r"^[^/]+\.txt$"), ["B.txt", "a.txt"]);
    assert_eq!(paths(r"^sub/"), ["sub/b.txt"]);
    assert!(paths(r"^nothing$").is_empty());
    assert!(tree_listing(&t.path().join("absent"), None)
        .unwrap()
        .is_empty());
}

#[test]
fn tree_hash_depends_on_contents_and_names() {
    let t = tempfile::tempdir().unwrap();
    example(t.path());
    let before = tree_hash(&tree_listing(t.path(), None).unwrap());
    write(t.path(), "sub/b.txt", b"y");
    let changed = tree_hash(&tree_listing(t.path(), None).unwrap());
    assert_ne!(before, changed);
    write(t.path(), "sub/b.txt", b"x");
    assert_eq!(before, tree_hash(&tree_listing(t.path(), None).unwrap()));
    std::fs::rename(t.path().join("a.txt"), t.path().join("c.txt")).unwrap();
    assert_ne!(before, tree_hash(&tree_listing(t.path(), None).unwrap()));
}

fn manifest_for(unpacked: &Path) -> Loaded {
    let data = unpacked.join("package/data");
    let listing = |re: &str| tree_listing(&data.join("group"), Some(&Regex::new(re).unwrap()));
    let txt = listing(r"\.txt$").unwrap();
    let text = format!(
        r#"
name = "toy"
license = "CC0"
format = "text"
[source]
registry = "npm"
package = "toy"
version = "1.0.0"
sha256 = "{zero}"
[[files]]
inner = "package/top.txt"
sha256 = "{top}"
[[trees]]
inner = "package/data/group"
include = '\.txt$'
dest = "group"
files = {n}
sha256 = "{hash}"
"#,
        zero = "0".repeat(64),
        top = sha256_file(&unpacked.join("package/top.txt")).unwrap(),
        n = txt.len(),
        hash = tree_hash(&txt),
    );
    parse_manifest(&text, Path::new("datasets/toy.toml")).unwrap()
}

fn toy_package(root: &Path) {
    write(root, "package/top.txt", b"top");
    write(root, "package/data/group/1.txt", b"one");
    write(root, "package/data/group/deep/2.txt", b"two");
    write(root, "package/data/group/1.json", b"{}");
}

#[test]
fn staged_trees_keep_their_structure_and_verify() {
    let up = tempfile::tempdir().unwrap();
    toy_package(up.path());
    let l = manifest_for(up.path());
    let staging = tempfile::tempdir().unwrap();
    stage(&l, Path::new("toy-1.0.0.tgz"), up.path(), staging.path()).unwrap();
    let s = staging.path();
    assert!(s.join("top.txt").is_file());
    assert!(s.join("group/1.txt").is_file());
    assert!(s.join("group/deep/2.txt").is_file());
    assert!(!s.join("group/1.json").exists());
    assert_eq!(check(&l, s).unwrap(), None);

    // A changed file, a missing file and an extra matching file are noticed.
    write(s, "group/deep/2.txt", b"TWO");
    let why = check(&l, s).unwrap().unwrap();
    assert!(why.contains("package/data/group"), "{why}");
    write(s, "group/deep/2.txt", b"two");
    write(s, "group/extra.txt", b"");
    assert!(check(&l, s).unwrap().unwrap().contains("holds 3 files"));
    std::fs::remove_file(s.join("group/extra.txt")).unwrap();
    // Any other file is noticed too: the readers take whole folders.
    write(s, "group/notes.md", b"");
    let why = check(&l, s).unwrap().unwrap();
    assert!(why.contains("the manifest installs"), "{why}");
    std::fs::remove_file(s.join("group/notes.md")).unwrap();
    assert_eq!(check(&l, s).unwrap(), None);
    std::fs::remove_file(s.join("top.txt")).unwrap();
    assert!(check(&l, s).unwrap().unwrap().contains("missing"));
}

#[test]
fn a_changed_package_is_refused_naming_manifest_and_tree() {
    let up = tempfile::tempdir().unwrap();
    toy_package(up.path());
    let l = manifest_for(up.path());
    write(up.path(), "package/data/group/1.txt", b"ONE");
    let staging = tempfile::tempdir().unwrap();
    let err = stage(&l, Path::new("toy-1.0.0.tgz"), up.path(), staging.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("datasets/toy.toml"), "{err}");
    assert!(
        err.contains("tree hash mismatch for package/data/group"),
        "{err}"
    );
}

#[test]
fn tar_gz_unpacks_only_wanted_regular_files() {
    let t = tempfile::tempdir().unwrap();
    let tgz = t.path().join("toy-1.0.0.tgz");
    {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&tgz).unwrap(),
            flate2::Compression::fast(),
        );
        let mut b = tar::Builder::new(gz);
        for (path, data) in [
            ("package/top.txt", &b"top"[..]),
            ("package/data/group/1.txt", b"one"),
            ("package/data/groupie.txt", b"no"),
            ("package/other/x.txt", b"no"),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap().flush().unwrap();
    }
    let out = t.path().join("out");
    let wanted = vec!["package/top.txt".to_string(), "package/data/group/".into()];
    unpack(&tgz, &wanted, &out).unwrap();
    let got: Vec<String> = tree_listing(&out, None)
        .unwrap()
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(got, ["package/data/group/1.txt", "package/top.txt"]);
}

#[test]
fn wheels_unpack_only_wanted_files() {
    let t = tempfile::tempdir().unwrap();
    let whl = t.path().join("toy-1.0-py3-none-any.whl");
    {
        let mut z = zip::ZipWriter::new(std::fs::File::create(&whl).unwrap());
        for (path, data) in [
            ("toy/data/a.csv", &b"1,2"[..]),
            ("toy/data/sub/b.csv", b"3"),
            ("toy/__init__.py", b""),
        ] {
            z.start_file(path, zip::write::FileOptions::default())
                .unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap();
    }
    let out = t.path().join("out");
    unpack(&whl, &["toy/data/".to_string()], &out).unwrap();
    let got: Vec<String> = tree_listing(&out, None)
        .unwrap()
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(got, ["toy/data/a.csv", "toy/data/sub/b.csv"]);
}

#[test]
fn bad_manifests_are_refused() {
    let base = r#"
name = "toy"
license = "CC0"
format = "text"
[source]
registry = "REG"
package = "toy"
version = "1"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
"#;
    let tree = r#"
[[trees]]
inner = "package/data"
include = 'INC'
dest = "DEST"
files = 1
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
"#;
    let parse = |reg: &str, inc: &str, dest: &str| {
        let text = base.replace("REG", reg) + &tree.replace("INC", inc).replace("DEST", dest);
        parse_manifest(&text, Path::new("datasets/toy.toml")).map(|_| ())
    };
    assert!(parse("npm", r"\.txt$", ".").is_ok());
    assert!(parse("pypi", r"\.txt$", "sub").is_ok());
    let err = |reg, inc, dest| parse(reg, inc, dest).unwrap_err().to_string();
    assert!(err("cran", r"\.txt$", ".").contains("not supported"));
    assert!(format!("{:#}", parse("npm", "(", ".").unwrap_err()).contains("include"));
    assert!(err("npm", r"\.txt$", "../up").contains("without '..'"));
    assert!(
        parse_manifest(&base.replace("REG", "npm"), Path::new("x.toml"))
            .err()
            .unwrap()
            .to_string()
            .contains("nothing to fetch")
    );
}

#[test]
fn every_manifest_in_datasets_parses() {
    let dir = workspace_root().join("datasets");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let Some(stem) = path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .strip_suffix(".toml")
        else {
            continue;
        };
        let l = load_manifest(stem).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(l.m.name, stem);
        n += 1;
    }
    assert!(n >= 1);
}
