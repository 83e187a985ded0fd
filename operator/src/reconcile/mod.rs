//! Reconcilers, one file per kind ([`kafka`], [`topic`], [`user`]), sharing a [`Context`], an
//! [`Error`] type and an exponential backoff [`error_policy`]; the steps a reconcile delegates
//! have files of their own: [`certificates`] (CAs and broker certificates), [`roller`]
//! (restarts), [`scaling`] and [`topic_replicas`] (replica moves, both through
//! [`reassignment`]) and [`user_acls`].

pub mod ca_replacement;
pub mod certificates;
pub mod kafka;
pub mod reassignment;
pub mod roller;
pub mod scaling;
pub mod topic;
pub mod topic_replicas;
pub mod user;
pub mod user_acls;
pub mod user_secret;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::crd::{Kafka, CLUSTER_LABEL};
use crate::kafka_admin::{AdminError, KafkaAdmin};
use crate::metrics::Metrics;
use crate::resources::{names, REPLICATION_PORT};

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "fjord-operator";

/// Annotation on a `Kafka` naming the `host:port` the operator uses for admin requests instead of
/// the bootstrap Service (an operator running outside the cluster, or brokers run elsewhere).
pub const ADMIN_BOOTSTRAP_ANNOTATION: &str = "kafka.fjord.dev/admin-bootstrap";

/// Healthy objects are looked at again this often, to repair drift on the brokers.
pub const RESYNC: Duration = Duration::from_secs(300);
/// Waiting on something outside the operator (brokers starting, a missing cluster).
pub const RECHECK: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer error: {0}")]
    Finalizer(String),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Short label for the failures metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApi",
            Error::Finalizer(_) => "Finalizer",
            Error::Admin(AdminError::Unreachable { .. }) => "BrokersUnreachable",
            Error::Admin(_) => "BrokerError",
            Error::Invalid(_) => "Invalid",
        }
    }
}

/// What every reconciler gets.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    backoff: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, reporter_instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: "fjord-operator".into(),
            instance: reporter_instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            backoff: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes a Kubernetes Event on `obj`; failures are logged, never fatal.
    pub async fn event<K>(&self, obj: &K, warning: bool, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }

    /// Forgets the failure streak of `key` (after a successful reconcile).
    pub fn succeeded(&self, key: &str) {
        self.backoff.lock().expect("not poisoned").remove(key);
    }

    /// Next retry delay for `key`: 5 s doubling per consecutive failure, capped at 5 minutes.
    fn next_backoff(&self, key: &str) -> Duration {
        let mut map = self.backoff.lock().expect("not poisoned");
        let failures = map.entry(key.to_string()).or_insert(0);
        *failures = failures.saturating_add(1);
        backoff_delay(*failures)
    }
}

/// Pure backoff schedule: 5 s, 10 s, 20 s, ... capped at 300 s.
pub fn backoff_delay(consecutive_failures: u32) -> Duration {
    let exp = consecutive_failures.saturating_sub(1).min(6);
    Duration::from_secs((5u64 << exp).min(300))
}

/// Key identifying one object across reconciles.
pub fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    )
}

/// The controller's error policy: count the failure, retry with exponential backoff.
pub fn error_policy<K>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    let kind = K::kind(&()).to_string();
    ctx.metrics.reconcile_failed(&kind, error.reason());
    let delay = ctx.next_backoff(&object_key(obj.as_ref()));
    tracing::warn!(%kind, name = %obj.meta().name.as_deref().unwrap_or(""), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Merge-patches `status` on the object's status subresource.
pub async fn patch_status<K, S>(api: &Api<K>, name: &str, status: &S) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    let patch = serde_json::json!({ "status": status });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Server-side applies `obj` (which must carry apiVersion/kind) with the operator's field manager.
pub async fn apply<K>(api: &Api<K>, obj: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let mut value = serde_json::to_value(obj).map_err(|e| Error::Invalid(e.to_string()))?;
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api.patch(&name, &params, &Patch::Apply(&value)).await?)
}

/// Why a KafkaTopic/KafkaUser cannot reach its cluster, for a NotReady condition.
#[derive(Debug)]
pub struct ClusterProblem {
    pub reason: &'static str,
    pub message: String,
}

/// The `Kafka` a KafkaTopic/KafkaUser belongs to, by its cluster label.
pub async fn owning_cluster<K: Resource>(
    client: &Client,
    obj: &K,
) -> Result<Kafka, ClusterProblem> {
    let namespace = obj.meta().namespace.clone().unwrap_or_default();
    let Some(cluster) = obj
        .meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(CLUSTER_LABEL))
    else {
        return Err(ClusterProblem {
            reason: "MissingClusterLabel",
            message: format!(
                "label {CLUSTER_LABEL} must name the Kafka cluster (in this namespace)"
            ),
        });
    };
    let api: Api<Kafka> = Api::namespaced(client.clone(), &namespace);
    match api.get_opt(cluster).await {
        Ok(Some(k)) => Ok(k),
        Ok(None) => Err(ClusterProblem {
            reason: "ClusterNotFound",
            message: format!("Kafka {namespace}/{cluster} does not exist"),
        }),
        Err(e) => Err(ClusterProblem {
            reason: "ClusterLookupFailed",
            message: format!("cannot read Kafka {namespace}/{cluster}: {e}"),
        }),
    }
}

/// Where the operator sends admin requests for `kafka`: the replication listener through the
/// headless Service (no internal port is published on the bootstrap Service).
pub fn admin_address(kafka: &Kafka) -> String {
    kafka
        .annotations()
        .get(ADMIN_BOOTSTRAP_ANNOTATION)
        .cloned()
        .unwrap_or_else(|| names::admin_address(kafka, REPLICATION_PORT))
}

/// An admin connection to `kafka`'s brokers, authenticated by the operator's certificate for
/// this cluster (`<cluster>-cluster-operator-certs`, a super user). With
/// [`ADMIN_BOOTSTRAP_ANNOTATION`] (the operator's tests, which start their own plaintext
/// brokers) it connects there without TLS.
pub async fn connect_admin(kafka: &Kafka, client: &kube::Client) -> Result<KafkaAdmin, AdminError> {
    if let Some(address) = kafka.annotations().get(ADMIN_BOOTSTRAP_ANNOTATION) {
        return KafkaAdmin::connect(address, fjord_client::ClientSecurity::plaintext()).await;
    }
    let address = admin_address(kafka);
    let tls = certificates::operator_tls(kafka, client)
        .await
        .map_err(|e| AdminError::Unreachable {
            address: address.clone(),
            reason: format!("cannot read the operator's certificate: {e}"),
        })?
        .ok_or_else(|| AdminError::Unreachable {
            address: address.clone(),
            reason: "the operator's certificate for this cluster is not issued yet".into(),
        })?;
    KafkaAdmin::connect(&address, fjord_client::ClientSecurity::ssl(tls)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(secs, vec![5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }
}
