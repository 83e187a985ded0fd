//! The log of one partition: an ordered list of segments, offset assignment on append,
//! idempotent-producer checks, reads by offset and timestamp, roll, retention and recovery.
//! Transaction markers and the transaction state reads are in `txn`.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

mod cleaning;
mod replica;
mod txn;

pub use replica::ReplicaAppend;

use super::batch::{self, BatchHeader};
use super::epoch_cache::EpochCache;
use super::producer_state::{ProducerStateMap, SequenceCheck};
use super::segment::{self, Segment};
use super::txn_marker;
use crate::file_region::FileRegion;
use crate::protocol::errors::ErrorCode;
use crate::topic_config::TopicSettings;

pub struct PartitionLog {
    dir: PathBuf,
    settings: TopicSettings,
    /// Sorted by base offset; the last one is the active segment. Never empty.
    segments: Vec<Segment>,
    log_start_offset: i64,
    producers: ProducerStateMap,
    /// First offset of each leader epoch (answers OffsetsForLeaderEpoch).
    epochs: EpochCache,
    scratch: Vec<u8>,
    /// Told how long each roll took (the metrics' roll-time histogram).
    roll_observer: Option<RollObserver>,
    /// Compaction has cleaned the log below this offset (`cleaning`).
    cleaned_up_to: i64,
}

/// Receives the duration of every segment roll: sealing the active segment (its index files
/// and the producer snapshot, each written and synced) and creating the next one, the only
/// synchronous flushes on the write path (Kafka's LogFlushRateAndTimeMs counterpart).
pub type RollObserver = std::sync::Arc<dyn Fn(std::time::Duration) + Send + Sync>;

/// Result of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_append_time: i64,
    pub record_count: i64,
    pub bytes: usize,
    /// True when the batch was a retry of data already in the log.
    pub duplicate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("{0:?}")]
    Protocol(ErrorCode),
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
}

/// Bytes read for a fetch: whole batches only.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    pub records: Bytes,
}

fn snapshot_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(segment::file_name(base, "snapshot"))
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`. Sealed segments load their indexes; the active one is
    /// CRC-verified and cut at the first bad batch. Producer state comes from the snapshot taken
    /// when the active segment was created plus a scan of the active segment.
    pub fn open(dir: &Path, settings: TopicSettings, now_ms: i64) -> io::Result<PartitionLog> {
        std::fs::create_dir_all(dir)?;
        let mut bases: Vec<i64> = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".log") {
                if let Ok(b) = stem.parse::<i64>() {
                    bases.push(b);
                }
            } else if name.ends_with(".tmp") || name.ends_with(".cleaned") {
                // A write or a compaction pass a crash interrupted: the original is intact.
                let _ = std::fs::remove_file(dir.join(name.as_ref()));
            }
        }
        bases.sort_unstable();
        let interval = settings.index_interval_bytes;
        let mut segments = Vec::new();
        let mut producers = ProducerStateMap::default();
        let active_base = bases.last().copied();
        let snapshot = active_base
            .and_then(|b| std::fs::read(snapshot_path(dir, b)).ok())
            .and_then(|d| ProducerStateMap::decode(&d));
        let rebuild_producers = snapshot.is_none();
        if let Some(s) = snapshot {
            producers = s;
        }
        for (i, base) in bases.iter().enumerate() {
            let is_active = i + 1 == bases.len();
            let path = dir.join(segment::file_name(*base, "log"));
            // Without a producer snapshot every segment is scanned so state can be rebuilt.
            let (seg, report) = Segment::open(
                &path,
                *base,
                interval,
                is_active || rebuild_producers,
                now_ms,
            )?;
            if report.truncated_bytes > 0 {
                tracing::warn!(
                    dir = %dir.display(),
                    segment = base,
                    bytes = report.truncated_bytes,
                    "truncated invalid or torn tail of log segment"
                );
            }
            if is_active || rebuild_producers {
                for (h, marker) in &report.batches {
                    producers.record(h, *marker);
                }
            }
            if let Some(prev) = segments.last() {
                let prev: &Segment = prev;
                if seg.base_offset < prev.next_offset {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "segment {} overlaps the previous one in {}",
                            base,
                            dir.display()
                        ),
                    ));
                }
            }
            segments.push(seg);
        }
        if segments.is_empty() {
            segments.push(Segment::create(dir, 0, interval, now_ms)?);
        }
        let log_start_offset = segments[0].base_offset;
        producers.drop_aborted_before(log_start_offset);
        let log_end = segments.last().map_or(0, |s| s.next_offset);
        Ok(PartitionLog {
            dir: dir.to_path_buf(),
            settings,
            segments,
            log_start_offset,
            producers,
            epochs: EpochCache::open(dir, log_end),
            scratch: Vec::new(),
            roll_observer: None,
            cleaned_up_to: cleaning::read_checkpoint(dir),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn settings(&self) -> &TopicSettings {
        &self.settings
    }

    pub fn set_settings(&mut self, settings: TopicSettings) {
        self.settings = settings;
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a log always has an active segment")
    }

    /// Appends the validated batches in `records` (their headers in `headers`), assigning offsets.
    pub fn append(
        &mut self,
        records: &[u8],
        headers: &[BatchHeader],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendOutcome, AppendError> {
        for h in headers {
            if h.total_len > self.settings.max_message_bytes {
                return Err(AppendError::Protocol(ErrorCode::MessageTooLarge));
            }
        }
        // Kafka accepts exactly one v2 batch per partition in a produce request; that is also what
        // makes the idempotence check below well defined.
        let [h] = headers else {
            return Err(AppendError::Protocol(ErrorCode::InvalidRecord));
        };
        // Markers come from the transaction coordinator, through `append_txn_marker`.
        if h.is_control() {
            return Err(AppendError::Protocol(ErrorCode::InvalidRecord));
        }
        match self.producers.check(h) {
            SequenceCheck::Append => {}
            SequenceCheck::Duplicate { base_offset } => {
                return Ok(AppendOutcome {
                    base_offset,
                    last_offset: base_offset + h.last_offset_delta as i64,
                    log_append_time: -1,
                    record_count: 0,
                    bytes: 0,
                    duplicate: true,
                });
            }
            SequenceCheck::Reject(code) => {
                // Rare and consequential (an idempotent producer that gets it may start a new
                // epoch and resend what could already be stored): say what was expected.
                tracing::info!(
                    dir = %self.dir.display(),
                    producer_id = h.producer_id,
                    producer_epoch = h.producer_epoch,
                    base_sequence = h.base_sequence,
                    last_sequence = h.last_sequence(),
                    known = ?self.producers.describe(h.producer_id),
                    error = ?code,
                    "produce batch refused by the idempotence check"
                );
                return Err(AppendError::Protocol(code));
            }
        }
        self.write(records, headers, leader_epoch, now_ms)
    }

    /// Writes checked batches at the log end: assigns their offsets and leader epoch (and the
    /// append time when the topic uses it), rolls first when due, and records them in the
    /// producer and transaction state.
    fn write(
        &mut self,
        records: &[u8],
        headers: &[BatchHeader],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendOutcome, AppendError> {
        let total: usize = headers.iter().map(|h| h.total_len).sum();
        self.maybe_roll(total as u64, now_ms)?;
        let mut next = self.log_end_offset();
        let base_offset = next;
        self.epochs.assign(leader_epoch, base_offset)?;
        let append_time = self.settings.log_append_time;
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.extend_from_slice(&records[..total]);
        let mut pos = 0;
        let mut assigned = Vec::with_capacity(headers.len());
        let mut markers = Vec::with_capacity(headers.len());
        for h in headers {
            let b = &mut buf[pos..pos + h.total_len];
            batch::set_base_offset(b, next, leader_epoch);
            if append_time {
                batch::set_log_append_time(b, now_ms);
            }
            markers.push(if h.is_control() {
                txn_marker::marker_type(b)
            } else {
                None
            });
            let mut nh = *h;
            nh.base_offset = next;
            nh.partition_leader_epoch = leader_epoch;
            if append_time {
                nh.max_timestamp = now_ms;
            }
            assigned.push((pos, nh));
            next += h.offset_count();
            pos += h.total_len;
        }
        let seg = self.segments.last_mut().expect("active segment");
        let write_result = seg.append_many(&buf, &assigned);
        self.scratch = buf;
        write_result?;
        let mut count = 0;
        for ((_, h), marker) in assigned.iter().zip(markers) {
            self.producers.record(h, marker);
            count += h.record_count as i64;
        }
        Ok(AppendOutcome {
            base_offset,
            last_offset: next - 1,
            log_append_time: if append_time { now_ms } else { -1 },
            record_count: count,
            bytes: total,
            duplicate: false,
        })
    }

    fn maybe_roll(&mut self, incoming: u64, now_ms: i64) -> io::Result<()> {
        let active = self.active();
        let full = active.size > 0 && active.size + incoming > self.settings.segment_bytes;
        let old = active.size > 0 && now_ms - active.created_ms >= self.settings.segment_ms;
        if full || old {
            self.roll(now_ms)?;
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at the log end offset.
    pub fn roll(&mut self, now_ms: i64) -> io::Result<()> {
        let started = std::time::Instant::now();
        let next = self.log_end_offset();
        self.active().seal()?;
        segment::write_atomically(&snapshot_path(&self.dir, next), &self.producers.encode())?;
        let seg = Segment::create(&self.dir, next, self.settings.index_interval_bytes, now_ms)?;
        self.segments.push(seg);
        self.prune_snapshots();
        if let Some(observe) = &self.roll_observer {
            observe(started.elapsed());
        }
        Ok(())
    }

    /// Reports every later roll's duration to `observer`.
    pub fn observe_rolls(&mut self, observer: RollObserver) {
        self.roll_observer = Some(observer);
    }

    fn prune_snapshots(&self) {
        let keep = self.active().base_offset;
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if let Some(stem) = name.strip_suffix(".snapshot") {
                    if stem.parse::<i64>().is_ok_and(|b| b < keep) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
    }

    /// The stored batches a fetch at `offset` returns: whole batches starting with the one holding
    /// `offset`, below `max_offset` (exclusive; the high watermark), at most `max_bytes` of them
    /// unless `min_one` lets the first exceed it (so a large batch never blocks a consumer). Only headers are
    /// read; the bytes stay in the file for the connection to send (see `file_region`).
    pub fn locate(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one: bool,
    ) -> io::Result<Option<FileRegion>> {
        Ok(self
            .locate_span(offset, max_bytes, max_offset, min_one)?
            .map(|(region, _)| region))
    }

    /// [`Self::locate`], with the offset the region stops at: the base offset of the first
    /// batch it leaves out (or the end of its segment). A `read_committed` fetch reports the
    /// aborted transactions that start below it.
    pub fn locate_span(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one: bool,
    ) -> io::Result<Option<(FileRegion, i64)>> {
        if offset >= max_offset || offset >= self.log_end_offset() {
            return Ok(None);
        }
        let idx = match self.segments.partition_point(|s| s.base_offset <= offset) {
            0 => 0,
            i => i - 1,
        };
        for seg in &self.segments[idx..] {
            let Some(start) = seg.position_of(offset.max(seg.base_offset))? else {
                continue;
            };
            let (end, upper) = seg.read_end(start, max_bytes, max_offset, min_one)?;
            return Ok((end > start).then(|| {
                let region = FileRegion {
                    file: seg.file.clone(),
                    position: start,
                    len: (end - start) as usize,
                };
                (region, upper)
            }));
        }
        Ok(None)
    }

    /// [`Self::locate`], read into memory.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one: bool,
    ) -> io::Result<ReadResult> {
        let records = match self.locate(offset, max_bytes, max_offset, min_one)? {
            Some(region) => region.read()?,
            None => Bytes::new(),
        };
        Ok(ReadResult { records })
    }

    /// The first offset whose record timestamp is >= `ts`, with that timestamp.
    pub fn offset_for_timestamp(&self, ts: i64) -> io::Result<Option<(i64, i64)>> {
        for seg in &self.segments {
            let Some((pos, h)) = seg.position_for_timestamp(ts)? else {
                continue;
            };
            let mut buf = vec![0u8; h.total_len];
            seg.file.read_exact_at(&mut buf, pos)?;
            return Ok(Some(first_record_at_or_after(&buf, &h, ts)));
        }
        Ok(None)
    }

    /// The offset and timestamp of the record with the largest timestamp (ListOffsets -3).
    pub fn max_timestamp_offset(&self) -> io::Result<Option<(i64, i64)>> {
        let Some(seg) = self
            .segments
            .iter()
            .filter(|s| s.max_timestamp >= 0)
            .max_by_key(|s| s.max_timestamp)
        else {
            return Ok(None);
        };
        let Some((pos, h)) = seg.position_for_timestamp(seg.max_timestamp)? else {
            return Ok(None);
        };
        let mut buf = vec![0u8; h.total_len];
        seg.file.read_exact_at(&mut buf, pos)?;
        Ok(Some(first_record_at_or_after(&buf, &h, seg.max_timestamp)))
    }

    /// Deletes segments past retention (time or size); the active segment is rolled first when it
    /// is itself expired so that time retention also empties an idle partition. Returns the number
    /// of segments deleted.
    pub fn enforce_retention(&mut self, now_ms: i64) -> io::Result<usize> {
        if !self.settings.delete {
            // `cleanup.policy=compact` alone: old segments are compacted, never deleted.
            return Ok(0);
        }
        let retention_ms = self.settings.retention_ms;
        let retention_bytes = self.settings.retention_bytes;
        let expired = |s: &Segment| {
            retention_ms >= 0 && s.max_timestamp >= 0 && now_ms - s.max_timestamp > retention_ms
        };
        if self.active().size > 0 && expired(self.active()) {
            self.roll(now_ms)?;
        }
        let mut deleted = 0;
        let mut total = self.size_bytes() as i64;
        while self.segments.len() > 1 {
            let first = &self.segments[0];
            let by_time = expired(first);
            let by_size = retention_bytes >= 0 && total - first.size as i64 >= retention_bytes;
            if !(by_time || by_size) {
                break;
            }
            let seg = self.segments.remove(0);
            total -= seg.size as i64;
            seg.delete_files()?;
            deleted += 1;
        }
        self.log_start_offset = self.log_start_offset.max(self.segments[0].base_offset);
        self.producers.drop_aborted_before(self.log_start_offset);
        Ok(deleted)
    }

    /// Moves the log start forward (DeleteRecords); whole segments below it are removed.
    pub fn advance_log_start(&mut self, offset: i64) -> io::Result<()> {
        let offset = offset.min(self.log_end_offset());
        self.log_start_offset = self.log_start_offset.max(offset);
        self.producers.drop_aborted_before(self.log_start_offset);
        while self.segments.len() > 1 && self.segments[1].base_offset <= self.log_start_offset {
            self.segments.remove(0).delete_files()?;
        }
        Ok(())
    }

    /// Seals the active segment's indexes on clean shutdown is unnecessary (it is rescanned);
    /// flushes file data so an orderly stop is durable even against power loss.
    pub fn flush(&self) -> io::Result<()> {
        self.active().file.sync_data()
    }

    /// Removes the whole partition directory.
    pub fn delete(self) -> io::Result<()> {
        std::fs::remove_dir_all(&self.dir)
    }
}

/// Finds the first record in a batch with timestamp >= ts by decoding it (compressed or not).
/// Falls back to the batch's base offset if decoding fails (the batch CRC was checked on append).
fn first_record_at_or_after(batch_bytes: &[u8], h: &BatchHeader, ts: i64) -> (i64, i64) {
    let mut buf = Bytes::copy_from_slice(batch_bytes);
    if let Ok(set) = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf) {
        if h.attributes & 0x08 != 0 {
            // LogAppendTime: every record carries the batch's max timestamp.
            return (h.base_offset, h.max_timestamp);
        }
        for r in set.records {
            if r.timestamp >= ts {
                return (r.offset, r.timestamp);
            }
        }
    }
    (h.base_offset, h.max_timestamp)
}

#[cfg(test)]
mod tests;
