//! Paths that a user's file names (a captions line, a labels CSV) resolved
//! inside the folder they are relative to, never outside it.
use std::path::{Component, Path, PathBuf};

/// `file` joined to `root` with `.` dropped and `..` taken back lexically;
/// `None` when `file` is absolute, empty, or climbs out of `root`. Symbolic
/// links are not followed: the point is what the file names.
pub fn join_inside(root: &Path, file: &str) -> Option<PathBuf> {
    let mut parts = Vec::new();
    for c in Path::new(file).components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    if parts.is_empty() {
        return None;
    }
    let mut out = root.to_path_buf();
    out.extend(parts);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_inside_the_root_resolve_and_the_others_do_not() {
        let r = Path::new("/data/imgs");
        assert_eq!(join_inside(r, "a/b.png"), Some(r.join("a/b.png")));
        assert_eq!(join_inside(r, "./a/../b.png"), Some(r.join("b.png")));
        for bad in ["../x.png", "a/../../x.png", "/etc/passwd", "", "."] {
            assert_eq!(join_inside(r, bad), None, "{bad}");
        }
    }
}
