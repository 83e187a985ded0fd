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
    Affinity, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSpec, PodTemplateSpec, Probe,
    ServiceAccount, TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use crate::crd::kafka::{JbodVolumeType, MetricsType, StorageType};
use crate::crd::Kafka;

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
pub fn statefulset(kafka: &Kafka, config_hash: &str) -> StatefulSet {
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
    annotations.insert(CONFIG_HASH_ANNOTATION.into(), config_hash.into());
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
    let claims: Vec<PersistentVolumeClaim> =
        volumes.iter().filter_map(|v| v.claim.clone()).collect();

    let pod = PodSpec {
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
mod tests {
    use super::*;
    use crate::resources::test_support::{kafka, THREE_BROKERS};

    fn pod_spec(sts: &StatefulSet) -> &PodSpec {
        sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    #[test]
    fn brokers_are_restarted_only_by_the_operator() {
        let sts = statefulset(&kafka(THREE_BROKERS), "h1");
        let spec = sts.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(
            spec.update_strategy.as_ref().unwrap().type_.as_deref(),
            Some("OnDelete")
        );
        assert_eq!(
            spec.service_name.as_deref(),
            Some("my-cluster-kafka-brokers")
        );
        let annotations = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref();
        assert_eq!(annotations.unwrap()[CONFIG_HASH_ANNOTATION], "h1");
        let owner = &sts.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "Kafka");
        assert_eq!(owner.controller, Some(true));
    }

    #[test]
    fn node_id_comes_from_the_pod_index_label() {
        let sts = statefulset(&kafka(THREE_BROKERS), "h");
        let c = &pod_spec(&sts).containers[0];
        assert_eq!(
            c.args.as_ref().unwrap()[0],
            "/etc/fjord/broker-$(POD_INDEX).properties"
        );
        let env = c.env.as_ref().unwrap();
        let index = env.iter().find(|e| e.name == "POD_INDEX").unwrap();
        let field = index
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            field.field_path,
            "metadata.labels['apps.kubernetes.io/pod-index']"
        );
        let probe = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(probe.path.as_deref(), Some("/v1/ready"));
        assert_eq!(probe.port, IntOrString::Int(9644));
        let ports: Vec<i32> = c.ports.iter().flatten().map(|p| p.container_port).collect();
        assert_eq!(ports, vec![9090, 9091, 9644, 9092]);
    }

    #[test]
    fn persistent_storage_gets_claim_templates() {
        let k = kafka(
            r#"
kafka:
  replicas: 3
  listeners: [{name: plain, port: 9092, type: internal, tls: false}]
  storage: {type: persistent-claim, size: 20Gi, class: fast}
"#,
        );
        let sts = statefulset(&k, "h");
        let claims = sts
            .spec
            .as_ref()
            .unwrap()
            .volume_claim_templates
            .clone()
            .unwrap();
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
        let pvc = claims[0].spec.as_ref().unwrap();
        assert_eq!(pvc.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            pvc.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"],
            Quantity("20Gi".into())
        );
        // The data volume is a claim, not an emptyDir.
        let retention = sts
            .spec
            .as_ref()
            .unwrap()
            .persistent_volume_claim_retention_policy
            .clone();
        assert_eq!(
            retention.unwrap().when_deleted.as_deref(),
            Some("Retain"),
            "data kept by default"
        );
        let vols = pod_spec(&sts).volumes.as_ref().unwrap();
        assert!(vols.iter().all(|v| v.name != "data"));
        let mounts = pod_spec(&sts).containers[0].volume_mounts.clone().unwrap();
        assert!(mounts
            .iter()
            .any(|m| m.name == "data" && m.mount_path == "/var/lib/fjord/data"));
    }

    #[test]
    fn ephemeral_storage_is_an_empty_dir_with_the_size_limit() {
        let mut k = kafka(THREE_BROKERS);
        k.spec.kafka.storage.size = Some("5Gi".into());
        let sts = statefulset(&k, "h");
        assert!(sts.spec.as_ref().unwrap().volume_claim_templates.is_none());
        let data = pod_spec(&sts)
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "data")
            .unwrap();
        assert_eq!(
            data.empty_dir.as_ref().unwrap().size_limit,
            Some(Quantity("5Gi".into()))
        );
    }

    #[test]
    fn template_and_rack_are_applied() {
        let k = kafka(
            r#"
kafka:
  replicas: 3
  image: example.org/fjord:dev
  listeners: [{name: plain, port: 9092, type: internal, tls: false}]
  storage: {type: ephemeral}
  rack: {topologyKey: topology.kubernetes.io/zone}
  metricsConfig: {type: prometheus}
  template:
    pod:
      metadata: {labels: {team: data, app.kubernetes.io/name: hijack}, annotations: {a: b}}
      tolerations: [{key: dedicated, operator: Equal, value: kafka, effect: NoSchedule}]
"#,
        );
        let sts = statefulset(&k, "h");
        let meta = sts
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .clone()
            .unwrap();
        let labels = meta.labels.unwrap();
        assert_eq!(labels["team"], "data");
        assert_eq!(
            labels["app.kubernetes.io/name"], "kafka",
            "selector labels win"
        );
        let annotations = meta.annotations.unwrap();
        assert_eq!(annotations["a"], "b");
        assert_eq!(annotations["prometheus.io/port"], "9644");
        let pod = pod_spec(&sts);
        assert_eq!(
            pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
            Some("dedicated")
        );
        let anti = pod
            .affinity
            .as_ref()
            .unwrap()
            .pod_anti_affinity
            .as_ref()
            .unwrap();
        let term = &anti
            .preferred_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()[0];
        assert_eq!(
            term.pod_affinity_term.topology_key,
            "topology.kubernetes.io/zone"
        );
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("example.org/fjord:dev"));
        assert!(c
            .args
            .as_ref()
            .unwrap()
            .contains(&"broker.rack=$(BROKER_RACK)".to_string()));
    }

    #[test]
    fn nodeport_brokers_learn_their_node_address_from_the_downward_api() {
        let env_names = |k: &Kafka| -> Vec<String> {
            let sts = statefulset(k, "h");
            pod_spec(&sts).containers[0]
                .env
                .iter()
                .flatten()
                .map(|e| e.name.clone())
                .collect()
        };
        assert!(!env_names(&kafka(THREE_BROKERS)).contains(&"FJORD_NODE_ADDRESS".to_string()));
        let k = kafka(
            r#"
kafka:
  replicas: 3
  listeners:
    - {name: plain, port: 9092, type: internal, tls: false}
    - {name: external, port: 9094, type: nodeport, tls: false}
  storage: {type: ephemeral}
"#,
        );
        let sts = statefulset(&k, "h");
        let env = pod_spec(&sts).containers[0].env.clone().unwrap();
        let node = env.iter().find(|e| e.name == "FJORD_NODE_ADDRESS").unwrap();
        assert_eq!(
            node.value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "status.hostIP"
        );
        assert_eq!(
            image(&k),
            format!("localhost/fjord-broker:{}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn default_image_follows_version() {
        let mut k = kafka(THREE_BROKERS);
        k.spec.kafka.version = Some("9.9.9".into());
        assert_eq!(image(&k), "localhost/fjord-broker:9.9.9");
    }
}
