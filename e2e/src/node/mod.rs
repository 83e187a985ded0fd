//! A real Kubernetes node beside the local control plane: containerd + runc + CNI, the
//! upstream kubelet and kube-proxy, CoreDNS and a local volume provisioner, all built from
//! pinned sources by `cargo xtask tools`.
//!
//! Why it is shaped like this: the node must change nothing on the host. So it lives in its
//! own mount, network and UTS namespaces (held open by one process), reaches the host only
//! over a veth pair (`10.250.<n>.0/30`, no default route), keeps every file under
//! `<cluster dir>/node/`, and every process it starts — pods included — stays in one cgroup
//! subtree, which is how [`stop`] finds and ends all of it. See [`host`] for the footprint and
//! [`config`] for the settings that keep the kubelet and kube-proxy off host-wide knobs.

pub mod config;
pub mod host;
pub mod images;

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::control_plane::process::{self, failure_summary};
use crate::control_plane::{kubectl, pki, Component, ControlPlane};
use crate::tools::Tools;
pub use config::{Layout, Link};

/// What `stop` needs to find the node again: written as soon as each piece exists.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    pub link: Link,
    pub holder_pid: u32,
    pub components: Vec<Component>,
    pub ready: bool,
}

fn state_path(cluster_dir: &Path) -> PathBuf {
    Layout::new(cluster_dir).path("state.json")
}

pub fn read_state(cluster_dir: &Path) -> Option<NodeState> {
    let text = std::fs::read_to_string(state_path(cluster_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_state(cluster_dir: &Path, state: &NodeState) -> Result<()> {
    let path = state_path(cluster_dir);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// Creates the node's namespaces and link. Runs before the control plane starts, because the
/// apiserver binds the host's end of the link.
pub fn create_namespaces(cluster_dir: &Path) -> Result<NodeState> {
    let layout = Layout::new(cluster_dir);
    if layout.root.exists() {
        std::fs::remove_dir_all(&layout.root).with_context(|| {
            format!("removing the old node directory {}", layout.root.display())
        })?;
    }
    std::fs::create_dir_all(layout.path("logs"))?;
    let link = host::free_link()?;
    host::create_cgroups(link)?;
    let log = layout.path("logs/holder.log");
    let mut command = Command::new("unshare");
    command
        .args([
            "--mount",
            "--net",
            "--uts",
            "--propagation",
            "private",
            "--",
        ])
        // The trailing arguments name the cluster directory, so `is_ours_and_alive` recognises
        // the holder by its command line.
        .args([
            "sh",
            "-c",
            "while :; do sleep 3600; done",
            "fjord-node-holder",
        ])
        .arg(cluster_dir)
        .stdin(Stdio::null())
        .stdout(File::create(&log)?)
        .stderr(File::create(layout.path("logs/holder.err"))?)
        .process_group(0);
    let child = command
        .spawn()
        .context("starting the node's namespace holder (unshare)")?;
    let holder_pid = child.id();
    // The holder is reaped by whoever inherits it; we never wait on it.
    std::mem::forget(child);
    let mut state = NodeState {
        link,
        holder_pid,
        components: Vec::new(),
        ready: false,
    };
    write_state(cluster_dir, &state)?;
    host::join_cgroups(link, holder_pid)?;
    // unshare has to finish creating the namespaces before we enter them.
    let own_net = std::fs::read_link("/proc/self/ns/net")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_link(format!("/proc/{holder_pid}/ns/net")).ok() == Some(own_net.clone()) {
        if Instant::now() > deadline {
            bail!("the node's namespace holder (pid {holder_pid}) did not unshare its namespaces");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    host::prepare_namespaces(holder_pid, link, &layout.root)?;
    state.components.push(Component {
        name: "namespace-holder".into(),
        pid: holder_pid,
        log,
    });
    write_state(cluster_dir, &state)?;
    Ok(state)
}

/// Starts containerd, imports the images, starts kubelet and kube-proxy inside the node's
/// namespaces, then CoreDNS, the default StorageClass and the local volume provisioner.
pub fn start_components(
    cluster_dir: &Path,
    state: &mut NodeState,
    control_plane: &ControlPlane,
    extra_images: &[PathBuf],
) -> Result<()> {
    let tools = Tools::require_node()?;
    let layout = Layout::new(cluster_dir);
    let link = state.link;
    let pki_dir = cluster_dir.join("pki");
    for dir in [
        "containerd",
        "cni/net.d",
        "cni/ipam",
        "kubelet/pki",
        "kube-proxy",
        "pod-logs",
        "volumes",
        "runc",
    ] {
        std::fs::create_dir_all(layout.path(dir))?;
    }
    std::fs::write(
        layout.containerd_config(),
        config::containerd_toml(&layout, &tools.binary("runc"), &tools.cni_bin_dir()),
    )?;
    std::fs::write(
        layout.cni_conf_dir().join("10-fjord.conflist"),
        config::cni_conflist(&layout),
    )?;
    // Pods with `dnsPolicy: Default` get this; there is no resolver to forward to.
    std::fs::write(
        layout.resolv_conf(),
        "# fjord local node: cluster DNS only\n",
    )?;
    let url = &control_plane.apiserver_url;
    let ca = pki_dir.join("ca.crt");
    let kubelet_kubeconfig = layout.path("kubelet/kubeconfig");
    std::fs::write(
        &kubelet_kubeconfig,
        pki::kubeconfig(
            url,
            &ca,
            &pki::client_cert(&pki_dir, "kubelet"),
            &format!("system:node:{}", pki::NODE_NAME),
        ),
    )?;
    std::fs::write(
        layout.kubelet_config(),
        config::kubelet_yaml(&layout, link, &pki_dir),
    )?;
    let proxy_kubeconfig = layout.path("kube-proxy/kubeconfig");
    std::fs::write(
        &proxy_kubeconfig,
        pki::kubeconfig(
            url,
            &ca,
            &pki::client_cert(&pki_dir, "kube-proxy"),
            "system:kube-proxy",
        ),
    )?;
    std::fs::write(
        layout.kube_proxy_config(),
        config::kube_proxy_yaml(link, &proxy_kubeconfig),
    )?;

    let mut starter = NodeStarter {
        cluster_dir,
        layout: &layout,
        tools: &tools,
        state,
        children: Vec::new(),
    };
    let containerd_config = layout.containerd_config().display().to_string();
    starter.spawn("containerd", &["--config", &containerd_config])?;
    let socket = layout.containerd_socket();
    starter.wait_until("containerd", Duration::from_secs(60), || {
        let address = socket.display().to_string();
        host::sh(
            &tools.binary("ctr").display().to_string(),
            &["--address", &address, "version"],
        )
        .map(|_| ())
        .map_err(|e| format!("{e:#}"))
    })?;

    let started = Instant::now();
    let mut archives = images::node_images(&tools, &layout)?;
    archives.extend(extra_images.iter().cloned());
    for archive in &archives {
        images::import(&tools, &socket, archive)?;
    }
    eprintln!(
        "node: imported {} images in {:.1?}",
        archives.len(),
        started.elapsed()
    );

    let root_dir = layout.path("kubelet/root").display().to_string();
    let cert_dir = layout.path("kubelet/pki").display().to_string();
    let node_ip = link.node_ip().to_string();
    starter.spawn(
        "kubelet",
        &[
            &format!("--config={}", layout.kubelet_config().display()),
            &format!("--kubeconfig={}", kubelet_kubeconfig.display()),
            &format!("--root-dir={root_dir}"),
            &format!("--cert-dir={cert_dir}"),
            &format!("--hostname-override={}", pki::NODE_NAME),
            &format!("--node-ip={node_ip}"),
            "--v=1",
        ],
    )?;
    let kubeconfig = control_plane.kubeconfig.clone();
    let k8s = Tools::require()?;
    starter.wait_until("kubelet", Duration::from_secs(120), || {
        let ready = kubectl(
            &k8s,
            &kubeconfig,
            &[
                "get",
                "node",
                pki::NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ],
        )?;
        if ready.trim() == "True" {
            Ok(())
        } else {
            Err(format!("node {} Ready={ready:?}", pki::NODE_NAME))
        }
    })?;
    starter.spawn(
        "kube-proxy",
        &[
            &format!("--config={}", layout.kube_proxy_config().display()),
            "--v=1",
        ],
    )?;
    let holder = starter.state.holder_pid;
    starter.wait_until("kube-proxy", Duration::from_secs(60), || {
        host::in_node(holder, &["iptables", "-t", "nat", "-S", "KUBE-SERVICES"])
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    })?;

    let provisioner = provisioner_binary()?;
    let volumes = layout.volumes().display().to_string();
    let kubeconfig_arg = kubeconfig.display().to_string();
    starter.spawn_on_host(
        "local-provisioner",
        &provisioner,
        &["--kubeconfig", &kubeconfig_arg, "--volumes", &volumes],
    )?;

    let manifests = layout.path("addons.yaml");
    std::fs::write(
        &manifests,
        format!(
            "{}---\n{}",
            config::storage_class_manifest(),
            config::coredns_manifest(images::COREDNS_IMAGE)
        ),
    )?;
    kubectl(
        &k8s,
        &kubeconfig,
        &[
            "apply",
            "--server-side",
            "-f",
            &manifests.display().to_string(),
        ],
    )
    .map_err(anyhow::Error::msg)
    .context("applying CoreDNS and the StorageClass")?;
    starter.wait_until("coredns", Duration::from_secs(120), || {
        let ready = kubectl(
            &k8s,
            &kubeconfig,
            &[
                "-n",
                "kube-system",
                "get",
                "deployment",
                "coredns",
                "-o",
                "jsonpath={.status.readyReplicas}",
            ],
        )?;
        if ready.trim() == "1" {
            Ok(())
        } else {
            Err("CoreDNS not ready yet".into())
        }
    })?;
    starter.state.ready = true;
    write_state(cluster_dir, starter.state)?;
    Ok(())
}

/// The provisioner is a binary of this crate; `cargo xtask cluster up` builds it first.
fn provisioner_binary() -> Result<PathBuf> {
    let path = crate::control_plane::target_dir()
        .join("debug")
        .join("fjord-local-provisioner");
    if !path.is_file() {
        bail!(
            "{} is missing: build it with `cargo build -p fjord-e2e --bin fjord-local-provisioner` (cargo xtask cluster up does)",
            path.display()
        );
    }
    Ok(path)
}

struct NodeStarter<'a> {
    cluster_dir: &'a Path,
    layout: &'a Layout,
    tools: &'a Tools,
    state: &'a mut NodeState,
    children: Vec<(String, Child, PathBuf)>,
}

impl NodeStarter<'_> {
    /// Starts a node component inside the node's namespaces, in the node's cgroup.
    fn spawn(&mut self, name: &str, args: &[&str]) -> Result<()> {
        let holder = self.state.holder_pid.to_string();
        let binary = self.tools.binary(name).display().to_string();
        let mut full = vec!["-t", &holder, "-m", "-n", "-u", "--", &binary];
        full.extend_from_slice(args);
        self.spawn_program(name, Path::new("nsenter"), &full)
    }

    /// Starts a helper on the host (it only talks to the apiserver), still in the node's cgroup
    /// so `stop` ends it with the rest.
    fn spawn_on_host(&mut self, name: &str, program: &Path, args: &[&str]) -> Result<()> {
        self.spawn_program(name, program, args)
    }

    fn spawn_program(&mut self, name: &str, program: &Path, args: &[&str]) -> Result<()> {
        let log = self.layout.path(&format!("logs/{name}.log"));
        let file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let path = format!(
            "{}:{}",
            self.tools.bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = Command::new(program);
        command
            .args(args)
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        host::join_cgroups(self.state.link, child.id())?;
        self.state.components.push(Component {
            name: name.to_string(),
            pid: child.id(),
            log: log.clone(),
        });
        write_state(self.cluster_dir, self.state)?;
        self.children.push((name.to_string(), child, log));
        Ok(())
    }

    /// Polls `ready` until it succeeds, the last started component exits, or `timeout` passes.
    fn wait_until(
        &mut self,
        name: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> std::result::Result<(), String>,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((component, child, log)) = self.children.last_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "{component} exited during start-up ({status}): {} (log: {})",
                        failure_summary(log),
                        log.display()
                    );
                }
            }
            let reason = match ready() {
                Ok(()) => return Ok(()),
                Err(reason) => reason,
            };
            if Instant::now() >= deadline {
                bail!(
                    "{name} did not become ready within {timeout:?}: {reason} (logs: {})",
                    self.layout.path("logs").display()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Ends every process of the node (pods included), removes its cgroups and link, and its
/// files except the logs. Safe to call when nothing runs.
pub fn stop(cluster_dir: &Path) -> Result<Vec<String>> {
    let Some(state) = read_state(cluster_dir) else {
        return Ok(Vec::new());
    };
    let mut stopped = Vec::new();
    for component in state.components.iter().rev() {
        if process::is_ours_and_alive(component.pid, cluster_dir) {
            stopped.push(format!("{} (pid {})", component.name, component.pid));
        }
    }
    // Everything in the node's cgroup subtree goes at once: the components, pods, shims and
    // the namespace holder. Nothing is kept (a graceful stop would only cost time).
    host::kill_subtree(state.link, Duration::from_secs(30))?;
    host::remove_link(state.link);
    host::remove_cgroups(state.link)?;
    let layout = Layout::new(cluster_dir);
    for entry in std::fs::read_dir(&layout.root)?.flatten() {
        if entry.file_name() != "logs" {
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(stopped)
}

/// True when the node recorded in `cluster_dir` has every component alive and was ready.
pub fn is_running(cluster_dir: &Path) -> bool {
    let Some(state) = read_state(cluster_dir) else {
        return false;
    };
    state.ready
        && state
            .components
            .iter()
            .all(|c| process::is_ours_and_alive(c.pid, cluster_dir))
}

/// Each node component's log tail, for a failure report.
pub fn log_report(cluster_dir: &Path, lines: usize) -> String {
    read_state(cluster_dir)
        .map(|state| crate::control_plane::components_report(&state.components, lines))
        .unwrap_or_default()
}
