//! Connects the metadata image to the Raft quorum: each committed quorum command is a batch of
//! [`MetadataRecord`]s applied to the image, and a quorum snapshot is the image as records (see
//! [`super::snapshot`]).

use std::sync::Arc;

use super::cache::MetadataCache;
use super::snapshot::{image_from_records, image_to_records};
use super::MetadataRecord;

/// Called after each applied batch (e.g. to open logs of newly hosted partitions).
pub type OnApplied = Box<dyn Fn(&[MetadataRecord]) + Send + Sync>;

pub struct MetadataApplier {
    image: Arc<MetadataCache>,
    on_applied: Option<OnApplied>,
}

impl MetadataApplier {
    pub fn new(image: Arc<MetadataCache>, on_applied: Option<OnApplied>) -> Self {
        MetadataApplier { image, on_applied }
    }

    /// The quorum command for a batch of records.
    pub fn command(records: &[MetadataRecord]) -> serde_json::Value {
        serde_json::to_value(records).expect("records always serialize")
    }
}

/// A snapshot whose state is not a list of metadata records.
#[derive(Debug, thiserror::Error)]
#[error("unreadable metadata snapshot: {0}")]
struct UnreadableSnapshot(serde_json::Error);

impl fjord_quorum::Applier for MetadataApplier {
    fn apply(&self, command: &serde_json::Value) {
        let records: Vec<MetadataRecord> = match serde_json::from_value(command.clone()) {
            Ok(r) => r,
            Err(e) => {
                // Only controllers write commands; an unreadable one means a newer version
                // wrote it. Skipping keeps the process alive; it is logged loudly.
                tracing::error!(error = %e, "skipping a metadata command this version cannot read");
                return;
            }
        };
        let mut applied = false;
        self.image.update(|image| {
            // A command is all or nothing: one creating a topic whose name another command
            // already took (two brokers creating it at once) is dropped whole, with the
            // records that came with it; the loser sees another id and reports the conflict.
            if let Some(MetadataRecord::CreateTopic { name, id, .. }) = records.first() {
                if image.topics.get(name).is_some_and(|t| t.id != *id) {
                    tracing::info!(topic = %name, "dropping a create of an existing topic");
                    return false;
                }
            }
            for r in &records {
                image.apply(r);
            }
            applied = true;
            true
        });
        if !applied {
            return;
        }
        if let Some(hook) = &self.on_applied {
            hook(&records);
        }
    }

    fn snapshot(&self) -> serde_json::Value {
        Self::command(&image_to_records(&self.image.snapshot()))
    }

    fn restore(&self, state: serde_json::Value) -> Result<(), fjord_quorum::RestoreError> {
        let records: Vec<MetadataRecord> =
            serde_json::from_value(state).map_err(UnreadableSnapshot)?;
        self.image.replace(image_from_records(&records));
        if let Some(hook) = &self.on_applied {
            hook(&records);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use fjord_quorum::{Applier, QuorumConfig, QuorumNode};
    use uuid::Uuid;

    use super::*;
    use crate::metadata::snapshot::image_to_records;
    use crate::metadata::MetadataImage;

    fn create(name: &str, replicas: Vec<Vec<i32>>) -> MetadataRecord {
        MetadataRecord::CreateTopic {
            name: name.into(),
            id: Uuid::new_v4(),
            replicas,
            configs: BTreeMap::from([("retention.ms".into(), "1000".into())]),
        }
    }

    #[test]
    fn snapshot_round_trips_every_kind_of_state() {
        let image = Arc::new(MetadataCache::default());
        let applier = MetadataApplier::new(image.clone(), None);
        let records = vec![
            create("a", vec![vec![1, 2, 3], vec![2, 3, 1]]),
            MetadataRecord::PartitionChange {
                topic: "a".into(),
                partition: 1,
                leader: 3,
                isr: vec![3, 1],
                leader_epoch: 4,
                partition_epoch: None,
            },
            MetadataRecord::AlterBrokerConfig {
                node: None,
                changes: BTreeMap::from([("log.retention.hours".into(), Some("1".into()))]),
            },
            MetadataRecord::ProducerIdBlock { next: 5000 },
        ];
        applier.apply(&MetadataApplier::command(&records));
        let snapshot = applier.snapshot();

        let other = Arc::new(MetadataCache::default());
        MetadataApplier::new(other.clone(), None)
            .restore(snapshot)
            .unwrap();
        let (a, b) = (image.snapshot(), other.snapshot());
        assert_eq!(a.topics, b.topics);
        assert_eq!(a.broker_configs, b.broker_configs);
        assert_eq!(a.next_producer_id, 5000);
        assert_eq!(b.next_producer_id, 5000);
        assert_eq!(b.topics["a"].partitions[1].leader, 3);
        assert_eq!(image_to_records(&a).len(), image_to_records(&b).len());
    }

    /// Two brokers creating the same topic at once: the first command wins whole, the second
    /// (with its ISR record) is dropped.
    #[test]
    fn a_second_create_of_a_name_is_dropped_with_its_records() {
        let image = Arc::new(MetadataCache::default());
        let applier = MetadataApplier::new(image.clone(), None);
        let first = create("t", vec![vec![1, 2]]);
        applier.apply(&MetadataApplier::command(std::slice::from_ref(&first)));
        let second = vec![
            create("t", vec![vec![2, 1]]),
            MetadataRecord::PartitionChange {
                topic: "t".into(),
                partition: 0,
                leader: 2,
                isr: vec![2],
                leader_epoch: 0,
                partition_epoch: None,
            },
        ];
        applier.apply(&MetadataApplier::command(&second));
        let img = image.snapshot();
        let MetadataRecord::CreateTopic { id, .. } = first else {
            unreachable!()
        };
        assert_eq!(img.topics["t"].id, id);
        assert_eq!(img.topics["t"].partitions[0].replicas, vec![1, 2]);
        assert_eq!(img.topics["t"].partitions[0].isr, vec![1, 2]);
    }

    #[test]
    fn producer_id_blocks_never_overlap() {
        let mut img = MetadataImage::default();
        img.apply(&MetadataRecord::ProducerIdBlock { next: 1000 });
        img.apply(&MetadataRecord::AllocateProducerIds {
            node: 1,
            size: 1000,
        });
        img.apply(&MetadataRecord::AllocateProducerIds {
            node: 2,
            size: 1000,
        });
        assert_eq!(img.producer_id_blocks[&1], (1000, 2000));
        assert_eq!(img.producer_id_blocks[&2], (2000, 3000));
        assert_eq!(img.next_producer_id, 3000);
    }

    /// Three controllers replicate topic records: every image ends up the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 3)]
    async fn metadata_replicates_through_the_quorum() {
        let dir = tempfile::tempdir().unwrap();
        let mut listeners = Vec::new();
        let mut voters = BTreeMap::new();
        for id in 0..3u64 {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            voters.insert(id, l.local_addr().unwrap().to_string());
            listeners.push((id, l));
        }
        let mut nodes = Vec::new();
        for (id, l) in listeners {
            let image = Arc::new(MetadataCache::default());
            let applier = Arc::new(MetadataApplier::new(image.clone(), None));
            let config = QuorumConfig {
                node_id: id,
                dir: dir.path().join(id.to_string()),
                voters: voters.clone(),
                snapshot_every: 1000,
                keep_after_snapshot: 100,
                learner_addr: None,
                tls: None,
            };
            nodes.push((QuorumNode::start(config, l, applier).await.unwrap(), image));
        }
        nodes[0]
            .0
            .wait_for_leader(Duration::from_secs(10))
            .await
            .unwrap();
        for i in 0..5 {
            let records = vec![create(&format!("t{i}"), vec![vec![0, 1, 2]])];
            nodes[i % 3]
                .0
                .write(MetadataApplier::command(&records))
                .await
                .unwrap();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while nodes.iter().any(|(_, img)| img.snapshot().topics.len() < 5) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "metadata did not replicate"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let first = nodes[0].1.snapshot().topics.clone();
        for (_, img) in &nodes {
            assert_eq!(img.snapshot().topics, first);
        }
        for (node, _) in nodes {
            node.shutdown().await;
        }
    }
}
