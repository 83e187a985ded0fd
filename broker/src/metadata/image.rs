//! The metadata image: what the cluster looks like after applying every record in order.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use super::record::MetadataRecord;

#[derive(Debug, Clone, PartialEq)]
pub struct PartitionMeta {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: Vec<PartitionMeta>,
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default)]
pub struct MetadataImage {
    pub topics: BTreeMap<String, TopicMeta>,
    pub topic_names: HashMap<Uuid, String>,
    /// Dynamic broker configs: key None = cluster default, Some(id) = per broker.
    pub broker_configs: BTreeMap<Option<i32>, BTreeMap<String, String>>,
    pub next_producer_id: i64,
    /// Number of records applied (the metadata offset).
    pub offset: u64,
}

fn partition(replicas: Vec<i32>) -> PartitionMeta {
    PartitionMeta {
        leader: replicas.first().copied().unwrap_or(-1),
        isr: replicas.clone(),
        replicas,
        leader_epoch: 0,
    }
}

impl MetadataImage {
    pub fn apply(&mut self, record: &MetadataRecord) {
        self.offset += 1;
        match record {
            MetadataRecord::CreateTopic {
                name,
                id,
                replicas,
                configs,
            } => {
                self.topic_names.insert(*id, name.clone());
                self.topics.insert(
                    name.clone(),
                    TopicMeta {
                        name: name.clone(),
                        id: *id,
                        partitions: replicas.iter().cloned().map(partition).collect(),
                        configs: configs.clone(),
                    },
                );
            }
            MetadataRecord::DeleteTopic { name } => {
                if let Some(t) = self.topics.remove(name) {
                    self.topic_names.remove(&t.id);
                }
            }
            MetadataRecord::AddPartitions { name, replicas } => {
                if let Some(t) = self.topics.get_mut(name) {
                    t.partitions.extend(replicas.iter().cloned().map(partition));
                }
            }
            MetadataRecord::AlterTopicConfig { name, changes } => {
                if let Some(t) = self.topics.get_mut(name) {
                    apply_changes(&mut t.configs, changes);
                }
            }
            MetadataRecord::AlterBrokerConfig { node, changes } => {
                let map = self.broker_configs.entry(*node).or_default();
                apply_changes(map, changes);
            }
            MetadataRecord::ProducerIdBlock { next } => {
                self.next_producer_id = self.next_producer_id.max(*next);
            }
        }
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicMeta> {
        self.topic_names.get(id).and_then(|n| self.topics.get(n))
    }
}

fn apply_changes(map: &mut BTreeMap<String, String>, changes: &BTreeMap<String, Option<String>>) {
    for (k, v) in changes {
        match v {
            Some(v) => {
                map.insert(k.clone(), v.clone());
            }
            None => {
                map.remove(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_lifecycle() {
        let mut img = MetadataImage::default();
        let id = Uuid::new_v4();
        img.apply(&MetadataRecord::CreateTopic {
            name: "t".into(),
            id,
            replicas: vec![vec![1], vec![1]],
            configs: BTreeMap::new(),
        });
        img.apply(&MetadataRecord::AddPartitions {
            name: "t".into(),
            replicas: vec![vec![1]],
        });
        assert_eq!(img.topics["t"].partitions.len(), 3);
        assert_eq!(img.topic_by_id(&id).unwrap().name, "t");
        let mut changes = BTreeMap::new();
        changes.insert("retention.ms".to_string(), Some("5".to_string()));
        img.apply(&MetadataRecord::AlterTopicConfig {
            name: "t".into(),
            changes: changes.clone(),
        });
        assert_eq!(img.topics["t"].configs["retention.ms"], "5");
        changes.insert("retention.ms".to_string(), None);
        img.apply(&MetadataRecord::AlterTopicConfig {
            name: "t".into(),
            changes,
        });
        assert!(img.topics["t"].configs.is_empty());
        img.apply(&MetadataRecord::DeleteTopic { name: "t".into() });
        assert!(img.topics.is_empty() && img.topic_names.is_empty());
        assert_eq!(img.offset, 5);
    }
}
