//! libtorch 2.11.0 for tch 0.24: the user's `LIBTORCH` if set, otherwise a
//! cached venv with PyPI's `torch==2.11.0` (its CUDA build also runs on CPUs).
use crate::paths::cache_dir;
use crate::venv::{create_venv, pip_install};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const TORCH_VERSION: &str = "2.11.0";

/// How binaries find libtorch (and selfsup-c10d gloo's headers), at build
/// and at run time.
pub struct TorchEnv {
    libtorch: Libtorch,
    /// gloo's headers unpacked by xtask; `None`: the system's /usr/include.
    gloo_include: Option<PathBuf>,
}

/// Where libtorch comes from.
enum Libtorch {
    /// A libtorch the user unpacked and pointed `LIBTORCH` at.
    User { libtorch: PathBuf },
    /// The venv selfsup manages.
    Venv { venv: PathBuf, torch_dir: PathBuf },
}

impl Libtorch {
    fn lib_dir(&self) -> PathBuf {
        match self {
            Self::User { libtorch } => libtorch.join("lib"),
            Self::Venv { torch_dir, .. } => torch_dir.join("lib"),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::User { libtorch } => format!("{} (from LIBTORCH)", libtorch.display()),
            Self::Venv { torch_dir, .. } => {
                format!("{} (torch=={TORCH_VERSION} venv)", torch_dir.display())
            }
        }
    }

    fn shell_exports(&self) -> String {
        let lib = self.lib_dir();
        match self {
            Self::User { libtorch } => format!(
                "export LIBTORCH={} LD_LIBRARY_PATH={}:$LD_LIBRARY_PATH",
                libtorch.display(),
                lib.display()
            ),
            Self::Venv { venv, .. } => format!(
                "export LIBTORCH_USE_PYTORCH=1 PATH={}:$PATH LD_LIBRARY_PATH={}:$LD_LIBRARY_PATH",
                venv.join("bin").display(),
                lib.display()
            ),
        }
    }

    fn apply(&self, cmd: &mut Command) {
        let prepend = |var: &str, dir: &Path| {
            let mut paths = vec![dir.to_path_buf()];
            if let Some(old) = std::env::var_os(var) {
                paths.extend(std::env::split_paths(&old));
            }
            std::env::join_paths(paths).unwrap_or_default()
        };
        cmd.env(
            "LD_LIBRARY_PATH",
            prepend("LD_LIBRARY_PATH", &self.lib_dir()),
        );
        match self {
            Self::User { libtorch } => {
                cmd.env("LIBTORCH", libtorch);
            }
            Self::Venv { venv, .. } => {
                cmd.env("LIBTORCH_USE_PYTORCH", "1");
                cmd.env_remove("LIBTORCH");
                cmd.env("PATH", prepend("PATH", &venv.join("bin")));
            }
        }
    }
}

impl TorchEnv {
    pub fn describe(&self) -> String {
        self.libtorch.describe()
    }

    /// The same settings as shell exports, for building by hand.
    pub fn shell_exports(&self) -> String {
        let mut s = self.libtorch.shell_exports();
        if let Some(dir) = &self.gloo_include {
            s.push_str(&format!(" SELFSUP_GLOO_INCLUDE={}", dir.display()));
        }
        s
    }

    /// Sets the build and run-time environment on `cmd`.
    pub fn apply(&self, cmd: &mut Command) {
        self.libtorch.apply(cmd);
        if let Some(dir) = &self.gloo_include {
            cmd.env("SELFSUP_GLOO_INCLUDE", dir);
        }
    }
}

impl TorchEnv {
    /// The libtorch venv's python, when libtorch is the venv xtask manages
    /// (`None` for a user's `LIBTORCH`).
    pub fn venv_python(&self) -> Option<PathBuf> {
        match &self.libtorch {
            Libtorch::Venv { venv, .. } => Some(venv.join("bin/python")),
            Libtorch::User { .. } => None,
        }
    }
}

/// The Python packages the export checks of the tests import (torchvision,
/// timm, transformers, tensorboard, safetensors), as (pip name, module,
/// install without dependencies). torchvision pins torch exactly, so it goes
/// in with `--no-deps`; the others are installed beside `torch==2.11.0`, which
/// pip then keeps. Their versions are the pins of `benchmarks/requirements.txt`.
pub const TEST_PACKAGES: [(&str, &str, bool); 5] = [
    ("torchvision", "torchvision", true),
    ("timm", "timm", false),
    ("transformers", "transformers", false),
    ("tensorboard", "tensorboard", false),
    ("safetensors", "safetensors", false),
];

/// `name==version` pins of a requirements file (comments and blank lines
/// skipped).
pub fn read_pins(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the Python pins {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.split('#').next().unwrap_or("").trim();
            let (name, version) = l.split_once("==")?;
            Some((name.trim().to_string(), version.trim().to_string()))
        })
        .collect())
}

/// Whether `python` imports every [`TEST_PACKAGES`] module at its pinned version.
fn has_pinned(python: &Path, pins: &[(String, String)]) -> bool {
    let checks: Vec<String> = pins
        .iter()
        .map(|(name, version)| {
            format!(
                "assert importlib.metadata.version({name:?}).split('+')[0] == {version:?}, {name:?}"
            )
        })
        .collect();
    let modules: Vec<&str> = TEST_PACKAGES.iter().map(|p| p.1).collect();
    let code = format!(
        "import importlib.metadata, {}\n{}",
        modules.join(", "),
        checks.join("\n")
    );
    Command::new(python)
        .args(["-c", &code])
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The python of the libtorch venv with [`TEST_PACKAGES`] at the pins of
/// `benchmarks/requirements.txt`, installed once (idempotent: nothing is
/// installed when the pinned versions import already). `None` when libtorch
/// is a user's `LIBTORCH` (no venv to install into).
pub fn ensure_test_python(env: &TorchEnv) -> Result<Option<PathBuf>> {
    let Some(python) = env.venv_python() else {
        return Ok(None);
    };
    let requirements = crate::paths::workspace_root().join("benchmarks/requirements.txt");
    let all = read_pins(&requirements)?;
    let mut pins = Vec::new();
    for (name, _, _) in TEST_PACKAGES {
        let Some(pin) = all.iter().find(|(n, _)| n == name) else {
            bail!(
                "{}: no `{name}==VERSION` line; the tests' Python packages are pinned there",
                requirements.display()
            );
        };
        pins.push(pin.clone());
    }
    if has_pinned(&python, &pins) {
        return Ok(Some(python));
    }
    let venv = python
        .parent()
        .and_then(Path::parent)
        .context("the libtorch venv's python is not in <venv>/bin")?
        .to_path_buf();
    eprintln!(
        "xtask: installing {} into {} (pins of {}; one time)",
        pins.iter()
            .map(|(n, v)| format!("{n}=={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        venv.display(),
        requirements.display()
    );
    let spec = |name: &str| -> String {
        pins.iter()
            .find(|(n, _)| n == name)
            .map(|(n, v)| format!("{n}=={v}"))
            .unwrap_or_else(|| name.to_string())
    };
    let no_deps: Vec<String> = TEST_PACKAGES
        .iter()
        .filter(|p| p.2)
        .map(|p| spec(p.0))
        .collect();
    let mut args = vec!["--no-deps".to_string()];
    args.extend(no_deps);
    pip_install(&venv, &args)?;
    let mut with_deps = vec![format!("torch=={TORCH_VERSION}")];
    with_deps.extend(TEST_PACKAGES.iter().filter(|p| !p.2).map(|p| spec(p.0)));
    pip_install(&venv, &with_deps)?;
    if !has_pinned(&python, &pins) {
        bail!(
            "{} still cannot import the pinned {} after pip install",
            python.display(),
            pins.iter()
                .map(|(n, v)| format!("{n}=={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(Some(python))
}

/// Finds or installs libtorch and what selfsup-c10d builds against.
/// Idempotent and quick when already installed.
pub fn ensure() -> Result<TorchEnv> {
    let libtorch = ensure_libtorch()?;
    if let Libtorch::Venv { venv, .. } = &libtorch {
        crate::c10d_env::ensure_cuda_headers(venv)?;
    }
    Ok(TorchEnv {
        libtorch,
        gloo_include: crate::c10d_env::ensure_gloo_headers()?,
    })
}

fn ensure_libtorch() -> Result<Libtorch> {
    if let Some(dir) = std::env::var_os("LIBTORCH") {
        let libtorch = PathBuf::from(dir);
        if !libtorch.join("lib").is_dir() || !libtorch.join("include").is_dir() {
            bail!(
                "LIBTORCH={} has no lib/ and include/: point it at an unpacked libtorch {TORCH_VERSION}, or unset it to let xtask install one",
                libtorch.display()
            );
        }
        return Ok(Libtorch::User { libtorch });
    }
    let venv = cache_dir().join(format!("libtorch-{TORCH_VERSION}"));
    let python = venv.join("bin/python");
    if let Some(torch_dir) = torch_dir(&python) {
        return Ok(Libtorch::Venv { venv, torch_dir });
    }
    eprintln!(
        "xtask: installing torch=={TORCH_VERSION} into {} (one time, ~5 GB, a few minutes)",
        venv.display()
    );
    std::fs::create_dir_all(cache_dir())
        .with_context(|| format!("creating {}", cache_dir().display()))?;
    let mut packages = vec![format!("torch=={TORCH_VERSION}")];
    packages.extend(crate::c10d_env::CUDA_HEADER_PACKAGES.map(String::from));
    create_venv(&venv, &packages)?;
    let torch_dir = torch_dir(&python).context("torch was installed but cannot be imported")?;
    Ok(Libtorch::Venv { venv, torch_dir })
}

/// `torch/` inside the venv when `import torch` gives the right version.
fn torch_dir(python: &Path) -> Option<PathBuf> {
    if !python.exists() {
        return None;
    }
    let out = Command::new(python)
        .args([
            "-c",
            "import torch, os; print(torch.__version__); print(os.path.dirname(torch.__file__))",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let version = lines.next()?;
    let dir = lines.next()?;
    (version.split('+').next() == Some(TORCH_VERSION)).then(|| PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_test_package_is_pinned_in_the_requirements() {
        let path = crate::paths::workspace_root().join("benchmarks/requirements.txt");
        let pins = read_pins(&path).unwrap();
        for (name, _, _) in TEST_PACKAGES {
            let (_, version) = pins
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("{name} is not pinned in {}", path.display()));
            assert!(
                version.chars().next().is_some_and(|c| c.is_ascii_digit()),
                "{name}=={version}"
            );
        }
        // torch itself is pinned to the libtorch tch builds against.
        assert!(pins.iter().any(|(n, v)| n == "torch" && v == TORCH_VERSION));
    }

    #[test]
    fn pins_skip_comments_and_other_specifiers() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.txt");
        std::fs::write(&file, "# x==1\nfoo==1.2  # why\nbar>=2\n\n baz == 3 \n").unwrap();
        let pins = read_pins(&file).unwrap();
        assert_eq!(
            pins,
            vec![("foo".into(), "1.2".into()), ("baz".into(), "3".into())]
        );
        assert!(read_pins(&dir.path().join("missing.txt")).is_err());
    }
}
