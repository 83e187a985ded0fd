//! The leader side of ISR management: lagging followers are proposed out, caught-up ones back
//! in, always through an `AlterPartition` record in the metadata log (conditional on the
//! partition epoch the proposal was computed from), so the ISR in metadata is never one the
//! cluster did not agree on. The same loop keeps the replication gauges current.
//!
//! Proposals found on the request path (a follower's fetch showing it caught up) go through
//! [`IsrChangeQueue`], Kafka's `AlterPartitionManager` in small: the Fetch handler hands the
//! change over and [`commit_queued`] writes it, so the handler needs no quorum.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::ControlServices;
use crate::metadata::MetadataRecord;
use crate::partition::{Partition, Role};
use crate::replication::isr::IsrProposal;
use crate::state::now_ms;

/// A leader's proposal to change one partition's ISR, computed from `partition_epoch`.
pub struct IsrChange {
    pub partition: Arc<Partition>,
    pub proposal: IsrProposal,
    pub partition_epoch: i32,
}

/// Hands ISR changes from the request path to [`commit_queued`]. Unbounded, but holds at most
/// one change per partition: a partition proposes again only after its request was cleared.
pub struct IsrChangeQueue {
    tx: mpsc::UnboundedSender<IsrChange>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<IsrChange>>>,
}

impl Default for IsrChangeQueue {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        IsrChangeQueue {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl IsrChangeQueue {
    /// Queues `change` to be committed. After shutdown it is dropped, and the partition
    /// proposes again on a later start.
    pub fn submit(&self, change: IsrChange) {
        if self.tx.send(change).is_err() {
            tracing::debug!("ISR change dropped: the broker is stopping");
        }
    }
}

/// Commits the changes handed to `queue`, each in the background as it arrives.
pub async fn commit_queued(control: ControlServices, queue: Arc<IsrChangeQueue>) {
    let Some(mut rx) = queue.rx.lock().take() else {
        tracing::error!("the ISR change queue is already being served");
        return;
    };
    while let Some(c) = rx.recv().await {
        request_change(&control, c.partition, c.proposal, c.partition_epoch);
    }
}

/// Writes the proposal as an `AlterPartition` in the background.
pub fn request_change(
    control: &ControlServices,
    partition: Arc<Partition>,
    proposal: IsrProposal,
    partition_epoch: i32,
) {
    let (shrink, isr) = match proposal {
        IsrProposal::Shrink(isr) => (true, isr),
        IsrProposal::Expand(isr) => (false, isr),
    };
    let record = MetadataRecord::AlterPartition {
        topic: partition.topic.to_string(),
        partition: partition.index,
        partition_epoch,
        isr: isr.clone(),
        leader: None,
    };
    let b = control.clone();
    control.tasks.spawn(async move {
        let cluster = &b.cluster;
        match cluster.write(std::slice::from_ref(&record)).await {
            Ok(()) => {
                let applied = partition.replica.lock().isr == isr;
                if applied {
                    let counter = if shrink {
                        &b.metrics.isr_shrinks
                    } else {
                        &b.metrics.isr_expands
                    };
                    counter.inc();
                    tracing::info!(
                        topic = %partition.topic,
                        partition = partition.index,
                        ?isr,
                        "{} ISR",
                        if shrink { "shrank" } else { "expanded" }
                    );
                } else {
                    // Stale (the partition changed meanwhile); the next check proposes again.
                    partition.clear_isr_request();
                }
            }
            Err(e) => {
                tracing::info!(topic = %partition.topic, partition = partition.index, error = %e, "ISR change not committed; will retry");
                partition.clear_isr_request();
            }
        }
    });
}

/// Periodically checks every led partition for lagging followers and refreshes the gauges.
pub async fn run(control: ControlServices) {
    let lag_max = control.config.cluster.replica_lag_time_max_ms;
    let every = Duration::from_millis((lag_max as u64 / 4).clamp(100, 2_000));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if control.is_stopping() {
            return;
        }
        let now = now_ms();
        for p in control.replicas.all_partitions() {
            if let Some((proposal, epoch)) = p.isr_proposal(now, lag_max) {
                request_change(&control, p, proposal, epoch);
            }
        }
        refresh_gauges(&control);
    }
}

/// Leader count, under-replicated and under-min-ISR partitions, follower lag, offline
/// partitions and fenced brokers, from this node's point of view.
pub fn refresh_gauges(control: &ControlServices) {
    let (mut leaders, mut under, mut under_min, mut lag) = (0i64, 0i64, 0i64, 0i64);
    for p in control.replicas.all_partitions() {
        let (replicas, isr, leading) = {
            let st = p.replica.lock();
            (
                st.replicas.len(),
                st.isr.len(),
                matches!(st.role, Role::Leader(_) | Role::Alone),
            )
        };
        if !leading {
            continue;
        }
        leaders += 1;
        if isr < replicas {
            under += 1;
        }
        let min = p.log.read().settings().min_insync_replicas as usize;
        if isr < min {
            under_min += 1;
        }
        lag = lag.max(p.max_follower_lag());
    }
    let m = &control.metrics;
    m.leader_count.set(leaders);
    m.under_replicated.set(under);
    m.under_min_isr.set(under_min);
    m.replica_max_lag.set(lag);
    let img = control.image.snapshot();
    let offline = img
        .topics
        .values()
        .flat_map(|t| t.partitions.iter())
        .filter(|p| p.leader < 0)
        .count();
    // Kafka reports offline partitions on the active controller only.
    let controller = control.is_controller();
    m.offline_partitions
        .set(if controller { offline as i64 } else { 0 });
    m.fenced_brokers
        .set(img.brokers.values().filter(|b| b.fenced).count() as i64);
}
