//! The consumer group state machine against scripted and random member behaviour.
use super::*;

const T: Timeouts = Timeouts {
    session: Duration::from_secs(45),
    heartbeat_interval: Duration::from_secs(5),
};

fn topics() -> TopicsView {
    TopicsView::from([
        ("orders".to_string(), (Uuid::from_u128(1), 6)),
        ("audit".to_string(), (Uuid::from_u128(2), 2)),
    ])
}

fn join(id: &str, names: &[&str]) -> Heartbeat {
    Heartbeat {
        member_id: id.into(),
        member_epoch: 0,
        rebalance_timeout_ms: 30_000,
        subscribed_topic_names: Some(names.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    }
}

fn beat(id: &str, epoch: i32, owned: Option<Assignment>) -> Heartbeat {
    Heartbeat {
        member_id: id.into(),
        member_epoch: epoch,
        rebalance_timeout_ms: -1,
        owned,
        ..Default::default()
    }
}

fn hb(g: &mut ConsumerGroup, h: Heartbeat, now: Instant) -> HeartbeatOutcome {
    g.heartbeat(h, &topics(), now, T, || "generated".into())
        .expect("accepted")
}

/// No partition is owned (assigned or being revoked) by two members at any time.
fn check_exclusive(g: &ConsumerGroup) {
    let mut seen = BTreeSet::new();
    for m in g.members.values() {
        for (t, parts) in assignor::union(&m.assigned, &m.revoking) {
            for p in parts {
                assert!(seen.insert((t, p)), "{t}-{p} owned twice: {g:#?}");
            }
        }
    }
}

#[test]
fn a_lone_member_gets_every_partition_at_once() {
    let mut g = ConsumerGroup::new("g");
    let now = Instant::now();
    let out = hb(&mut g, join("a", &["orders"]), now);
    assert_eq!(out.member_epoch, 1);
    let a = out.assignment.expect("assignment on join");
    assert_eq!(assignor::size(&a), 6);
    assert_eq!(state_name(&g), "Stable");
    // A steady heartbeat changes nothing and resends nothing.
    let again = hb(&mut g, beat("a", 1, None), now);
    assert_eq!((again.member_epoch, again.assignment), (1, None));
}

#[test]
fn a_second_member_gets_partitions_only_after_the_first_revokes_them() {
    let mut g = ConsumerGroup::new("g");
    let now = Instant::now();
    let a1 = hb(&mut g, join("a", &["orders"]), now).assignment.unwrap();
    let b = hb(&mut g, join("b", &["orders"]), now);
    // b joined at epoch 2, but a still owns everything: b gets nothing yet.
    assert_eq!(b.member_epoch, 2);
    assert_eq!(b.assignment.map(|a| assignor::size(&a)), Some(0));
    check_exclusive(&g);
    assert_eq!(state_name(&g), "Reconciling");
    // a is told to keep half; its epoch stays until it confirms.
    let a = hb(&mut g, beat("a", 1, None), now);
    let kept = a.assignment.expect("reduced assignment");
    assert_eq!((a.member_epoch, assignor::size(&kept)), (1, 3));
    check_exclusive(&g);
    // b still waits: the other half is being revoked.
    let b = hb(&mut g, beat("b", 2, Some(Assignment::new())), now);
    assert_eq!(b.assignment, None);
    // a confirms it owns only what it kept: it advances, and b then gets the rest.
    let a = hb(&mut g, beat("a", 1, Some(kept.clone())), now);
    assert_eq!(a.member_epoch, 2);
    let b = hb(&mut g, beat("b", 2, Some(Assignment::new())), now);
    let got = b.assignment.expect("b's partitions");
    assert_eq!(assignor::size(&got), 3);
    assert_eq!(assignor::union(&got, &kept), a1);
    check_exclusive(&g);
    hb(&mut g, beat("b", 2, Some(got)), now);
    assert_eq!(state_name(&g), "Stable");
}

#[test]
fn a_member_leaving_hands_its_partitions_to_the_others() {
    let mut g = ConsumerGroup::new("g");
    let now = Instant::now();
    hb(&mut g, join("a", &["orders"]), now);
    hb(&mut g, join("b", &["orders"]), now);
    let kept = hb(&mut g, beat("a", 1, None), now).assignment.unwrap();
    hb(&mut g, beat("a", 1, Some(kept)), now);
    let b = hb(&mut g, beat("b", 2, Some(Assignment::new())), now);
    assert_eq!(assignor::size(&b.assignment.unwrap()), 3);
    let left = hb(&mut g, beat("b", LEAVE, None), now);
    assert_eq!(left.member_epoch, LEAVE);
    let a = hb(&mut g, beat("a", 2, None), now);
    assert_eq!(a.member_epoch, 3);
    assert_eq!(assignor::size(&a.assignment.unwrap()), 6);
}

#[test]
fn silent_members_are_removed_after_their_session() {
    let mut g = ConsumerGroup::new("g");
    let now = Instant::now();
    hb(&mut g, join("a", &["orders"]), now);
    assert!(g.expire(now + Duration::from_secs(44)).is_empty());
    assert_eq!(
        g.expire(now + Duration::from_secs(46)),
        vec!["a".to_string()]
    );
    assert!(g.is_empty());
    assert_eq!(state_name(&g), "Empty");
}

#[test]
fn a_member_that_does_not_revoke_in_time_is_removed() {
    let mut g = ConsumerGroup::new("g");
    let now = Instant::now();
    hb(&mut g, join("a", &["orders"]), now);
    hb(&mut g, join("b", &["orders"]), now);
    hb(&mut g, beat("a", 1, None), now); // told to revoke, never confirms
    hb(&mut g, beat("b", 2, None), now + Duration::from_secs(29));
    let gone = g.expire(now + Duration::from_secs(31));
    assert_eq!(gone, vec!["a".to_string()]);
    let b = hb(&mut g, beat("b", 2, None), now + Duration::from_secs(31));
    assert_eq!(assignor::size(&b.assignment.unwrap()), 6);
}

#[test]
fn fenced_and_unknown_members_are_told_so() {
    let mut g = ConsumerGroup::new("g");
    let now = Instant::now();
    hb(&mut g, join("a", &["orders"]), now);
    let err = |g: &mut ConsumerGroup, h| {
        g.heartbeat(h, &topics(), now, T, String::new)
            .unwrap_err()
            .code
    };
    assert_eq!(
        err(&mut g, beat("a", 7, None)),
        ErrorCode::FencedMemberEpoch
    );
    assert_eq!(
        err(&mut g, beat("nobody", 1, None)),
        ErrorCode::UnknownMemberId
    );
    let mut bad = join("c", &["orders"]);
    bad.server_assignor = Some("sticky-ish".into());
    assert_eq!(err(&mut g, bad), ErrorCode::UnsupportedAssignor);
    let mut no_subscription = join("d", &[]);
    no_subscription.subscribed_topic_names = None;
    assert_eq!(err(&mut g, no_subscription), ErrorCode::InvalidRequest);
    let mut bad_regex = join("e", &[]);
    bad_regex.subscribed_topic_regex = Some("(".into());
    assert_eq!(err(&mut g, bad_regex), ErrorCode::InvalidRegularExpression);
}

#[test]
fn a_regex_subscription_follows_matching_topics() {
    let mut g = ConsumerGroup::new("g");
    let now = Instant::now();
    let mut h = join("a", &[]);
    h.subscribed_topic_names = None;
    h.subscribed_topic_regex = Some("ord.*".into());
    let a = hb(&mut g, h, now).assignment.unwrap();
    assert_eq!(a.keys().collect::<Vec<_>>(), vec![&Uuid::from_u128(1)]);
    assert_eq!(assignor::size(&a), 6);
}

#[test]
fn new_partitions_of_a_subscribed_topic_are_assigned() {
    let mut g = ConsumerGroup::new("g");
    let now = Instant::now();
    hb(&mut g, join("a", &["audit"]), now);
    let mut grown = topics();
    grown.insert("audit".into(), (Uuid::from_u128(2), 4));
    let out = g
        .heartbeat(beat("a", 1, None), &grown, now, T, String::new)
        .unwrap();
    assert_eq!(out.member_epoch, 2);
    assert_eq!(assignor::size(&out.assignment.unwrap()), 4);
}

#[test]
fn a_static_member_restarting_keeps_its_partitions_without_a_rebalance() {
    let mut g = ConsumerGroup::new("g");
    let now = Instant::now();
    let mut h = join("a1", &["orders"]);
    h.instance_id = Some("app-0".into());
    let first = hb(&mut g, h.clone(), now).assignment.unwrap();
    let epoch = g.epoch;
    let mut bye = beat("a1", LEFT_STATIC, None);
    bye.instance_id = Some("app-0".into());
    assert_eq!(hb(&mut g, bye, now).member_epoch, LEFT_STATIC);
    h.member_id = "a2".into();
    let back = hb(&mut g, h.clone(), now);
    assert_eq!(back.member_id, "a2");
    assert_eq!(back.assignment, Some(first));
    assert_eq!(g.epoch, epoch, "no rebalance");
    // While it is in the group, another process with the same instance id is refused.
    h.member_id = "a3".into();
    let err = g.heartbeat(h, &topics(), now, T, String::new).unwrap_err();
    assert_eq!(err.code, ErrorCode::UnreleasedInstanceId);
}

#[test]
fn commits_need_the_current_member_epoch() {
    let mut g = ConsumerGroup::new("g");
    let now = Instant::now();
    hb(&mut g, join("a", &["orders"]), now);
    assert!(g.check_commit("a", 1).is_ok());
    assert_eq!(
        g.check_commit("a", 0).unwrap_err().code,
        ErrorCode::StaleMemberEpoch
    );
    assert_eq!(
        g.check_commit("x", 1).unwrap_err().code,
        ErrorCode::UnknownMemberId
    );
    assert_eq!(
        g.check_commit("", -1).unwrap_err().code,
        ErrorCode::UnknownMemberId
    );
    g.expire(now + Duration::from_secs(60));
    assert!(
        g.check_commit("", -1).is_ok(),
        "admin commit to an empty group"
    );
}

#[test]
fn a_v0_join_without_member_id_gets_one() {
    let mut g = ConsumerGroup::new("g");
    let now = Instant::now();
    let out = g
        .heartbeat(join("", &["orders"]), &topics(), now, T, || {
            "server-made".into()
        })
        .unwrap();
    assert_eq!(out.member_id, "server-made");
}

/// Many members joining and leaving in random order: at no point does a partition have
/// two owners, and once everyone has confirmed, every partition has one.
#[test]
fn random_joins_and_leaves_never_give_a_partition_two_owners() {
    let now = Instant::now();
    let mut seed = 0x2545_f491_u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _ in 0..50 {
        let mut g = ConsumerGroup::new("g");
        let mut owned: BTreeMap<String, (i32, Assignment)> = BTreeMap::new();
        for step in 0..60 {
            let ids: Vec<String> = owned.keys().cloned().collect();
            match next(5) {
                0 => {
                    let id = format!("m{step}");
                    let out = hb(&mut g, join(&id, &["orders", "audit"]), now);
                    owned.insert(id, (out.member_epoch, out.assignment.unwrap_or_default()));
                }
                1 if !ids.is_empty() => {
                    let id = &ids[next(ids.len() as u64) as usize];
                    let (epoch, _) = owned.remove(id).unwrap();
                    hb(&mut g, beat(id, LEAVE, None), now);
                    let _ = epoch;
                }
                _ if !ids.is_empty() => {
                    let id = ids[next(ids.len() as u64) as usize].clone();
                    let (epoch, mine) = owned[&id].clone();
                    // The client gives up revoked partitions at once and reports them.
                    let out = hb(&mut g, beat(&id, epoch, Some(mine.clone())), now);
                    let now_owned = out.assignment.unwrap_or(mine);
                    owned.insert(id, (out.member_epoch, now_owned));
                }
                _ => {}
            }
            check_exclusive(&g);
        }
        // Everyone heartbeats until nothing changes.
        for _ in 0..10 {
            for id in owned.keys().cloned().collect::<Vec<_>>() {
                let (epoch, mine) = owned[&id].clone();
                let out = hb(&mut g, beat(&id, epoch, Some(mine.clone())), now);
                owned.insert(id, (out.member_epoch, out.assignment.unwrap_or(mine)));
                check_exclusive(&g);
            }
        }
        if !owned.is_empty() {
            assert_eq!(state_name(&g), "Stable", "{g:#?}");
            let total: usize = owned.values().map(|(_, a)| assignor::size(a)).sum();
            assert_eq!(total, 8, "every partition owned once settled");
        }
    }
}
