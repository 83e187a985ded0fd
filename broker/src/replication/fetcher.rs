//! The follower side of replication: one fetcher per source broker (Kafka's
//! `ReplicaFetcherManager` and fetcher threads). Each fetcher owns one connection to its leader
//! and asks for every partition this node follows there in one Fetch request (replica id set,
//! so the leader counts the fetch positions towards its ISRs and high watermarks), then appends
//! the leader's batches as they are. Per-partition fetchers cost a connection, a task and a
//! long-poll per partition; with many partitions that is what capped replication.
//!
//! On every new leader epoch a partition is first truncated to where its log stops agreeing
//! with the leader's (OffsetsForLeaderEpoch): records the old leader appended but never
//! committed, which the new leader does not have. A partition leaves its fetcher when its role
//! or leader epoch changes; the metadata hook (`cluster::hosted`) hands it to the fetcher of the
//! new leader, and a fetcher with nothing left to follow ends. A partition-level error delays
//! only that partition; a connection error makes the whole fetcher reconnect with a backoff.
//! Fetches go through a fetch session (KIP-227, `super::session`): after the first, a request
//! names only partitions whose position changed and the leader answers only those with news.
//! Each round runs in a debug `replication_fetch` span.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use fjord_client::Connection;
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use parking_lot::Mutex;
use tokio::time::Instant;
use tracing::Instrument;

use super::follower_log::{self, Fetched, Refused};
use super::throttle::TokenBucket;
use crate::config::Config;
use crate::log::dir_health::LogDirHealth;
use crate::log::ReplicaAppend;
use crate::metadata::MetadataCache;
use crate::metrics::Metrics;
use crate::partition::{Partition, Role};
use crate::protocol::errors::ErrorCode;
use crate::state::now_ms;
use crate::tasks::{DiskPool, DiskPoolStopped, Tasks};

const FETCH_VERSION: i16 = 12;
const EPOCH_VERSION: i16 = 4;
/// How long a partition sits out after its leader answered an error for it.
const PARTITION_BACKOFF: Duration = Duration::from_millis(100);

use super::session::{FollowerSession, PartitionKey};

/// What the replica fetchers use. Owned handles, not borrows: every fetcher is a task of its
/// own that outlives any request.
#[derive(Clone)]
pub struct FollowerServices {
    /// This node's id, the inter-broker listener and security, the `replica.fetch.*` settings.
    pub config: Arc<Config>,
    /// Where the leaders' endpoints and the throttled replicas are read.
    pub image: Arc<MetadataCache>,
    pub metrics: Arc<Metrics>,
    /// Appends record their success or failure here (readiness on a full disk).
    pub log_dir: Arc<LogDirHealth>,
    /// Appends and truncations run on the disk threads.
    pub disk: Arc<DiskPool>,
    /// Fetchers are spawned here and stop when the broker does.
    pub tasks: Tasks,
}

/// This broker's replica fetchers, one per source broker.
pub struct ReplicaFetchers {
    registry: Arc<Registry>,
}

/// The fetchers by leader, and what they share.
struct Registry {
    services: FollowerServices,
    /// This broker's follower replication throttle (reassignments), shared by every
    /// throttled partition as Kafka's quota is.
    throttle: Mutex<TokenBucket>,
    by_leader: Mutex<HashMap<i32, Arc<LeaderFetcher>>>,
}

/// What one fetcher follows at one leader.
struct LeaderFetcher {
    leader: i32,
    partitions: Mutex<BTreeMap<PartitionKey, Followed>>,
    /// Woken when a partition is added, so an idle fetcher starts at once.
    added: tokio::sync::Notify,
}

struct Followed {
    partition: Arc<Partition>,
    leader_epoch: i32,
    /// Whether the log was checked against the leader's epochs for `leader_epoch`.
    truncated: bool,
    /// Not fetched before this (after a partition-level error).
    delayed_until: Option<Instant>,
    failures: u32,
}

/// Why a step for one partition stopped.
enum Stop {
    /// The partition's role or epoch changed: it leaves this fetcher.
    Superseded,
    /// The leader answered an error for this partition: retry it after a pause.
    Partition(String),
    /// The connection failed or timed out: reconnect.
    Connection(ConnectionLost),
}

/// Why a fetcher drops its connection to the leader (it reconnects after a backoff).
#[derive(Debug, thiserror::Error)]
enum ConnectionLost {
    #[error("broker {leader} has no {listener} endpoint")]
    NoEndpoint { leader: i32, listener: String },
    #[error("connect {addr}: {source}")]
    Connect {
        addr: String,
        source: fjord_client::ClientError,
    },
    #[error("{0} timed out")]
    TimedOut(&'static str),
    #[error(transparent)]
    Client(#[from] fjord_client::ClientError),
    #[error("fetch answered {0:?}")]
    FetchRefused(ErrorCode),
    #[error(transparent)]
    Disk(#[from] DiskPoolStopped),
}

impl ReplicaFetchers {
    pub fn new(services: FollowerServices) -> ReplicaFetchers {
        ReplicaFetchers {
            registry: Arc::new(Registry {
                services,
                throttle: Mutex::default(),
                by_leader: Mutex::default(),
            }),
        }
    }

    /// Starts following `partition` at `leader` for `leader_epoch`: the partition moves to that
    /// leader's fetcher (started if there is none) and leaves any other.
    pub fn follow(&self, partition: Arc<Partition>, leader: i32, leader_epoch: i32) {
        let registry = &self.registry;
        let key: PartitionKey = (partition.topic.clone(), partition.index);
        let mut fetchers = registry.by_leader.lock();
        for fetcher in fetchers.values().filter(|f| f.leader != leader) {
            fetcher.partitions.lock().remove(&key);
        }
        let fetcher = fetchers.entry(leader).or_insert_with(|| {
            let fetcher = Arc::new(LeaderFetcher {
                leader,
                partitions: Mutex::default(),
                added: tokio::sync::Notify::new(),
            });
            registry
                .services
                .tasks
                .spawn(run(registry.clone(), fetcher.clone()));
            fetcher
        });
        fetcher.partitions.lock().insert(
            key,
            Followed {
                partition,
                leader_epoch,
                truncated: false,
                delayed_until: None,
                failures: 0,
            },
        );
        fetcher.added.notify_one();
        registry
            .services
            .metrics
            .replica_fetchers
            .set(fetchers.len() as i64);
    }
}

impl Registry {
    /// Ends `fetcher` if it follows nothing any more. Under the registry's lock, so a
    /// concurrent `follow` either lands before (and the fetcher stays) or starts a new one.
    fn retire_if_idle(&self, fetcher: &Arc<LeaderFetcher>) -> bool {
        let mut fetchers = self.by_leader.lock();
        if !fetcher.partitions.lock().is_empty() {
            return false;
        }
        if fetchers
            .get(&fetcher.leader)
            .is_some_and(|f| Arc::ptr_eq(f, fetcher))
        {
            fetchers.remove(&fetcher.leader);
        }
        self.services
            .metrics
            .replica_fetchers
            .set(fetchers.len() as i64);
        true
    }
}

/// One partition's part of the next fetch.
struct Planned {
    key: PartitionKey,
    partition: Arc<Partition>,
    leader_epoch: i32,
    throttle: Option<u64>,
}

/// The fetcher's loop: until it follows nothing or the broker stops.
async fn run(registry: Arc<Registry>, fetcher: Arc<LeaderFetcher>) {
    let leader = fetcher.leader;
    let mut conn: Option<Connection> = None;
    let mut session = FollowerSession::default();
    let mut failures = 0u32;
    let mut round = 0usize;
    loop {
        if registry.services.tasks.is_stopping() {
            return;
        }
        if super::faults::fetchers_paused() {
            conn = None;
            session.restart();
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        drop_superseded(&fetcher);
        if registry.retire_if_idle(&fetcher) {
            return;
        }
        let (planned, wake_at) = plan(&registry, &fetcher, round);
        round = round.wrapping_add(1);
        if planned.is_empty() {
            let wake_at = wake_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            tokio::select! {
                () = fetcher.added.notified() => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
            continue;
        }
        let span = tracing::debug_span!(
            "replication_fetch",
            leader,
            partitions = planned.len(),
            appended_bytes = tracing::field::Empty,
        );
        let result = async {
            if conn.is_none() {
                conn = Some(connect(&registry.services, leader).await?);
            }
            let c = conn.as_mut().expect("connected above");
            fetch_round(&registry, &fetcher, c, &mut session, planned).await
        }
        .instrument(span)
        .await;
        match result {
            Ok(()) => failures = 0,
            Err(why) => {
                conn = None;
                session.restart();
                failures += 1;
                if failures == 1 || failures.is_multiple_of(50) {
                    tracing::info!(leader, reason = %why, "follower fetch failed; retrying");
                }
                tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(5)))).await;
            }
        }
    }
}

/// Removes the partitions whose role or leader epoch moved on.
fn drop_superseded(fetcher: &LeaderFetcher) {
    fetcher
        .partitions
        .lock()
        .retain(|_, f| still_following(&f.partition, fetcher.leader, f.leader_epoch));
}

/// What to fetch this round, and when to look again if nothing can be fetched now (partitions
/// delayed after errors, or throttled). The order rotates every round so a response filled to
/// `replica.fetch.response.max.bytes` by the first partitions does not starve the last.
fn plan(
    registry: &Registry,
    fetcher: &LeaderFetcher,
    round: usize,
) -> (Vec<Planned>, Option<Instant>) {
    let now = Instant::now();
    let mut wake_at: Option<Instant> = None;
    let mut planned = Vec::new();
    let partitions = fetcher.partitions.lock();
    for (key, followed) in partitions.iter() {
        if let Some(until) = followed.delayed_until.filter(|until| *until > now) {
            wake_at = Some(wake_at.map_or(until, |w| w.min(until)));
            continue;
        }
        let throttle = throttled_rate(&registry.services, &followed.partition);
        if let Some(wait) = throttle.and_then(|rate| throttle_wait(registry, rate)) {
            let until = now + Duration::from_millis(wait.min(1_000));
            wake_at = Some(wake_at.map_or(until, |w| w.min(until)));
            continue;
        }
        planned.push(Planned {
            key: key.clone(),
            partition: followed.partition.clone(),
            leader_epoch: followed.leader_epoch,
            throttle,
        });
    }
    drop(partitions);
    if !planned.is_empty() {
        let len = planned.len();
        planned.rotate_left(round % len);
    }
    (planned, wake_at)
}

/// The follower replication rate limiting this partition's fetches now, if it is throttled
/// (see `super::throttle`).
fn throttled_rate(services: &FollowerServices, p: &Partition) -> Option<u64> {
    super::throttle::follower_rate(
        &services.image.snapshot(),
        services.config.node_id,
        &p.topic,
        p.index,
    )
}

/// How long the next throttled fetch must wait (`None`: fetch now).
fn throttle_wait(registry: &Registry, rate: u64) -> Option<u64> {
    let wait = registry.throttle.lock().wait_ms(rate, now_ms());
    (wait > 0).then_some(wait)
}

fn still_following(p: &Partition, leader: i32, leader_epoch: i32) -> bool {
    let st = p.replica.lock();
    st.leader_epoch == leader_epoch && st.role == Role::Follower { leader }
}

async fn connect(services: &FollowerServices, leader: i32) -> Result<Connection, ConnectionLost> {
    let listener = &services.config.cluster.inter_broker_listener;
    let (host, port) = services
        .image
        .snapshot()
        .endpoint_of(leader, listener)
        .ok_or_else(|| ConnectionLost::NoEndpoint {
            leader,
            listener: listener.clone(),
        })?;
    let security = crate::cluster::inter_broker::client_security(&services.config);
    let connect = Connection::connect_with((host.as_str(), port), &security);
    match tokio::time::timeout(Duration::from_secs(3), connect).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(source)) => Err(ConnectionLost::Connect {
            addr: format!("{host}:{port}"),
            source,
        }),
        Err(_) => Err(ConnectionLost::TimedOut("connect")),
    }
}

/// One round: truncation checks for partitions on a new epoch, then one Fetch for every
/// partition ready, and the appends of what came back. `Err` only for the connection.
async fn fetch_round(
    registry: &Registry,
    fetcher: &LeaderFetcher,
    conn: &mut Connection,
    session: &mut FollowerSession,
    planned: Vec<Planned>,
) -> Result<(), ConnectionLost> {
    let services = &registry.services;
    let mut ready = Vec::with_capacity(planned.len());
    for p in planned {
        let truncated = fetcher
            .partitions
            .lock()
            .get(&p.key)
            .is_some_and(|f| f.truncated && f.leader_epoch == p.leader_epoch);
        if truncated {
            ready.push(p);
            continue;
        }
        let outcome = truncate_to_leader(services, conn, &p.partition, p.leader_epoch).await;
        if settle(fetcher, &p, outcome, true)? {
            ready.push(p);
        }
    }
    if ready.is_empty() {
        return Ok(());
    }
    let cluster = &services.config.cluster;
    let mut partitions = Vec::with_capacity(ready.len());
    for p in &ready {
        // A throttled fetch asks for about one second's worth (at least one batch comes back).
        let partition_max_bytes = match p.throttle {
            Some(rate) => cluster
                .replica_fetch_max_bytes
                .min(i32::try_from(rate.max(1)).unwrap_or(i32::MAX)),
            None => cluster.replica_fetch_max_bytes,
        };
        let (fetch_offset, log_start) = {
            let log = p.partition.log.read();
            (log.log_end_offset(), log.log_start_offset())
        };
        let partition = FetchPartition::default()
            .with_partition(p.partition.index)
            .with_current_leader_epoch(p.leader_epoch)
            .with_fetch_offset(fetch_offset)
            .with_log_start_offset(log_start)
            .with_partition_max_bytes(partition_max_bytes);
        partitions.push((p.key.clone(), partition));
    }
    let fetch = session.next_fetch(partitions);
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(services.config.node_id))
        .with_max_wait_ms(cluster.replica_fetch_wait_max_ms)
        .with_min_bytes(1)
        .with_max_bytes(cluster.replica_fetch_response_max_bytes)
        .with_isolation_level(0)
        .with_session_id(fetch.session_id)
        .with_session_epoch(fetch.session_epoch)
        .with_topics(fetch.topics)
        .with_forgotten_topics_data(fetch.forgotten);
    let wait = Duration::from_millis(cluster.replica_fetch_wait_max_ms as u64 + 10_000);
    let response = tokio::time::timeout(wait, conn.send(&request, FETCH_VERSION))
        .await
        .map_err(|_| ConnectionLost::TimedOut("fetch"))??;
    let code = ErrorCode::from_code(response.error_code);
    session.answered(code, response.session_id);
    match code {
        ErrorCode::None => {}
        // The session is started over on the next round, on the same connection.
        ErrorCode::FetchSessionIdNotFound | ErrorCode::InvalidFetchSessionEpoch => {
            tracing::debug!(leader = fetcher.leader, ?code, "fetch session restarted");
            return Ok(());
        }
        other => return Err(ConnectionLost::FetchRefused(other)),
    }
    let mut answers: HashMap<(&str, i32), &PartitionData> = HashMap::new();
    for topic in &response.responses {
        for data in &topic.partitions {
            answers.insert((topic.topic.0.as_str(), data.partition_index), data);
        }
    }
    let mut writes = Vec::with_capacity(ready.len());
    for (i, p) in ready.iter().enumerate() {
        match answers.get(&(p.partition.topic.as_ref(), p.partition.index)) {
            Some(data) => writes.push((
                i,
                Fetched {
                    partition: p.partition.clone(),
                    leader_epoch: p.leader_epoch,
                    error: ErrorCode::from_code(data.error_code),
                    records: data.records.clone(),
                    log_start_offset: data.log_start_offset,
                    high_watermark: data.high_watermark,
                },
            )),
            // An incremental response leaves out partitions with nothing new.
            None if fetch.incremental => {
                settle(fetcher, p, Ok(()), false)?;
            }
            None => {
                let missing = Stop::Partition("missing from the fetch response".into());
                settle(fetcher, p, Err(missing), false)?;
            }
        }
    }
    let written = services
        .disk
        .run(move || {
            writes
                .into_iter()
                .map(|(i, fetched)| {
                    let result = follower_log::write(&fetched);
                    (i, fetched, result)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(ConnectionLost::Disk)?;
    let mut appended = 0usize;
    for (i, fetched, result) in written {
        let outcome = record_written(registry, &ready[i], &fetched, result, &mut appended);
        settle(fetcher, &ready[i], outcome, false)?;
    }
    tracing::Span::current().record("appended_bytes", appended);
    Ok(())
}

/// Records a partition step's outcome in the fetcher. `Ok(true)`: the partition goes on this
/// round; a connection failure ends the round.
fn settle(
    fetcher: &LeaderFetcher,
    p: &Planned,
    outcome: Result<(), Stop>,
    truncation: bool,
) -> Result<bool, ConnectionLost> {
    let mut partitions = fetcher.partitions.lock();
    let current = partitions
        .get_mut(&p.key)
        .filter(|f| f.leader_epoch == p.leader_epoch);
    match outcome {
        Ok(()) => {
            if let Some(f) = current {
                f.truncated |= truncation;
                f.failures = 0;
                f.delayed_until = None;
            }
            Ok(true)
        }
        Err(Stop::Superseded) => {
            if current.is_some() {
                partitions.remove(&p.key);
            }
            Ok(false)
        }
        Err(Stop::Partition(why)) => {
            if let Some(f) = current {
                f.failures += 1;
                if f.failures == 1 || f.failures.is_multiple_of(50) {
                    tracing::info!(
                        topic = %p.partition.topic,
                        partition = p.partition.index,
                        leader = fetcher.leader,
                        reason = %why,
                        "follower fetch of a partition failed; retrying"
                    );
                }
                f.delayed_until = Some(Instant::now() + PARTITION_BACKOFF * f.failures.min(5));
            }
            Ok(false)
        }
        Err(Stop::Connection(why)) => Err(why),
    }
}

fn partition_error(e: impl std::fmt::Display) -> Stop {
    Stop::Partition(e.to_string())
}

/// Truncates `p`'s log to `offset` on the disk threads (see `follower_log::truncate`).
async fn truncate_on_disk(
    services: &FollowerServices,
    p: &Arc<Partition>,
    offset: i64,
    leader_epoch: Option<i32>,
) -> Result<(), Stop> {
    let p = p.clone();
    match services
        .disk
        .run(move || follower_log::truncate(&p, offset, leader_epoch))
        .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(Refused::Superseded)) => Err(Stop::Superseded),
        Ok(Err(Refused::Partition(why))) => Err(Stop::Partition(why)),
        Ok(Err(Refused::Disk { error, .. })) => Err(partition_error(error)),
        Err(stopped) => Err(partition_error(stopped)),
    }
}

/// Truncates this log to where it stops agreeing with the leader's.
async fn truncate_to_leader(
    services: &FollowerServices,
    conn: &mut Connection,
    p: &Arc<Partition>,
    leader_epoch: i32,
) -> Result<(), Stop> {
    let (latest, leo) = {
        let log = p.log.read();
        (log.latest_epoch(), log.log_end_offset())
    };
    let Some(latest) = latest else {
        // No epoch recorded: an empty log has nothing to lose; otherwise keep only what was
        // known committed.
        if leo > 0 {
            let hw = p.high_watermark();
            truncate_on_disk(services, p, hw, None).await?;
        }
        return Ok(());
    };
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(services.config.node_id))
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(TopicName(StrBytes::from_string(p.topic.to_string())))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(p.index)
                .with_current_leader_epoch(leader_epoch)
                .with_leader_epoch(latest)])]);
    let response =
        tokio::time::timeout(Duration::from_secs(10), conn.send(&request, EPOCH_VERSION))
            .await
            .map_err(|_| Stop::Connection(ConnectionLost::TimedOut("OffsetsForLeaderEpoch")))?
            .map_err(|e| Stop::Connection(e.into()))?;
    let answer = response
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| partition_error("empty OffsetsForLeaderEpoch response"))?;
    let code = ErrorCode::from_code(answer.error_code);
    if code != ErrorCode::None {
        // Even NOT_LEADER_OR_FOLLOWER or a fenced epoch is retried: the new leader may simply
        // not have applied the metadata that made it leader yet; if this node's own metadata
        // moves on, the partition leaves the fetcher.
        return Err(Stop::Partition(format!("leader answered {code:?}")));
    }
    let (their_epoch, their_end) = (answer.leader_epoch, answer.end_offset);
    let target = if their_epoch < 0 || their_end < 0 {
        p.high_watermark().min(leo)
    } else if their_epoch == latest {
        their_end.min(leo)
    } else {
        // The leader never had our newest epoch: keep what we have of its newest one.
        let (_, ours) = p.log.read().end_offset_for_epoch(their_epoch);
        their_end.min(ours.max(0)).min(leo)
    };
    if target < leo {
        tracing::info!(
            topic = %p.topic,
            partition = p.index,
            from = leo,
            to = target,
            leader_epoch,
            "truncating a divergent log tail"
        );
        truncate_on_disk(services, p, target, Some(leader_epoch)).await?;
        p.set_follower_high_watermark(p.high_watermark());
    }
    Ok(())
}

/// Records what writing one partition's answer gave (metrics, throttle, log-dir health) and
/// takes the leader's high watermark after a successful write.
fn record_written(
    registry: &Registry,
    planned: &Planned,
    fetched: &Fetched,
    result: Result<Option<ReplicaAppend>, Refused>,
    appended: &mut usize,
) -> Result<(), Stop> {
    let p = &planned.partition;
    let services = &registry.services;
    match result {
        Ok(Some(a)) => {
            services.log_dir.record_success(a.bytes);
            tracing::debug!(
                topic = %p.topic,
                partition = p.index,
                bytes = a.bytes,
                batches = a.batches,
                "appended fetched records"
            );
            *appended += a.bytes;
            services.metrics.replication_bytes_in.inc_by(a.bytes as u64);
            if let Some(rate) = planned.throttle {
                registry.throttle.lock().consume(rate, a.bytes, now_ms());
            }
        }
        // An out-of-range answer moved the log; the next round fetches from its new end.
        Ok(None) if fetched.error != ErrorCode::None => return Ok(()),
        Ok(None) => {}
        Err(Refused::Superseded) => return Err(Stop::Superseded),
        Err(Refused::Partition(why)) => return Err(Stop::Partition(why)),
        Err(Refused::Disk { error, bytes }) => {
            let message = format!("append of fetched data failed: {error}");
            services.log_dir.record_failure(error, bytes);
            return Err(Stop::Partition(message));
        }
    }
    p.set_follower_high_watermark(fetched.high_watermark);
    Ok(())
}
