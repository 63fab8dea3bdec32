//! The dependency rule of ARCHITECTURE.md ("`selfsup-core` knows no
//! modality"), read from the manifests: `selfsup-core` depends on no selfsup
//! crate; each modality crate on `selfsup-core` and no other selfsup crate,
//! except `selfsup-multimodal` (core, vision, text, audio); `selfsup-c10d` on core
//! alone; the examples for downstream projects on one modality crate each.
//! Only `[dependencies]` (and target-specific ones) count: tests and
//! benchmarks may use anything.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests sits in the workspace")
        .to_path_buf()
}

/// The selfsup crates `manifest` (a Cargo.toml, relative to the workspace)
/// depends on, by package name (a renamed dependency counts by its
/// `package`).
fn selfsup_dependencies(manifest: &str) -> BTreeSet<String> {
    let path = workspace().join(manifest);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut tables: Vec<&toml::Table> = Vec::new();
    if let Some(t) = doc.get("dependencies").and_then(|d| d.as_table()) {
        tables.push(t);
    }
    if let Some(targets) = doc.get("target").and_then(|t| t.as_table()) {
        for target in targets.values() {
            if let Some(t) = target.get("dependencies").and_then(|d| d.as_table()) {
                tables.push(t);
            }
        }
    }
    tables
        .into_iter()
        .flat_map(|t| t.iter())
        .map(|(key, spec)| {
            spec.get("package")
                .and_then(|p| p.as_str())
                .unwrap_or(key)
                .to_string()
        })
        .filter(|name| name.starts_with("selfsup-"))
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Every crate under crates/ and what it may depend on among selfsup
/// crates (`None`: the binaries, which assemble everything).
const RULES: [(&str, Option<&[&str]>); 10] = [
    ("selfsup-core", Some(&[])),
    ("selfsup-vision", Some(&["selfsup-core"])),
    ("selfsup-text", Some(&["selfsup-core"])),
    ("selfsup-graph", Some(&["selfsup-core"])),
    ("selfsup-audio", Some(&["selfsup-core"])),
    ("selfsup-video", Some(&["selfsup-core"])),
    (
        "selfsup-multimodal",
        Some(&[
            "selfsup-core",
            "selfsup-vision",
            "selfsup-text",
            "selfsup-audio",
        ]),
    ),
    ("selfsup-c10d", Some(&["selfsup-core"])),
    ("selfsup-cli", None),
    ("selfsup-fuzz", None),
];

#[test]
fn core_knows_no_modality_and_modalities_know_only_core() {
    let mut broken = Vec::new();
    for (name, allowed) in RULES {
        let Some(allowed) = allowed else { continue };
        let got = selfsup_dependencies(&format!("crates/{name}/Cargo.toml"));
        if got != set(allowed) {
            broken.push(format!(
                "{name} depends on {got:?}, the rule says {allowed:?}"
            ));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn every_crate_has_a_rule() {
    let dir = workspace().join("crates");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut ruled: Vec<String> = RULES.iter().map(|(n, _)| n.to_string()).collect();
    ruled.sort();
    assert_eq!(
        found, ruled,
        "a crate was added or removed under crates/: give it its rule in RULES (and in \
         ARCHITECTURE.md's invariants)"
    );
}

#[test]
fn each_example_needs_one_modality_crate_alone() {
    for (manifest, only) in [
        ("examples/finetune-vision/Cargo.toml", "selfsup-vision"),
        ("examples/embed-text/Cargo.toml", "selfsup-text"),
    ] {
        assert!(
            Path::new(&workspace().join(manifest)).is_file(),
            "{manifest} is missing"
        );
        assert_eq!(selfsup_dependencies(manifest), set(&[only]), "{manifest}");
    }
}

#[test]
fn the_reader_sees_renamed_and_target_specific_dependencies() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    // selfsup_dependencies reads relative to the workspace: go through an
    // absolute path joined onto it (join keeps an absolute path as it is).
    let manifest = dir.path().join("Cargo.toml");
    std::fs::write(
        &manifest,
        "[package]\nname = \"x\"\n\n[dependencies]\ncore = { package = \"selfsup-core\", path = \"a\" }\n\
         serde = \"1\"\n\n[target.'cfg(unix)'.dependencies]\nselfsup-text.workspace = true\n\n\
         [dev-dependencies]\nselfsup-vision.workspace = true\n",
    )
    .expect("writing the manifest");
    let got = selfsup_dependencies(manifest.to_str().expect("a UTF-8 path"));
    assert_eq!(got, set(&["selfsup-core", "selfsup-text"]));
}
