//! Broker registration: at startup each node writes a `RegisterBroker` record (replacing its
//! previous one) with its rack and advertised endpoints; Metadata, DescribeCluster and
//! FindCoordinator answer from the registered brokers, each with the endpoint of the listener
//! the request arrived on.

use std::time::Duration;

use super::ControlServices;
use crate::config::security::SecurityProtocol;
use crate::metadata::{BrokerEndpoint, MetadataRecord};

/// This node's registration record.
pub fn record(control: &ControlServices) -> MetadataRecord {
    let config = &control.config;
    let endpoints = config
        .advertised_listeners
        .iter()
        .map(|l| {
            let protocol = config
                .listener_security
                .iter()
                .find(|s| s.name == l.name)
                .map_or(SecurityProtocol::Plaintext, |s| s.protocol);
            BrokerEndpoint {
                listener: l.name.clone(),
                host: l.host.clone(),
                port: l.port,
                security_protocol: match protocol {
                    SecurityProtocol::Plaintext => "PLAINTEXT",
                    SecurityProtocol::Ssl => "SSL",
                    SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
                    SecurityProtocol::SaslSsl => "SASL_SSL",
                }
                .to_string(),
            }
        })
        .collect();
    MetadataRecord::RegisterBroker {
        node_id: config.node_id,
        rack: config.broker_rack.clone(),
        endpoints,
        incarnation: control.cluster.incarnation,
    }
}

/// Registers this node, retrying until the quorum accepts the write (a leader needs a
/// majority of voters up).
pub async fn register(control: ControlServices) {
    let cluster = &control.cluster;
    let record = record(&control);
    loop {
        if control.image.snapshot().brokers.get(&control.node_id()) == image_entry(&record).as_ref()
        {
            return;
        }
        match cluster.write(std::slice::from_ref(&record)).await {
            Ok(()) => {
                tracing::info!(node = control.node_id(), "registered with the cluster");
                return;
            }
            Err(e) => {
                tracing::info!(error = %e, "broker registration not committed yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

fn image_entry(record: &MetadataRecord) -> Option<crate::metadata::RegisteredBroker> {
    match record {
        MetadataRecord::RegisterBroker {
            node_id,
            rack,
            endpoints,
            incarnation,
        } => Some(crate::metadata::RegisteredBroker {
            id: *node_id,
            rack: rack.clone(),
            endpoints: endpoints.clone(),
            incarnation: *incarnation,
            fenced: false,
        }),
        _ => None,
    }
}
