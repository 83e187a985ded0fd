//! End-to-end scenarios on the local cluster with a real node: one namespace per scenario, the
//! operator installed into it with Helm (from `charts/fjord-operator`, watching only that
//! namespace), our images running in pods.
//!
//! Which cluster: the one running in `target/fjord-cluster` (`cargo xtask cluster up`, which
//! `cargo xtask test` starts once per run), else one started there on first use and left running
//! for the next run (`cargo xtask cluster down` stops it). Images come from `target/images`
//! (`cargo xtask image`). On failure a scenario prints component logs, `kubectl describe` of its
//! pods, its events and the operator's log.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, Resource};

use crate::cluster::Cluster;
use crate::control_plane::{self, process};
use crate::fixture::{client_for, poll_until, NAMESPACE_LABEL};
use crate::tools::Tools;

static CLUSTER: OnceLock<std::result::Result<Cluster, String>> = OnceLock::new();
static CRDS: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// The image archives `cargo xtask image` writes.
pub fn image_archives() -> Vec<PathBuf> {
    let dir = control_plane::target_dir().join("images");
    let mut archives: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".oci.tar"))
                .collect()
        })
        .unwrap_or_default();
    archives.sort();
    archives
}

/// The cluster with a node, started on first call if none runs (blocking, about a minute).
pub fn cluster() -> Result<&'static Cluster> {
    CLUSTER
        .get_or_init(|| start_or_reuse().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

fn start_or_reuse() -> Result<Cluster> {
    Tools::require()?;
    Tools::require_node()?;
    let dir = control_plane::default_dir();
    if let Some(running) = Cluster::find_running(&dir) {
        return Ok(running);
    }
    let images = image_archives();
    if images.is_empty() {
        bail!(
            "no images in {}: run `cargo xtask image` first (or `cargo xtask test`, which does)",
            control_plane::target_dir().join("images").display()
        );
    }
    eprintln!(
        "note: starting a local cluster with a node in {} for the end-to-end tests; it keeps \
         running for later runs (`cargo xtask cluster down` stops it)",
        dir.display()
    );
    Cluster::up(&dir, &images)
}

/// The repository root (charts, examples, crds).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

/// The Pod Security admission label that makes the API server enforce a standard.
pub const POD_SECURITY_LABEL: &str = "pod-security.kubernetes.io/enforce";

/// One scenario's namespace on the cluster with a node.
pub struct Scenario {
    pub client: Client,
    pub namespace: String,
    pub cluster: &'static Cluster,
    helm_releases: std::sync::Mutex<Vec<String>>,
}

impl Scenario {
    async fn new(test_name: &str) -> Result<Scenario> {
        let cluster = tokio::task::spawn_blocking(cluster).await??;
        let client = client_for(&cluster.control_plane.kubeconfig).await?;
        let namespace = crate::fixture::unique_namespace_name(test_name);
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: ObjectMeta {
                        name: Some(namespace.clone()),
                        // Every scenario runs under the `restricted` Pod Security Standard:
                        // the API server refuses any pod (broker, operator) that would not pass.
                        labels: Some(
                            [
                                (NAMESPACE_LABEL.to_string(), "true".to_string()),
                                (POD_SECURITY_LABEL.to_string(), "restricted".to_string()),
                            ]
                            .into(),
                        ),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("creating namespace {namespace}"))?;
        let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &namespace);
        poll_until(
            Duration::from_secs(30),
            "the namespace's default ServiceAccount",
            || async { Ok(accounts.get_opt("default").await?.is_some()) },
        )
        .await?;
        Ok(Scenario {
            client,
            namespace,
            cluster,
            helm_releases: Default::default(),
        })
    }

    /// Runs `body` in a fresh namespace; on error prints diagnostics and fails the test.
    pub async fn run<F, Fut>(test_name: &str, body: F)
    where
        F: FnOnce(std::sync::Arc<Scenario>) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let scenario = match Scenario::new(test_name).await {
            Ok(scenario) => std::sync::Arc::new(scenario),
            Err(error) => panic!("{test_name}: test fixture failed: {error:#}"),
        };
        let result = body(scenario.clone()).await;
        if let Err(error) = result {
            // The cause first and last: CI excerpts keep a log's head and tail, and the
            // diagnostics in between run to hundreds of lines.
            eprintln!(
                "{test_name} FAILED in namespace {}: {error:#}",
                scenario.namespace
            );
            eprintln!("{}", scenario.diagnostics());
            panic!(
                "{test_name} failed in namespace {}: {error:#}\n(cluster: {})",
                scenario.namespace,
                scenario.cluster.control_plane.dir.display()
            );
        }
    }

    /// A namespaced API handle for this scenario's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// kubectl against the cluster, in this namespace unless `args` say otherwise.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let tools = Tools::require()?;
        let mut command = Command::new(tools.kubectl());
        command
            .arg(format!(
                "--kubeconfig={}",
                self.cluster.control_plane.kubeconfig.display()
            ))
            .args(["-n", &self.namespace])
            .args(args);
        process::run_with_timeout(&mut command, Duration::from_secs(120))
            .map_err(|e| anyhow!("kubectl {}: {e}", args.join(" ")))
    }

    /// helm against the cluster, in this namespace.
    pub fn helm(&self, args: &[&str]) -> Result<String> {
        let tools = Tools::require()?;
        let mut command = Command::new(tools.binary("helm"));
        command
            .env("KUBECONFIG", &self.cluster.control_plane.kubeconfig)
            .env("HELM_CACHE_HOME", helm_home().join("cache"))
            .env("HELM_CONFIG_HOME", helm_home().join("config"))
            .env("HELM_DATA_HOME", helm_home().join("data"))
            .args(["--namespace", &self.namespace])
            .args(args);
        process::run_with_timeout(&mut command, Duration::from_secs(300))
            .map_err(|e| anyhow!("helm {}: {e}", args.join(" ")))
    }

    /// Installs the operator chart into this namespace, watching only it (the CRDs are applied
    /// once per test process, outside the release, so releases don't fight over them), and waits
    /// until the operator pod is ready. Returns the release name.
    pub async fn install_operator(&self) -> Result<String> {
        CRDS.get_or_try_init(|| async {
            let crds = repo_root().join("crds");
            self.kubectl(&[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                &crds.display().to_string(),
            ])?;
            for crd in ["kafkas", "kafkatopics", "kafkausers"] {
                self.kubectl(&[
                    "wait",
                    "--for=condition=Established",
                    "--timeout=60s",
                    &format!("crd/{crd}.kafka.fjord.dev"),
                ])?;
            }
            Ok::<(), anyhow::Error>(())
        })
        .await?;
        // Cluster-scoped objects (the Nodes ClusterRole) are named after the release, so each
        // scenario's release needs its own name: the namespace's unique suffix.
        let suffix = self.namespace.rsplit('-').next().unwrap_or("e2e");
        let release = format!("fjord-{suffix}");
        let chart = repo_root().join("charts").join("fjord-operator");
        self.helm(&[
            "install",
            &release,
            &chart.display().to_string(),
            "--set",
            &format!("watchNamespace={}", self.namespace),
            "--set",
            "crds.install=false",
            "--wait",
            "--timeout",
            "180s",
        ])?;
        self.helm_releases.lock().unwrap().push(release.clone());
        Ok(release)
    }

    /// Uninstalls Helm release `release` (of this namespace) when the scenario ends, whatever
    /// the outcome, as for the operator's release.
    pub fn uninstall_at_end(&self, release: &str) {
        self.helm_releases.lock().unwrap().push(release.to_string());
    }

    /// Waits until the Kafka resource `name` reports Ready=True.
    /// On timeout the error carries the last Ready condition seen, which says what is missing.
    pub async fn wait_kafka_ready(&self, name: &str, timeout: Duration) -> Result<()> {
        let last_seen = Mutex::new(String::new());
        let waited = poll_until(timeout, &format!("Kafka {name} Ready"), || async {
            let condition = self.kubectl(&[
                "get",
                "kafka",
                name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")]}",
            ])?;
            let ready = condition.contains(r#""status":"True""#);
            *last_seen.lock().unwrap() = condition;
            Ok(ready)
        })
        .await;
        waited.with_context(|| {
            format!(
                "last Ready condition of Kafka {name}: {}",
                last_seen.lock().unwrap()
            )
        })
    }

    /// `bootstrapServers` of the Kafka's listener `listener` from its status.
    pub fn bootstrap_servers(&self, kafka: &str, listener: &str) -> Result<String> {
        let servers = self.kubectl(&[
            "get",
            "kafka",
            kafka,
            "-o",
            &format!("jsonpath={{.status.listeners[?(@.name==\"{listener}\")].bootstrapServers}}"),
        ])?;
        let servers = servers.trim().to_string();
        if servers.is_empty() {
            bail!("Kafka {kafka} reports no bootstrapServers for listener {listener} yet");
        }
        Ok(servers)
    }

    /// Component logs, pods described, events, and the operator's and brokers' logs.
    pub fn diagnostics(&self) -> String {
        let mut report = self.cluster.log_report(20);
        for (what, args) in [
            (
                "node conditions and taints",
                vec![
                    "get",
                    "nodes",
                    "-o",
                    "jsonpath={range .items[*]}{.metadata.name} {.spec.taints} {range .status.conditions[*]}{.type}={.status} {end}{\"\\n\"}{end}",
                ],
            ),
            ("pods", vec!["get", "pods", "-o", "wide"]),
            (
                "kafka",
                vec!["get", "kafka,kafkatopic,kafkauser", "-o", "yaml"],
            ),
            ("describe pods", vec!["describe", "pods"]),
            ("events", vec!["get", "events", "--sort-by=.lastTimestamp"]),
            (
                "operator log",
                vec![
                    "logs",
                    "-l",
                    "app.kubernetes.io/name=fjord-operator",
                    "--tail=80",
                ],
            ),
            (
                "broker logs",
                vec![
                    "logs",
                    "-l",
                    "app.kubernetes.io/name=kafka",
                    "--all-containers",
                    "--prefix",
                    "--max-log-requests=20",
                    "--tail=40",
                ],
            ),
            (
                "logs of restarted broker containers",
                vec![
                    "logs",
                    "-l",
                    "app.kubernetes.io/name=kafka",
                    "--all-containers",
                    "--prefix",
                    "--previous",
                    "--max-log-requests=20",
                    "--tail=20",
                ],
            ),
        ] {
            let text = self.kubectl(&args).unwrap_or_else(|e| format!("{e:#}"));
            report += &format!("----- {what} in {} -----\n{text}\n", self.namespace);
        }
        // A panic scrolls out of the tails above behind the errors it causes elsewhere: look
        // for it in the whole logs.
        let whole = self
            .kubectl(&[
                "logs",
                "-l",
                "app.kubernetes.io/name=kafka",
                "--all-containers",
                "--prefix",
                "--max-log-requests=20",
                "--tail=-1",
            ])
            .unwrap_or_default();
        report += &format!(
            "----- panics in broker logs in {} -----\n{}\n",
            self.namespace,
            panic_lines(&whole)
        );
        report
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let releases: Vec<String> = self.helm_releases.lock().unwrap().drain(..).collect();
        // KafkaTopics and KafkaUsers carry the operator's finalizer: delete them while the
        // operator still runs, and drop the finalizer of any it did not release in time, or the
        // namespace stays Terminating for ever once the operator is gone.
        if !releases.is_empty() {
            let _ = self.kubectl(&[
                "delete",
                "kafkatopics,kafkausers",
                "--all",
                "--wait=true",
                "--timeout=60s",
            ]);
        }
        let left = self
            .kubectl(&["get", "kafkatopics,kafkausers", "-o", "name"])
            .unwrap_or_default();
        for object in left.split_whitespace() {
            let _ = self.kubectl(&[
                "patch",
                object,
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ]);
        }
        // Releases before the namespace: a namespace-scoped release still owns a cluster-scoped
        // role binding.
        for release in releases {
            let _ = self.helm(&["uninstall", &release]);
        }
        let _ = self.kubectl(&["delete", "namespace", &self.namespace, "--wait=false"]);
    }
}

fn helm_home() -> PathBuf {
    control_plane::target_dir().join("helm-home")
}

/// The lines of `log` that report a panic (a thread's panic message and the three lines after
/// it), not the errors other nodes log about it.
fn panic_lines(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.contains("panicked at") {
            out.extend(lines[i..(i + 4).min(lines.len())].iter().copied());
        }
    }
    out.join("\n")
}
