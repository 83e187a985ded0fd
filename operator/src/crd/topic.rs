//! `KafkaTopic`: one topic of a `Kafka` cluster (Strimzi's `KafkaTopic`).

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::Condition;

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "kafka.fjord.dev",
    version = "v1",
    kind = "KafkaTopic",
    namespaced,
    status = "KafkaTopicStatus",
    shortname = "kt",
    category = "fjord",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".metadata.labels.kafka\\.fjord\\.dev/cluster"}"#,
    printcolumn = r#"{"name":"Partitions","type":"integer","jsonPath":".spec.partitions"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Not ready because","type":"string","jsonPath":".status.conditions[?(@.type==\"NotReady\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTopicSpec {
    /// Topic name on the brokers; defaults to `metadata.name`. Cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-zA-Z0-9._-]{1,249}$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("topicName cannot change; create a new KafkaTopic"))]
    pub topic_name: Option<String>,
    /// Partition count; can grow, never shrink. Defaults to the brokers' `num.partitions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub partitions: Option<i32>,
    /// Replication factor. Defaults to the brokers' `default.replication.factor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32767))]
    pub replicas: Option<i32>,
    /// Topic configuration (e.g. `retention.ms`, `cleanup.policy`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "super::config_map_schema")]
    pub config: BTreeMap<String, serde_json::Value>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTopicStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    /// A replication-factor change in progress or refused; absent (null) when the topic has the
    /// replication factor the spec asks for.
    #[serde(default)]
    pub replicas_change: Option<ReplicasChangeStatus>,
}

/// Strimzi's `status.replicasChange`: where a `spec.replicas` edit stands.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReplicasChangeStatus {
    pub target_replicas: i32,
    /// `ongoing` (replicas are being added or removed) or `refused` (nothing was changed).
    pub state: String,
    #[serde(default)]
    pub message: Option<String>,
}

impl KafkaTopic {
    /// The topic's name on the brokers.
    pub fn topic_name(&self) -> String {
        self.spec
            .topic_name
            .clone()
            .or_else(|| self.metadata.name.clone())
            .unwrap_or_default()
    }
}
