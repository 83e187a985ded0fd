//! The log's own tests: offsets, reads, rolls, recovery, retention and timestamps.

use super::*;
use crate::log::batch::test_support::make_batch;
use std::collections::BTreeMap;

fn settings() -> TopicSettings {
    TopicSettings::resolve(&BTreeMap::new(), &BTreeMap::new())
}

fn append(
    log: &mut PartitionLog,
    n: usize,
    producer: Option<(i64, i16, i32)>,
    ts: i64,
) -> Result<AppendOutcome, AppendError> {
    let b = make_batch(n, producer, ts);
    let hs = batch::validate_all(&b).unwrap();
    log.append(&b, &hs, 0, ts)
}

#[test]
fn assigns_offsets_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), settings(), 0).unwrap();
    assert_eq!(append(&mut log, 3, None, 10).unwrap().base_offset, 0);
    assert_eq!(append(&mut log, 2, None, 20).unwrap().base_offset, 3);
    assert_eq!(log.log_end_offset(), 5);
    let r = log.read(4, 1 << 20, 5, true).unwrap();
    let h = batch::validate(&r.records).unwrap();
    assert_eq!(h.base_offset, 3);
    assert!(log.read(5, 1 << 20, 5, true).unwrap().records.is_empty());
    // max_offset (high watermark) hides data above it
    assert!(log.read(3, 1 << 20, 3, true).unwrap().records.is_empty());
}

#[test]
fn max_bytes_returns_at_least_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), settings(), 0).unwrap();
    append(&mut log, 10, None, 0).unwrap();
    append(&mut log, 10, None, 0).unwrap();
    let r = log.read(0, 10, i64::MAX, true).unwrap();
    assert_eq!(batch::validate_all(&r.records).unwrap().len(), 1);
    assert!(log.read(0, 10, i64::MAX, false).unwrap().records.is_empty());
}

/// `locate` against a plain walk over the batches: every combination of start offset,
/// byte limit, high watermark and `min_one`, with a sparse index that skips batches.
#[test]
fn locate_finds_the_same_whole_batches_as_walking_every_header() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings();
    s.index_interval_bytes = 700;
    let mut log = PartitionLog::open(dir.path(), s, 0).unwrap();
    // (base offset, position, length) of every batch, as appended.
    let mut batches: Vec<(i64, u64, usize)> = Vec::new();
    let mut position = 0u64;
    for i in 0..40 {
        let records = 1 + (i * 7) % 5;
        let out = append(&mut log, records, None, 0).unwrap();
        let len = make_batch(records, None, 0).len();
        batches.push((out.base_offset, position, len));
        position += len as u64;
    }
    let leo = log.log_end_offset();
    for offset in 0..leo {
        for max_offset in [offset, offset + 1, leo / 2, leo - 3, leo, i64::MAX] {
            for max_bytes in [0, 1, 150, 600, 1500, 5000, usize::MAX] {
                for min_one in [false, true] {
                    let got = log.locate(offset, max_bytes, max_offset, min_one).unwrap();
                    let got = got.map(|r| (r.position, r.len));
                    // The batch holding `offset`.
                    let first = batches
                        .iter()
                        .rposition(|&(base, _, _)| base <= offset)
                        .unwrap();
                    let start = batches[first].1;
                    let mut end = start;
                    for &(base, pos, len) in &batches[first..] {
                        let fits = (pos + len as u64 - start) as usize <= max_bytes;
                        if base >= max_offset || !(fits || (pos == start && min_one)) {
                            break;
                        }
                        end = pos + len as u64;
                    }
                    let expected = (offset < max_offset && end > start)
                        .then(|| (start, (end - start) as usize));
                    assert_eq!(
                        got, expected,
                        "offset {offset} max_offset {max_offset} max_bytes {max_bytes} min_one {min_one}"
                    );
                }
            }
        }
    }
}

#[test]
fn rolls_segments_and_recovers_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings();
    s.segment_bytes = 300;
    let mut log = PartitionLog::open(dir.path(), s.clone(), 0).unwrap();
    for i in 0..20 {
        append(&mut log, 2, Some((1, 0, i * 2)), 100 + i as i64).unwrap();
    }
    assert!(log.segment_count() > 3);
    drop(log);
    let mut log = PartitionLog::open(dir.path(), s, 0).unwrap();
    assert_eq!(log.log_end_offset(), 40);
    // producer state survived: a retry of the last batch is a duplicate
    let out = append(&mut log, 2, Some((1, 0, 38)), 0).unwrap();
    assert!(out.duplicate);
    assert_eq!(out.base_offset, 38);
    let r = log.read(13, 1 << 20, i64::MAX, true).unwrap();
    assert!(batch::validate(&r.records).unwrap().base_offset <= 13);
}

#[test]
fn torn_tail_is_truncated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), settings(), 0).unwrap();
    append(&mut log, 3, None, 0).unwrap();
    append(&mut log, 3, None, 0).unwrap();
    let path = dir.path().join(segment::file_name(0, "log"));
    drop(log);
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 7).unwrap();
    let log = PartitionLog::open(dir.path(), settings(), 0).unwrap();
    assert_eq!(log.log_end_offset(), 3);
}

#[test]
fn corrupt_middle_batch_cuts_log_there() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), settings(), 0).unwrap();
    append(&mut log, 3, None, 0).unwrap();
    let second_pos = log.size_bytes();
    append(&mut log, 3, None, 0).unwrap();
    append(&mut log, 3, None, 0).unwrap();
    drop(log);
    let path = dir.path().join(segment::file_name(0, "log"));
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_at(&[0xAB], second_pos + 70).unwrap();
    let log = PartitionLog::open(dir.path(), settings(), 0).unwrap();
    assert_eq!(log.log_end_offset(), 3);
}

#[test]
fn retention_by_size_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings();
    s.segment_bytes = 200;
    s.retention_bytes = 400;
    let mut log = PartitionLog::open(dir.path(), s.clone(), 0).unwrap();
    for i in 0..20 {
        append(&mut log, 2, None, i).unwrap();
    }
    let before = log.segment_count();
    assert!(log.enforce_retention(100).unwrap() > 0);
    assert!(log.segment_count() < before);
    assert!(log.size_bytes() <= 400 + 200);
    assert!(log.log_start_offset() > 0);
    s.retention_bytes = -1;
    s.retention_ms = 1000;
    log.set_settings(s);
    log.enforce_retention(1_000_000).unwrap();
    assert_eq!(log.log_start_offset(), log.log_end_offset());
    assert!(log
        .read(0, 1000, i64::MAX, true)
        .unwrap()
        .records
        .is_empty());
}

#[test]
fn offsets_for_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), settings(), 0).unwrap();
    append(&mut log, 5, None, 1000).unwrap(); // ts 1000..1004, offsets 0..4
    append(&mut log, 5, None, 2000).unwrap(); // ts 2000..2004, offsets 5..9
    assert_eq!(log.offset_for_timestamp(1002).unwrap(), Some((2, 1002)));
    assert_eq!(log.offset_for_timestamp(1500).unwrap(), Some((5, 2000)));
    assert_eq!(log.offset_for_timestamp(3000).unwrap(), None);
    assert_eq!(log.max_timestamp_offset().unwrap(), Some((9, 2004)));
}

#[test]
fn message_too_large_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings();
    s.max_message_bytes = 50;
    let mut log = PartitionLog::open(dir.path(), s, 0).unwrap();
    assert!(matches!(
        append(&mut log, 5, None, 0),
        Err(AppendError::Protocol(ErrorCode::MessageTooLarge))
    ));
    assert_eq!(log.log_end_offset(), 0);
}
