//! The node's footprint on the host, and how to remove it without a trace.
//!
//! A node is a set of namespaces (mount, network, UTS) held open by one small process, joined
//! to the host by a veth pair, and a cgroup subtree (`/fjord-node-<n>-<instance>` in every v1 hierarchy)
//! that holds the holder, containerd, kubelet, kube-proxy and every pod. That is all it leaves
//! on the host: killing every process in the subtree ends the namespaces (and with them every
//! mount, interface and iptables rule made inside), then the empty cgroups and the host end of
//! the veth are removed. Nothing here writes a host sysctl: the values the kubelet insists on
//! are bind-mounted over `/proc/sys` inside the node's own mount namespace.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::config::{Link, KUBELET_SYSCTLS};

const CGROUP_MOUNT: &str = "/sys/fs/cgroup";

/// The v1 hierarchies mounted on this machine (`cpu`, `memory`, `pids`, ...), skipping the
/// empty unified (v2) mount.
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(CGROUP_MOUNT) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n != "unified"))
        // Symlinks such as cpu -> cpu,cpuacct would list one hierarchy twice.
        .filter(|p| {
            std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
                && p.join("cgroup.procs").exists()
        })
        .collect();
    dirs.sort();
    dirs
}

/// Creates `/<root>/system` in every hierarchy (cpuset needs its CPUs and memory nodes copied
/// from the parent before a process may join).
pub fn create_cgroups(link: Link) -> Result<()> {
    for hierarchy in cgroup_hierarchies() {
        let root = hierarchy.join(link.cgroup_root());
        for dir in [root.clone(), root.join("system")] {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating cgroup {}", dir.display()))?;
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let parent = dir.parent().expect("cgroup has a parent").join(file);
                if let Ok(value) = std::fs::read_to_string(&parent) {
                    std::fs::write(dir.join(file), value.trim())
                        .with_context(|| format!("writing {}", dir.join(file).display()))?;
                }
            }
        }
    }
    Ok(())
}

/// Moves `pid` into the node's `system` cgroup in every hierarchy; its children follow.
pub fn join_cgroups(link: Link, pid: u32) -> Result<()> {
    for hierarchy in cgroup_hierarchies() {
        let procs = hierarchy
            .join(link.cgroup_root())
            .join("system")
            .join("cgroup.procs");
        std::fs::write(&procs, pid.to_string())
            .with_context(|| format!("moving pid {pid} into {}", procs.display()))?;
    }
    Ok(())
}

/// Every pid in the node's cgroup subtree (pods included).
pub fn pids_in_subtree(link: Link) -> Vec<u32> {
    let mut pids = Vec::new();
    for hierarchy in cgroup_hierarchies() {
        collect_pids(&hierarchy.join(link.cgroup_root()), &mut pids);
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn collect_pids(dir: &Path, pids: &mut Vec<u32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_pids(&entry.path(), pids);
            }
        }
    }
}

/// SIGKILLs every process of the node until none is left (containers, shims, the holder).
pub fn kill_subtree(link: Link, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let pids = pids_in_subtree(link);
        if pids.is_empty() {
            return Ok(());
        }
        for pid in &pids {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(*pid as libc::pid_t, libc::SIGKILL);
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "processes {pids:?} of the node in cgroup /{} survived SIGKILL for {timeout:?}",
                link.cgroup_root()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes the node's (empty) cgroups, deepest first, in every hierarchy.
pub fn remove_cgroups(link: Link) -> Result<()> {
    for hierarchy in cgroup_hierarchies() {
        let root = hierarchy.join(link.cgroup_root());
        if root.exists() {
            remove_cgroup_tree(&root)?;
        }
    }
    Ok(())
}

fn remove_cgroup_tree(dir: &Path) -> Result<()> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path())?;
            }
        }
    }
    // A cgroup whose last task just died can be busy for a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("removing cgroup {}", dir.display()))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Runs a short host command; the error names the command and what it printed.
pub fn sh(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (is it installed?)"))?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `args` inside the node's namespaces (mount, network, UTS) of `holder`.
pub fn in_node(holder: u32, args: &[&str]) -> Result<String> {
    let target = holder.to_string();
    let mut full = vec!["-t", &target, "-m", "-n", "-u", "--"];
    full.extend_from_slice(args);
    sh("nsenter", &full)
}

/// The first /30 link index no host interface uses yet.
pub fn free_link() -> Result<Link> {
    let addresses = sh("ip", &["-4", "-o", "addr", "show"])?;
    let links = sh("ip", &["-o", "link", "show"])?;
    for index in 0..=250u8 {
        let link = Link {
            index,
            instance: std::process::id(),
        };
        let host_ip = format!(" {}/", link.host_ip());
        let name = format!(": {}@", link.host_interface());
        let name_bare = format!(": {}:", link.host_interface());
        if !addresses.contains(&host_ip) && !links.contains(&name) && !links.contains(&name_bare) {
            return Ok(link);
        }
    }
    bail!("no free 10.250.N.0/30 link for a node: remove stale fjordN interfaces (`cargo xtask cluster down`)")
}

/// Sets up the node's namespaces once `holder` runs: private bind mounts for `/run`,
/// `/var/lib` and `/var/log`, the kubelet's sysctl values, the veth, and a firewall rule that
/// lets forwarded pod traffic leave towards the host only for the host's link address.
pub fn prepare_namespaces(holder: u32, link: Link, node_dir: &Path) -> Result<()> {
    for dir in ["run", "var-lib", "var-log", "sysctl"] {
        std::fs::create_dir_all(node_dir.join(dir))?;
    }
    let bind = |from: &Path, to: &str| -> Result<()> {
        let from = from.display().to_string();
        in_node(holder, &["mount", "--bind", &from, to]).map(|_| ())
    };
    in_node(holder, &["hostname", crate::control_plane::pki::NODE_NAME])?;
    bind(&node_dir.join("run"), "/run")?;
    bind(&node_dir.join("var-lib"), "/var/lib")?;
    bind(&node_dir.join("var-log"), "/var/log")?;
    for (name, wanted) in KUBELET_SYSCTLS {
        let proc_path = format!("/proc/sys/{name}");
        let current = std::fs::read_to_string(&proc_path).unwrap_or_default();
        if current.trim() == *wanted || !Path::new(&proc_path).exists() {
            continue;
        }
        let file = node_dir.join("sysctl").join(name.replace('/', "."));
        std::fs::write(&file, format!("{wanted}\n"))?;
        bind(&file, &proc_path)?;
    }

    let host_if = link.host_interface();
    let node_if = link.node_interface_on_host();
    sh(
        "ip",
        &[
            "link", "add", &host_if, "type", "veth", "peer", "name", &node_if,
        ],
    )?;
    sh(
        "ip",
        &["link", "set", &node_if, "netns", &holder.to_string()],
    )?;
    sh(
        "ip",
        &[
            "addr",
            "add",
            &format!("{}/30", link.host_ip()),
            "dev",
            &host_if,
        ],
    )?;
    sh("ip", &["link", "set", &host_if, "up"])?;
    in_node(holder, &["ip", "link", "set", "lo", "up"])?;
    in_node(holder, &["ip", "link", "set", &node_if, "name", "eth0"])?;
    in_node(
        holder,
        &[
            "ip",
            "addr",
            "add",
            &format!("{}/30", link.node_ip()),
            "dev",
            "eth0",
        ],
    )?;
    in_node(holder, &["ip", "link", "set", "eth0", "up"])?;
    // No default route in the node: pods can reach the node, each other and the host's link
    // address (the apiserver), nothing else. The rule below makes that explicit for forwarded
    // traffic even if a route appears.
    let host_ip = link.host_ip().to_string();
    in_node(
        holder,
        &[
            "iptables", "-I", "FORWARD", "1", "-o", "eth0", "!", "-d", &host_ip, "-j", "DROP",
        ],
    )?;
    // Routing between pods and the link happens inside the node's own network namespace.
    in_node(
        holder,
        &["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
    )?;
    Ok(())
}

/// Deletes the host end of the veth if it is still there (it normally goes with the namespace).
pub fn remove_link(link: Link) {
    let name = link.host_interface();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !Path::new("/sys/class/net").join(&name).exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = sh("ip", &["link", "del", &name]);
}
