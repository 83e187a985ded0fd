//! Object names, Strimzi-style: everything for cluster `c` starts with `c-kafka`.

use crate::crd::Kafka;

use super::{kafka_name, namespace};

pub fn statefulset(kafka: &Kafka) -> String {
    format!("{}-kafka", kafka_name(kafka))
}

pub fn service_account(kafka: &Kafka) -> String {
    statefulset(kafka)
}

pub fn disruption_budget(kafka: &Kafka) -> String {
    statefulset(kafka)
}

pub fn config_map(kafka: &Kafka) -> String {
    format!("{}-kafka-config", kafka_name(kafka))
}

/// Headless Service giving each pod a stable DNS name.
pub fn headless_service(kafka: &Kafka) -> String {
    format!("{}-kafka-brokers", kafka_name(kafka))
}

/// ClusterIP Service for `bootstrap.servers` (the internal listeners).
pub fn bootstrap_service(kafka: &Kafka) -> String {
    format!("{}-kafka-bootstrap", kafka_name(kafka))
}

/// Bootstrap Service of a listener with its own Service type (cluster-ip, nodeport, loadbalancer).
pub fn listener_service(kafka: &Kafka, listener: &str) -> String {
    format!("{}-kafka-{listener}-bootstrap", kafka_name(kafka))
}

/// Name of broker `ordinal`'s pod (a StatefulSet pod: `<statefulset>-<ordinal>`).
pub fn pod(kafka: &Kafka, ordinal: i32) -> String {
    format!("{}-{ordinal}", statefulset(kafka))
}

/// Service of one broker on one listener (nodeport listeners): `<cluster>-kafka-<listener>-<n>`.
pub fn listener_broker_service(kafka: &Kafka, listener: &str, ordinal: i32) -> String {
    format!("{}-kafka-{listener}-{ordinal}", kafka_name(kafka))
}

/// DNS name of broker `ordinal` (resolves through the headless Service).
pub fn pod_dns(kafka: &Kafka, ordinal: i32) -> String {
    format!(
        "{}-{ordinal}.{}.{}.svc",
        statefulset(kafka),
        headless_service(kafka),
        namespace(kafka)
    )
}

/// `host:port` of every broker (the headless Service, which resolves to all pods) on `port`.
pub fn admin_address(kafka: &Kafka, port: i32) -> String {
    format!(
        "{}.{}.svc:{port}",
        headless_service(kafka),
        namespace(kafka)
    )
}

/// `host:port` of the bootstrap Service on `port`.
pub fn bootstrap_address(kafka: &Kafka, port: i32) -> String {
    format!(
        "{}.{}.svc:{port}",
        bootstrap_service(kafka),
        namespace(kafka)
    )
}
