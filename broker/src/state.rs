//! The broker's shared state: identity, the metadata image (kept by the metadata quorum's
//! applier), the quorum itself, the replica manager (hosted partitions), the group coordinator,
//! quotas and metrics, each a service owning its own state. Every metadata change is a quorum
//! command, on a single node too; the topic and security changes that go through the quorum
//! are still methods here.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use uuid::Uuid;

use crate::auth::acl_authorizer::AclAuthorizer;
use crate::auth::authorizer::Authorizer;
use crate::cluster::producer_ids::ProducerIdManager;
use crate::config::Config;
use crate::group::GroupCoordinator;
use crate::log::dir_health::{LogDirFailed, LogDirHealth};
use crate::metadata::{MetadataCache, MetadataRecord};
use crate::metrics::Metrics;
use crate::protocol::errors::ErrorCode;
use crate::replica_manager::ReplicaManager;
use crate::topic_config::{self, TopicSettings};
pub use crate::topic_config::{validate_topic_name, TopicError};

pub struct Broker {
    pub config: Config,
    pub cluster_id: String,
    /// Shared with the quorum applier, which alone updates it.
    pub metadata: Arc<MetadataCache>,
    /// The partitions hosted here and who leads them (`replica_manager`).
    pub replicas: ReplicaManager,
    /// The Raft quorum carrying metadata (a one-voter quorum on a single node).
    pub cluster: crate::cluster::Cluster,
    pub groups: GroupCoordinator,
    pub metrics: Metrics,
    /// Client quota rates and throttling (`quota`).
    pub quotas: crate::quota::QuotaManager,
    /// ACL decisions (`auth::acl_authorizer`), asked by handlers through `api::authz`.
    pub authorizer: AclAuthorizer,
    /// ISR changes found by Fetch requests, committed by `cluster::isr::commit_queued`.
    pub isr_changes: crate::cluster::isr::IsrChangeQueue,
    /// Incremental fetch sessions (KIP-227) of consumers and followers fetching from here.
    pub fetch_sessions: crate::fetch_session::FetchSessions,
    /// Producer ids for idempotent producers (`cluster::producer_ids`).
    pub producer_ids: ProducerIdManager,
    /// Serialises SCRAM, ACL and quota changes with each other, each from its check against
    /// the image to its commit: an async lock, held across the awaited quorum write.
    pub(crate) security_changes: tokio::sync::Mutex<()>,
    /// Serialises topic-changing operations (create/delete/alter) the same way.
    topic_changes: tokio::sync::Mutex<()>,
    /// Whether the log directory takes writes (a full disk does not); part of readiness.
    pub log_dir_health: LogDirHealth,
    ready: AtomicBool,
    /// Every task the broker spawned; cancelled and awaited on shutdown.
    pub tasks: crate::tasks::Tasks,
}

/// Shutdown gives the broker's tasks this long to end; SIGTERM's whole path stays well inside
/// Kubernetes' default 30 s grace period.
pub const SHUTDOWN_BOUND: std::time::Duration = std::time::Duration::from_secs(8);

/// Why `/v1/ready` answers 503.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotReady {
    #[error("the broker is still starting")]
    Starting,
    #[error("the readiness check did not finish (the broker is stopping)")]
    Interrupted,
    #[error("no metadata quorum leader is known")]
    NoQuorumLeader,
    #[error("this broker is not registered in the metadata, or is fenced")]
    NotRegistered,
    #[error(transparent)]
    LogDir(#[from] LogDirFailed),
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Broker {
    /// Opens the broker around the started quorum and the image its applier updates
    /// (partition logs are opened by `cluster::hosted::sync`).
    pub fn open(
        config: Config,
        cluster: crate::cluster::Cluster,
        image: Arc<MetadataCache>,
    ) -> anyhow::Result<Arc<Broker>> {
        let dir = config.data_dir().clone();
        std::fs::create_dir_all(&dir)?;
        let cluster_id =
            crate::identity::load_or_format(&dir, config.node_id, config.cluster_id.as_deref())?;
        let groups = GroupCoordinator::open(&dir, &config)?;
        let metrics = Metrics::new();
        let quotas = crate::quota::QuotaManager::new(
            &metrics.registry,
            config.quota_window_num,
            config.quota_window_size_seconds,
        );
        let broker = Arc::new(Broker {
            cluster_id,
            replicas: ReplicaManager::new(config.node_id, dir.clone(), image.clone()),
            authorizer: AclAuthorizer::new(
                config.authorizer_enabled.then(|| Authorizer {
                    super_users: config.super_users.clone(),
                    allow_if_no_acl: config.allow_everyone_if_no_acl_found,
                }),
                image.clone(),
            ),
            metadata: image,
            cluster,
            groups,
            metrics,
            quotas,
            fetch_sessions: Default::default(),
            isr_changes: Default::default(),
            producer_ids: ProducerIdManager::new(config.node_id),
            security_changes: tokio::sync::Mutex::new(()),
            topic_changes: tokio::sync::Mutex::new(()),
            log_dir_health: LogDirHealth::new(&dir),
            ready: AtomicBool::new(false),
            tasks: crate::tasks::Tasks::new(tokio::runtime::Handle::current()),
            config,
        });
        let weak = Arc::downgrade(&broker);
        broker
            .groups
            .set_replicator(Box::new(move |group, offsets| {
                let broker = weak.upgrade();
                let record = MetadataRecord::GroupOffsets {
                    group: group.to_string(),
                    offsets,
                };
                Box::pin(async move {
                    let broker =
                        broker.ok_or_else(|| io::Error::other("the broker is shutting down"))?;
                    broker.cluster.write(&[record]).await
                })
            }));
        broker.ready.store(true, Ordering::Release);
        Ok(broker)
    }

    /// Logs recovered and opened, a quorum leader is known, this process's registration is
    /// in the metadata, unfenced (so it serves current metadata), and the log dir takes writes.
    /// May probe a failed log dir: blocking file I/O.
    pub fn readiness(&self) -> Result<(), NotReady> {
        if !self.ready.load(Ordering::Acquire) {
            return Err(NotReady::Starting);
        }
        let cluster = &self.cluster;
        if cluster.leader().is_none() {
            return Err(NotReady::NoQuorumLeader);
        }
        let registered = self
            .metadata
            .snapshot()
            .brokers
            .get(&self.config.node_id)
            .is_some_and(|b| b.incarnation == cluster.incarnation && !b.fenced);
        if !registered {
            return Err(NotReady::NotRegistered);
        }
        self.log_dir_health.check()?;
        Ok(())
    }

    pub fn is_stopping(&self) -> bool {
        self.tasks.is_stopping()
    }

    /// Effective broker-level topic defaults: static config overlaid with dynamic cluster configs.
    pub fn topic_defaults(&self) -> BTreeMap<String, String> {
        let mut d = self.config.topic_defaults.clone();
        let img = self.metadata.snapshot();
        for node in [None, Some(self.config.node_id)] {
            if let Some(map) = img.broker_configs.get(&node) {
                for (k, v) in map {
                    if let Some(tk) = crate::config::broker_key_to_topic_key(k) {
                        d.insert(tk.to_string(), v.clone());
                    }
                }
            }
        }
        d
    }

    pub(crate) fn settings_for(&self, topic_configs: &BTreeMap<String, String>) -> TopicSettings {
        TopicSettings::resolve(topic_configs, &self.topic_defaults())
    }

    async fn commit(&self, record: MetadataRecord) -> io::Result<()> {
        self.commit_all(std::slice::from_ref(&record)).await
    }

    /// Commits records as one quorum command and returns once this node applied them (so the
    /// caller reads its own write). Awaited, never blocking a runtime worker through the Raft
    /// round trip. Callers that check the image before committing hold
    /// the security change lock (`api::services::SecurityServices`) or `topic_changes()`
    /// across both steps.
    pub(crate) async fn commit_all(&self, records: &[MetadataRecord]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.cluster.write(records).await
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
        if partitions > 100_000 {
            return Err(TopicError::new(
                ErrorCode::InvalidPartitions,
                "Number of partitions is above the limit of 100000.",
            ));
        }
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
        crate::cluster::topics::create_topic(self, name, partitions, rf, configs, validate_only)
            .await
    }

    /// Serialises topic-changing operations (create/delete/alter) with each other (held
    /// across the commit).
    pub(crate) async fn topic_changes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.topic_changes.lock().await
    }

    pub async fn delete_topic(&self, name: &str) -> Result<Uuid, TopicError> {
        if !self.config.delete_topic_enable {
            return Err(TopicError::new(
                ErrorCode::TopicAuthorizationFailed,
                "Topic deletion is disabled.",
            ));
        }
        let _guard = self.topic_changes().await;
        let id = self
            .metadata
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
        self.commit(MetadataRecord::DeleteTopic {
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
        let _guard = self.topic_changes().await;
        let current = {
            let img = self.metadata.snapshot();
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
        if count > 100_000 {
            return Err(TopicError::new(
                ErrorCode::InvalidPartitions,
                "Number of partitions is above the limit of 100000.",
            ));
        }
        crate::cluster::topics::add_partitions(self, name, current, count, validate_only).await
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
        let _guard = self.topic_changes().await;
        if !self.metadata.snapshot().topics.contains_key(name) {
            return Err(TopicError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("Topic '{name}' does not exist."),
            ));
        }
        if validate_only {
            return Ok(());
        }
        self.commit(MetadataRecord::AlterTopicConfig {
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
        let _guard = self.topic_changes().await;
        let changes = changes
            .into_iter()
            .map(|(k, v)| {
                let v = v.map(|v| crate::config::dynamic_value_in_topic_units(&k, &v).unwrap_or(v));
                (k, v)
            })
            .collect();
        self.commit(MetadataRecord::AlterBrokerConfig { node, changes })
            .await
            .map_err(storage_error)?;
        self.refresh_settings(None);
        Ok(())
    }

    /// Recomputes effective settings for one topic or all.
    pub(crate) fn refresh_settings(&self, only: Option<&str>) {
        let img = self.metadata.snapshot();
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

    /// Orderly shutdown: stops every task (accept loops, connections, fetchers, controller
    /// duties) within [`SHUTDOWN_BOUND`], then flushes logs and group state and stops the
    /// quorum member. Returns how many tasks had to be abandoned (0 when all ended).
    pub async fn shutdown(self: &Arc<Self>) -> usize {
        self.ready.store(false, Ordering::Release);
        let abandoned = match self.tasks.shutdown(SHUTDOWN_BOUND).await {
            Ok(()) => 0,
            Err(e) => {
                tracing::warn!(error = %e, "shutdown went on without them");
                e.running
            }
        };
        let b = self.clone();
        let flushed = tokio::task::spawn_blocking(move || {
            b.replicas.flush_all();
            b.groups.flush();
        });
        if let Err(e) = flushed.await {
            tracing::error!(error = %e, "flushing logs failed");
        }
        self.cluster.shutdown().await;
        abandoned
    }
}

pub(crate) fn storage_error(e: io::Error) -> TopicError {
    tracing::error!(error = %e, "storage error");
    TopicError::new(ErrorCode::UnknownServerError, format!("storage error: {e}"))
}
