//! KafkaTopic reconciler: makes the topic on the brokers match the resource.
//!
//! Creates the topic, grows partitions, sets and removes config overrides, changes the
//! replication factor by reassignment ([`topic_replicas`]), deletes the topic when the resource
//! is deleted (finalizer). Refusals (partition decrease, invalid config) leave the
//! topic untouched and say why in a condition. Topics without a resource are never touched.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::ResourceExt;

use crate::crd::condition::{merge_conditions, now_rfc3339};
use crate::crd::topic::ReplicasChangeStatus;
use crate::crd::{config_value_string, Condition, KafkaTopic, KafkaTopicStatus};
use crate::kafka_admin::{AdminError, TopicDescription};
use crate::planning::throttle;

use super::{
    connect_admin, object_key, owning_cluster, patch_status, topic_replicas, Context, Error,
    RECHECK, RESYNC,
};

pub const FINALIZER: &str = "kafka.fjord.dev/topic";

/// What the brokers must do to match the spec.
#[derive(Debug, Clone, PartialEq)]
pub enum TopicChange {
    Create {
        partitions: Option<i32>,
        replicas: Option<i32>,
        config: BTreeMap<String, String>,
    },
    Update {
        grow_partitions_to: Option<i32>,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    },
}

/// The plan for one reconcile: a change (if any), or a refusal that blocks everything.
/// (`spec.replicas` is not planned here: [`topic_replicas`] converges it by reassignment.)
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TopicPlan {
    pub change: Option<TopicChange>,
    pub refusal: Option<Condition>,
}

/// The spec's config rendered as the strings the brokers store. The reassignment throttle
/// lists are the operator's own (set while it moves replicas), so the spec may not hold them.
pub fn desired_config(topic: &KafkaTopic) -> Result<BTreeMap<String, String>, String> {
    topic
        .spec
        .config
        .iter()
        .map(|(k, v)| {
            if throttle::TOPIC_KEYS.contains(&k.as_str()) {
                return Err(format!(
                    "config.{k}: set by the operator while it reassigns replicas (throttled at \
                     the Kafka's spec.rebalance.throttleBytesPerSecond); remove it from the \
                     KafkaTopic"
                ));
            }
            Ok((k.clone(), config_value_string(k, v)?))
        })
        .collect()
}

/// Pure planner: compares the spec with what the brokers have.
pub fn plan(topic: &KafkaTopic, current: Option<&TopicDescription>) -> TopicPlan {
    let config = match desired_config(topic) {
        Ok(c) => c,
        Err(e) => {
            return TopicPlan {
                refusal: Some(Condition::not_ready("InvalidConfig", format!("spec.{e}"))),
                ..TopicPlan::default()
            }
        }
    };
    let spec = &topic.spec;
    let Some(current) = current else {
        return TopicPlan {
            change: Some(TopicChange::Create {
                partitions: spec.partitions,
                replicas: spec.replicas,
                config,
            }),
            ..TopicPlan::default()
        };
    };
    let have = current.info.partitions;
    if let Some(want) = spec.partitions {
        if want < have {
            return TopicPlan {
                refusal: Some(Condition::not_ready(
                    "PartitionDecreaseNotSupported",
                    format!(
                        "topic {} has {have} partitions; Kafka cannot remove partitions, so \
                         spec.partitions={want} was not applied (nothing was changed)",
                        topic.topic_name()
                    ),
                )),
                ..TopicPlan::default()
            };
        }
    }
    let set: BTreeMap<String, String> = config
        .iter()
        .filter(|(k, v)| current.overrides.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let delete: Vec<String> = current
        .overrides
        .keys()
        .filter(|k| !config.contains_key(*k) && !throttle::TOPIC_KEYS.contains(&k.as_str()))
        .cloned()
        .collect();
    let grow = spec.partitions.filter(|want| *want > have);
    let change =
        (grow.is_some() || !set.is_empty() || !delete.is_empty()).then_some(TopicChange::Update {
            grow_partitions_to: grow,
            set,
            delete,
        });
    TopicPlan {
        change,
        refusal: None,
    }
}

/// Entry point for the controller.
pub async fn reconcile(topic: Arc<KafkaTopic>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started("KafkaTopic");
    let ns = topic.namespace().unwrap_or_default();
    let api: Api<KafkaTopic> = Api::namespaced(ctx.client.clone(), &ns);
    let key = object_key(topic.as_ref());
    let action = finalizer(&api, FINALIZER, topic, |event| async {
        match event {
            Finalizer::Apply(t) => apply(t, &ctx).await,
            Finalizer::Cleanup(t) => cleanup(t, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(e.to_string()))?;
    ctx.succeeded(&key);
    Ok(action)
}

async fn write_status(
    api: &Api<KafkaTopic>,
    topic: &KafkaTopic,
    conditions: Vec<Condition>,
    topic_id: Option<String>,
) -> Result<(), Error> {
    let previous = topic.status.clone().unwrap_or_default();
    let replicas_change = previous.replicas_change.clone();
    write_full_status(api, topic, conditions, topic_id, replicas_change).await
}

async fn write_full_status(
    api: &Api<KafkaTopic>,
    topic: &KafkaTopic,
    conditions: Vec<Condition>,
    topic_id: Option<String>,
    replicas_change: Option<ReplicasChangeStatus>,
) -> Result<(), Error> {
    let previous = topic.status.clone().unwrap_or_default();
    let status = KafkaTopicStatus {
        conditions: merge_conditions(&previous.conditions, conditions, &now_rfc3339()),
        observed_generation: topic.metadata.generation,
        topic_name: Some(topic.topic_name()),
        topic_id: topic_id.or(previous.topic_id),
        replicas_change,
    };
    patch_status(api, &topic.name_any(), &status).await
}

async fn apply(topic: Arc<KafkaTopic>, ctx: &Context) -> Result<Action, Error> {
    let api: Api<KafkaTopic> =
        Api::namespaced(ctx.client.clone(), &topic.namespace().unwrap_or_default());
    let kafka = match owning_cluster(&ctx.client, topic.as_ref()).await {
        Ok(k) => k,
        Err(problem) => {
            let c = Condition::not_ready(problem.reason, problem.message);
            write_status(&api, &topic, vec![c], None).await?;
            return Ok(Action::requeue(RECHECK));
        }
    };
    let name = topic.topic_name();
    let mut admin = match connect_admin(&kafka, &ctx.client).await {
        Ok(a) => a,
        Err(e) => return unreachable(&api, &topic, e).await,
    };
    let current = match admin.describe_topic_with_config(&name).await {
        Ok(c) => c,
        Err(e) => return unreachable(&api, &topic, e).await,
    };
    let plan = plan(&topic, current.as_ref());
    if let Some(refusal) = plan.refusal {
        ctx.event(
            topic.as_ref(),
            true,
            refusal.reason.as_deref().unwrap_or("Refused"),
            refusal.message.clone().unwrap_or_default(),
        )
        .await;
        write_status(&api, &topic, vec![refusal], None).await?;
        return Ok(Action::requeue(RESYNC));
    }
    let mut topic_id = current.as_ref().map(|c| c.info.id.clone());
    let outcome = match plan.change {
        None => Ok(()),
        Some(TopicChange::Create {
            partitions,
            replicas,
            config,
        }) => match admin
            .create_topic(&name, partitions, replicas, &config)
            .await
        {
            Ok(id) => {
                topic_id = Some(id);
                ctx.event(
                    topic.as_ref(),
                    false,
                    "TopicCreated",
                    format!("created topic {name}"),
                )
                .await;
                Ok(())
            }
            Err(e) => Err(e),
        },
        Some(TopicChange::Update {
            grow_partitions_to,
            set,
            delete,
        }) => update(&mut admin, &name, grow_partitions_to, &set, &delete)
            .await
            .map(|()| {
                tracing::info!(topic = %name, ?grow_partitions_to, ?set, ?delete, "topic updated");
            }),
    };
    let previous_change = topic
        .status
        .as_ref()
        .and_then(|s| s.replicas_change.as_ref());
    // Reassignment state is asked for only when partition 0's factor differs from the spec or
    // a change is under way (or was refused and may fit now): not on every resync.
    let replicas_differ = |want: i32| {
        current
            .as_ref()
            .is_some_and(|c| c.info.replication_factor != want)
            || previous_change.is_some()
    };
    let outcome = match (outcome, topic.spec.replicas) {
        (Ok(()), Some(want)) if current.is_some() && replicas_differ(want) => {
            let throttle = kafka.reassignment_throttle();
            topic_replicas::converge(&mut admin, &name, want, previous_change, throttle)
                .await
                .map(Some)
        }
        (outcome, _) => outcome.map(|()| None),
    };
    match outcome {
        Ok(replicas) => {
            let replicas = replicas.unwrap_or_default();
            if let Some(note) = &replicas.started {
                ctx.event(
                    topic.as_ref(),
                    false,
                    "ReplicationFactorChanging",
                    note.clone(),
                )
                .await;
            }
            if replicas.finished {
                ctx.event(
                    topic.as_ref(),
                    false,
                    "ReplicationFactorChanged",
                    format!(
                        "topic {name} has {} replicas per partition",
                        topic.spec.replicas.unwrap_or_default()
                    ),
                )
                .await;
            }
            let refused = replicas
                .status
                .as_ref()
                .is_some_and(|s| s.state == "refused");
            if refused
                && topic
                    .status
                    .as_ref()
                    .and_then(|s| s.replicas_change.as_ref())
                    != replicas.status.as_ref()
            {
                ctx.metrics
                    .refusals
                    .with_label_values(&["ReplicationFactorTooLarge"])
                    .inc();
                for w in &replicas.warnings {
                    ctx.event(
                        topic.as_ref(),
                        true,
                        "ReplicationFactorTooLarge",
                        w.message.clone().unwrap_or_default(),
                    )
                    .await;
                }
            }
            let mut conditions = vec![Condition::ready()];
            conditions.extend(replicas.warnings);
            write_full_status(&api, &topic, conditions, topic_id, replicas.status).await?;
            Ok(Action::requeue(if replicas.moving {
                super::roller::ROLL_RECHECK
            } else {
                RESYNC
            }))
        }
        Err(e @ AdminError::Kafka { .. }) => {
            let reason = match e.kafka_error() {
                Some("INVALID_CONFIG") => "InvalidConfig",
                Some("INVALID_REPLICATION_FACTOR") => "InvalidReplicationFactor",
                Some("INVALID_PARTITIONS") => "InvalidPartitions",
                _ => "BrokerRefused",
            };
            let message = format!("topic {name} was not changed: {e}");
            ctx.event(topic.as_ref(), true, reason, message.clone())
                .await;
            write_status(
                &api,
                &topic,
                vec![Condition::not_ready(reason, message)],
                topic_id,
            )
            .await?;
            Ok(Action::requeue(RESYNC))
        }
        Err(e) => unreachable(&api, &topic, e).await,
    }
}

/// Config first (validated before anything is changed), then partitions.
async fn update(
    admin: &mut crate::kafka_admin::KafkaAdmin,
    name: &str,
    grow_partitions_to: Option<i32>,
    set: &BTreeMap<String, String>,
    delete: &[String],
) -> Result<(), AdminError> {
    if !set.is_empty() || !delete.is_empty() {
        admin.alter_topic_config(name, set, delete, true).await?;
    }
    if let Some(count) = grow_partitions_to {
        admin.create_partitions(name, count).await?;
    }
    if !set.is_empty() || !delete.is_empty() {
        admin.alter_topic_config(name, set, delete, false).await?;
    }
    Ok(())
}

/// The NotReady reason for an admin failure: the brokers were not reached, or they answered
/// with an error (e.g. TOPIC_AUTHORIZATION_FAILED), as the KafkaUser reconciler says it.
fn admin_failure_reason(error: &AdminError) -> &'static str {
    match error {
        AdminError::Kafka { .. } => "BrokerRefused",
        _ => "BrokersUnreachable",
    }
}

async fn unreachable(
    api: &Api<KafkaTopic>,
    topic: &KafkaTopic,
    error: AdminError,
) -> Result<Action, Error> {
    let c = Condition::not_ready(admin_failure_reason(&error), error.to_string());
    write_status(api, topic, vec![c], None).await?;
    Err(Error::Admin(error))
}

async fn cleanup(topic: Arc<KafkaTopic>, ctx: &Context) -> Result<Action, Error> {
    let name = topic.topic_name();
    let kafka = match owning_cluster(&ctx.client, topic.as_ref()).await {
        Ok(k) => k,
        Err(problem) => {
            // No cluster, no topic to delete: let the resource go.
            tracing::info!(topic = %name, reason = problem.reason, "cluster gone; releasing KafkaTopic");
            return Ok(Action::await_change());
        }
    };
    if kafka.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let mut admin = connect_admin(&kafka, &ctx.client).await?;
    admin.delete_topic(&name).await?;
    ctx.event(
        topic.as_ref(),
        false,
        "TopicDeleted",
        format!("deleted topic {name}"),
    )
    .await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka_admin::TopicInfo;

    #[test]
    fn refusals_are_not_called_unreachable() {
        let refused = AdminError::Kafka {
            code: 29,
            name: "TOPIC_AUTHORIZATION_FAILED".into(),
            message: None,
        };
        assert_eq!(admin_failure_reason(&refused), "BrokerRefused");
        let unreachable = AdminError::Unreachable {
            address: "b:9091".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(admin_failure_reason(&unreachable), "BrokersUnreachable");
    }

    fn topic(yaml: &str) -> KafkaTopic {
        KafkaTopic::new("orders", serde_yaml::from_str(yaml).unwrap())
    }

    fn current(partitions: i32, rf: i32, overrides: &[(&str, &str)]) -> TopicDescription {
        TopicDescription {
            info: TopicInfo {
                id: "id".into(),
                partitions,
                replication_factor: rf,
            },
            overrides: overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn missing_topic_is_created_with_rendered_config() {
        let t = topic(
            "{partitions: 6, replicas: 3, config: {retention.ms: 3600000, cleanup.policy: delete}}",
        );
        let p = plan(&t, None);
        assert_eq!(
            p.change,
            Some(TopicChange::Create {
                partitions: Some(6),
                replicas: Some(3),
                config: BTreeMap::from([
                    ("cleanup.policy".into(), "delete".into()),
                    ("retention.ms".into(), "3600000".into())
                ]),
            })
        );
        assert_eq!(t.topic_name(), "orders");
    }

    #[test]
    fn partitions_grow_and_config_converges_exactly() {
        let t = topic("{partitions: 8, config: {retention.ms: 1000}}");
        let now = current(4, 1, &[("retention.ms", "5"), ("segment.bytes", "1048576")]);
        let p = plan(&t, Some(&now));
        assert_eq!(
            p.change,
            Some(TopicChange::Update {
                grow_partitions_to: Some(8),
                set: BTreeMap::from([("retention.ms".into(), "1000".into())]),
                delete: vec!["segment.bytes".into()],
            })
        );
    }

    #[test]
    fn matching_topic_needs_nothing() {
        let t = topic("{partitions: 4, replicas: 1, config: {retention.ms: 1000}}");
        let p = plan(&t, Some(&current(4, 1, &[("retention.ms", "1000")])));
        assert_eq!(p, TopicPlan::default());
    }

    #[test]
    fn partition_decrease_is_refused_and_changes_nothing() {
        let t = topic("{partitions: 2, config: {retention.ms: 1}}");
        let p = plan(&t, Some(&current(4, 1, &[])));
        assert!(p.change.is_none());
        let refusal = p.refusal.unwrap();
        assert_eq!(refusal.type_, "NotReady");
        assert_eq!(
            refusal.reason.as_deref(),
            Some("PartitionDecreaseNotSupported")
        );
        assert!(refusal.message.unwrap().contains("has 4 partitions"));
    }

    #[test]
    fn replication_factor_changes_are_not_config_changes() {
        // spec.replicas is converged by a reassignment (topic_replicas), not by this plan.
        let t = topic("{partitions: 4, replicas: 3}");
        assert_eq!(plan(&t, Some(&current(4, 1, &[]))), TopicPlan::default());
    }

    #[test]
    fn reassignment_throttle_lists_are_the_operators() {
        // Set by a running reassignment: the topic's own config diff leaves them alone...
        let t = topic("{partitions: 4, config: {retention.ms: 1000}}");
        let now = current(
            4,
            1,
            &[
                ("retention.ms", "1000"),
                (throttle::FOLLOWER_REPLICAS, "0:3"),
                (throttle::LEADER_REPLICAS, "0:0"),
            ],
        );
        assert_eq!(plan(&t, Some(&now)), TopicPlan::default());
        // ...and a KafkaTopic cannot claim them.
        let t = topic("{config: {follower.replication.throttled.replicas: '*'}}");
        let refusal = plan(&t, None).refusal.unwrap();
        assert_eq!(refusal.reason.as_deref(), Some("InvalidConfig"));
        assert!(refusal.message.unwrap().contains("throttleBytesPerSecond"));
    }

    #[test]
    fn nested_config_values_are_refused() {
        let t = topic("{config: {retention.ms: {a: 1}}}");
        let p = plan(&t, None);
        assert_eq!(p.refusal.unwrap().reason.as_deref(), Some("InvalidConfig"));
    }
}
