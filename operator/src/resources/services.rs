//! Services: a headless one for pod DNS (inter-broker traffic and advertised listeners), the
//! `-kafka-bootstrap` ClusterIP Service for clients inside the cluster, one bootstrap Service per
//! listener that asks for its own Service type, and for nodeport listeners one NodePort Service
//! per broker (Strimzi's layout), whose node port that broker advertises.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::kafka::{
    GenericKafkaListener, GenericKafkaListenerConfigurationBroker, ListenerType,
};
use crate::crd::Kafka;

use super::{names, owned_meta, selector_labels, ADMIN_PORT, CONTROLLER_PORT, REPLICATION_PORT};

/// Label Kubernetes puts on every StatefulSet pod with the pod's name.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";

fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

fn listener_port(l: &GenericKafkaListener) -> ServicePort {
    service_port(&format!("tcp-{}", l.name), l.port)
}

/// Every pod gets `<pod>.<cluster>-kafka-brokers.<ns>.svc`, published before it is ready because
/// brokers must reach each other (quorum, replication) to become ready at all.
pub fn headless_service(kafka: &Kafka) -> Service {
    let mut ports = vec![
        service_port("tcp-ctrlplane", CONTROLLER_PORT),
        service_port("tcp-replication", REPLICATION_PORT),
        service_port("http-metrics", ADMIN_PORT),
    ];
    ports.extend(kafka.spec.kafka.listeners.iter().map(listener_port));
    Service {
        metadata: owned_meta(kafka, names::headless_service(kafka)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(kafka)),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Ready brokers only, on every `internal` listener — never the brokers' own replication and
/// controller ports (the operator reaches those through the headless Service). `None` when no
/// listener is internal (a Service needs a port).
pub fn bootstrap_service(kafka: &Kafka) -> Option<Service> {
    let ports: Vec<ServicePort> = kafka
        .spec
        .kafka
        .listeners
        .iter()
        .filter(|l| l.type_ == ListenerType::Internal)
        .map(listener_port)
        .collect();
    if ports.is_empty() {
        return None;
    }
    Some(Service {
        metadata: owned_meta(kafka, names::bootstrap_service(kafka)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(kafka)),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// One Service per listener of type cluster-ip, nodeport or loadbalancer.
pub fn listener_services(kafka: &Kafka) -> Vec<Service> {
    kafka
        .spec
        .kafka
        .listeners
        .iter()
        .filter_map(|l| {
            let type_ = match l.type_ {
                ListenerType::Internal => return None,
                ListenerType::ClusterIp => "ClusterIP",
                ListenerType::Nodeport => "NodePort",
                ListenerType::Loadbalancer => "LoadBalancer",
            };
            let mut port = listener_port(l);
            if l.type_ == ListenerType::Nodeport {
                port.node_port = l
                    .configuration
                    .as_ref()
                    .and_then(|c| c.bootstrap.as_ref())
                    .and_then(|b| b.node_port);
            }
            Some(Service {
                metadata: owned_meta(kafka, names::listener_service(kafka, &l.name)),
                spec: Some(ServiceSpec {
                    type_: Some(type_.into()),
                    selector: Some(selector_labels(kafka)),
                    ports: Some(vec![port]),
                    ..ServiceSpec::default()
                }),
                ..Service::default()
            })
        })
        .collect()
}

/// `spec.kafka.listeners[].configuration.brokers[]` entry for broker `ordinal`, if any.
pub fn broker_override(
    listener: &GenericKafkaListener,
    ordinal: i32,
) -> Option<&GenericKafkaListenerConfigurationBroker> {
    listener
        .configuration
        .as_ref()?
        .brokers
        .iter()
        .find(|b| b.broker == ordinal)
}

fn nodeport_listeners(kafka: &Kafka) -> impl Iterator<Item = &GenericKafkaListener> {
    kafka
        .spec
        .kafka
        .listeners
        .iter()
        .filter(|l| l.type_ == ListenerType::Nodeport)
}

/// One NodePort Service per broker and nodeport listener, selecting exactly that broker's pod
/// (`statefulset.kubernetes.io/pod-name`), with the node port from `configuration.brokers[]` or,
/// when not given, one Kubernetes allocates (read back by the reconciler).
pub fn broker_services(kafka: &Kafka) -> Vec<Service> {
    let mut out = Vec::new();
    for l in nodeport_listeners(kafka) {
        for ordinal in 0..kafka.spec.kafka.replicas.max(0) {
            let mut selector = selector_labels(kafka);
            selector.insert(POD_NAME_LABEL.into(), names::pod(kafka, ordinal));
            let mut port = listener_port(l);
            port.node_port = broker_override(l, ordinal).and_then(|b| b.node_port);
            out.push(Service {
                metadata: owned_meta(
                    kafka,
                    names::listener_broker_service(kafka, &l.name, ordinal),
                ),
                spec: Some(ServiceSpec {
                    type_: Some("NodePort".into()),
                    selector: Some(selector),
                    ports: Some(vec![port]),
                    ..ServiceSpec::default()
                }),
                ..Service::default()
            });
        }
    }
    out
}

/// Node ports of one nodeport listener, as Kubernetes reports them on the applied Services.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerNodePorts {
    /// Node port of the listener's bootstrap Service.
    pub bootstrap: Option<i32>,
    /// Node port of each broker's Service, by ordinal.
    pub brokers: BTreeMap<i32, i32>,
}

/// Node ports per nodeport listener name.
pub type NodePorts = BTreeMap<String, ListenerNodePorts>;

fn node_port_of(services: &[Service], name: &str) -> Option<i32> {
    services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p.first())
        .and_then(|p| p.node_port)
}

/// Reads the node ports of every nodeport listener out of `applied` (the Services as the API
/// server returned them: with the node ports it allocated). Missing ones are left out.
pub fn node_ports(kafka: &Kafka, applied: &[Service]) -> NodePorts {
    nodeport_listeners(kafka)
        .map(|l| {
            let ports = ListenerNodePorts {
                bootstrap: node_port_of(applied, &names::listener_service(kafka, &l.name)),
                brokers: (0..kafka.spec.kafka.replicas.max(0))
                    .filter_map(|i| {
                        node_port_of(applied, &names::listener_broker_service(kafka, &l.name, i))
                            .map(|p| (i, p))
                    })
                    .collect(),
            };
            (l.name.clone(), ports)
        })
        .collect()
}

/// Strimzi's default order of node address types for nodeport listeners.
pub const NODE_ADDRESS_TYPES: &[&str] = &[
    "ExternalDNS",
    "ExternalIP",
    "InternalDNS",
    "InternalIP",
    "Hostname",
];

fn node_is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The address clients use to reach node ports: of the Ready nodes (any node if none is Ready),
/// the first by name, its address of the first type in [`NODE_ADDRESS_TYPES`] it has. With the
/// Services' default `externalTrafficPolicy: Cluster`, every node forwards every node port.
pub fn node_address(nodes: &[Node]) -> Option<String> {
    let mut candidates: Vec<&Node> = nodes.iter().filter(|n| node_is_ready(n)).collect();
    if candidates.is_empty() {
        candidates = nodes.iter().collect();
    }
    candidates.sort_by_key(|n| n.metadata.name.clone().unwrap_or_default());
    candidates.into_iter().find_map(|n| {
        let addresses = n.status.as_ref()?.addresses.as_ref()?;
        NODE_ADDRESS_TYPES.iter().find_map(|t| {
            addresses
                .iter()
                .find(|a| a.type_ == *t && !a.address.is_empty())
                .map(|a| a.address.clone())
        })
    })
}

/// Every address of every Node (of the types [`node_address`] considers), sorted and once each:
/// what a nodeport listener's broker certificates must name, since a broker may run on any node.
pub fn node_addresses(nodes: &[Node]) -> Vec<String> {
    let mut out: Vec<String> = nodes
        .iter()
        .filter_map(|n| n.status.as_ref()?.addresses.as_ref())
        .flatten()
        .filter(|a| NODE_ADDRESS_TYPES.contains(&a.type_.as_str()) && !a.address.is_empty())
        .map(|a| a.address.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Bootstrap addresses per listener, as reported in `status.listeners`. A nodeport listener's is
/// `<node address>:<bootstrap node port>`, and is left out until both are known.
pub fn bootstrap_addresses(
    kafka: &Kafka,
    node_ports: &NodePorts,
    node_address: Option<&str>,
) -> Vec<(String, String)> {
    kafka
        .spec
        .kafka
        .listeners
        .iter()
        .filter_map(|l| {
            let address = match l.type_ {
                ListenerType::Internal => names::bootstrap_address(kafka, l.port),
                ListenerType::Nodeport => {
                    let port = node_ports.get(&l.name)?.bootstrap?;
                    format!("{}:{port}", host_port_host(node_address?))
                }
                _ => format!(
                    "{}.{}.svc:{}",
                    names::listener_service(kafka, &l.name),
                    super::namespace(kafka),
                    l.port
                ),
            };
            Some((l.name.clone(), address))
        })
        .collect()
}

/// An IPv6 address in `host:port` needs brackets.
fn host_port_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_support::{kafka, THREE_BROKERS};

    fn ports(s: &Service) -> Vec<i32> {
        s.spec
            .as_ref()
            .unwrap()
            .ports
            .iter()
            .flatten()
            .map(|p| p.port)
            .collect()
    }

    #[test]
    fn headless_service_publishes_unready_brokers() {
        let svc = headless_service(&kafka(THREE_BROKERS));
        let spec = svc.spec.as_ref().unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(ports(&svc), vec![9090, 9091, 9644, 9092]);
        assert_eq!(
            svc.metadata.name.as_deref(),
            Some("my-cluster-kafka-brokers")
        );
    }

    #[test]
    fn bootstrap_has_internal_listeners_only() {
        let mut k = kafka(THREE_BROKERS);
        k.spec.kafka.listeners.push(GenericKafkaListener {
            name: "external".into(),
            port: 9094,
            type_: ListenerType::Nodeport,
            tls: false,
            authentication: None,
            configuration: None,
            network_policy_peers: Vec::new(),
        });
        assert_eq!(
            ports(&bootstrap_service(&k).unwrap()),
            vec![9092],
            "no replication or controller port"
        );
        let mut nodeport_only = k.clone();
        nodeport_only.spec.kafka.listeners.remove(0);
        assert_eq!(
            bootstrap_service(&nodeport_only),
            None,
            "no internal listener"
        );
        let extra = listener_services(&k);
        assert_eq!(extra.len(), 1);
        assert_eq!(
            extra[0].metadata.name.as_deref(),
            Some("my-cluster-kafka-external-bootstrap")
        );
        assert_eq!(
            extra[0].spec.as_ref().unwrap().type_.as_deref(),
            Some("NodePort")
        );
        let addresses = bootstrap_addresses(&k, &NodePorts::new(), Some("10.0.0.1"));
        assert_eq!(
            addresses,
            vec![(
                "plain".into(),
                "my-cluster-kafka-bootstrap.prod.svc:9092".into()
            )],
            "no nodeport address before the node port is allocated"
        );
        let mut k = k.clone();
        k.spec.kafka.listeners[1].type_ = ListenerType::ClusterIp;
        assert_eq!(
            bootstrap_addresses(&k, &NodePorts::new(), None)[1].1,
            "my-cluster-kafka-external-bootstrap.prod.svc:9094"
        );
    }

    const NODEPORT: &str = r#"
kafka:
  replicas: 3
  listeners:
    - {name: plain, port: 9092, type: internal, tls: false}
    - name: external
      port: 9094
      type: nodeport
      tls: false
      configuration:
        bootstrap: {nodePort: 32100}
        brokers:
          - {broker: 1, nodePort: 32101}
          - {broker: 2, advertisedHost: kafka-2.example.com, advertisedPort: 443}
  storage: {type: ephemeral}
"#;

    #[test]
    fn nodeport_listeners_get_one_service_per_broker() {
        let k = kafka(NODEPORT);
        let bootstrap = &listener_services(&k)[0];
        assert_eq!(
            bootstrap.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].node_port,
            Some(32100)
        );
        let per_broker = broker_services(&k);
        let names: Vec<_> = per_broker
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "my-cluster-kafka-external-0",
                "my-cluster-kafka-external-1",
                "my-cluster-kafka-external-2"
            ]
        );
        let spec = per_broker[1].spec.as_ref().unwrap();
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        let selector = spec.selector.as_ref().unwrap();
        assert_eq!(selector[POD_NAME_LABEL], "my-cluster-kafka-1");
        assert_eq!(selector["kafka.fjord.dev/cluster"], "my-cluster");
        let port = &spec.ports.as_ref().unwrap()[0];
        assert_eq!((port.port, port.node_port), (9094, Some(32101)));
        assert_eq!(
            per_broker[0].spec.as_ref().unwrap().ports.as_ref().unwrap()[0].node_port,
            None,
            "allocated by Kubernetes"
        );
        assert!(broker_services(&kafka(THREE_BROKERS)).is_empty());
    }

    #[test]
    fn allocated_node_ports_are_read_back() {
        let k = kafka(NODEPORT);
        let mut applied = listener_services(&k);
        applied.extend(broker_services(&k));
        for (i, svc) in applied.iter_mut().enumerate() {
            let port = &mut svc.spec.as_mut().unwrap().ports.as_mut().unwrap()[0];
            port.node_port.get_or_insert(31000 + i as i32);
        }
        let ports = node_ports(&k, &applied);
        assert_eq!(ports.len(), 1);
        let external = &ports["external"];
        assert_eq!(external.bootstrap, Some(32100));
        assert_eq!(
            external.brokers,
            BTreeMap::from([(0, 31001), (1, 32101), (2, 31003)])
        );
        let addresses = bootstrap_addresses(&k, &ports, Some("192.168.1.5"));
        assert_eq!(
            addresses[1],
            ("external".into(), "192.168.1.5:32100".into())
        );
        assert_eq!(
            bootstrap_addresses(&k, &ports, Some("fd00::5"))[1].1,
            "[fd00::5]:32100"
        );
        assert_eq!(
            bootstrap_addresses(&k, &ports, None).len(),
            1,
            "no node address yet"
        );
    }

    fn node(name: &str, ready: bool, addresses: &[(&str, &str)]) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "addresses": addresses
                    .iter()
                    .map(|(t, a)| serde_json::json!({"type": t, "address": a}))
                    .collect::<Vec<_>>(),
            }
        }))
        .unwrap()
    }

    #[test]
    fn node_address_follows_strimzis_type_order() {
        assert_eq!(node_address(&[]), None);
        let internal = node("b", true, &[("Hostname", "b"), ("InternalIP", "10.0.0.2")]);
        assert_eq!(
            node_address(std::slice::from_ref(&internal)).as_deref(),
            Some("10.0.0.2")
        );
        let external = node(
            "c",
            true,
            &[("InternalIP", "10.0.0.3"), ("ExternalIP", "203.0.113.3")],
        );
        assert_eq!(node_address(&[external]).as_deref(), Some("203.0.113.3"));
        let dns = node(
            "d",
            true,
            &[
                ("ExternalIP", "203.0.113.4"),
                ("ExternalDNS", "d.example.com"),
            ],
        );
        assert_eq!(node_address(&[dns]).as_deref(), Some("d.example.com"));
        let not_ready = node("a", false, &[("InternalIP", "10.0.0.1")]);
        assert_eq!(
            node_address(&[internal.clone(), not_ready.clone()]).as_deref(),
            Some("10.0.0.2"),
            "Ready nodes first"
        );
        assert_eq!(node_address(&[not_ready]).as_deref(), Some("10.0.0.1"));
        let only_hostname = node("e", true, &[("Hostname", "e")]);
        assert_eq!(node_address(&[only_hostname]).as_deref(), Some("e"));
    }
}
