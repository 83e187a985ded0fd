//! Writes transaction markers: every broker watches the image for transactions in a Prepare
//! state and writes the commit or abort marker into each of their partitions it leads, waits
//! until the marker is replicated (the high watermark passed it), then reports the partitions
//! done through the quorum (`TxnMarkersWritten`); the image completes the transaction when
//! none is left.
//!
//! Kafka's coordinator sends WriteTxnMarkers to each leader instead. Driving the markers from
//! the replicated state needs no coordinator-to-leader channel and survives any broker's
//! death: a new coordinator has nothing to resume, and a new leader sees the same pending
//! partitions its predecessor did. A marker is written only while the partition still has the
//! producer's transaction open, so a marker already written (by this leader before a failed
//! report, or by the previous leader and replicated here) is not written twice; the report
//! then waits until everything in the log is replicated, the marker included.

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::log::AppendError;
use crate::metadata::{MetadataCache, MetadataImage, MetadataRecord};
use crate::partition::Partition;
use crate::protocol::errors::ErrorCode;
use crate::replica_manager::ReplicaManager;
use crate::state::now_ms;

use super::state::TxnStatus;

/// How long a marker may take to be replicated before the pass gives up (and retries).
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(10);

/// What the marker writer uses.
pub struct MarkerServices {
    pub node_id: i32,
    pub image: Arc<MetadataCache>,
    pub replicas: Arc<ReplicaManager>,
    pub cluster: Arc<Cluster>,
}

/// The markers one transaction needs from this broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerWork {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub partitions: Vec<(String, i32)>,
}

/// Every pending marker in partitions `node` leads, by transaction.
pub fn markers_to_write(image: &MetadataImage, node: i32) -> Vec<MarkerWork> {
    image
        .transactions
        .values()
        .filter(|m| m.status.is_preparing())
        .filter_map(|m| {
            let partitions: Vec<(String, i32)> = m
                .pending_markers
                .iter()
                .filter(|(topic, index)| {
                    image
                        .topics
                        .get(topic)
                        .and_then(|t| t.partitions.get(usize::try_from(*index).ok()?))
                        .is_some_and(|p| p.leader == node)
                })
                .cloned()
                .collect();
            (!partitions.is_empty()).then(|| MarkerWork {
                transactional_id: m.transactional_id.clone(),
                producer_id: m.producer_id,
                producer_epoch: m.producer_epoch,
                commit: m.status == TxnStatus::PrepareCommit,
                partitions,
            })
        })
        .collect()
}

/// Runs until the task is cancelled (on shutdown).
pub async fn run(services: MarkerServices) {
    let mut published = services.image.subscribe();
    loop {
        // Marked seen before the image is read: an image published during the pass wakes the
        // wait below, so no Prepare transaction is missed.
        published.mark_unchanged();
        let work = markers_to_write(&services.image.snapshot(), services.node_id);
        if work.is_empty() {
            // Work only appears with a new image (a Prepare state, a leadership change).
            if published.changed().await.is_err() {
                return;
            }
            continue;
        }
        let mut progressed = false;
        for w in work {
            progressed |= write_and_report(&services, &w).await;
        }
        if !progressed {
            // Not leader yet, or replication is stuck: do not spin.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Writes one transaction's markers here and reports the replicated ones. True if any was.
async fn write_and_report(services: &MarkerServices, work: &MarkerWork) -> bool {
    let deadline = tokio::time::Instant::now() + REPLICATION_TIMEOUT;
    let mut waits = Vec::new();
    for (topic, index) in &work.partitions {
        let Ok(partition) = services.replicas.led_partition(topic, *index) else {
            continue;
        };
        if !partition.is_leader() {
            continue;
        }
        let marker = (work.producer_id, work.producer_epoch, work.commit);
        match write_marker(partition.clone(), marker).await {
            Ok(end) => waits.push(((topic.clone(), *index), partition, end)),
            Err(e) => tracing::warn!(
                topic = %topic,
                partition = index,
                transactional_id = %work.transactional_id,
                error = %e,
                "could not write a transaction marker; will retry"
            ),
        }
    }
    let mut done = Vec::new();
    for (tp, partition, end) in waits {
        if replicated(&partition, end, deadline).await {
            done.push(tp);
        }
    }
    if done.is_empty() {
        return false;
    }
    let record = MetadataRecord::TxnMarkersWritten {
        transactional_id: work.transactional_id.clone(),
        producer_id: work.producer_id,
        producer_epoch: work.producer_epoch,
        partitions: done,
    };
    match services.cluster.write(&[record]).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "could not report transaction markers; will retry");
            false
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum MarkerError {
    #[error("leadership changed")]
    NotLeader,
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error("the write was interrupted: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Writes a marker asked for directly (WriteTxnMarkers: `kafka-transactions abort` ending a
/// hanging transaction) into a partition this broker leads, and waits until it is replicated.
pub async fn write_requested(
    partition: Arc<Partition>,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    timeout: Duration,
) -> Result<(), ErrorCode> {
    let deadline = tokio::time::Instant::now() + timeout;
    let end = match write_marker(partition.clone(), (producer_id, producer_epoch, commit)).await {
        Ok(end) => end,
        Err(MarkerError::NotLeader) => return Err(ErrorCode::NotLeaderOrFollower),
        Err(MarkerError::Append(AppendError::Protocol(code))) => return Err(code),
        Err(e) => {
            tracing::warn!(error = %e, "could not write a requested transaction marker");
            return Err(ErrorCode::KafkaStorageError);
        }
    };
    if replicated(&partition, end, deadline).await {
        Ok(())
    } else if partition.is_leader() {
        Err(ErrorCode::RequestTimedOut)
    } else {
        Err(ErrorCode::NotLeaderOrFollower)
    }
}

/// Appends the marker `(producer id, epoch, commit)` if the partition still has the
/// producer's transaction open. Returns the log end after it: the offset the high watermark
/// must reach.
async fn write_marker(
    partition: Arc<Partition>,
    (pid, epoch, commit): (i64, i16, bool),
) -> Result<i64, MarkerError> {
    let p = partition.clone();
    let end = tokio::task::spawn_blocking(move || -> Result<(i64, bool), MarkerError> {
        let leader_epoch = p.leader_epoch();
        let mut log = p.log.write();
        if !p.is_leader() || p.leader_epoch() != leader_epoch {
            return Err(MarkerError::NotLeader);
        }
        // Written where the transaction is open, and where this producer's epoch is not
        // known yet: a bumped epoch (an abort that fences) must reach every partition of the
        // transaction, or a zombie could still open a transaction there.
        let needed =
            log.has_open_txn(pid) || log.producer_epoch(pid).is_none_or(|known| known < epoch);
        let appended = if needed {
            match log.append_txn_marker(pid, epoch, commit, 0, leader_epoch, now_ms()) {
                Ok(_) => true,
                // The partition knows a newer epoch of this producer: its transaction here
                // was ended by a later one, so there is nothing to mark.
                Err(AppendError::Protocol(ErrorCode::InvalidProducerEpoch)) => false,
                Err(e) => return Err(e.into()),
            }
        } else {
            false
        };
        Ok((log.log_end_offset(), appended))
    })
    .await??;
    if end.1 {
        partition.on_leader_append();
    }
    Ok(end.0)
}

/// Waits until the high watermark reaches `end` (the marker is committed), or the deadline.
async fn replicated(partition: &Partition, end: i64, deadline: tokio::time::Instant) -> bool {
    loop {
        let notified = partition.data_arrived.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if partition.high_watermark() >= end {
            return true;
        }
        if !partition.is_leader() {
            return false;
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep_until(deadline) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::metadata::image::partition_defaults;
    use crate::metadata::TopicMeta;
    use crate::txn::state::TransactionMeta;

    fn txn(id: &str, status: TxnStatus, pending: &[(&str, i32)]) -> TransactionMeta {
        TransactionMeta {
            transactional_id: id.into(),
            producer_id: 4,
            producer_epoch: 2,
            last_producer_epoch: 1,
            timeout_ms: 1000,
            status,
            partitions: pending.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
            pending_markers: pending.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
            groups: BTreeSet::new(),
            pending_offsets: Default::default(),
            start_ms: 0,
            update_ms: 0,
            version: 1,
            writer: 0,
        }
    }

    #[test]
    fn each_broker_writes_the_markers_of_the_partitions_it_leads() {
        let mut image = MetadataImage::default();
        let mut partitions = vec![
            partition_defaults(vec![1, 2]),
            partition_defaults(vec![2, 1]),
        ];
        partitions[0].leader = 1;
        partitions[1].leader = 2;
        image.topics.insert(
            "t".into(),
            TopicMeta {
                name: "t".into(),
                id: uuid::Uuid::new_v4(),
                partitions,
                configs: Default::default(),
            },
        );
        for m in [
            txn("commit", TxnStatus::PrepareCommit, &[("t", 0), ("t", 1)]),
            txn("abort", TxnStatus::PrepareAbort, &[("t", 1), ("gone", 0)]),
            txn("open", TxnStatus::Ongoing, &[("t", 0)]),
        ] {
            image.transactions.insert(m.transactional_id.clone(), m);
        }
        let on_1 = markers_to_write(&image, 1);
        assert_eq!(on_1.len(), 1);
        assert_eq!(on_1[0].transactional_id, "commit");
        assert!(on_1[0].commit);
        assert_eq!(on_1[0].partitions, vec![("t".to_string(), 0)]);
        let on_2 = markers_to_write(&image, 2);
        let ids: Vec<_> = on_2
            .iter()
            .map(|w| (w.transactional_id.as_str(), w.commit))
            .collect();
        assert_eq!(ids, vec![("abort", false), ("commit", true)]);
        assert!(markers_to_write(&image, 3).is_empty());
    }
}
