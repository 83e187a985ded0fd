//! The roller: restarts broker pods one at a time when they run an outdated pod template or a
//! manual rolling update is asked for, never making a partition unavailable that waiting would
//! keep available.
//!
//! The StatefulSet uses `updateStrategy: OnDelete`, so Kubernetes never restarts a broker on its
//! own; a pod whose `controller-revision-hash` differs from the StatefulSet's `updateRevision`
//! runs stale configuration, image, resources or template. One step per reconcile, with all
//! progress in `status.rollingUpdate` (written *before* a pod is deleted), so an operator that
//! crashed or lost its lease continues where the old one stopped and restarts no pod twice:
//!
//! 1. a broker restarting (`current`) must come back: a new pod, Ready, and in the ISR of every
//!    partition it hosts; until then the roll waits;
//! 2. the next stale pod ([`roll_order`]: unready first, the active controller last) is deleted
//!    only if no other broker is down and its broker's `/v1/restart-safety` allows it
//!    ([`decide`]); otherwise the roll waits and `blockedBy` says why.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::ResourceExt;

use crate::broker_http;
use crate::crd::condition::now_rfc3339;
use crate::crd::kafka::{RestartingBroker, RollingUpdateStatus, StorageType};
use crate::crd::{Condition, Kafka};
use crate::kafka_admin::ClusterLayout;
use crate::planning::roll::{
    classify_unsafe, decide, roll_order, Blocker, BrokerPod, Decision, RestartReason, Safety,
};
use crate::resources::statefulset::POD_INDEX_LABEL;
use crate::resources::{names, ADMIN_PORT};

use super::{Context, Error};

/// Annotation (value `true`) on the `Kafka` or on one broker pod asking for a restart.
pub const MANUAL_ROLLING_UPDATE: &str = "kafka.fjord.dev/manual-rolling-update";
/// The label the StatefulSet controller puts on each pod with the revision it was made from.
const REVISION_LABEL: &str = "controller-revision-hash";
/// How soon a waiting roll looks again.
pub const ROLL_RECHECK: Duration = Duration::from_secs(5);

/// What a roll step leaves behind for the reconciler.
#[derive(Default)]
pub struct RollOutcome {
    /// The new `status.rollingUpdate` (None: no roll in progress).
    pub status: Option<RollingUpdateStatus>,
    /// Warning conditions to show while this holds.
    pub warnings: Vec<Condition>,
    /// Look again this soon (a roll is in progress).
    pub recheck: Option<Duration>,
}

/// One broker pod, read from the API.
struct ObservedPod {
    state: BrokerPod,
    uid: String,
    terminating: bool,
    /// The pod itself carries the manual-rolling-update annotation.
    annotated: bool,
}

/// Runs one step of the rolling update of `kafka`'s brokers.
pub async fn step(
    kafka: &Kafka,
    ctx: &Context,
    sts: &StatefulSet,
    previous: Option<RollingUpdateStatus>,
    layout: Option<&ClusterLayout>,
) -> Result<RollOutcome, Error> {
    let ns = kafka.namespace().unwrap_or_default();
    let up_to_date =
        sts.status.as_ref().and_then(|s| s.observed_generation) == sts.metadata.generation;
    let Some(update_revision) = sts.status.as_ref().and_then(|s| s.update_revision.clone()) else {
        return Ok(keep(previous));
    };
    if !up_to_date {
        // The StatefulSet controller has not seen the latest template yet: no decisions.
        return Ok(keep(previous));
    }
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = crate::resources::selector_string(kafka);
    let listed = pods_api
        .list(&ListParams::default().labels(&selector))
        .await?;
    let manual_all = annotation_set(kafka.annotations());
    let mut pods: BTreeMap<i32, ObservedPod> = listed
        .items
        .iter()
        .filter_map(|pod| {
            let observed = observe(pod, &update_revision)?;
            Some((observed.state.ordinal, observed))
        })
        .collect();
    let name = kafka.name_any();
    let mut roll = previous.clone().unwrap_or_else(|| RollingUpdateStatus {
        started: now_rfc3339(),
        ..RollingUpdateStatus::default()
    });
    roll.blocked_by = None;

    // 1. The broker restarting now must be back before anything else happens.
    if let Some(current) = roll.current.clone() {
        match pods.get(&current.broker) {
            Some(pod) if pod.uid == current.pod_uid && !pod.terminating => {
                // Recorded but never deleted (the operator stopped in between): delete it now.
                delete_pod(&pods_api, kafka, current.broker, &current.pod_uid).await?;
                return Ok(progress(
                    roll,
                    format!("broker {} is restarting", current.broker),
                ));
            }
            Some(pod) if pod.uid != current.pod_uid && pod.state.ready => {
                let behind = layout
                    .map(|l| l.out_of_sync_on(current.broker))
                    .unwrap_or_else(|| vec!["(the brokers did not answer)".into()]);
                if !behind.is_empty() {
                    return Ok(progress(
                        roll,
                        format!(
                            "broker {} is back but not yet in the ISR of {}",
                            current.broker,
                            summarize(&behind)
                        ),
                    ));
                }
                roll.done.push(current.broker);
                roll.current = None;
            }
            _ => {
                return Ok(progress(
                    roll,
                    format!("waiting for broker {} to come back Ready", current.broker),
                ))
            }
        }
    }
    // A manual roll of the whole cluster covers every broker not restarted in it yet.
    for pod in pods.values_mut() {
        if pod.annotated || (manual_all && !roll.done.contains(&pod.state.ordinal)) {
            pod.state.reasons.insert(RestartReason::ManualRollingUpdate);
        }
    }

    // 2. What is left, in order.
    let states: Vec<BrokerPod> = pods.values().map(|p| p.state.clone()).collect();
    let controller = layout.and_then(|l| l.controller_id);
    let order = roll_order(&states, controller);
    ctx.metrics
        .roll_pending
        .with_label_values(&[&ns, &name])
        .set(order.len() as i64);
    if order.is_empty() {
        if previous.is_some() {
            ctx.event(
                kafka,
                false,
                "RollingUpdateFinished",
                format!(
                    "restarted brokers {:?} ({}), started {}",
                    roll.done, roll.reason, roll.started
                ),
            )
            .await;
        }
        if manual_all {
            clear_manual_annotation(ctx, kafka).await?;
        }
        return Ok(RollOutcome::default());
    }
    let reasons: BTreeSet<RestartReason> = states
        .iter()
        .flat_map(|p| p.reasons.iter().copied())
        .collect();
    roll.reason = reasons
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",");
    roll.pending = order.clone();
    let next = &pods[&order[0]];
    if next.state.ready {
        if let Some(down) = states
            .iter()
            .find(|p| !p.ready && p.ordinal != next.state.ordinal)
        {
            return Ok(waiting(
                roll,
                format!(
                    "broker {} is not ready; broker {} waits until it is",
                    down.ordinal, next.state.ordinal
                ),
            ));
        }
    }
    if next.terminating {
        return Ok(progress(
            roll,
            format!("broker {} is terminating", next.state.ordinal),
        ));
    }
    let ephemeral = kafka.spec.kafka.storage.type_ == StorageType::Ephemeral;
    let safety = safety_of(kafka, next.state.ordinal, layout, ephemeral).await;
    match decide(&next.state, &safety) {
        Decision::Wait(why) => Ok(waiting(roll, why)),
        Decision::Restart { warning } => {
            let reason = next
                .state
                .reasons
                .iter()
                .next()
                .map(|r| r.as_str())
                .unwrap_or("PodTemplateChanged");
            roll.current = Some(RestartingBroker {
                broker: next.state.ordinal,
                pod_uid: next.uid.clone(),
            });
            roll.pending.retain(|&o| o != next.state.ordinal);
            // Progress first: a new operator must know this pod was (being) restarted.
            super::patch_status(
                &Api::<Kafka>::namespaced(ctx.client.clone(), &ns),
                &name,
                &serde_json::json!({ "rollingUpdate": &roll }),
            )
            .await?;
            delete_pod(&pods_api, kafka, next.state.ordinal, &next.uid).await?;
            ctx.metrics
                .broker_restarts
                .with_label_values(&[reason])
                .inc();
            let note = match &warning {
                Some(w) => w.clone(),
                None => format!("restarting broker {} ({reason})", next.state.ordinal),
            };
            ctx.event(kafka, warning.is_some(), "RestartingBroker", note)
                .await;
            let mut outcome = progress(
                roll,
                format!(
                    "waiting for broker {} to come back Ready",
                    next.state.ordinal
                ),
            );
            if let Some(w) = warning {
                outcome
                    .warnings
                    .push(Condition::warning("RestartedUnsafely", w));
            }
            Ok(outcome)
        }
    }
}

/// No roll decisions this time; keep what the status says.
fn keep(previous: Option<RollingUpdateStatus>) -> RollOutcome {
    RollOutcome {
        recheck: previous.as_ref().map(|_| ROLL_RECHECK),
        status: previous,
        warnings: Vec::new(),
    }
}

/// The roll is blocked: `why` goes to `blockedBy` and a Warning condition.
fn waiting(mut roll: RollingUpdateStatus, why: String) -> RollOutcome {
    roll.blocked_by = Some(why.clone());
    RollOutcome {
        status: Some(roll),
        warnings: vec![Condition::warning("RollingUpdateBlocked", why)],
        recheck: Some(ROLL_RECHECK),
    }
}

/// The roll is progressing normally and waits for a broker to return: `blockedBy` only.
fn progress(mut roll: RollingUpdateStatus, why: String) -> RollOutcome {
    roll.blocked_by = Some(why);
    RollOutcome {
        status: Some(roll),
        warnings: Vec::new(),
        recheck: Some(ROLL_RECHECK),
    }
}

fn annotation_set(annotations: &BTreeMap<String, String>) -> bool {
    annotations
        .get(MANUAL_ROLLING_UPDATE)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The roller's view of one pod; `None` for pods that are not brokers of this StatefulSet.
fn observe(pod: &Pod, update_revision: &str) -> Option<ObservedPod> {
    let ordinal: i32 = pod
        .labels()
        .get(POD_INDEX_LABEL)
        .cloned()
        .or_else(|| pod.name_any().rsplit('-').next().map(str::to_string))?
        .parse()
        .ok()?;
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let crash_looping = status
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.as_deref())
                    == Some("CrashLoopBackOff")
            })
        });
    let mut reasons = BTreeSet::new();
    if pod.labels().get(REVISION_LABEL).map(String::as_str) != Some(update_revision) {
        reasons.insert(RestartReason::PodTemplateChanged);
    }
    Some(ObservedPod {
        annotated: annotation_set(pod.annotations()),
        state: BrokerPod {
            ordinal,
            ready,
            crash_looping,
            reasons,
        },
        uid: pod.uid().unwrap_or_default(),
        terminating: pod.metadata.deletion_timestamp.is_some(),
    })
}

/// Asks broker `ordinal` and classifies a "no" with the cluster layout.
async fn safety_of(
    kafka: &Kafka,
    ordinal: i32,
    layout: Option<&ClusterLayout>,
    ephemeral: bool,
) -> Safety {
    let address = format!("{}:{ADMIN_PORT}", names::pod_dns(kafka, ordinal));
    let answer = match broker_http::restart_safety(&address).await {
        Ok(answer) => answer,
        Err(e) => return Safety::Unknown(e),
    };
    if answer.safe {
        return Safety::Safe;
    }
    let Some(layout) = layout else {
        return Safety::Unsafe(format!(
            "{} partitions block it and the brokers did not describe them",
            answer.blocking.len()
        ));
    };
    let blockers: Vec<Blocker> = answer
        .blocking
        .iter()
        .map(|b| {
            let state = layout
                .partitions
                .iter()
                .find(|p| p.topic == b.topic && p.partition == b.partition);
            Blocker {
                partition: format!("{}-{}", b.topic, b.partition),
                replicas: state.map_or(0, |p| p.replicas.len()),
                fully_in_sync: state.is_some_and(|p| p.replicas.iter().all(|r| p.isr.contains(r))),
            }
        })
        .collect();
    classify_unsafe(answer.quorum_stopped.as_deref(), &blockers, ephemeral)
}

/// Deletes broker `ordinal`'s pod, but only the incarnation `uid` (never its replacement).
async fn delete_pod(api: &Api<Pod>, kafka: &Kafka, ordinal: i32, uid: &str) -> Result<(), Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&names::pod(kafka, ordinal), &params).await {
        Ok(_) => Ok(()),
        // Gone already, or already replaced (precondition failed): nothing left to delete.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes the manual-rolling-update annotation from the `Kafka` once its roll is done.
async fn clear_manual_annotation(ctx: &Context, kafka: &Kafka) -> Result<(), Error> {
    let api: Api<Kafka> =
        Api::namespaced(ctx.client.clone(), &kafka.namespace().unwrap_or_default());
    let patch =
        serde_json::json!({ "metadata": { "annotations": { MANUAL_ROLLING_UPDATE: null } } });
    api.patch(
        &kafka.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

fn summarize(items: &[String]) -> String {
    let shown: Vec<&str> = items.iter().take(5).map(String::as_str).collect();
    match items.len() {
        n if n > 5 => format!("{} and {} more", shown.join(", "), n - 5),
        _ => shown.join(", "),
    }
}
