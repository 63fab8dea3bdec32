//! Where things live: the workspace, the target folder, the cache.
use std::path::PathBuf;

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Cargo's target folder.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// `$SELFSUP_CACHE`, else `$XDG_CACHE_HOME/selfsup`, else `~/.cache/selfsup`:
/// outside the checkout, so a fresh clone reuses libtorch and datasets.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SELFSUP_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("selfsup");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/selfsup")
}
