//! Transaction state through the whole log: leader appends and markers, reads up to the last
//! stable offset, recovery with and without a producer snapshot, followers, truncation,
//! retention, and random interleavings checked against a model.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

use super::super::PartitionLog;
use crate::log::batch::test_support::{make_batch, make_transactional_batch};
use crate::log::batch::{self, BatchHeader};
use crate::log::txn_state::{AbortedTxn, TxnState};
use crate::log::{AppendError, AppendOutcome};
use crate::protocol::errors::ErrorCode;
use crate::topic_config::TopicSettings;

fn settings(segment_bytes: u64) -> TopicSettings {
    let mut s = TopicSettings::resolve(&BTreeMap::new(), &BTreeMap::new());
    s.segment_bytes = segment_bytes;
    s
}

fn append_bytes(log: &mut PartitionLog, b: &[u8]) -> Result<AppendOutcome, AppendError> {
    let hs = batch::validate_all(b).unwrap();
    log.append(b, &hs, 0, 0)
}

/// A transactional batch of `n` records; returns its base offset.
fn txn(log: &mut PartitionLog, pid: i64, epoch: i16, seq: i32, n: usize) -> i64 {
    append_bytes(log, &make_transactional_batch(n, (pid, epoch, seq), 0))
        .unwrap()
        .base_offset
}

fn plain(log: &mut PartitionLog, n: usize) -> i64 {
    append_bytes(log, &make_batch(n, None, 0))
        .unwrap()
        .base_offset
}

fn marker(log: &mut PartitionLog, pid: i64, epoch: i16, commit: bool) -> i64 {
    log.append_txn_marker(pid, epoch, commit, 0, 0, 0)
        .unwrap()
        .base_offset
}

fn state(log: &PartitionLog) -> TxnState {
    log.producers.txns().clone()
}

#[test]
fn commits_and_aborts_move_the_last_stable_offset_and_fill_the_aborted_list() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), settings(1 << 20), 0).unwrap();
    assert_eq!(txn(&mut log, 1, 0, 0, 3), 0);
    assert_eq!(txn(&mut log, 2, 0, 0, 1), 3);
    assert_eq!(plain(&mut log, 1), 4);
    assert_eq!(txn(&mut log, 1, 0, 3, 1), 5);
    assert_eq!(log.first_unstable_offset(), Some(0));
    assert_eq!(log.last_stable_offset(6), 0);
    assert!(log.has_open_txn(1) && log.has_open_txn(2) && !log.has_open_txn(3));

    assert_eq!(marker(&mut log, 1, 0, true), 6);
    assert_eq!(log.first_unstable_offset(), Some(3));
    assert_eq!(log.last_stable_offset(7), 3);
    assert_eq!(
        log.last_stable_offset(2),
        2,
        "never above the high watermark"
    );
    assert!(log.aborted_txns(0, 7).is_empty(), "a commit is not listed");

    assert_eq!(marker(&mut log, 2, 0, false), 7);
    assert_eq!(log.first_unstable_offset(), None);
    assert_eq!(log.last_stable_offset(8), 8);
    assert_eq!(log.aborted_txns(0, 8), vec![(2, 3)]);

    // The coordinator retrying both markers writes them again; nothing else changes.
    let before = state(&log);
    assert_eq!(marker(&mut log, 2, 0, false), 8);
    assert_eq!(marker(&mut log, 1, 0, true), 9);
    assert_eq!(state(&log), before);
    assert_eq!(log.log_end_offset(), 10);
}

#[test]
fn a_marker_of_an_older_epoch_is_refused_and_a_newer_one_fences() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), settings(1 << 20), 0).unwrap();
    txn(&mut log, 1, 3, 0, 1);
    assert!(matches!(
        log.append_txn_marker(1, 2, true, 0, 0, 0),
        Err(AppendError::Protocol(ErrorCode::InvalidProducerEpoch))
    ));
    assert!(matches!(
        log.append_txn_marker(-1, 0, true, 0, 0, 0),
        Err(AppendError::Protocol(ErrorCode::InvalidRecord))
    ));
    assert_eq!(log.log_end_offset(), 1, "refused markers write nothing");
    // The coordinator aborts with a bumped epoch (a timed-out transaction, KIP-588).
    assert_eq!(marker(&mut log, 1, 4, false), 1);
    assert_eq!(log.aborted_txns(0, 2), vec![(1, 0)]);
    let zombie = make_transactional_batch(1, (1, 3, 1), 0);
    assert!(matches!(
        append_bytes(&mut log, &zombie),
        Err(AppendError::Protocol(ErrorCode::InvalidProducerEpoch))
    ));
    assert_eq!(
        txn(&mut log, 1, 4, 0, 1),
        2,
        "the new epoch starts at sequence 0"
    );
    // Clients may not write markers through the produce path.
    let forged = crate::log::txn_marker::encode(1, 4, crate::log::MarkerType::Commit, 0, 0);
    assert!(matches!(
        append_bytes(&mut log, &forged),
        Err(AppendError::Protocol(ErrorCode::InvalidRecord))
    ));
    // A plain batch from a producer with an open transaction does not belong to it.
    let plain_batch = make_batch(1, Some((1, 4, 1)), 0);
    assert!(matches!(
        append_bytes(&mut log, &plain_batch),
        Err(AppendError::Protocol(ErrorCode::InvalidTxnState))
    ));
}

/// What a `read_committed` client gets from the log: batches below the last stable offset,
/// and the aborted transactions to drop records of, bounded by the end of what it read.
#[test]
fn a_read_committed_reader_sees_stable_data_and_the_aborts_it_overlaps() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), settings(1 << 20), 0).unwrap();
    txn(&mut log, 1, 0, 0, 2); // 0..=1, aborted below
    plain(&mut log, 1); // 2
    marker(&mut log, 1, 0, false); // 3
    txn(&mut log, 2, 0, 0, 1); // 4, committed below
    txn(&mut log, 3, 0, 0, 1); // 5, still open
    marker(&mut log, 2, 0, true); // 6
    plain(&mut log, 1); // 7
    let hw = log.log_end_offset();
    let lso = log.last_stable_offset(hw);
    assert_eq!(lso, 5);
    let (region, upper) = log.locate_span(0, 1 << 20, lso, true).unwrap().unwrap();
    assert_eq!(upper, 5, "the read stops before the open transaction");
    let mut bytes = region.read().unwrap();
    let offsets: Vec<i64> = RecordBatchDecoder::decode_all(&mut bytes)
        .unwrap()
        .into_iter()
        .flat_map(|set| set.records.into_iter().map(|r| r.offset))
        .collect();
    assert_eq!(offsets, vec![0, 1, 2, 3, 4]);
    assert_eq!(log.aborted_txns(0, upper), vec![(1, 0)]);
    // A read that starts after the abort marker gets no aborted transaction.
    let (_, upper) = log.locate_span(4, 1 << 20, lso, true).unwrap().unwrap();
    assert!(log.aborted_txns(4, upper).is_empty());
    // A small read stops at the first batch and is bounded by the next one.
    let (_, upper) = log.locate_span(0, 1, lso, true).unwrap().unwrap();
    assert_eq!(upper, 2);
    assert!(log.locate_span(5, 1 << 20, lso, true).unwrap().is_none());
}

/// Three producers with transactions spanning several segments.
fn busy_log(log: &mut PartitionLog) {
    let mut seq: HashMap<i64, i32> = HashMap::new();
    for round in 0..12 {
        for pid in 1..=3i64 {
            let s = seq.entry(pid).or_default();
            txn(log, pid, 0, *s, 2);
            *s += 2;
            if (round + pid) % 3 == 0 {
                marker(log, pid, 0, round % 2 == 0);
            }
        }
    }
}

#[test]
fn transaction_state_survives_a_reopen_with_and_without_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(600);
    let mut log = PartitionLog::open(dir.path(), s.clone(), 0).unwrap();
    busy_log(&mut log);
    assert!(log.segment_count() > 3, "snapshots were written");
    let expected = state(&log);
    assert!(!expected.aborted().is_empty() && expected.first_unstable_offset().is_some());
    drop(log);
    let log = PartitionLog::open(dir.path(), s.clone(), 0).unwrap();
    assert_eq!(state(&log), expected, "snapshot and active segment");
    drop(log);
    for e in std::fs::read_dir(dir.path()).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "snapshot") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    let log = PartitionLog::open(dir.path(), s, 0).unwrap();
    assert_eq!(state(&log), expected, "a full rescan");
}

fn replicate(leader: &PartitionLog, follower: &mut PartitionLog) {
    let mut offset = follower.log_end_offset();
    while offset < leader.log_end_offset() {
        let r = leader.read(offset, 500, i64::MAX, true).unwrap();
        follower.append_replica(&r.records, 0).unwrap();
        offset = follower.log_end_offset();
    }
}

#[test]
fn a_follower_builds_the_same_state_and_truncation_reopens_a_transaction() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = PartitionLog::open(a.path(), settings(600), 0).unwrap();
    busy_log(&mut leader);
    let mut follower = PartitionLog::open(b.path(), settings(600), 0).unwrap();
    replicate(&leader, &mut follower);
    assert_eq!(state(&follower), state(&leader));

    // Cut the follower just before the last abort marker: that transaction is open again.
    let last = *leader.producers.txns().aborted().last().unwrap();
    follower.truncate_to(last.last_offset, 0).unwrap();
    assert!(follower.has_open_txn(last.producer_id));
    assert!(!follower.producers.txns().aborted().contains(&last));
    replicate(&leader, &mut follower);
    assert_eq!(state(&follower), state(&leader));
}

#[test]
fn aborted_transactions_below_the_log_start_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), settings(1 << 20), 0).unwrap();
    txn(&mut log, 1, 0, 0, 1); // 0
    marker(&mut log, 1, 0, false); // 1
    txn(&mut log, 2, 0, 0, 1); // 2
    marker(&mut log, 2, 0, false); // 3
    assert_eq!(log.aborted_txns(0, 4).len(), 2);
    log.advance_log_start(2).unwrap();
    assert_eq!(log.producers.txns().aborted().len(), 1);
    assert_eq!(log.aborted_txns(0, 4), vec![(2, 2)]);
    // An open transaction that starts below the log start is unstable from the log start.
    txn(&mut log, 3, 0, 0, 1); // 4
    plain(&mut log, 1); // 5
    log.advance_log_start(5).unwrap();
    assert_eq!(log.first_unstable_offset(), Some(5));
}

/// A small deterministic generator (xorshift64*), so the random test needs no dependency and
/// every failure reproduces.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Random interleavings of four producers' transactional batches, commits, aborts (some of
/// them retried), plain batches and rolls, against a model: after every step the first
/// unstable offset is the smallest first offset of the open transactions and the aborted
/// list is exactly the aborted ones; at the end a reopen (with and without snapshots) and a
/// follower agree.
#[test]
fn random_interleavings_match_a_model() {
    for seed in 1..=12u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let s = settings(400 + 100 * (seed % 5));
        let mut log = PartitionLog::open(a.path(), s.clone(), 0).unwrap();
        let mut seqs = [0i32; 5];
        let mut open: BTreeMap<i64, i64> = BTreeMap::new();
        let mut aborted: Vec<AbortedTxn> = Vec::new();
        for step in 0..300 {
            let pid = 1 + rng.below(4) as i64;
            match rng.below(20) {
                0..=9 => {
                    let n = 1 + rng.below(3) as usize;
                    let at = txn(&mut log, pid, 0, seqs[pid as usize], n);
                    seqs[pid as usize] += n as i32;
                    open.entry(pid).or_insert(at);
                }
                10..=16 => {
                    let commit = rng.below(2) == 0;
                    let at = marker(&mut log, pid, 0, commit);
                    if let Some(first) = open.remove(&pid) {
                        if !commit {
                            aborted.push(AbortedTxn {
                                producer_id: pid,
                                first_offset: first,
                                last_offset: at,
                            });
                        }
                    }
                }
                17..=18 => {
                    plain(&mut log, 1);
                }
                _ => log.roll(0).unwrap(),
            }
            let leo = log.log_end_offset();
            let ctx = format!("seed {seed} step {step}");
            assert_eq!(
                log.first_unstable_offset(),
                open.values().copied().min(),
                "{ctx}"
            );
            assert_eq!(
                log.last_stable_offset(leo),
                open.values().copied().min().unwrap_or(leo),
                "{ctx}"
            );
            assert_eq!(log.producers.txns().aborted(), aborted.as_slice(), "{ctx}");
            for p in 1..=4 {
                assert_eq!(log.has_open_txn(p), open.contains_key(&p), "{ctx}");
            }
        }
        let expected = state(&log);
        let all: Vec<(i64, i64)> = aborted
            .iter()
            .map(|t| (t.producer_id, t.first_offset))
            .collect();
        assert_eq!(log.aborted_txns(0, i64::MAX), all);
        let mut follower = PartitionLog::open(b.path(), s.clone(), 0).unwrap();
        replicate(&log, &mut follower);
        assert_eq!(state(&follower), expected, "seed {seed}: follower");
        drop(log);
        let log = PartitionLog::open(a.path(), s.clone(), 0).unwrap();
        assert_eq!(state(&log), expected, "seed {seed}: reopened");
        drop(log);
        for e in std::fs::read_dir(a.path()).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "snapshot") {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
        let log = PartitionLog::open(a.path(), s, 0).unwrap();
        assert_eq!(state(&log), expected, "seed {seed}: rescanned");
    }
}

#[test]
fn markers_are_stored_with_their_offset_epoch_and_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), settings(1 << 20), 0).unwrap();
    txn(&mut log, 7, 1, 0, 1);
    let out = log.append_txn_marker(7, 1, true, 5, 3, 1_234).unwrap();
    assert_eq!(
        (out.base_offset, out.last_offset, out.record_count),
        (1, 1, 1)
    );
    let r = log.read(1, 1 << 20, i64::MAX, true).unwrap();
    let h: BatchHeader = batch::validate(&r.records).unwrap();
    assert!(h.is_control() && h.is_transactional());
    assert_eq!((h.base_offset, h.partition_leader_epoch), (1, 3));
    assert_eq!(log.end_offset_for_epoch(3), (3, 2));
    let set = RecordBatchDecoder::decode(&mut Bytes::from(r.records.to_vec())).unwrap();
    assert_eq!(
        set.records[0].value.as_deref(),
        Some(&[0u8, 0, 0, 0, 0, 5][..])
    );
}
