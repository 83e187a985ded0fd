//! Which upstream tool versions Fjord tests against, and where `cargo xtask tools` puts them.
//!
//! This is the single place the versions are pinned: `cargo xtask tools` builds exactly these, and
//! the control plane and the test fixture look for them here. Nothing here builds anything, so a
//! test can tell "tools missing" apart from "control plane broken" and say what to run.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The upstream Kubernetes release (`k8s.io/kubernetes` module). Newest 1.36 patch that both
/// k8s-openapi (feature `v1_36`) supports and the Go checksum database verifies here: v1.36.5 is
/// on the module proxy but its go.mod has no sum.golang.org entry yet, so `go` refuses it.
pub const KUBERNETES_VERSION: &str = "v1.36.4";

/// etcd server module version: the one `k8s.io/kubernetes` itself requires at
/// [`KUBERNETES_VERSION`], so the wrapper module's dependency graph stays upstream's.
pub const ETCD_VERSION: &str = "v3.6.8";

/// Helm v4 (`helm.sh/helm/v4`), installed with `go install`.
pub const HELM_VERSION: &str = "v4.3.1";

/// The multi-call binary holding every Kubernetes component, etcd and kubectl.
pub const MULTICALL_BINARY: &str = "fjord-k8s";

/// Names under which the multi-call binary is linked into the tools' `bin/` directory.
pub const MULTICALL_COMPONENTS: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
];

/// Written last by `cargo xtask tools`: its presence means every binary was built completely.
pub const COMPLETE_MARKER: &str = ".complete";

/// Fjord's cache root: `$FJORD_CACHE_DIR`, else `$XDG_CACHE_HOME/fjord`, else `~/.cache/fjord`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("FJORD_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("fjord");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache").join("fjord")
}

/// The provisioned tool set for [`KUBERNETES_VERSION`].
#[derive(Debug, Clone)]
pub struct Tools {
    /// `~/.cache/fjord/tools/<version>/`
    pub dir: PathBuf,
}

impl Tools {
    /// Where the tools live (or will live once built); does not check that they exist.
    pub fn location() -> Tools {
        Tools {
            dir: cache_root().join("tools").join(KUBERNETES_VERSION),
        }
    }

    /// The tools, or an error naming what is missing and the command that provisions it.
    pub fn require() -> Result<Tools> {
        let tools = Tools::location();
        let missing = tools.missing();
        if !missing.is_empty() {
            let what = if tools.bin_dir().exists() {
                format!("missing: {}", missing.join(", "))
            } else {
                "nothing built yet".to_string()
            };
            bail!(
                "Kubernetes {KUBERNETES_VERSION} tools are not provisioned in {} ({what}): run `cargo xtask tools`",
                tools.bin_dir().display()
            );
        }
        Ok(tools)
    }

    /// Names of the binaries (or the completion marker) not present; empty when all are there.
    pub fn missing(&self) -> Vec<String> {
        let mut missing: Vec<String> = MULTICALL_COMPONENTS
            .iter()
            .chain([&MULTICALL_BINARY, &"helm"])
            .filter(|name| !is_executable(&self.binary(name)))
            .map(|name| name.to_string())
            .collect();
        if !self.bin_dir().join(COMPLETE_MARKER).is_file() {
            missing.push(format!(
                "{COMPLETE_MARKER} (an earlier build did not finish)"
            ));
        }
        missing
    }

    pub fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    pub fn binary(&self, name: &str) -> PathBuf {
        self.bin_dir().join(name)
    }

    pub fn kubectl(&self) -> PathBuf {
        self.binary("kubectl")
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    // metadata() follows the component symlinks to the multi-call binary.
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
