//! Small helpers for running commands with a clear error when one fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// The workspace root (xtask lives one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// `~/.cache/fjord` (or `$FJORD_CACHE_DIR`), where every downloaded or built tool is cached.
pub fn cache_dir() -> PathBuf {
    fjord_e2e::tools::cache_root()
}

/// Runs a command in the repository root, streaming its output; fails with `what` on non-zero exit.
pub fn run(what: &str, cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("==> {what}");
    let status = cmd
        .current_dir(repo_root())
        .status()
        .with_context(|| format!("{what}: could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}
