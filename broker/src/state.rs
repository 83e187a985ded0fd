//! The broker's shared state: identity, the metadata image (kept by the metadata quorum's
//! applier), the quorum itself, the replica manager (hosted partitions), the group coordinator,
//! quotas and metrics, each a service owning its own state. Every metadata change is a quorum
//! command, on a single node too. Handlers never see this struct: `api::services` hands each
//! the services it uses, the replica fetchers get theirs (`FollowerServices`) when the
//! broker is built, and the control duties in `cluster` (liveness, ISR upkeep, reassignment,
//! rebalance, registration) get `cluster::ControlServices`. Only start-up, shutdown, the
//! admin endpoint and the metadata hook that opens hosted logs (`cluster::hosted`) see it.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::auth::acl_authorizer::AclAuthorizer;
use crate::auth::authorizer::Authorizer;
use crate::cluster::producer_ids::ProducerIdManager;
use crate::cluster::topics::TopicManager;
use crate::config::Config;
use crate::group::GroupCoordinator;
use crate::log::dir_health::{LogDirFailed, LogDirHealth};
use crate::metadata::{MetadataCache, MetadataRecord};
use crate::metrics::Metrics;
use crate::replica_manager::ReplicaManager;
use crate::replication::fetcher::{FollowerServices, ReplicaFetchers};
pub use crate::topic_config::{validate_topic_name, TopicError};

pub struct Broker {
    pub config: Arc<Config>,
    pub cluster_id: String,
    /// Shared with the quorum applier, which alone updates it.
    pub metadata: Arc<MetadataCache>,
    /// The partitions hosted here and who leads them (`replica_manager`).
    pub replicas: Arc<ReplicaManager>,
    /// The Raft quorum carrying metadata (a one-voter quorum on a single node).
    pub cluster: Arc<crate::cluster::Cluster>,
    pub groups: GroupCoordinator,
    /// Transactional ids' state and the transactional APIs (`txn`).
    pub transactions: crate::txn::TransactionCoordinator,
    pub metrics: Arc<Metrics>,
    /// Client quota rates and throttling (`quota`).
    pub quotas: crate::quota::QuotaManager,
    /// ACL decisions (`auth::acl_authorizer`), asked by handlers through `api::authz`.
    pub authorizer: AclAuthorizer,
    /// ISR changes found by Fetch requests, committed by `cluster::isr::commit_queued`.
    pub isr_changes: Arc<crate::cluster::isr::IsrChangeQueue>,
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
    pub log_dir_health: Arc<LogDirHealth>,
    ready: AtomicBool,
    /// Every task the broker spawned; cancelled and awaited on shutdown.
    pub tasks: crate::tasks::Tasks,
    /// The threads that do disk work for requests and replica fetchers (`num.io.threads`).
    pub disk: Arc<crate::tasks::DiskPool>,
    /// The replica fetchers: one per broker this node follows partitions at.
    pub fetchers: ReplicaFetchers,
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
    #[error(
        "the metadata quorum member stopped ({0}); restart the broker once the cause is fixed"
    )]
    QuorumStopped(String),
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
        let groups = GroupCoordinator::new(&config, image.clone());
        let metrics = Arc::new(Metrics::new());
        let config = Arc::new(config);
        let log_dir_health = Arc::new(LogDirHealth::new(&dir));
        let disk = Arc::new(crate::tasks::DiskPool::new(config.io_threads)?);
        let tasks = crate::tasks::Tasks::new(tokio::runtime::Handle::current());
        let fetchers = ReplicaFetchers::new(FollowerServices {
            config: config.clone(),
            image: image.clone(),
            metrics: metrics.clone(),
            log_dir: log_dir_health.clone(),
            disk: disk.clone(),
            tasks: tasks.clone(),
        });
        let quotas = crate::quota::QuotaManager::new(
            &metrics.registry,
            config.quota_window_num,
            config.quota_window_size_seconds,
        );
        let cluster = Arc::new(cluster);
        let broker = Arc::new(Broker {
            cluster_id,
            replicas: Arc::new(ReplicaManager::new(
                config.node_id,
                dir.clone(),
                image.clone(),
            )),
            authorizer: AclAuthorizer::new(
                config.authorizer_enabled.then(|| Authorizer {
                    super_users: config.super_users.clone(),
                    allow_if_no_acl: config.allow_everyone_if_no_acl_found,
                }),
                image.clone(),
            ),
            transactions: crate::txn::TransactionCoordinator::new(
                config.node_id,
                config.transaction_max_timeout_ms,
                image.clone(),
                cluster.clone(),
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
            log_dir_health,
            ready: AtomicBool::new(false),
            tasks,
            disk,
            fetchers,
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
        if let Some(why) = cluster.stopped() {
            return Err(NotReady::QuorumStopped(why));
        }
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

    /// The services the control duties run on (`cluster::ControlServices`).
    pub fn control(&self) -> crate::cluster::ControlServices {
        crate::cluster::ControlServices {
            config: self.config.clone(),
            image: self.metadata.clone(),
            cluster: self.cluster.clone(),
            replicas: self.replicas.clone(),
            metrics: self.metrics.clone(),
            tasks: self.tasks.clone(),
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.tasks.is_stopping()
    }

    /// Topic and config changes, and the topic settings the logs are opened with
    /// (`cluster::topics::TopicManager`).
    pub fn topics(&self) -> TopicManager<'_> {
        TopicManager {
            config: &self.config,
            image: &self.metadata,
            cluster: &self.cluster,
            replicas: &self.replicas,
            changes: &self.topic_changes,
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
        let flushed = tokio::task::spawn_blocking(move || b.replicas.flush_all());
        if let Err(e) = flushed.await {
            tracing::error!(error = %e, "flushing logs failed");
        }
        self.cluster.shutdown().await;
        abandoned
    }
}
