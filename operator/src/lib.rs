//! fjord-operator: reconciles `Kafka`, `KafkaTopic` and `KafkaUser` resources into StatefulSets of
//! Fjord brokers, topics and users. Shaped like kube-rs `controller-rs`: [`crd`] types,
//! [`resources`] pure builders, [`planning`] pure day-2 planners, [`pki`] the pure certificate
//! authority, one reconciler per kind in [`reconcile`] (with the day-2 steps beside them), the
//! brokers' Kafka API in [`kafka_admin`], and the runtime pieces ([`metrics`], [`telemetry`],
//! [`leader`] election, [`http`]) in their own modules.

pub mod broker_http;
pub mod controllers;
pub mod crd;
pub mod http;
pub mod kafka_admin;
pub mod leader;
pub mod metrics;
pub mod pki;
pub mod planning;
pub mod reconcile;
pub mod resources;
pub mod telemetry;
