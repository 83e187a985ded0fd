//! Idempotent-producer bookkeeping for one partition: the epoch and the last five batches of
//! every producer id, so retries are recognised as duplicates and gaps are refused. It also
//! carries the partition's transaction state (`txn_state`), which the same batches update
//! (transactional data opens a transaction, a marker closes it) and which is saved in the same
//! snapshot.

use std::collections::{HashMap, VecDeque};

use super::batch::BatchHeader;
use super::txn_marker::MarkerType;
use super::txn_state::TxnState;
use crate::protocol::errors::ErrorCode;

/// Kafka keeps metadata for the last five batches per producer (max.in.flight = 5).
const CACHED_BATCHES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedBatch {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<CachedBatch>,
}

/// Outcome of checking a batch against the producer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// New data: append it.
    Append,
    /// A retry of a batch already in the log at this base offset: answer success, append nothing.
    Duplicate {
        base_offset: i64,
    },
    Reject(ErrorCode),
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProducerStateMap {
    producers: HashMap<i64, ProducerEntry>,
    txns: TxnState,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

impl ProducerStateMap {
    pub fn check(&self, h: &BatchHeader) -> SequenceCheck {
        if !h.has_producer_id() {
            return SequenceCheck::Append;
        }
        let Some(entry) = self.producers.get(&h.producer_id) else {
            // Like Kafka: a producer this partition knows nothing of (its batches were deleted
            // by retention, or never reached this replica) starts at whatever sequence it
            // sends. Refusing would make the client bump its epoch and resend batches that
            // may already be stored elsewhere.
            return self.check_txn(h);
        };
        if h.producer_epoch < entry.epoch {
            return SequenceCheck::Reject(ErrorCode::InvalidProducerEpoch);
        }
        if h.producer_epoch > entry.epoch {
            return if h.base_sequence == 0 {
                self.check_txn(h)
            } else {
                SequenceCheck::Reject(ErrorCode::OutOfOrderSequenceNumber)
            };
        }
        let last_seq = h.last_sequence();
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last_seq)
        {
            return SequenceCheck::Duplicate {
                base_offset: dup.base_offset,
            };
        }
        match entry.batches.back() {
            Some(last) if h.base_sequence != next_seq(last.last_seq) => {
                SequenceCheck::Reject(ErrorCode::OutOfOrderSequenceNumber)
            }
            None if h.base_sequence != 0 => {
                SequenceCheck::Reject(ErrorCode::OutOfOrderSequenceNumber)
            }
            _ => self.check_txn(h),
        }
    }

    /// Like Kafka: while a producer's transaction is open here, its writes must belong to it
    /// (a plain batch would be committed or aborted with data it is not part of).
    fn check_txn(&self, h: &BatchHeader) -> SequenceCheck {
        if !h.is_transactional() && self.txns.has_open_txn(h.producer_id) {
            SequenceCheck::Reject(ErrorCode::InvalidTxnState)
        } else {
            SequenceCheck::Append
        }
    }

    /// Every producer this partition knows (DescribeProducers): id, epoch, last sequence
    /// (-1 when only markers were seen) and the start of its open transaction (-1 if none).
    pub fn active_producers(&self) -> Vec<(i64, i16, i32, i64)> {
        let mut out: Vec<_> = self
            .producers
            .iter()
            .map(|(id, e)| {
                let last_seq = e.batches.back().map_or(-1, |b| b.last_seq);
                let txn_start = self.txns.open_txn_start(*id).unwrap_or(-1);
                (*id, e.epoch, last_seq, txn_start)
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// The epoch this partition knows for `producer_id`.
    pub fn epoch_of(&self, producer_id: i64) -> Option<i16> {
        self.producers.get(&producer_id).map(|e| e.epoch)
    }

    pub fn txns(&self) -> &TxnState {
        &self.txns
    }

    /// The log start moved to `log_start_offset`: aborted transactions wholly below it go.
    pub fn drop_aborted_before(&mut self, log_start_offset: i64) {
        self.txns.drop_aborted_before(log_start_offset);
    }

    /// What is known of `producer_id`: its epoch and the (first, last) sequences of its
    /// cached batches, for diagnostics.
    pub fn describe(&self, producer_id: i64) -> Option<(i16, Vec<(i32, i32)>)> {
        self.producers.get(&producer_id).map(|e| {
            (
                e.epoch,
                e.batches
                    .iter()
                    .map(|b| (b.first_seq, b.last_seq))
                    .collect(),
            )
        })
    }

    /// Records an appended batch (its offsets already assigned); `marker` is what a control
    /// batch holds (see `txn_marker::marker_type`).
    pub fn record(&mut self, h: &BatchHeader, marker: Option<MarkerType>) {
        if !h.has_producer_id() {
            return;
        }
        if h.is_control() {
            self.record_marker(h, marker);
            return;
        }
        if h.is_transactional() {
            self.txns.on_data(h.producer_id, h.base_offset);
        }
        let entry = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(CachedBatch {
            first_seq: h.base_sequence,
            last_seq: h.last_sequence(),
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
        while entry.batches.len() > CACHED_BATCHES {
            entry.batches.pop_front();
        }
    }

    /// A control batch carries no sequence (its base sequence is -1), so it never enters the
    /// idempotence cache. A higher epoch is taken, as a data batch's would be: a marker the
    /// coordinator wrote with a bumped epoch fences the producer's older epoch here.
    fn record_marker(&mut self, h: &BatchHeader, marker: Option<MarkerType>) {
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::new(),
            });
        if h.producer_epoch > entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        if let Some(kind) = marker {
            self.txns.on_marker(h.producer_id, h.base_offset, kind);
        }
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Serializes the map (snapshot written when a segment rolls): the producers, then the
    /// transaction section (snapshots written before it existed end after the producers).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut ids: Vec<_> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let e = &self.producers[&id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.base_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        self.txns.encode_into(&mut out);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses a snapshot; None when it is damaged (the caller then rebuilds from the log).
    pub fn decode(data: &[u8]) -> Option<ProducerStateMap> {
        if data.len() < 8 {
            return None;
        }
        let (body, crc) = data.split_at(data.len() - 4);
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return None;
        }
        let mut r = Reader(body);
        let n = r.u32()?;
        let mut producers = HashMap::new();
        for _ in 0..n {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let count = r.u8()?;
            let mut batches = VecDeque::new();
            for _ in 0..count {
                batches.push_back(CachedBatch {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    base_offset: r.i64()?,
                    last_offset: r.i64()?,
                });
            }
            producers.insert(id, ProducerEntry { epoch, batches });
        }
        let txns = if r.0.is_empty() {
            TxnState::default()
        } else {
            let txns = TxnState::decode_from(&mut r)?;
            if !r.0.is_empty() {
                return None;
            }
            txns
        };
        Some(ProducerStateMap { producers, txns })
    }
}

/// Big-endian fields read off the front of a snapshot; None when too few bytes are left.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        if self.0.len() < N {
            return None;
        }
        let (a, b) = self.0.split_at(N);
        self.0 = b;
        a.try_into().ok()
    }
    pub(super) fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }
    pub(super) fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }
    pub(super) fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{self, test_support::make_batch};

    fn header(pid: i64, epoch: i16, seq: i32, n: usize, base: i64) -> BatchHeader {
        let mut b = make_batch(n, Some((pid, epoch, seq)), 0);
        batch::set_base_offset(&mut b, base, 0);
        BatchHeader::parse(&b).unwrap()
    }

    #[test]
    fn in_order_duplicate_and_gap() {
        let mut s = ProducerStateMap::default();
        let h0 = header(1, 0, 0, 3, 0);
        assert_eq!(s.check(&h0), SequenceCheck::Append);
        s.record(&h0, None);
        assert_eq!(s.check(&h0), SequenceCheck::Duplicate { base_offset: 0 });
        let h1 = header(1, 0, 3, 2, 3);
        assert_eq!(s.check(&h1), SequenceCheck::Append);
        s.record(&h1, None);
        let gap = header(1, 0, 7, 1, 5);
        assert_eq!(
            s.check(&gap),
            SequenceCheck::Reject(ErrorCode::OutOfOrderSequenceNumber)
        );
    }

    #[test]
    fn epochs_fence_and_reset() {
        let mut s = ProducerStateMap::default();
        s.record(&header(1, 2, 0, 1, 0), None);
        assert_eq!(
            s.check(&header(1, 1, 1, 1, 1)),
            SequenceCheck::Reject(ErrorCode::InvalidProducerEpoch)
        );
        assert_eq!(s.check(&header(1, 3, 0, 1, 1)), SequenceCheck::Append);
        assert_eq!(
            s.check(&header(1, 3, 5, 1, 1)),
            SequenceCheck::Reject(ErrorCode::OutOfOrderSequenceNumber)
        );
        assert_eq!(
            s.check(&header(9, 0, 4, 1, 1)),
            SequenceCheck::Append,
            "an unknown producer may start at any sequence"
        );
    }

    fn txn_header(pid: i64, epoch: i16, seq: i32, base: i64) -> BatchHeader {
        let mut h = header(pid, epoch, seq, 1, base);
        h.attributes |= 0x10;
        h
    }

    fn marker(
        pid: i64,
        epoch: i16,
        kind: MarkerType,
        at: i64,
    ) -> (BatchHeader, Option<MarkerType>) {
        let mut b = crate::log::txn_marker::encode(pid, epoch, kind, 0, 0);
        batch::set_base_offset(&mut b, at, 0);
        (
            BatchHeader::parse(&b).unwrap(),
            crate::log::txn_marker::marker_type(&b),
        )
    }

    #[test]
    fn markers_close_transactions_and_stay_out_of_the_idempotence_cache() {
        let mut s = ProducerStateMap::default();
        s.record(&txn_header(1, 0, 0, 0), None);
        s.record(&txn_header(1, 0, 1, 1), None);
        assert_eq!(s.txns().first_unstable_offset(), Some(0));
        assert_eq!(
            s.check(&header(1, 0, 2, 1, 2)),
            SequenceCheck::Reject(ErrorCode::InvalidTxnState),
            "a plain batch while the producer's transaction is open"
        );
        let (h, m) = marker(1, 0, MarkerType::Abort, 2);
        s.record(&h, m);
        s.record(&h, m);
        assert_eq!(s.txns().first_unstable_offset(), None);
        assert_eq!(s.txns().aborted_txns(0, 10), vec![(1, 0)]);
        assert_eq!(s.describe(1), Some((0, vec![(0, 0), (1, 1)])));
        // The next transaction continues the sequence.
        assert_eq!(s.check(&txn_header(1, 0, 2, 3)), SequenceCheck::Append);
    }

    #[test]
    fn a_marker_with_a_bumped_epoch_fences_the_older_one() {
        let mut s = ProducerStateMap::default();
        s.record(&txn_header(1, 0, 0, 0), None);
        let (h, m) = marker(1, 1, MarkerType::Abort, 1);
        s.record(&h, m);
        assert_eq!(s.describe(1), Some((1, vec![])));
        assert_eq!(
            s.check(&txn_header(1, 0, 1, 2)),
            SequenceCheck::Reject(ErrorCode::InvalidProducerEpoch)
        );
        assert_eq!(s.check(&txn_header(1, 1, 0, 2)), SequenceCheck::Append);
        // A marker for a producer this partition never saw creates it at the marker's epoch.
        let (h, m) = marker(9, 4, MarkerType::Commit, 3);
        s.record(&h, m);
        assert_eq!(s.epoch_of(9), Some(4));
        assert!(s.txns().aborted_txns(0, 10).len() == 1);
    }

    #[test]
    fn snapshot_round_trip_and_corruption() {
        let mut s = ProducerStateMap::default();
        for i in 0..7 {
            s.record(&header(5, 0, i, 1, i as i64), None);
        }
        let enc = s.encode();
        let back = ProducerStateMap::decode(&enc).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.producers[&5].batches.len(), CACHED_BATCHES);
        let mut bad = enc.clone();
        bad[5] ^= 1;
        assert!(ProducerStateMap::decode(&bad).is_none());
    }

    #[test]
    fn snapshot_carries_transactions_and_old_snapshots_have_none() {
        let mut s = ProducerStateMap::default();
        s.record(&txn_header(1, 0, 0, 0), None);
        s.record(&txn_header(2, 0, 0, 1), None);
        let (h, m) = marker(1, 0, MarkerType::Abort, 2);
        s.record(&h, m);
        s.record(&txn_header(3, 0, 0, 3), None);
        let enc = s.encode();
        let back = ProducerStateMap::decode(&enc).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.txns().first_unstable_offset(), Some(1));
        assert_eq!(back.txns().aborted_txns(0, 10), vec![(1, 0)]);
        // Damage inside the transaction section is caught by the CRC, and a section that does
        // not parse (here: cut short, CRC fixed up) makes the whole snapshot unusable.
        let mut bad = enc.clone();
        let at = enc.len() - 10;
        bad[at] ^= 1;
        assert!(ProducerStateMap::decode(&bad).is_none());
        let mut cut = enc[..enc.len() - 4 - 3].to_vec();
        let crc = crc32c::crc32c(&cut);
        cut.extend_from_slice(&crc.to_be_bytes());
        assert!(ProducerStateMap::decode(&cut).is_none());

        // The format before transactions: producers, then the CRC.
        let mut plain = ProducerStateMap::default();
        plain.record(&header(5, 2, 0, 3, 0), None);
        let mut old = Vec::new();
        old.extend_from_slice(&1u32.to_be_bytes());
        old.extend_from_slice(&5i64.to_be_bytes());
        old.extend_from_slice(&2i16.to_be_bytes());
        old.push(1);
        for v in [0i32, 2] {
            old.extend_from_slice(&v.to_be_bytes());
        }
        for v in [0i64, 2] {
            old.extend_from_slice(&v.to_be_bytes());
        }
        let crc = crc32c::crc32c(&old);
        old.extend_from_slice(&crc.to_be_bytes());
        let back = ProducerStateMap::decode(&old).unwrap();
        assert_eq!(back, plain);
        assert_eq!(back.txns(), &TxnState::default());
    }
}
