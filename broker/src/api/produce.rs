//! Produce: validate each partition's batch (framing, magic, CRC, size), check idempotent
//! sequences, append with assigned offsets, and answer once the data is in the log.
//!
//! Checks run on the async worker (they touch no disk); the appends of one request then run
//! together on the disk threads (`tasks::DiskPool`), so a slow disk holds up this request only.
//!
//! Transactional batches (KIP-98) are appended like idempotent ones; the log tracks the
//! transactions they open until the coordinator's marker closes them (`log::txn_state`).
//! Markers (control batches) are written by the transaction coordinator only: a client's is
//! refused with INVALID_RECORD, as is a transactional batch without a producer id (Kafka
//! refuses both). A topic with `cleanup.policy=compact` refuses records without a key
//! (INVALID_RECORD), as Kafka does: compaction could never remove them.
//!
//! Authorization (as Kafka): a transactional request needs WRITE on its transactional id
//! (TRANSACTIONAL_ID_AUTHORIZATION_FAILED for every partition; also when transactional batches
//! come without a transactional id), each topic needs WRITE
//! (TOPIC_AUTHORIZATION_FAILED, checked before existence so unauthorized clients learn nothing).
//! Idempotent batches need nothing more (Kafka 2.8+ dropped the IDEMPOTENT_WRITE check here).
//! The bytes produced count against `producer_byte_rate`; the throttle goes into
//! `throttle_time_ms` and mutes the connection.

use std::sync::Arc;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::authz::Authz;
use super::services::ProduceServices;
use super::topic_name;
use crate::auth::acl::AclOperation;
use crate::auth::authorizer::Resource;
use crate::log::batch::{self, BatchError};
use crate::log::{AppendError, AppendOutcome};
use crate::partition::Partition;
use crate::protocol::context::{s, RequestContext};
use crate::protocol::errors::ErrorCode;
use crate::replication::isr::{check_after_append, check_before_append, AckDecision};
use crate::state::now_ms;

fn error(index: i32, code: ErrorCode, message: Option<String>) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(message.map(s))
}

pub async fn handle(
    services: ProduceServices<'_>,
    ctx: &RequestContext,
    req: ProduceRequest,
) -> ProduceResponse {
    let authz = Authz::new(services.authorizer, ctx);
    let acks = req.acks;
    let txn_id = req
        .transactional_id
        .as_ref()
        .map(|t| &*t.0)
        .filter(|t| !t.is_empty());
    // Kafka looks at each partition's first batch header to see whether the request is
    // transactional; one without a transactional id is refused as unauthorized.
    let has_txn_batches = req
        .topic_data
        .iter()
        .flat_map(|t| t.partition_data.iter())
        .filter_map(|p| p.records.as_ref())
        .any(|r| batch::BatchHeader::parse(r).is_ok_and(|h| h.is_transactional()));
    let txn_denied = match txn_id {
        Some(id) => !authz.allowed(AclOperation::Write, Resource::transactional_id(id)),
        None => has_txn_batches,
    };
    let produced_bytes: usize = req
        .topic_data
        .iter()
        .flat_map(|t| t.partition_data.iter())
        .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
        .sum();
    let mut responses = Vec::with_capacity(req.topic_data.len());
    // Checked here; appended together below, off the async workers.
    let mut appends: Vec<(usize, usize, Append)> = Vec::new();
    for topic in req.topic_data {
        let name = if topic.name.0.is_empty() {
            services
                .image
                .snapshot()
                .topic_by_id(&topic.topic_id)
                .map(|t| t.name.clone())
                .unwrap_or_default()
        } else {
            topic.name.0.to_string()
        };
        let denied = if txn_denied {
            Some(ErrorCode::TransactionalIdAuthorizationFailed)
        } else if !authz.topic(AclOperation::Write, &name) {
            Some(ErrorCode::TopicAuthorizationFailed)
        } else {
            None
        };
        let mut parts = Vec::with_capacity(topic.partition_data.len());
        for pd in topic.partition_data {
            parts.push(match denied {
                Some(code) => error(pd.index, code, None),
                None => match check_partition(services, &name, pd.index, pd.records, acks) {
                    Checked::Answered(r) => r,
                    Checked::Append(append) => {
                        appends.push((responses.len(), parts.len(), append));
                        // Replaced by the append's answer (stays only if it never ran).
                        error(pd.index, ErrorCode::KafkaStorageError, None)
                    }
                },
            });
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_name(&name))
                .with_topic_id(topic.topic_id)
                .with_partition_responses(parts),
        );
    }
    let mut waits: Vec<(usize, usize, CommitWait)> = Vec::new();
    if !appends.is_empty() {
        let (slots, appends): (Vec<_>, Vec<_>) =
            appends.into_iter().map(|(t, p, a)| ((t, p), a)).unzip();
        let appended = match services.disk.run(move || append_all(appends)).await {
            Ok(appended) => appended,
            Err(e) => {
                tracing::error!(error = %e, "produce: appends not run");
                Vec::new()
            }
        };
        for ((t, p), (append, result)) in slots.into_iter().zip(appended) {
            let index = responses[t].partition_responses[p].index;
            responses[t].partition_responses[p] =
                match answer(services, index, append, result, acks) {
                    Outcome::Done(r) => r,
                    Outcome::Wait(r, wait) => {
                        waits.push((t, p, wait));
                        r
                    }
                };
        }
    }
    if !waits.is_empty() {
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_millis(req.timeout_ms.clamp(0, 300_000) as u64);
        let codes =
            futures::future::join_all(waits.iter().map(|(_, _, w)| await_commit(w, deadline)))
                .await;
        for ((t, p, _), code) in waits.iter().zip(codes) {
            if code != ErrorCode::None {
                let index = responses[*t].partition_responses[*p].index;
                responses[*t].partition_responses[*p] = error(index, code, None);
            }
        }
    }
    let throttle = services.quotas.record(
        &services.image.snapshot(),
        crate::quota::QuotaType::Produce,
        &ctx.principal,
        &ctx.client_id,
        produced_bytes as f64,
    );
    crate::quota::throttle(throttle);
    ProduceResponse::default()
        .with_responses(responses)
        .with_throttle_time_ms(throttle as i32)
}

/// An `acks=all` append waiting for the high watermark to pass it.
struct CommitWait {
    partition: Arc<Partition>,
    end_offset: i64,
    leader_epoch: i32,
    min_insync: i32,
}

enum Outcome {
    Done(PartitionProduceResponse),
    /// Appended; the response stands once the records are committed.
    Wait(PartitionProduceResponse, CommitWait),
}

/// Waits until the records are committed (the high watermark passed them), the leadership
/// changed (NOT_LEADER_OR_FOLLOWER: the client retries at the new leader; an idempotent retry
/// is deduplicated there) or the request timeout passed (REQUEST_TIMED_OUT).
async fn await_commit(w: &CommitWait, deadline: tokio::time::Instant) -> ErrorCode {
    loop {
        let notified = w.partition.data_arrived.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if w.partition.leader_epoch() != w.leader_epoch || !w.partition.is_leader() {
            return ErrorCode::NotLeaderOrFollower;
        }
        let isr = w.partition.isr_size();
        match check_after_append(
            w.partition.high_watermark(),
            w.end_offset,
            isr,
            w.min_insync,
        ) {
            AckDecision::Complete => return ErrorCode::None,
            AckDecision::FailAfterAppend => return ErrorCode::NotEnoughReplicasAfterAppend,
            AckDecision::Wait | AckDecision::RejectBeforeAppend => {}
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep_until(deadline) => return ErrorCode::RequestTimedOut,
        }
    }
}

/// A partition's batch that passed every check, to be appended.
struct Append {
    partition: Arc<Partition>,
    records: bytes::Bytes,
    headers: Vec<batch::BatchHeader>,
    leader_epoch: i32,
    min_insync: i32,
}

/// What appending one batch gave: the outcome and the log start offset after it.
type Appended = (Append, Result<(AppendOutcome, i64), AppendError>);

/// What checking one partition's batch gave.
enum Checked {
    Append(Append),
    /// Refused: this is the partition's answer.
    Answered(PartitionProduceResponse),
}

/// Checks one partition's batch without touching the disk: acks, leadership, framing, CRCs,
/// batch kinds a client may not write and (for `acks=all`) the ISR size.
fn check_partition(
    services: ProduceServices<'_>,
    topic: &str,
    index: i32,
    records: Option<bytes::Bytes>,
    acks: i16,
) -> Checked {
    if !matches!(acks, -1..=1) {
        return Checked::Answered(error(index, ErrorCode::InvalidRequiredAcks, None));
    }
    let partition = match services.replicas.led_partition(topic, index) {
        Ok(p) if p.is_leader() => p,
        Ok(_) => return Checked::Answered(error(index, ErrorCode::NotLeaderOrFollower, None)),
        Err(code) => return Checked::Answered(error(index, code, None)),
    };
    let Some(records) = records else {
        return Checked::Answered(error(
            index,
            ErrorCode::CorruptMessage,
            Some("no records".into()),
        ));
    };
    let headers = match batch::validate_all(&records) {
        Ok(h) => h,
        Err(e) => {
            let code = match e {
                BatchError::UnsupportedMagic(_) => ErrorCode::UnsupportedForMessageFormat,
                _ => ErrorCode::CorruptMessage,
            };
            count_error(services, code);
            tracing::debug!(topic, partition = index, error = %e, "rejected produce batch");
            return Checked::Answered(error(index, code, Some(e.to_string())));
        }
    };
    let refused = if headers.iter().any(|h| h.is_control()) {
        Some("clients may not write control records")
    } else if headers
        .iter()
        .any(|h| h.is_transactional() && !h.has_producer_id())
    {
        Some("a transactional batch needs a producer id")
    } else {
        None
    };
    if let Some(message) = refused {
        count_error(services, ErrorCode::InvalidRecord);
        return Checked::Answered(error(index, ErrorCode::InvalidRecord, Some(message.into())));
    }
    let (min_insync, compact) = {
        let log = partition.log.read();
        (log.settings().min_insync_replicas, log.settings().compact)
    };
    if compact && !batch::every_record_has_a_key(&records) {
        count_error(services, ErrorCode::InvalidRecord);
        return Checked::Answered(error(
            index,
            ErrorCode::InvalidRecord,
            Some(format!(
                "Compacted topic cannot accept message without key in topic partition {topic}-{index}."
            )),
        ));
    }
    if acks == -1
        && check_before_append(partition.isr_size(), min_insync) == AckDecision::RejectBeforeAppend
    {
        return Checked::Answered(error(index, ErrorCode::NotEnoughReplicas, None));
    }
    let leader_epoch = partition.leader_epoch();
    Checked::Append(Append {
        partition,
        records,
        headers,
        leader_epoch,
        min_insync,
    })
}

/// Appends every checked batch (blocking: runs on the disk pool). Each log's lock is held for
/// its own append only.
///
/// Leadership is checked again under the log's lock: between `check_partition` and this
/// append the batch waits for a disk thread, and meanwhile the partition may have become a
/// follower whose fetcher has already truncated the log to the new leader's. An append then
/// would leave a batch of the old epoch in the follower's log that no later truncation
/// removes — and the producer's retry, stored by the new leader, would be in that log twice.
/// Every leader change bumps the leader epoch, so an unchanged epoch means still the leader
/// (the epoch is an atomic: taking the replica lock here would invert the lock order).
fn append_all(appends: Vec<Append>) -> Vec<Appended> {
    let now = now_ms();
    appends
        .into_iter()
        .map(|a| {
            let mut log = a.partition.log.write();
            if a.partition.leader_epoch() != a.leader_epoch {
                drop(log);
                return (
                    a,
                    Err(AppendError::Protocol(ErrorCode::NotLeaderOrFollower)),
                );
            }
            let result = log
                .append(&a.records, &a.headers, a.leader_epoch, now)
                .map(|o| (o, log.log_start_offset()));
            drop(log);
            (a, result)
        })
        .collect()
}

fn count_error(services: ProduceServices<'_>, code: ErrorCode) {
    services
        .metrics
        .request_errors
        .with_label_values(&["Produce", &format!("{code:?}")])
        .inc();
}

/// The answer for one appended batch: done, or (`acks=all`) waiting for the high watermark.
fn answer(
    services: ProduceServices<'_>,
    index: i32,
    append: Append,
    result: Result<(AppendOutcome, i64), AppendError>,
    acks: i16,
) -> Outcome {
    let partition = append.partition;
    match result {
        Ok((o, log_start)) => {
            if !o.duplicate {
                services.log_dir.record_success(o.bytes);
                partition.on_leader_append();
                let topic = partition.topic.as_ref();
                services.metrics.bytes_in.inc_by(topic, o.bytes as u64);
                services
                    .metrics
                    .messages_in
                    .inc_by(topic, o.record_count.max(0) as u64);
            }
            let response = PartitionProduceResponse::default()
                .with_index(index)
                .with_base_offset(o.base_offset)
                .with_log_append_time_ms(o.log_append_time)
                .with_log_start_offset(log_start);
            let end_offset = o.last_offset + 1;
            if acks == -1 && partition.high_watermark() < end_offset {
                return Outcome::Wait(
                    response,
                    CommitWait {
                        partition,
                        end_offset,
                        leader_epoch: append.leader_epoch,
                        min_insync: append.min_insync,
                    },
                );
            }
            Outcome::Done(response)
        }
        Err(AppendError::Protocol(code)) => {
            count_error(services, code);
            Outcome::Done(error(index, code, None))
        }
        Err(AppendError::Io(e)) => {
            // As Kafka: the client may retry (elsewhere, after a metadata refresh). Nothing of
            // the batch was kept (the log cut its partial write), so a retry cannot duplicate.
            let code = ErrorCode::KafkaStorageError;
            count_error(services, code);
            let message = format!(
                "cannot write to log dir {}: {e}",
                services.log_dir.dir().display()
            );
            // Logged there once per failure episode, not once per request.
            services.log_dir.record_failure(e, append.records.len());
            Outcome::Done(error(index, code, Some(message)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::test_support::make_batch;
    use crate::log::PartitionLog;
    use crate::metadata::PartitionMeta;
    use crate::topic_config::TopicSettings;

    fn append_of(partition: &Arc<Partition>, leader_epoch: i32) -> Append {
        let records = make_batch(3, Some((7, 0, 0)), 0);
        let headers = batch::validate_all(&records).unwrap();
        Append {
            partition: partition.clone(),
            records: bytes::Bytes::from(records),
            headers,
            leader_epoch,
            min_insync: 1,
        }
    }

    #[test]
    fn a_batch_checked_under_an_older_leader_epoch_is_not_appended() {
        let dir = tempfile::tempdir().unwrap();
        let settings = TopicSettings::resolve(&Default::default(), &Default::default());
        let log = PartitionLog::open(dir.path(), settings, 0).unwrap();
        let p = Arc::new(Partition::replicated("t".into(), 0, log));
        let leading = |leader, leader_epoch| PartitionMeta {
            replicas: vec![1, 2],
            isr: vec![1, 2],
            leader,
            leader_epoch,
            partition_epoch: leader_epoch,
            adding: vec![],
            removing: vec![],
        };
        p.apply_metadata(&leading(1, 4), 1, 0);
        let checked = append_of(&p, p.leader_epoch());
        // While the batch waited for a disk thread, broker 2 took over.
        p.apply_metadata(&leading(2, 5), 1, 0);
        let [(_, result)] = append_all(vec![checked]).try_into().ok().unwrap();
        assert!(matches!(
            result,
            Err(AppendError::Protocol(ErrorCode::NotLeaderOrFollower))
        ));
        assert_eq!(p.log.read().log_end_offset(), 0, "nothing reached the log");
        // Checked and appended under the same epoch, it is written.
        p.apply_metadata(&leading(1, 6), 1, 0);
        let [(_, result)] = append_all(vec![append_of(&p, 6)]).try_into().ok().unwrap();
        assert_eq!(result.unwrap().0.base_offset, 0);
        assert_eq!(p.log.read().log_end_offset(), 3);
    }
}
