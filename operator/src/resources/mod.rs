//! Pure builders: a `Kafka` resource in, the Kubernetes objects that run it out. No I/O, so every
//! field that matters is unit-tested; the reconciler only applies what these return.

pub mod broker_config;
pub mod certificates;
pub mod disruption_budget;
pub mod names;
pub mod network_policy;
pub mod services;
pub mod statefulset;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use kube::Resource;

use crate::crd::Kafka;

/// Port of the brokers' Raft/controller listener.
pub const CONTROLLER_PORT: i32 = 9090;
/// Port of the inter-broker (replication) listener; the operator's own admin connection uses it too.
pub const REPLICATION_PORT: i32 = 9091;
/// Port of the broker's admin HTTP endpoint (`/metrics`, `/v1/ready`, `/v1/restart-safety`).
pub const ADMIN_PORT: i32 = 9644;
/// Where the broker's properties file is mounted.
pub const CONFIG_DIR: &str = "/etc/fjord";
/// Where data volumes are mounted (`data` or `data-<id>` for JBOD).
pub const DATA_ROOT: &str = "/var/lib/fjord";

/// Labels that select one cluster's broker pods (also the StatefulSet's selector: never change).
pub fn selector_labels(kafka: &Kafka) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "kafka".into()),
        ("app.kubernetes.io/instance".into(), kafka_name(kafka)),
        (crate::crd::CLUSTER_LABEL.into(), kafka_name(kafka)),
    ])
}

/// [`selector_labels`] as a label selector string (`k=v,...`), for list calls.
pub fn selector_string(kafka: &Kafka) -> String {
    selector_labels(kafka)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Labels on every object the operator builds for a cluster.
pub fn common_labels(kafka: &Kafka) -> BTreeMap<String, String> {
    let mut labels = selector_labels(kafka);
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "fjord-operator".into(),
    );
    labels.insert("app.kubernetes.io/part-of".into(), "fjord".into());
    labels.insert("app.kubernetes.io/component".into(), "broker".into());
    labels
}

/// Metadata for an object named `name` owned by `kafka` (garbage-collected with it).
pub fn owned_meta(kafka: &Kafka, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: kafka.metadata.namespace.clone(),
        labels: Some(common_labels(kafka)),
        owner_references: owner_reference(kafka).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

fn owner_reference(kafka: &Kafka) -> Option<OwnerReference> {
    kafka.controller_owner_ref(&())
}

pub(crate) fn kafka_name(kafka: &Kafka) -> String {
    kafka.metadata.name.clone().unwrap_or_default()
}

pub(crate) fn namespace(kafka: &Kafka) -> String {
    kafka
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into())
}

#[cfg(test)]
pub(crate) mod test_support {
    use crate::crd::Kafka;

    /// A valid three-broker cluster as a user would write it.
    pub fn kafka(yaml_spec: &str) -> Kafka {
        let spec = serde_yaml::from_str(yaml_spec).expect("test spec parses");
        let mut k = Kafka::new("my-cluster", spec);
        k.metadata.namespace = Some("prod".into());
        k.metadata.uid = Some("0000-1111".into());
        k
    }

    pub const THREE_BROKERS: &str = r#"
kafka:
  replicas: 3
  listeners:
    - {name: plain, port: 9092, type: internal, tls: false}
  config:
    min.insync.replicas: 2
    default.replication.factor: 3
    auto.create.topics.enable: false
  storage: {type: ephemeral}
"#;
}
