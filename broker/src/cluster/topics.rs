//! CreateTopics and CreatePartitions: replicas are placed over the registered
//! brokers with Kafka's assignment (random start and shift), and the records go through the
//! quorum. Only live (unfenced) brokers get new replicas; every replica of a new partition
//! starts in the ISR (its log is as empty as the leader's), as in Kafka.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::metadata::placement::{self, BrokerSlot, PlacementError};
use crate::metadata::MetadataRecord;
use crate::protocol::errors::ErrorCode;
use crate::state::{storage_error, Broker, TopicError};

fn slots(broker: &Broker) -> Vec<BrokerSlot> {
    broker
        .metadata
        .snapshot()
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .map(|b| BrokerSlot {
            id: b.id,
            rack: b.rack.clone(),
        })
        .collect()
}

fn place(
    broker: &Broker,
    partitions: i32,
    rf: i32,
    first_partition: i32,
) -> Result<Vec<Vec<i32>>, TopicError> {
    let brokers = slots(broker);
    let random = Uuid::new_v4().as_u128();
    let n = brokers.len().max(1);
    let start = (random % n as u128) as usize;
    let shift = ((random >> 64) % n as u128) as usize;
    placement::assign(&brokers, partitions, rf, first_partition, start, shift).map_err(|e| {
        let code = match e {
            PlacementError::InvalidPartitions(_) => ErrorCode::InvalidPartitions,
            PlacementError::NotEnoughBrokers { rf, brokers } => {
                return TopicError::new(
                    ErrorCode::InvalidReplicationFactor,
                    format!("Replication factor: {rf} larger than available brokers: {brokers}."),
                )
            }
            _ => ErrorCode::InvalidReplicationFactor,
        };
        TopicError::new(code, e.to_string())
    })
}

/// Creates a topic through the quorum (name, counts and configs already validated).
pub async fn create_topic(
    broker: &Broker,
    name: &str,
    partitions: i32,
    rf: i16,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<Uuid, TopicError> {
    for (k, v) in &configs {
        crate::topic_config::validate(k, v)?;
    }
    let replicas = place(broker, partitions, rf as i32, 0)?;
    let exists = || {
        broker
            .metadata
            .snapshot()
            .topics
            .contains_key(name)
            .then(|| {
                TopicError::new(
                    ErrorCode::TopicAlreadyExists,
                    format!("Topic '{name}' already exists."),
                )
            })
    };
    if let Some(e) = exists() {
        return Err(e);
    }
    if validate_only {
        return Ok(Uuid::nil());
    }
    let _guard = broker.topic_changes().await;
    // Another broker may create it at the same time: the quorum orders both commands and the
    // applier drops the later one, which this broker then reports below.
    if let Some(e) = exists() {
        return Err(e);
    }
    let id = Uuid::new_v4();
    let records = vec![MetadataRecord::CreateTopic {
        name: name.to_string(),
        id,
        replicas: replicas.clone(),
        configs,
    }];
    broker.commit_all(&records).await.map_err(storage_error)?;
    if broker.metadata.snapshot().topics.get(name).map(|t| t.id) != Some(id) {
        return Err(TopicError::new(
            ErrorCode::TopicAlreadyExists,
            format!("Topic '{name}' already exists."),
        ));
    }
    tracing::info!(topic = name, partitions, rf, "created topic");
    Ok(id)
}

/// Adds partitions `current..count` through the quorum.
pub async fn add_partitions(
    broker: &Broker,
    name: &str,
    current: i32,
    count: i32,
    validate_only: bool,
) -> Result<(), TopicError> {
    let rf = broker
        .metadata
        .snapshot()
        .topics
        .get(name)
        .and_then(|t| t.partitions.first().map(|p| p.replicas.len()))
        .unwrap_or(1) as i32;
    let replicas = place(broker, count - current, rf, current)?;
    if validate_only {
        return Ok(());
    }
    let records = vec![MetadataRecord::AddPartitions {
        name: name.to_string(),
        replicas: replicas.clone(),
    }];
    broker.commit_all(&records).await.map_err(storage_error)
}
