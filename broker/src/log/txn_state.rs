//! Transaction state of one partition (KIP-98): which producers have a transaction open here
//! (and from which offset), and which transactions ended in an abort (first and marker offset).
//!
//! It answers the two questions a `read_committed` fetch asks: how far data is stable (the
//! last stable offset stops at the first offset of the oldest open transaction) and which
//! aborted transactions overlap the data returned (the consumer drops those producers' records
//! until it reaches their ABORT marker). Kafka keeps the aborted list in a `.txnindex` file per
//! segment; here it lives in memory, is saved in the producer snapshot at each roll, and is
//! rebuilt with the producer state from a log scan otherwise. Entries go when the log start
//! passes their marker; compaction does not remove aborted data or markers (the cleaner keeps
//! control batches), so on a compacted-only log the list only grows with aborts.

use std::collections::HashMap;

use super::producer_state::Reader;
use super::txn_marker::MarkerType;

/// Tags the snapshot section, so a later format can be told apart.
const SECTION_VERSION: u8 = 1;

/// A transaction that ended with an ABORT marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    /// Base offset of the transaction's first batch on this partition.
    pub first_offset: i64,
    /// Offset of the ABORT marker.
    pub last_offset: i64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TxnState {
    /// Producer id -> base offset of its open transaction's first batch here.
    open: HashMap<i64, i64>,
    /// Sorted by `last_offset` (markers are recorded in log order).
    aborted: Vec<AbortedTxn>,
}

impl TxnState {
    /// A transactional data batch at `base_offset`: opens the producer's transaction here
    /// unless one is open already (its later batches do not move its start).
    pub fn on_data(&mut self, producer_id: i64, base_offset: i64) {
        self.open.entry(producer_id).or_insert(base_offset);
    }

    /// A marker at `offset` closes the producer's open transaction. A marker with nothing open
    /// (a retry the coordinator sent again, or a transaction that wrote nothing here) changes
    /// nothing.
    pub fn on_marker(&mut self, producer_id: i64, offset: i64, kind: MarkerType) {
        let Some(first_offset) = self.open.remove(&producer_id) else {
            return;
        };
        if kind == MarkerType::Abort {
            let txn = AbortedTxn {
                producer_id,
                first_offset,
                last_offset: offset,
            };
            let at = self.aborted.partition_point(|a| a.last_offset <= offset);
            self.aborted.insert(at, txn);
        }
    }

    /// The smallest first offset of any open transaction.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.open.values().copied().min()
    }

    pub fn has_open_txn(&self, producer_id: i64) -> bool {
        self.open.contains_key(&producer_id)
    }

    /// Where `producer_id`'s open transaction starts here, if it has one.
    pub fn open_txn_start(&self, producer_id: i64) -> Option<i64> {
        self.open.get(&producer_id).copied()
    }

    /// `(producer id, first offset)` of every aborted transaction a fetch of
    /// `fetch_offset..upper_bound` overlaps: its marker at or after the fetch offset, its first
    /// batch below the bound (Kafka's `collectAbortedTransactions`).
    pub fn aborted_txns(&self, fetch_offset: i64, upper_bound: i64) -> Vec<(i64, i64)> {
        let from = self
            .aborted
            .partition_point(|a| a.last_offset < fetch_offset);
        self.aborted[from..]
            .iter()
            .filter(|a| a.first_offset < upper_bound)
            .map(|a| (a.producer_id, a.first_offset))
            .collect()
    }

    /// Every aborted transaction, oldest marker first.
    pub fn aborted(&self) -> &[AbortedTxn] {
        &self.aborted
    }

    /// Forgets aborted transactions whose marker is below the log start: no fetch reaches them.
    pub fn drop_aborted_before(&mut self, log_start_offset: i64) {
        let gone = self
            .aborted
            .partition_point(|a| a.last_offset < log_start_offset);
        self.aborted.drain(..gone);
    }

    /// Appends the snapshot section: version, open transactions, aborted ones.
    pub(super) fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(SECTION_VERSION);
        let mut open: Vec<_> = self.open.iter().map(|(p, o)| (*p, *o)).collect();
        open.sort_unstable();
        out.extend_from_slice(&(open.len() as u32).to_be_bytes());
        for (pid, first) in open {
            out.extend_from_slice(&pid.to_be_bytes());
            out.extend_from_slice(&first.to_be_bytes());
        }
        out.extend_from_slice(&(self.aborted.len() as u32).to_be_bytes());
        for a in &self.aborted {
            out.extend_from_slice(&a.producer_id.to_be_bytes());
            out.extend_from_slice(&a.first_offset.to_be_bytes());
            out.extend_from_slice(&a.last_offset.to_be_bytes());
        }
    }

    /// Reads the section [`Self::encode_into`] wrote; None when it is damaged or of an unknown
    /// version.
    pub(super) fn decode_from(r: &mut Reader<'_>) -> Option<TxnState> {
        if r.u8()? != SECTION_VERSION {
            return None;
        }
        let mut state = TxnState::default();
        for _ in 0..r.u32()? {
            let pid = r.i64()?;
            let first = r.i64()?;
            state.open.insert(pid, first);
        }
        for _ in 0..r.u32()? {
            let txn = AbortedTxn {
                producer_id: r.i64()?,
                first_offset: r.i64()?,
                last_offset: r.i64()?,
            };
            if state
                .aborted
                .last()
                .is_some_and(|a| a.last_offset > txn.last_offset)
            {
                return None;
            }
            state.aborted.push(txn);
        }
        Some(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_commit_abort_and_duplicate_markers() {
        let mut t = TxnState::default();
        t.on_data(1, 10);
        t.on_data(1, 12);
        t.on_data(2, 11);
        assert_eq!(t.first_unstable_offset(), Some(10));
        t.on_marker(1, 13, MarkerType::Commit);
        assert!(!t.has_open_txn(1) && t.has_open_txn(2));
        assert_eq!(t.first_unstable_offset(), Some(11));
        t.on_marker(2, 14, MarkerType::Abort);
        // Retries of both markers change nothing.
        t.on_marker(1, 15, MarkerType::Commit);
        t.on_marker(2, 16, MarkerType::Abort);
        assert_eq!(t.first_unstable_offset(), None);
        assert_eq!(
            t.aborted(),
            &[AbortedTxn {
                producer_id: 2,
                first_offset: 11,
                last_offset: 14
            }]
        );
        assert_eq!(t.aborted_txns(0, 100), vec![(2, 11)]);
        assert_eq!(t.aborted_txns(14, 100), vec![(2, 11)]);
        assert!(
            t.aborted_txns(15, 100).is_empty(),
            "marker before the fetch"
        );
        assert!(t.aborted_txns(0, 11).is_empty(), "starts at the bound");
        t.drop_aborted_before(14);
        assert_eq!(t.aborted().len(), 1);
        t.drop_aborted_before(15);
        assert!(t.aborted().is_empty());
    }
}
