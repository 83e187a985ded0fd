//! Replica sizes on disk (DescribeLogDirs, what `kafka-log-dirs --describe` reads), so a
//! reassignment's progress can be shown as bytes left to copy, not only partitions left.
//!
//! DescribeLogDirs answers for the broker it is sent to, so progress asks every broker that
//! leads or receives a moving partition, each over its own short-lived connection.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::DescribeLogDirsRequest;

use super::{check, AdminError, ClusterLayout, KafkaAdmin, OngoingReassignment};
use crate::planning::throttle::CopyProgress;

/// Size in bytes of each partition replica one broker hosts.
type ReplicaSizes = BTreeMap<(String, i32), u64>;

impl KafkaAdmin {
    /// Every partition replica the connected broker hosts, with its size on disk.
    pub async fn hosted_replica_sizes(&mut self) -> Result<ReplicaSizes, AdminError> {
        let request = DescribeLogDirsRequest::default().with_topics(None);
        let response = self.call(&request, 3).await?;
        check(response.error_code, None)?;
        let mut sizes = BTreeMap::new();
        for dir in &response.results {
            check(dir.error_code, None)?;
            for t in &dir.topics {
                for p in &t.partitions {
                    sizes.insert(
                        (t.name.0.to_string(), p.partition_index),
                        u64::try_from(p.partition_size).unwrap_or(0),
                    );
                }
            }
        }
        Ok(sizes)
    }
}

/// How far each moving partition has copied: asks its leader and the brokers receiving it
/// (connecting to each as `via` is connected).
pub async fn copy_progress(
    via: &KafkaAdmin,
    layout: &ClusterLayout,
    moving: &[OngoingReassignment],
) -> Result<Vec<CopyProgress>, AdminError> {
    let leader = |m: &OngoingReassignment| {
        layout
            .partitions
            .iter()
            .find(|p| p.topic == m.topic && p.partition == m.partition)
            .map(|p| p.leader)
            .filter(|l| *l >= 0)
    };
    let asked: BTreeSet<i32> = moving
        .iter()
        .flat_map(|m| leader(m).into_iter().chain(m.adding.iter().copied()))
        .collect();
    let mut sizes: BTreeMap<i32, ReplicaSizes> = BTreeMap::new();
    for broker in asked {
        let Some(address) = layout.addresses.get(&broker) else {
            continue;
        };
        let mut admin = via.connect_to(address).await?;
        sizes.insert(broker, admin.hosted_replica_sizes().await?);
    }
    let size_on = |broker: i32, m: &OngoingReassignment| {
        sizes
            .get(&broker)
            .and_then(|s| s.get(&(m.topic.clone(), m.partition)))
            .copied()
    };
    Ok(moving
        .iter()
        .map(|m| CopyProgress {
            leader_bytes: leader(m).and_then(|l| size_on(l, m)),
            adding_bytes: m.adding.iter().map(|&b| size_on(b, m)).collect(),
        })
        .collect())
}
