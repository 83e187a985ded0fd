//! The cluster's NetworkPolicy (Strimzi's `<cluster>-network-policy-kafka`): mutual TLS already
//! refuses anyone without a certificate the cluster CA signed on the brokers' own ports, and
//! this keeps everyone else from even reaching them, where the CNI enforces policies.
//!
//! - controller (9090) and replication (9091): the cluster's broker pods; replication also the
//!   operator's pods (its admin connection), in any namespace;
//! - admin HTTP (9644): the operator's pods (readiness, restart safety); with `metricsConfig`
//!   set, everyone, since Prometheus scrapes `/metrics` there (the endpoint is read-only);
//! - each client listener: its `networkPolicyPeers`, or everyone when it lists none.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    kafka_name, owned_meta, selector_labels, ADMIN_PORT, CONTROLLER_PORT, REPLICATION_PORT,
};
use crate::crd::Kafka;

/// The label every operator pod carries (the chart's selector label).
pub const OPERATOR_POD_LABEL: (&str, &str) = ("app.kubernetes.io/name", "fjord-operator");

/// The policy's name.
pub fn name(kafka: &Kafka) -> String {
    format!("{}-network-policy-kafka", kafka_name(kafka))
}

fn ports(numbers: &[i32]) -> Option<Vec<NetworkPolicyPort>> {
    Some(
        numbers
            .iter()
            .map(|&p| NetworkPolicyPort {
                port: Some(IntOrString::Int(p)),
                protocol: Some("TCP".into()),
                ..NetworkPolicyPort::default()
            })
            .collect(),
    )
}

fn pods(labels: BTreeMap<String, String>, any_namespace: bool) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(labels),
            ..LabelSelector::default()
        }),
        // An empty namespace selector means every namespace (the operator's is not the Kafka's).
        namespace_selector: any_namespace.then(LabelSelector::default),
        ..NetworkPolicyPeer::default()
    }
}

/// The NetworkPolicy for `kafka`'s broker pods.
pub fn network_policy(kafka: &Kafka) -> NetworkPolicy {
    let brokers = pods(selector_labels(kafka), false);
    let operator = pods(
        BTreeMap::from([(
            OPERATOR_POD_LABEL.0.to_string(),
            OPERATOR_POD_LABEL.1.to_string(),
        )]),
        true,
    );
    let mut rules = vec![
        NetworkPolicyIngressRule {
            from: Some(vec![brokers.clone()]),
            ports: ports(&[CONTROLLER_PORT, REPLICATION_PORT]),
        },
        NetworkPolicyIngressRule {
            from: Some(vec![operator.clone()]),
            ports: ports(&[REPLICATION_PORT, ADMIN_PORT]),
        },
    ];
    if kafka.spec.kafka.metrics_config.is_some() {
        rules.push(NetworkPolicyIngressRule {
            from: None,
            ports: ports(&[ADMIN_PORT]),
        });
    }
    for l in &kafka.spec.kafka.listeners {
        rules.push(NetworkPolicyIngressRule {
            from: (!l.network_policy_peers.is_empty()).then(|| l.network_policy_peers.clone()),
            ports: ports(&[l.port]),
        });
    }
    NetworkPolicy {
        metadata: owned_meta(kafka, name(kafka)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(kafka)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(rules),
            ..NetworkPolicySpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_support::kafka;

    /// (ports, who: None = everyone) of each rule.
    fn rules(policy: &NetworkPolicy) -> Vec<(Vec<i32>, Option<Vec<NetworkPolicyPeer>>)> {
        policy
            .spec
            .as_ref()
            .unwrap()
            .ingress
            .clone()
            .unwrap()
            .into_iter()
            .map(|r| {
                let ports = r
                    .ports
                    .unwrap()
                    .into_iter()
                    .map(|p| match p.port {
                        Some(IntOrString::Int(n)) => n,
                        other => panic!("{other:?}"),
                    })
                    .collect();
                (ports, r.from)
            })
            .collect()
    }

    #[test]
    fn only_brokers_and_the_operator_reach_the_internal_ports() {
        let k = kafka(
            r#"
kafka:
  replicas: 3
  listeners:
    - {name: plain, port: 9092, type: internal, tls: false}
    - name: tls
      port: 9093
      type: internal
      tls: true
      networkPolicyPeers: [{podSelector: {matchLabels: {app: orders}}}]
  storage: {type: ephemeral}
"#,
        );
        let policy = network_policy(&k);
        assert_eq!(
            policy.metadata.name.as_deref(),
            Some("my-cluster-network-policy-kafka")
        );
        let spec = policy.spec.as_ref().unwrap();
        assert_eq!(
            spec.pod_selector.as_ref().unwrap().match_labels,
            Some(selector_labels(&k)),
            "applies to this cluster's brokers"
        );
        let rules = rules(&policy);
        let broker_pods = rules[0].1.as_ref().unwrap()[0].clone();
        assert_eq!(rules[0].0, vec![9090, 9091]);
        assert_eq!(
            broker_pods.pod_selector.unwrap().match_labels,
            Some(selector_labels(&k))
        );
        assert_eq!(broker_pods.namespace_selector, None, "own namespace only");
        assert_eq!(rules[1].0, vec![9091, 9644], "the operator");
        let operator = rules[1].1.as_ref().unwrap()[0].clone();
        assert_eq!(
            operator.pod_selector.unwrap().match_labels.unwrap()["app.kubernetes.io/name"],
            "fjord-operator"
        );
        assert_eq!(rules[2], (vec![9092], None), "no peers: everyone");
        let peers = rules[3].1.as_ref().unwrap();
        assert_eq!(rules[3].0, vec![9093]);
        assert_eq!(
            peers[0]
                .pod_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["app"],
            "orders"
        );
        assert_eq!(rules.len(), 4, "no metrics rule without metricsConfig");
        // Nobody else gets a rule naming 9090/9091.
        assert!(rules[2..]
            .iter()
            .all(|(ports, _)| !ports.contains(&9090) && !ports.contains(&9091)));
    }

    #[test]
    fn metrics_open_the_admin_port_to_prometheus() {
        let k = kafka(
            r#"
kafka:
  replicas: 1
  listeners: []
  metricsConfig: {type: prometheus}
  storage: {type: ephemeral}
"#,
        );
        let rules = rules(&network_policy(&k));
        assert!(rules.contains(&(vec![9644], None)), "{rules:?}");
    }
}
