//! Builds the replication views the pure logic needs from the broker's live state.

use crate::state::Broker;

use super::safety::{restart_blockers, BlockingPartition, PartitionView};

/// The restart-safety answer for this broker.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartSafety {
    pub broker: i32,
    pub safe: bool,
    pub blocking: Vec<BlockingPartition>,
    /// Set when this broker's metadata quorum member has stopped: the broker is broken in a way
    /// a restart may not fix, and an operator must not treat it as a routine restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum_stopped: Option<String>,
}

/// Every partition in the metadata image with its effective `min.insync.replicas`.
pub fn partition_views(broker: &Broker) -> Vec<PartitionView> {
    let image = broker.metadata.snapshot();
    let mut out = Vec::new();
    for topic in image.topics.values() {
        let min_insync = broker
            .replicas
            .topic_partitions(&topic.name)
            .and_then(|p| {
                p.first()
                    .map(|p| p.log.read().settings().min_insync_replicas)
            })
            .unwrap_or(1);
        for (index, p) in topic.partitions.iter().enumerate() {
            out.push(PartitionView {
                topic: topic.name.clone(),
                partition: index as i32,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                min_insync,
            });
        }
    }
    out
}

/// Would stopping this broker now take a partition offline or below its minimum ISR?
pub fn restart_safety(broker: &Broker) -> RestartSafety {
    let id = broker.config.node_id;
    let blocking = restart_blockers(&partition_views(broker), id);
    let quorum_stopped = broker.cluster.stopped();
    RestartSafety {
        broker: id,
        safe: blocking.is_empty() && quorum_stopped.is_none(),
        blocking,
        quorum_stopped,
    }
}
