//! ConsumerGroupHeartbeat and ConsumerGroupDescribe: the consumer group protocol of KIP-848
//! (`group.protocol=consumer`), with the assignment computed here (`group::consumer_group`).
//!
//! Authorization as in Kafka: a heartbeat needs READ on the group (GROUP_AUTHORIZATION_FAILED)
//! and DESCRIBE on every topic it names (TOPIC_AUTHORIZATION_FAILED); a regex only matches
//! topics the member may DESCRIBE. ConsumerGroupDescribe needs DESCRIBE on the group.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member,
    TopicPartitions as DescribedTopicPartitions,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment as HeartbeatAssignment, TopicPartitions as HeartbeatTopicPartitions,
};
use kafka_protocol::messages::*;

use super::authz::{Authz, OPS_NOT_REQUESTED};
use super::services::GroupServices;
use super::topic_name;
use crate::auth::acl::AclOperation;
use crate::group::assignor::Assignment;
use crate::group::consumer_group::{Heartbeat, TopicsView};
use crate::protocol::context::{s, RequestContext};
use crate::protocol::errors::ErrorCode;

fn heartbeat_error(code: ErrorCode, message: String) -> ConsumerGroupHeartbeatResponse {
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(code.code())
        .with_error_message(Some(s(message)))
}

pub async fn heartbeat(
    services: GroupServices<'_>,
    ctx: &RequestContext,
    req: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let group = req.group_id.0.to_string();
    let authz = Authz::new(services.authorizer, ctx);
    if !authz.group(AclOperation::Read, &group) {
        return heartbeat_error(
            ErrorCode::GroupAuthorizationFailed,
            format!("Not authorized to read group {group}."),
        );
    }
    if let Some(names) = &req.subscribed_topic_names {
        if let Some(denied) = names
            .iter()
            .find(|n| !authz.topic(AclOperation::Describe, n))
        {
            return heartbeat_error(
                ErrorCode::TopicAuthorizationFailed,
                format!("Not authorized to describe topic {}.", denied.0),
            );
        }
    }
    if !services.coordinates(&group) {
        return heartbeat_error(
            ErrorCode::NotCoordinator,
            format!("This broker does not coordinate group {group}."),
        );
    }
    let image = services.image.snapshot();
    let topics: TopicsView = image
        .topics
        .values()
        .filter(|t| authz.topic(AclOperation::Describe, &t.name))
        .map(|t| (t.name.clone(), (t.id, t.partitions.len() as i32)))
        .collect();
    let hb = Heartbeat {
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(ToString::to_string),
        rack_id: req.rack_id.as_ref().map(ToString::to_string),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topic_names: req
            .subscribed_topic_names
            .as_ref()
            .map(|n| n.iter().map(|t| t.0.to_string()).collect()),
        subscribed_topic_regex: req.subscribed_topic_regex.as_ref().map(ToString::to_string),
        server_assignor: req.server_assignor.as_ref().map(ToString::to_string),
        owned: req.topic_partitions.as_ref().map(|owned| {
            owned
                .iter()
                .map(|t| (t.topic_id, t.partitions.iter().copied().collect()))
                .collect()
        }),
        client_id: ctx.client_id.clone(),
        client_host: ctx.client_host.clone(),
    };
    match services
        .groups
        .consumer_heartbeat(&group, hb, &topics)
        .await
    {
        Ok(out) => ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(s(out.member_id)))
            .with_member_epoch(out.member_epoch)
            .with_heartbeat_interval_ms(services.groups.consumer_heartbeat_interval_ms())
            .with_assignment(out.assignment.map(|a| {
                HeartbeatAssignment::default().with_topic_partitions(
                    a.into_iter()
                        .map(|(topic, parts)| {
                            HeartbeatTopicPartitions::default()
                                .with_topic_id(topic)
                                .with_partitions(parts.into_iter().collect())
                        })
                        .collect(),
                )
            })),
        Err(refusal) => {
            tracing::debug!(group, code = ?refusal.code, message = %refusal.message, "consumer group heartbeat refused");
            heartbeat_error(refusal.code, refusal.message)
                .with_member_id(Some(req.member_id.clone()))
                .with_member_epoch(req.member_epoch)
        }
    }
}

/// An assignment with topic names, for ConsumerGroupDescribe.
fn described(a: &Assignment, names: &BTreeMap<uuid::Uuid, String>) -> DescribedAssignment {
    DescribedAssignment::default().with_topic_partitions(
        a.iter()
            .map(|(id, parts): (&uuid::Uuid, &BTreeSet<i32>)| {
                DescribedTopicPartitions::default()
                    .with_topic_id(*id)
                    .with_topic_name(topic_name(names.get(id).map_or("", String::as_str)))
                    .with_partitions(parts.iter().copied().collect())
            })
            .collect(),
    )
}

pub async fn describe(
    services: GroupServices<'_>,
    ctx: &RequestContext,
    req: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let authz = Authz::new(services.authorizer, ctx);
    let names: BTreeMap<uuid::Uuid, String> = services
        .image
        .snapshot()
        .topics
        .values()
        .map(|t| (t.id, t.name.clone()))
        .collect();
    let groups = req
        .group_ids
        .iter()
        .map(|g| {
            let failed = |code: ErrorCode, message: String| {
                DescribedGroup::default()
                    .with_group_id(g.clone())
                    .with_error_code(code.code())
                    .with_error_message(Some(s(message)))
                    .with_authorized_operations(OPS_NOT_REQUESTED)
            };
            if !authz.group(AclOperation::Describe, &g.0) {
                return failed(
                    ErrorCode::GroupAuthorizationFailed,
                    format!("Not authorized to describe group {}.", g.0),
                );
            }
            if !services.coordinates(&g.0) {
                return failed(
                    ErrorCode::NotCoordinator,
                    format!("This broker does not coordinate group {}.", g.0),
                );
            }
            let d = match services.groups.consumer_describe(&g.0) {
                Ok(d) => d,
                Err(refusal) => return failed(refusal.code, refusal.message),
            };
            DescribedGroup::default()
                .with_group_id(g.clone())
                .with_group_state(s(d.state))
                .with_group_epoch(d.group_epoch)
                .with_assignment_epoch(d.assignment_epoch)
                .with_assignor_name(s(d.assignor))
                .with_authorized_operations(
                    authz.group_operations(req.include_authorized_operations, &g.0),
                )
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            Member::default()
                                .with_member_id(s(m.member_id))
                                .with_instance_id(m.instance_id.map(s))
                                .with_rack_id(m.rack_id.map(s))
                                .with_member_epoch(m.member_epoch)
                                .with_client_id(s(m.client_id))
                                .with_client_host(s(m.client_host))
                                .with_subscribed_topic_names(
                                    m.subscribed_topic_names
                                        .iter()
                                        .map(|n| topic_name(n))
                                        .collect(),
                                )
                                .with_subscribed_topic_regex(m.subscribed_topic_regex.map(s))
                                .with_assignment(described(&m.assignment, &names))
                                .with_target_assignment(described(&m.target_assignment, &names))
                                // 0: a classic member (JoinGroup/SyncGroup), 1: a member
                                // speaking the consumer protocol.
                                .with_member_type(if m.classic { 0 } else { 1 })
                        })
                        .collect(),
                )
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
