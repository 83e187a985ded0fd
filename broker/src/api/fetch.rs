//! Fetch: find whole batches in the segments (no decoding, only batch headers are read),
//! long-poll until `min_bytes` are available or `max_wait_ms` passes, and respect
//! `partition_max_bytes` and `max_bytes`. Large reads stay in the log file and reach the socket
//! through `sendfile` (see `file_region`); small ones are read into memory. On TLS connections
//! every region is read into memory (the bytes must be encrypted). Every read (batch headers
//! and record bytes) runs on the disk threads (`tasks::DiskPool`), not on the async workers.
//! Fetch sessions (KIP-227): `fetch_session` turns an incremental request into the session's
//! full partition list before reading, and trims the response to partitions with news after.
//!
//! Isolation (KIP-98, per request, not part of a session): `read_uncommitted` consumers read up
//! to the high watermark; `read_committed` ones up to the last stable offset (the first offset
//! of the oldest open transaction, at most the high watermark), with the aborted transactions
//! the returned batches overlap so the client drops their records. Every answer reports the
//! last stable offset. A `read_committed` fetch waiting for data wakes on the same
//! notification as the others: markers are appends, which notify.
//!
//! Authorization: consumers need READ on each topic (TOPIC_AUTHORIZATION_FAILED per partition),
//! followers (a replica id >= 0) CLUSTER_ACTION on the cluster. Bytes returned count against
//! `consumer_byte_rate`; a fetch that puts the client over its quota is answered empty with
//! `throttle_time_ms` set and not counted, as Kafka does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse};

use super::authz::Authz;
use super::services::FetchServices;
use super::topic_name;
use crate::auth::acl::AclOperation;
use crate::cluster::isr::IsrChange;
use crate::fetch_session::Plan;
use crate::file_region::{FileRegion, Placeholders};
use crate::partition::Partition;
use crate::protocol::chunked::{Payload, WithPayloads};
use crate::protocol::context::RequestContext;
use crate::protocol::errors::ErrorCode;
use crate::quota::QuotaType;
use crate::tasks::DiskPool;

struct Wanted {
    topic_index: usize,
    partition: i32,
    fetch_offset: i64,
    max_bytes: usize,
    current_leader_epoch: i32,
    resolved: Option<Arc<Partition>>,
    missing_error: ErrorCode,
}

/// Regions at least this long are sent from the file; shorter ones cost less to read than a
/// `sendfile` call of their own.
const SEND_FROM_FILE_MIN: usize = 16 * 1024;

pub async fn handle(
    services: FetchServices<'_>,
    ctx: &RequestContext,
    req: FetchRequest,
) -> WithPayloads<FetchResponse> {
    let authz = Authz::new(services.authorizer, ctx);
    let replica = if ctx.api_version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    let follower_denied = replica >= 0 && !authz.cluster(AclOperation::ClusterAction);
    let use_ids = ctx.api_version >= 13;
    let plan = match services.sessions.open(&req, use_ids, Instant::now()) {
        Ok(plan) => plan,
        Err(code) => {
            return WithPayloads::plain(
                FetchResponse::default()
                    .with_error_code(code.code())
                    .with_session_id(0),
            )
        }
    };
    let requested = match &plan {
        Plan::Incremental { topics, .. } => topics.as_slice(),
        Plan::Sessionless | Plan::New => req.topics.as_slice(),
    };
    let mut topics_out: Vec<(String, uuid::Uuid)> = Vec::new();
    let mut wanted = Vec::new();
    for t in requested {
        let (name, id) = if use_ids {
            let img = services.image.snapshot();
            (
                img.topic_by_id(&t.topic_id).map(|m| m.name.clone()),
                t.topic_id,
            )
        } else {
            let name = t.topic.0.to_string();
            let id = services
                .image
                .snapshot()
                .topics
                .get(&name)
                .map(|m| m.id)
                .unwrap_or_default();
            (Some(name), id)
        };
        topics_out.push((name.clone().unwrap_or_default(), id));
        let denied = name.is_some()
            && (follower_denied
                || (replica < 0
                    && !authz.topic(AclOperation::Read, name.as_deref().unwrap_or(""))));
        for p in &t.partitions {
            wanted.push(Wanted {
                topic_index: topics_out.len() - 1,
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
                current_leader_epoch: p.current_leader_epoch,
                resolved: name
                    .as_ref()
                    .filter(|_| !denied)
                    .and_then(|n| services.replicas.led_partition(n, p.partition).ok()),
                missing_error: if denied {
                    ErrorCode::TopicAuthorizationFailed
                } else if use_ids && name.is_none() {
                    ErrorCode::UnknownTopicId
                } else {
                    name.as_ref()
                        .and_then(|n| services.replicas.led_partition(n, p.partition).err())
                        .unwrap_or(ErrorCode::UnknownTopicOrPartition)
                },
            });
        }
    }
    let wanted: Arc<[Wanted]> = wanted.into();
    if replica >= 0 && !follower_denied {
        note_follower_positions(services, replica, &wanted);
    }
    let max_bytes = if req.max_bytes <= 0 {
        usize::MAX
    } else {
        req.max_bytes as usize
    };
    let min_bytes = req.min_bytes.max(0) as usize;
    let read_committed = replica < 0 && req.isolation_level == READ_COMMITTED;
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.clamp(0, 300_000) as u64);

    let results = loop {
        // Register for wake-ups before reading, so data appended in between is not missed.
        let mut notified: Vec<_> = wanted
            .iter()
            .filter_map(|w| w.resolved.as_ref())
            .map(|p| Box::pin(p.data_arrived.notified()))
            .collect();
        for n in &mut notified {
            n.as_mut().enable();
        }
        let reader = if replica >= 0 {
            Reader::Follower
        } else if read_committed {
            Reader::ReadCommitted
        } else {
            Reader::ReadUncommitted
        };
        let reading = wanted.clone();
        let (results, total, had_error) = match services
            .disk
            .run(move || read_all(&reading, max_bytes, reader))
            .await
        {
            Ok(read) => read,
            Err(e) => {
                tracing::error!(error = %e, "fetch: log reads not run");
                storage_errors(&wanted)
            }
        };
        let now = Instant::now();
        if total >= min_bytes.max(1) || had_error || now >= deadline || notified.is_empty() {
            break results;
        }
        let sleep = tokio::time::sleep_until(deadline.into());
        tokio::select! {
            _ = futures::future::select_all(notified) => {}
            () = sleep => {}
        }
    };

    let total_out: usize = results
        .iter()
        .map(|r| r.1.as_ref().map_or(0, |f| f.len))
        .sum();
    let throttle = if replica < 0 {
        let img = services.image.snapshot();
        let (p, c) = (&ctx.principal, &ctx.client_id);
        let th = services
            .quotas
            .record(&img, QuotaType::Fetch, p, c, total_out as f64);
        if th > 0 {
            services
                .quotas
                .unrecord(&img, QuotaType::Fetch, p, c, total_out as f64);
        }
        th
    } else {
        0
    };
    if throttle > 0 {
        crate::quota::throttle(throttle);
        // An incremental session stays open (its epoch already moved on); a new one is not
        // opened for an answer without data.
        let session_id = match plan {
            Plan::Incremental { id, .. } => id,
            Plan::Sessionless | Plan::New => 0,
        };
        return WithPayloads::plain(
            FetchResponse::default()
                .with_session_id(session_id)
                .with_throttle_time_ms(throttle as i32),
        );
    }
    if replica >= 0 {
        services
            .metrics
            .replication_bytes_out
            .inc_by(total_out as u64);
    } else {
        let mut per_topic = vec![0u64; topics_out.len()];
        for (w, r) in wanted.iter().zip(&results) {
            per_topic[w.topic_index] += r.1.as_ref().map_or(0, |f| f.len) as u64;
        }
        for ((name, _), bytes) in topics_out.iter().zip(per_topic) {
            if bytes > 0 {
                services.metrics.bytes_out.inc_by(name, bytes);
            }
        }
    }
    let mut by_topic: Vec<Vec<PartitionData>> = vec![Vec::new(); topics_out.len()];
    let mut payloads = Vec::new();
    for (w, (data, found)) in wanted
        .iter()
        .zip(carry(services.disk, results, ctx.sends_files).await)
    {
        let data = match found {
            None => data,
            Some(Ok(payload)) => {
                let data = data.with_records(Some(payload.bytes.clone()));
                payloads.push(payload);
                data
            }
            Some(Err(e)) => {
                tracing::error!(partition = w.partition, error = %e, "reading a fetched region failed");
                data.with_error_code(ErrorCode::KafkaStorageError.code())
            }
        };
        by_topic[w.topic_index].push(data);
    }
    let mut responses: Vec<FetchableTopicResponse> = topics_out
        .into_iter()
        .zip(by_topic)
        .map(|((name, id), parts)| {
            FetchableTopicResponse::default()
                .with_topic(topic_name(&name))
                .with_topic_id(id)
                .with_partitions(parts)
        })
        .collect();
    let sessions = &services.sessions;
    let session_id = match plan {
        Plan::Sessionless => 0,
        Plan::New => sessions.close_full(&req, use_ids, replica >= 0, &responses, Instant::now()),
        Plan::Incremental { id, .. } => {
            sessions.close_incremental(id, use_ids, &mut responses);
            id
        }
    };
    WithPayloads {
        response: FetchResponse::default()
            .with_session_id(session_id)
            .with_responses(responses),
        payloads,
    }
}

/// What carries each fetched region through the response: on a connection that sends files,
/// a placeholder for the file itself when it is large and this response still has placeholder
/// space; otherwise its bytes, read on the disk threads (all of one response's in one go).
async fn carry(
    disk: &DiskPool,
    results: Vec<Found>,
    sends_files: bool,
) -> Vec<(PartitionData, Option<std::io::Result<Payload>>)> {
    let mut placeholders = Placeholders::default();
    let mut out = Vec::with_capacity(results.len());
    let mut to_read = Vec::new();
    for (i, (data, found)) in results.into_iter().enumerate() {
        let carried = found.map(|region| {
            let stand_in = (sends_files && region.len >= SEND_FROM_FILE_MIN)
                .then(|| placeholders.stand_in(&region))
                .flatten();
            match stand_in {
                Some(bytes) => Ok(Payload {
                    bytes,
                    file: Some(region),
                }),
                None => {
                    to_read.push((i, region));
                    Err(std::io::Error::other("not read yet"))
                }
            }
        });
        out.push((data, carried));
    }
    if to_read.is_empty() {
        return out;
    }
    let read = disk
        .run(move || {
            to_read
                .into_iter()
                .map(|(i, region)| (i, region.read().map(Payload::memory)))
                .collect::<Vec<_>>()
        })
        .await;
    match read {
        Ok(read) => {
            for (i, payload) in read {
                out[i].1 = Some(payload);
            }
        }
        Err(e) => {
            for (_, carried) in &mut out {
                if matches!(carried, Some(Err(_))) {
                    *carried = Some(Err(std::io::Error::other(e.to_string())));
                }
            }
        }
    }
    out
}

/// Every wanted partition answering KAFKA_STORAGE_ERROR (its log could not be read at all).
fn storage_errors(wanted: &[Wanted]) -> (Vec<Found>, usize, bool) {
    let out = wanted
        .iter()
        .map(|w| {
            let data = PartitionData::default()
                .with_partition_index(w.partition)
                .with_error_code(ErrorCode::KafkaStorageError.code())
                .with_high_watermark(-1)
                .with_log_start_offset(-1);
            (data, None)
        })
        .collect();
    (out, 0, true)
}

/// A follower's fetch offset is its log end: the leader records it (moving the high watermark)
/// and asks the controller to re-admit a follower that caught up.
fn note_follower_positions(services: FetchServices<'_>, replica: i32, wanted: &[Wanted]) {
    let now = crate::state::now_ms();
    for w in wanted {
        let Some(p) = &w.resolved else { continue };
        if w.current_leader_epoch >= 0 && w.current_leader_epoch != p.leader_epoch() {
            continue;
        }
        if let Some((proposal, epoch)) = p.on_follower_fetch(replica, w.fetch_offset, now) {
            services.isr_changes.submit(IsrChange {
                partition: p.clone(),
                proposal,
                partition_epoch: epoch,
            });
        }
    }
}

/// A partition's answer without its records, and where those records lie.
type Found = (PartitionData, Option<FileRegion>);

/// The request's `isolation_level` for transactional data.
const READ_COMMITTED: i8 = 1;

/// Who reads, which decides how far: the log end, the high watermark, or the last stable
/// offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    Follower,
    ReadUncommitted,
    ReadCommitted,
}

/// Finds what every wanted partition returns (only batch headers are read). Returns the
/// partition results, the bytes found, and whether any partition has an error (which makes the
/// fetch answer immediately, like Kafka). Consumers read up to the high watermark (the last
/// stable offset for `read_committed`), followers up to the log end.
fn read_all(wanted: &[Wanted], max_bytes: usize, reader: Reader) -> (Vec<Found>, usize, bool) {
    let mut total = 0usize;
    let mut had_error = false;
    let mut out = Vec::with_capacity(wanted.len());
    for w in wanted {
        let base = PartitionData::default()
            .with_partition_index(w.partition)
            .with_aborted_transactions(Some(vec![]));
        let Some(p) = &w.resolved else {
            had_error = true;
            out.push((
                base.with_error_code(w.missing_error.code())
                    .with_high_watermark(-1)
                    .with_log_start_offset(-1),
                None,
            ));
            continue;
        };
        if w.current_leader_epoch >= 0 && w.current_leader_epoch != p.leader_epoch() {
            had_error = true;
            let code = if w.current_leader_epoch > p.leader_epoch() {
                ErrorCode::UnknownLeaderEpoch
            } else {
                ErrorCode::FencedLeaderEpoch
            };
            out.push((
                base.with_error_code(code.code())
                    .with_high_watermark(-1)
                    .with_log_start_offset(-1),
                None,
            ));
            continue;
        }
        let hw = p.high_watermark();
        let log = p.log.read();
        let start = log.log_start_offset();
        let leo = log.log_end_offset();
        let lso = log.last_stable_offset(hw);
        let base = base
            .with_high_watermark(hw)
            .with_last_stable_offset(lso)
            .with_log_start_offset(start);
        if w.fetch_offset < start || w.fetch_offset > leo {
            had_error = true;
            out.push((
                base.with_error_code(ErrorCode::OffsetOutOfRange.code()),
                None,
            ));
            continue;
        }
        let remaining = max_bytes.saturating_sub(total);
        let limit = w.max_bytes.min(remaining);
        // The first partition with data may exceed the limits by one batch, so consumers always
        // make progress (KIP-74).
        let visible_end = match reader {
            Reader::Follower => leo,
            Reader::ReadUncommitted => hw,
            Reader::ReadCommitted => lso,
        };
        match log.locate_span(w.fetch_offset, limit, visible_end, total == 0) {
            Ok(found) => {
                let base = match (&found, reader) {
                    (Some((_, upper)), Reader::ReadCommitted) => {
                        let aborted = log
                            .aborted_txns(w.fetch_offset, *upper)
                            .into_iter()
                            .map(|(producer_id, first_offset)| {
                                AbortedTransaction::default()
                                    .with_producer_id(producer_id.into())
                                    .with_first_offset(first_offset)
                            })
                            .collect();
                        base.with_aborted_transactions(Some(aborted))
                    }
                    _ => base,
                };
                let found = found.map(|(region, _)| region);
                total += found.as_ref().map_or(0, |r| r.len);
                // An empty answer carries an empty record set, as before (never null).
                out.push((base.with_records(Some(bytes::Bytes::new())), found));
            }
            Err(e) => {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "read failed");
                had_error = true;
                out.push((
                    base.with_error_code(ErrorCode::KafkaStorageError.code()),
                    None,
                ));
            }
        }
    }
    (out, total, had_error)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::records::RecordBatchDecoder;

    use super::*;
    use crate::log::batch::test_support::{make_batch, make_transactional_batch};
    use crate::log::{batch, PartitionLog};
    use crate::topic_config::TopicSettings;

    fn wanted(p: &Arc<Partition>, fetch_offset: i64) -> Wanted {
        Wanted {
            topic_index: 0,
            partition: 0,
            fetch_offset,
            max_bytes: 1 << 20,
            current_leader_epoch: -1,
            resolved: Some(p.clone()),
            missing_error: ErrorCode::UnknownTopicOrPartition,
        }
    }

    fn append(p: &Partition, b: &[u8]) {
        let hs = batch::validate_all(b).unwrap();
        p.log.write().append(b, &hs, 0, 0).unwrap();
        p.on_leader_append();
    }

    /// (last stable offset, aborted transactions, offsets of the records returned).
    fn fetch(p: &Arc<Partition>, offset: i64, reader: Reader) -> (i64, Vec<(i64, i64)>, Vec<i64>) {
        let (mut out, _, had_error) = read_all(&[wanted(p, offset)], usize::MAX, reader);
        assert!(!had_error);
        let (data, region) = out.remove(0);
        let aborted = data
            .aborted_transactions
            .unwrap_or_default()
            .iter()
            .map(|a| (a.producer_id.0, a.first_offset))
            .collect();
        let mut bytes = region.map_or(Bytes::new(), |r| r.read().unwrap());
        let offsets = RecordBatchDecoder::decode_all(&mut bytes)
            .unwrap()
            .into_iter()
            .flat_map(|set| set.records.into_iter().map(|r| r.offset))
            .collect();
        (data.last_stable_offset, aborted, offsets)
    }

    #[test]
    fn read_committed_stops_at_the_last_stable_offset_and_lists_the_aborts_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let settings = TopicSettings::resolve(&Default::default(), &Default::default());
        let log = PartitionLog::open(dir.path(), settings, 0).unwrap();
        let p = Arc::new(Partition::new("t".into(), 0, log, 0));
        append(&p, &make_transactional_batch(2, (1, 0, 0), 0)); // 0..=1
        let abort = p
            .log
            .write()
            .append_txn_marker(1, 0, false, 0, 0, 0)
            .unwrap();
        assert_eq!(abort.base_offset, 2);
        p.on_leader_append();
        append(&p, &make_transactional_batch(1, (2, 0, 0), 0)); // 3, open
        append(&p, &make_batch(1, None, 0)); // 4
        assert_eq!((p.high_watermark(), p.last_stable_offset()), (5, 3));

        assert_eq!(
            fetch(&p, 0, Reader::ReadCommitted),
            (3, vec![(1, 0)], vec![0, 1, 2])
        );
        assert_eq!(fetch(&p, 3, Reader::ReadCommitted), (3, vec![], vec![]));
        // read_uncommitted sees everything below the high watermark, with no aborted list,
        // and is told the last stable offset too.
        assert_eq!(
            fetch(&p, 0, Reader::ReadUncommitted),
            (3, vec![], vec![0, 1, 2, 3, 4])
        );

        // The commit makes the rest stable.
        p.log
            .write()
            .append_txn_marker(2, 0, true, 0, 0, 0)
            .unwrap();
        p.on_leader_append();
        assert_eq!(p.last_stable_offset(), 6);
        assert_eq!(
            fetch(&p, 3, Reader::ReadCommitted),
            (6, vec![], vec![3, 4, 5])
        );
        assert_eq!(
            fetch(&p, 1, Reader::ReadCommitted),
            (6, vec![(1, 0)], vec![0, 1, 2, 3, 4, 5]),
            "a fetch from inside the aborted transaction still gets it"
        );
    }
}
