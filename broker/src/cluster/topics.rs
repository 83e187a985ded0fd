//! Topic and config changes through the quorum: create, delete, add partitions, alter topic
//! and dynamic broker configs, and the effective settings hosted logs are opened with.
//!
//! Replicas of new partitions are placed over the registered brokers with Kafka's assignment
//! (random start and shift). Only live (unfenced) brokers get new replicas; every replica of a
//! new partition starts in the ISR (its log is as empty as the leader's), as in Kafka. Changes
//! are serialised with each other from their check against the image to their commit.
//!
//! [`TopicManager`] is a view over the services it needs (configuration, image, quorum, replica
//! manager, the change lock), so the topic and config handlers take it instead of the broker.

use std::collections::BTreeMap;
use std::io;

use uuid::Uuid;

use super::Cluster;
use crate::config::Config;
use crate::metadata::placement::{self, BrokerSlot, PlacementError};
use crate::metadata::{MetadataCache, MetadataRecord};
use crate::protocol::errors::ErrorCode;
use crate::replica_manager::ReplicaManager;
use crate::topic_config::{self, validate_topic_name, TopicError, TopicSettings};

/// See the module documentation.
#[derive(Clone, Copy)]
pub struct TopicManager<'a> {
    pub config: &'a Config,
    pub image: &'a MetadataCache,
    pub cluster: &'a Cluster,
    pub replicas: &'a ReplicaManager,
    /// Serialises topic-changing operations with each other (held across the commit).
    pub changes: &'a tokio::sync::Mutex<()>,
}

pub(crate) fn storage_error(e: io::Error) -> TopicError {
    tracing::error!(error = %e, "storage error");
    TopicError::new(ErrorCode::UnknownServerError, format!("storage error: {e}"))
}

fn slots(image: &MetadataCache) -> Vec<BrokerSlot> {
    image
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
    image: &MetadataCache,
    partitions: i32,
    rf: i32,
    first_partition: i32,
) -> Result<Vec<Vec<i32>>, TopicError> {
    let brokers = slots(image);
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

impl TopicManager<'_> {
    /// Effective broker-level topic defaults: static config overlaid with dynamic cluster configs.
    pub fn topic_defaults(&self) -> BTreeMap<String, String> {
        let mut d = self.config.topic_defaults.clone();
        let img = self.image.snapshot();
        for node in [None, Some(self.config.node_id)] {
            if let Some(map) = img.broker_configs.get(&node) {
                // Stored as set (`log.retention.hours=170`, what DescribeConfigs shows);
                // converted to the topic key's unit here. Keys iterate in name order, so
                // `log.retention.ms` beats `.minutes` beats `.hours`, as in Kafka.
                for (k, v) in map {
                    if let Some(tk) = crate::config::broker_key_to_topic_key(k) {
                        let v = crate::config::dynamic_value_in_topic_units(k, v)
                            .unwrap_or_else(|_| v.clone());
                        d.insert(tk.to_string(), v);
                    }
                }
            }
        }
        d
    }

    pub fn settings_for(&self, topic_configs: &BTreeMap<String, String>) -> TopicSettings {
        TopicSettings::resolve(topic_configs, &self.topic_defaults())
    }

    /// Creates a topic. `validate_only` checks everything without changing anything.
    pub async fn create_topic(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Uuid, TopicError> {
        validate_topic_name(name)?;
        let partitions = if num_partitions == -1 {
            self.config.num_partitions
        } else {
            num_partitions
        };
        if partitions < 1 {
            return Err(TopicError::new(
                ErrorCode::InvalidPartitions,
                "Number of partitions must be larger than 0.",
            ));
        }
        within_partition_limit(partitions)?;
        let rf = if replication_factor == -1 {
            self.config.default_replication_factor
        } else {
            replication_factor
        };
        if rf < 1 {
            return Err(TopicError::new(
                ErrorCode::InvalidReplicationFactor,
                "Replication factor must be larger than 0.",
            ));
        }
        self.create(name, partitions, rf, configs, validate_only)
            .await
    }

    pub async fn delete_topic(&self, name: &str) -> Result<Uuid, TopicError> {
        if !self.config.delete_topic_enable {
            return Err(TopicError::new(
                ErrorCode::TopicAuthorizationFailed,
                "Topic deletion is disabled.",
            ));
        }
        let _guard = self.changes.lock().await;
        let id = self
            .image
            .snapshot()
            .topics
            .get(name)
            .map(|t| t.id)
            .ok_or_else(|| {
                TopicError::new(
                    ErrorCode::UnknownTopicOrPartition,
                    "This server does not host this topic.",
                )
            })?;
        self.commit_one(MetadataRecord::DeleteTopic {
            name: name.to_string(),
        })
        .await
        .map_err(storage_error)?;
        // The applier's hook removed the logs (on every node).
        tracing::info!(topic = name, "deleted topic");
        Ok(id)
    }

    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let _guard = self.changes.lock().await;
        let current = {
            let img = self.image.snapshot();
            let t = img.topics.get(name).ok_or_else(|| {
                TopicError::new(
                    ErrorCode::UnknownTopicOrPartition,
                    format!("Topic '{name}' does not exist."),
                )
            })?;
            t.partitions.len() as i32
        };
        if count <= current {
            return Err(TopicError::new(
                ErrorCode::InvalidPartitions,
                format!("Topic currently has {current} partitions, which is higher than the requested {count}."),
            ));
        }
        within_partition_limit(count)?;
        self.add_partitions(name, current, count, validate_only)
            .await
    }

    /// Applies topic config changes (already computed as set/remove) and re-resolves settings.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        changes: BTreeMap<String, Option<String>>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        for (k, v) in &changes {
            match v {
                Some(v) => topic_config::validate(k, v)?,
                None if !topic_config::is_known(k) => {
                    return Err(TopicError::new(
                        ErrorCode::InvalidConfig,
                        format!("Unknown topic config name: {k}"),
                    ))
                }
                None => {}
            }
        }
        let _guard = self.changes.lock().await;
        if !self.image.snapshot().topics.contains_key(name) {
            return Err(TopicError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("Topic '{name}' does not exist."),
            ));
        }
        if validate_only {
            return Ok(());
        }
        self.commit_one(MetadataRecord::AlterTopicConfig {
            name: name.to_string(),
            changes,
        })
        .await
        .map_err(storage_error)?;
        self.refresh_settings(Some(name));
        Ok(())
    }

    pub async fn alter_broker_config(
        &self,
        node: Option<i32>,
        changes: BTreeMap<String, Option<String>>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        for (k, v) in &changes {
            if crate::config::is_dynamic_broker_only_key(k) {
                if let Some(v) = v {
                    crate::replication::throttle::validate_rate(k, v)?;
                }
                continue;
            }
            let Some(tk) = crate::config::broker_key_to_topic_key(k) else {
                return Err(TopicError::new(
                    ErrorCode::InvalidRequest,
                    format!("Cannot update these configs dynamically: [{k}]"),
                ));
            };
            if let Some(v) = v {
                let v = crate::config::dynamic_value_in_topic_units(k, v)?;
                topic_config::validate(tk, &v)?;
            }
        }
        if validate_only {
            return Ok(());
        }
        let _guard = self.changes.lock().await;
        self.commit_one(MetadataRecord::AlterBrokerConfig { node, changes })
            .await
            .map_err(storage_error)?;
        self.refresh_settings(None);
        Ok(())
    }

    /// Recomputes effective settings for one topic or all.
    pub fn refresh_settings(&self, only: Option<&str>) {
        let img = self.image.snapshot();
        for name in self.replicas.hosted_topics() {
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let Some(t) = img.topics.get(&name) else {
                continue;
            };
            let s = self.settings_for(&t.configs);
            for p in self.replicas.topic_partitions(&name).unwrap_or_default() {
                p.log.write().set_settings(s.clone());
            }
        }
    }

    /// Commits records as one quorum command; returns once this node applied them.
    async fn commit(&self, records: &[MetadataRecord]) -> io::Result<()> {
        self.cluster.write(records).await
    }

    async fn commit_one(&self, record: MetadataRecord) -> io::Result<()> {
        self.commit(std::slice::from_ref(&record)).await
    }

    /// Creates `__consumer_offsets` or `__transaction_state` if it does not exist yet, as
    /// Kafka does on a coordinator's first use: the configured partition count, and the
    /// configured replication factor capped at the live brokers (Kafka would refuse instead;
    /// these topics hold no data here, so a smaller cluster loses nothing by it). Compacted,
    /// like Kafka's.
    pub async fn ensure_internal_topic(&self, name: &str) -> Result<(), TopicError> {
        if self.image.snapshot().topics.contains_key(name) {
            return Ok(());
        }
        let (partitions, rf) = if name == topic_config::GROUP_METADATA_TOPIC {
            (
                self.config.offsets_topic_num_partitions,
                self.config.offsets_topic_replication_factor,
            )
        } else {
            (
                self.config.transaction_state_log_num_partitions,
                self.config.transaction_state_log_replication_factor,
            )
        };
        let live = slots(self.image).len().max(1);
        let rf = rf.clamp(1, i16::try_from(live).unwrap_or(i16::MAX));
        let configs = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
        match self
            .create(name, partitions.max(1), rf, configs, false)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == ErrorCode::TopicAlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates a topic through the quorum (name, counts and configs already validated).
    async fn create(
        &self,
        name: &str,
        partitions: i32,
        rf: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Uuid, TopicError> {
        for (k, v) in &configs {
            topic_config::validate(k, v)?;
        }
        let replicas = place(self.image, partitions, rf as i32, 0)?;
        let exists = || {
            self.image.snapshot().topics.contains_key(name).then(|| {
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
        let _guard = self.changes.lock().await;
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
        self.commit(&records).await.map_err(storage_error)?;
        if self.image.snapshot().topics.get(name).map(|t| t.id) != Some(id) {
            return Err(TopicError::new(
                ErrorCode::TopicAlreadyExists,
                format!("Topic '{name}' already exists."),
            ));
        }
        tracing::info!(topic = name, partitions, rf, "created topic");
        Ok(id)
    }

    /// Adds partitions `current..count` through the quorum.
    async fn add_partitions(
        &self,
        name: &str,
        current: i32,
        count: i32,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let rf = self
            .image
            .snapshot()
            .topics
            .get(name)
            .and_then(|t| t.partitions.first().map(|p| p.replicas.len()))
            .unwrap_or(1) as i32;
        let replicas = place(self.image, count - current, rf, current)?;
        if validate_only {
            return Ok(());
        }
        let records = vec![MetadataRecord::AddPartitions {
            name: name.to_string(),
            replicas: replicas.clone(),
        }];
        self.commit(&records).await.map_err(storage_error)
    }
}

/// Kafka's upper bound on a topic's partition count, for creation and additions alike.
const MAX_PARTITIONS: i32 = 100_000;

fn within_partition_limit(count: i32) -> Result<(), TopicError> {
    if count > MAX_PARTITIONS {
        return Err(TopicError::new(
            ErrorCode::InvalidPartitions,
            format!("Number of partitions is above the limit of {MAX_PARTITIONS}."),
        ));
    }
    Ok(())
}
