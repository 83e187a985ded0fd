//! Replication-factor changes of a KafkaTopic: an edit of `spec.replicas` becomes a KIP-455
//! reassignment that adds replicas on the least loaded brokers (on racks the partition lacks) or
//! removes them (never the preferred leader), planned by [`crate::planning::assignment`] and
//! reported in `status.replicasChange` until the brokers finish it.
//!
//! A factor above the number of brokers is refused: nothing changes and a Warning says why.
//! New replicas copy under the owning Kafka's `spec.rebalance.throttleBytesPerSecond`, removed
//! again when the topic's moves finish ([`super::reassignment`]).

use crate::crd::topic::ReplicasChangeStatus;
use crate::crd::Condition;
use crate::kafka_admin::{AdminError, KafkaAdmin};
use crate::planning::assignment::{changes, plan, Goal, PlanError};

use super::reassignment;

/// Where the topic's replication factor stands after this reconcile.
#[derive(Debug, Default)]
pub struct ReplicasOutcome {
    pub status: Option<ReplicasChangeStatus>,
    pub warnings: Vec<Condition>,
    /// A reassignment was started now (for an event).
    pub started: Option<String>,
    /// A reassignment finished since the last look (for an event).
    pub finished: bool,
    /// Look again soon: replicas are moving.
    pub moving: bool,
}

/// Moves topic `name` toward `want` replicas per partition, copying new replicas at no more
/// than `throttle` bytes/s per broker (unthrottled when `None`).
pub async fn converge(
    admin: &mut KafkaAdmin,
    name: &str,
    want: i32,
    previous: Option<&ReplicasChangeStatus>,
    throttle: Option<u64>,
) -> Result<ReplicasOutcome, AdminError> {
    let (ongoing, others): (Vec<_>, Vec<_>) = admin
        .ongoing_reassignments()
        .await?
        .into_iter()
        .partition(|r| r.topic == name);
    if !ongoing.is_empty() {
        return Ok(ReplicasOutcome {
            status: Some(ReplicasChangeStatus {
                target_replicas: want,
                state: "ongoing".into(),
                message: Some(format!("{} partitions are moving", ongoing.len())),
            }),
            moving: true,
            ..ReplicasOutcome::default()
        });
    }
    let layout = admin.layout().await?;
    let current = layout.assignment();
    let ours: Vec<_> = current.iter().filter(|p| p.topic == name).collect();
    if ours.iter().all(|p| p.replicas.len() == want as usize) {
        let finished = previous.is_some_and(|p| p.state == "ongoing");
        // Whatever the (possibly older) status says: no throttle list outlives the moves.
        reassignment::finish(admin, &[name.to_string()], !others.is_empty()).await?;
        return Ok(ReplicasOutcome {
            finished,
            ..ReplicasOutcome::default()
        });
    }
    let goal = Goal {
        brokers: layout.brokers.clone(),
        replication_factors: [(name.to_string(), want.max(1) as usize)].into(),
        balance: false,
    };
    let target = match plan(&current, &goal) {
        Ok(target) => target,
        Err(e @ (PlanError::NotEnoughBrokers { .. } | PlanError::NoBrokers)) => {
            let message = format!(
                "spec.replicas {want} was not applied (nothing was changed): {e}; the cluster has \
                 {} brokers",
                layout.brokers.len()
            );
            return Ok(ReplicasOutcome {
                status: Some(ReplicasChangeStatus {
                    target_replicas: want,
                    state: "refused".into(),
                    message: Some(message.clone()),
                }),
                warnings: vec![Condition::warning("ReplicationFactorTooLarge", message)],
                ..ReplicasOutcome::default()
            });
        }
    };
    let moves = changes(&current, &target);
    reassignment::start(admin, &layout, &moves, throttle).await?;
    let from = ours.first().map_or(0, |p| p.replicas.len());
    Ok(ReplicasOutcome {
        status: Some(ReplicasChangeStatus {
            target_replicas: want,
            state: "ongoing".into(),
            message: Some(format!("{} partitions are moving", moves.len())),
        }),
        started: Some(format!(
            "changing the replication factor of topic {name} from {from} to {want} ({} partitions \
             reassigned)",
            moves.len()
        )),
        moving: true,
        ..ReplicasOutcome::default()
    })
}
