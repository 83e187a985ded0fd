//! DescribeConfigs and IncrementalAlterConfigs for topics and brokers.
//!
//! Authorization as in Kafka: DESCRIBE_CONFIGS / ALTER_CONFIGS on the topic
//! (TOPIC_AUTHORIZATION_FAILED) or on the cluster for broker resources
//! (CLUSTER_AUTHORIZATION_FAILED).

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::*;

use super::authz::Authz;
use super::services::TopicServices;
use crate::auth::acl::AclOperation;
use crate::protocol::context::{s, RequestContext};
use crate::protocol::errors::ErrorCode;
use crate::topic_config;
use crate::topic_config::TopicError;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Kafka's ConfigSource codes.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

pub struct ConfigEntry {
    pub name: String,
    pub value: String,
    pub source: i8,
    pub read_only: bool,
    pub config_type: i8,
}

/// Every topic key with its effective value and where that value comes from.
pub fn topic_config_entries(
    services: TopicServices<'_>,
    overrides: &BTreeMap<String, String>,
) -> Vec<ConfigEntry> {
    let defaults = services.topics.topic_defaults();
    let dynamic_keys: Vec<String> = {
        let img = services.topics.image.snapshot();
        img.broker_configs
            .values()
            .flat_map(|m| m.keys())
            .filter_map(|k| crate::config::broker_key_to_topic_key(k).map(str::to_string))
            .collect()
    };
    topic_config::all_keys()
        .map(|k| {
            let (value, source) = if let Some(v) = overrides.get(k) {
                (v.clone(), SOURCE_TOPIC)
            } else if let Some(v) = defaults.get(k) {
                let src = if dynamic_keys.iter().any(|d| d == k) {
                    SOURCE_DYNAMIC_DEFAULT_BROKER
                } else {
                    SOURCE_DEFAULT
                };
                (v.clone(), src)
            } else {
                (
                    topic_config::builtin_default(k).unwrap_or("").to_string(),
                    SOURCE_DEFAULT,
                )
            };
            ConfigEntry {
                name: k.to_string(),
                value,
                source,
                read_only: false,
                config_type: topic_config::type_code(k),
            }
        })
        .collect()
}

fn broker_config_entries(services: TopicServices<'_>, node: Option<i32>) -> Vec<ConfigEntry> {
    let img = services.topics.image.snapshot();
    let cluster_dynamic = img.broker_configs.get(&None).cloned().unwrap_or_default();
    let node_dynamic = node
        .and_then(|n| img.broker_configs.get(&Some(n)).cloned())
        .unwrap_or_default();
    drop(img);
    if node.is_none() {
        return cluster_dynamic
            .into_iter()
            .map(|(name, value)| ConfigEntry {
                name,
                value,
                source: SOURCE_DYNAMIC_DEFAULT_BROKER,
                read_only: false,
                config_type: 0,
            })
            .collect();
    }
    let mut entries: BTreeMap<String, ConfigEntry> = services
        .topics
        .config
        .raw
        .iter()
        .map(|(k, v)| {
            let dynamic = crate::config::broker_key_to_topic_key(k).is_some();
            (
                k.clone(),
                ConfigEntry {
                    name: k.clone(),
                    value: v.clone(),
                    source: SOURCE_STATIC_BROKER,
                    read_only: !dynamic,
                    config_type: 0,
                },
            )
        })
        .collect();
    for (map, source) in [
        (cluster_dynamic, SOURCE_DYNAMIC_DEFAULT_BROKER),
        (node_dynamic, SOURCE_DYNAMIC_BROKER),
    ] {
        for (k, v) in map {
            entries.insert(
                k.clone(),
                ConfigEntry {
                    name: k,
                    value: v,
                    source,
                    read_only: false,
                    config_type: 0,
                },
            );
        }
    }
    entries.into_values().collect()
}

fn unsupported_resource(resource_type: i8) -> TopicError {
    TopicError::new(
        ErrorCode::InvalidRequest,
        format!("Resource type {resource_type} is not supported."),
    )
}

/// The refusal for `op` on a config resource, if the principal may not do it.
fn denied(
    authz: &Authz<'_>,
    resource_type: i8,
    name: &str,
    op: AclOperation,
) -> Option<TopicError> {
    let (allowed, code) = match resource_type {
        RESOURCE_TOPIC => (authz.topic(op, name), ErrorCode::TopicAuthorizationFailed),
        RESOURCE_BROKER => (authz.cluster(op), ErrorCode::ClusterAuthorizationFailed),
        _ => return None,
    };
    (!allowed).then(|| TopicError::new(code, "Authorization failed."))
}

fn parse_broker_name(services: TopicServices<'_>, name: &str) -> Result<Option<i32>, TopicError> {
    if name.is_empty() {
        return Ok(None);
    }
    match name.parse::<i32>() {
        Ok(id) if id == services.topics.config.node_id => Ok(Some(id)),
        Ok(id) => Err(TopicError::new(
            ErrorCode::InvalidRequest,
            format!(
                "Broker {id} is not this broker ({}).",
                services.topics.config.node_id
            ),
        )),
        Err(_) => Err(TopicError::new(
            ErrorCode::InvalidRequest,
            format!("Broker id must be an integer, got '{name}'."),
        )),
    }
}

pub async fn describe(
    services: TopicServices<'_>,
    ctx: &RequestContext,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let authz = Authz::new(services.authorizer, ctx);
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let name = r.resource_name.to_string();
            let base = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let denial = denied(
                &authz,
                r.resource_type,
                &name,
                AclOperation::DescribeConfigs,
            );
            let entries = match (r.resource_type, denial) {
                (_, Some(e)) => Err(e),
                (RESOURCE_TOPIC, None) => match services
                    .topics
                    .image
                    .snapshot()
                    .topics
                    .get(&name)
                    .map(|t| t.configs.clone())
                {
                    Some(overrides) => Ok(topic_config_entries(services, &overrides)),
                    None => Err(TopicError::new(
                        ErrorCode::UnknownTopicOrPartition,
                        format!("Topic '{name}' does not exist."),
                    )),
                },
                (RESOURCE_BROKER, None) => parse_broker_name(services, &name)
                    .map(|node| broker_config_entries(services, node)),
                (other, None) => Err(unsupported_resource(other)),
            };
            match entries {
                Ok(entries) => {
                    let keys: Option<Vec<String>> = r
                        .configuration_keys
                        .map(|k| k.iter().map(|x| x.to_string()).collect());
                    base.with_configs(
                        entries
                            .into_iter()
                            .filter(|e| keys.as_ref().is_none_or(|k| k.contains(&e.name)))
                            .map(|e| {
                                DescribeConfigsResourceResult::default()
                                    .with_name(s(e.name))
                                    .with_value(Some(s(e.value)))
                                    .with_read_only(e.read_only)
                                    .with_config_source(e.source)
                                    .with_config_type(e.config_type)
                            })
                            .collect(),
                    )
                }
                Err(e) => base
                    .with_error_code(e.code.code())
                    .with_error_message(Some(s(e.message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Operation codes of IncrementalAlterConfigs.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// Turns SET/DELETE/APPEND/SUBTRACT into final values against the current ones.
fn compute_changes(
    current: &BTreeMap<String, String>,
    effective: impl Fn(&str) -> String,
    ops: &[(String, i8, Option<String>)],
) -> Result<BTreeMap<String, Option<String>>, TopicError> {
    let mut changes: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (key, op, value) in ops {
        if changes.contains_key(key) {
            return Err(TopicError::new(
                ErrorCode::InvalidRequest,
                format!("Duplicate operations for config {key}."),
            ));
        }
        let new_value = match *op {
            OP_SET => Some(value.clone().ok_or_else(|| {
                TopicError::new(ErrorCode::InvalidConfig, format!("Null value for {key}."))
            })?),
            OP_DELETE => None,
            OP_APPEND | OP_SUBTRACT => {
                if !topic_config::is_list(key) {
                    return Err(TopicError::new(ErrorCode::InvalidConfig, format!("Config {key} is not a list; it cannot be appended to or subtracted from.")));
                }
                let base = current.get(key).cloned().unwrap_or_else(|| effective(key));
                let mut items: Vec<String> = base
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                for v in value
                    .as_deref()
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                {
                    if *op == OP_APPEND {
                        if !items.iter().any(|i| i == v) {
                            items.push(v.to_string());
                        }
                    } else {
                        items.retain(|i| i != v);
                    }
                }
                Some(items.join(","))
            }
            other => {
                return Err(TopicError::new(
                    ErrorCode::InvalidRequest,
                    format!("Unknown config operation {other}."),
                ))
            }
        };
        changes.insert(key.clone(), new_value);
    }
    Ok(changes)
}

pub async fn incremental_alter(
    services: TopicServices<'_>,
    ctx: &RequestContext,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let authz = Authz::new(services.authorizer, ctx);
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let response = {
            let name = r.resource_name.to_string();
            let ops: Vec<(String, i8, Option<String>)> = r
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        c.config_operation,
                        c.value.as_ref().map(|v| v.to_string()),
                    )
                })
                .collect();
            let denial = denied(&authz, r.resource_type, &name, AclOperation::AlterConfigs);
            let outcome = match (r.resource_type, denial) {
                (_, Some(e)) => Err(e),
                (RESOURCE_TOPIC, None) => {
                    let current = services
                        .topics
                        .image
                        .snapshot()
                        .topics
                        .get(&name)
                        .map(|t| t.configs.clone());
                    match current {
                        None => Err(TopicError::new(
                            ErrorCode::UnknownTopicOrPartition,
                            format!("Topic '{name}' does not exist."),
                        )),
                        Some(current) => {
                            let defaults = services.topics.topic_defaults();
                            match compute_changes(
                                &current,
                                |k| defaults.get(k).cloned().unwrap_or_default(),
                                &ops,
                            ) {
                                Ok(changes) => {
                                    services
                                        .topics
                                        .alter_topic_config(&name, changes, req.validate_only)
                                        .await
                                }
                                Err(e) => Err(e),
                            }
                        }
                    }
                }
                (RESOURCE_BROKER, None) => {
                    match parse_broker_name(services, &name).and_then(|node| {
                        compute_changes(&BTreeMap::new(), |_| String::new(), &ops)
                            .map(|changes| (node, changes))
                    }) {
                        Ok((node, changes)) => {
                            services
                                .topics
                                .alter_broker_config(node, changes, req.validate_only)
                                .await
                        }
                        Err(e) => Err(e),
                    }
                }
                (other, None) => Err(unsupported_resource(other)),
            };
            let base = AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name);
            match outcome {
                Ok(()) => base,
                Err(e) => base
                    .with_error_code(e.code.code())
                    .with_error_message(Some(s(e.message))),
            }
        };
        responses.push(response);
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// Legacy AlterConfigs: the given set replaces all overrides of the resource.
pub async fn alter(
    services: TopicServices<'_>,
    ctx: &RequestContext,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let authz = Authz::new(services.authorizer, ctx);
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse as Resp;
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let response = {
            let name = r.resource_name.to_string();
            let wanted: BTreeMap<String, Option<String>> = r
                .configs
                .iter()
                .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                .collect();
            let denial = denied(&authz, r.resource_type, &name, AclOperation::AlterConfigs);
            let target = match (r.resource_type, denial) {
                (_, Some(e)) => Err(e),
                (RESOURCE_TOPIC, None) => match services
                    .topics
                    .image
                    .snapshot()
                    .topics
                    .get(&name)
                    .map(|t| t.configs.clone())
                {
                    None => Err(TopicError::new(
                        ErrorCode::UnknownTopicOrPartition,
                        format!("Topic '{name}' does not exist."),
                    )),
                    Some(current) => Ok((None, current)),
                },
                (RESOURCE_BROKER, None) => parse_broker_name(services, &name).map(|node| {
                    let current = services
                        .topics
                        .image
                        .snapshot()
                        .broker_configs
                        .get(&node)
                        .cloned()
                        .unwrap_or_default();
                    (Some(node), current)
                }),
                (other, None) => Err(unsupported_resource(other)),
            };
            let outcome = match target {
                Err(e) => Err(e),
                Ok((node, current)) => {
                    let mut changes: BTreeMap<String, Option<String>> =
                        current.keys().map(|k| (k.clone(), None)).collect();
                    for (k, v) in wanted {
                        changes.insert(k, v);
                    }
                    match node {
                        None => {
                            services
                                .topics
                                .alter_topic_config(&name, changes, req.validate_only)
                                .await
                        }
                        Some(node) => {
                            services
                                .topics
                                .alter_broker_config(node, changes, req.validate_only)
                                .await
                        }
                    }
                }
            };
            let base = Resp::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name);
            match outcome {
                Ok(()) => base,
                Err(e) => base
                    .with_error_code(e.code.code())
                    .with_error_message(Some(s(e.message))),
            }
        };
        responses.push(response);
    }
    AlterConfigsResponse::default().with_responses(responses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_operations() {
        let mut current = BTreeMap::new();
        current.insert("cleanup.policy".to_string(), "delete".to_string());
        let ops = vec![(
            "cleanup.policy".to_string(),
            OP_APPEND,
            Some("compact".to_string()),
        )];
        let c = compute_changes(&current, |_| String::new(), &ops).unwrap();
        assert_eq!(c["cleanup.policy"].as_deref(), Some("delete,compact"));
        let ops = vec![(
            "cleanup.policy".to_string(),
            OP_SUBTRACT,
            Some("delete".to_string()),
        )];
        let c = compute_changes(&current, |_| String::new(), &ops).unwrap();
        assert_eq!(c["cleanup.policy"].as_deref(), Some(""));
        let ops = vec![("retention.ms".to_string(), OP_APPEND, Some("1".to_string()))];
        assert!(compute_changes(&current, |_| String::new(), &ops).is_err());
        let ops = vec![("retention.ms".to_string(), OP_DELETE, None)];
        assert_eq!(
            compute_changes(&current, |_| String::new(), &ops).unwrap()["retention.ms"],
            None
        );
    }
}
