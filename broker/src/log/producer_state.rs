//! Idempotent-producer bookkeeping for one partition: the epoch and the last five batches of
//! every producer id, so retries are recognised as duplicates and gaps are refused.

use std::collections::{HashMap, VecDeque};

use super::batch::BatchHeader;
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
            return SequenceCheck::Append;
        };
        if h.producer_epoch < entry.epoch {
            return SequenceCheck::Reject(ErrorCode::InvalidProducerEpoch);
        }
        if h.producer_epoch > entry.epoch {
            return if h.base_sequence == 0 {
                SequenceCheck::Append
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
            _ => SequenceCheck::Append,
        }
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

    /// Records an appended batch (its offsets already assigned).
    pub fn record(&mut self, h: &BatchHeader) {
        if !h.has_producer_id() {
            return;
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

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Serializes the map (snapshot written when a segment rolls).
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
        Some(ProducerStateMap { producers })
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        if self.0.len() < N {
            return None;
        }
        let (a, b) = self.0.split_at(N);
        self.0 = b;
        a.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
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
        s.record(&h0);
        assert_eq!(s.check(&h0), SequenceCheck::Duplicate { base_offset: 0 });
        let h1 = header(1, 0, 3, 2, 3);
        assert_eq!(s.check(&h1), SequenceCheck::Append);
        s.record(&h1);
        let gap = header(1, 0, 7, 1, 5);
        assert_eq!(
            s.check(&gap),
            SequenceCheck::Reject(ErrorCode::OutOfOrderSequenceNumber)
        );
    }

    #[test]
    fn epochs_fence_and_reset() {
        let mut s = ProducerStateMap::default();
        s.record(&header(1, 2, 0, 1, 0));
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

    #[test]
    fn snapshot_round_trip_and_corruption() {
        let mut s = ProducerStateMap::default();
        for i in 0..7 {
            s.record(&header(5, 0, i, 1, i as i64));
        }
        let enc = s.encode();
        let back = ProducerStateMap::decode(&enc).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.producers[&5].batches.len(), CACHED_BATCHES);
        let mut bad = enc.clone();
        bad[5] ^= 1;
        assert!(ProducerStateMap::decode(&bad).is_none());
    }
}
