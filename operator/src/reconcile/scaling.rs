//! Scaling the brokers without losing or stranding replicas.
//!
//! Scale-down drains before it removes: the brokers being removed are exactly the highest
//! ordinals; their replicas are reassigned to the brokers that stay (planned by
//! [`crate::planning::assignment`], KIP-455 underneath), and only when the metadata shows them
//! hosting nothing does the StatefulSet shrink, one broker per step. If the brokers that stay
//! cannot hold some topic's replication factor, nothing changes and a Warning names the topics.
//!
//! Scale-up grows the StatefulSet at once; when every broker is registered and the cluster is
//! Ready (and `spec.rebalance.onScale` is not false), replicas and preferred leaders are
//! balanced over all brokers and, once moved, preferred leaders are elected.
//!
//! Progress lives in `status.rebalance`, so a new operator continues from it.

use k8s_openapi::api::apps::v1::StatefulSet;

use crate::crd::condition::now_rfc3339;
use crate::crd::kafka::RebalanceStatus;
use crate::crd::{Condition, Kafka};
use crate::kafka_admin::{ClusterLayout, KafkaAdmin};
use crate::planning::assignment::{changes, plan, BrokerSlot, Goal, PlanError};

use super::{reassignment, Context, Error};

/// What scaling decided for this reconcile.
pub struct ScaleOutcome {
    /// StatefulSet replicas to apply now.
    pub statefulset_replicas: i32,
    pub status: Option<RebalanceStatus>,
    pub warnings: Vec<Condition>,
    /// Replicas are moving or brokers are going: look again soon.
    pub busy: bool,
}

/// The brokers replicas may live on when `count` brokers run: ordinals below `count` that are
/// registered (with their racks).
pub fn placement_brokers(layout: &ClusterLayout, count: i32) -> Vec<BrokerSlot> {
    layout
        .brokers
        .iter()
        .filter(|b| b.id < count)
        .cloned()
        .collect()
}

/// One scaling step for `kafka` whose user asks for `desired` brokers (`voters`: the metadata
/// quorum's, which must keep running).
pub async fn step(
    kafka: &Kafka,
    ctx: &Context,
    (desired, voters): (i32, &[i32]),
    existing: Option<&StatefulSet>,
    admin: Option<&mut KafkaAdmin>,
    rolling: bool,
) -> Result<ScaleOutcome, Error> {
    let previous = kafka.status.as_ref().and_then(|s| s.rebalance.clone());
    let running = existing
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.replicas);
    let ready = existing
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let idle = |brokers: i32, message: Option<String>| ScaleOutcome {
        statefulset_replicas: desired,
        status: Some(RebalanceStatus {
            brokers,
            message,
            ..RebalanceStatus::default()
        }),
        warnings: Vec::new(),
        busy: false,
    };
    let Some(running) = running else {
        // A new cluster: its brokers start balanced (topics are created on all of them).
        let mut outcome = idle(desired, None);
        outcome.statefulset_replicas = desired.max(voters.iter().max().map_or(1, |v| v + 1));
        return Ok(outcome);
    };
    let balanced_for = previous
        .as_ref()
        .map_or(running.min(desired), |p| p.brokers);
    if desired < running {
        let pods = existing
            .and_then(|s| s.status.as_ref())
            .map_or(0, |s| s.replicas);
        return drain(
            kafka,
            ctx,
            (desired, voters),
            (running, pods),
            previous,
            admin,
        )
        .await;
    }
    let on_scale = kafka
        .spec
        .rebalance
        .as_ref()
        .and_then(|r| r.on_scale)
        .unwrap_or(true);
    if desired <= balanced_for || !on_scale {
        let mut outcome = idle(desired, previous.and_then(|p| p.message));
        if desired > balanced_for {
            outcome.status.as_mut().expect("idle has a status").message = Some(format!(
                "scaled to {desired} brokers without moving replicas (spec.rebalance.onScale: \
                 false)"
            ));
        }
        return Ok(outcome);
    }
    // Scale-up: wait for every broker, then balance.
    let waiting = |message: String| ScaleOutcome {
        statefulset_replicas: desired,
        status: Some(RebalanceStatus {
            brokers: balanced_for,
            reason: Some("ScaleUp".into()),
            message: Some(message),
            started: previous.as_ref().and_then(|p| p.started.clone()),
            partitions_total: previous.as_ref().map_or(0, |p| p.partitions_total),
            partitions_pending: previous.as_ref().map_or(0, |p| p.partitions_pending),
            bytes_left: previous.as_ref().and_then(|p| p.bytes_left),
            throttle_bytes_per_second: previous.as_ref().and_then(|p| p.throttle_bytes_per_second),
        }),
        warnings: Vec::new(),
        busy: true,
    };
    let Some(admin) = admin else {
        return Ok(waiting("waiting for the brokers to answer".into()));
    };
    if ready < desired || running < desired {
        return Ok(waiting(format!(
            "waiting for {desired} brokers to be ready ({ready} are)"
        )));
    }
    let layout = admin.layout().await?;
    let brokers = placement_brokers(&layout, desired);
    if (brokers.len() as i32) < desired {
        return Ok(waiting(format!(
            "waiting for {desired} brokers to register ({} have)",
            brokers.len()
        )));
    }
    let ongoing = admin.ongoing_reassignments().await?;
    let started = previous
        .as_ref()
        .is_some_and(|p| p.reason.as_deref() == Some("ScaleUp") && p.partitions_total > 0);
    if !ongoing.is_empty() {
        let bytes_left = reassignment::remaining_bytes(admin, &layout, &ongoing).await;
        let mut outcome = waiting(moving_message(ongoing.len(), bytes_left));
        if let Some(s) = outcome.status.as_mut() {
            s.partitions_pending = ongoing.len() as i32;
            // The status this reconcile read may predate the one that started the moves (the
            // cache lags a patch): the moves themselves say they were started.
            s.partitions_total = s.partitions_total.max(ongoing.len() as i32);
            s.bytes_left = bytes_left;
        }
        update_gauge(ctx, kafka, ongoing.len());
        return Ok(outcome);
    }
    update_gauge(ctx, kafka, 0);
    if started {
        settle(admin, &layout).await?;
        let total = previous.as_ref().map_or(0, |p| p.partitions_total);
        let message = format!(
            "balanced over {desired} brokers: {total} partitions moved, preferred leaders elected"
        );
        ctx.event(kafka, false, "RebalanceFinished", message.clone())
            .await;
        return Ok(idle(desired, Some(message)));
    }
    if rolling {
        return Ok(waiting("waiting for the rolling update to finish".into()));
    }
    let current = layout.assignment();
    let goal = Goal {
        brokers,
        balance: true,
        ..Goal::default()
    };
    let target = plan(&current, &goal).map_err(|e| Error::Invalid(e.to_string()))?;
    let moves = changes(&current, &target);
    if moves.is_empty() {
        // Also where a finished move ends up when the status read was older than its start:
        // leaders and throttles are settled here too (both are no-ops when nothing moved).
        settle(admin, &layout).await?;
        return Ok(idle(
            desired,
            Some(format!("{desired} brokers, already balanced")),
        ));
    }
    let throttle = kafka.reassignment_throttle();
    reassignment::start(admin, &layout, &moves, throttle).await?;
    let message = format!(
        "balancing replicas and leaders over {desired} brokers: {} partitions reassigned{}",
        moves.len(),
        throttle_note(throttle)
    );
    ctx.event(kafka, false, "RebalanceStarted", message.clone())
        .await;
    update_gauge(ctx, kafka, moves.len());
    Ok(ScaleOutcome {
        statefulset_replicas: desired,
        status: Some(RebalanceStatus {
            brokers: balanced_for,
            reason: Some("ScaleUp".into()),
            partitions_total: moves.len() as i32,
            partitions_pending: moves.len() as i32,
            started: Some(now_rfc3339()),
            bytes_left: None,
            throttle_bytes_per_second: throttle.and_then(|t| i64::try_from(t).ok()),
            message: Some(message),
        }),
        warnings: Vec::new(),
        busy: true,
    })
}

/// Scale-down: drain the brokers at `desired..running`, then remove them one at a time (`pods`:
/// how many pods the StatefulSet still has, so the next removal waits for the last).
async fn drain(
    kafka: &Kafka,
    ctx: &Context,
    (desired, voters): (i32, &[i32]),
    (running, pods): (i32, i32),
    previous: Option<RebalanceStatus>,
    admin: Option<&mut KafkaAdmin>,
) -> Result<ScaleOutcome, Error> {
    let started = previous
        .as_ref()
        .filter(|p| p.reason.as_deref() == Some("ScaleDown"))
        .and_then(|p| p.started.clone())
        .unwrap_or_else(now_rfc3339);
    let draining = previous
        .as_ref()
        .filter(|p| p.reason.as_deref() == Some("ScaleDown"));
    let total = draining.map_or(0, |p| p.partitions_total);
    let throttle = kafka.reassignment_throttle();
    let outcome =
        |replicas: i32, pending: usize, message: String, warnings: Vec<Condition>| ScaleOutcome {
            statefulset_replicas: replicas,
            status: Some(RebalanceStatus {
                brokers: running,
                reason: Some("ScaleDown".into()),
                partitions_total: total.max(pending as i32),
                partitions_pending: pending as i32,
                started: Some(started.clone()),
                bytes_left: None,
                throttle_bytes_per_second: throttle.and_then(|t| i64::try_from(t).ok()),
                message: Some(message),
            }),
            warnings,
            busy: true,
        };
    let leaving_voters: Vec<i32> = voters.iter().copied().filter(|&v| v >= desired).collect();
    if !leaving_voters.is_empty() {
        let blocking_topics = match admin {
            Some(admin) => {
                let layout = admin.layout().await?;
                let goal = Goal {
                    brokers: placement_brokers(&layout, desired),
                    ..Goal::default()
                };
                match plan(&layout.assignment(), &goal) {
                    Err(PlanError::NotEnoughBrokers { topics, .. }) => topics,
                    _ => Vec::new(),
                }
            }
            None => Vec::new(),
        };
        let mut why = vec![format!(
            "brokers {leaving_voters:?} are metadata quorum voters (fixed when the cluster was \
             created: {voters:?})"
        )];
        if !blocking_topics.is_empty() {
            why.push(format!(
                "the remaining brokers cannot hold {}",
                rf_blocking(&blocking_topics).join(", ")
            ));
        }
        return Ok(refuse(kafka, ctx, desired, running, previous, &why.join("; and ")).await);
    }
    if pods > running {
        return Ok(outcome(
            running,
            0,
            format!("waiting for broker {running}'s pod to terminate"),
            Vec::new(),
        ));
    }
    let Some(admin) = admin else {
        return Ok(outcome(
            running,
            0,
            "waiting for the brokers to answer before draining".into(),
            Vec::new(),
        ));
    };
    let ongoing = admin.ongoing_reassignments().await?;
    update_gauge(ctx, kafka, ongoing.len());
    let layout = admin.layout().await?;
    if !ongoing.is_empty() {
        let bytes_left = reassignment::remaining_bytes(admin, &layout, &ongoing).await;
        let mut out = outcome(
            running,
            ongoing.len(),
            format!(
                "draining brokers {desired}..{}: {}",
                running - 1,
                moving_message(ongoing.len(), bytes_left)
            ),
            Vec::new(),
        );
        if let Some(s) = out.status.as_mut() {
            s.bytes_left = bytes_left;
        }
        return Ok(out);
    }
    let leaving: Vec<i32> = (desired..running).collect();
    let hosted: usize = leaving.iter().map(|&b| layout.replicas_on(b)).sum();
    if hosted == 0 {
        // Not only when the status says moves ran: the status read may predate them.
        reassignment::finish(admin, &layout.topics(), false).await?;
        let next = running - 1;
        ctx.event(
            kafka,
            false,
            "BrokerRemoved",
            format!("broker {next} hosts no replicas; removing its pod"),
        )
        .await;
        let mut removing = outcome(
            next,
            0,
            format!(
                "brokers {desired}..{} hold no replicas; removing broker {next}",
                running - 1
            ),
            Vec::new(),
        );
        if next == desired {
            let message = format!("drained and removed brokers {desired}..{}", running - 1);
            ctx.event(kafka, false, "ScaleDownFinished", message.clone())
                .await;
            removing.status = Some(RebalanceStatus {
                brokers: desired,
                message: Some(message),
                ..RebalanceStatus::default()
            });
            removing.busy = false;
        }
        return Ok(removing);
    }
    let current = layout.assignment();
    let goal = Goal {
        brokers: placement_brokers(&layout, desired),
        ..Goal::default()
    };
    let min_isr_blocking = min_isr_above(admin, &layout, desired).await?;
    match plan(&current, &goal) {
        Err(PlanError::NotEnoughBrokers { topics, .. }) => {
            let mut blocking = rf_blocking(&topics);
            blocking.extend(min_isr_blocking);
            let why = format!(
                "the remaining brokers cannot hold {}; lower those topics' replication factor \
                 (and min.insync.replicas) first",
                blocking.join(", ")
            );
            Ok(refuse(kafka, ctx, desired, running, previous, &why).await)
        }
        Err(e) => Err(Error::Invalid(e.to_string())),
        Ok(_) if !min_isr_blocking.is_empty() => {
            let why = format!(
                "{} could no longer accept acks=all writes on {desired} brokers; lower \
                 min.insync.replicas first",
                min_isr_blocking.join(", ")
            );
            Ok(refuse(kafka, ctx, desired, running, previous, &why).await)
        }
        Ok(target) => {
            let moves = changes(&current, &target);
            reassignment::start(admin, &layout, &moves, throttle).await?;
            let message = format!(
                "draining brokers {desired}..{}: {} partitions reassigned{}",
                running - 1,
                moves.len(),
                throttle_note(throttle)
            );
            ctx.event(kafka, false, "DrainingBrokers", message.clone())
                .await;
            update_gauge(ctx, kafka, moves.len());
            let mut out = outcome(running, moves.len(), message, Vec::new());
            if let Some(s) = out.status.as_mut() {
                s.partitions_total = moves.len() as i32;
            }
            Ok(out)
        }
    }
}

/// Topics whose replication factor the remaining brokers cannot hold, for a refusal message.
fn rf_blocking(topics: &[(String, usize)]) -> Vec<String> {
    topics
        .iter()
        .map(|(t, rf)| format!("topic {t} (replication factor {rf})"))
        .collect()
}

/// Topics whose `min.insync.replicas` (in effect) exceeds `brokers`: with fewer brokers than
/// that, no ISR can be large enough and every `acks=all` write would fail.
async fn min_isr_above(
    admin: &mut KafkaAdmin,
    layout: &ClusterLayout,
    brokers: i32,
) -> Result<Vec<String>, Error> {
    let values = admin
        .topic_config_value(&layout.topics(), "min.insync.replicas")
        .await?;
    Ok(values
        .into_iter()
        .filter_map(|(topic, v)| {
            let min_isr: i32 = v.trim().parse().ok()?;
            (min_isr > brokers).then(|| format!("topic {topic} (min.insync.replicas {min_isr})"))
        })
        .collect())
}

/// "N partitions are moving" with the bytes still to copy when known.
fn moving_message(partitions: usize, bytes_left: Option<i64>) -> String {
    match bytes_left {
        Some(b) => format!(
            "{partitions} partitions are moving, {:.1} MiB left to copy",
            b as f64 / (1024.0 * 1024.0)
        ),
        None => format!("{partitions} partitions are moving"),
    }
}

/// ", copies throttled to X MiB/s" (or nothing when unthrottled).
fn throttle_note(throttle: Option<u64>) -> String {
    throttle.map_or(String::new(), |t| {
        format!(
            ", copies throttled to {:.1} MiB/s per broker",
            t as f64 / (1024.0 * 1024.0)
        )
    })
}

/// A refused scale-down: the StatefulSet keeps `running` brokers, a Warning says why (an event
/// and the refusals metric once per refusal, not per reconcile).
async fn refuse(
    kafka: &Kafka,
    ctx: &Context,
    desired: i32,
    running: i32,
    previous: Option<RebalanceStatus>,
    why: &str,
) -> ScaleOutcome {
    let message = format!(
        "scaling down to {desired} brokers is refused (nothing was changed, {running} keep \
         running): {why}"
    );
    let already = kafka.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.reason.as_deref() == Some("ScaleDownRefused"))
    });
    if !already {
        ctx.metrics
            .refusals
            .with_label_values(&["ScaleDownRefused"])
            .inc();
        ctx.event(kafka, true, "ScaleDownRefused", message.clone())
            .await;
    }
    ScaleOutcome {
        statefulset_replicas: running,
        status: previous,
        warnings: vec![Condition::warning("ScaleDownRefused", message)],
        busy: false,
    }
}

/// After a balancing move (or where one may have ended unseen): preferred leaders elected on
/// every partition and the reassignment throttle removed. Both are no-ops when nothing moved.
async fn settle(admin: &mut KafkaAdmin, layout: &ClusterLayout) -> Result<(), Error> {
    let all: Vec<(String, i32)> = layout
        .partitions
        .iter()
        .map(|p| (p.topic.clone(), p.partition))
        .collect();
    admin.elect_preferred_leaders(&all).await?;
    reassignment::finish(admin, &layout.topics(), false).await?;
    Ok(())
}

fn update_gauge(ctx: &Context, kafka: &Kafka, pending: usize) {
    use kube::ResourceExt;
    ctx.metrics
        .reassignment_pending
        .with_label_values(&[&kafka.namespace().unwrap_or_default(), &kafka.name_any()])
        .set(pending as i64);
}
