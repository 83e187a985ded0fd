//! The metadata image: what the cluster looks like after applying every record in order.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use super::leadership;
use super::quota::QuotaEntity;
use super::record::{BrokerEndpoint, MetadataRecord, ReplicatedOffset};
use crate::auth::acl::AclBinding;
use crate::auth::scram::{ScramCredential, ScramMechanism};
use crate::txn::state::{self as txn, TransactionMeta};

#[derive(Debug, Clone, PartialEq)]
pub struct PartitionMeta {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    /// Bumped on every leader or ISR change; `AlterPartition` requests name the epoch they
    /// were computed from.
    pub partition_epoch: i32,
    /// A reassignment in progress (KIP-455, Kafka's `addingReplicas`/`removingReplicas`):
    /// `replicas` is then the target followed by the replicas being removed, and the target is
    /// `replicas` without `removing`. Both empty when no reassignment is in progress.
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: Vec<PartitionMeta>,
    pub configs: BTreeMap<String, String>,
}

/// A broker as registered in cluster mode.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredBroker {
    pub id: i32,
    pub rack: Option<String>,
    pub endpoints: Vec<BrokerEndpoint>,
    pub incarnation: Uuid,
    /// Missed heartbeats or shutting down: leads nothing and is in no ISR (but a last one).
    pub fenced: bool,
}

#[derive(Debug, Clone, Default)]
pub struct MetadataImage {
    /// Registered brokers by id (cluster mode only; empty on a single node).
    pub brokers: BTreeMap<i32, RegisteredBroker>,
    pub topics: BTreeMap<String, TopicMeta>,
    pub topic_names: HashMap<Uuid, String>,
    /// Dynamic broker configs: key None = cluster default, Some(id) = per broker.
    pub broker_configs: BTreeMap<Option<i32>, BTreeMap<String, String>>,
    pub next_producer_id: i64,
    /// The last producer-id block each broker reserved (cluster mode): `[first, end)`.
    pub producer_id_blocks: BTreeMap<i32, (i64, i64)>,
    /// SCRAM credentials by user, then mechanism.
    pub scram: BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>,
    /// ACL bindings by id. Bindings are unique (CreateAcls is idempotent).
    pub acls: BTreeMap<Uuid, AclBinding>,
    /// Client quota values by entity; an entity with no keys left is removed.
    pub quotas: BTreeMap<QuotaEntity, BTreeMap<String, f64>>,
    /// Committed offsets by group, then (topic, partition) (cluster mode).
    pub group_offsets: BTreeMap<String, crate::group::offsets::GroupOffsets>,
    /// Transaction states by transactional id (the transaction coordinator's state).
    pub transactions: BTreeMap<String, TransactionMeta>,
    /// Number of records applied (the metadata offset).
    pub offset: u64,
}

/// A new partition: the first replica leads, every replica is in sync, epoch 0.
pub fn partition_defaults(replicas: Vec<i32>) -> PartitionMeta {
    PartitionMeta {
        leader: replicas.first().copied().unwrap_or(-1),
        isr: replicas.clone(),
        replicas,
        leader_epoch: 0,
        partition_epoch: 0,
        adding: Vec::new(),
        removing: Vec::new(),
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
                        partitions: replicas.iter().cloned().map(partition_defaults).collect(),
                        configs: configs.clone(),
                    },
                );
            }
            MetadataRecord::DeleteTopic { name } => {
                if let Some(t) = self.topics.remove(name) {
                    self.topic_names.remove(&t.id);
                }
                for offsets in self.group_offsets.values_mut() {
                    offsets.retain(|(t, _), _| t != name);
                }
                self.group_offsets.retain(|_, o| !o.is_empty());
                for offsets in txn::apply_topic_deleted(&mut self.transactions, name) {
                    self.commit_transaction_offsets(offsets);
                }
            }
            MetadataRecord::AddPartitions { name, replicas } => {
                if let Some(t) = self.topics.get_mut(name) {
                    t.partitions
                        .extend(replicas.iter().cloned().map(partition_defaults));
                }
            }
            MetadataRecord::AlterTopicConfig { name, changes } => {
                if let Some(t) = self.topics.get_mut(name) {
                    apply_changes(&mut t.configs, changes);
                }
                leadership::revive_all(self);
            }
            MetadataRecord::AlterBrokerConfig { node, changes } => {
                let map = self.broker_configs.entry(*node).or_default();
                apply_changes(map, changes);
                leadership::revive_all(self);
            }
            MetadataRecord::PartitionChange {
                topic,
                partition,
                leader,
                isr,
                leader_epoch,
                partition_epoch,
            } => {
                let meta = self
                    .topics
                    .get_mut(topic)
                    .and_then(|t| t.partitions.get_mut(usize::try_from(*partition).ok()?));
                if let Some(p) = meta {
                    p.leader = *leader;
                    p.isr = isr.clone();
                    p.leader_epoch = *leader_epoch;
                    p.partition_epoch = partition_epoch.unwrap_or(p.partition_epoch + 1);
                }
            }
            MetadataRecord::AlterPartition {
                topic,
                partition,
                partition_epoch,
                isr,
                leader,
            } => {
                let req = leadership::AlterRequest {
                    topic,
                    partition: *partition,
                    partition_epoch: *partition_epoch,
                    isr,
                    leader: *leader,
                };
                if let Err(why) = leadership::alter(self, &req) {
                    tracing::debug!(topic, partition, ?why, "AlterPartition not applied");
                }
            }
            MetadataRecord::ReassignPartition {
                topic,
                partition,
                partition_epoch,
                replicas,
                isr,
                leader,
                adding,
                removing,
            } => {
                let req = super::reassignment::ReassignRequest {
                    topic,
                    partition: *partition,
                    partition_epoch: *partition_epoch,
                    replicas,
                    isr,
                    leader: *leader,
                    adding,
                    removing,
                };
                if let Err(why) = super::reassignment::apply(self, &req) {
                    tracing::debug!(topic, partition, ?why, "ReassignPartition not applied");
                }
            }
            MetadataRecord::PartitionReassignmentState {
                topic,
                partition,
                adding,
                removing,
            } => {
                let meta = self
                    .topics
                    .get_mut(topic)
                    .and_then(|t| t.partitions.get_mut(usize::try_from(*partition).ok()?));
                if let Some(p) = meta {
                    p.adding = adding.clone();
                    p.removing = removing.clone();
                }
            }
            MetadataRecord::FenceBroker { node_id } => leadership::fence(self, *node_id),
            MetadataRecord::UnfenceBroker { node_id } => leadership::unfence(self, *node_id),
            MetadataRecord::ProducerIdBlock { next } => {
                self.next_producer_id = self.next_producer_id.max(*next);
            }
            MetadataRecord::AllocateProducerIds { node, size } => {
                let first = self.next_producer_id;
                let end = first.saturating_add((*size).max(1));
                self.next_producer_id = end;
                self.producer_id_blocks.insert(*node, (first, end));
            }
            MetadataRecord::UserScramCredential {
                name,
                mechanism,
                credential,
            } => {
                self.scram
                    .entry(name.clone())
                    .or_default()
                    .insert(*mechanism, credential.clone());
            }
            MetadataRecord::RemoveUserScramCredential { name, mechanism } => {
                if let Some(m) = self.scram.get_mut(name) {
                    m.remove(mechanism);
                    if m.is_empty() {
                        self.scram.remove(name);
                    }
                }
            }
            MetadataRecord::AccessControlEntry { id, acl } => {
                self.acls.insert(*id, acl.clone());
            }
            MetadataRecord::RemoveAccessControlEntry { id } => {
                self.acls.remove(id);
            }
            MetadataRecord::RegisterBroker {
                node_id,
                rack,
                endpoints,
                incarnation,
            } => {
                let previous = self.brokers.insert(
                    *node_id,
                    RegisteredBroker {
                        id: *node_id,
                        rack: rack.clone(),
                        endpoints: endpoints.clone(),
                        incarnation: *incarnation,
                        fenced: false,
                    },
                );
                match previous {
                    Some(b) if b.incarnation != *incarnation => {
                        leadership::reregister(self, *node_id)
                    }
                    Some(b) if b.fenced => leadership::unfence(self, *node_id),
                    Some(_) => {}
                    None => leadership::revive_all(self),
                }
            }
            MetadataRecord::GroupOffsets { group, offsets } => {
                self.apply_group_offsets(group, offsets);
            }
            MetadataRecord::PutTransaction { meta, restore } => {
                if let Some(offsets) = txn::apply_put(&mut self.transactions, meta, *restore) {
                    self.commit_transaction_offsets(offsets);
                }
            }
            MetadataRecord::RemoveTransaction {
                transactional_id,
                version,
            } => txn::apply_remove(&mut self.transactions, transactional_id, *version),
            MetadataRecord::TxnMarkersWritten {
                transactional_id,
                producer_id,
                producer_epoch,
                partitions,
            } => {
                let done = txn::apply_markers_written(
                    &mut self.transactions,
                    transactional_id,
                    *producer_id,
                    *producer_epoch,
                    partitions,
                );
                if let Some(offsets) = done {
                    self.commit_transaction_offsets(offsets);
                }
            }
            MetadataRecord::TxnOffsetCommit {
                transactional_id,
                producer_id,
                producer_epoch,
                group,
                offsets,
            } => {
                txn::apply_offset_commit(
                    &mut self.transactions,
                    transactional_id,
                    *producer_id,
                    *producer_epoch,
                    group,
                    offsets,
                );
            }
            MetadataRecord::ClientQuota { entity, changes } => {
                let values = self.quotas.entry(entity.clone()).or_default();
                for (k, v) in changes {
                    match v {
                        Some(v) => values.insert(k.clone(), *v),
                        None => values.remove(k),
                    };
                }
                if values.is_empty() {
                    self.quotas.remove(entity);
                }
            }
        }
    }

    fn apply_group_offsets(&mut self, group: &str, offsets: &[ReplicatedOffset]) {
        let g = self.group_offsets.entry(group.to_string()).or_default();
        for o in offsets {
            let key = (o.topic.clone(), o.partition);
            match &o.committed {
                Some(c) => {
                    g.insert(key, c.clone());
                }
                None => {
                    g.remove(&key);
                }
            }
        }
        if g.is_empty() {
            self.group_offsets.remove(group);
        }
    }

    /// A committed transaction's offsets become the groups' committed offsets.
    fn commit_transaction_offsets(&mut self, offsets: BTreeMap<String, Vec<ReplicatedOffset>>) {
        for (group, offsets) in offsets {
            self.apply_group_offsets(&group, &offsets);
        }
    }

    /// Every topic's partitions (what replica roles are computed from).
    pub fn clone_partitions(&self) -> HashMap<String, Vec<PartitionMeta>> {
        self.topics
            .iter()
            .map(|(n, t)| (n.clone(), t.partitions.clone()))
            .collect()
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicMeta> {
        self.topic_names.get(id).and_then(|n| self.topics.get(n))
    }

    /// Does the metadata know partition `index` of `topic` (hosted anywhere)?
    pub fn has_partition(&self, topic: &str, index: i32) -> bool {
        self.topics
            .get(topic)
            .is_some_and(|t| usize::try_from(index).is_ok_and(|i| i < t.partitions.len()))
    }

    /// The group (or transaction) coordinator for `key`: a live (unfenced) registered broker
    /// chosen by hash, the same on every node. `None` when no broker is live. When a broker is
    /// fenced its groups move to another broker; members rejoin there.
    pub fn coordinator_for(&self, key: &str) -> Option<i32> {
        let live: Vec<i32> = self
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| b.id)
            .collect();
        if live.is_empty() {
            return None;
        }
        let i = (java_hash(key) as i64).unsigned_abs() as usize % live.len();
        Some(live[i])
    }

    /// The live registered brokers as (id, host, port, rack) for `listener`; brokers without
    /// that listener are left out, and so are fenced ones (as in KRaft: clients should not pick
    /// a broker the controller considers gone, e.g. for InitProducerId).
    pub fn live_endpoints(&self, listener: &str) -> Vec<(i32, String, u16, Option<String>)> {
        self.brokers
            .values()
            .filter(|b| !b.fenced)
            .filter_map(|b| {
                let e = b.endpoints.iter().find(|e| e.listener == listener)?;
                Some((b.id, e.host.clone(), e.port, b.rack.clone()))
            })
            .collect()
    }

    /// The host and port broker `id` registered for `listener`.
    pub fn endpoint_of(&self, id: i32, listener: &str) -> Option<(String, u16)> {
        let e = self
            .brokers
            .get(&id)?
            .endpoints
            .iter()
            .find(|e| e.listener == listener)?;
        Some((e.host.clone(), e.port))
    }

    /// The stored SCRAM credential of `user` for `mechanism` (what SASL/SCRAM login will read).
    pub fn scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Option<&ScramCredential> {
        self.scram.get(user).and_then(|m| m.get(&mechanism))
    }

    /// Every ACL binding (what the authorizer will read).
    pub fn acls(&self) -> impl Iterator<Item = &AclBinding> {
        self.acls.values()
    }

    /// The id of a binding equal to `acl`, if one is stored.
    pub fn acl_id(&self, acl: &AclBinding) -> Option<Uuid> {
        self.acls.iter().find(|(_, b)| *b == acl).map(|(id, _)| *id)
    }

    /// The quota values set for exactly this entity.
    pub fn client_quota(&self, entity: &QuotaEntity) -> Option<&BTreeMap<String, f64>> {
        self.quotas.get(entity)
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

/// Java's `String.hashCode`, so the coordinator choice matches Kafka's `abs(hash) % n` style.
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: i32, fenced: bool) -> RegisteredBroker {
        RegisteredBroker {
            id,
            rack: None,
            endpoints: vec![crate::metadata::BrokerEndpoint {
                listener: "PLAINTEXT".into(),
                host: format!("b{id}"),
                port: 9092,
                security_protocol: "PLAINTEXT".into(),
            }],
            incarnation: Uuid::new_v4(),
            fenced,
        }
    }

    #[test]
    fn coordinators_are_live_brokers_chosen_by_java_hash() {
        let mut img = MetadataImage::default();
        assert_eq!(img.coordinator_for("g"), None, "no live broker");
        for id in [1, 2, 3] {
            img.brokers.insert(id, broker(id, false));
        }
        // Java: "orders".hashCode() = -1008770331, abs % 3 = 0 -> the first live broker.
        assert_eq!(java_hash("orders"), -1_008_770_331);
        assert_eq!(img.coordinator_for("orders"), Some(1));
        img.brokers.get_mut(&1).unwrap().fenced = true;
        // Two live brokers left: 1008770331 % 2 = 1 -> broker 3.
        assert_eq!(img.coordinator_for("orders"), Some(3));
        assert_eq!(img.endpoint_of(3, "PLAINTEXT"), Some(("b3".into(), 9092)));
        assert_eq!(img.endpoint_of(3, "SASL_SSL"), None);
        assert_eq!(img.endpoint_of(9, "PLAINTEXT"), None);
        let live: Vec<i32> = img
            .live_endpoints("PLAINTEXT")
            .iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(live, vec![2, 3], "the fenced broker is left out");
        assert!(img.live_endpoints("SASL_SSL").is_empty());
    }

    #[test]
    fn has_partition_checks_the_index_range() {
        let mut img = MetadataImage::default();
        img.apply(&MetadataRecord::CreateTopic {
            name: "t".into(),
            id: Uuid::new_v4(),
            replicas: vec![vec![1], vec![1]],
            configs: BTreeMap::new(),
        });
        assert!(img.has_partition("t", 0) && img.has_partition("t", 1));
        assert!(!img.has_partition("t", 2) && !img.has_partition("t", -1));
        assert!(!img.has_partition("u", 0));
    }

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

    #[test]
    fn security_records() {
        use crate::auth::acl::{AclOperation, AclPermission, PatternType, ResourceType};
        use crate::metadata::quota::EntityName;
        let mut img = MetadataImage::default();
        let cred = ScramCredential::derive(ScramMechanism::Sha256, b"salt", &[1; 32], 4096);
        img.apply(&MetadataRecord::UserScramCredential {
            name: "alice".into(),
            mechanism: ScramMechanism::Sha256,
            credential: cred.clone(),
        });
        assert_eq!(
            img.scram_credential("alice", ScramMechanism::Sha256),
            Some(&cred)
        );
        assert!(img
            .scram_credential("alice", ScramMechanism::Sha512)
            .is_none());
        img.apply(&MetadataRecord::RemoveUserScramCredential {
            name: "alice".into(),
            mechanism: ScramMechanism::Sha256,
        });
        assert!(img.scram.is_empty());

        let acl = AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: "t".into(),
            pattern_type: PatternType::Literal,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: AclOperation::Read,
            permission: AclPermission::Allow,
        };
        let id = Uuid::new_v4();
        img.apply(&MetadataRecord::AccessControlEntry {
            id,
            acl: acl.clone(),
        });
        assert_eq!(img.acl_id(&acl), Some(id));
        assert_eq!(img.acls().count(), 1);
        img.apply(&MetadataRecord::RemoveAccessControlEntry { id });
        assert_eq!(img.acls().count(), 0);

        let entity = QuotaEntity {
            user: Some(EntityName::Named("alice".into())),
            client_id: None,
            ip: None,
        };
        let mut changes = BTreeMap::new();
        changes.insert("producer_byte_rate".to_string(), Some(1024.0));
        img.apply(&MetadataRecord::ClientQuota {
            entity: entity.clone(),
            changes: changes.clone(),
        });
        assert_eq!(
            img.client_quota(&entity).unwrap()["producer_byte_rate"],
            1024.0
        );
        changes.insert("producer_byte_rate".to_string(), None);
        img.apply(&MetadataRecord::ClientQuota {
            entity: entity.clone(),
            changes,
        });
        assert!(img.client_quota(&entity).is_none());
    }
}
