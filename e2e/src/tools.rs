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

// Node tools: what a kubelet needs to run pods on this machine (container runtime, OCI runtime,
// CNI plugins, cluster DNS, the sandbox `pause` process). `cargo xtask tools` builds them from
// these pinned Go modules after the Kubernetes components; see `xtask/src/tools/node.rs`.

/// containerd (`github.com/containerd/containerd/v2`): the CRI runtime the kubelet talks to.
/// Provides `containerd`, `containerd-shim-runc-v2` and `ctr`. Built with `CGO_ENABLED=0`.
pub const CONTAINERD_VERSION: &str = "v2.3.7";

/// runc (`github.com/opencontainers/runc`): the OCI runtime containerd's shim starts containers
/// with. Needs cgo and libseccomp (Debian `libseccomp-dev`); built with the `seccomp` tag.
pub const RUNC_VERSION: &str = "v1.5.3";

/// crictl (`github.com/kubernetes-sigs/cri-tools`, module path `sigs.k8s.io/cri-tools`): a CRI
/// client, for looking at pods and containers on the node by hand and in test diagnostics.
pub const CRICTL_VERSION: &str = "v1.37.0";

/// CNI plugins (`github.com/containernetworking/plugins`): pod networking; only
/// [`CNI_PLUGINS`] are built, into [`Tools::cni_bin_dir`].
pub const CNI_PLUGINS_VERSION: &str = "v1.9.1";

/// CoreDNS (`github.com/coredns/coredns`): cluster DNS, run as a plain process.
pub const COREDNS_VERSION: &str = "v1.14.7";

/// The node binaries `cargo xtask tools` puts into [`Tools::bin_dir`]. `pause` is compiled with
/// `gcc -static` from `build/pause/linux/pause.c` of `k8s.io/kubernetes@`[`KUBERNETES_VERSION`].
pub const NODE_BINARIES: &[&str] = &[
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "runc",
    "crictl",
    "coredns",
    "pause",
];

/// The CNI plugins built into [`Tools::cni_bin_dir`].
pub const CNI_PLUGINS: &[&str] = &["bridge", "host-local", "loopback", "portmap"];

/// Written last by the node phase of `cargo xtask tools`, in [`Tools::bin_dir`]. Its first line is
/// [`node_versions`]; the node tools are current when that line matches the pins.
pub const NODE_COMPLETE_MARKER: &str = ".node-complete";

/// The node tools' pins as one line: the first line of [`NODE_COMPLETE_MARKER`].
pub fn node_versions() -> String {
    format!(
        "containerd={CONTAINERD_VERSION} runc={RUNC_VERSION} crictl={CRICTL_VERSION} \
         cni-plugins={CNI_PLUGINS_VERSION} coredns={COREDNS_VERSION} pause=kubernetes-{KUBERNETES_VERSION}"
    )
}

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

    /// The node tools, or an error naming what is missing and the command that provisions it.
    /// Does not require the Kubernetes components; call [`Tools::require`] for those.
    pub fn require_node() -> Result<Tools> {
        let tools = Tools::location();
        let missing = tools.node_missing();
        if !missing.is_empty() {
            bail!(
                "node tools (containerd {CONTAINERD_VERSION}, runc {RUNC_VERSION}, CNI plugins \
                 {CNI_PLUGINS_VERSION}, ...) are not provisioned in {} (missing: {}): run `cargo xtask tools`",
                tools.dir.display(),
                missing.join(", ")
            );
        }
        Ok(tools)
    }

    /// Like [`Tools::missing`], for the node tools: binaries not present, and the stamp when it is
    /// absent or records other versions than the pins. Empty when the node tools are current.
    pub fn node_missing(&self) -> Vec<String> {
        let mut missing: Vec<String> = NODE_BINARIES
            .iter()
            .map(|name| self.binary(name))
            .chain(CNI_PLUGINS.iter().map(|name| self.cni_bin_dir().join(name)))
            .filter(|path| !is_executable(path))
            .map(|path| {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                if path.starts_with(self.cni_bin_dir()) {
                    format!("cni/bin/{name}")
                } else {
                    name.into_owned()
                }
            })
            .collect();
        match std::fs::read_to_string(self.bin_dir().join(NODE_COMPLETE_MARKER)) {
            Err(_) => missing.push(format!(
                "{NODE_COMPLETE_MARKER} (node tools not built, or an earlier build did not finish)"
            )),
            Ok(stamp) if stamp.lines().next() != Some(node_versions().as_str()) => missing.push(
                format!("{NODE_COMPLETE_MARKER} (built from other versions than the pins)"),
            ),
            Ok(_) => {}
        }
        missing
    }

    /// Where the CNI plugins are: `<dir>/cni/bin/` (the kubelet's and containerd's `bin_dir`).
    pub fn cni_bin_dir(&self) -> PathBuf {
        self.dir.join("cni").join("bin")
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

/// Debian's promtool, as `scripts/prometheus-dist.sh` provisions it: in `FJORD_PROMETHEUS_BIN`
/// (which `cargo xtask test` sets) or the cache. Panics with what to run when it is missing.
pub fn promtool() -> PathBuf {
    let dir = std::env::var_os("FJORD_PROMETHEUS_BIN").map_or_else(
        || cache_root().join("prometheus/current/bin"),
        PathBuf::from,
    );
    let promtool = dir.join("promtool");
    assert!(
        promtool.is_file(),
        "{} is missing: run `bash scripts/prometheus-dist.sh` (cargo xtask test does)",
        promtool.display()
    );
    promtool
}

/// The Prometheus Operator's PodMonitor and PrometheusRule CRDs that `scripts/prometheus-dist.sh`
/// stores beside promtool.
pub fn monitoring_crds() -> PathBuf {
    let bin = promtool();
    let dir = bin
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("crds"))
        .unwrap_or_default();
    assert!(
        dir.join("monitoring.coreos.com_podmonitors.yaml").is_file(),
        "{} has no monitoring CRDs: run `bash scripts/prometheus-dist.sh`",
        dir.display()
    );
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_missing_names_binaries_plugins_and_a_stale_stamp() {
        let dir = std::env::temp_dir().join(format!("fjord-tools-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tools = Tools { dir: dir.clone() };
        let missing = tools.node_missing();
        assert_eq!(missing.len(), NODE_BINARIES.len() + CNI_PLUGINS.len() + 1);
        assert!(missing.contains(&"containerd".to_string()));
        assert!(missing.contains(&"cni/bin/bridge".to_string()));

        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(tools.cni_bin_dir()).unwrap();
        std::fs::create_dir_all(tools.bin_dir()).unwrap();
        for path in NODE_BINARIES.iter().map(|name| tools.binary(name)).chain(
            CNI_PLUGINS
                .iter()
                .map(|name| tools.cni_bin_dir().join(name)),
        ) {
            std::fs::write(&path, "").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let stamp = tools.bin_dir().join(NODE_COMPLETE_MARKER);
        std::fs::write(&stamp, "containerd=v0.0.1 runc=...\n").unwrap();
        let missing = tools.node_missing();
        assert_eq!(missing.len(), 1);
        assert!(missing[0].contains("other versions"), "{missing:?}");
        std::fs::write(&stamp, node_versions() + "\ncontainerd ...\n").unwrap();
        assert!(tools.node_missing().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn node_versions_names_every_pin() {
        let versions = node_versions();
        for pin in [
            CONTAINERD_VERSION,
            RUNC_VERSION,
            CRICTL_VERSION,
            CNI_PLUGINS_VERSION,
            COREDNS_VERSION,
            KUBERNETES_VERSION,
        ] {
            assert!(versions.contains(pin), "{versions}");
        }
        assert!(!versions.contains('\n'));
    }
}
