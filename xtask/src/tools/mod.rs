//! `cargo xtask tools`: provisions the upstream Kubernetes tools into
//! `~/.cache/fjord/tools/<version>/` (see `fjord_e2e::tools` for the pins).
//!
//! - `fjord-k8s`: one multi-call binary with kube-apiserver, kube-controller-manager,
//!   kube-scheduler, kubelet, kube-proxy, kubectl and etcd, `go build`-ed from the
//!   `k8s.io/kubernetes` module through a generated wrapper module; `bin/<component>` symlinks
//!   select the component.
//! - `helm`: `go install helm.sh/helm/v4/cmd/helm@<pinned>`.
//! - the node tools (containerd, runc, crictl, CNI plugins, CoreDNS, pause): see [`node`]. They
//!   have their own stamp; `--node` provisions only them.
//!
//! Idempotent: a stamp records what was built from which inputs; when it matches, nothing runs
//! (not even `go`). Downloads happen in a separate, time-bounded step; the build itself runs with
//! `GOPROXY=off`, so it can never wait on the network.

mod go;
mod node;
mod wrapper;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fjord_e2e::tools::{
    Tools, COMPLETE_MARKER, ETCD_VERSION, HELM_VERSION, KUBERNETES_VERSION, MULTICALL_BINARY,
    MULTICALL_COMPONENTS,
};
use go::{Failure, Go, Limits};

/// A first small request to the module proxy: an unreachable or silent proxy fails here, fast.
const PROBE: Limits = Limits {
    total: Duration::from_secs(90),
    stall: Duration::from_secs(60),
};
/// Module downloads run with `-x`, which logs every request, so 5 quiet minutes mean a stall.
const DOWNLOAD: Limits = Limits {
    total: Duration::from_secs(30 * 60),
    stall: Duration::from_secs(5 * 60),
};
/// Builds run with `-v`, which logs every package; linking the big binary is the longest quiet part.
const BUILD: Limits = Limits {
    total: Duration::from_secs(90 * 60),
    stall: Duration::from_secs(15 * 60),
};
/// `go build` flags: two compile jobs, the machine has two cores.
const GOFLAGS: &str = "-mod=mod -buildvcs=false -p=2";

const USAGE: &str = "usage: cargo xtask tools [--node] [--force]   (--node: only the node tools; \
                     --force: rebuild even when the cache is current)";

pub fn run(args: &[String]) -> Result<()> {
    let (mut force, mut node_only) = (false, false);
    for arg in args {
        match arg.as_str() {
            "--force" => force = true,
            "--node" => node_only = true,
            _ => bail!("{USAGE}"),
        }
    }
    let tools = Tools::location();
    if !node_only {
        kubernetes_phase(&tools, force)?;
    }
    node::run(&tools, force)
}

/// The Kubernetes components and helm.
fn kubernetes_phase(tools: &Tools, force: bool) -> Result<()> {
    let started = Instant::now();
    let stamp = stamp();
    let stamp_path = tools.bin_dir().join(COMPLETE_MARKER);
    let current = std::fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp);
    if current && !force && tools.missing().is_empty() {
        println!(
            "tools: Kubernetes {KUBERNETES_VERSION}, etcd {ETCD_VERSION}, helm {HELM_VERSION} are ready in {} (cached)",
            tools.bin_dir().display()
        );
        return Ok(());
    }

    let go = Go::find()?;
    println!(
        "tools: provisioning Kubernetes {KUBERNETES_VERSION}, etcd {ETCD_VERSION}, helm {HELM_VERSION} into {} with {}",
        tools.dir.display(),
        go.version
    );
    let _ = std::fs::remove_file(&stamp_path);
    for dir in ["src", "bin", "logs"] {
        std::fs::create_dir_all(tools.dir.join(dir))?;
    }
    build_kubernetes(&go, tools)?;
    install_helm(&go, tools)?;
    std::fs::write(&stamp_path, stamp)?;
    println!(
        "tools: done in {:.0?}; binaries in {}",
        started.elapsed(),
        tools.bin_dir().display()
    );
    Ok(())
}

/// What the cached binaries were built from; any change rebuilds.
fn stamp() -> String {
    format!(
        "kubernetes={KUBERNETES_VERSION} etcd={ETCD_VERSION} helm={HELM_VERSION} main.go={:016x} go.mod.in={:016x}\n",
        fnv1a(wrapper::MAIN_GO.as_bytes()),
        fnv1a(include_bytes!("../../k8s/go.mod.in")),
    )
}

/// FNV-1a: a stable hash (std's hasher may change between Rust releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn build_kubernetes(go: &Go, tools: &Tools) -> Result<()> {
    let src = tools.dir.join("src");
    let logs = tools.dir.join("logs");

    let step = Instant::now();
    println!("tools: fetching k8s.io/kubernetes@{KUBERNETES_VERSION} and its dependencies");
    go_step(
        go,
        go.command(&src, "-buildvcs=false").args([
            "list",
            "-m",
            "-json",
            &format!("k8s.io/kubernetes@{KUBERNETES_VERSION}"),
        ]),
        &logs.join("go-probe.log"),
        PROBE,
        "asking the module proxy for k8s.io/kubernetes",
    )?;
    let release = download_release(go, &src, &logs.join("go-download.log"))?;
    std::fs::write(src.join("main.go"), wrapper::MAIN_GO)?;
    std::fs::write(
        src.join("go.mod"),
        wrapper::generate_go_mod(&release.go_mod)?,
    )?;
    // Resolving the import graph downloads every module the build needs and completes go.sum.
    let log = logs.join("go-download.log");
    go_step(
        go,
        go.command(&src, GOFLAGS)
            .args(["list", "-x", "-deps", "-f", "{{.ImportPath}}", "."]),
        &log,
        DOWNLOAD,
        "downloading Go modules",
    )?;
    println!("tools: modules ready in {:.0?}", step.elapsed());

    let step = Instant::now();
    let log = logs.join("go-build.log");
    println!(
        "tools: building {MULTICALL_BINARY} ({}) — a cold build takes tens of minutes on 2 cores; log: {}",
        MULTICALL_COMPONENTS.join(", "),
        log.display()
    );
    let output = tools.bin_dir().join(format!("{MULTICALL_BINARY}.tmp"));
    let ldflags = wrapper::ldflags(&release.time)?;
    go_step(
        go,
        go.command(&src, GOFLAGS)
            .env("GOPROXY", "off")
            .args(["build", "-v", "-trimpath", "-ldflags", &ldflags, "-o"])
            .arg(&output)
            .arg("."),
        &log,
        BUILD,
        "building Kubernetes",
    )?;
    std::fs::rename(&output, tools.binary(MULTICALL_BINARY))?;
    for component in MULTICALL_COMPONENTS {
        let link = tools.binary(component);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(MULTICALL_BINARY, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    println!("tools: built {MULTICALL_BINARY} in {:.0?}", step.elapsed());
    Ok(())
}

struct Release {
    go_mod: String,
    /// The release's publication time (RFC 3339), used as the build date.
    time: String,
}

/// Downloads the k8s.io/kubernetes module (from the module cache when it is there) and returns
/// its go.mod and publication time.
fn download_release(go: &Go, src: &Path, log: &Path) -> Result<Release> {
    let json = mod_download_json(
        go,
        src,
        &format!("k8s.io/kubernetes@{KUBERNETES_VERSION}"),
        log,
    )?;
    let field = |name: &str| -> Result<String> {
        json.get(name)
            .and_then(|v| v.as_str())
            .map(String::from)
            .with_context(|| {
                format!(
                    "`go mod download -json` gave no {name} (see {})",
                    log.display()
                )
            })
    };
    let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(field("Info")?)?)?;
    Ok(Release {
        go_mod: std::fs::read_to_string(field("GoMod")?)?,
        time: info
            .get("Time")
            .and_then(|t| t.as_str())
            .unwrap_or("")
            .to_string(),
    })
}

/// `go mod download -json <module@version>` (time-bounded; the module cache answers when it has
/// the module): its JSON answer, with `Dir`, `GoMod`, `Info`.
fn mod_download_json(
    go: &Go,
    cwd: &Path,
    module_at_version: &str,
    log: &Path,
) -> Result<serde_json::Value> {
    go_step(
        go,
        go.command(cwd, "-buildvcs=false")
            .args(["mod", "download", "-json", module_at_version]),
        log,
        DOWNLOAD,
        &format!("downloading {module_at_version}"),
    )?;
    serde_json::from_str(&std::fs::read_to_string(log)?).with_context(|| {
        format!(
            "parsing `go mod download -json` output in {}",
            log.display()
        )
    })
}

fn install_helm(go: &Go, tools: &Tools) -> Result<()> {
    let step = Instant::now();
    let log = tools.dir.join("logs").join("helm-install.log");
    println!(
        "tools: installing helm {HELM_VERSION}; log: {}",
        log.display()
    );
    // `go install pkg@version` ignores the wrapper module, so it needs no go.mod of ours; run it
    // outside src/ anyway so the wrapper's go.mod is not consulted.
    go_step(
        go,
        go.command(&tools.dir, "-buildvcs=false -p=2")
            .env("GOBIN", tools.bin_dir())
            .args([
                "install",
                "-v",
                "-x",
                "-trimpath",
                "-ldflags",
                &format!("-s -w -X helm.sh/helm/v4/internal/version.version={HELM_VERSION}"),
                &format!("helm.sh/helm/v4/cmd/helm@{HELM_VERSION}"),
            ]),
        &log,
        Limits {
            total: DOWNLOAD.total + BUILD.total,
            stall: BUILD.stall,
        },
        "installing helm",
    )?;
    println!("tools: installed helm in {:.0?}", step.elapsed());
    Ok(())
}

/// Runs one go step, turning its failure into one line that says what to do.
fn go_step(
    go: &Go,
    command: &mut std::process::Command,
    log: &Path,
    limits: Limits,
    what: &str,
) -> Result<()> {
    let failure = match go::run_logged(command, log, limits, Some(what)) {
        Ok(()) => return Ok(()),
        Err(failure) => failure,
    };
    if let Some(line) = go::module_download_problem(log) {
        bail!(
            "{what} {failure}: the Go module proxy (GOPROXY={}) could not be used: {line} — check that this \
             machine reaches it (or set GOPROXY), then re-run `cargo xtask tools` (log: {})",
            go.goproxy(),
            log.display()
        );
    }
    if let Failure::Stalled(_) = failure {
        bail!(
            "{what} {failure}: the Go module proxy (GOPROXY={}) is probably unreachable or not answering — \
             check that this machine reaches it (or set GOPROXY), then re-run `cargo xtask tools` (log: {})",
            go.goproxy(),
            log.display()
        );
    }
    if let Failure::TimedOut(_) = failure {
        bail!(
            "{what} {failure}; the machine may be overloaded or the network stalled: re-run `cargo xtask tools` (log: {})",
            log.display()
        );
    }
    let detail = std::fs::read_to_string(log)
        .map(|t| go::last_line(&t))
        .unwrap_or_default();
    bail!("{what} {failure}: {detail} (log: {})", log.display())
}
