//! A transaction's state as the metadata image keeps it, and every change to it as a pure
//! function: what the coordinator's handlers decide (InitProducerId, AddPartitionsToTxn,
//! AddOffsetsToTxn, EndTxn, the timeout abort) and what the image applies when partition
//! leaders report their markers written. Nothing here does I/O, so the whole state machine is
//! unit-tested (`tests`) without a broker.
//!
//! The states and their order are Kafka's (`TransactionState`): Empty → Ongoing →
//! PrepareCommit/PrepareAbort → CompleteCommit/CompleteAbort → Ongoing … A Prepare state
//! lists the partitions still waiting for their marker; the image completes the transaction
//! when that list runs empty, and only then do its transactional offset commits become
//! committed offsets (or are dropped, for an abort).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::metadata::ReplicatedOffset;
use crate::protocol::errors::ErrorCode;

/// Where a transaction is (Kafka's state names, as ListTransactions and
/// DescribeTransactions report them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnStatus {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnStatus {
    pub const ALL: [TxnStatus; 6] = [
        TxnStatus::Empty,
        TxnStatus::Ongoing,
        TxnStatus::PrepareCommit,
        TxnStatus::PrepareAbort,
        TxnStatus::CompleteCommit,
        TxnStatus::CompleteAbort,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TxnStatus::Empty => "Empty",
            TxnStatus::Ongoing => "Ongoing",
            TxnStatus::PrepareCommit => "PrepareCommit",
            TxnStatus::PrepareAbort => "PrepareAbort",
            TxnStatus::CompleteCommit => "CompleteCommit",
            TxnStatus::CompleteAbort => "CompleteAbort",
        }
    }

    pub fn from_name(name: &str) -> Option<TxnStatus> {
        TxnStatus::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Markers are being written: the producer must wait (CONCURRENT_TRANSACTIONS).
    pub fn is_preparing(self) -> bool {
        matches!(self, TxnStatus::PrepareCommit | TxnStatus::PrepareAbort)
    }
}

/// One transactional id's state (Kafka's `TransactionMetadata`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransactionMeta {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last InitProducerId bump: a retried InitProducerId (whose answer
    /// was lost) names it and gets the current epoch again instead of being fenced.
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub status: TxnStatus,
    /// Partitions in the current transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// In a Prepare state: partitions whose marker is not written yet.
    pub pending_markers: BTreeSet<(String, i32)>,
    /// Groups whose offsets the transaction commits (AddOffsetsToTxn).
    pub groups: BTreeSet<String>,
    /// TxnOffsetCommit offsets by group, committed when the transaction commits.
    pub pending_offsets: BTreeMap<String, Vec<ReplicatedOffset>>,
    /// When the current transaction started (its first AddPartitions/AddOffsets), or -1.
    pub start_ms: i64,
    pub update_ms: i64,
    /// Bumped by every applied change: a coordinator's write names the version it was computed
    /// from plus one, and the image refuses it if something else changed the state meanwhile.
    pub version: u64,
    /// Who wrote the last coordinator change (a random id per write), so a coordinator can tell
    /// its own applied write from a competing one.
    pub writer: u64,
}

/// A producer epoch this close to the limit gets a new producer id instead of a bump (Kafka
/// does the same: the epoch must stay below `Short.MAX_VALUE`).
const LAST_USABLE_EPOCH: i16 = i16::MAX - 1;

/// What InitProducerId should do.
#[derive(Debug, Clone, PartialEq)]
pub enum InitDecision {
    /// Write this state and answer with its producer id and epoch.
    Ready(TransactionMeta),
    /// A transaction is still open: abort it (this state, its epoch bumped to fence the old
    /// producer) and answer CONCURRENT_TRANSACTIONS so the client retries.
    AbortFirst(TransactionMeta),
    /// A retry of an InitProducerId that already took effect: answer with the current state.
    Unchanged(TransactionMeta),
}

/// Does InitProducerId for `current` need a freshly allocated producer id?
pub fn needs_new_producer_id(current: Option<&TransactionMeta>) -> bool {
    current.is_none_or(|m| m.producer_epoch >= LAST_USABLE_EPOCH)
}

/// InitProducerId with a transactional id. `expected` is the producer id and epoch the client
/// already has (KIP-360, v3+; `None` for a new producer). `new_producer_id` must be given when
/// [`needs_new_producer_id`] says so.
pub fn init_producer_id(
    current: Option<&TransactionMeta>,
    transactional_id: &str,
    timeout_ms: i32,
    expected: Option<(i64, i16)>,
    new_producer_id: Option<i64>,
    now_ms: i64,
) -> Result<InitDecision, ErrorCode> {
    let Some(cur) = current else {
        let producer_id = new_producer_id.ok_or(ErrorCode::CoordinatorNotAvailable)?;
        return Ok(InitDecision::Ready(TransactionMeta {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch: 0,
            last_producer_epoch: -1,
            timeout_ms,
            status: TxnStatus::Empty,
            partitions: BTreeSet::new(),
            pending_markers: BTreeSet::new(),
            groups: BTreeSet::new(),
            pending_offsets: BTreeMap::new(),
            start_ms: -1,
            update_ms: now_ms,
            version: 0,
            writer: 0,
        }));
    };
    if let Some((pid, epoch)) = expected {
        let retried = cur.status == TxnStatus::Empty
            && pid == cur.producer_id
            && epoch == cur.last_producer_epoch;
        if retried {
            return Ok(InitDecision::Unchanged(cur.clone()));
        }
        if pid != cur.producer_id || epoch != cur.producer_epoch {
            return Err(ErrorCode::ProducerFenced);
        }
    }
    match cur.status {
        TxnStatus::PrepareCommit | TxnStatus::PrepareAbort => {
            Err(ErrorCode::ConcurrentTransactions)
        }
        TxnStatus::Ongoing => Ok(InitDecision::AbortFirst(prepare(
            cur,
            false,
            bumped(cur.producer_epoch),
            now_ms,
        ))),
        TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort => {
            let mut next = cur.clone();
            match new_producer_id {
                Some(pid) if cur.producer_epoch >= LAST_USABLE_EPOCH => {
                    next.producer_id = pid;
                    next.producer_epoch = 0;
                    next.last_producer_epoch = -1;
                }
                _ => {
                    next.last_producer_epoch = cur.producer_epoch;
                    next.producer_epoch = bumped(cur.producer_epoch);
                }
            }
            next.timeout_ms = timeout_ms;
            next.status = TxnStatus::Empty;
            clear_transaction(&mut next);
            next.update_ms = now_ms;
            Ok(InitDecision::Ready(next))
        }
    }
}

fn bumped(epoch: i16) -> i16 {
    if epoch >= LAST_USABLE_EPOCH {
        epoch
    } else {
        epoch + 1
    }
}

fn clear_transaction(meta: &mut TransactionMeta) {
    meta.partitions.clear();
    meta.pending_markers.clear();
    meta.groups.clear();
    meta.pending_offsets.clear();
    meta.start_ms = -1;
}

/// The producer id and epoch of a request must be the transaction's current ones.
fn check_producer(
    current: Option<&TransactionMeta>,
    producer_id: i64,
    producer_epoch: i16,
) -> Result<&TransactionMeta, ErrorCode> {
    let cur = current.ok_or(ErrorCode::InvalidProducerIdMapping)?;
    if cur.producer_id != producer_id {
        return Err(ErrorCode::InvalidProducerIdMapping);
    }
    if cur.producer_epoch != producer_epoch {
        return Err(ErrorCode::ProducerFenced);
    }
    Ok(cur)
}

/// Adds partitions and groups to the transaction (AddPartitionsToTxn, AddOffsetsToTxn),
/// starting one if none is open. `None`: everything is already in it, nothing to write.
pub fn add_to_transaction(
    current: Option<&TransactionMeta>,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &[(String, i32)],
    group: Option<&str>,
    now_ms: i64,
) -> Result<Option<TransactionMeta>, ErrorCode> {
    let cur = check_producer(current, producer_id, producer_epoch)?;
    if cur.status.is_preparing() {
        return Err(ErrorCode::ConcurrentTransactions);
    }
    let already = cur.status == TxnStatus::Ongoing
        && partitions.iter().all(|p| cur.partitions.contains(p))
        && group.is_none_or(|g| cur.groups.contains(g));
    if already {
        return Ok(None);
    }
    let mut next = cur.clone();
    if cur.status != TxnStatus::Ongoing {
        clear_transaction(&mut next);
        next.start_ms = now_ms;
        next.status = TxnStatus::Ongoing;
    }
    next.partitions.extend(partitions.iter().cloned());
    if let Some(g) = group {
        next.groups.insert(g.to_string());
    }
    next.update_ms = now_ms;
    Ok(Some(next))
}

/// Does a transactional offset commit for `group` belong to the transaction as it is?
pub fn check_offset_commit(
    current: Option<&TransactionMeta>,
    producer_id: i64,
    producer_epoch: i16,
    group: &str,
) -> Result<(), ErrorCode> {
    let cur = check_producer(current, producer_id, producer_epoch)?;
    if cur.status != TxnStatus::Ongoing || !cur.groups.contains(group) {
        return Err(ErrorCode::InvalidTxnState);
    }
    Ok(())
}

/// What EndTxn should do.
#[derive(Debug, Clone, PartialEq)]
pub enum EndDecision {
    /// Write this Prepare state; the client is answered once it is written.
    Prepare(TransactionMeta),
    /// A retry of an EndTxn already completed: answer success.
    AlreadyDone,
}

/// EndTxn: commit or abort the open transaction.
pub fn end_transaction(
    current: Option<&TransactionMeta>,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    now_ms: i64,
) -> Result<EndDecision, ErrorCode> {
    let cur = check_producer(current, producer_id, producer_epoch)?;
    match (cur.status, commit) {
        (TxnStatus::Ongoing, _) => Ok(EndDecision::Prepare(prepare(
            cur,
            commit,
            cur.producer_epoch,
            now_ms,
        ))),
        (TxnStatus::CompleteCommit, true) | (TxnStatus::CompleteAbort, false) => {
            Ok(EndDecision::AlreadyDone)
        }
        (TxnStatus::PrepareCommit, true) | (TxnStatus::PrepareAbort, false) => {
            Err(ErrorCode::ConcurrentTransactions)
        }
        _ => Err(ErrorCode::InvalidTxnState),
    }
}

/// A transaction open longer than its timeout is aborted, and its producer fenced by an epoch
/// bump (Kafka's `abortTimedOutTransactions`). `None` when it has not timed out.
pub fn timeout_abort(current: &TransactionMeta, now_ms: i64) -> Option<TransactionMeta> {
    let expired = current.status == TxnStatus::Ongoing
        && current.start_ms >= 0
        && now_ms - current.start_ms > i64::from(current.timeout_ms);
    expired.then(|| prepare(current, false, bumped(current.producer_epoch), now_ms))
}

fn prepare(cur: &TransactionMeta, commit: bool, epoch: i16, now_ms: i64) -> TransactionMeta {
    let mut next = cur.clone();
    next.status = if commit {
        TxnStatus::PrepareCommit
    } else {
        TxnStatus::PrepareAbort
    };
    if epoch != cur.producer_epoch {
        next.last_producer_epoch = cur.producer_epoch;
        next.producer_epoch = epoch;
    }
    next.pending_markers = cur.partitions.clone();
    next.update_ms = now_ms;
    next
}

/// A transactional id whose producer has been silent longer than
/// `transactional.id.expiration.ms`, with no transaction in flight, is forgotten (Kafka's
/// `TransactionStateManager` expiry); a producer coming back later starts a new id mapping.
pub fn expired(meta: &TransactionMeta, now_ms: i64, expiration_ms: i64) -> bool {
    matches!(
        meta.status,
        TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort
    ) && now_ms.saturating_sub(meta.update_ms) > expiration_ms
}

/// The image's side: forgets an expired transactional id, unless its state changed since
/// the coordinator decided (another version).
pub fn apply_remove(
    transactions: &mut BTreeMap<String, TransactionMeta>,
    transactional_id: &str,
    version: u64,
) {
    if transactions
        .get(transactional_id)
        .is_some_and(|m| m.version == version)
    {
        transactions.remove(transactional_id);
    }
}

/// The image's side: applies a coordinator's write if it was computed from the current
/// version (`restore`: a snapshot's state, applied as it is). Returns the offsets to commit
/// when the write completed a committed transaction.
pub fn apply_put(
    transactions: &mut BTreeMap<String, TransactionMeta>,
    meta: &TransactionMeta,
    restore: bool,
) -> Option<BTreeMap<String, Vec<ReplicatedOffset>>> {
    let current_version = transactions
        .get(&meta.transactional_id)
        .map_or(0, |m| m.version);
    if !restore && meta.version != current_version + 1 {
        return None;
    }
    let mut next = meta.clone();
    let committed = settle(&mut next);
    transactions.insert(next.transactional_id.clone(), next);
    committed
}

/// The image's side: partition leaders wrote (and replicated) these markers.
pub fn apply_markers_written(
    transactions: &mut BTreeMap<String, TransactionMeta>,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &[(String, i32)],
) -> Option<BTreeMap<String, Vec<ReplicatedOffset>>> {
    let meta = transactions.get_mut(transactional_id)?;
    if meta.producer_id != producer_id
        || meta.producer_epoch != producer_epoch
        || !meta.status.is_preparing()
    {
        return None;
    }
    for p in partitions {
        meta.pending_markers.remove(p);
    }
    meta.version += 1;
    settle(meta)
}

/// The image's side: a transactional offset commit, kept until the transaction ends.
/// Refused (false) unless it belongs to the transaction as it is now.
pub fn apply_offset_commit(
    transactions: &mut BTreeMap<String, TransactionMeta>,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    group: &str,
    offsets: &[ReplicatedOffset],
) -> bool {
    let current = transactions.get(transactional_id);
    if check_offset_commit(current, producer_id, producer_epoch, group).is_err() {
        return false;
    }
    let Some(meta) = transactions.get_mut(transactional_id) else {
        return false;
    };
    let pending = meta.pending_offsets.entry(group.to_string()).or_default();
    for o in offsets {
        pending.retain(|p| !(p.topic == o.topic && p.partition == o.partition));
        pending.push(o.clone());
    }
    meta.version += 1;
    true
}

/// The image's side: a deleted topic's partitions leave every transaction (their markers
/// can never be written). Returns the offsets of transactions this completed with a commit.
pub fn apply_topic_deleted(
    transactions: &mut BTreeMap<String, TransactionMeta>,
    topic: &str,
) -> Vec<BTreeMap<String, Vec<ReplicatedOffset>>> {
    let mut committed = Vec::new();
    for meta in transactions.values_mut() {
        let before = meta.partitions.len() + meta.pending_markers.len();
        meta.partitions.retain(|(t, _)| t != topic);
        meta.pending_markers.retain(|(t, _)| t != topic);
        if meta.partitions.len() + meta.pending_markers.len() != before {
            meta.version += 1;
            committed.extend(settle(meta));
        }
    }
    committed
}

/// Completes a Prepare state whose markers are all written. Returns the offsets to commit.
fn settle(meta: &mut TransactionMeta) -> Option<BTreeMap<String, Vec<ReplicatedOffset>>> {
    if !meta.status.is_preparing() || !meta.pending_markers.is_empty() {
        return None;
    }
    let commit = meta.status == TxnStatus::PrepareCommit;
    meta.status = if commit {
        TxnStatus::CompleteCommit
    } else {
        TxnStatus::CompleteAbort
    };
    let offsets = std::mem::take(&mut meta.pending_offsets);
    clear_transaction(meta);
    (commit && !offsets.is_empty()).then_some(offsets)
}

#[cfg(test)]
mod tests;
