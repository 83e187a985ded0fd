//! ListOffsets (earliest / latest / max-timestamp / by timestamp), DeleteRecords and
//! OffsetForLeaderEpoch: questions about a partition's offset range. LATEST is the high
//! watermark, or for a `read_committed` request the last stable offset (KIP-98).
//!
//! Authorization as in Kafka: ListOffsets and a consumer's OffsetForLeaderEpoch need DESCRIBE on
//! the topic, a follower's OffsetForLeaderEpoch CLUSTER_ACTION, DeleteRecords DELETE on the topic;
//! refusals are TOPIC_AUTHORIZATION_FAILED per partition.

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::*;

use std::sync::Arc;

use super::authz::Authz;
use super::services::ReplicaServices;
use crate::auth::acl::AclOperation;
use crate::partition::Partition;
use crate::protocol::context::RequestContext;
use crate::protocol::errors::ErrorCode;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const EARLIEST_PENDING_UPLOAD: i64 = -5;
const LATEST_TIERED: i64 = -6;
/// The request's `isolation_level` for transactional data.
const READ_COMMITTED: i8 = 1;

/// One partition's answer: ready now, or waiting for a lookup in the log's indexes (which
/// reads the disk, so it runs on the disk pool, never on an async worker).
enum Pending<T> {
    Ready(T),
    OnDisk(T, Arc<Partition>, i64),
}

pub async fn handle(
    services: ReplicaServices<'_>,
    ctx: &RequestContext,
    req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let authz = Authz::new(services.authorizer, ctx);
    let no_offset = |base: ListOffsetsPartitionResponse, code: ErrorCode| {
        base.with_error_code(code.code())
            .with_offset(-1)
            .with_timestamp(-1)
    };
    let mut topics: Vec<(TopicName, Vec<Pending<ListOffsetsPartitionResponse>>)> = Vec::new();
    // A read_committed consumer's LATEST is the last stable offset, as in Kafka.
    let read_committed = req.isolation_level == READ_COMMITTED;
    for t in req.topics {
        let name = t.name.0.to_string();
        let denied = !authz.topic(AclOperation::Describe, &name);
        let partitions = t
            .partitions
            .into_iter()
            .map(|p| {
                let base =
                    ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                if denied {
                    return Pending::Ready(no_offset(base, ErrorCode::TopicAuthorizationFailed));
                }
                let part = match services.replicas.led_partition(&name, p.partition_index) {
                    Ok(part) => part,
                    Err(code) => return Pending::Ready(no_offset(base, code)),
                };
                let base = base.with_leader_epoch(part.leader_epoch());
                let at = |offset: i64| {
                    Pending::Ready(base.clone().with_offset(offset).with_timestamp(-1))
                };
                match p.timestamp {
                    LATEST if read_committed => at(part.last_stable_offset()),
                    LATEST => at(part.high_watermark()),
                    EARLIEST | EARLIEST_LOCAL => at(part.log.read().log_start_offset()),
                    EARLIEST_PENDING_UPLOAD | LATEST_TIERED => at(-1),
                    ts => Pending::OnDisk(base, part, ts),
                }
            })
            .collect();
        topics.push((t.name, partitions));
    }
    let topics = resolve(services, topics, |base, part, ts| {
        let log = part.log.read();
        let found = if ts == MAX_TIMESTAMP {
            log.max_timestamp_offset()
        } else {
            log.offset_for_timestamp(ts)
        };
        match found {
            Ok(Some((offset, ts))) => base.with_offset(offset).with_timestamp(ts),
            Ok(None) => base.with_offset(-1).with_timestamp(-1).with_leader_epoch(-1),
            Err(e) => {
                tracing::error!(topic = %part.topic, partition = part.index, error = %e, "offset lookup failed");
                base.storage_error()
            }
        }
    })
    .await
    .into_iter()
    .map(|(name, partitions)| {
        ListOffsetsTopicResponse::default()
            .with_name(name)
            .with_partitions(partitions)
    })
    .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// Runs every partition's disk work in one job on the disk pool and puts the answers in
/// request order. If the pool has stopped (the broker is shutting down), the partitions
/// waiting for it answer KAFKA_STORAGE_ERROR.
async fn resolve<T, F>(
    services: ReplicaServices<'_>,
    topics: Vec<(TopicName, Vec<Pending<T>>)>,
    lookup: F,
) -> Vec<(TopicName, Vec<T>)>
where
    T: Send + 'static + Storage,
    F: Fn(T, &Partition, i64) -> T + Send + 'static,
{
    let mut work = Vec::new();
    let mut shaped = Vec::with_capacity(topics.len());
    for (name, partitions) in topics {
        let mut slots = Vec::with_capacity(partitions.len());
        for p in partitions {
            match p {
                Pending::Ready(answer) => slots.push(Some(answer)),
                Pending::OnDisk(base, part, arg) => {
                    work.push((shaped.len(), slots.len(), base, part, arg));
                    slots.push(None);
                }
            }
        }
        shaped.push((name, slots));
    }
    if !work.is_empty() {
        let places: Vec<(usize, usize)> = work.iter().map(|w| (w.0, w.1)).collect();
        let fallback: Vec<T> = work.iter().map(|w| w.2.storage_error()).collect();
        let answers = services
            .disk
            .run(move || {
                work.into_iter()
                    .map(|(_, _, base, part, arg)| lookup(base, &part, arg))
                    .collect::<Vec<T>>()
            })
            .await
            .unwrap_or(fallback);
        for ((t, p), answer) in places.into_iter().zip(answers) {
            shaped[t].1[p] = Some(answer);
        }
    }
    shaped
        .into_iter()
        .map(|(name, slots)| (name, slots.into_iter().flatten().collect()))
        .collect()
}

/// How a partition answers when its disk work could not run.
trait Storage {
    fn storage_error(&self) -> Self;
}

impl Storage for ListOffsetsPartitionResponse {
    fn storage_error(&self) -> Self {
        self.clone()
            .with_error_code(ErrorCode::KafkaStorageError.code())
            .with_offset(-1)
            .with_timestamp(-1)
    }
}

impl Storage for DeleteRecordsPartitionResult {
    fn storage_error(&self) -> Self {
        self.clone()
            .with_error_code(ErrorCode::KafkaStorageError.code())
    }
}

pub async fn delete_records(
    services: ReplicaServices<'_>,
    ctx: &RequestContext,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let authz = Authz::new(services.authorizer, ctx);
    let mut topics: Vec<(TopicName, Vec<Pending<DeleteRecordsPartitionResult>>)> = Vec::new();
    for t in req.topics {
        let name = t.name.0.to_string();
        let denied = !authz.topic(AclOperation::Delete, &name);
        let partitions = t
            .partitions
            .into_iter()
            .map(|p| {
                let base = DeleteRecordsPartitionResult::default()
                    .with_partition_index(p.partition_index)
                    .with_low_watermark(-1);
                if denied {
                    return Pending::Ready(
                        base.with_error_code(ErrorCode::TopicAuthorizationFailed.code()),
                    );
                }
                let part = match services.replicas.led_partition(&name, p.partition_index) {
                    Ok(part) => part,
                    Err(code) => return Pending::Ready(base.with_error_code(code.code())),
                };
                let hw = part.high_watermark();
                let target = if p.offset == -1 { hw } else { p.offset };
                if target < 0 || target > hw {
                    return Pending::Ready(
                        base.with_error_code(ErrorCode::OffsetOutOfRange.code()),
                    );
                }
                Pending::OnDisk(base, part, target)
            })
            .collect();
        topics.push((t.name, partitions));
    }
    let topics = resolve(services, topics, |base, part, target| {
        let mut log = part.log.write();
        match log.advance_log_start(target) {
            Ok(()) => base.with_low_watermark(log.log_start_offset()),
            Err(e) => {
                tracing::error!(topic = %part.topic, partition = part.index, error = %e, "delete records failed");
                base.storage_error()
            }
        }
    })
    .await
    .into_iter()
    .map(|(name, partitions)| {
        DeleteRecordsTopicResult::default()
            .with_name(name)
            .with_partitions(partitions)
    })
    .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}

pub async fn offset_for_leader_epoch(
    services: ReplicaServices<'_>,
    ctx: &RequestContext,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let authz = Authz::new(services.authorizer, ctx);
    let follower = req.replica_id.0 >= 0;
    let follower_denied = follower && !authz.cluster(AclOperation::ClusterAction);
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.topic.0.to_string();
            let denied =
                follower_denied || (!follower && !authz.topic(AclOperation::Describe, &name));
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let base = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    if denied {
                        return base.with_error_code(ErrorCode::TopicAuthorizationFailed.code());
                    }
                    let part = match services.replicas.led_partition(&name, p.partition) {
                        Ok(part) => part,
                        Err(code) => return base.with_error_code(code.code()),
                    };
                    if p.current_leader_epoch >= 0 && p.current_leader_epoch != part.leader_epoch()
                    {
                        let code = if p.current_leader_epoch > part.leader_epoch() {
                            ErrorCode::UnknownLeaderEpoch
                        } else {
                            ErrorCode::FencedLeaderEpoch
                        };
                        return base.with_error_code(code.code());
                    }
                    // The end of the largest epoch <= the asked one, from the epoch cache. A
                    // log that recorded no epochs yet (empty, or written before the cache
                    // existed) answers its current epoch with its end offset.
                    let log = part.log.read();
                    let (epoch, end) = match log.latest_epoch() {
                        Some(_) => log.end_offset_for_epoch(p.leader_epoch),
                        None if p.leader_epoch >= 0 => {
                            (part.leader_epoch().max(0), log.log_end_offset())
                        }
                        None => (-1, -1),
                    };
                    base.with_leader_epoch(epoch).with_end_offset(end)
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::acl_authorizer::AclAuthorizer;
    use crate::auth::authorizer::Authorizer;
    use crate::metadata::{MetadataCache, MetadataImage};
    use crate::protocol::context::s;
    use crate::replica_manager::{self, ReplicaManager};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use std::sync::Arc;

    fn request(partitions: &[i32], timestamp: i64) -> ListOffsetsRequest {
        let parts = partitions
            .iter()
            .map(|p| {
                ListOffsetsPartition::default()
                    .with_partition_index(*p)
                    .with_timestamp(timestamp)
            })
            .collect();
        ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(parts)])
    }

    fn ctx() -> RequestContext {
        RequestContext {
            client_id: "test".into(),
            client_host: "/127.0.0.1".into(),
            api_version: 7,
            principal: "User:alice".into(),
            listener: "PLAINTEXT".into(),
            sends_files: true,
        }
    }

    fn answer(
        replicas: &ReplicaManager,
        authorizer: &AclAuthorizer,
        req: ListOffsetsRequest,
    ) -> Vec<(i32, i16, i64)> {
        let disk = crate::tasks::DiskPool::new(1).unwrap();
        let services = ReplicaServices {
            replicas,
            authorizer,
            disk: &disk,
        };
        let resp = futures::executor::block_on(handle(services, &ctx(), req));
        resp.topics[0]
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.error_code, p.offset))
            .collect()
    }

    /// The handler runs on its services alone: no broker, no network.
    #[test]
    fn answers_from_the_replicas_led_here_and_refuses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        // Partition 0 led here, 1 led by broker 2; partition 2 does not exist.
        let replicas = replica_manager::with_topic(dir.path(), 1, &[1, 2], 2);
        let image = Arc::new(MetadataCache::new(MetadataImage::default()));
        let open = AclAuthorizer::new(None, image.clone());
        assert_eq!(
            answer(&replicas, &open, request(&[0, 1, 2], LATEST)),
            vec![
                (0, 0, 0),
                (1, ErrorCode::NotLeaderOrFollower.code(), -1),
                (2, ErrorCode::UnknownTopicOrPartition.code(), -1),
            ]
        );
        // A lookup by timestamp runs on the disk pool; the answers keep the request's order.
        assert_eq!(
            answer(&replicas, &open, request(&[1, 0, 2], 1_700_000_000_000)),
            vec![
                (1, ErrorCode::NotLeaderOrFollower.code(), -1),
                (0, 0, -1),
                (2, ErrorCode::UnknownTopicOrPartition.code(), -1),
            ]
        );
        // An authorizer with no ACL for alice: DESCRIBE on the topic is refused.
        let rules = Authorizer {
            super_users: vec![],
            allow_if_no_acl: false,
        };
        let closed = AclAuthorizer::new(Some(rules), image);
        assert_eq!(
            answer(&replicas, &closed, request(&[0], EARLIEST)),
            vec![(0, ErrorCode::TopicAuthorizationFailed.code(), -1)]
        );
    }

    #[test]
    fn a_read_committed_latest_is_the_last_stable_offset() {
        use crate::log::batch::{self, test_support};
        let dir = tempfile::tempdir().unwrap();
        let replicas = replica_manager::with_topic(dir.path(), 1, &[1], 1);
        let open = AclAuthorizer::new(None, Arc::new(MetadataCache::new(MetadataImage::default())));
        let p = replicas.led_partition("t", 0).unwrap();
        for b in [
            test_support::make_batch(2, None, 0),
            test_support::make_transactional_batch(1, (5, 0, 0), 0),
            test_support::make_batch(1, None, 0),
        ] {
            let hs = batch::validate_all(&b).unwrap();
            p.log.write().append(&b, &hs, 0, 0).unwrap();
        }
        p.advance_high_watermark(4);
        let committed = |ts| request(&[0], ts).with_isolation_level(1);
        assert_eq!(
            answer(&replicas, &open, request(&[0], LATEST)),
            vec![(0, 0, 4)]
        );
        assert_eq!(answer(&replicas, &open, committed(LATEST)), vec![(0, 0, 2)]);
        assert_eq!(
            answer(&replicas, &open, committed(EARLIEST)),
            vec![(0, 0, 0)]
        );
        p.log
            .write()
            .append_txn_marker(5, 0, true, 0, 0, 0)
            .unwrap();
        p.advance_high_watermark(5);
        assert_eq!(answer(&replicas, &open, committed(LATEST)), vec![(0, 0, 5)]);
    }
}
