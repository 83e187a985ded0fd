//! What a follower does to its log: append the leader's batches exactly as they are (offsets
//! and leader epochs already assigned), and truncate a divergent tail after a leader change.

use std::io;

use super::PartitionLog;
use crate::log::batch::{self, BatchHeader, HEADER_LEN};
use crate::log::producer_state::ProducerStateMap;
use crate::log::segment::Segment;
use crate::log::txn_marker;
use crate::log::AppendError;
use crate::protocol::errors::ErrorCode;

/// What a replica append added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaAppend {
    pub batches: usize,
    pub bytes: usize,
}

impl PartitionLog {
    /// The newest leader epoch in this log.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// OffsetsForLeaderEpoch: `(epoch, end offset)` for the largest epoch <= `epoch`.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// Appends batches fetched from the leader. Batches this log already has are skipped; a
    /// trailing partial batch is ignored (the next fetch gets it whole). A batch may start after
    /// the log end offset (a compacted leader has gaps) but never before it: that is an error,
    /// and the caller must truncate and resync.
    pub fn append_replica(
        &mut self,
        records: &[u8],
        now_ms: i64,
    ) -> Result<ReplicaAppend, AppendError> {
        let mut pos = 0usize;
        let mut headers: Vec<(usize, BatchHeader)> = Vec::new();
        let leo = self.log_end_offset();
        let mut first = None;
        while pos + HEADER_LEN <= records.len() {
            let h = BatchHeader::parse(&records[pos..])
                .map_err(|_| AppendError::Protocol(ErrorCode::CorruptMessage))?;
            if pos + h.total_len > records.len() {
                break;
            }
            batch::validate(&records[pos..pos + h.total_len])
                .map_err(|_| AppendError::Protocol(ErrorCode::CorruptMessage))?;
            if h.last_offset() >= leo {
                first.get_or_insert(pos);
                headers.push((pos - first.unwrap_or(pos), h));
            }
            pos += h.total_len;
        }
        let Some(start) = first else {
            return Ok(ReplicaAppend::default());
        };
        let mut expected = leo;
        for (_, h) in &headers {
            // A gap is fine: a compacted leader no longer has the records in between (the
            // follower keeps the same offsets, with the same gap). Going back is not.
            if h.base_offset < expected {
                return Err(AppendError::Protocol(ErrorCode::OffsetOutOfRange));
            }
            expected = h.last_offset() + 1;
        }
        let bytes = &records[start..pos];
        self.maybe_roll(bytes.len() as u64, now_ms)?;
        for (_, h) in &headers {
            self.epochs
                .assign(h.partition_leader_epoch, h.base_offset)?;
        }
        let seg = self.segments.last_mut().expect("active segment");
        seg.append_many(bytes, &headers)?;
        for (at, h) in &headers {
            let marker = if h.is_control() {
                txn_marker::marker_type(&bytes[*at..])
            } else {
                None
            };
            self.producers.record(h, marker);
        }
        Ok(ReplicaAppend {
            batches: headers.len(),
            bytes: bytes.len(),
        })
    }

    /// Removes every batch at or after `offset` (the whole batch containing it). The log end
    /// offset becomes at most `offset`.
    pub fn truncate_to(&mut self, offset: i64, now_ms: i64) -> io::Result<()> {
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        if offset <= self.segments[0].base_offset {
            return self.truncate_fully_and_start_at(offset.max(self.log_start_offset), now_ms);
        }
        while self.segments.len() > 1
            && self
                .segments
                .last()
                .is_some_and(|s| s.base_offset >= offset)
        {
            let seg = self.segments.pop().expect("more than one");
            seg.delete_files()?;
        }
        let seg = self
            .segments
            .last()
            .expect("a log always has an active segment");
        if let Some(pos) = seg.position_of(offset)? {
            let (path, base) = (seg.path.clone(), seg.base_offset);
            seg.file.set_len(pos)?;
            for ext in ["index", "timeindex"] {
                let _ = std::fs::remove_file(path.with_extension(ext));
            }
            let interval = self.settings.index_interval_bytes;
            let (reopened, _) = Segment::open(&path, base, interval, true, now_ms)?;
            *self.segments.last_mut().expect("checked") = reopened;
        }
        self.after_truncation()
    }

    /// Empties the log and restarts it at `offset` (a follower far behind the leader's log
    /// start, or one whose whole log diverged).
    pub fn truncate_fully_and_start_at(&mut self, offset: i64, now_ms: i64) -> io::Result<()> {
        for seg in self.segments.drain(..) {
            seg.delete_files()?;
        }
        let interval = self.settings.index_interval_bytes;
        self.segments
            .push(Segment::create(&self.dir, offset, interval, now_ms)?);
        self.log_start_offset = offset;
        self.epochs.clear()?;
        self.after_truncation()
    }

    /// Rebuilds producer and transaction state from the remaining batches and drops state
    /// that referred to removed ones (a transaction whose marker was cut off is open again).
    fn after_truncation(&mut self) -> io::Result<()> {
        let end = self.log_end_offset();
        self.epochs.truncate_from_end(end)?;
        let mut producers = ProducerStateMap::default();
        for seg in &self.segments {
            for (h, marker) in seg.state_batches()? {
                producers.record(&h, marker);
            }
        }
        producers.drop_aborted_before(self.log_start_offset);
        self.producers = producers;
        let active_base = self.segments.last().map_or(0, |s| s.base_offset);
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name();
                let stale = name
                    .to_string_lossy()
                    .strip_suffix(".snapshot")
                    .and_then(|stem| stem.parse::<i64>().ok())
                    .is_some_and(|b| b > active_base);
                if stale {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::log::batch::test_support::make_batch;
    use crate::topic_config::TopicSettings;

    fn log(dir: &std::path::Path) -> PartitionLog {
        let settings = TopicSettings::resolve(
            &BTreeMap::from([("segment.bytes".to_string(), "2048".to_string())]),
            &BTreeMap::new(),
        );
        PartitionLog::open(dir, settings, 0).unwrap()
    }

    fn leader_append(l: &mut PartitionLog, epoch: i32, n: usize) {
        for _ in 0..n {
            let b = make_batch(3, None, 0);
            let h = batch::validate_all(&b).unwrap();
            l.append(&b, &h, epoch, 0).unwrap();
        }
    }

    #[test]
    fn a_follower_copies_the_leaders_batches_byte_for_byte() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut leader = log(a.path());
        leader_append(&mut leader, 0, 10);
        leader_append(&mut leader, 2, 10);
        let mut follower = log(b.path());
        let mut offset = 0;
        while offset < leader.log_end_offset() {
            let r = leader.read(offset, 1000, i64::MAX, true).unwrap();
            // Sending the same bytes twice is harmless.
            follower.append_replica(&r.records, 0).unwrap();
            follower.append_replica(&r.records, 0).unwrap();
            offset = follower.log_end_offset();
        }
        assert_eq!(follower.log_end_offset(), 60);
        assert_eq!(follower.end_offset_for_epoch(0), (0, 30));
        assert_eq!(follower.end_offset_for_epoch(1), (0, 30));
        assert_eq!(follower.latest_epoch(), Some(2));
        let lr = leader.read(0, 1 << 20, i64::MAX, true).unwrap();
        let fr = follower.read(0, 1 << 20, i64::MAX, true).unwrap();
        assert_eq!(lr.records, fr.records);
    }

    #[test]
    fn truncation_removes_the_divergent_tail_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = log(dir.path());
        leader_append(&mut l, 0, 30);
        leader_append(&mut l, 1, 30);
        assert!(l.segment_count() > 2);
        l.truncate_to(31, 0).unwrap();
        assert_eq!(
            l.log_end_offset(),
            30,
            "the batch holding 30..33 is removed whole"
        );
        assert_eq!(l.latest_epoch(), Some(0));
        leader_append(&mut l, 3, 2);
        assert_eq!(l.log_end_offset(), 36);
        drop(l);
        let l = log(dir.path());
        assert_eq!(l.log_end_offset(), 36);
        assert_eq!(l.end_offset_for_epoch(2), (0, 30));
        let r = l.read(30, 1 << 20, i64::MAX, true).unwrap();
        let hs = batch::validate_all(&r.records).unwrap();
        assert_eq!(hs[0].partition_leader_epoch, 3);
    }

    #[test]
    fn a_batch_reaching_back_is_refused_a_gap_kept_and_full_truncation_restarts_the_log() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut leader = log(dirs[0].path());
        leader_append(&mut leader, 0, 5);
        // Batches 9..=11 and 12..=14.
        let tail = leader.read(9, 1000, i64::MAX, true).unwrap();
        let mut straddling = log(dirs[1].path());
        straddling.truncate_fully_and_start_at(10, 0).unwrap();
        assert!(
            straddling.append_replica(&tail.records, 0).is_err(),
            "a batch starting before the log end"
        );
        straddling.truncate_fully_and_start_at(9, 0).unwrap();
        straddling.append_replica(&tail.records, 0).unwrap();
        assert_eq!(straddling.log_start_offset(), 9);
        assert_eq!(straddling.log_end_offset(), 15);
        // A compacted leader's gap: the batches keep their offsets.
        let mut gap = log(dirs[2].path());
        gap.append_replica(&tail.records, 0).unwrap();
        assert_eq!(gap.log_end_offset(), 15);
        let r = gap.read(0, 1000, i64::MAX, true).unwrap();
        assert_eq!(batch::validate_all(&r.records).unwrap()[0].base_offset, 9);
    }
}
