//! Metadata records: the only way the cluster's metadata changes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::quota::QuotaEntity;
use crate::auth::acl::AclBinding;
use crate::auth::scram::{ScramCredential, ScramMechanism};
use crate::txn::state::TransactionMeta;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    /// A topic with its partitions' replica lists.
    CreateTopic {
        name: String,
        id: Uuid,
        replicas: Vec<Vec<i32>>,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    /// Partitions appended to an existing topic (one replica list per new partition).
    AddPartitions {
        name: String,
        replicas: Vec<Vec<i32>>,
    },
    /// Topic config changes: `None` removes an override.
    AlterTopicConfig {
        name: String,
        changes: BTreeMap<String, Option<String>>,
    },
    /// Dynamic broker config changes; `node` None is the cluster-wide default.
    AlterBrokerConfig {
        node: Option<i32>,
        changes: BTreeMap<String, Option<String>>,
    },
    /// A partition's leadership or ISR changed (KRaft's `PartitionChangeRecord`). Only the
    /// controller writes it, so the ISR in metadata is always one the controller agreed to.
    PartitionChange {
        topic: String,
        partition: i32,
        leader: i32,
        isr: Vec<i32>,
        leader_epoch: i32,
        /// The partition epoch after the change (snapshots carry it); absent = current + 1.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partition_epoch: Option<i32>,
    },
    /// An ISR (and possibly leader) change a partition leader or the controller asked for;
    /// applied only if `partition_epoch` is still the partition's epoch (KRaft's
    /// AlterPartition), see [`super::leadership::alter`].
    AlterPartition {
        topic: String,
        partition: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        leader: Option<i32>,
    },
    /// A partition's replica assignment changes for a reassignment (KIP-455): started,
    /// cancelled or completed (Kafka's `PartitionChangeRecord` with replicas, adding and
    /// removing replicas). Like `AlterPartition` it is applied only if `partition_epoch` is
    /// still the partition's epoch, so it never overwrites an ISR change it was not computed
    /// from; see [`super::reassignment::apply`].
    ReassignPartition {
        topic: String,
        partition: i32,
        partition_epoch: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        leader: i32,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        adding: Vec<i32>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removing: Vec<i32>,
    },
    /// A partition's reassignment lists as they are (snapshots only: unconditional).
    PartitionReassignmentState {
        topic: String,
        partition: i32,
        adding: Vec<i32>,
        removing: Vec<i32>,
    },
    /// The controller fenced a broker that stopped heartbeating or is shutting down: it leaves
    /// the ISRs and its leaderships move (KRaft's `BrokerRegistrationChangeRecord` fenced=1).
    FenceBroker {
        node_id: i32,
    },
    /// A fenced broker heartbeats again.
    UnfenceBroker {
        node_id: i32,
    },
    /// Reserves producer ids below `next` so they are never handed out twice.
    ProducerIdBlock {
        next: i64,
    },
    /// Cluster mode: the next `size` producer ids go to broker `node` (a deterministic block
    /// per applied record, so concurrent reservations never overlap).
    AllocateProducerIds {
        node: i32,
        size: i64,
    },
    /// A user's SCRAM credential for one mechanism, created or replaced (KRaft's
    /// `UserScramCredentialRecord`). Holds salt, StoredKey, ServerKey and iterations only.
    UserScramCredential {
        name: String,
        mechanism: ScramMechanism,
        credential: ScramCredential,
    },
    /// KRaft's `RemoveUserScramCredentialRecord`.
    RemoveUserScramCredential {
        name: String,
        mechanism: ScramMechanism,
    },
    /// One ACL binding with its id (KRaft's `AccessControlEntryRecord`).
    AccessControlEntry {
        id: Uuid,
        acl: AclBinding,
    },
    /// KRaft's `RemoveAccessControlEntryRecord`.
    RemoveAccessControlEntry {
        id: Uuid,
    },
    /// Committed offsets of a consumer group (what Kafka keeps in `__consumer_offsets`):
    /// `None` deletes one. Replicated so a coordinator move loses nothing.
    GroupOffsets {
        group: String,
        offsets: Vec<ReplicatedOffset>,
    },
    /// A transaction coordinator's change to one transactional id's state (what Kafka keeps
    /// in `__transaction_state`): applied only if computed from the state's current version
    /// (see [`crate::txn::state::apply_put`]); `restore` (snapshots) applies it as it is.
    PutTransaction {
        meta: TransactionMeta,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        restore: bool,
    },
    /// An expired transactional id is forgotten, if its state is still at `version`.
    RemoveTransaction {
        transactional_id: String,
        version: u64,
    },
    /// A partition leader wrote a transaction's marker in these partitions, and it is
    /// replicated: the transaction completes when no partition is left.
    TxnMarkersWritten {
        transactional_id: String,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<(String, i32)>,
    },
    /// A transactional offset commit (TxnOffsetCommit): held by the transaction until it ends,
    /// then committed with it or dropped.
    TxnOffsetCommit {
        transactional_id: String,
        producer_id: i64,
        producer_epoch: i16,
        group: String,
        offsets: Vec<ReplicatedOffset>,
    },
    /// A broker's registration (KRaft's `RegisterBrokerRecord`): replaces its previous one.
    RegisterBroker {
        node_id: i32,
        rack: Option<String>,
        endpoints: Vec<BrokerEndpoint>,
        /// A new value per process start: a changed incarnation means the broker restarted
        /// and must re-earn its ISR places (KRaft's incarnation id).
        #[serde(default)]
        incarnation: Uuid,
    },
    /// Client quota changes for one entity (KRaft's `ClientQuotaRecord`, one record per
    /// alteration instead of per key): `None` removes a key.
    ClientQuota {
        entity: QuotaEntity,
        changes: BTreeMap<String, Option<f64>>,
    },
}

impl MetadataRecord {
    /// The record's variant name (the serialized `type` tag), for logs and spans.
    pub fn kind(&self) -> &'static str {
        match self {
            MetadataRecord::CreateTopic { .. } => "CreateTopic",
            MetadataRecord::DeleteTopic { .. } => "DeleteTopic",
            MetadataRecord::AddPartitions { .. } => "AddPartitions",
            MetadataRecord::AlterTopicConfig { .. } => "AlterTopicConfig",
            MetadataRecord::AlterBrokerConfig { .. } => "AlterBrokerConfig",
            MetadataRecord::PartitionChange { .. } => "PartitionChange",
            MetadataRecord::AlterPartition { .. } => "AlterPartition",
            MetadataRecord::ReassignPartition { .. } => "ReassignPartition",
            MetadataRecord::PartitionReassignmentState { .. } => "PartitionReassignmentState",
            MetadataRecord::FenceBroker { .. } => "FenceBroker",
            MetadataRecord::UnfenceBroker { .. } => "UnfenceBroker",
            MetadataRecord::ProducerIdBlock { .. } => "ProducerIdBlock",
            MetadataRecord::AllocateProducerIds { .. } => "AllocateProducerIds",
            MetadataRecord::UserScramCredential { .. } => "UserScramCredential",
            MetadataRecord::RemoveUserScramCredential { .. } => "RemoveUserScramCredential",
            MetadataRecord::AccessControlEntry { .. } => "AccessControlEntry",
            MetadataRecord::RemoveAccessControlEntry { .. } => "RemoveAccessControlEntry",
            MetadataRecord::GroupOffsets { .. } => "GroupOffsets",
            MetadataRecord::PutTransaction { .. } => "PutTransaction",
            MetadataRecord::RemoveTransaction { .. } => "RemoveTransaction",
            MetadataRecord::TxnMarkersWritten { .. } => "TxnMarkersWritten",
            MetadataRecord::TxnOffsetCommit { .. } => "TxnOffsetCommit",
            MetadataRecord::RegisterBroker { .. } => "RegisterBroker",
            MetadataRecord::ClientQuota { .. } => "ClientQuota",
        }
    }

    /// The kind shared by all of `records` (`"Mixed"` when they differ, `"None"` when empty).
    pub fn batch_kind(records: &[MetadataRecord]) -> &'static str {
        match records.split_first() {
            None => "None",
            Some((first, rest)) if rest.iter().all(|r| r.kind() == first.kind()) => first.kind(),
            Some(_) => "Mixed",
        }
    }
}

/// One partition's committed offset in a [`MetadataRecord::GroupOffsets`] record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicatedOffset {
    pub topic: String,
    pub partition: i32,
    pub committed: Option<crate::group::offsets::CommittedOffset>,
}

/// One listener a registered broker serves clients on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerEndpoint {
    pub listener: String,
    pub host: String,
    pub port: u16,
    pub security_protocol: String,
}
