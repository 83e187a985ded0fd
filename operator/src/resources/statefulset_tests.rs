//! Unit tests of the broker StatefulSet builder (kept apart so the builder stays readable).

use super::*;
use crate::resources::test_support::{kafka, THREE_BROKERS};

fn pod_spec(sts: &StatefulSet) -> &PodSpec {
    sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

#[test]
fn brokers_are_restarted_only_by_the_operator() {
    let sts = statefulset(&kafka(THREE_BROKERS), &inputs("h1"));
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
    let sts = statefulset(&kafka(THREE_BROKERS), &inputs("h"));
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
    let sts = statefulset(&k, &inputs("h"));
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
    let sts = statefulset(&k, &inputs("h"));
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
    let sts = statefulset(&k, &inputs("h"));
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
        let sts = statefulset(k, &inputs("h"));
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
    let sts = statefulset(&k, &inputs("h"));
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

#[test]
fn pods_pass_the_restricted_pod_security_standard() {
    let sts = statefulset(&kafka(THREE_BROKERS), &inputs("h"));
    let pod = pod_spec(&sts).security_context.clone().unwrap();
    assert_eq!(pod.run_as_non_root, Some(true));
    assert_eq!(pod.run_as_user, Some(65532));
    assert_eq!(
        pod.fs_group,
        Some(65532),
        "data volumes writable by the broker"
    );
    assert_eq!(pod.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let c = pod_spec(&sts).containers[0]
        .security_context
        .clone()
        .unwrap();
    assert_eq!(c.allow_privilege_escalation, Some(false));
    assert_eq!(c.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
    assert_eq!(c.read_only_root_filesystem, Some(true));
}

fn inputs(config_hash: &str) -> TemplateInputs {
    TemplateInputs {
        config_hash: config_hash.into(),
        ..TemplateInputs::default()
    }
}

#[test]
fn every_broker_mounts_its_certificate_and_the_cas_it_trusts() {
    let secret_of = |sts: &StatefulSet, volume: &str| {
        pod_spec(sts)
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == volume)
            .and_then(|v| v.secret.as_ref())
            .and_then(|s| s.secret_name.clone())
    };
    let mount_of = |sts: &StatefulSet, volume: &str| {
        pod_spec(sts).containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == volume)
            .map(|m| m.mount_path.clone())
    };
    let template_annotation = |sts: &StatefulSet, key: &str| {
        sts.spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .and_then(|a| a.get(key).cloned())
    };
    // Plaintext client listeners only: still a certificate (replication, quorum) and the
    // cluster CA, but no clients CA.
    let plain = kafka(THREE_BROKERS);
    let generations = TemplateInputs {
        config_hash: "h".into(),
        cluster_ca_generation: 4,
        clients_ca_generation: 2,
    };
    let sts = statefulset(&plain, &generations);
    assert_eq!(
        secret_of(&sts, "broker-certs").as_deref(),
        Some("my-cluster-kafka-brokers")
    );
    assert_eq!(
        secret_of(&sts, "cluster-ca").as_deref(),
        Some("my-cluster-cluster-ca-cert"),
        "the public CA Secret, never the key"
    );
    assert_eq!(
        mount_of(&sts, "cluster-ca").as_deref(),
        Some(certificates::CLUSTER_CA_DIR)
    );
    assert_eq!(secret_of(&sts, "clients-ca"), None);
    assert_eq!(
        template_annotation(&sts, CLUSTER_CA_GENERATION_ANNOTATION).as_deref(),
        Some("4"),
        "a renewed cluster CA changes the template (and rolls the brokers)"
    );
    assert_eq!(
        template_annotation(&sts, CLIENTS_CA_GENERATION_ANNOTATION),
        None
    );
    let mut mtls = plain.clone();
    mtls.spec.kafka.listeners = serde_yaml::from_str(
        "[{name: mtls, port: 9093, type: internal, tls: true, authentication: {type: tls}}]",
    )
    .unwrap();
    let sts = statefulset(&mtls, &generations);
    assert_eq!(
        secret_of(&sts, "clients-ca").as_deref(),
        Some("my-cluster-clients-ca-cert")
    );
    assert_eq!(
        mount_of(&sts, "clients-ca").as_deref(),
        Some(certificates::CLIENTS_CA_DIR)
    );
    assert_eq!(
        template_annotation(&sts, CLIENTS_CA_GENERATION_ANNOTATION).as_deref(),
        Some("2")
    );
}
