//! `cargo xtask cluster up [--control-plane] | down | status`: a local Kubernetes cluster started
//! by hand, which tests reuse while it runs. `up` alone starts the control plane and a real node
//! (containerd, kubelet, kube-proxy, CoreDNS, a local volume provisioner) in its own namespaces;
//! `--control-plane` starts only etcd, kube-apiserver and kube-controller-manager. The engines
//! are `fjord_e2e::cluster` and `fjord_e2e::control_plane`, shared with the test fixture.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use fjord_e2e::cluster::Cluster;
use fjord_e2e::control_plane::{self, ControlPlane, Lifetime, Options, Requested};
use fjord_e2e::tools::KUBERNETES_VERSION;

const USAGE: &str = "usage: cargo xtask cluster up [--dir DIR]   (control plane + a real node)
       cargo xtask cluster up --control-plane [--dir DIR] [--apiserver-port PORT] [--etcd-port PORT]
       cargo xtask cluster down [--dir DIR]
       cargo xtask cluster status [--dir DIR]
DIR defaults to $FJORD_CLUSTER_DIR, else target/fjord-cluster; ports default to free ones.";

pub fn run(args: &[String]) -> Result<()> {
    let Some((command, rest)) = args.split_first() else {
        bail!("{USAGE}")
    };
    let flags = Flags::parse(rest)?;
    match command.as_str() {
        "up" => up(flags),
        "down" => down(flags),
        "status" => status(flags),
        _ => bail!("{USAGE}"),
    }
}

#[derive(Default)]
struct Flags {
    control_plane: bool,
    dir: Option<PathBuf>,
    apiserver_port: Option<u16>,
    etcd_port: Option<u16>,
}

impl Flags {
    fn parse(args: &[String]) -> Result<Flags> {
        let mut flags = Flags::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (arg.as_str(), None),
            };
            let mut value = || -> Result<String> {
                inline
                    .clone()
                    .or_else(|| args.next().cloned())
                    .with_context(|| format!("{name} needs a value\n{USAGE}"))
            };
            let port = |text: String| -> Result<u16> {
                text.parse()
                    .with_context(|| format!("{name}: {text:?} is not a port number"))
            };
            match name {
                "--control-plane" => flags.control_plane = true,
                "--dir" => flags.dir = Some(PathBuf::from(value()?)),
                "--apiserver-port" => flags.apiserver_port = Some(port(value()?)?),
                "--etcd-port" => flags.etcd_port = Some(port(value()?)?),
                _ => bail!("unknown flag {arg}\n{USAGE}"),
            }
        }
        Ok(flags)
    }

    fn dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(control_plane::default_dir)
    }
}

fn up(flags: Flags) -> Result<()> {
    if !flags.control_plane {
        let cluster = up_with_node(&flags.dir(), &[])?;
        print_usage(&cluster.control_plane);
        return Ok(());
    }
    let mut options = Options::new(flags.dir(), Lifetime::Detached);
    options.apiserver_port = Requested {
        port: flags.apiserver_port,
        ..options.apiserver_port
    };
    options.etcd_port = Requested {
        port: flags.etcd_port,
        ..options.etcd_port
    };
    let started = std::time::Instant::now();
    let control_plane = ControlPlane::up(&options)?;
    let how = if control_plane.reused {
        "already running"
    } else {
        "started"
    };
    println!(
        "control plane {how}: Kubernetes {KUBERNETES_VERSION} at {} ({:.1?})",
        control_plane.apiserver_url,
        started.elapsed()
    );
    print_usage(&control_plane);
    Ok(())
}

/// Builds what the node needs (tools, the volume provisioner) and starts the whole cluster in
/// `dir` with `images` imported, or returns the one already running there after importing
/// `images` into it (so it runs what was just built).
pub fn up_with_node(dir: &std::path::Path, images: &[PathBuf]) -> Result<Cluster> {
    crate::deps::ensure_system_packages()?;
    crate::tools::run(&[])?;
    // `cargo test --workspace` builds it too (with the whole workspace's features); only build
    // it here when that has not happened.
    let provisioner = crate::up::target_dir()
        .join("debug")
        .join("fjord-local-provisioner");
    if !provisioner.is_file() {
        crate::process::run(
            "build the local volume provisioner",
            crate::process::cargo().args([
                "build",
                "-p",
                "fjord-e2e",
                "--bin",
                "fjord-local-provisioner",
            ]),
        )?;
    }
    let started = std::time::Instant::now();
    let reused = Cluster::find_running(dir).is_some();
    let cluster = Cluster::up(dir, images)?;
    if reused {
        let socket = fjord_e2e::node::Layout::new(dir).containerd_socket();
        let tools = fjord_e2e::tools::Tools::require_node()?;
        for archive in images {
            fjord_e2e::node::images::import(&tools, &socket, archive)?;
        }
    }
    println!(
        "cluster ready: Kubernetes {KUBERNETES_VERSION} at {}, node {} at {} ({:.1?})",
        cluster.control_plane.apiserver_url,
        fjord_e2e::control_plane::pki::NODE_NAME,
        cluster.node_address(),
        started.elapsed()
    );
    Ok(cluster)
}

fn print_usage(control_plane: &ControlPlane) {
    let tools = fjord_e2e::tools::Tools::location();
    println!("  export KUBECONFIG={}", control_plane.kubeconfig.display());
    println!(
        "  export PATH={}:$PATH   # kubectl, helm, etcd, kube-* {KUBERNETES_VERSION}",
        tools.bin_dir().display()
    );
    println!("  kubectl get --raw /version");
    for component in &control_plane.components {
        println!(
            "  log of {:<24} {}  (pid {})",
            component.name,
            component.log.display(),
            component.pid
        );
    }
    println!("  `cargo test` reuses it while it runs; stop it with `cargo xtask cluster down`");
}

fn down(flags: Flags) -> Result<()> {
    let dir = flags.dir();
    let stopped = Cluster::down(&dir)?;
    if stopped.is_empty() {
        println!(
            "control plane in {}: nothing was running; data removed, logs kept in {}",
            dir.display(),
            dir.join("logs").display()
        );
    } else {
        println!(
            "cluster in {}: stopped {}; logs kept in {}",
            dir.display(),
            stopped.join(", "),
            dir.join("logs").display()
        );
    }
    Ok(())
}

fn status(flags: Flags) -> Result<()> {
    let dir = flags.dir();
    match ControlPlane::find_running(&dir) {
        Some(control_plane) => {
            println!("control plane running: Kubernetes {KUBERNETES_VERSION} at {}", control_plane.apiserver_url);
            print_usage(&control_plane);
            Ok(())
        }
        None => bail!("no healthy control plane in {}: start one with `cargo xtask cluster up --control-plane`", dir.display()),
    }
}
