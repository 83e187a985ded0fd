//! Shared support for the operator's integration tests: CRD installation, the operator's
//! controllers running in-process against the real control plane, a real fjord broker, and
//! Apache Kafka's own CLI tools for checking what the brokers hold.
//!
//! Tests whose broker pods must really run use [`run_on_node`]: they need the local cluster with
//! a node (`cargo xtask cluster up`, which `cargo xtask test` starts), and fail, never skip, when
//! only a control plane runs. The operator runs on the host, which reaches the brokers only
//! through node ports: [`reachable_from_host`] gives a Kafka a nodeport listener with fixed node
//! ports and points the operator's admin connection at it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use fjord_e2e::cluster::Cluster;
use fjord_e2e::control_plane::{self, ControlPlane};
use fjord_e2e::fixture::{poll_until, TestNamespace};
use fjord_operator::metrics::Metrics;
use fjord_operator::reconcile::Context;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::runtime::wait::{await_condition, conditions};

pub const WAIT: Duration = Duration::from_secs(60);

/// How long brokers get to come Ready on the node: its two cores are shared with the control
/// plane and with the pods of every test running at the same time.
pub const READY_WAIT: Duration = Duration::from_secs(240);

/// Fixed node ports, one block per test that needs them: node ports are cluster-wide and the
/// tests of all binaries run at the same time. The blocks lie in the node port range's static
/// band (30000-30085), which Kubernetes hands to Services without a fixed port only once the
/// rest of the range is used up. A block is the bootstrap port followed by one port per broker.
pub mod node_ports {
    /// kafka_cluster.rs `kafka_resource_becomes_a_statefulset_and_its_companions` (3 brokers).
    pub const KAFKA_OBJECTS: i32 = 30010;
}

/// Like [`TestNamespace::run`], for tests whose broker pods must really run: the namespace must
/// be on the local cluster with a node, else the test fails (it is never skipped) saying to run
/// `cargo xtask cluster up`. `body` also gets the node's InternalIP, where node ports are reached.
pub async fn run_on_node<F, Fut>(test_name: &str, body: F)
where
    F: FnOnce(TestNamespace, String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    // Checked before the fixture picks a control plane, so that a missing node is reported
    // right away instead of after starting a private control plane without one.
    let cluster = match tokio::task::spawn_blocking(cluster_with_node).await {
        Ok(Ok(cluster)) => cluster,
        Ok(Err(error)) => panic!("{test_name}: {error:#}"),
        Err(error) => panic!("{test_name}: {error}"),
    };
    TestNamespace::run(test_name, |ns| async move {
        ensure!(
            ns.control_plane.dir == cluster.control_plane.dir,
            "this test process uses the control plane in {} (no node), not the cluster with a \
             node in {} (started after this process picked its control plane?): run `cargo \
             xtask cluster up` before the tests",
            ns.control_plane.dir.display(),
            cluster.control_plane.dir.display()
        );
        let node_ip = node_internal_ip(&ns.client).await?;
        warn_about_cluster_wide_operators(&ns.client).await;
        body(ns, node_ip).await
    })
    .await;
}

/// The running local cluster with a node (the one the fixture reuses), or an error saying how
/// to start it.
pub fn cluster_with_node() -> Result<Cluster> {
    let dir = control_plane::default_dir();
    if let Some(cluster) = Cluster::find_running(&dir) {
        return Ok(cluster);
    }
    let (what, fix) = if ControlPlane::find_running(&dir).is_some() {
        (
            format!(
                "the cluster running in {} has no node (started with `cargo xtask cluster up \
                 --control-plane`?)",
                dir.display()
            ),
            "`cargo xtask cluster down`, then `cargo xtask cluster up`",
        )
    } else {
        (
            format!(
                "no cluster is running in {} (without one the fixture starts a private control \
                 plane, which has no node)",
                dir.display()
            ),
            "`cargo xtask cluster up`",
        )
    };
    Err(anyhow!(
        "this test needs broker pods that really run, on the local cluster with a node, but \
         {what}: run {fix}, or run the tests with `cargo xtask test`, which starts the cluster"
    ))
}

/// The operator these tests run in-process must be the only one reconciling their namespace. An
/// operator installed in the shared cluster watching all namespaces (Helm `watchNamespace`
/// unset) reconciles the tests' resources too; name it, as the likely cause of odd failures.
async fn warn_about_cluster_wide_operators(client: &kube::Client) {
    let deployments = Api::<k8s_openapi::api::apps::v1::Deployment>::all(client.clone());
    let Ok(list) = deployments
        .list(&ListParams::default().labels("app.kubernetes.io/name=fjord-operator"))
        .await
    else {
        return;
    };
    for deployment in list {
        let cluster_wide = deployment
            .spec
            .iter()
            .flat_map(|s| s.template.spec.iter())
            .flat_map(|p| p.containers.iter())
            .flat_map(|c| c.env.iter().flatten())
            .any(|e| e.name == "WATCH_NAMESPACE" && e.value.as_deref().unwrap_or("").is_empty());
        if cluster_wide {
            eprintln!(
                "warning: the operator Deployment {}/{} watches all namespaces, so it reconciles \
                 this test's resources too, alongside the in-process operator",
                deployment.metadata.namespace.unwrap_or_default(),
                deployment.metadata.name.unwrap_or_default()
            );
        }
    }
}

/// The InternalIP of the local cluster's node, which must be Ready.
pub async fn node_internal_ip(client: &kube::Client) -> Result<String> {
    let name = control_plane::pki::NODE_NAME;
    let node = Api::<Node>::all(client.clone())
        .get_opt(name)
        .await?
        .with_context(|| format!("the cluster has no Node {name}: run `cargo xtask cluster up`"))?;
    let status = node.status.unwrap_or_default();
    let ready = status
        .conditions
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    ensure!(
        ready,
        "Node {name} is not Ready: the local cluster is broken (`cargo xtask cluster down` then \
         `cargo xtask cluster up`)"
    );
    status
        .addresses
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address)
        .with_context(|| format!("Node {name} reports no InternalIP"))
}

/// `manifest` (one Kafka) with a nodeport listener `external` on port 9094 whose node ports are
/// fixed (bootstrap `base`, broker n `base + 1 + n`; see [`node_ports`]) and the
/// `kafka.fjord.dev/admin-bootstrap` annotation sending the in-process operator's admin
/// connection to `<node_ip>:<base>`. Waits until no Service elsewhere holds those node ports
/// (an earlier run's namespace may still be going away).
pub async fn reachable_from_host(
    ns: &TestNamespace,
    node_ip: &str,
    manifest: &str,
    base: i32,
) -> Result<String> {
    let mut kafka: serde_json::Value = serde_yaml::from_str(manifest)?;
    let replicas = kafka["spec"]["kafka"]["replicas"]
        .as_i64()
        .context("spec.kafka.replicas")? as i32;
    let brokers: Vec<serde_json::Value> = (0..replicas)
        .map(|n| serde_json::json!({"broker": n, "nodePort": base + 1 + n}))
        .collect();
    kafka["spec"]["kafka"]["listeners"]
        .as_array_mut()
        .context("spec.kafka.listeners")?
        .push(serde_json::json!({
            "name": "external",
            "port": 9094,
            "type": "nodeport",
            "tls": false,
            "configuration": {"bootstrap": {"nodePort": base}, "brokers": brokers},
        }));
    kafka["metadata"]["annotations"][fjord_operator::reconcile::ADMIN_BOOTSTRAP_ANNOTATION] =
        format!("{node_ip}:{base}").into();

    let ports: Vec<i32> = (base..=base + replicas).collect();
    let services = Api::<Service>::all(ns.client.clone());
    let holders = std::sync::Mutex::new(Vec::<String>::new());
    poll_until(
        WAIT,
        &format!("node ports {ports:?} to be free"),
        || async {
            let mut held_by = Vec::new();
            for svc in services.list(&ListParams::default()).await? {
                let held = svc
                    .spec
                    .iter()
                    .flat_map(|s| s.ports.iter().flatten())
                    .any(|p| p.node_port.is_some_and(|n| ports.contains(&n)));
                if held {
                    held_by.push(format!(
                        "{}/{}",
                        svc.metadata.namespace.unwrap_or_default(),
                        svc.metadata.name.unwrap_or_default()
                    ));
                }
            }
            let free = held_by.is_empty();
            *holders.lock().unwrap() = held_by;
            Ok(free)
        },
    )
    .await
    .with_context(|| format!("held by {:?}", holders.lock().unwrap()))?;
    Ok(serde_yaml::to_string(&kafka)?)
}

/// Checks that the Kafka's broker pods (`replicas` of them) are Running with every container
/// ready.
pub async fn ensure_pods_ready(ns: &TestNamespace, cluster: &str, replicas: usize) -> Result<()> {
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("kafka.fjord.dev/cluster={cluster}")))
        .await?
        .items;
    ensure!(
        pods.len() == replicas,
        "{replicas} broker pods, got {}",
        pods.len()
    );
    for pod in pods {
        let name = pod.metadata.name.unwrap_or_default();
        let status = pod.status.unwrap_or_default();
        ensure!(
            status.phase.as_deref() == Some("Running"),
            "pod {name} is {:?}",
            status.phase
        );
        let ready = status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ensure!(ready, "pod {name} is not Ready");
    }
    Ok(())
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Server-side applies `crds/*.yaml` and waits until each is established.
pub async fn install_crds(client: &kube::Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for file in ["kafka.yaml", "kafkatopic.yaml", "kafkauser.yaml"] {
        let path = repo_root().join("crds").join(file);
        let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text)?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("fjord-operator-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("applying CRD {name}"))?;
        tokio::time::timeout(
            WAIT,
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .with_context(|| format!("CRD {name} not established"))??;
    }
    Ok(())
}

/// Runs the operator's controllers for the test's namespace until the returned guard drops.
pub struct OperatorGuard {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub metrics: Arc<Metrics>,
}

impl Drop for OperatorGuard {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn start_operator(ns: &TestNamespace) -> OperatorGuard {
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Context::new(ns.client.clone(), metrics.clone(), None));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(fjord_operator::controllers::run(
        ctx,
        Some(ns.name.clone()),
        async move {
            let _ = rx.await;
        },
    ));
    OperatorGuard {
        stop: Some(tx),
        metrics,
    }
}

/// An API handle for a Fjord custom resource as a dynamic object.
pub fn fjord_api(ns: &TestNamespace, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("kafka.fjord.dev", "v1", kind);
    let plural = format!("{}s", kind.to_lowercase());
    Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &ApiResource::from_gvk_with_plural(&gvk, &plural),
    )
}

/// Applies a manifest (YAML of one Fjord resource) into the test namespace, strictly: unknown
/// fields are errors, as with `kubectl apply`.
pub async fn apply_yaml(ns: &TestNamespace, yaml: &str) -> Result<DynamicObject> {
    let obj: DynamicObject = serde_yaml::from_str(yaml)?;
    let kind = obj
        .types
        .as_ref()
        .map(|t| t.kind.clone())
        .context("manifest has no kind")?;
    let name = obj.metadata.name.clone().context("manifest has no name")?;
    let mut params = PatchParams::apply("fjord-operator-tests").force();
    params.field_validation = Some(kube::api::ValidationDirective::Strict);
    Ok(fjord_api(ns, &kind)
        .patch(&name, &params, &Patch::Apply(&obj))
        .await?)
}

/// Waits until the resource's status has a condition `type_` with `reason` (any reason if None).
pub async fn wait_condition(
    api: &Api<DynamicObject>,
    name: &str,
    type_: &str,
    reason: Option<&str>,
) -> Result<DynamicObject> {
    wait_condition_for(api, name, type_, reason, WAIT).await
}

/// [`wait_condition`] with its own timeout; a timeout names the conditions the object has.
pub async fn wait_condition_for(
    api: &Api<DynamicObject>,
    name: &str,
    type_: &str,
    reason: Option<&str>,
    timeout: Duration,
) -> Result<DynamicObject> {
    let what = format!("{name} to have condition {type_} {reason:?}");
    let waited = poll_until(timeout, &what, || async {
        let obj = api.get(name).await?;
        Ok(find_condition(&obj, type_, reason).is_some())
    })
    .await;
    let obj = api.get(name).await?;
    waited.with_context(|| format!("its status: {}", obj.data["status"]))?;
    Ok(obj)
}

/// The condition of `type_` (and `reason`, if given) in the object's status.
pub fn find_condition(
    obj: &DynamicObject,
    type_: &str,
    reason: Option<&str>,
) -> Option<serde_json::Value> {
    obj.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| {
            c["type"] == type_ && c["status"] == "True" && reason.is_none_or(|r| c["reason"] == r)
        })
        .cloned()
}

/// A real fjord broker in this process on 127.0.0.1 (random ports), data in a temp dir.
pub struct LocalBroker {
    /// PLAINTEXT listener (what the operator's admin connection uses).
    pub address: String,
    /// SASL_PLAINTEXT listener with SCRAM-SHA-512 (what users log in on).
    pub sasl_address: String,
    _data: tempfile::TempDir,
}

pub async fn start_broker() -> Result<LocalBroker> {
    let data = tempfile::tempdir()?;
    let overrides = vec![
        (
            "listeners".to_string(),
            "PLAINTEXT://127.0.0.1:0,SASL://127.0.0.1:0".to_string(),
        ),
        (
            "listener.security.protocol.map".to_string(),
            "PLAINTEXT:PLAINTEXT,SASL:SASL_PLAINTEXT".to_string(),
        ),
        (
            "sasl.enabled.mechanisms".to_string(),
            "SCRAM-SHA-512".to_string(),
        ),
        ("admin.listener".to_string(), "127.0.0.1:0".to_string()),
        ("log.dirs".to_string(), data.path().display().to_string()),
        ("auto.create.topics.enable".to_string(), "false".to_string()),
    ];
    let (config, _unknown_keys) = fjord_broker::config::Config::load(None, &overrides)?;
    let running = fjord_broker::start(config).await?;
    Ok(LocalBroker {
        address: running.kafka_addrs[0].to_string(),
        sasl_address: running.kafka_addrs[1].to_string(),
        _data: data,
    })
}

/// Bin dir of Apache Kafka's distribution (installed and cached by scripts/kafka-dist.sh).
pub fn kafka_bin_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("KAFKA_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/kafka-dist.sh"))
        .output()
        .context("running scripts/kafka-dist.sh")?;
    if !out.status.success() {
        bail!(
            "scripts/kafka-dist.sh failed (it installs Apache Kafka's CLI tools): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout.lines().last().unwrap_or("").trim().to_string();
    std::env::set_var("KAFKA_BIN_DIR", &dir);
    Ok(PathBuf::from(dir))
}

/// Writes a client properties file for a SCRAM-SHA-512 login with `jaas` (a `sasl.jaas.config`
/// value, e.g. straight from a KafkaUser's Secret).
pub fn scram_client_config(dir: &Path, jaas: &str) -> Result<PathBuf> {
    let path = dir.join(format!("client-{}.properties", std::process::id()));
    std::fs::write(
        &path,
        format!(
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config={jaas}\n"
        ),
    )?;
    Ok(path)
}

/// Runs one of Apache Kafka's CLI tools (e.g. `kafka-topics`) and returns its stdout.
pub fn kafka_cli(tool: &str, args: &[&str]) -> Result<String> {
    let bin = kafka_bin_dir()?.join(tool);
    let out = Command::new(&bin)
        .args(args)
        .env("KAFKA_HEAP_OPTS", "-Xmx256m")
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
