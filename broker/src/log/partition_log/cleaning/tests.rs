//! Tests of compaction over real logs: what a pass keeps and removes, and how it is installed.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::*;
use crate::log::batch;
use crate::log::cleaner;
use crate::topic_config::TopicSettings;

fn compacted(segment_bytes: u64) -> TopicSettings {
    let mut overrides = BTreeMap::new();
    overrides.insert("cleanup.policy".to_string(), "compact".to_string());
    overrides.insert("delete.retention.ms".to_string(), "1000".to_string());
    let mut s = TopicSettings::resolve(&overrides, &BTreeMap::new());
    s.segment_bytes = segment_bytes;
    s
}

/// One batch of `(key, value)` records (value None: a tombstone), compressed with `c`.
fn batch_of(records: &[(&str, Option<String>)], ts: i64, c: Compression) -> Vec<u8> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // What a decoder reports for a batch without a producer (base sequence -1).
            sequence: i as i32 - 1,
            timestamp: ts,
            key: Some(Bytes::from(k.to_string())),
            value: v.clone().map(Bytes::from),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: c,
        },
    )
    .unwrap();
    buf.to_vec()
}

fn append(log: &mut PartitionLog, bytes: &[u8], now: i64) {
    let headers = batch::validate_all(bytes).unwrap();
    log.append(bytes, &headers, 0, now).unwrap();
}

/// Every record in the log: (offset, key, value).
fn read_all(log: &PartitionLog) -> Vec<(i64, String, Option<String>)> {
    let text = |b: Bytes| String::from_utf8(b.to_vec()).unwrap();
    read_records(log)
        .into_iter()
        .map(|(offset, _, _, key, value)| (offset, text(key), value.map(text)))
        .collect()
}

fn pass(log: &mut PartitionLog, now: i64) -> usize {
    pass_with_map(log, now, u64::MAX).0
}

/// A pass with a key map of `max_map_bytes`: (segments replaced, the pass's totals).
fn pass_with_map(
    log: &mut PartitionLog,
    now: i64,
    max_map_bytes: u64,
) -> (usize, cleaner::CleanStats) {
    let Some(mut plan) = log.plan_cleaning(log.log_end_offset(), now) else {
        return (0, cleaner::CleanStats::default());
    };
    let (cleaned, stats) = cleaner::clean(
        &mut plan,
        max_map_bytes,
        &mut crate::log::io_throttle::IoThrottle::unlimited(),
    )
    .unwrap();
    (log.install_cleaned(&plan, cleaned, now).unwrap(), stats)
}

/// Five rounds of updates to ten keys (with every codec), two keys deleted in the last
/// sealed round: after a pass each key keeps only its latest record, at its original
/// offset, nothing newer is touched, and the result survives a reopen.
#[test]
fn the_latest_record_of_every_key_survives_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), compacted(1024), 0).unwrap();
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    for (round, c) in codecs.iter().enumerate() {
        for k in 0..10 {
            let key = format!("k{k}");
            let value = if round == 3 && k < 2 {
                None
            } else {
                Some(format!("r{round}-{key}"))
            };
            append(&mut log, &batch_of(&[(&key, value)], 100, *c), 100);
        }
    }
    let before = read_all(&log);
    assert_eq!(before.len(), 50);
    log.roll(100).unwrap();
    // Latest per key, from the log as written.
    let mut latest: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
    for (o, k, v) in &before {
        latest.insert(k.clone(), (*o, v.clone()));
    }
    let segments = log.segment_count();
    assert!(pass(&mut log, 200) > 0, "the pass rewrote segments");
    assert!(
        log.segment_count() < segments,
        "segments left empty are removed"
    );
    let after = read_all(&log);
    let expected: Vec<(i64, String, Option<String>)> = {
        let mut v: Vec<_> = latest
            .iter()
            .map(|(k, (o, val))| (*o, k.clone(), val.clone()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        after, expected,
        "one record per key, its latest, at its offset"
    );
    assert_eq!(log.log_end_offset(), 50, "offsets are never reassigned");
    assert_eq!(log.cleaned_up_to(), 50);
    // Nothing left to do until new data arrives; the checkpoint survives a reopen.
    assert_eq!(pass(&mut log, 300), 0);
    drop(log);
    let log = PartitionLog::open(dir.path(), compacted(1024), 0).unwrap();
    assert_eq!(read_all(&log), expected);
    assert_eq!(log.cleaned_up_to(), 50);
    assert!(log.plan_cleaning(50, 300).is_none());
}

/// Three sealed segments of ten distinct keys each, then updates of every key: with a key
/// map that holds about one segment's keys, each pass covers a prefix of what is dirty and
/// the next goes on from there; in the end each key keeps only its latest record.
#[test]
fn a_small_key_map_cleans_in_several_passes_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = compacted(1 << 20);
    s.min_cleanable_dirty_ratio = 0.01;
    let mut log = PartitionLog::open(dir.path(), s, 0).unwrap();
    for round in 0..2 {
        for seg in 0..3 {
            for k in 0..10 {
                let key = format!("s{seg}k{k}");
                let value = Some(format!("r{round}"));
                append(
                    &mut log,
                    &batch_of(&[(&key, value)], 100, Compression::None),
                    100,
                );
            }
            log.roll(100).unwrap();
        }
    }
    let mut latest: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
    for (o, k, v) in read_all(&log) {
        latest.insert(k, (o, v));
    }
    // Room for one segment's ten keys ("s0k0": 4 bytes each), not two.
    let one_segment = 10 * (4 + 64);
    let mut passes = 0;
    while log.cleaned_up_to() < 60 {
        let before = log.cleaned_up_to();
        pass_with_map(&mut log, 200, one_segment);
        passes += 1;
        assert!(log.cleaned_up_to() > before, "every pass progresses");
        assert!(
            log.cleaned_up_to() - before <= 10,
            "a pass maps one segment of keys"
        );
        assert!(passes <= 6);
    }
    assert!(passes >= 6, "{passes} passes");
    let mut expected: Vec<_> = latest.into_iter().map(|(k, (o, v))| (o, k, v)).collect();
    expected.sort();
    assert_eq!(read_all(&log), expected, "the latest record of every key");
}

/// A pass after new data maps only the part not cleaned yet.
#[test]
fn a_later_pass_reads_only_the_dirty_segments_into_its_map() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = compacted(1 << 20);
    s.min_cleanable_dirty_ratio = 0.01;
    let mut log = PartitionLog::open(dir.path(), s, 0).unwrap();
    for k in 0..20 {
        let key = format!("k{k}");
        append(
            &mut log,
            &batch_of(&[(&key, Some("old".into()))], 100, Compression::None),
            100,
        );
    }
    log.roll(100).unwrap();
    assert_eq!(pass(&mut log, 200), 0, "nothing superseded yet");
    assert_eq!(log.cleaned_up_to(), 20);
    append(
        &mut log,
        &batch_of(&[("k3", Some("new".into()))], 100, Compression::None),
        100,
    );
    log.roll(100).unwrap();
    let dirty = log.cleaner_lag().unwrap().0;
    let (replaced, stats) = pass_with_map(&mut log, 200, u64::MAX);
    assert_eq!(replaced, 1, "the first segment loses k3's old record");
    assert_eq!(stats.bytes_read, dirty, "only the dirty segment was mapped");
    let after = read_all(&log);
    assert_eq!(after.len(), 20);
    assert!(after.contains(&(20, "k3".into(), Some("new".into()))));
    assert!(!after.iter().any(|(o, _, _)| *o == 3));
}

#[test]
fn tombstones_stay_until_delete_retention_then_go() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = compacted(1 << 20);
    // The second pass has little new data: let any dirty share trigger it.
    s.min_cleanable_dirty_ratio = 0.01;
    let mut log = PartitionLog::open(dir.path(), s, 0).unwrap();
    append(
        &mut log,
        &batch_of(
            &[("a", Some("1".into())), ("b", Some("1".into()))],
            100,
            Compression::None,
        ),
        100,
    );
    append(
        &mut log,
        &batch_of(&[("a", None)], 100, Compression::None),
        100,
    );
    log.roll(100).unwrap();
    // Within delete.retention.ms (1 s) of the segment's newest record: the tombstone stays.
    pass(&mut log, 500);
    assert_eq!(
        read_all(&log),
        vec![(1, "b".into(), Some("1".into())), (2, "a".into(), None)]
    );
    // A later pass past the horizon removes it (new data makes the log dirty again).
    append(
        &mut log,
        &batch_of(&[("b", Some("2".into()))], 2_000, Compression::None),
        2_000,
    );
    log.roll(2_000).unwrap();
    pass(&mut log, 5_000);
    assert_eq!(read_all(&log), vec![(3, "b".into(), Some("2".into()))]);
}

#[test]
fn the_active_segment_and_data_above_the_high_watermark_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), compacted(1 << 20), 0).unwrap();
    for _ in 0..3 {
        append(
            &mut log,
            &batch_of(&[("a", Some("x".into()))], 100, Compression::None),
            100,
        );
    }
    assert!(
        log.plan_cleaning(3, 200).is_none(),
        "only the active segment"
    );
    log.roll(100).unwrap();
    assert!(
        log.plan_cleaning(2, 200).is_none(),
        "the segment reaches past the high watermark"
    );
    append(
        &mut log,
        &batch_of(&[("a", Some("y".into()))], 100, Compression::None),
        100,
    );
    pass(&mut log, 200);
    assert_eq!(
        read_all(&log),
        vec![
            (2, "a".into(), Some("x".into())),
            (3, "a".into(), Some("y".into()))
        ],
        "the sealed segment keeps its own latest; the active one is untouched"
    );
}

#[test]
fn delete_policy_logs_are_not_compacted_and_compact_logs_are_not_expired() {
    let dir = tempfile::tempdir().unwrap();
    let mut delete = TopicSettings::resolve(&BTreeMap::new(), &BTreeMap::new());
    delete.segment_bytes = 1 << 20;
    let mut log = PartitionLog::open(&dir.path().join("d"), delete, 0).unwrap();
    append(
        &mut log,
        &batch_of(&[("a", Some("x".into()))], 100, Compression::None),
        100,
    );
    append(
        &mut log,
        &batch_of(&[("a", Some("y".into()))], 100, Compression::None),
        100,
    );
    log.roll(100).unwrap();
    assert!(log.plan_cleaning(2, 200).is_none());

    let mut compact = compacted(1 << 20);
    compact.retention_ms = 10;
    let mut log = PartitionLog::open(&dir.path().join("c"), compact, 0).unwrap();
    append(
        &mut log,
        &batch_of(&[("a", Some("x".into()))], 100, Compression::None),
        100,
    );
    log.roll(100).unwrap();
    append(
        &mut log,
        &batch_of(&[("b", Some("x".into()))], 100, Compression::None),
        100,
    );
    assert_eq!(
        log.enforce_retention(1_000_000).unwrap(),
        0,
        "compact alone never expires"
    );
    assert_eq!(read_all(&log).len(), 2);
}

#[test]
fn a_copy_of_a_segment_that_changed_meanwhile_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = compacted(1 << 20);
    s.retention_ms = 10;
    let mut log = PartitionLog::open(dir.path(), s, 0).unwrap();
    append(
        &mut log,
        &batch_of(&[("a", Some("x".into()))], 100, Compression::None),
        100,
    );
    append(
        &mut log,
        &batch_of(&[("a", Some("y".into()))], 100, Compression::None),
        100,
    );
    log.roll(100).unwrap();
    append(
        &mut log,
        &batch_of(&[("b", Some("z".into()))], 100, Compression::None),
        100,
    );
    let mut plan = log.plan_cleaning(3, 200).unwrap();
    let (cleaned, _) = cleaner::clean(
        &mut plan,
        u64::MAX,
        &mut crate::log::io_throttle::IoThrottle::unlimited(),
    )
    .unwrap();
    let path = cleaned[0].cleaned_path.clone();
    assert!(path.exists());
    // DeleteRecords moves the log start past the planned segment before the swap.
    log.advance_log_start(2).unwrap();
    assert_eq!(log.install_cleaned(&plan, cleaned, 200).unwrap(), 0);
    assert!(!path.exists(), "the stale copy is removed");
    assert_eq!(read_all(&log), vec![(2, "b".into(), Some("z".into()))]);
}

/// A follower copying a compacted leader gets batches with gaps between their offsets:
/// it stores them at the same offsets instead of refusing them.
#[test]
fn a_follower_replicates_a_compacted_log_with_its_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = PartitionLog::open(&dir.path().join("l"), compacted(1 << 20), 0).unwrap();
    for v in ["1", "2", "3"] {
        append(
            &mut leader,
            &batch_of(&[("a", Some(v.into()))], 100, Compression::None),
            100,
        );
    }
    leader.roll(100).unwrap();
    append(
        &mut leader,
        &batch_of(&[("b", Some("x".into()))], 100, Compression::None),
        100,
    );
    pass(&mut leader, 200);
    let mut follower = PartitionLog::open(&dir.path().join("f"), compacted(1 << 20), 0).unwrap();
    let mut offset = 0;
    while offset < leader.log_end_offset() {
        let records = leader
            .read(offset, 1 << 20, i64::MAX, true)
            .unwrap()
            .records;
        follower.append_replica(&records, 300).unwrap();
        offset = follower.log_end_offset();
    }
    assert_eq!(read_all(&follower), read_all(&leader));
    assert_eq!(
        read_all(&follower),
        vec![
            (2, "a".into(), Some("3".into())),
            (3, "b".into(), Some("x".into()))
        ]
    );
}

/// A transactional batch of producer `pid` (epoch 0) with one record `key = value`.
fn txn_record(pid: i64, seq: i32, key: &str, value: &str) -> Vec<u8> {
    let record = Record {
        transactional: true,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: pid,
        producer_epoch: 0,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: seq,
        timestamp: 100,
        key: Some(Bytes::from(key.to_string())),
        value: Some(Bytes::from(value.to_string())),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, [record].iter(), &options).unwrap();
    buf.to_vec()
}

/// Data records only (markers left out).
fn data(log: &PartitionLog, markers: &[i64]) -> Vec<(i64, String, Option<String>)> {
    let mut all = read_all(log);
    all.retain(|(o, _, _)| !markers.contains(o));
    all
}

#[test]
fn aborted_records_never_supersede_and_go_and_open_transactions_are_not_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = compacted(1 << 20);
    s.min_cleanable_dirty_ratio = 0.01;
    let mut log = PartitionLog::open(dir.path(), s, 0).unwrap();
    let plain = |v: &str, k: &str| batch_of(&[(k, Some(v.into()))], 100, Compression::None);
    append(&mut log, &plain("1", "a"), 100); // 0
    append(&mut log, &txn_record(7, 0, "a", "aborted"), 100); // 1
    log.append_txn_marker(7, 0, false, 0, 0, 100).unwrap(); // 2
    append(&mut log, &plain("1", "b"), 100); // 3
    append(&mut log, &plain("2", "b"), 100); // 4
    log.roll(100).unwrap();
    assert!(pass(&mut log, 200) > 0);
    assert_eq!(
        data(&log, &[2]),
        vec![
            (0, "a".into(), Some("1".into())),
            (4, "b".into(), Some("2".into())),
        ],
        "the committed value of a stays; the aborted record is removed"
    );
    assert!(
        read_all(&log).iter().any(|(o, _, _)| *o == 2),
        "the abort marker stays"
    );
    assert_eq!(log.aborted_txns(0, 5), vec![(7, 1)]);

    // An open transaction holds cleaning back at its first offset.
    append(&mut log, &txn_record(8, 0, "c", "open"), 300); // 5
    append(&mut log, &plain("2", "c"), 300); // 6
    log.roll(300).unwrap();
    append(&mut log, &plain("x", "d"), 300); // 7
    assert!(log.plan_cleaning(log.log_end_offset(), 400).is_none());
    log.append_txn_marker(8, 0, true, 0, 0, 300).unwrap(); // 8
    assert!(pass(&mut log, 400) > 0);
    assert_eq!(
        data(&log, &[2, 8]),
        vec![
            (0, "a".into(), Some("1".into())),
            (4, "b".into(), Some("2".into())),
            (6, "c".into(), Some("2".into())),
            (7, "d".into(), Some("x".into())),
        ]
    );
}

/// What the property test appended, in offset order.
#[derive(Debug, Clone, PartialEq)]
enum Written {
    Plain(String, Option<String>),
    /// A transactional record of the (single-transaction) producer.
    Txn(i64, String, String),
    Marker,
}

/// Every record of the log as written: (offset, control, producer id, key, value).
fn read_records(log: &PartitionLog) -> Vec<(i64, bool, i64, Bytes, Option<Bytes>)> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        // A read returns batches of one segment; the next starts after the last record.
        let mut buf = log
            .read(offset, usize::MAX >> 1, i64::MAX, true)
            .unwrap()
            .records;
        if buf.is_empty() {
            return out;
        }
        for set in RecordBatchDecoder::decode_all(&mut buf).unwrap() {
            for r in set.records {
                offset = r.offset + 1;
                out.push((
                    r.offset,
                    r.control,
                    r.producer_id,
                    r.key.unwrap_or_default(),
                    r.value,
                ));
            }
        }
    }
}

/// A seeded random walk over appends (plain records and tombstones over a few keys,
/// committed and aborted transactions), segment rolls and passes with key maps of random
/// size. After every pass: no offset moved and no surviving record changed; nothing at or
/// above the cleaned point was removed; each key's latest record outside aborted
/// transactions survives; markers survive; aborted records are gone below the cleaned point
/// and the ones above it are all described by the log's aborted list, so a `read_committed`
/// reader (which drops them) sees each key's latest committed value.
#[test]
fn random_appends_and_passes_keep_every_keys_latest_committed_value() {
    let mut seed: u64 = 0xc1ea_4e55;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _round in 0..25 {
        let dir = tempfile::tempdir().unwrap();
        let mut s = compacted(1 << 20);
        s.min_cleanable_dirty_ratio = 0.01;
        // Tombstones stay (their removal has its own test): every key's latest survives.
        s.delete_retention_ms = i64::MAX / 4;
        let mut log = PartitionLog::open(dir.path(), s, 0).unwrap();
        let mut written: Vec<Written> = Vec::new();
        let mut aborted: Vec<i64> = Vec::new();
        let mut next_pid = 1000;
        for step in 0..120 {
            match next(8) {
                0..=3 => {
                    let key = format!("k{}", next(6));
                    let value = (next(6) != 0).then(|| format!("v{step}"));
                    append(
                        &mut log,
                        &batch_of(&[(&key, value.clone())], 100, Compression::None),
                        100,
                    );
                    written.push(Written::Plain(key, value));
                }
                4 | 5 => {
                    let pid = next_pid;
                    next_pid += 1;
                    for seq in 0..=next(3) as i32 {
                        let key = format!("k{}", next(6));
                        let value = format!("t{step}-{seq}");
                        append(&mut log, &txn_record(pid, seq, &key, &value), 100);
                        written.push(Written::Txn(pid, key, value));
                    }
                    let commit = next(2) == 0;
                    log.append_txn_marker(pid, 0, commit, 0, 0, 100).unwrap();
                    written.push(Written::Marker);
                    if !commit {
                        aborted.push(pid);
                    }
                }
                6 => {
                    log.roll(100).unwrap();
                }
                _ => {
                    let map = [u64::MAX, 150, 400][next(3) as usize];
                    pass_with_map(&mut log, 200, map);
                    check_cleaned_log(&log, &written, &aborted);
                }
            }
        }
        log.roll(100).unwrap();
        while log.cleaned_up_to() < log.log_end_offset() {
            let before = log.cleaned_up_to();
            pass_with_map(&mut log, 200, 150);
            assert!(log.cleaned_up_to() > before, "a pass progresses");
        }
        check_cleaned_log(&log, &written, &aborted);
    }
}

fn check_cleaned_log(log: &PartitionLog, written: &[Written], aborted: &[i64]) {
    let text = |b: &Bytes| String::from_utf8(b.to_vec()).unwrap();
    let records = read_records(log);
    assert_eq!(log.log_end_offset(), written.len() as i64);
    let present: std::collections::BTreeSet<i64> = records.iter().map(|r| r.0).collect();
    for (offset, control, pid, key, value) in &records {
        let value = value.as_ref().map(text);
        match &written[*offset as usize] {
            Written::Marker => assert!(*control, "offset {offset}: a marker"),
            Written::Plain(k, v) => assert_eq!((k, v), (&text(key), &value), "offset {offset}"),
            Written::Txn(p, k, v) => {
                assert_eq!(
                    (p, k, Some(v)),
                    (pid, &text(key), value.as_ref()),
                    "offset {offset}"
                )
            }
        }
    }
    let mut latest: BTreeMap<&str, i64> = BTreeMap::new();
    for (offset, w) in written.iter().enumerate() {
        let offset = offset as i64;
        if offset >= log.cleaned_up_to() || matches!(w, Written::Marker) {
            assert!(
                present.contains(&offset),
                "offset {offset} ({w:?}) was removed"
            );
        }
        match w {
            Written::Plain(k, _) => {
                latest.insert(k, offset);
            }
            Written::Txn(pid, k, _) if !aborted.contains(pid) => {
                latest.insert(k, offset);
            }
            _ => {}
        }
    }
    for (key, offset) in &latest {
        assert!(
            present.contains(offset),
            "the latest committed record of {key} (offset {offset}) was removed"
        );
    }
    // The aborted records left are all described to read_committed readers.
    let described = log.aborted_txns(0, log.log_end_offset());
    for (offset, control, pid, _, _) in &records {
        if aborted.contains(pid) && !control {
            assert!(
                *offset >= log.cleaned_up_to(),
                "aborted record at {offset} of producer {pid} survived a pass"
            );
            assert!(
                described.iter().any(|&(p, first)| p == *pid && first <= *offset),
                "aborted record at {offset} of producer {pid} is not in the aborted list {described:?}"
            );
        }
    }
}
