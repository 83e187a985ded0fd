//! A local, real Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager
//! built from upstream by `cargo xtask tools`, listening on 127.0.0.1 only.
//!
//! Everything one control plane owns lives in one directory:
//!
//! ```text
//! <dir>/kubeconfig            admin kubeconfig (system:masters)
//! <dir>/state.json            pids, ports, version: how `down` and reuse find it
//! <dir>/logs/<component>.log  each component's output (logs.previous/ after a restart)
//! <dir>/pki/                  CA, serving and client certificates, service-account key
//! <dir>/etcd-data/            etcd's data; thrown away whenever a fresh control plane starts
//! ```
//!
//! Reuse rule: [`ControlPlane::up`] on a directory whose control plane is running and healthy
//! returns it as is; one left behind by a killed run is discarded and started afresh.

pub mod pki;
pub mod ports;
pub mod process;

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use ports::{Ports, Requested};
pub use process::Lifetime;

use crate::tools::{Tools, KUBERNETES_VERSION};

/// The Service IP range. Without a node only the apiserver uses it (it allocates the
/// `kubernetes` Service's ClusterIP from it); with a node, kube-proxy routes it inside the node.
pub const SERVICE_CLUSTER_IP_RANGE: &str = "10.96.0.0/12";
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";

/// How to start a control plane.
#[derive(Debug, Clone)]
pub struct Options {
    pub dir: PathBuf,
    pub lifetime: Lifetime,
    pub apiserver_port: Requested,
    pub etcd_port: Requested,
    /// Upper bound for each component to become ready.
    pub start_timeout: Duration,
    /// For a cluster with a node: the host's address on the link to the node. The apiserver
    /// binds and advertises it (pods reach it through the `kubernetes` Service), and
    /// kube-scheduler runs too. `None`: loopback only, no scheduler.
    pub node_link: Option<std::net::Ipv4Addr>,
}

impl Options {
    pub fn new(dir: PathBuf, lifetime: Lifetime) -> Options {
        Options {
            dir,
            lifetime,
            apiserver_port: Requested {
                port: None,
                flag: "--apiserver-port",
            },
            etcd_port: Requested {
                port: None,
                flag: "--etcd-port",
            },
            start_timeout: Duration::from_secs(120),
            node_link: None,
        }
    }
}

/// One started component, as recorded in `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Component {
    pub name: String,
    pub pid: u32,
    pub log: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    kubernetes_version: String,
    lifetime: Lifetime,
    /// The process that started the control plane.
    owner_pid: u32,
    apiserver_url: String,
    ports: Ports,
    components: Vec<Component>,
    /// False until every component passed its readiness check.
    ready: bool,
}

/// A running control plane.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub apiserver_url: String,
    pub components: Vec<Component>,
    pub lifetime: Lifetime,
    /// True when an already running control plane was found and reused.
    pub reused: bool,
}

/// The default directory of the control plane started by hand (`cargo xtask cluster up`):
/// `$FJORD_CLUSTER_DIR`, else `<workspace>/target/fjord-cluster`.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FJORD_CLUSTER_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    target_dir().join("fjord-cluster")
}

/// The workspace's Cargo target directory.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() {
            dir
        } else {
            workspace_root().join(dir)
        };
    }
    workspace_root().join("target")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

impl ControlPlane {
    /// Returns the healthy control plane running in `options.dir`, or starts a fresh one there.
    pub fn up(options: &Options) -> Result<ControlPlane> {
        let tools = Tools::require()?;
        std::fs::create_dir_all(&options.dir)
            .with_context(|| format!("creating {}", options.dir.display()))?;
        let _lock = DirLock::acquire(&options.dir, Duration::from_secs(300))?;

        if let Some(state) = read_state(&options.dir) {
            match inspect(&tools, &options.dir, &state) {
                Health::Healthy => return Ok(ControlPlane::from_state(&options.dir, state, true)),
                Health::PartlyRunning(alive) => {
                    let dir_flag = if options.dir == default_dir() {
                        String::new()
                    } else {
                        format!(" --dir {}", options.dir.display())
                    };
                    bail!(
                        "the control plane in {} is partly running ({alive}) but not healthy: run \
                         `cargo xtask cluster down{dir_flag}` and retry",
                        options.dir.display()
                    )
                }
                Health::Stopped => eprintln!(
                    "note: discarding the data of a control plane in {} that is no longer running \
                     (killed run?); starting a fresh one",
                    options.dir.display()
                ),
            }
        }
        discard_previous_run(&options.dir)?;
        let ports = Ports::choose(options.apiserver_port, options.etcd_port)?;
        let mut starter = Starter::new(&tools, options, ports);
        match starter.start_all() {
            Ok(()) => {
                starter.state.ready = true;
                write_state(&options.dir, &starter.state)?;
                Ok(ControlPlane::from_state(
                    &options.dir,
                    starter.state.clone(),
                    false,
                ))
            }
            Err(error) => {
                starter.stop_started();
                let _ = std::fs::remove_file(options.dir.join("state.json"));
                Err(error)
            }
        }
    }

    /// The healthy control plane running in `dir`, if there is one.
    pub fn find_running(dir: &Path) -> Option<ControlPlane> {
        let tools = Tools::require().ok()?;
        let state = read_state(dir)?;
        match inspect(&tools, dir, &state) {
            Health::Healthy => Some(ControlPlane::from_state(dir, state, true)),
            _ => None,
        }
    }

    /// Stops the control plane in `dir` (if any) and removes its data; logs are kept.
    /// Returns the names of the components that were still running.
    pub fn down(dir: &Path) -> Result<Vec<String>> {
        let _lock = DirLock::acquire(dir, Duration::from_secs(300))?;
        let mut stopped = Vec::new();
        if let Some(state) = read_state(dir) {
            // Reverse start order: the controller-manager first, etcd last.
            for component in state.components.iter().rev() {
                if process::is_ours_and_alive(component.pid, dir) {
                    process::stop(component.pid, dir, Duration::from_secs(15));
                    stopped.push(format!("{} (pid {})", component.name, component.pid));
                }
            }
        }
        for stale in [
            "state.json",
            "etcd-data",
            "pki",
            "kubeconfig",
            "kube-controller-manager.kubeconfig",
            "kube-scheduler.kubeconfig",
        ] {
            remove_path(&dir.join(stale))?;
        }
        Ok(stopped)
    }

    fn from_state(dir: &Path, state: State, reused: bool) -> ControlPlane {
        ControlPlane {
            dir: dir.to_path_buf(),
            kubeconfig: dir.join("kubeconfig"),
            apiserver_url: state.apiserver_url,
            components: state.components,
            lifetime: state.lifetime,
            reused,
        }
    }

    /// Each component's log path and last `lines` lines, for printing when a test fails.
    pub fn log_report(&self, lines: usize) -> String {
        components_report(&self.components, lines)
    }
}

/// Each component's name, pid, log path and last `lines` lines of its log.
pub fn components_report(components: &[Component], lines: usize) -> String {
    let mut report = String::new();
    for component in components {
        report += &format!(
            "----- {} (pid {}), last {lines} lines of {} -----\n{}\n",
            component.name,
            component.pid,
            component.log.display(),
            process::log_tail(&component.log, lines)
        );
    }
    report
}

enum Health {
    Healthy,
    /// Some components are alive (listed), the rest gone or the apiserver not ready.
    PartlyRunning(String),
    Stopped,
}

fn inspect(tools: &Tools, dir: &Path, state: &State) -> Health {
    let alive: Vec<&Component> = state
        .components
        .iter()
        .filter(|c| process::is_ours_and_alive(c.pid, dir))
        .collect();
    if alive.is_empty() {
        return Health::Stopped;
    }
    let all_alive = alive.len() == state.components.len();
    let listing = || {
        alive
            .iter()
            .map(|c| format!("{} pid {}", c.name, c.pid))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !all_alive || !state.ready {
        return Health::PartlyRunning(listing());
    }
    if state.kubernetes_version != KUBERNETES_VERSION {
        return Health::PartlyRunning(format!(
            "{}; it runs {} but the tools are {KUBERNETES_VERSION}",
            listing(),
            state.kubernetes_version
        ));
    }
    match kubectl(tools, &dir.join("kubeconfig"), &["get", "--raw", "/readyz"]) {
        Ok(_) => Health::Healthy,
        Err(reason) => Health::PartlyRunning(format!("{}; /readyz: {reason}", listing())),
    }
}

/// Starts the components in order, recording each pid as soon as it exists so that a run killed
/// half-way still leaves a state file `down` can clean up after.
struct Starter<'a> {
    tools: &'a Tools,
    options: &'a Options,
    state: State,
    children: Vec<Child>,
}

impl<'a> Starter<'a> {
    fn new(tools: &'a Tools, options: &'a Options, ports: Ports) -> Starter<'a> {
        Starter {
            tools,
            options,
            state: State {
                kubernetes_version: KUBERNETES_VERSION.to_string(),
                lifetime: options.lifetime,
                owner_pid: std::process::id(),
                apiserver_url: format!(
                    "https://{}:{}",
                    options
                        .node_link
                        .map(|ip| ip.to_string())
                        .unwrap_or_else(|| "127.0.0.1".into()),
                    ports.apiserver
                ),
                ports,
                components: Vec::new(),
                ready: false,
            },
            children: Vec::new(),
        }
    }

    fn dir(&self) -> &Path {
        &self.options.dir
    }

    fn start_all(&mut self) -> Result<()> {
        let dir = self.dir().to_path_buf();
        std::fs::create_dir_all(dir.join("logs"))?;
        let link: Vec<String> = self
            .options
            .node_link
            .iter()
            .map(|ip| ip.to_string())
            .collect();
        let bind = link.first().cloned().unwrap_or_else(|| "127.0.0.1".into());
        let pki = pki::generate(&dir.join("pki"), KUBERNETES_SERVICE_IP, &link)?;
        let ports = self.state.ports;
        let url = self.state.apiserver_url.clone();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            pki::kubeconfig(&url, &pki.ca_cert, &pki.admin, "fjord-admin"),
        )?;
        let kcm_kubeconfig = dir.join("kube-controller-manager.kubeconfig");
        std::fs::write(
            &kcm_kubeconfig,
            pki::kubeconfig(
                &url,
                &pki.ca_cert,
                &pki.controller_manager,
                "system:kube-controller-manager",
            ),
        )?;
        let path = |p: &Path| p.display().to_string();

        let etcd_client = format!("http://127.0.0.1:{}", ports.etcd_client);
        let etcd_peer = format!("http://127.0.0.1:{}", ports.etcd_peer);
        self.spawn(
            "etcd",
            vec![
                "--name=fjord-e2e".into(),
                format!("--data-dir={}", path(&dir.join("etcd-data"))),
                format!("--listen-client-urls={etcd_client}"),
                format!("--advertise-client-urls={etcd_client}"),
                format!("--listen-peer-urls={etcd_peer}"),
                format!("--initial-advertise-peer-urls={etcd_peer}"),
                format!("--initial-cluster=fjord-e2e={etcd_peer}"),
                "--initial-cluster-state=new".into(),
                // Test data is thrown away: skipping fsync makes every API write much cheaper.
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
        )?;
        self.wait_until("etcd", || etcd_healthy(ports.etcd_client))?;

        self.spawn(
            "kube-apiserver",
            vec![
                format!("--bind-address={bind}"),
                format!("--advertise-address={bind}"),
                format!("--secure-port={}", ports.apiserver),
                // Logs, exec and port-forward dial the kubelet: by its address, not by a
                // hostname the host cannot resolve.
                "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
                format!("--etcd-servers={etcd_client}"),
                format!("--cert-dir={}", path(&dir.join("pki"))),
                format!("--tls-cert-file={}", path(&pki.apiserver_cert)),
                format!("--tls-private-key-file={}", path(&pki.apiserver_key)),
                format!("--client-ca-file={}", path(&pki.ca_cert)),
                format!(
                    "--kubelet-client-certificate={}",
                    path(&pki.apiserver_kubelet_client.cert)
                ),
                format!(
                    "--kubelet-client-key={}",
                    path(&pki.apiserver_kubelet_client.key)
                ),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!(
                    "--service-account-key-file={}",
                    path(&pki.service_account_pub)
                ),
                format!(
                    "--service-account-signing-key-file={}",
                    path(&pki.service_account_key)
                ),
                // Aggregation layer: without a request-header CA every delegating component
                // (the controller-manager too) logs errors about the missing bundle.
                format!("--requestheader-client-ca-file={}", path(&pki.ca_cert)),
                format!("--requestheader-allowed-names={}", pki::FRONT_PROXY_CLIENT),
                "--requestheader-username-headers=X-Remote-User".into(),
                "--requestheader-group-headers=X-Remote-Group".into(),
                "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
                format!(
                    "--proxy-client-cert-file={}",
                    path(&pki.front_proxy_client.cert)
                ),
                format!(
                    "--proxy-client-key-file={}",
                    path(&pki.front_proxy_client.key)
                ),
                "--authorization-mode=Node,RBAC".into(),
                // The `kubernetes` Service's Endpoints cannot hold a loopback address (validation
                // rejects it, every 10 s, in the log): without a node nothing in-cluster calls the
                // apiserver, so no endpoints. With a node they name the link address pods reach.
                format!(
                    "--endpoint-reconciler-type={}",
                    if self.options.node_link.is_some() {
                        "lease"
                    } else {
                        "none"
                    }
                ),
                format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
                "--allow-privileged=true".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
        )?;
        let tools = self.tools;
        self.wait_until("kube-apiserver", || {
            kubectl(tools, &kubeconfig, &["get", "--raw", "/readyz"])?;
            kubectl(
                tools,
                &kubeconfig,
                &["get", "namespace", "default", "-o", "name"],
            )
            .map(|_| ())
        })?;

        self.spawn(
            "kube-controller-manager",
            vec![
                format!("--kubeconfig={}", path(&kcm_kubeconfig)),
                format!("--authentication-kubeconfig={}", path(&kcm_kubeconfig)),
                format!("--authorization-kubeconfig={}", path(&kcm_kubeconfig)),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", ports.controller_manager),
                format!(
                    "--cert-dir={}",
                    path(&dir.join("pki").join("kube-controller-manager"))
                ),
                // One instance per directory: leader election would only add a lease round-trip.
                "--leader-elect=false".into(),
                "--controllers=*".into(),
                "--use-service-account-credentials=true".into(),
                format!(
                    "--service-account-private-key-file={}",
                    path(&pki.service_account_key)
                ),
                format!("--root-ca-file={}", path(&pki.ca_cert)),
                format!("--cluster-signing-cert-file={}", path(&pki.ca_cert)),
                format!("--cluster-signing-key-file={}", path(&pki.ca_key)),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
        )?;
        // The service-account controller creating `default` in `default` proves the
        // controller-manager runs its controllers against this apiserver.
        self.wait_until("kube-controller-manager", || {
            kubectl(
                tools,
                &kubeconfig,
                &[
                    "-n",
                    "default",
                    "get",
                    "serviceaccount",
                    "default",
                    "-o",
                    "name",
                ],
            )
            .map(|_| ())
        })?;
        if self.options.node_link.is_none() {
            return Ok(());
        }
        let scheduler_kubeconfig = dir.join("kube-scheduler.kubeconfig");
        std::fs::write(
            &scheduler_kubeconfig,
            pki::kubeconfig(&url, &pki.ca_cert, &pki.scheduler, "system:kube-scheduler"),
        )?;
        self.spawn(
            "kube-scheduler",
            vec![
                format!("--kubeconfig={}", path(&scheduler_kubeconfig)),
                format!(
                    "--authentication-kubeconfig={}",
                    path(&scheduler_kubeconfig)
                ),
                format!("--authorization-kubeconfig={}", path(&scheduler_kubeconfig)),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", ports.scheduler),
                "--leader-elect=false".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
        )?;
        // The scheduler has no readiness the apiserver can see before a pod needs it; its
        // own process staying up for a moment is the check (a bad flag exits at once).
        let started = Instant::now();
        self.wait_until("kube-scheduler", || {
            if started.elapsed() > Duration::from_secs(1) {
                Ok(())
            } else {
                Err("starting".into())
            }
        })
    }

    fn spawn(&mut self, name: &str, args: Vec<String>) -> Result<()> {
        let log = self.dir().join("logs").join(format!("{name}.log"));
        let child = process::spawn(&self.tools.binary(name), &args, &log, self.options.lifetime)?;
        self.state.components.push(Component {
            name: name.to_string(),
            pid: child.id(),
            log,
        });
        self.children.push(child);
        write_state(self.dir(), &self.state)
    }

    /// Polls `ready` until it succeeds, the component exits, or the start timeout passes.
    fn wait_until(
        &mut self,
        name: &str,
        mut ready: impl FnMut() -> std::result::Result<(), String>,
    ) -> Result<()> {
        let deadline = Instant::now() + self.options.start_timeout;
        let index = self.children.len() - 1;
        let log = self.state.components[index].log.clone();
        loop {
            if let Some(status) = self.children[index].try_wait()? {
                let summary = process::failure_summary(&log);
                let hint = if summary.contains("address already in use") {
                    " — another process took its port; retry, or pass a free port"
                } else {
                    ""
                };
                bail!(
                    "{name} exited during start-up ({status}): {summary}{hint} (log: {})",
                    log.display()
                );
            }
            let reason = match ready() {
                Ok(()) => return Ok(()),
                Err(reason) => reason,
            };
            if Instant::now() >= deadline {
                bail!(
                    "{name} did not become ready within {:?}: {reason} (log: {})",
                    self.options.start_timeout,
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn stop_started(&mut self) {
        for child in self.children.iter_mut().rev() {
            process::stop(child.id(), &self.options.dir, Duration::from_secs(10));
            let _ = child.wait();
        }
    }
}

/// Runs the provisioned kubectl against `kubeconfig`; every call is bounded in time.
pub fn kubectl(
    tools: &Tools,
    kubeconfig: &Path,
    args: &[&str],
) -> std::result::Result<String, String> {
    let mut command = Command::new(tools.kubectl());
    command
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg("--request-timeout=5s")
        .args(args);
    process::run_with_timeout(&mut command, Duration::from_secs(15))
}

/// etcd's `/health` over plain HTTP on loopback.
fn etcd_healthy(port: u16) -> std::result::Result<(), String> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout)
        .map_err(|e| format!("connecting to 127.0.0.1:{port}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    if response.contains("\"health\":\"true\"") {
        Ok(())
    } else {
        Err(format!(
            "/health answered {:?}",
            response.lines().last().unwrap_or("")
        ))
    }
}

fn read_state(dir: &Path) -> Option<State> {
    let text = std::fs::read_to_string(dir.join("state.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_state(dir: &Path, state: &State) -> Result<()> {
    let tmp = dir.join("state.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
    std::fs::rename(&tmp, dir.join("state.json"))?;
    Ok(())
}

/// Removes what a previous run left, keeping its logs in `logs.previous/` for a post-mortem.
fn discard_previous_run(dir: &Path) -> Result<()> {
    for stale in ["state.json", "etcd-data", "pki", "logs.previous"] {
        remove_path(&dir.join(stale))?;
    }
    if dir.join("logs").exists() {
        std::fs::rename(dir.join("logs"), dir.join("logs.previous"))?;
    }
    Ok(())
}

fn remove_path(path: &Path) -> Result<()> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow!("removing {}: {e}", path.display()))
        }
        _ => Ok(()),
    }
}

/// An exclusive `flock` on `<dir>/lock`: one `up` or `down` at a time per directory.
struct DirLock {
    _file: File,
}

impl DirLock {
    fn acquire(dir: &Path, timeout: Duration) -> Result<DirLock> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("lock");
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let deadline = Instant::now() + timeout;
        loop {
            // SAFETY: flock on a file descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(DirLock { _file: file });
            }
            if Instant::now() >= deadline {
                bail!(
                    "another `cluster up`/`down` has held {} for {timeout:?}; wait for it or stop it",
                    path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
