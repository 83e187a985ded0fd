//! The partition side of transactions as admins reach it. DescribeProducers: the producers a
//! partition leader knows, with their epoch, last sequence and open transaction
//! (`kafka-transactions describe-producers` and `find-hanging` use it to spot a transaction a
//! partition holds open that no coordinator knows). WriteTxnMarkers: writes a marker into
//! partitions this broker leads (`kafka-transactions abort` ends such a hanging transaction
//! with it; fjord's own coordinator does not need it, see `txn::markers`).
//!
//! Authorization as in Kafka: DescribeProducers needs READ on the topic
//! (TOPIC_AUTHORIZATION_FAILED per partition), WriteTxnMarkers CLUSTER_ACTION
//! (CLUSTER_AUTHORIZATION_FAILED).

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, ProducerId, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};

use super::authz::Authz;
use super::services::ReplicaServices;
use crate::auth::acl::AclOperation;
use crate::protocol::context::RequestContext;
use crate::protocol::errors::ErrorCode;

pub async fn describe(
    services: ReplicaServices<'_>,
    ctx: &RequestContext,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let authz = Authz::new(services.authorizer, ctx);
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let allowed = authz.topic(AclOperation::Read, &t.name.0);
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&index| {
                    let base = PartitionResponse::default().with_partition_index(index);
                    if !allowed {
                        return base.with_error_code(ErrorCode::TopicAuthorizationFailed.code());
                    }
                    let partition = match services.replicas.led_partition(&t.name.0, index) {
                        Ok(p) if p.is_leader() => p,
                        Ok(_) => {
                            return base.with_error_code(ErrorCode::NotLeaderOrFollower.code())
                        }
                        Err(code) => return base.with_error_code(code.code()),
                    };
                    let producers = partition
                        .log
                        .read()
                        .active_producers()
                        .into_iter()
                        .map(|(id, epoch, last_sequence, txn_start)| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(id))
                                .with_producer_epoch(i32::from(epoch))
                                .with_last_sequence(last_sequence)
                                .with_last_timestamp(-1)
                                .with_coordinator_epoch(-1)
                                .with_current_txn_start_offset(txn_start)
                        })
                        .collect();
                    base.with_active_producers(producers)
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}

/// How long a requested marker may take to be replicated before the answer is
/// REQUEST_TIMED_OUT.
const MARKER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn write_markers(
    services: ReplicaServices<'_>,
    ctx: &RequestContext,
    req: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let allowed = Authz::new(services.authorizer, ctx).cluster(AclOperation::ClusterAction);
    let mut markers = Vec::with_capacity(req.markers.len());
    for m in &req.markers {
        let mut topics = Vec::with_capacity(m.topics.len());
        for t in &m.topics {
            let mut partitions = Vec::with_capacity(t.partition_indexes.len());
            for &index in &t.partition_indexes {
                let code = if !allowed {
                    ErrorCode::ClusterAuthorizationFailed
                } else {
                    match services.replicas.led_partition(&t.name.0, index) {
                        Ok(p) if p.is_leader() => crate::txn::markers::write_requested(
                            p,
                            m.producer_id.0,
                            m.producer_epoch,
                            m.transaction_result,
                            MARKER_TIMEOUT,
                        )
                        .await
                        .err()
                        .unwrap_or(ErrorCode::None),
                        Ok(_) => ErrorCode::NotLeaderOrFollower,
                        Err(code) => code,
                    }
                };
                partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(index)
                        .with_error_code(code.code()),
                );
            }
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions),
            );
        }
        markers.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(markers)
}
