//! The transaction coordinator (Kafka's `TransactionCoordinator`): answers InitProducerId for
//! a transactional id, AddPartitionsToTxn, AddOffsetsToTxn and EndTxn, checks
//! TxnOffsetCommit, and aborts transactions that outlive their timeout.
//!
//! Its state is the metadata image's `transactions`, written through the metadata quorum
//! (Kafka writes the same state to `__transaction_state`): every node has it, so when the
//! coordinator's broker dies the next one (`MetadataImage::coordinator_for`, the same hash as
//! for groups) carries on from the last committed state, and the markers of a transaction in
//! a Prepare state are written by the partition leaders anyway ([`super::markers`]). Each
//! change is decided by the pure functions of [`super::state`] from the current image, then
//! written; the image applies it only if nothing changed the state meanwhile (its version),
//! and the coordinator tells its own applied write by the random `writer` id it put in.
//! Changes on one coordinator are serialised by an async lock held from the check to the
//! awaited write, as topic and security changes are.

use std::sync::Arc;

use crate::cluster::producer_ids::ProducerIdManager;
use crate::cluster::Cluster;
use crate::metadata::{MetadataCache, MetadataRecord, ReplicatedOffset};
use crate::protocol::errors::ErrorCode;
use crate::state::now_ms;

use super::state::{self, EndDecision, InitDecision, TransactionMeta};

pub struct TransactionCoordinator {
    node_id: i32,
    max_timeout_ms: i32,
    image: Arc<MetadataCache>,
    cluster: Arc<Cluster>,
    changes: tokio::sync::Mutex<()>,
}

impl TransactionCoordinator {
    pub fn new(
        node_id: i32,
        max_timeout_ms: i32,
        image: Arc<MetadataCache>,
        cluster: Arc<Cluster>,
    ) -> TransactionCoordinator {
        TransactionCoordinator {
            node_id,
            max_timeout_ms,
            image,
            cluster,
            changes: tokio::sync::Mutex::new(()),
        }
    }

    /// Does this broker coordinate `transactional_id` right now?
    pub fn coordinates(&self, transactional_id: &str) -> bool {
        self.image.snapshot().coordinator_for(transactional_id) == Some(self.node_id)
    }

    fn current(&self, transactional_id: &str) -> Option<TransactionMeta> {
        self.image
            .snapshot()
            .transactions
            .get(transactional_id)
            .cloned()
    }

    /// Every transaction this broker coordinates.
    pub fn coordinated(&self) -> Vec<TransactionMeta> {
        let image = self.image.snapshot();
        image
            .transactions
            .values()
            .filter(|m| image.coordinator_for(&m.transactional_id) == Some(self.node_id))
            .cloned()
            .collect()
    }

    /// One transaction's state, if this broker coordinates it.
    pub fn describe(&self, transactional_id: &str) -> Result<TransactionMeta, ErrorCode> {
        if !self.coordinates(transactional_id) {
            return Err(ErrorCode::NotCoordinator);
        }
        self.current(transactional_id)
            .ok_or(ErrorCode::TransactionalIdNotFound)
    }

    /// Writes a change computed from the state at `base` (`None`: no state yet) and confirms
    /// it was applied.
    async fn put(
        &self,
        base: Option<&TransactionMeta>,
        mut next: TransactionMeta,
    ) -> Result<(), ErrorCode> {
        next.version = base.map_or(0, |m| m.version) + 1;
        next.writer = rand_u64();
        let record = MetadataRecord::PutTransaction {
            meta: next.clone(),
            restore: false,
        };
        if let Err(e) = self.cluster.write(&[record]).await {
            tracing::warn!(transactional_id = %next.transactional_id, error = %e, "transaction state write failed");
            return Err(ErrorCode::CoordinatorNotAvailable);
        }
        match self.current(&next.transactional_id) {
            Some(m) if m.writer == next.writer => Ok(()),
            _ => Err(ErrorCode::ConcurrentTransactions),
        }
    }

    fn check_coordinator(&self, transactional_id: &str) -> Result<(), ErrorCode> {
        if self.coordinates(transactional_id) {
            Ok(())
        } else {
            Err(ErrorCode::NotCoordinator)
        }
    }

    /// InitProducerId with a transactional id: the producer id and (bumped) epoch.
    pub async fn init_producer_id(
        &self,
        producer_ids: &ProducerIdManager,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), ErrorCode> {
        self.check_coordinator(transactional_id)?;
        if timeout_ms <= 0 || timeout_ms > self.max_timeout_ms {
            return Err(ErrorCode::InvalidTransactionTimeout);
        }
        let _serial = self.changes.lock().await;
        let current = self.current(transactional_id);
        let new_producer_id = if state::needs_new_producer_id(current.as_ref()) {
            let id = producer_ids
                .next(&self.cluster, &self.image)
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "could not reserve a producer id");
                    ErrorCode::CoordinatorNotAvailable
                })?;
            Some(id)
        } else {
            None
        };
        match state::init_producer_id(
            current.as_ref(),
            transactional_id,
            timeout_ms,
            expected,
            new_producer_id,
            now_ms(),
        )? {
            InitDecision::Ready(next) => {
                let answer = (next.producer_id, next.producer_epoch);
                self.put(current.as_ref(), next).await?;
                Ok(answer)
            }
            InitDecision::AbortFirst(next) => {
                self.put(current.as_ref(), next).await?;
                Err(ErrorCode::ConcurrentTransactions)
            }
            InitDecision::Unchanged(m) => Ok((m.producer_id, m.producer_epoch)),
        }
    }

    /// AddPartitionsToTxn and AddOffsetsToTxn (`group`).
    pub async fn add(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
        group: Option<&str>,
    ) -> Result<(), ErrorCode> {
        self.check_coordinator(transactional_id)?;
        let _serial = self.changes.lock().await;
        let current = self.current(transactional_id);
        let next = state::add_to_transaction(
            current.as_ref(),
            producer_id,
            producer_epoch,
            partitions,
            group,
            now_ms(),
        )?;
        match next {
            Some(next) => self.put(current.as_ref(), next).await,
            None => Ok(()),
        }
    }

    /// Does this producer, in its transaction, verify this partition (AddPartitionsToTxn's
    /// verify-only form, v4+)?
    pub fn contains(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partition: &(String, i32),
    ) -> Result<bool, ErrorCode> {
        self.check_coordinator(transactional_id)?;
        let m = self
            .current(transactional_id)
            .ok_or(ErrorCode::InvalidProducerIdMapping)?;
        if m.producer_id != producer_id {
            return Err(ErrorCode::InvalidProducerIdMapping);
        }
        if m.producer_epoch != producer_epoch {
            return Err(ErrorCode::ProducerFenced);
        }
        Ok(m.status == state::TxnStatus::Ongoing && m.partitions.contains(partition))
    }

    /// EndTxn: the answer stands once the Prepare state is written; the markers follow.
    pub async fn end(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> Result<(), ErrorCode> {
        self.check_coordinator(transactional_id)?;
        let _serial = self.changes.lock().await;
        let current = self.current(transactional_id);
        match state::end_transaction(
            current.as_ref(),
            producer_id,
            producer_epoch,
            commit,
            now_ms(),
        )? {
            EndDecision::Prepare(next) => self.put(current.as_ref(), next).await,
            EndDecision::AlreadyDone => Ok(()),
        }
    }

    /// TxnOffsetCommit (asked by the group side): held in the transaction until it ends.
    pub async fn commit_offsets(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group: &str,
        offsets: Vec<ReplicatedOffset>,
    ) -> Result<(), ErrorCode> {
        let current = self.current(transactional_id);
        state::check_offset_commit(current.as_ref(), producer_id, producer_epoch, group)?;
        let record = MetadataRecord::TxnOffsetCommit {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch,
            group: group.to_string(),
            offsets: offsets.clone(),
        };
        if let Err(e) = self.cluster.write(&[record]).await {
            tracing::warn!(transactional_id, error = %e, "transactional offset commit failed");
            return Err(ErrorCode::CoordinatorNotAvailable);
        }
        // Applied only if the transaction was still open under this producer.
        let applied = self.current(transactional_id).is_some_and(|m| {
            m.pending_offsets
                .get(group)
                .is_some_and(|held| offsets.iter().all(|o| held.contains(o)))
        });
        if applied {
            Ok(())
        } else {
            Err(ErrorCode::InvalidTxnState)
        }
    }

    /// Forgets the transactional ids this broker coordinates that have been idle longer than
    /// `expiration_ms`. Returns how many.
    pub async fn remove_expired(&self, expiration_ms: i64) -> usize {
        let now = now_ms();
        let expired: Vec<MetadataRecord> = self
            .coordinated()
            .into_iter()
            .filter(|m| state::expired(m, now, expiration_ms))
            .map(|m| MetadataRecord::RemoveTransaction {
                transactional_id: m.transactional_id,
                version: m.version,
            })
            .collect();
        if expired.is_empty() {
            return 0;
        }
        let _serial = self.changes.lock().await;
        match self.cluster.write(&expired).await {
            Ok(()) => expired.len(),
            Err(e) => {
                tracing::warn!(error = %e, "could not remove expired transactional ids");
                0
            }
        }
    }

    /// Aborts every transaction this broker coordinates that outlived its timeout, fencing
    /// its producer. Returns how many were aborted.
    pub async fn abort_timed_out(&self) -> usize {
        let mut aborted = 0;
        for meta in self.coordinated() {
            let _serial = self.changes.lock().await;
            let Some(current) = self.current(&meta.transactional_id) else {
                continue;
            };
            let Some(next) = state::timeout_abort(&current, now_ms()) else {
                continue;
            };
            tracing::info!(
                transactional_id = %current.transactional_id,
                producer_id = current.producer_id,
                timeout_ms = current.timeout_ms,
                "aborting a transaction that outlived its timeout"
            );
            if self.put(Some(&current), next).await.is_ok() {
                aborted += 1;
            }
        }
        aborted
    }
}

/// A random id for one write (no `rand` dependency: a v4 UUID's random bits).
fn rand_u64() -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
}
