//! The log's side of transactions (KIP-98): writing the commit/abort markers the transaction
//! coordinator sends as leader, and the reads `read_committed` consumers need — how far the log
//! is stable and which aborted transactions a fetch overlaps. The state itself is kept with the
//! producer state (`txn_state`), updated by every append path (leader, follower, recovery).

use super::{AppendError, AppendOutcome, PartitionLog};
use crate::log::batch::BatchHeader;
use crate::log::txn_marker::{self, MarkerType};
use crate::protocol::errors::ErrorCode;

impl PartitionLog {
    /// Writes a COMMIT (`commit`) or ABORT marker for `producer_id` as leader and closes the
    /// producer's open transaction here (a marker with none open is written and changes
    /// nothing, so a retried marker is harmless). An epoch older than the one this partition
    /// knows is refused with INVALID_PRODUCER_EPOCH, as Kafka does; a newer one fences the
    /// producer's older epoch here.
    ///
    /// The caller must then call `Partition::on_leader_append` (or `notify_appended`): the
    /// last stable offset may have moved, and `read_committed` fetches waiting for data are
    /// woken by that notification.
    pub fn append_txn_marker(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendOutcome, AppendError> {
        if producer_id < 0 || producer_epoch < 0 {
            return Err(AppendError::Protocol(ErrorCode::InvalidRecord));
        }
        if self
            .producers
            .epoch_of(producer_id)
            .is_some_and(|known| producer_epoch < known)
        {
            return Err(AppendError::Protocol(ErrorCode::InvalidProducerEpoch));
        }
        let kind = if commit {
            MarkerType::Commit
        } else {
            MarkerType::Abort
        };
        let bytes =
            txn_marker::encode(producer_id, producer_epoch, kind, coordinator_epoch, now_ms);
        let header = BatchHeader::parse(&bytes)
            .map_err(|_| AppendError::Protocol(ErrorCode::CorruptMessage))?;
        self.write(&bytes, &[header], leader_epoch, now_ms)
    }

    /// The first offset of the oldest transaction still open here (never below the log
    /// start, as Kafka), or None when none is.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.producers
            .txns()
            .first_unstable_offset()
            .map(|o| o.max(self.log_start_offset))
    }

    /// Offsets below this are visible to `read_committed` consumers: `high_watermark`, held
    /// back at the first unstable offset.
    pub fn last_stable_offset(&self, high_watermark: i64) -> i64 {
        self.first_unstable_offset()
            .map_or(high_watermark, |o| o.min(high_watermark))
    }

    /// `(producer id, first offset)` of the aborted transactions a fetch from `fetch_offset`
    /// that stops at `upper_bound` overlaps (see `TxnState::aborted_txns`).
    pub fn aborted_txns(&self, fetch_offset: i64, upper_bound: i64) -> Vec<(i64, i64)> {
        self.producers
            .txns()
            .aborted_txns(fetch_offset, upper_bound)
    }

    /// Does `producer_id` have a transaction open on this partition?
    pub fn has_open_txn(&self, producer_id: i64) -> bool {
        self.producers.txns().has_open_txn(producer_id)
    }

    /// Every producer this partition knows: (id, epoch, last sequence, open transaction's
    /// first offset or -1), for DescribeProducers.
    pub fn active_producers(&self) -> Vec<(i64, i16, i32, i64)> {
        self.producers.active_producers()
    }

    /// The newest epoch this partition has seen from `producer_id` (data or marker).
    pub fn producer_epoch(&self, producer_id: i64) -> Option<i16> {
        self.producers.epoch_of(producer_id)
    }
}

#[cfg(test)]
mod tests;
