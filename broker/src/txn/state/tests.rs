use super::*;
use crate::group::offsets::CommittedOffset;

fn fresh(id: &str) -> TransactionMeta {
    match init_producer_id(None, id, 60_000, None, Some(7), 0).unwrap() {
        InitDecision::Ready(m) => m,
        other => panic!("{other:?}"),
    }
}

/// Applies a coordinator write the way the image does, with the version it would carry.
fn put(txns: &mut BTreeMap<String, TransactionMeta>, mut meta: TransactionMeta) -> bool {
    meta.version = txns.get(&meta.transactional_id).map_or(0, |m| m.version) + 1;
    let before = txns.get(&meta.transactional_id).cloned();
    apply_put(txns, &meta, false);
    txns.get(&meta.transactional_id) != before.as_ref()
}

fn tp(t: &str, p: i32) -> (String, i32) {
    (t.to_string(), p)
}

fn offset(topic: &str, partition: i32, at: i64) -> ReplicatedOffset {
    ReplicatedOffset {
        topic: topic.into(),
        partition,
        committed: Some(CommittedOffset {
            offset: at,
            leader_epoch: -1,
            metadata: None,
            commit_ms: 0,
        }),
    }
}

#[test]
fn a_commit_goes_through_prepare_and_completes_when_every_marker_is_written() {
    let mut txns = BTreeMap::new();
    assert!(put(&mut txns, fresh("t")));
    let m = add_to_transaction(txns.get("t"), 7, 0, &[tp("a", 0), tp("b", 1)], None, 5)
        .unwrap()
        .unwrap();
    assert_eq!(m.status, TxnStatus::Ongoing);
    assert_eq!(m.start_ms, 5);
    assert!(put(&mut txns, m));
    // Adding what is already there writes nothing.
    assert_eq!(
        add_to_transaction(txns.get("t"), 7, 0, &[tp("a", 0)], None, 6),
        Ok(None)
    );
    let EndDecision::Prepare(m) = end_transaction(txns.get("t"), 7, 0, true, 7).unwrap() else {
        panic!("expected a prepare")
    };
    assert_eq!(m.status, TxnStatus::PrepareCommit);
    assert_eq!(m.pending_markers.len(), 2);
    assert!(put(&mut txns, m));
    // While markers are written the producer waits.
    assert_eq!(
        add_to_transaction(txns.get("t"), 7, 0, &[tp("a", 0)], None, 8),
        Err(ErrorCode::ConcurrentTransactions)
    );
    assert_eq!(
        end_transaction(txns.get("t"), 7, 0, true, 8),
        Err(ErrorCode::ConcurrentTransactions)
    );
    apply_markers_written(&mut txns, "t", 7, 0, &[tp("a", 0)]);
    assert_eq!(txns["t"].status, TxnStatus::PrepareCommit);
    apply_markers_written(&mut txns, "t", 7, 0, &[tp("b", 1)]);
    assert_eq!(txns["t"].status, TxnStatus::CompleteCommit);
    assert!(txns["t"].partitions.is_empty());
    // A retried EndTxn is answered as done; the opposite outcome is refused.
    assert_eq!(
        end_transaction(txns.get("t"), 7, 0, true, 9),
        Ok(EndDecision::AlreadyDone)
    );
    assert_eq!(
        end_transaction(txns.get("t"), 7, 0, false, 9),
        Err(ErrorCode::InvalidTxnState)
    );
    // The next transaction starts from scratch.
    let m = add_to_transaction(txns.get("t"), 7, 0, &[tp("c", 0)], None, 10)
        .unwrap()
        .unwrap();
    assert_eq!(m.partitions.len(), 1);
    assert_eq!(m.start_ms, 10);
}

#[test]
fn offsets_are_committed_only_by_a_committed_transaction() {
    for commit in [true, false] {
        let mut txns = BTreeMap::new();
        put(&mut txns, fresh("t"));
        let m = add_to_transaction(txns.get("t"), 7, 0, &[], Some("g"), 1)
            .unwrap()
            .unwrap();
        put(&mut txns, m);
        assert_eq!(
            check_offset_commit(txns.get("t"), 7, 0, "other"),
            Err(ErrorCode::InvalidTxnState),
            "a group not added to the transaction"
        );
        assert!(apply_offset_commit(
            &mut txns,
            "t",
            7,
            0,
            "g",
            &[offset("in", 0, 10)]
        ));
        assert!(apply_offset_commit(
            &mut txns,
            "t",
            7,
            0,
            "g",
            &[offset("in", 0, 12)]
        ));
        assert!(!apply_offset_commit(
            &mut txns,
            "t",
            7,
            1,
            "g",
            &[offset("in", 0, 99)]
        ));
        let EndDecision::Prepare(mut m) = end_transaction(txns.get("t"), 7, 0, commit, 2).unwrap()
        else {
            panic!()
        };
        // No partitions: the Prepare state completes as it is applied.
        m.version = txns["t"].version + 1;
        let committed = apply_put(&mut txns, &m, false);
        if commit {
            let committed = committed.expect("offsets to commit");
            assert_eq!(committed["g"], vec![offset("in", 0, 12)]);
            assert_eq!(txns["t"].status, TxnStatus::CompleteCommit);
        } else {
            assert_eq!(committed, None);
            assert_eq!(txns["t"].status, TxnStatus::CompleteAbort);
        }
        assert!(txns["t"].pending_offsets.is_empty());
    }
}

#[test]
fn init_producer_id_bumps_the_epoch_and_aborts_an_open_transaction_first() {
    let mut txns = BTreeMap::new();
    put(&mut txns, fresh("t"));
    let m = add_to_transaction(txns.get("t"), 7, 0, &[tp("a", 0)], None, 1)
        .unwrap()
        .unwrap();
    put(&mut txns, m);
    // A new instance of the producer: the open transaction is aborted under a bumped epoch,
    // which fences the old instance.
    let InitDecision::AbortFirst(m) =
        init_producer_id(txns.get("t"), "t", 60_000, None, None, 2).unwrap()
    else {
        panic!()
    };
    assert_eq!((m.status, m.producer_epoch), (TxnStatus::PrepareAbort, 1));
    put(&mut txns, m);
    assert_eq!(
        add_to_transaction(txns.get("t"), 7, 0, &[tp("a", 0)], None, 3),
        Err(ErrorCode::ProducerFenced),
        "the old instance is fenced"
    );
    assert_eq!(
        init_producer_id(txns.get("t"), "t", 60_000, None, None, 3),
        Err(ErrorCode::ConcurrentTransactions)
    );
    apply_markers_written(&mut txns, "t", 7, 1, &[tp("a", 0)]);
    assert_eq!(txns["t"].status, TxnStatus::CompleteAbort);
    let InitDecision::Ready(m) =
        init_producer_id(txns.get("t"), "t", 30_000, None, None, 4).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (m.producer_id, m.producer_epoch, m.timeout_ms),
        (7, 2, 30_000)
    );
    put(&mut txns, m);
    // KIP-360: the producer names its id and epoch; a retry naming the previous epoch gets
    // the same answer, a stale one is fenced.
    assert!(matches!(
        init_producer_id(txns.get("t"), "t", 30_000, Some((7, 1)), None, 5),
        Ok(InitDecision::Unchanged(m)) if m.producer_epoch == 2
    ));
    assert_eq!(
        init_producer_id(txns.get("t"), "t", 30_000, Some((7, 0)), None, 5),
        Err(ErrorCode::ProducerFenced)
    );
    assert!(matches!(
        init_producer_id(txns.get("t"), "t", 30_000, Some((7, 2)), None, 5),
        Ok(InitDecision::Ready(m)) if m.producer_epoch == 3
    ));
}

#[test]
fn an_exhausted_epoch_gets_a_new_producer_id() {
    let mut m = fresh("t");
    m.producer_epoch = LAST_USABLE_EPOCH;
    assert!(needs_new_producer_id(Some(&m)));
    let InitDecision::Ready(next) =
        init_producer_id(Some(&m), "t", 1000, None, Some(9), 1).unwrap()
    else {
        panic!()
    };
    assert_eq!((next.producer_id, next.producer_epoch), (9, 0));
}

#[test]
fn stale_requests_are_refused() {
    let mut txns = BTreeMap::new();
    assert_eq!(
        add_to_transaction(None, 7, 0, &[tp("a", 0)], None, 1),
        Err(ErrorCode::InvalidProducerIdMapping)
    );
    put(&mut txns, fresh("t"));
    assert_eq!(
        add_to_transaction(txns.get("t"), 8, 0, &[tp("a", 0)], None, 1),
        Err(ErrorCode::InvalidProducerIdMapping)
    );
    assert_eq!(
        end_transaction(txns.get("t"), 7, 0, true, 1),
        Err(ErrorCode::InvalidTxnState),
        "nothing to commit"
    );
    // A write computed from an old version is not applied.
    let mut stale = add_to_transaction(txns.get("t"), 7, 0, &[tp("a", 0)], None, 1)
        .unwrap()
        .unwrap();
    stale.version = txns["t"].version;
    assert_eq!(apply_put(&mut txns, &stale, false), None);
    assert_eq!(txns["t"].status, TxnStatus::Empty);
    // Markers from an older epoch change nothing.
    let m = add_to_transaction(txns.get("t"), 7, 0, &[tp("a", 0)], None, 1)
        .unwrap()
        .unwrap();
    put(&mut txns, m);
    let EndDecision::Prepare(m) = end_transaction(txns.get("t"), 7, 0, false, 2).unwrap() else {
        panic!()
    };
    put(&mut txns, m);
    apply_markers_written(&mut txns, "t", 7, 5, &[tp("a", 0)]);
    assert_eq!(txns["t"].status, TxnStatus::PrepareAbort);
}

#[test]
fn a_transaction_past_its_timeout_is_aborted_with_a_bumped_epoch() {
    let mut txns = BTreeMap::new();
    put(&mut txns, fresh("t"));
    let m = add_to_transaction(txns.get("t"), 7, 0, &[tp("a", 0)], None, 1_000)
        .unwrap()
        .unwrap();
    put(&mut txns, m);
    assert_eq!(timeout_abort(&txns["t"], 61_000), None);
    let m = timeout_abort(&txns["t"], 61_001).unwrap();
    assert_eq!((m.status, m.producer_epoch), (TxnStatus::PrepareAbort, 1));
    assert_eq!(m.pending_markers, BTreeSet::from([tp("a", 0)]));
    put(&mut txns, m);
    assert_eq!(timeout_abort(&txns["t"], 99_000), None, "only open ones");
}

/// A seeded random walk over every operation: whatever the order, a transaction is never
/// both committed and aborted, completes only when its markers are all written, and commits
/// offsets only for a commit.
#[test]
fn random_operations_keep_the_invariants() {
    let mut seed: u64 = 0x5eed;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _ in 0..200 {
        let mut txns = BTreeMap::new();
        put(&mut txns, fresh("t"));
        for step in 0..60 {
            let now = step as i64 * 1000;
            let cur = txns["t"].clone();
            let (pid, epoch) = (cur.producer_id, cur.producer_epoch);
            let before = cur.status;
            match next(6) {
                0 => {
                    let part = tp("p", next(3) as i32);
                    if let Ok(Some(m)) =
                        add_to_transaction(Some(&cur), pid, epoch, &[part], None, now)
                    {
                        put(&mut txns, m);
                    }
                }
                1 => {
                    if let Ok(Some(m)) =
                        add_to_transaction(Some(&cur), pid, epoch, &[], Some("g"), now)
                    {
                        put(&mut txns, m);
                    }
                    apply_offset_commit(&mut txns, "t", pid, epoch, "g", &[offset("p", 0, now)]);
                }
                2 => {
                    if let Ok(EndDecision::Prepare(mut m)) =
                        end_transaction(Some(&cur), pid, epoch, next(2) == 0, now)
                    {
                        m.version = cur.version + 1;
                        let commit = m.status == TxnStatus::PrepareCommit;
                        if apply_put(&mut txns, &m, false).is_some() {
                            assert!(commit, "offsets committed by an abort");
                        }
                    }
                }
                3 => {
                    let pending: Vec<_> = cur.pending_markers.iter().cloned().collect();
                    if let Some(p) = pending.first() {
                        let was_commit = cur.status == TxnStatus::PrepareCommit;
                        let done = apply_markers_written(
                            &mut txns,
                            "t",
                            pid,
                            epoch,
                            std::slice::from_ref(p),
                        );
                        if done.is_some() {
                            assert!(was_commit, "offsets committed by an abort");
                        }
                    }
                }
                4 => {
                    if let Ok(InitDecision::Ready(m) | InitDecision::AbortFirst(m)) =
                        init_producer_id(Some(&cur), "t", 60_000, None, None, now)
                    {
                        put(&mut txns, m);
                    }
                }
                _ => {
                    if let Some(m) = timeout_abort(&cur, now + 120_000) {
                        put(&mut txns, m);
                    }
                }
            }
            let after = &txns["t"];
            // Prepare → Complete keeps the outcome.
            match (before, after.status) {
                (TxnStatus::PrepareCommit, TxnStatus::CompleteAbort | TxnStatus::PrepareAbort)
                | (TxnStatus::PrepareAbort, TxnStatus::CompleteCommit | TxnStatus::PrepareCommit) =>
                {
                    panic!("{before:?} became {:?}", after.status)
                }
                _ => {}
            }
            if after.status.is_preparing() {
                assert!(!after.pending_markers.is_empty());
                assert!(after.pending_markers.is_subset(&after.partitions));
            } else {
                assert!(after.pending_markers.is_empty());
            }
            if matches!(
                after.status,
                TxnStatus::CompleteCommit | TxnStatus::CompleteAbort
            ) {
                assert!(after.pending_offsets.is_empty() && after.partitions.is_empty());
            }
            assert!(after.version >= cur.version);
        }
    }
}

#[test]
fn an_idle_transactional_id_expires_unless_it_changed_meanwhile() {
    let mut txns = BTreeMap::new();
    put(&mut txns, fresh("t"));
    let m = txns["t"].clone();
    assert!(!expired(&m, 1_000, 1_000));
    assert!(expired(&m, 1_001, 1_000));
    // A transaction in flight never expires.
    let open = add_to_transaction(Some(&m), 7, 0, &[tp("a", 0)], None, 0)
        .unwrap()
        .unwrap();
    assert!(!expired(&open, i64::MAX, 1_000));
    // The removal names the version it saw: a change in between keeps the id.
    put(&mut txns, open);
    apply_remove(&mut txns, "t", m.version);
    assert!(txns.contains_key("t"));
    let current = txns["t"].version;
    apply_remove(&mut txns, "t", current);
    assert!(!txns.contains_key("t"));
}
