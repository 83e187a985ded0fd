//! Metadata, DescribeTopicPartitions and DescribeCluster: what the cluster looks like to clients.
//! Metadata also auto-creates requested topics when `auto.create.topics.enable` allows it.
//!
//! Authorization never reveals a topic the principal may not DESCRIBE: listing all topics leaves
//! them out, and naming one answers TOPIC_AUTHORIZATION_FAILED whether or not it exists.
//! Auto-creation additionally needs CREATE on the cluster or the topic. Authorized-operation bit
//! sets are computed from the ACLs when requested.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;

use super::topic_name;
use crate::metadata::TopicMeta;
use crate::protocol::context::{s, RequestContext};
use crate::protocol::errors::ErrorCode;
use crate::topic_config::validate_topic_name;

use super::authz::{Authz, OPS_NOT_REQUESTED as OPERATIONS_NOT_REQUESTED};
use super::services::MetadataServices;
use crate::auth::acl::AclOperation;

fn brokers(services: MetadataServices<'_>, listener: &str) -> Vec<MetadataResponseBroker> {
    services
        .topics
        .image
        .snapshot()
        .live_endpoints(listener)
        .into_iter()
        .map(|(id, host, port, rack)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(s(host))
                .with_port(port as i32)
                .with_rack(rack.map(s))
        })
        .collect()
}

/// The controller: the quorum leader (-1 while unknown).
fn controller_id(services: MetadataServices<'_>) -> BrokerId {
    BrokerId(services.controller().unwrap_or(-1))
}

fn describe_topic(t: &TopicMeta, ops: Option<&Authz<'_>>) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&t.name)))
        .with_topic_id(t.id)
        .with_is_internal(crate::topic_config::is_internal(&t.name))
        .with_topic_authorized_operations(
            ops.map_or(OPERATIONS_NOT_REQUESTED, |a| a.topic_operations(&t.name)),
        )
        .with_partitions(
            t.partitions
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    MetadataResponsePartition::default()
                        .with_partition_index(i as i32)
                        .with_leader_id(BrokerId(p.leader))
                        .with_leader_epoch(p.leader_epoch)
                        .with_replica_nodes(p.replicas.iter().map(|r| BrokerId(*r)).collect())
                        .with_isr_nodes(p.isr.iter().map(|r| BrokerId(*r)).collect())
                })
                .collect(),
        )
}

fn topic_error(name: Option<&str>, id: uuid::Uuid, code: ErrorCode) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(code.code())
        .with_name(name.map(topic_name))
        .with_topic_id(id)
        .with_topic_authorized_operations(OPERATIONS_NOT_REQUESTED)
}

pub async fn handle(
    services: MetadataServices<'_>,
    ctx: &RequestContext,
    req: MetadataRequest,
) -> MetadataResponse {
    let authz = Authz::new(services.authorizer, ctx);
    let ops = req.include_topic_authorized_operations.then_some(&authz);
    let describable = |name: &str| authz.topic(AclOperation::Describe, name);
    // v0: an empty list means all topics; v1+: null means all.
    let requested: Option<Vec<_>> = match req.topics {
        Some(t) if t.is_empty() && ctx.api_version == 0 => None,
        other => other,
    };
    let allow_create = (ctx.api_version < 4 || req.allow_auto_topic_creation)
        && services.topics.config.auto_create_topics_enable;
    let topics = match requested {
        None => {
            let image = services.topics.image.snapshot();
            image
                .topics
                .values()
                .filter(|t| describable(&t.name))
                .map(|t| describe_topic(t, ops))
                .collect()
        }
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for item in list {
                let Some(name) = item.name.as_ref().map(|n| n.0.to_string()) else {
                    let found = services
                        .topics
                        .image
                        .snapshot()
                        .topic_by_id(&item.topic_id)
                        .cloned();
                    out.push(match found {
                        Some(t) if describable(&t.name) => describe_topic(&t, ops),
                        // Topic ids are not secret (Kafka answers the same way).
                        Some(_) => {
                            topic_error(None, item.topic_id, ErrorCode::TopicAuthorizationFailed)
                        }
                        None => topic_error(None, item.topic_id, ErrorCode::UnknownTopicId),
                    });
                    continue;
                };
                if !describable(&name) {
                    out.push(topic_error(
                        Some(&name),
                        uuid::Uuid::nil(),
                        ErrorCode::TopicAuthorizationFailed,
                    ));
                    continue;
                }
                let existing = services.topics.image.snapshot().topics.get(&name).cloned();
                if let Some(t) = existing {
                    out.push(describe_topic(&t, ops));
                    continue;
                }
                if validate_topic_name(&name).is_err() {
                    out.push(topic_error(
                        Some(&name),
                        uuid::Uuid::nil(),
                        ErrorCode::InvalidTopicException,
                    ));
                    continue;
                }
                if !allow_create {
                    out.push(topic_error(
                        Some(&name),
                        uuid::Uuid::nil(),
                        ErrorCode::UnknownTopicOrPartition,
                    ));
                    continue;
                }
                if !authz.cluster(AclOperation::Create) && !authz.topic(AclOperation::Create, &name)
                {
                    out.push(topic_error(
                        Some(&name),
                        uuid::Uuid::nil(),
                        ErrorCode::TopicAuthorizationFailed,
                    ));
                    continue;
                }
                // An internal topic is created as its coordinator would create it.
                let created = if crate::topic_config::is_internal(&name) {
                    services.topics.ensure_internal_topic(&name).await
                } else {
                    services
                        .topics
                        .create_topic(&name, -1, -1, Default::default(), false)
                        .await
                        .map(|_| ())
                };
                match created {
                    Ok(())
                    | Err(crate::state::TopicError {
                        code: ErrorCode::TopicAlreadyExists,
                        ..
                    }) => {
                        let created = services.topics.image.snapshot().topics.get(&name).cloned();
                        out.push(match created {
                            Some(t) => describe_topic(&t, ops),
                            None => topic_error(
                                Some(&name),
                                uuid::Uuid::nil(),
                                ErrorCode::LeaderNotAvailable,
                            ),
                        });
                    }
                    Err(e) => out.push(topic_error(Some(&name), uuid::Uuid::nil(), e.code)),
                }
            }
            out
        }
    };
    MetadataResponse::default()
        .with_brokers(brokers(services, &ctx.listener))
        .with_cluster_id(Some(s(services.cluster_id)))
        .with_controller_id(controller_id(services))
        .with_topics(topics)
        .with_cluster_authorized_operations(cluster_operations(
            &authz,
            req.include_cluster_authorized_operations,
        ))
}

/// Kafka: the cluster's operations when requested and the principal may DESCRIBE it, else 0.
fn cluster_operations(authz: &Authz<'_>, requested: bool) -> i32 {
    if !requested {
        OPERATIONS_NOT_REQUESTED
    } else if authz.cluster(AclOperation::Describe) {
        authz.cluster_operations()
    } else {
        0
    }
}

/// DescribeCluster needs no permission in Kafka (the broker list is what Metadata returns to
/// anyone); only the authorized-operations field depends on DESCRIBE on the cluster.
pub async fn describe_cluster(
    services: MetadataServices<'_>,
    ctx: &RequestContext,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let authz = Authz::new(services.authorizer, ctx);
    DescribeClusterResponse::default()
        .with_cluster_id(s(services.cluster_id))
        .with_controller_id(controller_id(services))
        .with_endpoint_type(1)
        .with_cluster_authorized_operations(cluster_operations(
            &authz,
            req.include_cluster_authorized_operations,
        ))
        .with_brokers(
            brokers(services, &ctx.listener)
                .into_iter()
                .map(|b| {
                    DescribeClusterBroker::default()
                        .with_broker_id(b.node_id)
                        .with_host(b.host)
                        .with_port(b.port)
                        .with_rack(b.rack)
                })
                .collect(),
        )
}

/// DescribeTopicPartitions (what `kafka-topics --describe` uses): paged by a cursor. Topics the
/// principal may not DESCRIBE are left out of a listing and refused by name.
pub async fn describe_topic_partitions(
    services: MetadataServices<'_>,
    ctx: &RequestContext,
    req: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let authz = Authz::new(services.authorizer, ctx);
    let listing = req.topics.is_empty();
    let image = services.topics.image.snapshot();
    let all = &image.topics;
    let mut names: Vec<String> = if listing {
        all.keys().cloned().collect()
    } else {
        req.topics.iter().map(|t| t.name.0.to_string()).collect()
    };
    names.sort();
    names.dedup();
    let limit = req.response_partition_limit.clamp(1, 2000) as usize;
    let (start_topic, start_partition) = match &req.cursor {
        Some(c) => (
            Some(c.topic_name.0.to_string()),
            c.partition_index.max(0) as usize,
        ),
        None => (None, 0),
    };
    let mut topics = Vec::new();
    let mut budget = limit;
    let mut next_cursor = None;
    for name in names
        .iter()
        .filter(|n| start_topic.as_ref().is_none_or(|s| *n >= s))
    {
        let first_partition = if Some(name) == start_topic.as_ref() {
            start_partition
        } else {
            0
        };
        if !authz.topic(AclOperation::Describe, name) {
            if !listing {
                topics.push(
                    DescribeTopicPartitionsResponseTopic::default()
                        .with_error_code(ErrorCode::TopicAuthorizationFailed.code())
                        .with_name(Some(topic_name(name)))
                        .with_topic_authorized_operations(OPERATIONS_NOT_REQUESTED),
                );
            }
            continue;
        }
        let Some(t) = all.get(name) else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(ErrorCode::UnknownTopicOrPartition.code())
                    .with_name(Some(topic_name(name)))
                    .with_topic_authorized_operations(authz.topic_operations(name)),
            );
            continue;
        };
        if budget == 0 {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(topic_name(name))
                    .with_partition_index(first_partition as i32),
            );
            break;
        }
        let mut parts = Vec::new();
        for (i, p) in t.partitions.iter().enumerate().skip(first_partition) {
            if budget == 0 {
                next_cursor = Some(
                    Cursor::default()
                        .with_topic_name(topic_name(name))
                        .with_partition_index(i as i32),
                );
                break;
            }
            budget -= 1;
            parts.push(
                DescribeTopicPartitionsResponsePartition::default()
                    .with_partition_index(i as i32)
                    .with_leader_id(BrokerId(p.leader))
                    .with_leader_epoch(p.leader_epoch)
                    .with_replica_nodes(p.replicas.iter().map(|r| BrokerId(*r)).collect())
                    .with_isr_nodes(p.isr.iter().map(|r| BrokerId(*r)).collect())
                    .with_eligible_leader_replicas(Some(vec![]))
                    .with_last_known_elr(Some(vec![])),
            );
        }
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(topic_name(name)))
                .with_topic_id(t.id)
                .with_is_internal(crate::topic_config::is_internal(name))
                .with_partitions(parts)
                .with_topic_authorized_operations(authz.topic_operations(name)),
        );
        if next_cursor.is_some() {
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}
