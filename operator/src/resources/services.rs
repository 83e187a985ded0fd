//! Services: a headless one for pod DNS (inter-broker traffic and advertised listeners), the
//! `-kafka-bootstrap` ClusterIP Service for clients inside the cluster, and one bootstrap
//! Service per listener that asks for its own Service type.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::kafka::{GenericKafkaListener, ListenerType};
use crate::crd::Kafka;

use super::{names, owned_meta, selector_labels, ADMIN_PORT, CONTROLLER_PORT, REPLICATION_PORT};

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

/// Ready brokers only, on the replication port (the operator's admin connection) and every
/// `internal` listener.
pub fn bootstrap_service(kafka: &Kafka) -> Service {
    let mut ports = vec![service_port("tcp-replication", REPLICATION_PORT)];
    ports.extend(
        kafka
            .spec
            .kafka
            .listeners
            .iter()
            .filter(|l| l.type_ == ListenerType::Internal)
            .map(listener_port),
    );
    Service {
        metadata: owned_meta(kafka, names::bootstrap_service(kafka)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(kafka)),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
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
            Some(Service {
                metadata: owned_meta(kafka, names::listener_service(kafka, &l.name)),
                spec: Some(ServiceSpec {
                    type_: Some(type_.into()),
                    selector: Some(selector_labels(kafka)),
                    ports: Some(vec![listener_port(l)]),
                    ..ServiceSpec::default()
                }),
                ..Service::default()
            })
        })
        .collect()
}

/// Bootstrap addresses per listener, as reported in `status.listeners`.
pub fn bootstrap_addresses(kafka: &Kafka) -> Vec<(String, String)> {
    kafka
        .spec
        .kafka
        .listeners
        .iter()
        .map(|l| {
            let address = match l.type_ {
                ListenerType::Internal => names::bootstrap_address(kafka, l.port),
                _ => format!(
                    "{}.{}.svc:{}",
                    names::listener_service(kafka, &l.name),
                    super::namespace(kafka),
                    l.port
                ),
            };
            (l.name.clone(), address)
        })
        .collect()
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
    fn bootstrap_has_replication_and_internal_listeners_only() {
        let mut k = kafka(THREE_BROKERS);
        k.spec.kafka.listeners.push(GenericKafkaListener {
            name: "external".into(),
            port: 9094,
            type_: ListenerType::Nodeport,
            tls: false,
            authentication: None,
        });
        assert_eq!(ports(&bootstrap_service(&k)), vec![9091, 9092]);
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
        let addresses = bootstrap_addresses(&k);
        assert_eq!(
            addresses[0],
            (
                "plain".into(),
                "my-cluster-kafka-bootstrap.prod.svc:9092".into()
            )
        );
        assert_eq!(
            addresses[1].1,
            "my-cluster-kafka-external-bootstrap.prod.svc:9094"
        );
    }
}
