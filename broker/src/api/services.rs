//! What each family of handlers may use: a bundle of references to the services it needs,
//! taken from the broker by the API table (`protocol::apis`) through [`FromBroker`].
//!
//! Why: a handler that receives the whole `Broker` can reach any state, and nothing shows what
//! it depends on. Like Kafka's `KafkaApis`, which is constructed with the `ReplicaManager`,
//! `GroupCoordinator` and so on, every handler names its services in its signature (ApiVersions
//! takes `()`: it needs none) and never sees `state::Broker`; `broker/tests/architecture.rs`
//! checks that no other API module names it. This file is the one place in the API layer where
//! the broker is taken apart.

use std::io;
use std::sync::Arc;

use crate::auth::acl_authorizer::AclAuthorizer;
use crate::cluster::isr::IsrChangeQueue;
use crate::cluster::producer_ids::ProducerIdManager;
use crate::cluster::topics::TopicManager;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::fetch_session::FetchSessions;
use crate::group::GroupCoordinator;
use crate::log::dir_health::LogDirHealth;
use crate::metadata::{MetadataCache, MetadataRecord};
use crate::metrics::Metrics;
use crate::protocol::errors::ErrorCode;
use crate::quota::QuotaManager;
use crate::replica_manager::ReplicaManager;
use crate::state::Broker;
use crate::tasks::DiskPool;
use crate::txn::TransactionCoordinator;

/// Builds a handler's services from the broker (see the module documentation).
pub trait FromBroker<'a> {
    fn from_broker(broker: &'a Arc<Broker>) -> Self;
}

/// A handler that needs no service (ApiVersions answers from the API table alone).
impl FromBroker<'_> for () {
    fn from_broker(_: &Arc<Broker>) -> Self {}
}

/// Produce: appends to led partitions, within quotas, recording the log dir's health.
#[derive(Clone, Copy)]
pub struct ProduceServices<'a> {
    pub image: &'a MetadataCache,
    pub replicas: &'a ReplicaManager,
    pub authorizer: &'a AclAuthorizer,
    pub quotas: &'a QuotaManager,
    pub metrics: &'a Metrics,
    pub log_dir: &'a LogDirHealth,
    pub disk: &'a DiskPool,
}

impl<'a> FromBroker<'a> for ProduceServices<'a> {
    fn from_broker(b: &'a Arc<Broker>) -> Self {
        ProduceServices {
            image: &b.metadata,
            replicas: &b.replicas,
            authorizer: &b.authorizer,
            quotas: &b.quotas,
            metrics: &b.metrics,
            log_dir: &b.log_dir_health,
            disk: &b.disk,
        }
    }
}

/// Fetch: reads led partitions for consumers and followers, within fetch sessions and quotas,
/// and hands ISR changes that a follower's position shows to the ISR queue.
#[derive(Clone, Copy)]
pub struct FetchServices<'a> {
    pub image: &'a MetadataCache,
    pub replicas: &'a ReplicaManager,
    pub authorizer: &'a AclAuthorizer,
    pub sessions: &'a FetchSessions,
    pub isr_changes: &'a IsrChangeQueue,
    pub quotas: &'a QuotaManager,
    pub metrics: &'a Metrics,
    pub disk: &'a DiskPool,
}

impl<'a> FromBroker<'a> for FetchServices<'a> {
    fn from_broker(b: &'a Arc<Broker>) -> Self {
        FetchServices {
            image: &b.metadata,
            replicas: &b.replicas,
            authorizer: &b.authorizer,
            sessions: &b.fetch_sessions,
            isr_changes: &b.isr_changes,
            quotas: &b.quotas,
            metrics: &b.metrics,
            disk: &b.disk,
        }
    }
}

/// ListOffsets, DeleteRecords, OffsetForLeaderEpoch and DescribeLogDirs: questions about the
/// replicas hosted here.
#[derive(Clone, Copy)]
pub struct ReplicaServices<'a> {
    pub replicas: &'a ReplicaManager,
    pub authorizer: &'a AclAuthorizer,
    /// Index lookups and log-start moves read and delete files: they run here.
    pub disk: &'a DiskPool,
}

impl<'a> FromBroker<'a> for ReplicaServices<'a> {
    fn from_broker(b: &'a Arc<Broker>) -> Self {
        ReplicaServices {
            replicas: &b.replicas,
            authorizer: &b.authorizer,
            disk: &b.disk,
        }
    }
}

/// The group membership and offset APIs.
#[derive(Clone, Copy)]
pub struct GroupServices<'a> {
    /// This broker's id: it answers for the groups it coordinates.
    pub node_id: i32,
    pub image: &'a MetadataCache,
    pub groups: &'a GroupCoordinator,
    pub authorizer: &'a AclAuthorizer,
    /// FindCoordinator creates the coordinators' internal topics on first use.
    pub topics: TopicManager<'a>,
}

impl GroupServices<'_> {
    /// Does this broker coordinate `group` (by the current image's live brokers)?
    pub fn coordinates(&self, group: &str) -> bool {
        self.image.snapshot().coordinator_for(group) == Some(self.node_id)
    }
}

impl<'a> FromBroker<'a> for GroupServices<'a> {
    fn from_broker(b: &'a Arc<Broker>) -> Self {
        GroupServices {
            node_id: b.config.node_id,
            image: &b.metadata,
            groups: &b.groups,
            authorizer: &b.authorizer,
            topics: b.topics(),
        }
    }
}

/// SCRAM credentials, ACLs and client quotas: read from the image, changed through the quorum
/// one change at a time.
#[derive(Clone, Copy)]
pub struct SecurityServices<'a> {
    pub image: &'a MetadataCache,
    pub authorizer: &'a AclAuthorizer,
    cluster: &'a Cluster,
    changes: &'a tokio::sync::Mutex<()>,
}

impl<'a> SecurityServices<'a> {
    /// Serialises security changes with each other: hold the guard from the check against
    /// the image to the commit, so two requests cannot both pass a check the other breaks.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'a, ()> {
        self.changes.lock().await
    }

    /// Commits `records` as one quorum command; returns once this node applied them.
    pub async fn commit(&self, records: &[MetadataRecord]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.cluster.write(records).await
    }
}

impl<'a> FromBroker<'a> for SecurityServices<'a> {
    fn from_broker(b: &'a Arc<Broker>) -> Self {
        SecurityServices {
            image: &b.metadata,
            authorizer: &b.authorizer,
            cluster: &b.cluster,
            changes: &b.security_changes,
        }
    }
}

/// InitProducerId: producer ids reserved through the quorum, and the transaction
/// coordinator for transactional producers.
#[derive(Clone, Copy)]
pub struct ProducerIdServices<'a> {
    pub authorizer: &'a AclAuthorizer,
    producer_ids: &'a ProducerIdManager,
    cluster: &'a Cluster,
    image: &'a MetadataCache,
    transactions: &'a TransactionCoordinator,
}

impl ProducerIdServices<'_> {
    /// The next producer id (see `cluster::producer_ids`).
    pub async fn next_producer_id(&self) -> io::Result<i64> {
        self.producer_ids.next(self.cluster, self.image).await
    }

    /// A transactional producer's id and epoch (see `txn::coordinator`).
    pub async fn init_transactional(
        &self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), ErrorCode> {
        self.transactions
            .init_producer_id(self.producer_ids, transactional_id, timeout_ms, expected)
            .await
    }
}

impl<'a> FromBroker<'a> for ProducerIdServices<'a> {
    fn from_broker(b: &'a Arc<Broker>) -> Self {
        ProducerIdServices {
            authorizer: &b.authorizer,
            producer_ids: &b.producer_ids,
            cluster: &b.cluster,
            image: &b.metadata,
            transactions: &b.transactions,
        }
    }
}

/// The transactional APIs: the transaction coordinator and what it checks against.
#[derive(Clone, Copy)]
pub struct TransactionServices<'a> {
    /// This broker's id: TxnOffsetCommit is answered by the group's coordinator.
    pub node_id: i32,
    pub image: &'a MetadataCache,
    pub transactions: &'a TransactionCoordinator,
    pub authorizer: &'a AclAuthorizer,
}

impl<'a> FromBroker<'a> for TransactionServices<'a> {
    fn from_broker(b: &'a Arc<Broker>) -> Self {
        TransactionServices {
            node_id: b.config.node_id,
            image: &b.metadata,
            transactions: &b.transactions,
            authorizer: &b.authorizer,
        }
    }
}

/// CreateTopics, DeleteTopics, CreatePartitions and the config APIs.
#[derive(Clone, Copy)]
pub struct TopicServices<'a> {
    pub topics: TopicManager<'a>,
    pub authorizer: &'a AclAuthorizer,
}

impl<'a> FromBroker<'a> for TopicServices<'a> {
    fn from_broker(b: &'a Arc<Broker>) -> Self {
        TopicServices {
            topics: b.topics(),
            authorizer: &b.authorizer,
        }
    }
}

/// Metadata, DescribeCluster and DescribeTopicPartitions: the image as clients see it, topic
/// auto-creation, and who the controller is.
#[derive(Clone, Copy)]
pub struct MetadataServices<'a> {
    pub topics: TopicManager<'a>,
    pub authorizer: &'a AclAuthorizer,
    pub cluster_id: &'a str,
}

impl MetadataServices<'_> {
    /// The active controller (the metadata quorum's leader), if one is known.
    pub fn controller(&self) -> Option<i32> {
        self.topics.cluster.leader()
    }
}

impl<'a> FromBroker<'a> for MetadataServices<'a> {
    fn from_broker(b: &'a Arc<Broker>) -> Self {
        MetadataServices {
            topics: b.topics(),
            authorizer: &b.authorizer,
            cluster_id: &b.cluster_id,
        }
    }
}

/// The controller-side admin APIs: DescribeQuorum, partition reassignment and leader
/// election, which read the image and write through the quorum.
#[derive(Clone, Copy)]
pub struct ControllerServices<'a> {
    pub config: &'a Config,
    pub image: &'a MetadataCache,
    pub cluster: &'a Cluster,
    pub authorizer: &'a AclAuthorizer,
}

impl<'a> FromBroker<'a> for ControllerServices<'a> {
    fn from_broker(b: &'a Arc<Broker>) -> Self {
        ControllerServices {
            config: &b.config,
            image: &b.metadata,
            cluster: &b.cluster,
            authorizer: &b.authorizer,
        }
    }
}
