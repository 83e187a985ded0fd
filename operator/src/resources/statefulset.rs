//! The brokers' StatefulSet and ServiceAccount.
//!
//! `updateStrategy: OnDelete`: Kubernetes never restarts a broker by itself; the operator's roller
//! decides when (gated by the broker's `/v1/restart-safety`). The pod template carries the config
//! hash so the roller can tell which pods run stale configuration.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecretVolumeSource, SecurityContext, ServiceAccount,
    TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use crate::crd::kafka::{JbodVolumeType, MetricsType, StorageType};
use crate::crd::Kafka;

use super::certificates;
use super::{
    common_labels, names, owned_meta, selector_labels, ADMIN_PORT, CONFIG_DIR, CONTROLLER_PORT,
    DATA_ROOT, REPLICATION_PORT,
};

/// Pod-template annotation holding the hash of the brokers' shared configuration.
pub const CONFIG_HASH_ANNOTATION: &str = "kafka.fjord.dev/config-hash";
/// The label Kubernetes puts on each StatefulSet pod with its ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// Default seconds a broker gets to move leadership away on SIGTERM.
const DEFAULT_GRACE_SECONDS: i64 = 120;

/// The broker image for this cluster: `spec.kafka.image`, else the release's default image.
pub fn image(kafka: &Kafka) -> String {
    let spec = &kafka.spec.kafka;
    spec.image.clone().unwrap_or_else(|| {
        let version = spec
            .version
            .clone()
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
        format!("localhost/fjord-broker:{version}")
    })
}

/// One data volume: mount name and, for persistent storage, its claim template.
struct DataVolume {
    name: String,
    claim: Option<PersistentVolumeClaim>,
    size_limit: Option<String>,
}

fn data_volumes(kafka: &Kafka) -> Vec<DataVolume> {
    let storage = &kafka.spec.kafka.storage;
    let claim = |name: &str, size: &Option<String>, class: &Option<String>| PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(selector_labels(kafka)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(size.clone().unwrap_or_default()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    match storage.type_ {
        StorageType::Ephemeral => vec![DataVolume {
            name: "data".into(),
            claim: None,
            size_limit: storage.size.clone(),
        }],
        StorageType::PersistentClaim => vec![DataVolume {
            name: "data".into(),
            claim: Some(claim("data", &storage.size, &storage.class)),
            size_limit: None,
        }],
        StorageType::Jbod => storage
            .volumes
            .iter()
            .flatten()
            .map(|v| {
                let name = format!("data-{}", v.id);
                DataVolume {
                    claim: (v.type_ == JbodVolumeType::PersistentClaim)
                        .then(|| claim(&name, &v.size, &v.class)),
                    size_limit: (v.type_ == JbodVolumeType::Ephemeral)
                        .then(|| v.size.clone())
                        .flatten(),
                    name,
                }
            })
            .collect(),
    }
}

fn env_from_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn port(name: &str, number: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: number,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn broker_container(kafka: &Kafka, volumes: &[DataVolume]) -> Container {
    let spec = &kafka.spec.kafka;
    let mut env = vec![
        env_from_field("POD_NAME", "metadata.name"),
        env_from_field(
            "POD_INDEX",
            &format!("metadata.labels['{POD_INDEX_LABEL}']"),
        ),
    ];
    if super::broker_config::uses_node_address(kafka) {
        // Nodeport listeners advertise `${env:FJORD_NODE_ADDRESS}` (the broker's env config
        // provider): the node a pod runs on is known only once it is scheduled.
        env.push(env_from_field(
            super::broker_config::NODE_ADDRESS_ENV,
            "status.hostIP",
        ));
    }
    // `$(POD_INDEX)` is expanded by the kubelet: each pod reads its own file.
    let mut args = vec![format!("{CONFIG_DIR}/broker-$(POD_INDEX).properties")];
    if let Some(rack) = &spec.rack {
        env.push(env_from_field(
            "BROKER_RACK",
            &format!("metadata.labels['{}']", rack.topology_key),
        ));
        args.extend(["--override".into(), "broker.rack=$(BROKER_RACK)".into()]);
    }
    let mut ports = vec![
        port("tcp-ctrlplane", CONTROLLER_PORT),
        port("tcp-replication", REPLICATION_PORT),
        port("http-admin", ADMIN_PORT),
    ];
    ports.extend(
        spec.listeners
            .iter()
            .map(|l| port(&format!("tcp-{}", l.name), l.port)),
    );
    let mut mounts = vec![VolumeMount {
        name: "config".into(),
        mount_path: CONFIG_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    for (volume, _, dir) in certificate_volumes(kafka) {
        mounts.push(VolumeMount {
            name: volume.into(),
            mount_path: dir.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    mounts.extend(volumes.iter().map(|v| VolumeMount {
        name: v.name.clone(),
        mount_path: format!("{DATA_ROOT}/{}", v.name),
        ..VolumeMount::default()
    }));
    Container {
        name: "kafka".into(),
        image: Some(image(kafka)),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        env: Some(env),
        ports: Some(ports),
        volume_mounts: Some(mounts),
        resources: spec.resources.clone(),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/v1/ready".into()),
                port: IntOrString::Int(ADMIN_PORT),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(5),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        security_context: Some(container_security_context()),
        // Liveness only asks "is the process serving at all": log recovery can take long and
        // must not get the broker killed.
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(ADMIN_PORT),
                ..TCPSocketAction::default()
            }),
            initial_delay_seconds: Some(15),
            period_seconds: Some(10),
            failure_threshold: Some(6),
            ..Probe::default()
        }),
        ..Container::default()
    }
}

/// The certificate volumes of a broker pod: (volume, Secret, mount directory). Every broker
/// has its own certificate and trusts the cluster CA (the replication and controller listeners
/// are mutual TLS); the clients CA only where a listener authenticates users by certificate.
fn certificate_volumes(kafka: &Kafka) -> Vec<(&'static str, String, &'static str)> {
    let mut out = vec![
        (
            "broker-certs",
            certificates::broker_certs_secret_name(kafka),
            certificates::BROKER_CERTS_DIR,
        ),
        (
            "cluster-ca",
            certificates::CaKind::Cluster.cert_secret(kafka),
            certificates::CLUSTER_CA_DIR,
        ),
    ];
    if certificates::needs_clients_ca(kafka) {
        out.push((
            "clients-ca",
            certificates::CaKind::Clients.cert_secret(kafka),
            certificates::CLIENTS_CA_DIR,
        ));
    }
    out
}

/// Pod-template annotations with the generation of each CA certificate the brokers trust
/// (Strimzi's `strimzi.io/cluster-ca-cert-generation`): a renewed CA changes the template, so
/// the roller restarts the brokers one at a time onto it.
pub const CLUSTER_CA_GENERATION_ANNOTATION: &str = "kafka.fjord.dev/cluster-ca-cert-generation";
pub const CLIENTS_CA_GENERATION_ANNOTATION: &str = "kafka.fjord.dev/clients-ca-cert-generation";

/// What the pod template is made from besides the `Kafka` itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateInputs {
    /// Hash of the brokers' shared configuration.
    pub config_hash: String,
    pub cluster_ca_generation: u64,
    pub clients_ca_generation: u64,
}

/// The image's non-root user (`fjord`, see `fjord_e2e::oci`); fixed so volumes are writable
/// through `fsGroup` whatever the storage.
pub const BROKER_UID: i64 = 65532;

/// Pod-level settings of the `restricted` Pod Security Standard: non-root with a fixed user and
/// group, data volumes group-owned by it, the runtime's default seccomp profile.
fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(BROKER_UID),
        run_as_group: Some(BROKER_UID),
        fs_group: Some(BROKER_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// Container-level settings of the `restricted` standard: no privilege escalation, no
/// capabilities, and a read-only root filesystem (the broker writes only below its data
/// volumes; its configuration is a read-only ConfigMap mount).
fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        ..SecurityContext::default()
    }
}

/// Anti-affinity that prefers one broker per node (and per rack when racks are set), merged
/// under any affinity from `template.pod.affinity`.
fn affinity(kafka: &Kafka) -> Option<Affinity> {
    let spec = &kafka.spec.kafka;
    let template = spec.template.as_ref().and_then(|t| t.pod.as_ref());
    let mut affinity = template
        .and_then(|p| p.affinity.clone())
        .unwrap_or_default();
    if let Some(rack) = &spec.rack {
        let anti = affinity
            .pod_anti_affinity
            .get_or_insert_with(PodAntiAffinity::default);
        anti.preferred_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: PodAffinityTerm {
                    topology_key: rack.topology_key.clone(),
                    label_selector: Some(LabelSelector {
                        match_labels: Some(selector_labels(kafka)),
                        ..LabelSelector::default()
                    }),
                    ..PodAffinityTerm::default()
                },
            });
    }
    (affinity != Affinity::default()).then_some(affinity)
}

/// The StatefulSet running the brokers; `config_hash` comes from [`broker_config::config_map`].
pub fn statefulset(kafka: &Kafka, inputs: &TemplateInputs) -> StatefulSet {
    let spec = &kafka.spec.kafka;
    let template = spec.template.as_ref().and_then(|t| t.pod.as_ref());
    let volumes = data_volumes(kafka);

    let mut labels = common_labels(kafka);
    let mut annotations = BTreeMap::new();
    if let Some(meta) = template.and_then(|p| p.metadata.as_ref()) {
        // The operator's own labels win: they are the selector.
        for (k, v) in &meta.labels {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
        annotations.extend(meta.annotations.clone());
    }
    annotations.insert(CONFIG_HASH_ANNOTATION.into(), inputs.config_hash.clone());
    annotations.insert(
        CLUSTER_CA_GENERATION_ANNOTATION.into(),
        inputs.cluster_ca_generation.to_string(),
    );
    if certificates::needs_clients_ca(kafka) {
        annotations.insert(
            CLIENTS_CA_GENERATION_ANNOTATION.into(),
            inputs.clients_ca_generation.to_string(),
        );
    }
    if spec.metrics_config.as_ref().map(|m| m.type_) == Some(MetricsType::Prometheus) {
        annotations.insert("prometheus.io/scrape".into(), "true".into());
        annotations.insert("prometheus.io/port".into(), ADMIN_PORT.to_string());
        annotations.insert("prometheus.io/path".into(), "/metrics".into());
    }

    let mut pod_volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: names::config_map(kafka),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    pod_volumes.extend(
        volumes
            .iter()
            .filter(|v| v.claim.is_none())
            .map(|v| Volume {
                name: v.name.clone(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: v.size_limit.clone().map(Quantity),
                    ..EmptyDirVolumeSource::default()
                }),
                ..Volume::default()
            }),
    );
    for (volume, secret, _) in certificate_volumes(kafka) {
        pod_volumes.push(Volume {
            name: volume.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                // Readable by the broker's group (fsGroup) only.
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    let claims: Vec<PersistentVolumeClaim> =
        volumes.iter().filter_map(|v| v.claim.clone()).collect();

    let pod = PodSpec {
        security_context: Some(pod_security_context()),
        service_account_name: Some(names::service_account(kafka)),
        containers: vec![broker_container(kafka, &volumes)],
        volumes: Some(pod_volumes),
        affinity: affinity(kafka),
        tolerations: template.and_then(|p| p.tolerations.clone()),
        priority_class_name: template.and_then(|p| p.priority_class_name.clone()),
        termination_grace_period_seconds: Some(
            template
                .and_then(|p| p.termination_grace_period_seconds)
                .unwrap_or(DEFAULT_GRACE_SECONDS),
        ),
        ..PodSpec::default()
    };

    StatefulSet {
        metadata: owned_meta(kafka, names::statefulset(kafka)),
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.replicas),
            service_name: Some(names::headless_service(kafka)),
            selector: LabelSelector {
                match_labels: Some(selector_labels(kafka)),
                ..LabelSelector::default()
            },
            // Brokers start together: a quorum needs its voters up at the same time.
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            volume_claim_templates: (!claims.is_empty()).then_some(claims),
            persistent_volume_claim_retention_policy: Some(claim_retention(kafka)),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// Claims are deleted (with the cluster, or with a broker removed by a scale-down) only when every
/// persistent volume says `deleteClaim: true`. A scale-down removes a broker only after draining
/// it (`reconcile::scaling`: the metadata shows it hosting no replica), so its claim holds no
/// only copy.
fn claim_retention(kafka: &Kafka) -> StatefulSetPersistentVolumeClaimRetentionPolicy {
    let storage = &kafka.spec.kafka.storage;
    let delete = match storage.type_ {
        StorageType::Jbod => storage
            .volumes
            .iter()
            .flatten()
            .all(|v| v.delete_claim == Some(true)),
        _ => storage.delete_claim == Some(true),
    };
    StatefulSetPersistentVolumeClaimRetentionPolicy {
        when_deleted: Some(if delete { "Delete" } else { "Retain" }.into()),
        when_scaled: Some(if delete { "Delete" } else { "Retain" }.into()),
    }
}

/// The brokers' ServiceAccount (no API access is granted to it).
pub fn service_account(kafka: &Kafka) -> ServiceAccount {
    ServiceAccount {
        metadata: owned_meta(kafka, names::service_account(kafka)),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

/// Names of the data volumes, for tests and the storage-deletion logic.
pub fn data_volume_names(kafka: &Kafka) -> Vec<String> {
    data_volumes(kafka).into_iter().map(|v| v.name).collect()
}

#[cfg(test)]
#[path = "statefulset_tests.rs"]
mod tests;
