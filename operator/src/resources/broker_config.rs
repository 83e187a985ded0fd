//! The brokers' configuration: one `broker-<ordinal>.properties` per pod in a ConfigMap.
//!
//! Per-pod files (rather than one file plus env-var overrides) keep every broker's whole
//! configuration visible with `kubectl get configmap -o yaml`. The pod-template hash covers only
//! the part every broker shares, so adding a broker does not mark the existing ones stale.

use std::collections::BTreeMap;
use std::fmt::Write;

use k8s_openapi::api::core::v1::ConfigMap;
use sha2::{Digest, Sha256};

use crate::crd::kafka::{
    is_operator_owned_key, GenericKafkaListener, ListenerAuthenticationType, ListenerType,
    StorageType,
};
use crate::crd::{config_value_string, Kafka};

use super::certificates;
use super::services::{broker_override, NodePorts};
use super::{names, owned_meta, ADMIN_PORT, CONTROLLER_PORT, DATA_ROOT, REPLICATION_PORT};
use crate::pki;

/// Environment variable of the broker container holding its node's address (`status.hostIP`,
/// from the downward API), which nodeport listeners advertise.
pub const NODE_ADDRESS_ENV: &str = "FJORD_NODE_ADDRESS";
/// Kafka's environment-variable config provider (KIP-887), which the broker implements.
const ENV_CONFIG_PROVIDER: &str = "org.apache.kafka.common.config.provider.EnvVarConfigProvider";

/// Most voters a new cluster's quorum gets: three tolerate one failure, which matches
/// maxUnavailable 1.
const MAX_VOTERS: i32 = 3;

/// What the brokers are formatted with and must never change: the cluster id and the metadata
/// quorum's voters. Both are fixed when the cluster is created and recorded in the `Kafka`'s
/// status. Voters never follow `spec.kafka.replicas`: a voter set that grows with the cluster
/// (1 -> 3) lets the new brokers elect a second leader of their own, splitting the metadata
/// (KIP-853's one-voter-at-a-time membership change is what makes growing it safe, and Fjord's
/// quorum does not implement it yet). Brokers beyond the voters join as learners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub cluster_id: String,
    pub voters: Vec<i32>,
}

impl Identity {
    /// A new cluster's identity: the first min(3, replicas) brokers vote.
    pub fn new_cluster(cluster_id: impl Into<String>, replicas: i32) -> Identity {
        Identity {
            cluster_id: cluster_id.into(),
            voters: (0..replicas.clamp(1, MAX_VOTERS)).collect(),
        }
    }
}

/// The voter ids in a properties file's `controller.quorum.voters` (`id@host:port,...`): how an
/// operator that lost the status (or predates it) recovers the voters of a running cluster.
pub fn voters_from_properties(text: &str) -> Option<Vec<i32>> {
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("controller.quorum.voters="))?;
    let voters: Option<Vec<i32>> = value
        .split(',')
        .map(|v| v.split_once('@').and_then(|(id, _)| id.trim().parse().ok()))
        .collect();
    voters.filter(|v| !v.is_empty())
}

/// File name of broker `ordinal`'s properties inside the ConfigMap.
pub fn file_name(ordinal: i32) -> String {
    format!("broker-{ordinal}.properties")
}

/// Problems in `spec.kafka` the schema cannot express; empty when the spec is usable.
pub fn validate(kafka: &Kafka) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, value) in &kafka.spec.kafka.config {
        if is_operator_owned_key(key) {
            problems.push(format!(
                "spec.kafka.config key '{key}' is set by the operator"
            ));
        }
        if let Err(e) = config_value_string(key, value) {
            problems.push(format!("spec.kafka.{e}"));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for l in &kafka.spec.kafka.listeners {
        if !seen.insert(l.name.clone()) {
            problems.push(format!("listener name '{}' is used twice", l.name));
        }
        if [CONTROLLER_PORT, REPLICATION_PORT, ADMIN_PORT].contains(&l.port) {
            problems.push(format!(
                "listener '{}' uses port {}, which the brokers use themselves",
                l.name, l.port
            ));
        }
    }
    for l in &kafka.spec.kafka.listeners {
        if client_auth_by_certificate(l) && !l.tls {
            problems.push(format!(
                "listener '{}': authentication type tls (client certificates) needs tls: true",
                l.name
            ));
        }
    }
    if kafka.spec.kafka.replicas < 1 {
        problems.push("spec.kafka.replicas must be at least 1".into());
    }
    for l in &kafka.spec.kafka.listeners {
        if l.configuration.is_some() && l.type_ != ListenerType::Nodeport {
            problems.push(format!(
                "listener '{}': configuration is only supported on nodeport listeners",
                l.name
            ));
        }
    }
    problems
}

/// Does any broker advertise its node's address (a nodeport listener without `advertisedHost`)?
pub fn uses_node_address(kafka: &Kafka) -> bool {
    let spec = &kafka.spec.kafka;
    spec.listeners
        .iter()
        .filter(|l| l.type_ == ListenerType::Nodeport)
        .any(|l| {
            (0..spec.replicas.max(0)).any(|i| {
                broker_override(l, i)
                    .and_then(|b| b.advertised_host.as_ref())
                    .is_none()
            })
        })
}

/// Kafka's name for a client listener: `PLAIN-9092` for `{name: plain, port: 9092}`.
pub fn listener_name(listener: &GenericKafkaListener) -> String {
    format!("{}-{}", listener.name.to_uppercase(), listener.port)
}

/// Does the listener authenticate clients by their certificate (`authentication.type: tls`)?
fn client_auth_by_certificate(listener: &GenericKafkaListener) -> bool {
    matches!(
        listener.authentication.as_ref().map(|a| a.type_),
        Some(ListenerAuthenticationType::Tls)
    )
}

/// The lines that make listener `name` (lower case) require a client certificate signed by the
/// CA mounted at `ca_dir`.
fn trust(name: &str, ca_dir: &str) -> [(String, String); 3] {
    let prefix = format!("listener.name.{name}");
    [
        (format!("{prefix}.ssl.truststore.type"), "PEM".into()),
        (
            format!("{prefix}.ssl.truststore.location"),
            format!("{ca_dir}/ca.crt"),
        ),
        (format!("{prefix}.ssl.client.auth"), "required".into()),
    ]
}

fn security_protocol(listener: &GenericKafkaListener) -> &'static str {
    let sasl = matches!(
        listener.authentication.as_ref().map(|a| a.type_),
        Some(ListenerAuthenticationType::ScramSha512)
    );
    match (listener.tls, sasl) {
        (false, false) => "PLAINTEXT",
        (true, false) => "SSL",
        (false, true) => "SASL_PLAINTEXT",
        (true, true) => "SASL_SSL",
    }
}

/// The `log.dirs` value for the storage type.
pub fn log_dirs(kafka: &Kafka) -> String {
    let storage = &kafka.spec.kafka.storage;
    match (storage.type_, &storage.volumes) {
        (StorageType::Jbod, Some(volumes)) => volumes
            .iter()
            .map(|v| format!("{DATA_ROOT}/data-{}/log", v.id))
            .collect::<Vec<_>>()
            .join(","),
        _ => format!("{DATA_ROOT}/data/log"),
    }
}

/// The lines every broker shares (also what the pod-template hash covers).
pub fn shared_properties(kafka: &Kafka, identity: &Identity) -> Result<String, String> {
    let spec = &kafka.spec.kafka;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Written by fjord-operator for Kafka {}/{}: edit spec.kafka.config instead.",
        super::namespace(kafka),
        super::kafka_name(kafka)
    );
    let voters: Vec<String> = identity
        .voters
        .iter()
        .map(|&i| format!("{i}@{}:{CONTROLLER_PORT}", names::pod_dns(kafka, i)))
        .collect();
    let mut protocols = vec!["CONTROLLER:SSL".to_string(), "REPLICATION:SSL".to_string()];
    protocols.extend(
        spec.listeners
            .iter()
            .map(|l| format!("{}:{}", listener_name(l), security_protocol(l))),
    );
    let mut fixed: Vec<(String, String)> = vec![
        ("cluster.id".into(), identity.cluster_id.clone()),
        ("controller.quorum.voters".into(), voters.join(",")),
        ("controller.listener.names".into(), "CONTROLLER".into()),
        ("inter.broker.listener.name".into(), "REPLICATION".into()),
        ("listener.security.protocol.map".into(), protocols.join(",")),
        ("admin.listener".into(), format!("0.0.0.0:{ADMIN_PORT}")),
        ("log.dirs".into(), log_dirs(kafka)),
    ];
    if uses_node_address(kafka) {
        // `${env:FJORD_NODE_ADDRESS}` in advertised.listeners: the node is known only at run time.
        fixed.push(("config.providers".into(), "env".into()));
        fixed.push((
            "config.providers.env.class".into(),
            ENV_CONFIG_PROVIDER.into(),
        ));
    }
    // The brokers' own listeners take only certificates the cluster CA signed: other brokers
    // (replication, the quorum) and the operator.
    for internal in ["controller", "replication"] {
        fixed.extend(trust(internal, certificates::CLUSTER_CA_DIR));
    }
    for l in &spec.listeners {
        if client_auth_by_certificate(l) {
            let name = listener_name(l).to_lowercase();
            fixed.extend(trust(&name, certificates::CLIENTS_CA_DIR));
        }
    }
    for l in &spec.listeners {
        if security_protocol(l).starts_with("SASL") {
            fixed.push((
                format!(
                    "listener.name.{}.sasl.enabled.mechanisms",
                    listener_name(l).to_lowercase()
                ),
                "SCRAM-SHA-512".into(),
            ));
        }
    }
    if let Some(authz) = &spec.authorization {
        fixed.push((
            "authorizer.class.name".into(),
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer".into(),
        ));
        // The brokers (replication needs CLUSTER_ACTION) and the operator (topics, users,
        // reassignments) come first; then whoever the user lists.
        let mut users = vec![
            pki::internal_principal(&pki::broker_common_name(&super::kafka_name(kafka))),
            pki::internal_principal(pki::OPERATOR_COMMON_NAME),
        ];
        users.extend(authz.super_users.iter().map(|u| {
            if u.starts_with("User:") {
                u.clone()
            } else {
                format!("User:{u}")
            }
        }));
        fixed.push(("super.users".into(), users.join(";")));
    }
    for (k, v) in fixed {
        let _ = writeln!(out, "{k}={v}");
    }
    let _ = writeln!(out, "# spec.kafka.config");
    for (key, value) in &spec.config {
        if is_operator_owned_key(key) {
            return Err(format!(
                "spec.kafka.config key '{key}' is set by the operator"
            ));
        }
        let _ = writeln!(out, "{key}={}", config_value_string(key, value)?);
    }
    Ok(out)
}

/// What broker `ordinal` advertises for `listener`: its pod DNS name and the listener port, or
/// for a nodeport listener its node's address (resolved by the broker from
/// [`NODE_ADDRESS_ENV`]) and its own Service's node port; `advertisedHost`/`advertisedPort` win.
fn advertised_address(
    kafka: &Kafka,
    listener: &GenericKafkaListener,
    ordinal: i32,
    node_ports: &NodePorts,
) -> Result<String, String> {
    if listener.type_ != ListenerType::Nodeport {
        return Ok(format!(
            "{}:{}",
            names::pod_dns(kafka, ordinal),
            listener.port
        ));
    }
    let custom = broker_override(listener, ordinal);
    let host = match custom.and_then(|b| b.advertised_host.clone()) {
        Some(host) if host.contains(':') && !host.starts_with('[') => format!("[{host}]"),
        Some(host) => host,
        None => format!("${{env:{NODE_ADDRESS_ENV}}}"),
    };
    let port = match custom.and_then(|b| b.advertised_port) {
        Some(port) => port,
        None => node_ports
            .get(&listener.name)
            .and_then(|p| p.brokers.get(&ordinal))
            .copied()
            .ok_or_else(|| {
                format!(
                    "the node port of Service {} is not allocated yet",
                    names::listener_broker_service(kafka, &listener.name, ordinal)
                )
            })?,
    };
    Ok(format!("{host}:{port}"))
}

/// The lines only broker `ordinal` has: its id, roles and listeners. `node_ports` are those of the
/// applied per-broker Services (needed for nodeport listeners).
pub fn pod_properties(
    kafka: &Kafka,
    ordinal: i32,
    voters: &[i32],
    node_ports: &NodePorts,
) -> Result<String, String> {
    let spec = &kafka.spec.kafka;
    let is_voter = voters.contains(&ordinal);
    let host = names::pod_dns(kafka, ordinal);
    let mut listeners = Vec::new();
    let mut advertised = vec![format!("REPLICATION://{host}:{REPLICATION_PORT}")];
    // Voters and broker-only nodes alike serve the quorum listener: fjord's broker-only nodes
    // are Raft learners, and the metadata log is pushed to them there. A learner advertises
    // it so the leader knows where to reach it (it is never offered to clients).
    listeners.push(format!("CONTROLLER://0.0.0.0:{CONTROLLER_PORT}"));
    if !is_voter {
        advertised.push(format!("CONTROLLER://{host}:{CONTROLLER_PORT}"));
    }
    listeners.push(format!("REPLICATION://0.0.0.0:{REPLICATION_PORT}"));
    for l in &spec.listeners {
        listeners.push(format!("{}://0.0.0.0:{}", listener_name(l), l.port));
        advertised.push(format!(
            "{}://{}",
            listener_name(l),
            advertised_address(kafka, l, ordinal, node_ports)?
        ));
    }
    let roles = if is_voter {
        "broker,controller"
    } else {
        "broker"
    };
    let mut own = format!(
        "# broker {ordinal}\nnode.id={ordinal}\nprocess.roles={roles}\nlisteners={}\nadvertised.listeners={}\n",
        listeners.join(","),
        advertised.join(",")
    );
    // TLS listeners (the brokers' own always) serve this broker's certificate from the
    // mounted Secret (re-read when the operator renews it).
    let (crt, key) = certificates::broker_cert_files(kafka, ordinal);
    let tls_listeners = ["controller".to_string(), "replication".to_string()]
        .into_iter()
        .chain(
            spec.listeners
                .iter()
                .filter(|l| l.tls)
                .map(|l| listener_name(l).to_lowercase()),
        );
    for name in tls_listeners {
        let prefix = format!("listener.name.{name}");
        let dir = certificates::BROKER_CERTS_DIR;
        let _ = writeln!(own, "{prefix}.ssl.keystore.type=PEM");
        let _ = writeln!(own, "{prefix}.ssl.keystore.certificate.chain={dir}/{crt}");
        let _ = writeln!(own, "{prefix}.ssl.keystore.key={dir}/{key}");
    }
    Ok(own)
}

/// Broker keys Kafka (and Fjord's broker) change at run time as cluster-wide defaults: editing
/// them in `spec.kafka.config` is applied with IncrementalAlterConfigs and restarts nothing (they
/// are still written to the properties files, so a restarted broker starts with them, and left
/// out of the pod-template hash).
pub const DYNAMIC_BROKER_KEYS: &[&str] = &[
    "compression.type",
    "log.cleanup.policy",
    "log.index.interval.bytes",
    "log.message.timestamp.type",
    "log.retention.bytes",
    "log.retention.hours",
    "log.retention.minutes",
    "log.retention.ms",
    "log.roll.hours",
    "log.roll.ms",
    "log.segment.bytes",
    "message.max.bytes",
    "min.insync.replicas",
];

/// The dynamic part of `spec.kafka.config` (see [`DYNAMIC_BROKER_KEYS`]) as broker strings.
pub fn dynamic_config(kafka: &Kafka) -> Result<BTreeMap<String, String>, String> {
    kafka
        .spec
        .kafka
        .config
        .iter()
        .filter(|(k, _)| DYNAMIC_BROKER_KEYS.contains(&k.as_str()))
        .map(|(k, v)| Ok((k.clone(), config_value_string(k, v)?)))
        .collect()
}

/// What to set and delete in the cluster-wide broker defaults so the dynamic keys match
/// `desired`: values that differ are set; dynamic keys set but no longer wanted are deleted
/// (other keys, such as replication throttles a tool set, are left alone).
pub fn dynamic_changes(
    desired: &BTreeMap<String, String>,
    current: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, Vec<String>) {
    let set = desired
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let delete = current
        .keys()
        .filter(|k| DYNAMIC_BROKER_KEYS.contains(&k.as_str()) && !desired.contains_key(*k))
        .cloned()
        .collect();
    (set, delete)
}

/// Short hash of the shared configuration, written on the pod template.
pub fn config_hash(shared: &str) -> String {
    let digest = Sha256::digest(shared.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The ConfigMap with one properties file per broker, and the hash of their shared part.
/// `node_ports`: see [`pod_properties`]; an error names a node port that is still missing.
pub fn config_map(
    kafka: &Kafka,
    identity: &Identity,
    node_ports: &NodePorts,
) -> Result<(ConfigMap, String), String> {
    let shared = shared_properties(kafka, identity)?;
    // The hash (what makes the roller restart brokers) leaves out what changes at run time.
    let mut restart_relevant = kafka.clone();
    restart_relevant
        .spec
        .kafka
        .config
        .retain(|k, _| !DYNAMIC_BROKER_KEYS.contains(&k.as_str()));
    let hash = config_hash(&shared_properties(&restart_relevant, identity)?);
    let data: BTreeMap<String, String> = (0..kafka.spec.kafka.replicas.max(0))
        .map(|i| {
            pod_properties(kafka, i, &identity.voters, node_ports)
                .map(|own| (file_name(i), format!("{shared}{own}")))
        })
        .collect::<Result<_, _>>()?;
    let cm = ConfigMap {
        metadata: owned_meta(kafka, names::config_map(kafka)),
        data: Some(data),
        ..ConfigMap::default()
    };
    Ok((cm, hash))
}

#[cfg(test)]
#[path = "broker_config_tests.rs"]
mod tests;
