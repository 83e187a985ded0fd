//! AlterPartitionReassignments (45) and ListPartitionReassignments (46), KIP-455: what
//! `kafka-reassign-partitions` and `kafka-topics --describe` use. The state machine is in
//! `cluster::reassignment`; any broker answers (the records go through the quorum).
//!
//! Authorization as in Kafka: ALTER on the cluster to alter, DESCRIBE on the cluster to list;
//! otherwise CLUSTER_AUTHORIZATION_FAILED for the whole request.
//!
//! Per partition errors: UNKNOWN_TOPIC_OR_PARTITION, INVALID_REPLICA_ASSIGNMENT (empty list,
//! unknown broker, a broker twice, a cancellation needing an unclean election),
//! NO_REASSIGNMENT_IN_PROGRESS (cancelling nothing) and, from v1 with
//! `allowReplicationFactorChange=false`, INVALID_REPLICATION_FACTOR for a target of another size.

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};

use super::authz::Authz;
use super::services::ControllerServices;
use super::topic_name;
use crate::auth::acl::AclOperation;
use crate::cluster::reassignment::{self, is_reassigning};
use crate::metadata::PartitionMeta;
use crate::protocol::context::{s, RequestContext};
use crate::protocol::errors::ErrorCode;
use crate::topic_config::TopicError;

fn ids(v: &[i32]) -> Vec<BrokerId> {
    v.iter().copied().map(BrokerId).collect()
}

/// With `allowReplicationFactorChange=false`, a target must keep the replication factor
/// (the size of the target of a reassignment in progress, else of the replica list).
fn replication_factor_kept(
    services: ControllerServices<'_>,
    topic: &str,
    index: i32,
    target: &[i32],
) -> Result<(), TopicError> {
    let current = services.image.snapshot().topics.get(topic).and_then(|t| {
        let p = t.partitions.get(usize::try_from(index).ok()?)?;
        Some(reassignment::target(p).len())
    });
    match current {
        Some(rf) if rf != target.len() => Err(TopicError::new(
            ErrorCode::InvalidReplicationFactor,
            format!(
                "The replication factor is changed from {rf} to {} but allowReplicationFactorChange is false",
                target.len()
            ),
        )),
        _ => Ok(()),
    }
}

pub async fn alter(
    services: ControllerServices<'_>,
    ctx: &RequestContext,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let allowed = Authz::new(services.authorizer, ctx).cluster(AclOperation::Alter);
    let allow_rf_change = ctx.api_version < 1 || req.allow_replication_factor_change;
    let mut responses = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let target: Option<Vec<i32>> = p.replicas.map(|r| r.into_iter().map(|b| b.0).collect());
            let outcome = if !allowed {
                Err(TopicError::new(
                    ErrorCode::ClusterAuthorizationFailed,
                    "Cluster authorization failed.",
                ))
            } else {
                match &target {
                    Some(target) if !allow_rf_change => {
                        replication_factor_kept(services, &name, p.partition_index, target)
                    }
                    _ => Ok(()),
                }
            };
            let outcome = match outcome {
                Ok(()) => {
                    reassignment::alter(
                        services.image,
                        services.cluster,
                        &name,
                        p.partition_index,
                        target.as_deref(),
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            let base = ReassignablePartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_error_message(None);
            partitions.push(match outcome {
                Ok(()) => base,
                Err(e) => {
                    tracing::info!(topic = %name, partition = p.partition_index, code = ?e.code, message = %e.message, "partition reassignment refused");
                    base.with_error_code(e.code.code())
                        .with_error_message(Some(s(e.message)))
                }
            });
        }
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    let response = AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(allow_rf_change)
        .with_error_message(None)
        .with_responses(responses);
    if allowed {
        response
    } else {
        response
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code())
            .with_error_message(Some(s("Cluster authorization failed.")))
    }
}

fn ongoing(index: usize, p: &PartitionMeta) -> Option<OngoingPartitionReassignment> {
    is_reassigning(p).then(|| {
        OngoingPartitionReassignment::default()
            .with_partition_index(index as i32)
            .with_replicas(ids(&p.replicas))
            .with_adding_replicas(ids(&p.adding))
            .with_removing_replicas(ids(&p.removing))
    })
}

pub async fn list(
    services: ControllerServices<'_>,
    ctx: &RequestContext,
    req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    if !Authz::new(services.authorizer, ctx).cluster(AclOperation::Describe) {
        return ListPartitionReassignmentsResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code())
            .with_error_message(Some(s("Cluster authorization failed.")));
    }
    let img = services.image.snapshot();
    let mut topics = Vec::new();
    let mut add = |name: &str, partitions: Vec<OngoingPartitionReassignment>| {
        if !partitions.is_empty() {
            topics.push(
                OngoingTopicReassignment::default()
                    .with_name(topic_name(name))
                    .with_partitions(partitions),
            );
        }
    };
    match req.topics {
        // Every reassigning partition.
        None => {
            for (name, t) in &img.topics {
                let parts = t
                    .partitions
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| ongoing(i, p))
                    .collect();
                add(name, parts);
            }
        }
        // The listed partitions that are reassigning; unknown topics and partitions are left
        // out, as in Kafka.
        Some(wanted) => {
            for w in wanted {
                let name = w.name.0.to_string();
                let Some(t) = img.topics.get(&name) else {
                    continue;
                };
                let parts = w
                    .partition_indexes
                    .iter()
                    .filter_map(|i| {
                        let i = usize::try_from(*i).ok()?;
                        ongoing(i, t.partitions.get(i)?)
                    })
                    .collect();
                add(&name, parts);
            }
        }
    }
    ListPartitionReassignmentsResponse::default()
        .with_error_message(None)
        .with_topics(topics)
}
