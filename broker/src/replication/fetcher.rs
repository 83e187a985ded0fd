//! The follower side of replication: one task per followed partition that fetches from the
//! leader with the Kafka Fetch API (replica id set, so the leader counts the fetch position
//! towards its ISR and high watermark) and appends the leader's batches as they are.
//!
//! On every new leader epoch the task first asks the leader where this log's newest epoch ends
//! (OffsetsForLeaderEpoch) and truncates anything past it: records the old leader appended but
//! never committed, which the new leader does not have. A task exits when the partition's role
//! or leader epoch changes; the metadata hook starts a new one for the new epoch. Each round
//! (connect, epoch check, fetch, append) runs in a debug `replication_fetch` span, which also
//! carries a debug event for each append of fetched records.

use std::sync::Arc;
use std::time::Duration;

use fjord_client::Connection;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tracing::Instrument;

use crate::log::AppendError;
use crate::partition::{Partition, Role};
use crate::protocol::errors::ErrorCode;
use crate::state::{now_ms, Broker};

const FETCH_VERSION: i16 = 12;
const EPOCH_VERSION: i16 = 4;

/// Why one fetch round stopped.
enum Stop {
    /// The partition's role or epoch changed: this task is done.
    Superseded,
    /// Retry after a pause (leader unreachable, not ready yet, ...).
    Retry(String),
}

/// Follows `partition` at `leader` for `leader_epoch` until superseded.
pub async fn run(broker: Arc<Broker>, partition: Arc<Partition>, leader: i32, leader_epoch: i32) {
    let mut conn: Option<Connection> = None;
    let mut truncated = false;
    let mut failures = 0u32;
    loop {
        if !still_following(&partition, leader, leader_epoch) || broker.is_stopping() {
            return;
        }
        if super::faults::fetchers_paused() {
            conn = None;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let throttle = throttled_rate(&broker, &partition);
        if let Some(wait) = throttle.and_then(|rate| throttle_wait(&broker, rate)) {
            tokio::time::sleep(Duration::from_millis(wait.min(1_000))).await;
            continue;
        }
        let round = async {
            if conn.is_none() {
                conn = Some(connect(&broker, leader).await?);
            }
            let c = conn.as_mut().expect("connected above");
            if !truncated {
                truncate_to_leader(&broker, c, &partition, leader_epoch).await?;
                truncated = true;
            }
            fetch_once(&broker, c, &partition, leader, leader_epoch, throttle).await
        };
        // One debug span per fetch round; `fetch_once` records the offset it asks for.
        let span = tracing::debug_span!(
            "replication_fetch",
            leader,
            leader_epoch,
            topic = %partition.topic,
            partition = partition.index,
            fetch_offset = tracing::field::Empty,
        );
        match round.instrument(span).await {
            Ok(()) => failures = 0,
            Err(Stop::Superseded) => return,
            Err(Stop::Retry(why)) => {
                conn = None;
                failures += 1;
                if failures == 1 || failures.is_multiple_of(50) {
                    tracing::info!(
                        topic = %partition.topic,
                        partition = partition.index,
                        leader,
                        reason = %why,
                        "follower fetch failed; retrying"
                    );
                }
                tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(5)))).await;
            }
        }
    }
}

/// The follower replication rate limiting this partition's fetches now, if it is throttled
/// (see `super::throttle`).
fn throttled_rate(broker: &Broker, p: &Partition) -> Option<u64> {
    super::throttle::follower_rate(
        &broker.metadata.read(),
        broker.config.node_id,
        &p.topic,
        p.index,
    )
}

/// How long the next throttled fetch must wait (`None`: fetch now).
fn throttle_wait(broker: &Broker, rate: u64) -> Option<u64> {
    let wait = broker
        .cluster
        .throttles
        .follower
        .lock()
        .wait_ms(rate, now_ms());
    (wait > 0).then_some(wait)
}

fn still_following(p: &Partition, leader: i32, leader_epoch: i32) -> bool {
    let st = p.replica.lock();
    st.leader_epoch == leader_epoch && st.role == Role::Follower { leader }
}

async fn connect(broker: &Broker, leader: i32) -> Result<Connection, Stop> {
    let listener = &broker.config.cluster.inter_broker_listener;
    let (host, port) = crate::cluster::registration::endpoint_of(broker, leader, listener)
        .ok_or_else(|| Stop::Retry(format!("broker {leader} has no {listener} endpoint")))?;
    let security = crate::cluster::inter_broker::client_security(&broker.config);
    let connect = Connection::connect_with((host.as_str(), port), &security);
    match tokio::time::timeout(Duration::from_secs(3), connect).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(Stop::Retry(format!("connect {host}:{port}: {e}"))),
        Err(_) => Err(Stop::Retry(format!("connect {host}:{port}: timed out"))),
    }
}

fn retry(e: impl std::fmt::Display) -> Stop {
    Stop::Retry(e.to_string())
}

/// Truncates this log to where it stops agreeing with the leader's.
async fn truncate_to_leader(
    broker: &Broker,
    conn: &mut Connection,
    p: &Partition,
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
            let mut log = p.log.write();
            log.truncate_to(hw, now_ms()).map_err(retry)?;
        }
        return Ok(());
    };
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(broker.config.node_id))
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(TopicName(StrBytes::from_string(p.topic.to_string())))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(p.index)
                .with_current_leader_epoch(leader_epoch)
                .with_leader_epoch(latest)])]);
    let response =
        tokio::time::timeout(Duration::from_secs(10), conn.send(&request, EPOCH_VERSION))
            .await
            .map_err(|_| retry("OffsetsForLeaderEpoch timed out"))?
            .map_err(retry)?;
    let answer = response
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| retry("empty OffsetsForLeaderEpoch response"))?;
    let code = ErrorCode::from_code(answer.error_code);
    if code != ErrorCode::None {
        return Err(epoch_error(code));
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
        let mut log = p.log.write();
        if p.leader_epoch() != leader_epoch {
            return Err(Stop::Superseded);
        }
        tracing::info!(
            topic = %p.topic,
            partition = p.index,
            from = leo,
            to = target,
            leader_epoch,
            "truncating a divergent log tail"
        );
        log.truncate_to(target, now_ms()).map_err(retry)?;
        drop(log);
        p.set_follower_high_watermark(p.high_watermark());
    }
    Ok(())
}

/// The leader refused the epoch question. Even NOT_LEADER_OR_FOLLOWER or a fenced epoch is
/// retried: the new leader may simply not have applied the metadata that made it leader yet;
/// if this node's own metadata moves on, the loop's role check ends the task.
fn epoch_error(code: ErrorCode) -> Stop {
    Stop::Retry(format!("leader answered {code:?}"))
}

/// One fetch from the leader and the append of what it returned.
async fn fetch_once(
    broker: &Broker,
    conn: &mut Connection,
    p: &Partition,
    leader: i32,
    leader_epoch: i32,
    throttle: Option<u64>,
) -> Result<(), Stop> {
    let cluster = &broker.config.cluster;
    // A throttled fetch asks for about one second's worth (at least one batch comes back).
    let partition_max_bytes = match throttle {
        Some(rate) => cluster
            .replica_fetch_max_bytes
            .min(i32::try_from(rate.max(1)).unwrap_or(i32::MAX)),
        None => cluster.replica_fetch_max_bytes,
    };
    let (fetch_offset, log_start) = {
        let log = p.log.read();
        (log.log_end_offset(), log.log_start_offset())
    };
    tracing::Span::current().record("fetch_offset", fetch_offset);
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(broker.config.node_id))
        .with_max_wait_ms(cluster.replica_fetch_wait_max_ms)
        .with_min_bytes(1)
        .with_max_bytes(cluster.replica_fetch_max_bytes.saturating_mul(4))
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(p.topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(p.index)
                .with_current_leader_epoch(leader_epoch)
                .with_fetch_offset(fetch_offset)
                .with_log_start_offset(log_start)
                .with_partition_max_bytes(partition_max_bytes)])]);
    let wait = Duration::from_millis(cluster.replica_fetch_wait_max_ms as u64 + 10_000);
    let response = tokio::time::timeout(wait, conn.send(&request, FETCH_VERSION))
        .await
        .map_err(|_| retry("fetch timed out"))?
        .map_err(retry)?;
    let code = ErrorCode::from_code(response.error_code);
    if code != ErrorCode::None {
        return Err(retry(format!("fetch answered {code:?}")));
    }
    let Some(data) = response
        .responses
        .first()
        .and_then(|t| t.partitions.first())
    else {
        return Err(retry("empty fetch response"));
    };
    match ErrorCode::from_code(data.error_code) {
        ErrorCode::None => {}
        ErrorCode::OffsetOutOfRange => return out_of_range(p, data, leader_epoch),
        ErrorCode::FencedLeaderEpoch | ErrorCode::NotLeaderOrFollower => {
            // Metadata on this node is behind or ahead; wait for it to settle.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return if still_following(p, leader, leader_epoch) {
                Ok(())
            } else {
                Err(Stop::Superseded)
            };
        }
        other => return Err(retry(format!("partition fetch answered {other:?}"))),
    }
    if let Some(records) = data.records.as_ref().filter(|r| !r.is_empty()) {
        let mut log = p.log.write();
        if p.leader_epoch() != leader_epoch {
            return Err(Stop::Superseded);
        }
        match log.append_replica(records, now_ms()) {
            Ok(a) => {
                broker.log_dir_health.record_success(a.bytes);
                // In the fetch span (leader, partition, fetch offset): what the round brought.
                tracing::debug!(
                    bytes = a.bytes,
                    batches = a.batches,
                    "appended fetched records"
                );
                broker.metrics.replication_bytes_in.inc_by(a.bytes as u64);
                if let Some(rate) = throttle {
                    broker
                        .cluster
                        .throttles
                        .follower
                        .lock()
                        .consume(rate, a.bytes, now_ms());
                }
            }
            Err(AppendError::Io(e)) => {
                drop(log);
                let message = format!("append of fetched data failed: {e}");
                broker.log_dir_health.record_failure(e, records.len());
                return Err(retry(message));
            }
            Err(e) => {
                drop(log);
                return Err(retry(format!("append of fetched data failed: {e}")));
            }
        }
    }
    p.set_follower_high_watermark(data.high_watermark);
    Ok(())
}

/// The leader does not have our fetch offset: behind its log start we restart the log there;
/// ahead of its end we truncate again through the epoch protocol.
fn out_of_range(
    p: &Partition,
    data: &kafka_protocol::messages::fetch_response::PartitionData,
    leader_epoch: i32,
) -> Result<(), Stop> {
    let mut log = p.log.write();
    if p.leader_epoch() != leader_epoch {
        return Err(Stop::Superseded);
    }
    let leo = log.log_end_offset();
    if data.log_start_offset >= 0 && leo < data.log_start_offset {
        log.truncate_fully_and_start_at(data.log_start_offset, now_ms())
            .map_err(retry)?;
        return Ok(());
    }
    if data.high_watermark >= 0 && leo > data.high_watermark {
        // Ahead of what the leader committed and not matched by its epochs: drop to its HW.
        log.truncate_to(data.high_watermark, now_ms())
            .map_err(retry)?;
        return Ok(());
    }
    Err(retry("fetch offset out of range"))
}
