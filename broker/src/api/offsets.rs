//! OffsetCommit, OffsetFetch and OffsetDelete: committed consumer positions.
//!
//! Authorization as in Kafka: committing and fetching need READ on the group
//! (GROUP_AUTHORIZATION_FAILED); a commit also needs READ on each topic, a fetch DESCRIBE
//! (TOPIC_AUTHORIZATION_FAILED; topics the principal may not describe are left out when all
//! committed offsets are fetched). OffsetDelete needs DELETE on the group and READ on the topics.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;

use super::authz::Authz;
use super::services::GroupServices;
use super::topic_name;
use crate::auth::acl::AclOperation;
use crate::protocol::context::{s, RequestContext};
use crate::protocol::errors::ErrorCode;

/// Kafka's default `offset.metadata.max.bytes`.
const MAX_METADATA_BYTES: usize = 4096;

pub async fn commit(
    services: GroupServices<'_>,
    ctx: &RequestContext,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let authz = Authz::new(services.authorizer, ctx);
    let group_denied = !authz.group(AclOperation::Read, &req.group_id.0);
    let elsewhere = !group_denied && !services.coordinates(&req.group_id.0);
    let mut items = Vec::new();
    let mut per_partition: Vec<(usize, i32, ErrorCode)> = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let name = t.name.0.to_string();
        let topic_denied = !group_denied && !authz.topic(AclOperation::Read, &name);
        for p in &t.partitions {
            let code = if group_denied {
                ErrorCode::GroupAuthorizationFailed
            } else if elsewhere {
                ErrorCode::NotCoordinator
            } else if topic_denied {
                ErrorCode::TopicAuthorizationFailed
            } else if !services
                .image
                .snapshot()
                .has_partition(&name, p.partition_index)
            {
                ErrorCode::UnknownTopicOrPartition
            } else if p
                .committed_metadata
                .as_ref()
                .is_some_and(|m| m.len() > MAX_METADATA_BYTES)
            {
                ErrorCode::OffsetMetadataTooLarge
            } else {
                items.push((
                    name.clone(),
                    p.partition_index,
                    p.committed_offset,
                    p.committed_leader_epoch,
                    p.committed_metadata.as_ref().map(|m| m.to_string()),
                ));
                ErrorCode::None
            };
            per_partition.push((ti, p.partition_index, code));
        }
    }
    let group_code = if items.is_empty() {
        ErrorCode::None
    } else {
        services
            .groups
            .commit_offsets(
                &req.group_id.0,
                &req.member_id,
                req.generation_id_or_member_epoch,
                items,
            )
            .await
    };
    let topics = req
        .topics
        .iter()
        .enumerate()
        .map(|(ti, t)| {
            let partitions = per_partition
                .iter()
                .filter(|(i, _, _)| *i == ti)
                .map(|(_, p, code)| {
                    let code = if *code == ErrorCode::None {
                        group_code
                    } else {
                        *code
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(*p)
                        .with_error_code(code.code())
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_topic_id(t.topic_id)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// One partition's committed position: (partition, offset, leader epoch, metadata, error).
type CommittedRow = (i32, i64, i32, String, i16);

/// (topic, partitions) pairs to report for one group: as requested, or everything committed
/// that the principal may describe. With `require_stable` (KIP-447, v7+), a partition whose
/// offset an unfinished transaction is committing answers UNSTABLE_OFFSET_COMMIT (the client
/// retries) instead of the offset the transaction is about to replace.
fn fetch_one(
    services: GroupServices<'_>,
    authz: &Authz<'_>,
    group: &str,
    requested: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Vec<(String, Vec<CommittedRow>)> {
    let committed = services.groups.committed(group);
    let unstable: std::collections::BTreeSet<(String, i32)> = if require_stable {
        services
            .image
            .snapshot()
            .transactions
            .values()
            .filter_map(|m| m.pending_offsets.get(group))
            .flatten()
            .map(|o| (o.topic.clone(), o.partition))
            .collect()
    } else {
        Default::default()
    };
    let listing = requested.is_none();
    let wanted: Vec<(String, Vec<i32>)> = match requested {
        Some(r) => r,
        None => {
            let mut map: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
            for (t, p) in committed.keys() {
                map.entry(t.clone()).or_default().push(*p);
            }
            map.into_iter().collect()
        }
    };
    wanted
        .into_iter()
        .filter_map(|(t, parts)| {
            let allowed = authz.topic(AclOperation::Describe, &t);
            if listing && !allowed {
                return None;
            }
            let rows = parts
                .into_iter()
                .map(|p| match committed.get(&(t.clone(), p)) {
                    _ if !allowed => (
                        p,
                        -1,
                        -1,
                        String::new(),
                        ErrorCode::TopicAuthorizationFailed.code(),
                    ),
                    _ if unstable.contains(&(t.clone(), p)) => (
                        p,
                        -1,
                        -1,
                        String::new(),
                        ErrorCode::UnstableOffsetCommit.code(),
                    ),
                    Some(c) => (
                        p,
                        c.offset,
                        c.leader_epoch,
                        c.metadata.clone().unwrap_or_default(),
                        0,
                    ),
                    None => (p, -1, -1, String::new(), 0),
                })
                .collect();
            Some((t, rows))
        })
        .collect()
}

pub async fn fetch(
    services: GroupServices<'_>,
    ctx: &RequestContext,
    req: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let authz = Authz::new(services.authorizer, ctx);
    let group_error = ErrorCode::GroupAuthorizationFailed.code();
    if ctx.api_version >= 8 {
        let groups = req
            .groups
            .iter()
            .map(|g| {
                if !authz.group(AclOperation::Read, &g.group_id.0) {
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_error_code(group_error);
                }
                if !services.coordinates(&g.group_id.0) {
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_error_code(ErrorCode::NotCoordinator.code());
                }
                let requested = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let topics = fetch_one(
                    services,
                    &authz,
                    &g.group_id.0,
                    requested,
                    req.require_stable,
                )
                .into_iter()
                .map(|(t, rows)| {
                    OffsetFetchResponseTopics::default()
                        .with_name(topic_name(&t))
                        .with_partitions(
                            rows.into_iter()
                                .map(|(p, o, e, m, code)| {
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(o)
                                        .with_committed_leader_epoch(e)
                                        .with_metadata(Some(s(m)))
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let requested: Option<Vec<(String, Vec<i32>)>> = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let refused = if !authz.group(AclOperation::Read, &req.group_id.0) {
        Some(group_error)
    } else if !services.coordinates(&req.group_id.0) {
        Some(ErrorCode::NotCoordinator.code())
    } else {
        None
    };
    if let Some(group_error) = refused {
        // v2+ carry a top-level error; v0-1 only per-partition errors.
        let topics = requested
            .unwrap_or_default()
            .into_iter()
            .map(|(t, parts)| {
                OffsetFetchResponseTopic::default()
                    .with_name(topic_name(&t))
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|p| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(-1)
                                    .with_error_code(group_error)
                            })
                            .collect(),
                    )
            })
            .collect();
        return OffsetFetchResponse::default()
            .with_error_code(group_error)
            .with_topics(topics);
    }
    let topics = fetch_one(
        services,
        &authz,
        &req.group_id.0,
        requested,
        ctx.api_version >= 7 && req.require_stable,
    )
    .into_iter()
    .map(|(t, rows)| {
        OffsetFetchResponseTopic::default()
            .with_name(topic_name(&t))
            .with_partitions(
                rows.into_iter()
                    .map(|(p, o, e, m, code)| {
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(o)
                            .with_committed_leader_epoch(e)
                            .with_metadata(Some(s(m)))
                            .with_error_code(code)
                    })
                    .collect(),
            )
    })
    .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

pub async fn delete(
    services: GroupServices<'_>,
    ctx: &RequestContext,
    req: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let authz = Authz::new(services.authorizer, ctx);
    if !authz.group(AclOperation::Delete, &req.group_id.0) {
        return OffsetDeleteResponse::default()
            .with_error_code(ErrorCode::GroupAuthorizationFailed.code());
    }
    let denied: Vec<String> = req
        .topics
        .iter()
        .map(|t| t.name.0.to_string())
        .filter(|t| !authz.topic(AclOperation::Read, t))
        .collect();
    let wanted: Vec<(String, i32)> = req
        .topics
        .iter()
        .filter(|t| !denied.iter().any(|d| d.as_str() == t.name.0.as_str()))
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    match services
        .groups
        .delete_offsets(&req.group_id.0, wanted)
        .await
    {
        Err(code) => OffsetDeleteResponse::default().with_error_code(code.code()),
        Ok(results) => {
            let topics = req
                .topics
                .iter()
                .map(|t| {
                    let partitions = if denied.iter().any(|d| d.as_str() == t.name.0.as_str()) {
                        t.partitions
                            .iter()
                            .map(|p| {
                                OffsetDeleteResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(ErrorCode::TopicAuthorizationFailed.code())
                            })
                            .collect()
                    } else {
                        results
                            .iter()
                            .filter(|(name, _, _)| name.as_str() == t.name.0.as_str())
                            .map(|(_, p, code)| {
                                OffsetDeleteResponsePartition::default()
                                    .with_partition_index(*p)
                                    .with_error_code(code.code())
                            })
                            .collect()
                    };
                    OffsetDeleteResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(partitions)
                })
                .collect();
            OffsetDeleteResponse::default().with_topics(topics)
        }
    }
}
