//! DescribeProducers: the producers a partition leader knows, with their epoch, last
//! sequence and open transaction (`kafka-transactions describe-producers` and `find-hanging`
//! use it to spot a transaction a partition holds open that no coordinator knows).
//!
//! Authorization as in Kafka: READ on the topic (TOPIC_AUTHORIZATION_FAILED per partition).

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

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
