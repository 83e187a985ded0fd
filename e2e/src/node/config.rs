//! The node's configuration files, as pure functions of where things live.
//!
//! Each setting here exists for a reason found on this VM family (see
//! `shared/design/LOCAL_CLUSTER_NOTES.md`): cgroup v1 without systemd, no CAP_SYS_RESOURCE (so no
//! lowering of OOM scores), and the rule that the node changes nothing on the host (no kernel
//! sysctls, no host conntrack sizing, no traffic towards the host's uplink). Keeping them pure
//! lets a unit test pin each of those settings.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The pod network inside the node (bridge `cni0`, host-local addresses).
pub const POD_CIDR: &str = "10.244.0.0/24";
/// The wider cluster CIDR kube-proxy is told about.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// CoreDNS's Service address.
pub const CLUSTER_DNS: &str = "10.96.0.10";
/// Pinned sandbox image: built locally from upstream `pause.c`.
pub const PAUSE_IMAGE: &str = "docker.io/library/pause:3.10";

/// Where one node's files live: everything under `<cluster dir>/node/`.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(cluster_dir: &Path) -> Layout {
        Layout {
            root: cluster_dir.join("node"),
        }
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    pub fn containerd_socket(&self) -> PathBuf {
        self.path("containerd/containerd.sock")
    }
    pub fn containerd_config(&self) -> PathBuf {
        self.path("containerd/config.toml")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.path("cni/net.d")
    }
    pub fn kubelet_config(&self) -> PathBuf {
        self.path("kubelet/config.yaml")
    }
    pub fn kube_proxy_config(&self) -> PathBuf {
        self.path("kube-proxy/config.yaml")
    }
    pub fn resolv_conf(&self) -> PathBuf {
        self.path("resolv.conf")
    }
    /// Persistent volumes handed out by the local provisioner.
    pub fn volumes(&self) -> PathBuf {
        self.path("volumes")
    }
}

/// The addresses of the link between host and node: a /30 per node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Link {
    /// Which /30: `10.250.<index>.0/30`.
    pub index: u8,
    /// Tells this node's cgroups apart from a later node that reuses the same index, so tearing
    /// down a stale node can never touch another one's processes (the creating process's pid).
    #[serde(default)]
    pub instance: u32,
}

impl Link {
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.index, 1)
    }
    pub fn node_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.index, 2)
    }
    /// The host end of the veth pair (at most 15 characters).
    pub fn host_interface(&self) -> String {
        format!("fjord{}", self.index)
    }
    /// The node end before it moves into the node's namespace (then renamed `eth0`).
    pub fn node_interface_on_host(&self) -> String {
        format!("fjord{}n", self.index)
    }
    /// The cgroup (in every v1 hierarchy) holding the node's processes and all its pods.
    pub fn cgroup_root(&self) -> String {
        format!("fjord-node-{}-{}", self.index, self.instance)
    }
}

/// containerd 2.x (config version 3): private root, state and sockets; CRI restricted to what
/// this VM allows (`restrict_oom_score_adj`: no CAP_SYS_RESOURCE; no AppArmor); cgroupfs.
pub fn containerd_toml(layout: &Layout, runc: &Path, cni_bin: &Path) -> String {
    let p = |rel: &str| layout.path(rel).display().to_string();
    format!(
        r#"version = 3
root = "{root}"
state = "{state}"
oom_score = 0
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.nri.v1.nri",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins]
  [plugins.'io.containerd.cri.v1.runtime']
    enable_cdi = false
    disable_apparmor = true
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = "{runc}"
          Root = "{runc_root}"
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ["{cni_bin}"]
      conf_dir = "{cni_conf}"
      max_conf_num = 1
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = "{pause}"
"#,
        root = p("containerd/root"),
        state = p("containerd/state"),
        socket = layout.containerd_socket().display(),
        runc = runc.display(),
        runc_root = p("runc"),
        cni_bin = cni_bin.display(),
        cni_conf = layout.cni_conf_dir().display(),
        pause = PAUSE_IMAGE,
    )
}

/// One bridge network; no masquerading (nothing leaves the node), IPAM data under the node dir.
pub fn cni_conflist(layout: &Layout) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "fjord",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": POD_CIDR }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": layout.path("cni/ipam").display().to_string(),
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    })
    .to_string()
}

/// KubeletConfiguration: cgroup v1 + cgroupfs in our own subtree, OOM scores left alone,
/// `protectKernelDefaults` (the kubelet only checks kernel sysctls, never writes them), no
/// iptables utility chains, small-disk-friendly eviction and image GC.
pub fn kubelet_yaml(layout: &Layout, link: Link, pki_dir: &Path) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: "{node_ip}"
port: 10250
readOnlyPort: 0
healthzBindAddress: "127.0.0.1"
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: "{ca}"
authorization:
  mode: Webhook
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: "/{cgroup_root}"
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
oomScoreAdj: 0
protectKernelDefaults: true
makeIPTablesUtilChains: false
failSwapOn: false
containerRuntimeEndpoint: "unix://{socket}"
imageServiceEndpoint: "unix://{socket}"
podLogsDir: "{pod_logs}"
resolvConf: "{resolv}"
clusterDomain: cluster.local
clusterDNS: ["{dns}"]
rotateCertificates: false
serializeImagePulls: false
maxPods: 110
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
imageMinimumGCAge: "876000h"
"#,
        node_ip = link.node_ip(),
        ca = pki_dir.join("ca.crt").display(),
        cgroup_root = link.cgroup_root(),
        socket = layout.containerd_socket().display(),
        pod_logs = layout.path("pod-logs").display(),
        resolv = layout.resolv_conf().display(),
        dns = CLUSTER_DNS,
    )
}

/// KubeProxyConfiguration: iptables mode (no IPVS here), and nothing host-wide: conntrack
/// sizing and timeouts left as they are (0 = don't touch), no localhost node ports.
pub fn kube_proxy_yaml(link: Link, kubeconfig: &Path) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: "{kubeconfig}"
mode: iptables
bindAddress: "{node_ip}"
healthzBindAddress: "127.0.0.1:10256"
metricsBindAddress: "127.0.0.1:10249"
clusterCIDR: "{cluster_cidr}"
hostnameOverride: "{node}"
nodePortAddresses: ["{node_ip}/32"]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  masqueradeAll: true
  localhostNodePorts: false
"#,
        kubeconfig = kubeconfig.display(),
        node_ip = link.node_ip(),
        cluster_cidr = CLUSTER_CIDR,
        node = crate::control_plane::pki::NODE_NAME,
    )
}

/// Kernel sysctls the kubelet checks under `protectKernelDefaults` and the values it wants.
/// Where the host differs, the node's own mount namespace sees a file with the wanted value
/// bind-mounted over the sysctl, so the check passes and the host keeps its setting.
pub const KUBELET_SYSCTLS: &[(&str, &str)] = &[
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
];

/// CoreDNS: answers `cluster.local` from the API, forwards nothing (no way out of the VM).
pub fn coredns_manifest(image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: coredns
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:coredns
rules:
- apiGroups: [""]
  resources: ["endpoints", "services", "pods", "namespaces"]
  verbs: ["list", "watch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:coredns
subjects:
- kind: ServiceAccount
  name: coredns
  namespace: kube-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: coredns
  namespace: kube-system
data:
  Corefile: |
    .:53 {{
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {{
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }}
        cache 30
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  replicas: 1
  selector:
    matchLabels: {{k8s-app: kube-dns}}
  template:
    metadata:
      labels: {{k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      priorityClassName: system-cluster-critical
      containers:
      - name: coredns
        image: {image}
        imagePullPolicy: Never
        args: ["-conf", "/etc/coredns/Corefile"]
        ports:
        - {{containerPort: 53, name: dns, protocol: UDP}}
        - {{containerPort: 53, name: dns-tcp, protocol: TCP}}
        readinessProbe:
          httpGet: {{path: /ready, port: 8181}}
          periodSeconds: 2
        livenessProbe:
          httpGet: {{path: /health, port: 8080}}
        resources:
          requests: {{cpu: 10m, memory: 32Mi}}
          limits: {{memory: 128Mi}}
        volumeMounts:
        - {{name: config, mountPath: /etc/coredns, readOnly: true}}
      volumes:
      - name: config
        configMap:
          name: coredns
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  clusterIP: {dns}
  selector: {{k8s-app: kube-dns}}
  ports:
  - {{name: dns, port: 53, protocol: UDP}}
  - {{name: dns-tcp, port: 53, protocol: TCP}}
"#,
        dns = CLUSTER_DNS,
    )
}

/// The default StorageClass, served by `fjord-local-provisioner`.
pub const STORAGE_CLASS_NAME: &str = "fjord-local";
pub const PROVISIONER_NAME: &str = "fjord.dev/local";

pub fn storage_class_manifest() -> String {
    format!(
        r#"apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: {STORAGE_CLASS_NAME}
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: {PROVISIONER_NAME}
reclaimPolicy: Delete
volumeBindingMode: Immediate
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout::new(Path::new("/c"))
    }

    #[test]
    fn link_addresses_and_names() {
        let link = Link {
            index: 7,
            instance: 1,
        };
        assert_eq!(link.host_ip().to_string(), "10.250.7.1");
        assert_eq!(link.node_ip().to_string(), "10.250.7.2");
        assert!(link.host_interface().len() <= 15);
        assert!(link.node_interface_on_host().len() <= 15);
        let link = Link {
            index: 255,
            instance: 1,
        };
        assert!(link.node_interface_on_host().len() <= 15);
    }

    #[test]
    fn containerd_restricts_oom_scores_and_uses_cgroupfs_and_private_paths() {
        let toml = containerd_toml(&layout(), Path::new("/t/runc"), Path::new("/t/cni"));
        assert!(toml.starts_with("version = 3"));
        for needle in [
            "restrict_oom_score_adj = true",
            "SystemdCgroup = false",
            "oom_score = 0",
            "disable_apparmor = true",
            "BinaryName = \"/t/runc\"",
            "root = \"/c/node/containerd/root\"",
            "address = \"/c/node/containerd/containerd.sock\"",
            "sandbox = \"docker.io/library/pause:3.10\"",
        ] {
            assert!(toml.contains(needle), "missing {needle}");
        }
    }

    #[test]
    fn kubelet_never_writes_host_kernel_settings() {
        let yaml = kubelet_yaml(
            &layout(),
            Link {
                index: 0,
                instance: 42,
            },
            Path::new("/c/pki"),
        );
        for needle in [
            "protectKernelDefaults: true",
            "oomScoreAdj: 0",
            "failCgroupV1: false",
            "cgroupDriver: cgroupfs",
            "cgroupRoot: \"/fjord-node-0-42\"",
            "makeIPTablesUtilChains: false",
            "address: \"10.250.0.2\"",
            "readOnlyPort: 0",
        ] {
            assert!(yaml.contains(needle), "missing {needle}");
        }
    }

    #[test]
    fn kube_proxy_leaves_host_conntrack_alone() {
        let yaml = kube_proxy_yaml(
            Link {
                index: 3,
                instance: 1,
            },
            Path::new("/k"),
        );
        for needle in [
            "maxPerCore: 0",
            "min: 0",
            "tcpEstablishedTimeout: 0s",
            "tcpCloseWaitTimeout: 0s",
            "mode: iptables",
            "localhostNodePorts: false",
            "nodePortAddresses: [\"10.250.3.2/32\"]",
        ] {
            assert!(yaml.contains(needle), "missing {needle}");
        }
    }

    #[test]
    fn cni_does_not_masquerade_and_keeps_ipam_private() {
        let json: serde_json::Value = serde_json::from_str(&cni_conflist(&layout())).unwrap();
        let bridge = &json["plugins"][0];
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["ipam"]["dataDir"], "/c/node/cni/ipam");
    }

    #[test]
    fn coredns_forwards_nothing() {
        let manifest = coredns_manifest("localhost/coredns:x");
        assert!(!manifest.contains("forward"));
        assert!(manifest.contains("clusterIP: 10.96.0.10"));
    }
}
