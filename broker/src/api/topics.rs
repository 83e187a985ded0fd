//! CreateTopics, DeleteTopics and CreatePartitions.
//!
//! Authorization as in Kafka: creating needs CREATE on the cluster or the topic (and
//! DESCRIBE_CONFIGS on the topic to see its configs in the answer), deleting DELETE on the topic
//! (a topic the principal may not DESCRIBE looks the same as one it may not delete), adding
//! partitions ALTER; refusals are TOPIC_AUTHORIZATION_FAILED.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::*;

use super::authz::Authz;
use super::configs::topic_config_entries;
use super::services::TopicServices;
use super::topic_name;
use crate::auth::acl::AclOperation;
use crate::protocol::context::{s, RequestContext};
use crate::protocol::errors::ErrorCode;
use crate::topic_config::TopicError;

pub async fn create(
    services: TopicServices<'_>,
    ctx: &RequestContext,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let authz = Authz::new(services.authorizer, ctx);
    let cluster_create = authz.cluster(AclOperation::Create);
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let result = CreatableTopicResult::default().with_name(t.name.clone());
        let outcome = async {
            if !cluster_create && !authz.topic(AclOperation::Create, &name) {
                return Err(TopicError::new(
                    ErrorCode::TopicAuthorizationFailed,
                    "Authorization failed.",
                ));
            }
            let mut configs = BTreeMap::new();
            for c in &t.configs {
                let Some(v) = &c.value else { continue };
                configs.insert(c.name.to_string(), v.to_string());
            }
            let (partitions, rf) = if t.assignments.is_empty() {
                (t.num_partitions, t.replication_factor)
            } else {
                if t.num_partitions != -1 || t.replication_factor != -1 {
                    return Err(TopicError::new(
                        ErrorCode::InvalidRequest,
                        "Both numPartitions or replicationFactor and replicasAssignments were set.",
                    ));
                }
                for a in &t.assignments {
                    if a.broker_ids
                        .iter()
                        .any(|b| b.0 != services.topics.config.node_id)
                        || a.broker_ids.is_empty()
                    {
                        return Err(TopicError::new(
                            ErrorCode::InvalidReplicaAssignment,
                            format!(
                                "Replica assignment for partition {} names an unknown broker.",
                                a.partition_index
                            ),
                        ));
                    }
                }
                (
                    t.assignments.len() as i32,
                    t.assignments[0].broker_ids.len() as i16,
                )
            };
            services
                .topics
                .create_topic(&name, partitions, rf, configs, req.validate_only)
                .await
        }
        .await;
        results.push(match outcome {
            Ok(id) => {
                let img = services.topics.image.snapshot();
                let (parts, rf, overrides) = img
                    .topics
                    .get(&name)
                    .map(|m| {
                        (
                            m.partitions.len() as i32,
                            m.partitions[0].replicas.len() as i16,
                            m.configs.clone(),
                        )
                    })
                    .unwrap_or((
                        if t.num_partitions == -1 {
                            services.topics.config.num_partitions
                        } else {
                            t.num_partitions
                        },
                        1,
                        BTreeMap::new(),
                    ));
                drop(img);
                if !authz.topic(AclOperation::DescribeConfigs, &name) {
                    results.push(
                        result
                            .with_topic_id(id)
                            .with_num_partitions(parts)
                            .with_replication_factor(rf)
                            .with_topic_config_error_code(
                                ErrorCode::TopicAuthorizationFailed.code(),
                            )
                            .with_configs(None),
                    );
                    continue;
                }
                let configs = topic_config_entries(services, &overrides)
                    .into_iter()
                    .map(|e| {
                        CreatableTopicConfigs::default()
                            .with_name(s(e.name))
                            .with_value(Some(s(e.value)))
                            .with_config_source(e.source)
                            .with_read_only(false)
                    })
                    .collect();
                result
                    .with_topic_id(id)
                    .with_num_partitions(parts)
                    .with_replication_factor(rf)
                    .with_configs(Some(configs))
            }
            Err(e) => result
                .with_error_code(e.code.code())
                .with_error_message(Some(s(e.message)))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub async fn delete(
    services: TopicServices<'_>,
    ctx: &RequestContext,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let authz = Authz::new(services.authorizer, ctx);
    // v6+ names topics by name or id; older versions by name only.
    let targets: Vec<(Option<String>, uuid::Uuid)> = if ctx.api_version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let response = async {
            let name = name.or_else(|| {
                services
                    .topics
                    .image
                    .snapshot()
                    .topic_by_id(&id)
                    .map(|t| t.name.clone())
            });
            let Some(name) = name else {
                return DeletableTopicResult::default()
                    .with_topic_id(id)
                    .with_error_code(ErrorCode::UnknownTopicId.code())
                    .with_error_message(Some(s("This server does not host this topic ID.")));
            };
            if !authz.topic(AclOperation::Delete, &name) {
                return DeletableTopicResult::default()
                    .with_name(Some(topic_name(&name)))
                    .with_topic_id(id)
                    .with_error_code(ErrorCode::TopicAuthorizationFailed.code())
                    .with_error_message(Some(s("Authorization failed.")));
            }
            match services.topics.delete_topic(&name).await {
                Ok(id) => DeletableTopicResult::default()
                    .with_name(Some(topic_name(&name)))
                    .with_topic_id(id),
                Err(e) => DeletableTopicResult::default()
                    .with_name(Some(topic_name(&name)))
                    .with_topic_id(id)
                    .with_error_code(e.code.code())
                    .with_error_message(Some(s(e.message))),
            }
        }
        .await;
        responses.push(response);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn create_partitions(
    services: TopicServices<'_>,
    ctx: &RequestContext,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let authz = Authz::new(services.authorizer, ctx);
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let result = async {
            let name = t.name.0.to_string();
            let bad_assignment = t.assignments.as_ref().is_some_and(|a| {
                a.iter().any(|x| {
                    x.broker_ids
                        .iter()
                        .any(|b| b.0 != services.topics.config.node_id)
                })
            });
            let outcome = if !authz.topic(AclOperation::Alter, &name) {
                Err(TopicError::new(
                    ErrorCode::TopicAuthorizationFailed,
                    "Authorization failed.",
                ))
            } else if bad_assignment {
                Err(TopicError::new(
                    ErrorCode::InvalidReplicaAssignment,
                    "Replica assignment names an unknown broker.",
                ))
            } else {
                services
                    .topics
                    .create_partitions(&name, t.count, req.validate_only)
                    .await
            };
            match outcome {
                Ok(()) => CreatePartitionsTopicResult::default().with_name(t.name),
                Err(e) => CreatePartitionsTopicResult::default()
                    .with_name(t.name)
                    .with_error_code(e.code.code())
                    .with_error_message(Some(s(e.message))),
            }
        }
        .await;
        results.push(result);
    }
    CreatePartitionsResponse::default().with_results(results)
}
