//! Log compaction (`cleanup.policy=compact`): keeps, for every key, only its latest record in
//! the sealed segments, as Kafka's log cleaner does. Topics that hold state (Kafka Connect's
//! config/offset/status topics, Streams changelogs, schema registries) rely on it to stay
//! bounded without losing any key's current value.
//!
//! A pass has three steps, and only the last holds the log's lock:
//! 1. [`PartitionLog::plan_cleaning`](super::PartitionLog::plan_cleaning) picks the sealed
//!    segments wholly below the high watermark and older than `min.compaction.lag.ms`, when the
//!    part not yet cleaned is at least `min.cleanable.dirty.ratio` of them (or older than
//!    `max.compaction.lag.ms`).
//! 2. [`clean`] (this module, no lock, on a blocking thread) reads those segments through
//!    their open files: a first pass maps every key of the part not cleaned yet to its last
//!    offset, a second writes each segment that loses records to `<base>.log.cleaned`. The
//!    cleaned part below needs no mapping (it already holds each key once): a record there
//!    goes when the map has a newer one for its key. The map is bounded, as Kafka bounds it
//!    with `log.cleaner.dedupe.buffer.size`: when the next segment's keys would not fit, the
//!    pass ends before that segment and the next pass goes on from there (the first
//!    segment not cleaned yet is always taken whole, so a pass always progresses). A batch whose records all stay is
//!    copied byte for byte; a batch that loses some is re-encoded with the records that stay,
//!    their offsets, timestamps, producer fields and compression unchanged (a new CRC, as
//!    Kafka writes); a batch that loses all is dropped. Tombstones (records without a value)
//!    go once their segment is older than `delete.retention.ms`. Records without a key and
//!    control batches are always kept.
//!
//!    Transactions (KIP-98): a pass never reaches the first unstable offset (an open
//!    transaction's records may still be aborted); records of aborted transactions never
//!    count as a key's latest, so they cannot supersede a committed value, and they are
//!    removed, as Kafka's cleaner removes them. Markers stay (Kafka drops one once its
//!    transaction's records are gone and `delete.retention.ms` passed), and so does the log's
//!    aborted list (`log::txn_state`), which then describes a range with nothing left in it.
//! 3. [`PartitionLog::install_cleaned`](super::PartitionLog::install_cleaned) swaps each
//!    cleaned file in, if the segment it was made from is still there unchanged (retention or
//!    a follower's truncation may have removed it meanwhile).
//!
//! Offsets never change, so consumers and followers see gaps, never renumbering. Fetches
//! already under way keep reading the replaced file through their open descriptor.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions};

use super::batch::{self, BatchHeader, HEADER_LEN, LOG_OVERHEAD};
use super::io_throttle::IoThrottle;
use super::txn_state::AbortedTxn;

/// A sealed segment a pass reads (its file stays open even if the log drops it meanwhile).
#[derive(Debug, Clone)]
pub struct SegmentToClean {
    pub base_offset: i64,
    pub path: PathBuf,
    pub file: Arc<File>,
    pub size: u64,
    pub next_offset: i64,
    pub max_timestamp: i64,
}

/// What one pass covers.
#[derive(Debug, Clone)]
pub struct CleanPlan {
    pub segments: Vec<SegmentToClean>,
    /// Tombstones in segments whose newest record is older than this (ms) are removed.
    pub delete_horizon_ms: i64,
    /// Where the cleaned part of the log ends once this pass is installed.
    pub end_offset: i64,
    /// The aborted transactions that start below `end_offset`: their records are kept but
    /// never supersede others.
    pub aborted: Vec<AbortedTxn>,
    /// Where the part not cleaned yet starts (the log's cleaned-up-to offset): only segments
    /// ending above it are read into the key map.
    pub dirty_from: i64,
}

/// What one key costs in the map beyond its bytes (the `Bytes` handle, the offset, the hash
/// table's slot and slack), for `log.cleaner.dedupe.buffer.size` accounting.
const MAP_ENTRY_OVERHEAD: u64 = 64;

/// Per producer, its aborted transactions as `(first offset, marker offset)`, in log order
/// (a producer's transactions never overlap).
struct AbortedRanges(HashMap<i64, Vec<(i64, i64)>>);

impl AbortedRanges {
    fn new(aborted: &[AbortedTxn]) -> AbortedRanges {
        let mut by_producer: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for a in aborted {
            by_producer
                .entry(a.producer_id)
                .or_default()
                .push((a.first_offset, a.last_offset));
        }
        AbortedRanges(by_producer)
    }

    /// Is `h` a data batch of an aborted transaction?
    fn holds(&self, h: &BatchHeader) -> bool {
        if !h.is_transactional() || h.is_control() {
            return false;
        }
        let Some(ranges) = self.0.get(&h.producer_id) else {
            return false;
        };
        let i = ranges.partition_point(|&(_, last)| last < h.base_offset);
        ranges
            .get(i)
            .is_some_and(|&(first, _)| first <= h.base_offset)
    }
}

/// A segment rewritten without its superseded records, waiting to be swapped in.
#[derive(Debug, Clone)]
pub struct CleanedSegment {
    pub base_offset: i64,
    /// The segment it replaces, as it was when read (the swap checks it is unchanged).
    pub original_size: u64,
    pub original_next_offset: i64,
    pub original_max_timestamp: i64,
    pub cleaned_path: PathBuf,
    pub size: u64,
    pub records_removed: u64,
}

/// How far compaction is behind, over every compacted log: what has not been cleaned yet.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CleanerLag {
    /// Bytes above each log's cleaned point (the active segment included).
    pub dirty_bytes: u64,
    /// The largest share of a log that is not cleaned yet (Kafka's max-dirty-percent / 100).
    pub max_dirty_ratio: f64,
}

/// Totals of one pass, for the log line and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanStats {
    pub segments_rewritten: usize,
    pub bytes_read: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
}

/// The file a cleaned copy of segment `path` is written to.
pub fn cleaned_path(path: &std::path::Path) -> PathBuf {
    path.with_extension("log.cleaned")
}

/// Reads every batch of `seg` in order: (header, whole batch bytes).
fn for_each_batch(
    seg: &SegmentToClean,
    mut f: impl FnMut(&BatchHeader, Bytes) -> io::Result<()>,
) -> io::Result<()> {
    let mut pos = 0u64;
    let mut head = [0u8; HEADER_LEN];
    while pos + HEADER_LEN as u64 <= seg.size {
        seg.file.read_exact_at(&mut head, pos)?;
        let h =
            BatchHeader::parse(&head).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if pos + h.total_len as u64 > seg.size {
            break;
        }
        let mut bytes = vec![0u8; h.total_len];
        seg.file.read_exact_at(&mut bytes, pos)?;
        f(&h, Bytes::from(bytes))?;
        pos += h.total_len as u64;
    }
    Ok(())
}

/// The records of one batch, or None when they cannot be decoded (the batch is then kept
/// whole: the cleaner never drops what it cannot read).
fn records_of(bytes: &Bytes) -> Option<kafka_protocol::records::RecordSet> {
    let mut buf = bytes.clone();
    RecordBatchDecoder::decode(&mut buf).ok()
}

/// Runs the pass over `plan` (blocking file I/O); returns the segments that lost records,
/// written next to their originals, and the totals. When the keys of the part not cleaned
/// yet exceed `max_map_bytes`, `plan` is cut short to the segments the pass covered (its
/// `end_offset` with it), which is what [`install_cleaned`](super::PartitionLog::install_cleaned)
/// must then be given. Every byte read and written goes through `throttle`
/// (`log.cleaner.io.max.bytes.per.second`).
pub fn clean(
    plan: &mut CleanPlan,
    max_map_bytes: u64,
    throttle: &mut IoThrottle,
) -> io::Result<(Vec<CleanedSegment>, CleanStats)> {
    let mut stats = CleanStats::default();
    let aborted = AbortedRanges::new(&plan.aborted);
    let latest = map_keys(plan, max_map_bytes, &aborted, throttle, &mut stats)?;
    // Pass 2: rewrite the segments that lose something, streaming (a segment can be as large
    // as `segment.bytes`); a copy that turns out identical is removed again.
    let mut out = Vec::new();
    for seg in &plan.segments {
        let drop_tombstones = seg.max_timestamp >= 0 && seg.max_timestamp < plan.delete_horizon_ms;
        let path = cleaned_path(&seg.path);
        let mut writer = io::BufWriter::with_capacity(1 << 20, File::create(&path)?);
        let mut removed = 0u64;
        let mut written = 0u64;
        let result = for_each_batch(seg, |h, bytes| {
            throttle.consume(bytes.len() as u64);
            let kept = match retained(h, &bytes, &latest, drop_tombstones, &aborted) {
                Retained::All => bytes.to_vec(),
                Retained::None(n) => {
                    removed += n;
                    return Ok(());
                }
                Retained::Some { batch, removed: n } => {
                    removed += n;
                    batch
                }
            };
            written += kept.len() as u64;
            throttle.consume(kept.len() as u64);
            writer.write_all(&kept)
        })
        .and_then(|()| writer.into_inner().map_err(io::IntoInnerError::into_error))
        .and_then(|f| if removed > 0 { f.sync_data() } else { Ok(()) });
        if let Err(e) = result {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        if removed == 0 {
            std::fs::remove_file(&path)?;
            continue;
        }
        stats.segments_rewritten += 1;
        stats.bytes_before += seg.size;
        stats.bytes_after += written;
        stats.records_removed += removed;
        out.push(CleanedSegment {
            base_offset: seg.base_offset,
            original_size: seg.size,
            original_next_offset: seg.next_offset,
            original_max_timestamp: seg.max_timestamp,
            cleaned_path: path,
            size: written,
            records_removed: removed,
        });
    }
    Ok((out, stats))
}

/// Pass 1: the last offset of every key in the segments not cleaned yet, as far as
/// `max_map_bytes` allows (the plan is cut after the last segment that fitted).
fn map_keys(
    plan: &mut CleanPlan,
    max_map_bytes: u64,
    aborted: &AbortedRanges,
    throttle: &mut IoThrottle,
    stats: &mut CleanStats,
) -> io::Result<HashMap<Bytes, i64>> {
    let mut latest: HashMap<Bytes, i64> = HashMap::new();
    let mut map_bytes = 0u64;
    for (i, seg) in plan.segments.iter().enumerate() {
        if seg.next_offset <= plan.dirty_from {
            continue;
        }
        stats.bytes_read += seg.size;
        // What this segment changed in the map, to take it back if the segment does not fit.
        let mut undo: Vec<(Bytes, Option<i64>)> = Vec::new();
        let mut added = 0u64;
        for_each_batch(seg, |h, bytes| {
            throttle.consume(bytes.len() as u64);
            if h.is_control() || aborted.holds(h) {
                return Ok(());
            }
            if let Some(set) = records_of(&bytes) {
                for r in set.records {
                    if let Some(k) = r.key {
                        // A copy: the decoded key shares the whole batch's buffer.
                        let k = Bytes::copy_from_slice(&k);
                        let before = latest.insert(k.clone(), r.offset);
                        if before.is_none() {
                            added += k.len() as u64 + MAP_ENTRY_OVERHEAD;
                        }
                        undo.push((k, before));
                    }
                }
            }
            Ok(())
        })?;
        if map_bytes + added > max_map_bytes && map_bytes > 0 {
            for (k, before) in undo.into_iter().rev() {
                match before {
                    Some(offset) => latest.insert(k, offset),
                    None => latest.remove(&k),
                };
            }
            plan.segments.truncate(i);
            plan.end_offset = plan.segments.last().map_or(0, |s| s.next_offset);
            break;
        }
        map_bytes += added;
    }
    Ok(latest)
}

/// What stays of one batch.
enum Retained {
    All,
    /// Nothing stays; this many records go.
    None(u64),
    Some {
        batch: Vec<u8>,
        removed: u64,
    },
}

fn retained(
    h: &BatchHeader,
    bytes: &Bytes,
    latest: &HashMap<Bytes, i64>,
    drop_tombstones: bool,
    aborted: &AbortedRanges,
) -> Retained {
    if h.is_control() {
        return Retained::All;
    }
    if aborted.holds(h) {
        // No reader may ever see it: read_committed skips it, and Kafka's cleaner drops it too.
        return Retained::None(u64::try_from(h.record_count).unwrap_or(0));
    }
    let Some(set) = records_of(bytes) else {
        return Retained::All;
    };
    let total = set.records.len() as u64;
    let keep: Vec<_> = set
        .records
        .iter()
        .filter(|r| match &r.key {
            None => true,
            // Not in the map: a key of the cleaned part that nothing newer replaced.
            Some(k) => {
                latest.get(k).is_none_or(|&last| last == r.offset)
                    && !(drop_tombstones && r.value.is_none())
            }
        })
        .cloned()
        .collect();
    if keep.len() as u64 == total {
        return Retained::All;
    }
    if keep.is_empty() {
        return Retained::None(total);
    }
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: set.compression,
    };
    if RecordBatchEncoder::encode(&mut buf, keep.iter(), &options).is_err() {
        return Retained::All;
    }
    let mut batch = buf.to_vec();
    keep_header_fields(&mut batch, h);
    Retained::Some {
        batch,
        removed: total - keep.len() as u64,
    }
}

/// The encoder writes the batch header from the records; two fields must come from the
/// original header instead: the timestamp type (bit 3 of the attributes) and, for batches
/// without a producer, the base sequence -1. The CRC is recomputed after.
fn keep_header_fields(batch: &mut [u8], original: &BatchHeader) {
    if batch.len() < HEADER_LEN || batch.len() < LOG_OVERHEAD + 9 {
        return;
    }
    let attrs = i16::from_be_bytes([batch[21], batch[22]]) | (original.attributes & 0x08);
    batch[21..23].copy_from_slice(&attrs.to_be_bytes());
    if original.base_sequence == -1 {
        batch[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    }
    let crc = batch::compute_crc(batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}
