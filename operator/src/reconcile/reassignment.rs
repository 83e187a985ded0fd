//! How every day-2 operation moves replicas (scale-up balance, scale-down drain,
//! replication-factor change): throttle the copies, start the KIP-455 reassignment, measure how
//! much is left while it runs, and remove the throttle when nothing moves any more.
//!
//! One place, so the three operations cannot differ in how they throttle or clean up.

use crate::kafka_admin::{AdminError, ClusterLayout, KafkaAdmin, OngoingReassignment};
use crate::planning::assignment::PartitionReplicas;
use crate::planning::throttle::{bytes_left, throttled_replicas};

/// Throttles the copies `moves` need at `throttle` bytes/s (none when `None`), then starts the
/// reassignment.
pub async fn start(
    admin: &mut KafkaAdmin,
    layout: &ClusterLayout,
    moves: &[PartitionReplicas],
    throttle: Option<u64>,
) -> Result<(), AdminError> {
    if let Some(rate) = throttle {
        let lists = throttled_replicas(&layout.assignment(), moves);
        admin.set_reassignment_throttle(rate, &lists).await?;
    }
    admin.reassign(moves).await
}

/// Bytes the moving partitions still have to copy; `None` when some broker cannot be asked
/// (the operator may run where the brokers' advertised names do not resolve). Progress is a
/// report, never a reason to fail the reconcile.
pub async fn remaining_bytes(
    admin: &KafkaAdmin,
    layout: &ClusterLayout,
    moving: &[OngoingReassignment],
) -> Option<i64> {
    match crate::kafka_admin::copy_progress(admin, layout, moving).await {
        Ok(progress) => bytes_left(&progress).and_then(|b| i64::try_from(b).ok()),
        Err(e) => {
            tracing::debug!(error = %e, "reassignment progress in bytes unavailable");
            None
        }
    }
}

/// Removes the throttle from `topics` once their moves are done; the broker-wide rates too when
/// no reassignment at all is left (`others_moving` false).
pub async fn finish(
    admin: &mut KafkaAdmin,
    topics: &[String],
    others_moving: bool,
) -> Result<(), AdminError> {
    let cleared = admin
        .clear_reassignment_throttle(topics, !others_moving)
        .await?;
    if cleared > 0 {
        tracing::info!(topics = cleared, "reassignment throttle removed");
    }
    Ok(())
}
