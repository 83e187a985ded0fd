//! The local node changes nothing on the host: after `up` and `down` the host's processes,
//! mounts, network links, addresses, routes, firewall rules, the kernel settings the kubelet and
//! kube-proxy would touch, cgroups and `/etc` files are exactly as before.
//!
//! Runs its own cluster in its own directory, so it also proves two nodes can coexist (the
//! shared one of `cargo xtask test` keeps running meanwhile; nothing of it changes during this
//! test's window).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use fjord_e2e::cluster::Cluster;
use fjord_e2e::control_plane;
use fjord_e2e::node::host;

/// Kernel settings the kubelet (`protectKernelDefaults`) and kube-proxy (conntrack, forwarding)
/// would change if they were allowed to.
const SYSCTLS: &[&str] = &[
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
    "kernel/hostname",
];

fn command(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(e) => format!("<{program} failed: {e}>"),
    }
}

/// Everything the node could leave behind, as comparable text per aspect.
fn snapshot(marker: &Path) -> BTreeMap<&'static str, String> {
    let mut snap = BTreeMap::new();
    let marker = marker.display().to_string();
    let mut ours = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&marker) {
                ours.push(cmdline);
            }
        }
    }
    ours.sort();
    snap.insert("processes of this cluster", ours.join("\n"));
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(|l| {
            l.split_whitespace()
                .skip(3)
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    mounts.sort();
    snap.insert("mounts", mounts.join("\n"));
    let mut links: Vec<String> = command("ip", &["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
        .collect();
    links.sort();
    snap.insert("links", links.join("\n"));
    snap.insert("addresses", command("ip", &["-o", "addr", "show"]));
    snap.insert("routes", command("ip", &["route", "show", "table", "all"]));
    let rules = |program: &str| -> String {
        command(program, &[])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| match l.strip_prefix(':') {
                // Chain policy lines carry packet counters that move on their own.
                Some(chain) => chain
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" "),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    snap.insert("iptables", rules("iptables-save"));
    snap.insert("ip6tables", rules("ip6tables-save"));
    let sysctls: Vec<String> = SYSCTLS
        .iter()
        .map(|name| {
            let value = std::fs::read_to_string(format!("/proc/sys/{name}"))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|_| "<absent>".into());
            format!("{name}={value}")
        })
        .collect();
    snap.insert("sysctls", sysctls.join("\n"));
    let mut cgroups = Vec::new();
    for hierarchy in host::cgroup_hierarchies() {
        for entry in std::fs::read_dir(&hierarchy).unwrap().flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                cgroups.push(entry.path().display().to_string());
            }
        }
    }
    cgroups.sort();
    snap.insert("cgroups", cgroups.join("\n"));
    let mut etc = String::new();
    for file in ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname"] {
        etc += &format!(
            "{file}:\n{}\n",
            std::fs::read_to_string(file).unwrap_or_default()
        );
    }
    for dir in [
        "/var/log/containers",
        "/var/log/pods",
        "/etc/cni",
        "/opt/cni",
        "/var/lib/kubelet",
        "/run/containerd",
    ] {
        etc += &format!("{dir} exists: {}\n", Path::new(dir).exists());
    }
    snap.insert("files", etc);
    snap
}

#[test]
fn cluster_up_then_down_leaves_the_host_as_it_was() {
    let dir = control_plane::target_dir().join("fjord-cluster-footprint");
    let _ = Cluster::down(&dir);
    let before = snapshot(&dir);
    let cluster = Cluster::up(&dir, &[]).expect("local cluster with a node starts");

    // While it runs, it really is there: its own cgroup with processes, its link, its node Ready.
    let during = snapshot(&dir);
    assert!(
        !host::pids_in_subtree(cluster.node.link).is_empty(),
        "the node's cgroup holds no processes"
    );
    assert_ne!(
        before["links"], during["links"],
        "no veth appeared for the node"
    );
    assert_ne!(
        before["cgroups"], during["cgroups"],
        "no cgroup appeared for the node"
    );
    assert!(!during["processes of this cluster"].is_empty());
    for aspect in ["sysctls", "iptables", "files", "mounts"] {
        assert_eq!(
            before[aspect], during[aspect],
            "the running node changed the host's {aspect}"
        );
    }

    Cluster::down(&dir).expect("down succeeds");
    let after = snapshot(&dir);
    for (aspect, was) in &before {
        assert_eq!(was, &after[aspect], "the host's {aspect} differ after down");
    }
}
