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

/// True for a line about some local node's own link, addresses or cgroups (`fjord<n>`,
/// `10.250.<n>.x`, `fjord-node-*`): other clusters may start or stop while this test runs (the
/// suite's own, or one from `cargo xtask up`), so those are compared separately, for this
/// cluster's link only.
fn other_nodes(line: &str) -> bool {
    line.contains("10.250.")
        || line.contains("fjord-node-")
        || line
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| {
                word.strip_prefix("fjord").is_some_and(|n| {
                    !n.is_empty() && n.chars().all(|c| c.is_ascii_digit() || c == 'n')
                })
            })
}

fn without_nodes(text: String) -> String {
    text.lines()
        .filter(|l| !other_nodes(l))
        .collect::<Vec<_>>()
        .join("\n")
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
    snap.insert("links", without_nodes(links.join("\n")));
    snap.insert(
        "addresses",
        without_nodes(command("ip", &["-o", "addr", "show"])),
    );
    snap.insert(
        "routes",
        without_nodes(command("ip", &["route", "show", "table", "all"])),
    );
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
    snap.insert("cgroups", without_nodes(cgroups.join("\n")));
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
    let link = cluster.node.link;
    let interface = Path::new("/sys/class/net").join(link.host_interface());
    let cgroups: Vec<_> = host::cgroup_hierarchies()
        .into_iter()
        .map(|h| h.join(link.cgroup_root()))
        .collect();
    let during = snapshot(&dir);
    assert!(
        !host::pids_in_subtree(link).is_empty(),
        "the node's cgroup holds no processes"
    );
    assert!(
        interface.exists(),
        "no veth {} for the node",
        interface.display()
    );
    assert!(
        cgroups.iter().all(|c| c.is_dir()),
        "the node's cgroups are missing"
    );
    assert!(!during["processes of this cluster"].is_empty());
    for aspect in ["sysctls", "iptables", "ip6tables", "files", "mounts"] {
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
    assert!(
        !interface.exists(),
        "veth {} left behind",
        interface.display()
    );
    for cgroup in &cgroups {
        assert!(!cgroup.exists(), "cgroup {} left behind", cgroup.display());
    }
    let own_prefix = format!("10.250.{}.", link.index);
    for (what, text) in [
        ("address", command("ip", &["-o", "addr", "show"])),
        ("route", command("ip", &["route", "show", "table", "all"])),
    ] {
        assert!(
            !text.contains(&own_prefix),
            "a {what} of the node's link {own_prefix}0/30 is left: {text}"
        );
    }
}
