//! Topic calls: describe, create, grow partitions, read and change config overrides, delete.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, MetadataRequest, TopicName,
};

use super::broker_configs::{SOURCE_TOPIC_OVERRIDE, TOPIC_RESOURCE};
use super::{check, s, AdminError, KafkaAdmin};

const BROKER_TIMEOUT_MS: i32 = 10_000;
/// UNKNOWN_TOPIC_OR_PARTITION
const UNKNOWN_TOPIC: i16 = 3;

fn topic(name: &str) -> TopicName {
    TopicName(s(name))
}

/// A topic as the brokers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicInfo {
    pub id: String,
    pub partitions: i32,
    /// Replicas of partition 0 (all partitions share it unless reassigned by hand).
    pub replication_factor: i32,
}

/// Topic plus its per-topic config overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicDescription {
    pub info: TopicInfo,
    pub overrides: BTreeMap<String, String>,
}

impl KafkaAdmin {
    /// The topic, or `None` when it does not exist.
    pub async fn describe_topic(&mut self, name: &str) -> Result<Option<TopicInfo>, AdminError> {
        let request = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic(name)))
            ]))
            .with_allow_auto_topic_creation(false);
        let response = self.call(&request, 12).await?;
        let Some(t) = response.topics.into_iter().next() else {
            return Ok(None);
        };
        if t.error_code == UNKNOWN_TOPIC {
            return Ok(None);
        }
        check(t.error_code, None)?;
        Ok(Some(TopicInfo {
            id: t.topic_id.to_string(),
            partitions: t.partitions.len() as i32,
            replication_factor: t
                .partitions
                .iter()
                .find(|p| p.partition_index == 0)
                .map(|p| p.replica_nodes.len() as i32)
                .unwrap_or(0),
        }))
    }

    /// Creates a topic; `None` partitions/replicas take the brokers' defaults.
    pub async fn create_topic(
        &mut self,
        name: &str,
        partitions: Option<i32>,
        replicas: Option<i32>,
        config: &BTreeMap<String, String>,
    ) -> Result<String, AdminError> {
        let configs = config
            .iter()
            .map(|(k, v)| {
                CreatableTopicConfig::default()
                    .with_name(s(k))
                    .with_value(Some(s(v)))
            })
            .collect();
        let request = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic(name))
                .with_num_partitions(partitions.unwrap_or(-1))
                .with_replication_factor(replicas.unwrap_or(-1) as i16)
                .with_configs(configs)])
            .with_timeout_ms(BROKER_TIMEOUT_MS);
        let response = self.call(&request, 7).await?;
        let result = response
            .topics
            .into_iter()
            .next()
            .ok_or_else(|| AdminError::Protocol("CreateTopics answered no topic".into()))?;
        check(result.error_code, result.error_message.as_deref())?;
        Ok(result.topic_id.to_string())
    }

    /// Grows the topic to `count` partitions.
    pub async fn create_partitions(&mut self, name: &str, count: i32) -> Result<(), AdminError> {
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic(name))
                .with_count(count)])
            .with_timeout_ms(BROKER_TIMEOUT_MS);
        let response = self.call(&request, 3).await?;
        for r in response.results {
            check(r.error_code, r.error_message.as_deref())?;
        }
        Ok(())
    }

    /// Per-topic overrides (not broker defaults) of the topic's config.
    pub async fn topic_overrides(
        &mut self,
        name: &str,
    ) -> Result<BTreeMap<String, String>, AdminError> {
        self.configs_from_source(TOPIC_RESOURCE, name, SOURCE_TOPIC_OVERRIDE)
            .await
    }

    /// Sets `set` and removes `delete` overrides in one request; `validate_only` changes nothing.
    pub async fn alter_topic_config(
        &mut self,
        name: &str,
        set: &BTreeMap<String, String>,
        delete: &[String],
        validate_only: bool,
    ) -> Result<(), AdminError> {
        self.alter_configs(TOPIC_RESOURCE, name, set, delete, validate_only)
            .await
    }

    /// Deletes the topic; a topic that is already gone is not an error.
    pub async fn delete_topic(&mut self, name: &str) -> Result<(), AdminError> {
        let request = DeleteTopicsRequest::default()
            .with_topic_names(vec![topic(name)])
            .with_timeout_ms(BROKER_TIMEOUT_MS);
        let response = self.call(&request, 5).await?;
        for r in response.responses {
            if r.error_code != UNKNOWN_TOPIC {
                check(r.error_code, r.error_message.as_deref())?;
            }
        }
        Ok(())
    }

    /// Describe plus overrides, for the topic reconciler.
    pub async fn describe_topic_with_config(
        &mut self,
        name: &str,
    ) -> Result<Option<TopicDescription>, AdminError> {
        let Some(info) = self.describe_topic(name).await? else {
            return Ok(None);
        };
        let overrides = self.topic_overrides(name).await?;
        Ok(Some(TopicDescription { info, overrides }))
    }
}
