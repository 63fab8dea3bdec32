//! Python venvs: the bootstrap Python, creating a venv, pip-installing into
//! one. Used by torch_env.rs (the libtorch venv), c10d_env.rs (CUDA headers
//! for NCCL) and bench.rs (the bench venv); depends on no other xtask module
//! but the command runner.
use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;

/// The Python that creates venvs and downloads from PyPI:
/// `$SELFSUP_PYTHON_BOOTSTRAP`, else `python3` on `PATH`.
pub fn system_python() -> String {
    std::env::var("SELFSUP_PYTHON_BOOTSTRAP").unwrap_or_else(|_| "python3".into())
}

/// Creates a venv at `venv` (with [`system_python`]) and pip-installs
/// `install_args` into it.
pub fn create_venv(venv: &Path, install_args: &[String]) -> Result<()> {
    crate::run(Command::new(system_python()).args(["-m", "venv"]).arg(venv)).context(
        "creating a venv needs python3 with the venv module (Debian: apt-get install python3-venv)",
    )?;
    pip_install(venv, install_args)
}

/// pip-installs `install_args` into the venv `venv`.
pub fn pip_install(venv: &Path, install_args: &[String]) -> Result<()> {
    crate::run(
        Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(install_args),
    )
}
