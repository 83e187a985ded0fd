//! Metadata, DescribeTopicPartitions and DescribeCluster: what the cluster looks like to clients.
//! Metadata also auto-creates requested topics when `auto.create.topics.enable` allows it.

use std::sync::Arc;

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
use crate::protocol::dispatch::{s, RequestContext};
use crate::protocol::errors::ErrorCode;
use crate::state::{validate_topic_name, Broker};

/// Bit set of the ACL operations a client may perform on a topic when no authorizer is on:
/// READ(3) WRITE(4) CREATE(5) DELETE(6) ALTER(7) DESCRIBE(8) DESCRIBE_CONFIGS(10) ALTER_CONFIGS(11).
const ALL_TOPIC_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
/// CREATE(5) ALTER(7) DESCRIBE(8) CLUSTER_ACTION(9) DESCRIBE_CONFIGS(10) ALTER_CONFIGS(11) IDEMPOTENT_WRITE(12).
const ALL_CLUSTER_OPERATIONS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

fn brokers(broker: &Broker, listener: &str) -> Vec<MetadataResponseBroker> {
    let l = broker.config.advertised_for(listener);
    vec![MetadataResponseBroker::default()
        .with_node_id(BrokerId(broker.config.node_id))
        .with_host(s(l.host.clone()))
        .with_port(l.port as i32)
        .with_rack(broker.config.broker_rack.clone().map(s))]
}

fn describe_topic(t: &TopicMeta, with_ops: bool) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&t.name)))
        .with_topic_id(t.id)
        .with_is_internal(false)
        .with_topic_authorized_operations(if with_ops {
            ALL_TOPIC_OPERATIONS
        } else {
            OPERATIONS_NOT_REQUESTED
        })
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
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: MetadataRequest,
) -> MetadataResponse {
    let with_ops = req.include_topic_authorized_operations;
    // v0: an empty list means all topics; v1+: null means all.
    let requested: Option<Vec<_>> = match req.topics {
        Some(t) if t.is_empty() && ctx.api_version == 0 => None,
        other => other,
    };
    let allow_create = (ctx.api_version < 4 || req.allow_auto_topic_creation)
        && broker.config.auto_create_topics_enable;
    let topics = match requested {
        None => broker
            .metadata
            .read()
            .topics
            .values()
            .map(|t| describe_topic(t, with_ops))
            .collect(),
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for item in list {
                let Some(name) = item.name.as_ref().map(|n| n.0.to_string()) else {
                    let img = broker.metadata.read();
                    out.push(match img.topic_by_id(&item.topic_id) {
                        Some(t) => describe_topic(t, with_ops),
                        None => topic_error(None, item.topic_id, ErrorCode::UnknownTopicId),
                    });
                    continue;
                };
                let existing = broker
                    .metadata
                    .read()
                    .topics
                    .get(&name)
                    .map(|t| describe_topic(t, with_ops));
                if let Some(t) = existing {
                    out.push(t);
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
                match broker.create_topic(&name, -1, -1, Default::default(), false) {
                    Ok(_)
                    | Err(crate::state::TopicError {
                        code: ErrorCode::TopicAlreadyExists,
                        ..
                    }) => {
                        let img = broker.metadata.read();
                        out.push(
                            img.topics
                                .get(&name)
                                .map(|t| describe_topic(t, with_ops))
                                .unwrap_or_else(|| {
                                    topic_error(
                                        Some(&name),
                                        uuid::Uuid::nil(),
                                        ErrorCode::LeaderNotAvailable,
                                    )
                                }),
                        );
                    }
                    Err(e) => out.push(topic_error(Some(&name), uuid::Uuid::nil(), e.code)),
                }
            }
            out
        }
    };
    MetadataResponse::default()
        .with_brokers(brokers(broker, &ctx.listener))
        .with_cluster_id(Some(s(broker.cluster_id.clone())))
        .with_controller_id(BrokerId(broker.config.node_id))
        .with_topics(topics)
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
            ALL_CLUSTER_OPERATIONS
        } else {
            OPERATIONS_NOT_REQUESTED
        })
}

pub async fn describe_cluster(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let l = broker.config.advertised_for(&ctx.listener);
    DescribeClusterResponse::default()
        .with_cluster_id(s(broker.cluster_id.clone()))
        .with_controller_id(BrokerId(broker.config.node_id))
        .with_endpoint_type(1)
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
            ALL_CLUSTER_OPERATIONS
        } else {
            OPERATIONS_NOT_REQUESTED
        })
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(broker.config.node_id))
            .with_host(s(l.host.clone()))
            .with_port(l.port as i32)
            .with_rack(broker.config.broker_rack.clone().map(s))])
}

/// DescribeTopicPartitions (what `kafka-topics --describe` uses): paged by a cursor.
pub async fn describe_topic_partitions(
    broker: &Arc<Broker>,
    _ctx: &RequestContext,
    req: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let img = broker.metadata.read();
    let mut names: Vec<String> = if req.topics.is_empty() {
        img.topics.keys().cloned().collect()
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
        let Some(t) = img.topics.get(name) else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(ErrorCode::UnknownTopicOrPartition.code())
                    .with_name(Some(topic_name(name)))
                    .with_topic_authorized_operations(ALL_TOPIC_OPERATIONS),
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
                .with_partitions(parts)
                .with_topic_authorized_operations(ALL_TOPIC_OPERATIONS),
        );
        if next_cursor.is_some() {
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}
