//! Broker registration: at startup each node writes a `RegisterBroker` record (replacing its
//! previous one) with its rack and advertised endpoints; Metadata, DescribeCluster and
//! FindCoordinator answer from the registered brokers, each with the endpoint of the listener
//! the request arrived on.

use std::sync::Arc;
use std::time::Duration;

use crate::config::security::SecurityProtocol;
use crate::metadata::{BrokerEndpoint, MetadataRecord};
use crate::state::Broker;

/// This node's registration record.
pub fn record(broker: &Broker) -> MetadataRecord {
    let config = &broker.config;
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
        incarnation: broker.cluster.incarnation,
    }
}

/// Registers this node, retrying until the quorum accepts the write (a leader needs a
/// majority of voters up).
pub async fn register(broker: Arc<Broker>) {
    let cluster = &broker.cluster;
    let record = record(&broker);
    loop {
        if broker
            .metadata
            .snapshot()
            .brokers
            .get(&broker.config.node_id)
            == image_entry(&record).as_ref()
        {
            return;
        }
        match cluster.write(std::slice::from_ref(&record)).await {
            Ok(()) => {
                tracing::info!(node = broker.config.node_id, "registered with the cluster");
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
