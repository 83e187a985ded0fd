//! System packages the build needs (Debian): installed once, idempotently.

use std::process::Command;

use anyhow::bail;

/// cmake, libcurl and libssl headers are what the vendored librdkafka build (rdkafka crate) needs.
/// The rest is for the node tools (`cargo xtask tools`) and the node that runs pods with them:
/// gcc, a static libc and libseccomp's headers to build runc (cgo) and `pause` (`gcc -static`);
/// iptables and conntrack for kube-proxy and the CNI portmap plugin; iproute2 (`ip`) for the
/// CNI bridge; util-linux for `nsenter` and `unshare`.
const DEBIAN_PACKAGES: &[&str] = &[
    "cmake",
    "libcurl4-openssl-dev",
    "libssl-dev",
    "pkg-config",
    "curl",
    "gcc",
    "libc6-dev",
    "libseccomp-dev",
    "iptables",
    "conntrack",
    "iproute2",
    "util-linux",
    // The compatibility suite's TLS tests make their certificates with the openssl CLI.
    "openssl",
];

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

pub fn ensure_system_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("==> installing Debian packages: {}", missing.join(" "));
    let ok = Command::new("apt-get")
        .arg("update")
        .arg("-qq")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        bail!(
            "apt-get update failed; install these packages yourself: {}",
            missing.join(" ")
        );
    }
    let ok = Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq"])
        .args(&missing)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        bail!(
            "apt-get install failed; install these packages yourself: {}",
            missing.join(" ")
        );
    }
    Ok(())
}
