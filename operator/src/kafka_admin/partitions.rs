//! Partition placement calls: the whole cluster's replica layout (Metadata), KIP-455
//! reassignments (alter, list) and preferred-leader elections — what the roller checks ISRs with
//! and what rebalancing, draining and replication-factor changes run on.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ElectLeadersRequest,
    ListPartitionReassignmentsRequest, MetadataRequest, TopicName,
};

use super::{check, s, AdminError, KafkaAdmin};
use crate::planning::assignment::{BrokerSlot, PartitionReplicas};

const BROKER_TIMEOUT_MS: i32 = 30_000;
/// ElectLeaders election type PREFERRED.
const PREFERRED: i8 = 0;
/// ELECTION_NOT_NEEDED: the preferred leader already leads.
const ELECTION_NOT_NEEDED: i16 = 84;

/// One partition as the metadata says it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub topic: String,
    pub partition: i32,
    /// -1 when the partition has no leader.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// Every registered broker and every partition of every topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterLayout {
    pub brokers: Vec<BrokerSlot>,
    /// `host:port` of each broker on the listener the admin connection uses.
    pub addresses: BTreeMap<i32, String>,
    pub controller_id: Option<i32>,
    pub partitions: Vec<PartitionState>,
}

impl ClusterLayout {
    /// The current assignment in the planner's terms.
    pub fn assignment(&self) -> Vec<PartitionReplicas> {
        self.partitions
            .iter()
            .map(|p| PartitionReplicas {
                topic: p.topic.clone(),
                partition: p.partition,
                replicas: p.replicas.clone(),
            })
            .collect()
    }

    /// Partitions with a replica on `broker` that is not in their ISR.
    pub fn out_of_sync_on(&self, broker: i32) -> Vec<String> {
        self.partitions
            .iter()
            .filter(|p| p.replicas.contains(&broker) && !p.isr.contains(&broker))
            .map(|p| format!("{}-{}", p.topic, p.partition))
            .collect()
    }

    /// Every topic's name, once each, in order.
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.partitions.iter().map(|p| p.topic.clone()).collect();
        topics.dedup();
        topics
    }

    /// How many replicas `broker` holds.
    pub fn replicas_on(&self, broker: i32) -> usize {
        self.partitions
            .iter()
            .filter(|p| p.replicas.contains(&broker))
            .count()
    }
}

/// A reassignment the brokers are still carrying out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingReassignment {
    pub topic: String,
    pub partition: i32,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

fn name(text: &str) -> TopicName {
    TopicName(s(text))
}

/// Partitions grouped by topic, in order.
fn by_topic<'a>(
    partitions: impl IntoIterator<Item = (&'a str, i32)>,
) -> BTreeMap<&'a str, Vec<i32>> {
    let mut out: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        out.entry(topic).or_default().push(partition);
    }
    out
}

impl KafkaAdmin {
    /// Brokers (with racks), the active controller and every partition's replicas and ISR.
    pub async fn layout(&mut self) -> Result<ClusterLayout, AdminError> {
        let request = MetadataRequest::default()
            .with_topics(None)
            .with_allow_auto_topic_creation(false);
        let response = self.call(&request, 12).await?;
        let mut brokers: Vec<BrokerSlot> = response
            .brokers
            .iter()
            .map(|b| BrokerSlot {
                id: b.node_id.0,
                rack: b.rack.as_ref().map(|r| r.to_string()),
            })
            .collect();
        brokers.sort_by_key(|b| b.id);
        let addresses = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
            .collect();
        let mut partitions = Vec::new();
        for t in &response.topics {
            check(t.error_code, None)?;
            let Some(topic) = t.name.as_ref().map(|n| n.0.to_string()) else {
                continue;
            };
            for p in &t.partitions {
                partitions.push(PartitionState {
                    topic: topic.clone(),
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                });
            }
        }
        partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(ClusterLayout {
            brokers,
            addresses,
            controller_id: (response.controller_id.0 >= 0).then_some(response.controller_id.0),
            partitions,
        })
    }

    /// Starts moving each partition to its replica list (KIP-455; replication-factor changes
    /// allowed). The first refusal is the error.
    pub async fn reassign(&mut self, targets: &[PartitionReplicas]) -> Result<(), AdminError> {
        if targets.is_empty() {
            return Ok(());
        }
        let mut topics: BTreeMap<&str, Vec<ReassignablePartition>> = BTreeMap::new();
        for t in targets {
            topics.entry(&t.topic).or_default().push(
                ReassignablePartition::default()
                    .with_partition_index(t.partition)
                    .with_replicas(Some(t.replicas.iter().map(|&b| BrokerId(b)).collect())),
            );
        }
        let request = AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(BROKER_TIMEOUT_MS)
            .with_allow_replication_factor_change(true)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(topic, partitions)| {
                        ReassignableTopic::default()
                            .with_name(name(topic))
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        let response = self.call(&request, 1).await?;
        check(response.error_code, response.error_message.as_deref())?;
        for t in &response.responses {
            for p in &t.partitions {
                check(p.error_code, p.error_message.as_deref()).map_err(|e| match e {
                    AdminError::Kafka {
                        code,
                        name: error,
                        message,
                    } => AdminError::Kafka {
                        code,
                        name: error,
                        message: Some(format!(
                            "{}-{}: {}",
                            t.name.0,
                            p.partition_index,
                            message.unwrap_or_default()
                        )),
                    },
                    other => other,
                })?;
            }
        }
        Ok(())
    }

    /// Reassignments still in progress.
    pub async fn ongoing_reassignments(&mut self) -> Result<Vec<OngoingReassignment>, AdminError> {
        let request = ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(BROKER_TIMEOUT_MS)
            .with_topics(None);
        let response = self.call(&request, 0).await?;
        check(response.error_code, response.error_message.as_deref())?;
        let mut out = Vec::new();
        for t in &response.topics {
            for p in &t.partitions {
                out.push(OngoingReassignment {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    adding: p.adding_replicas.iter().map(|b| b.0).collect(),
                    removing: p.removing_replicas.iter().map(|b| b.0).collect(),
                });
            }
        }
        Ok(out)
    }

    /// Makes each partition's first replica its leader where it is in sync; partitions whose
    /// preferred leader already leads are fine. The first other refusal is the error.
    pub async fn elect_preferred_leaders(
        &mut self,
        partitions: &[(String, i32)],
    ) -> Result<(), AdminError> {
        if partitions.is_empty() {
            return Ok(());
        }
        let grouped = by_topic(partitions.iter().map(|(t, p)| (t.as_str(), *p)));
        let request = ElectLeadersRequest::default()
            .with_election_type(PREFERRED)
            .with_timeout_ms(BROKER_TIMEOUT_MS)
            .with_topic_partitions(Some(
                grouped
                    .into_iter()
                    .map(|(topic, partitions)| {
                        TopicPartitions::default()
                            .with_topic(name(topic))
                            .with_partitions(partitions)
                    })
                    .collect(),
            ));
        let response = self.call(&request, 2).await?;
        check(response.error_code, None)?;
        for t in &response.replica_election_results {
            for p in &t.partition_result {
                if p.error_code != ELECTION_NOT_NEEDED {
                    check(p.error_code, p.error_message.as_deref())?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(topic: &str, partition: i32, replicas: &[i32], isr: &[i32]) -> PartitionState {
        PartitionState {
            topic: topic.into(),
            partition,
            leader: replicas[0],
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
        }
    }

    #[test]
    fn layout_answers_what_the_roller_and_planners_ask() {
        let layout = ClusterLayout {
            brokers: vec![],
            addresses: BTreeMap::new(),
            controller_id: Some(1),
            partitions: vec![
                partition("a", 0, &[0, 1], &[0, 1]),
                partition("a", 1, &[1, 2], &[1]),
                partition("b", 0, &[2], &[2]),
            ],
        };
        assert_eq!(layout.out_of_sync_on(2), vec!["a-1".to_string()]);
        assert!(layout.out_of_sync_on(0).is_empty());
        assert_eq!(layout.replicas_on(2), 2);
        assert_eq!(layout.assignment()[1].replicas, vec![1, 2]);
        let grouped = by_topic([("a", 0), ("b", 3), ("a", 2)]);
        assert_eq!(grouped["a"], vec![0, 2]);
    }
}
