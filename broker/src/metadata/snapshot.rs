//! Metadata snapshots as records (as KRaft does): the smallest record list that rebuilds an
//! image. A quorum snapshot is this list; restoring applies it to an empty image.

use super::image::partition_defaults;
use super::{MetadataImage, MetadataRecord};

/// Records that rebuild `image` when applied to an empty one.
pub fn image_to_records(image: &MetadataImage) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    for b in image.brokers.values() {
        out.push(MetadataRecord::RegisterBroker {
            node_id: b.id,
            rack: b.rack.clone(),
            endpoints: b.endpoints.clone(),
            incarnation: b.incarnation,
        });
        if b.fenced {
            out.push(MetadataRecord::FenceBroker { node_id: b.id });
        }
    }
    for topic in image.topics.values() {
        out.push(MetadataRecord::CreateTopic {
            name: topic.name.clone(),
            id: topic.id,
            replicas: topic
                .partitions
                .iter()
                .map(|p| p.replicas.clone())
                .collect(),
            configs: topic.configs.clone(),
        });
        for (index, p) in topic.partitions.iter().enumerate() {
            if *p != partition_defaults(p.replicas.clone()) {
                out.push(MetadataRecord::PartitionChange {
                    topic: topic.name.clone(),
                    partition: index as i32,
                    leader: p.leader,
                    isr: p.isr.clone(),
                    leader_epoch: p.leader_epoch,
                    partition_epoch: Some(p.partition_epoch),
                });
            }
            if !p.adding.is_empty() || !p.removing.is_empty() {
                out.push(MetadataRecord::PartitionReassignmentState {
                    topic: topic.name.clone(),
                    partition: index as i32,
                    adding: p.adding.clone(),
                    removing: p.removing.clone(),
                });
            }
        }
    }
    for (node, configs) in &image.broker_configs {
        if !configs.is_empty() {
            out.push(MetadataRecord::AlterBrokerConfig {
                node: *node,
                changes: configs
                    .iter()
                    .map(|(k, v)| (k.clone(), Some(v.clone())))
                    .collect(),
            });
        }
    }
    if image.next_producer_id > 0 {
        out.push(MetadataRecord::ProducerIdBlock {
            next: image.next_producer_id,
        });
    }
    for (name, mechanisms) in &image.scram {
        for (mechanism, credential) in mechanisms {
            out.push(MetadataRecord::UserScramCredential {
                name: name.clone(),
                mechanism: *mechanism,
                credential: credential.clone(),
            });
        }
    }
    for (id, acl) in &image.acls {
        out.push(MetadataRecord::AccessControlEntry {
            id: *id,
            acl: acl.clone(),
        });
    }
    for (group, offsets) in &image.group_offsets {
        out.push(MetadataRecord::GroupOffsets {
            group: group.clone(),
            offsets: offsets
                .iter()
                .map(|((topic, partition), c)| super::record::ReplicatedOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    committed: Some(c.clone()),
                })
                .collect(),
        });
    }
    for meta in image.transactions.values() {
        out.push(MetadataRecord::PutTransaction {
            meta: meta.clone(),
            restore: true,
        });
    }
    for (entity, values) in &image.quotas {
        out.push(MetadataRecord::ClientQuota {
            entity: entity.clone(),
            changes: values.iter().map(|(k, v)| (k.clone(), Some(*v))).collect(),
        });
    }
    out
}

/// An image rebuilt from snapshot records (its offset is the snapshot's record count).
pub fn image_from_records(records: &[MetadataRecord]) -> MetadataImage {
    let mut image = MetadataImage::default();
    for r in records {
        image.apply(r);
    }
    image
}
