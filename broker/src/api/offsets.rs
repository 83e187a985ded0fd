//! OffsetCommit, OffsetFetch and OffsetDelete: committed consumer positions.

use std::sync::Arc;

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

use super::topic_name;
use crate::protocol::dispatch::{s, RequestContext};
use crate::protocol::errors::ErrorCode;
use crate::state::Broker;

/// Kafka's default `offset.metadata.max.bytes`.
const MAX_METADATA_BYTES: usize = 4096;

pub async fn commit(
    broker: &Arc<Broker>,
    _ctx: &RequestContext,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let mut items = Vec::new();
    let mut per_partition: Vec<(usize, i32, ErrorCode)> = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let name = t.name.0.to_string();
        for p in &t.partitions {
            let code = if broker.partition(&name, p.partition_index).is_none() {
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
        broker.groups.commit_offsets(
            &req.group_id.0,
            &req.member_id,
            req.generation_id_or_member_epoch,
            items,
        )
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

/// One partition's committed position: (partition, offset, leader epoch, metadata).
type CommittedRow = (i32, i64, i32, String);

/// (topic, partitions) pairs to report for one group: as requested, or everything committed.
fn fetch_one(
    broker: &Broker,
    group: &str,
    requested: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<(String, Vec<CommittedRow>)> {
    let committed = broker.groups.committed(group);
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
        .map(|(t, parts)| {
            let rows = parts
                .into_iter()
                .map(|p| match committed.get(&(t.clone(), p)) {
                    Some(c) => (
                        p,
                        c.offset,
                        c.leader_epoch,
                        c.metadata.clone().unwrap_or_default(),
                    ),
                    None => (p, -1, -1, String::new()),
                })
                .collect();
            (t, rows)
        })
        .collect()
}

pub async fn fetch(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if ctx.api_version >= 8 {
        let groups = req
            .groups
            .iter()
            .map(|g| {
                let requested = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let topics = fetch_one(broker, &g.group_id.0, requested)
                    .into_iter()
                    .map(|(t, rows)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(topic_name(&t))
                            .with_partitions(
                                rows.into_iter()
                                    .map(|(p, o, e, m)| {
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(o)
                                            .with_committed_leader_epoch(e)
                                            .with_metadata(Some(s(m)))
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
    let requested = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let topics = fetch_one(broker, &req.group_id.0, requested)
        .into_iter()
        .map(|(t, rows)| {
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(&t))
                .with_partitions(
                    rows.into_iter()
                        .map(|(p, o, e, m)| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(o)
                                .with_committed_leader_epoch(e)
                                .with_metadata(Some(s(m)))
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

pub async fn delete(
    broker: &Arc<Broker>,
    _ctx: &RequestContext,
    req: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let wanted: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    match broker.groups.delete_offsets(&req.group_id.0, wanted) {
        Err(code) => OffsetDeleteResponse::default().with_error_code(code.code()),
        Ok(results) => {
            let topics = req
                .topics
                .iter()
                .map(|t| {
                    let partitions = results
                        .iter()
                        .filter(|(name, _, _)| name.as_str() == t.name.0.as_str())
                        .map(|(_, p, code)| {
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(*p)
                                .with_error_code(code.code())
                        })
                        .collect();
                    OffsetDeleteResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(partitions)
                })
                .collect();
            OffsetDeleteResponse::default().with_topics(topics)
        }
    }
}
