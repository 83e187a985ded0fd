//! Group membership APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! DescribeGroups, ListGroups and DeleteGroups. This broker coordinates every group.
//!
//! Authorization as in Kafka: FindCoordinator needs DESCRIBE on the group (or transactional id),
//! the membership APIs READ on the group, DescribeGroups DESCRIBE, DeleteGroups DELETE; refusals
//! are GROUP_AUTHORIZATION_FAILED. ListGroups lists every group to a principal that may DESCRIBE
//! the cluster and otherwise only the groups it may DESCRIBE.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;

use super::authz::{Authz, OPS_NOT_REQUESTED};
use crate::auth::acl::AclOperation;
use crate::auth::authorizer::Resource;
use crate::group::coordinator::GroupType;
use crate::group::JoinRequest;
use crate::protocol::context::{s, RequestContext};
use crate::protocol::errors::ErrorCode;

use super::services::GroupServices;

pub async fn find_coordinator(
    services: GroupServices<'_>,
    ctx: &RequestContext,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let authz = Authz::new(services.authorizer, ctx);
    // Key type 1 is a transactional id, anything else a group.
    let denied = |key: &str| -> Option<ErrorCode> {
        if req.key_type == 1 {
            (!authz.allowed(AclOperation::Describe, Resource::transactional_id(key)))
                .then_some(ErrorCode::TransactionalIdAuthorizationFailed)
        } else {
            (!authz.group(AclOperation::Describe, key))
                .then_some(ErrorCode::GroupAuthorizationFailed)
        }
    };
    // As Kafka, the coordinator's internal topic exists once a client looks for one (its
    // partitions hold nothing: the state is in the metadata quorum).
    let internal = if req.key_type == 1 {
        crate::topic_config::TRANSACTION_STATE_TOPIC
    } else {
        crate::topic_config::GROUP_METADATA_TOPIC
    };
    if let Err(e) = services.topics.ensure_internal_topic(internal).await {
        tracing::warn!(topic = internal, error = %e.message, "could not create an internal topic");
    }
    // The coordinator: a live registered broker chosen by key hash.
    let coordinator = |key: &str| -> Option<(BrokerId, String, i32)> {
        let image = services.image.snapshot();
        let id = image.coordinator_for(key)?;
        let (host, port) = image.endpoint_of(id, &ctx.listener)?;
        Some((BrokerId(id), host, port as i32))
    };
    if ctx.api_version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| match (denied(k), coordinator(k)) {
                (Some(code), _) => Coordinator::default()
                    .with_key(k.clone())
                    .with_node_id(BrokerId(-1))
                    .with_host(s(""))
                    .with_port(-1)
                    .with_error_code(code.code()),
                (None, None) => Coordinator::default()
                    .with_key(k.clone())
                    .with_node_id(BrokerId(-1))
                    .with_host(s(""))
                    .with_port(-1)
                    .with_error_code(ErrorCode::CoordinatorNotAvailable.code()),
                (None, Some((node, host, port))) => Coordinator::default()
                    .with_key(k.clone())
                    .with_node_id(node)
                    .with_host(s(host))
                    .with_port(port),
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let code = denied(&req.key);
    match (code, coordinator(&req.key)) {
        (None, Some((node, host, port))) => FindCoordinatorResponse::default()
            .with_node_id(node)
            .with_host(s(host))
            .with_port(port),
        (code, _) => FindCoordinatorResponse::default()
            .with_error_code(code.unwrap_or(ErrorCode::CoordinatorNotAvailable).code())
            .with_node_id(BrokerId(-1))
            .with_host(s(""))
            .with_port(-1),
    }
}

pub async fn join(
    services: GroupServices<'_>,
    ctx: &RequestContext,
    req: JoinGroupRequest,
) -> JoinGroupResponse {
    if !Authz::new(services.authorizer, ctx).group(AclOperation::Read, &req.group_id.0) {
        return JoinGroupResponse::default()
            .with_error_code(ErrorCode::GroupAuthorizationFailed.code())
            .with_generation_id(-1)
            .with_member_id(req.member_id.clone());
    }
    if !services.coordinates(&req.group_id.0) {
        return JoinGroupResponse::default()
            .with_error_code(ErrorCode::NotCoordinator.code())
            .with_generation_id(-1)
            .with_member_id(req.member_id.clone());
    }
    let join = JoinRequest {
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: ctx.client_id.clone(),
        client_host: ctx.client_host.clone(),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: it equals the session timeout.
        rebalance_timeout_ms: if ctx.api_version == 0 {
            req.session_timeout_ms
        } else {
            req.rebalance_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: ctx.api_version >= 4,
    };
    let r = services.groups.join(&req.group_id.0, join).await;
    JoinGroupResponse::default()
        .with_error_code(r.error)
        .with_generation_id(r.generation_id)
        .with_protocol_type(r.protocol_type.map(s))
        .with_protocol_name(r.protocol_name.map(s))
        .with_leader(s(r.leader))
        .with_member_id(s(r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|(id, inst, md)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(s(id))
                        .with_group_instance_id(inst.map(s))
                        .with_metadata(md)
                })
                .collect(),
        )
}

pub async fn sync(
    services: GroupServices<'_>,
    ctx: &RequestContext,
    req: SyncGroupRequest,
) -> SyncGroupResponse {
    if !Authz::new(services.authorizer, ctx).group(AclOperation::Read, &req.group_id.0) {
        return SyncGroupResponse::default()
            .with_error_code(ErrorCode::GroupAuthorizationFailed.code());
    }
    if !services.coordinates(&req.group_id.0) {
        return SyncGroupResponse::default().with_error_code(ErrorCode::NotCoordinator.code());
    }
    let assignments = req
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let r = services
        .groups
        .sync(
            &req.group_id.0,
            &req.member_id,
            req.generation_id,
            assignments,
        )
        .await;
    SyncGroupResponse::default()
        .with_error_code(r.error)
        .with_protocol_type(r.protocol_type.map(s))
        .with_protocol_name(r.protocol_name.map(s))
        .with_assignment(r.assignment)
}

pub async fn heartbeat(
    services: GroupServices<'_>,
    ctx: &RequestContext,
    req: HeartbeatRequest,
) -> HeartbeatResponse {
    if !Authz::new(services.authorizer, ctx).group(AclOperation::Read, &req.group_id.0) {
        return HeartbeatResponse::default()
            .with_error_code(ErrorCode::GroupAuthorizationFailed.code());
    }
    if !services.coordinates(&req.group_id.0) {
        return HeartbeatResponse::default().with_error_code(ErrorCode::NotCoordinator.code());
    }
    let code = services
        .groups
        .heartbeat(&req.group_id.0, &req.member_id, req.generation_id);
    HeartbeatResponse::default().with_error_code(code.code())
}

pub async fn leave(
    services: GroupServices<'_>,
    ctx: &RequestContext,
    req: LeaveGroupRequest,
) -> LeaveGroupResponse {
    if !Authz::new(services.authorizer, ctx).group(AclOperation::Read, &req.group_id.0) {
        return LeaveGroupResponse::default()
            .with_error_code(ErrorCode::GroupAuthorizationFailed.code());
    }
    if !services.coordinates(&req.group_id.0) {
        return LeaveGroupResponse::default().with_error_code(ErrorCode::NotCoordinator.code());
    }
    if ctx.api_version < 3 {
        let codes = services
            .groups
            .leave(&req.group_id.0, &[(req.member_id.to_string(), None)]);
        return LeaveGroupResponse::default().with_error_code(codes[0].code());
    }
    let members: Vec<(String, Option<String>)> = req
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.to_string(),
                m.group_instance_id.as_ref().map(|s| s.to_string()),
            )
        })
        .collect();
    let codes = services.groups.leave(&req.group_id.0, &members);
    LeaveGroupResponse::default().with_members(
        members
            .into_iter()
            .zip(codes)
            .map(|((id, inst), code)| {
                MemberResponse::default()
                    .with_member_id(s(id))
                    .with_group_instance_id(inst.map(s))
                    .with_error_code(code.code())
            })
            .collect(),
    )
}

pub async fn describe(
    services: GroupServices<'_>,
    ctx: &RequestContext,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let authz = Authz::new(services.authorizer, ctx);
    let groups = req
        .groups
        .iter()
        .map(|g| {
            if !authz.group(AclOperation::Describe, &g.0) {
                return DescribedGroup::default()
                    .with_group_id(g.clone())
                    .with_error_code(ErrorCode::GroupAuthorizationFailed.code())
                    .with_authorized_operations(OPS_NOT_REQUESTED);
            }
            let Some(d) = services.groups.describe(&g.0) else {
                // Kafka's answer for a consumer-protocol group: ConsumerGroupDescribe it.
                return DescribedGroup::default()
                    .with_group_id(g.clone())
                    .with_error_code(ErrorCode::GroupIdNotFound.code())
                    .with_error_message(Some(s(format!("Group {} is not a classic group.", g.0))))
                    .with_group_state(s("Dead"))
                    .with_authorized_operations(OPS_NOT_REQUESTED);
            };
            DescribedGroup::default()
                .with_group_id(g.clone())
                .with_group_state(s(d.state))
                .with_protocol_type(s(d.protocol_type))
                .with_protocol_data(s(d.protocol))
                .with_authorized_operations(
                    authz.group_operations(req.include_authorized_operations, &g.0),
                )
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(s(m.member_id))
                                .with_group_instance_id(m.group_instance_id.map(s))
                                .with_client_id(s(m.client_id))
                                .with_client_host(s(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub async fn list(
    services: GroupServices<'_>,
    ctx: &RequestContext,
    req: ListGroupsRequest,
) -> ListGroupsResponse {
    let authz = Authz::new(services.authorizer, ctx);
    let all = authz.cluster(AclOperation::Describe);
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let groups = services
        .groups
        .list()
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.to_lowercase()))
        .filter(|g| types.is_empty() || types.iter().any(|t| t == g.group_type.name()))
        .filter(|g| all || authz.group(AclOperation::Describe, &g.id))
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(s(g.id)))
                .with_protocol_type(s(g.protocol_type))
                .with_group_state(s(g.state))
                .with_group_type(s(match g.group_type {
                    GroupType::Classic => "Classic",
                    GroupType::Consumer => "Consumer",
                }))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub async fn delete(
    services: GroupServices<'_>,
    ctx: &RequestContext,
    req: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let authz = Authz::new(services.authorizer, ctx);
    let mut results = Vec::with_capacity(req.groups_names.len());
    for g in &req.groups_names {
        let code = if authz.group(AclOperation::Delete, &g.0) {
            services.groups.delete_group(&g.0).await
        } else {
            ErrorCode::GroupAuthorizationFailed
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(g.clone())
                .with_error_code(code.code()),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
