//! `Kafka`: a cluster of Fjord brokers (Strimzi's `Kafka` resource, `spec.kafka` part).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;

/// Strimzi resources Fjord does not run; each is rejected with a message saying why.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kafka.fjord.dev",
    version = "v1",
    kind = "Kafka",
    namespaced,
    status = "KafkaStatus",
    shortname = "k",
    category = "fjord",
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".spec.kafka.replicas","description":"Desired brokers"}"#,
    printcolumn = r#"{"name":"Ready brokers","type":"integer","jsonPath":".status.brokers.ready"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Not ready because","type":"string","jsonPath":".status.conditions[?(@.type==\"NotReady\")].reason"}"#,
    printcolumn = r#"{"name":"Warnings","type":"string","jsonPath":".status.conditions[?(@.type==\"Warning\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("!has(self.zookeeper)").message("spec.zookeeper is not supported: Fjord keeps metadata in its own Raft quorum; remove the field"))]
#[x_kube(validation = Rule::new("!has(self.entityOperator)").message("spec.entityOperator is not supported: the Fjord operator reconciles KafkaTopic and KafkaUser itself; remove the field"))]
#[x_kube(validation = Rule::new("!has(self.cruiseControl)").message("spec.cruiseControl is not supported: Fjord rebalances partitions itself; remove the field"))]
#[x_kube(validation = Rule::new("!has(self.kafkaExporter)").message("spec.kafkaExporter is not supported: brokers export Prometheus metrics natively; remove the field"))]
#[serde(rename_all = "camelCase")]
pub struct KafkaSpec {
    pub kafka: KafkaClusterSpec,
    /// The cluster CA, which signs the brokers' certificates: Secrets `<name>-cluster-ca-cert`
    /// (`ca.crt`) and `<name>-cluster-ca` (`ca.key`), as Strimzi names them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ca: Option<CertificateAuthority>,
    /// The clients CA, which signs KafkaUser certificates: Secrets `<name>-clients-ca-cert`
    /// and `<name>-clients-ca`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients_ca: Option<CertificateAuthority>,
    /// What the operator does with partition replicas when brokers are added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<RebalanceSpec>,
    /// Not supported (rejected); present only so the rejection can say why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::any_object")]
    pub zookeeper: Option<serde_json::Value>,
    /// Not supported (rejected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::any_object")]
    pub entity_operator: Option<serde_json::Value>,
    /// Not supported (rejected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::any_object")]
    pub cruise_control: Option<serde_json::Value>,
    /// Not supported (rejected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::any_object")]
    pub kafka_exporter: Option<serde_json::Value>,
}

/// `spec.clusterCa` / `spec.clientsCa` (Strimzi's `CertificateAuthority`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.validityDays) || !has(self.renewalDays) || self.renewalDays < self.validityDays").message("renewalDays must be smaller than validityDays"))]
pub struct CertificateAuthority {
    /// Let the operator create and renew the CA (default true). With false, put your own CA in
    /// the two Secrets; the operator only warns when it is missing or about to expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_certificate_authority: Option<bool>,
    /// Days a CA certificate is valid (default 365).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 36500))]
    pub validity_days: Option<u32>,
    /// Days before expiry the CA certificate is renewed, keeping its key, so certificates it
    /// signed stay trusted (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 36499))]
    pub renewal_days: Option<u32>,
}

/// `spec.rebalance`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceSpec {
    /// Move replicas and preferred leaders onto new brokers after a scale-up, so every broker
    /// holds its share (default true). Scale-down always drains the brokers it removes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_scale: Option<bool>,
    /// Bytes per second each broker may spend copying replicas to their new brokers while the
    /// operator reassigns (scale-up, drain, replication-factor change); in-sync replicas are
    /// never slowed. Default 52428800 (50 MiB/s); 0 copies unthrottled. The operator owns the
    /// `*.replication.throttled.rate` broker defaults and the `*.replication.throttled.replicas`
    /// topic configs while it moves replicas, and removes them when the moves finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub throttle_bytes_per_second: Option<i64>,
}

/// Default `spec.rebalance.throttleBytesPerSecond`: fast enough that a move of tens of GB ends
/// within minutes, slow enough to leave most of a broker's disk and network to clients.
pub const DEFAULT_THROTTLE_BYTES_PER_SECOND: i64 = 50 * 1024 * 1024;

impl Kafka {
    /// The reassignment throttle in bytes per second; `None` copies unthrottled.
    pub fn reassignment_throttle(&self) -> Option<u64> {
        let rate = self
            .spec
            .rebalance
            .as_ref()
            .and_then(|r| r.throttle_bytes_per_second)
            .unwrap_or(DEFAULT_THROTTLE_BYTES_PER_SECOND);
        u64::try_from(rate).ok().filter(|r| *r > 0)
    }
}

/// `spec.kafka`: the brokers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KafkaClusterSpec {
    /// Fjord release to run; selects the default image. Defaults to the operator's own version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Broker image; overrides `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Number of brokers. When the cluster is created the first min(3, replicas) become the
    /// metadata quorum's voters (`status.quorumVoters`); that set never changes, so brokers added
    /// later are broker-only and `replicas` cannot go below the highest voter.
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,
    /// Client listeners. Ports 9090, 9091 and 9644 are used by the brokers themselves.
    #[schemars(length(min = 1, max = 10))]
    #[x_kube(validation = Rule::new("self.all(l, self.exists_one(m, m.name == l.name))").message("listener names must be unique"))]
    #[x_kube(validation = Rule::new("self.all(l, self.exists_one(m, m.port == l.port))").message("listener ports must be unique"))]
    pub listeners: Vec<GenericKafkaListener>,
    /// Broker configuration (server.properties keys). Keys the operator owns (see
    /// `OPERATOR_OWNED_KEYS`, and `config.providers.*`) make the cluster NotReady with a message; nothing is applied.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "super::config_map_schema")]
    pub config: BTreeMap<String, serde_json::Value>,
    pub storage: Storage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Spread brokers over a topology key and tell each broker its rack (`broker.rack`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<Rack>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<KafkaClusterTemplate>,
    /// Prometheus scraping of the brokers' native `/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_config: Option<MetricsConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<KafkaAuthorization>,
}

/// Keys of server.properties the operator sets itself (also checked by the operator).
pub const OPERATOR_OWNED_KEYS: &[&str] = &[
    "node.id",
    "broker.id",
    "process.roles",
    "listeners",
    "advertised.listeners",
    "listener.security.protocol.map",
    "inter.broker.listener.name",
    "controller.listener.names",
    "controller.quorum.voters",
    "log.dirs",
    "log.dir",
    "cluster.id",
    "admin.listener",
    "broker.rack",
    "config.providers",
];

/// Is `key` set by the operator (one of [`OPERATOR_OWNED_KEYS`] or a `config.providers.*` key)?
pub fn is_operator_owned_key(key: &str) -> bool {
    OPERATOR_OWNED_KEYS.contains(&key) || key.starts_with("config.providers.")
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.authentication) || self.authentication.type != 'tls' || self.tls").message("authentication type tls needs tls: true on the listener"))]
#[x_kube(validation = Rule::new("!has(self.configuration) || self.type == 'nodeport'").message("configuration is only supported on nodeport listeners"))]
pub struct GenericKafkaListener {
    /// Lower-case letters and digits, at most 11 characters (as in Strimzi).
    #[schemars(regex(pattern = r"^[a-z0-9]{1,11}$"), length(max = 11))]
    pub name: String,
    #[schemars(range(min = 9092, max = 65535))]
    #[x_kube(validation = Rule::new("self != 9644").message("port 9644 is the brokers' admin/metrics port"))]
    pub port: i32,
    #[serde(rename = "type")]
    pub type_: ListenerType,
    pub tls: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<ListenerAuthentication>,
    /// Node ports and advertised addresses (nodeport listeners only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<GenericKafkaListenerConfiguration>,
    /// Who may connect to this listener (the cluster's NetworkPolicy, as Strimzi's); everyone
    /// when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_policy_peers: Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>,
}

/// Strimzi's `listeners[].configuration`, the parts that apply to nodeport listeners.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GenericKafkaListenerConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<GenericKafkaListenerConfigurationBootstrap>,
    /// Per-broker node ports and advertised addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    #[x_kube(validation = Rule::new("self.all(b, self.exists_one(c, c.broker == b.broker))").message("each broker may appear only once in configuration.brokers"))]
    pub brokers: Vec<GenericKafkaListenerConfigurationBroker>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GenericKafkaListenerConfigurationBootstrap {
    /// Node port of the bootstrap Service; allocated by Kubernetes when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub node_port: Option<i32>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GenericKafkaListenerConfigurationBroker {
    /// Node id (pod ordinal) of the broker this entry is for.
    #[schemars(range(min = 0))]
    pub broker: i32,
    /// Node port of this broker's Service; allocated by Kubernetes when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub node_port: Option<i32>,
    /// Host name or IP the broker advertises instead of its node's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub advertised_host: Option<String>,
    /// Port the broker advertises instead of its node port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub advertised_port: Option<i32>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListenerType {
    /// Reachable inside the cluster through the headless and bootstrap Services.
    Internal,
    /// A ClusterIP bootstrap Service of its own.
    #[serde(rename = "cluster-ip")]
    ClusterIp,
    Nodeport,
    Loadbalancer,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ListenerAuthentication {
    #[serde(rename = "type")]
    pub type_: ListenerAuthenticationType,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerAuthenticationType {
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
    #[serde(rename = "tls")]
    Tls,
}

/// Strimzi's storage: `ephemeral`, `persistent-claim` or `jbod` (a list of either).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'persistent-claim' || has(self.size)").message("persistent-claim storage needs a size"))]
#[x_kube(validation = Rule::new("self.type != 'jbod' || (has(self.volumes) && size(self.volumes) > 0)").message("jbod storage needs at least one volume"))]
#[x_kube(validation = Rule::new("self.type == 'jbod' || !has(self.volumes)").message("volumes are only allowed with jbod storage"))]
pub struct Storage {
    #[serde(rename = "type")]
    pub type_: StorageType,
    /// Volume size, e.g. `100Gi` (persistent-claim), or the emptyDir limit (ephemeral).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// StorageClass of the claims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Delete the claims when the cluster is deleted (default false: data is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_claim: Option<bool>,
    /// JBOD volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8))]
    pub volumes: Option<Vec<JbodVolume>>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StorageType {
    #[default]
    #[serde(rename = "ephemeral")]
    Ephemeral,
    #[serde(rename = "persistent-claim")]
    PersistentClaim,
    #[serde(rename = "jbod")]
    Jbod,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'persistent-claim' || has(self.size)").message("persistent-claim volumes need a size"))]
pub struct JbodVolume {
    #[schemars(range(min = 0, max = 99))]
    pub id: i32,
    #[serde(rename = "type")]
    pub type_: JbodVolumeType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_claim: Option<bool>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum JbodVolumeType {
    #[serde(rename = "ephemeral")]
    Ephemeral,
    #[serde(rename = "persistent-claim")]
    PersistentClaim,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rack {
    /// Node label whose value is the broker's rack. Kubernetes copies only these two onto pods,
    /// which is how a broker learns its zone without reading Node objects.
    #[schemars(regex(pattern = r"^topology\.kubernetes\.io/(zone|region)$"))]
    pub topology_key: String,
}

/// Strimzi's `template`: what the operator adds to the objects it builds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KafkaClusterTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodTemplate>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub termination_grace_period_seconds: Option<i64>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct TemplateMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MetricsConfig {
    /// `prometheus`: the brokers' native endpoint; pods get the usual scrape annotations and the
    /// headless Service a `metrics` port (for a ServiceMonitor).
    #[serde(rename = "type")]
    pub type_: MetricsType,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsType {
    #[serde(rename = "prometheus")]
    Prometheus,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KafkaAuthorization {
    #[serde(rename = "type")]
    pub type_: AuthorizationType,
    /// Principals (`User:name` or bare user names) allowed everything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub super_users: Vec<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthorizationType {
    #[serde(rename = "simple")]
    Simple,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KafkaStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The cluster id the operator formatted the brokers with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brokers: Option<BrokerCounts>,
    /// Node ids of the metadata quorum's voters, fixed when the cluster was created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quorum_voters: Vec<i32>,
    /// Replica placement across the brokers: what the last rebalance covered and what is moving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<RebalanceStatus>,
    /// The rolling restart in progress; absent (null) when none is. A new operator continues it
    /// from here, so no broker is restarted twice.
    #[serde(default)]
    pub rolling_update: Option<RollingUpdateStatus>,
}

/// Replica placement across the brokers (scale-up rebalance and scale-down drain).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceStatus {
    /// Brokers the replicas were last placed over; more brokers in the spec is a scale-up to
    /// rebalance for, fewer a scale-down to drain for.
    pub brokers: i32,
    /// `ScaleUp` or `ScaleDown` while replicas move; null when nothing moves.
    #[serde(default)]
    pub reason: Option<String>,
    /// Partitions the current operation reassigned.
    #[serde(default)]
    pub partitions_total: i32,
    /// Of those, partitions still moving.
    #[serde(default)]
    pub partitions_pending: i32,
    /// When the current operation started (RFC 3339).
    #[serde(default)]
    pub started: Option<String>,
    /// Bytes the new replicas still have to copy from their leaders (null when unknown). Always
    /// written, null included: the status is merge-patched, and an omitted field would keep a
    /// stale value.
    #[serde(default)]
    pub bytes_left: Option<i64>,
    /// The throttle the moves run under, bytes per second (null: unthrottled).
    #[serde(default)]
    pub throttle_bytes_per_second: Option<i64>,
    /// What happens now, or how the last operation ended.
    #[serde(default)]
    pub message: Option<String>,
}

/// Progress of a rolling restart of the broker pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdateStatus {
    /// Why brokers are restarted: `PodTemplateChanged` (configuration, image, resources or
    /// template) and/or `ManualRollingUpdate` (the annotation).
    pub reason: String,
    /// Brokers restarted (and back in sync) in this roll.
    #[serde(default)]
    pub done: Vec<i32>,
    /// Brokers still to restart, in the order they will be.
    #[serde(default)]
    pub pending: Vec<i32>,
    /// The broker restarting now. (Written as null when none, so status merge patches clear it.)
    #[serde(default)]
    pub current: Option<RestartingBroker>,
    /// What the roll waits for, when it waits.
    #[serde(default)]
    pub blocked_by: Option<String>,
    /// When the roll started (RFC 3339).
    pub started: String,
}

/// The broker pod a roll deleted and waits for.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RestartingBroker {
    pub broker: i32,
    /// UID of the pod that was deleted; the replacement has another.
    pub pod_uid: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    pub name: String,
    /// `host:port` to give clients as `bootstrap.servers` (for a nodeport listener: a node's
    /// address and the bootstrap Service's node port).
    pub bootstrap_servers: String,
    /// For a `tls: true` listener: the cluster CA certificate (PEM) clients must trust.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct BrokerCounts {
    pub ready: i32,
    pub total: i32,
}
