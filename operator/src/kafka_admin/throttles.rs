//! Reassignment throttles on the brokers: the cluster-wide `*.replication.throttled.rate`
//! defaults and each moving topic's `*.replication.throttled.replicas` lists (planned by
//! [`crate::planning::throttle`]), set before replicas move and removed when nothing moves —
//! a forgotten list would slow the catch-up of the next broker that restarts.

use std::collections::BTreeMap;

use super::broker_configs::{ConfigChange, BROKER_RESOURCE, SOURCE_TOPIC_OVERRIDE, TOPIC_RESOURCE};
use super::{AdminError, KafkaAdmin};
use crate::planning::throttle::{TopicThrottle, BROKER_KEYS, TOPIC_KEYS};

impl KafkaAdmin {
    /// Throttles the copies to `topics`' new replicas at `rate` bytes/s per broker.
    pub async fn set_reassignment_throttle(
        &mut self,
        rate: u64,
        topics: &BTreeMap<String, TopicThrottle>,
    ) -> Result<(), AdminError> {
        if topics.is_empty() {
            return Ok(());
        }
        let rates = BROKER_KEYS
            .iter()
            .map(|k| (k.to_string(), rate.to_string()))
            .collect();
        let mut changes = vec![ConfigChange {
            resource_type: BROKER_RESOURCE,
            name: String::new(),
            set: rates,
            delete: Vec::new(),
        }];
        changes.extend(topics.iter().map(|(topic, lists)| ConfigChange {
            resource_type: TOPIC_RESOURCE,
            name: topic.clone(),
            set: lists.configs(),
            delete: Vec::new(),
        }));
        self.alter_many_configs(&changes, false).await
    }

    /// Removes the throttled-replica lists from every topic in `topics` that has them, and the
    /// throttle rates from the cluster defaults when `rates` (no other reassignment runs).
    /// Returns how many topics were cleared.
    pub async fn clear_reassignment_throttle(
        &mut self,
        topics: &[String],
        rates: bool,
    ) -> Result<usize, AdminError> {
        let listed = self
            .describe_configs(
                TOPIC_RESOURCE,
                topics,
                Some(&TOPIC_KEYS),
                Some(SOURCE_TOPIC_OVERRIDE),
            )
            .await?;
        let mut changes: Vec<ConfigChange> = listed
            .into_iter()
            .filter(|(_, configs)| !configs.is_empty())
            .map(|(topic, configs)| ConfigChange {
                resource_type: TOPIC_RESOURCE,
                name: topic,
                set: BTreeMap::new(),
                delete: configs.into_keys().collect(),
            })
            .collect();
        let cleared = changes.len();
        if rates {
            let defaults = self.cluster_broker_defaults().await?;
            let set: Vec<String> = BROKER_KEYS
                .iter()
                .filter(|k| defaults.contains_key(**k))
                .map(|k| k.to_string())
                .collect();
            if !set.is_empty() {
                changes.push(ConfigChange {
                    resource_type: BROKER_RESOURCE,
                    name: String::new(),
                    set: BTreeMap::new(),
                    delete: set,
                });
            }
        }
        self.alter_many_configs(&changes, false).await?;
        Ok(cleared)
    }

    /// The value in effect of `key` for each of `topics` (override, else broker default).
    pub async fn topic_config_value(
        &mut self,
        topics: &[String],
        key: &str,
    ) -> Result<BTreeMap<String, String>, AdminError> {
        Ok(self
            .describe_configs(TOPIC_RESOURCE, topics, Some(&[key]), None)
            .await?
            .into_iter()
            .filter_map(|(topic, mut configs)| configs.remove(key).map(|v| (topic, v)))
            .collect())
    }
}
