//! Shared support for the operator's integration tests: CRD installation, the operator's
//! controllers running in-process against the real control plane, a real fjord broker, and
//! Apache Kafka's own CLI tools for checking what the brokers hold.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use fjord_e2e::fixture::{poll_until, TestNamespace};
use fjord_operator::metrics::Metrics;
use fjord_operator::reconcile::Context;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::runtime::wait::{await_condition, conditions};

pub const WAIT: Duration = Duration::from_secs(60);

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
    let what = format!("{name} to have condition {type_} {reason:?}");
    poll_until(WAIT, &what, || async {
        let obj = api.get(name).await?;
        Ok(find_condition(&obj, type_, reason).is_some())
    })
    .await?;
    Ok(api.get(name).await?)
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
