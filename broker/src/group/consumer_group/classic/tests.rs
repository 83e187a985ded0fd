//! Upgrading a classic group and serving its classic members, against scripted clients: eager
//! (revoke everything before rejoining) and cooperative (keep what is not taken away).
use std::collections::BTreeSet;

use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedPartitions;

use super::super::{state_name, HeartbeatOutcome, Timeouts};
use super::*;

const T: Timeouts = Timeouts {
    session: Duration::from_secs(45),
    heartbeat_interval: Duration::from_secs(5),
};
const ORDERS: uuid::Uuid = uuid::Uuid::from_u128(1);

fn topics() -> TopicsView {
    TopicsView::from([("orders".to_string(), (ORDERS, 4))])
}

fn parts(p: &[i32]) -> Assignment {
    if p.is_empty() {
        return Assignment::new();
    }
    Assignment::from([(ORDERS, p.iter().copied().collect())])
}

/// A ConsumerProtocolSubscription (v1) to "orders" owning `owned`.
fn subscription_bytes(owned: &[i32]) -> Bytes {
    let sub = ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_static_str("orders")])
        .with_owned_partitions(if owned.is_empty() {
            Vec::new()
        } else {
            vec![OwnedPartitions::default()
                .with_topic(TopicName(StrBytes::from_static_str("orders")))
                .with_partitions(owned.to_vec())]
        });
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&1i16.to_be_bytes());
    sub.encode(&mut buf, 1).unwrap();
    buf.freeze()
}

fn join_req(id: &str, owned: &[i32]) -> JoinRequest {
    JoinRequest {
        member_id: id.into(),
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), subscription_bytes(owned))],
        require_known_member_id: true,
    }
}

fn seed(id: &str, assigned: &[i32]) -> ClassicSeed {
    ClassicSeed {
        id: id.into(),
        instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(30),
        protocols: vec![("range".into(), subscription_bytes(&[]))],
        assignment: encode_assignment(&parts(assigned), 1, &topics()),
    }
}

/// A Stable classic group of a ({0,1}) and b ({2,3}) at generation 5, upgraded.
fn upgraded(now: Instant) -> ConsumerGroup {
    let seeds = vec![seed("a", &[0, 1]), seed("b", &[2, 3])];
    ConsumerGroup::from_classic("g", 5, "range", seeds, &topics(), now).expect("upgraded")
}

fn consumer_join(g: &mut ConsumerGroup, id: &str, now: Instant) -> i32 {
    let hb = Heartbeat {
        member_id: id.into(),
        member_epoch: 0,
        rebalance_timeout_ms: 30_000,
        subscribed_topic_names: Some(vec!["orders".into()]),
        ..Default::default()
    };
    g.heartbeat(hb, &topics(), now, T, || unreachable!())
        .expect("joined")
        .member_epoch
}

fn consumer_beat(g: &mut ConsumerGroup, id: &str, now: Instant) -> HeartbeatOutcome {
    let m = &g.members[id];
    let hb = Heartbeat {
        member_id: id.into(),
        member_epoch: m.epoch,
        rebalance_timeout_ms: -1,
        owned: Some(m.assigned.clone()),
        ..Default::default()
    };
    g.heartbeat(hb, &topics(), now, T, || unreachable!())
        .expect("accepted")
}

/// The partitions a SyncGroup answer hands out.
fn synced(g: &mut ConsumerGroup, id: &str, generation: i32, now: Instant) -> BTreeSet<i32> {
    let r = g.classic_sync(id, generation, &topics(), now);
    assert_eq!(r.error, 0, "sync of {id} at {generation}");
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    let a = decode_assignment(&r.assignment, &topics()).expect("decodable");
    a.get(&ORDERS).cloned().unwrap_or_default()
}

/// No partition is owned (assigned or being revoked) by two members at any time.
fn check_exclusive(g: &ConsumerGroup) {
    let mut seen = BTreeSet::new();
    for m in g.members.values() {
        for (t, ps) in assignor::union(&m.assigned, &m.revoking) {
            for p in ps {
                assert!(seen.insert((t, p)), "{t}-{p} owned twice: {g:#?}");
            }
        }
    }
}

#[test]
fn an_upgrade_keeps_the_classic_generation_and_assignments() {
    let now = Instant::now();
    let mut g = upgraded(now);
    assert_eq!((g.epoch, g.assignment_epoch), (5, 5));
    assert_eq!(state_name(&g), "Stable");
    assert_eq!(g.classic_members(), 2);
    assert_eq!(g.members["a"].assigned, parts(&[0, 1]));
    assert_eq!(g.members["b"].epoch, 5);
    assert_eq!(g.classic_heartbeat("a", 5, &topics(), now), ErrorCode::None);
    assert_eq!(
        g.classic_heartbeat("a", 4, &topics(), now),
        ErrorCode::IllegalGeneration
    );
    assert_eq!(
        g.classic_heartbeat("zz", 5, &topics(), now),
        ErrorCode::UnknownMemberId
    );
    assert_eq!(synced(&mut g, "b", 5, now), BTreeSet::from([2, 3]));
    assert!(g.check_commit("a", 5).is_ok());
    assert_eq!(
        g.check_commit("a", 3).unwrap_err().code,
        ErrorCode::IllegalGeneration
    );
}

#[test]
fn eager_classic_members_make_room_for_a_consumer_protocol_member() {
    let now = Instant::now();
    let mut g = upgraded(now);
    assert_eq!(consumer_join(&mut g, "c", now), 6);
    check_exclusive(&g);
    // c waits for partitions the classic members still hold; they are told to rejoin.
    assert!(g.members["c"].assigned.is_empty());
    for id in ["a", "b"] {
        assert_eq!(
            g.classic_heartbeat(id, 5, &topics(), now),
            ErrorCode::RebalanceInProgress
        );
    }
    // Eager clients revoked everything before rejoining: they own nothing.
    let mut holdings = BTreeSet::new();
    for id in ["a", "b"] {
        let r = g.classic_join(&join_req(id, &[]), &topics(), now, || unreachable!());
        assert_eq!((r.error, r.generation_id), (0, 6), "{r:?}");
        assert_eq!(r.leader, "", "a classic member never leads");
        assert!(r.members.is_empty());
        let got = synced(&mut g, id, 6, now);
        assert!(holdings.is_disjoint(&got));
        holdings.extend(got);
        check_exclusive(&g);
    }
    let c = consumer_beat(&mut g, "c", now);
    assert_eq!(c.member_epoch, 6);
    check_exclusive(&g);
    let all: BTreeSet<i32> = g
        .members
        .values()
        .flat_map(|m| m.assigned.get(&ORDERS).cloned().unwrap_or_default())
        .collect();
    assert_eq!(all, BTreeSet::from([0, 1, 2, 3]));
    for id in ["a", "b"] {
        assert_eq!(g.classic_heartbeat(id, 6, &topics(), now), ErrorCode::None);
    }
    assert_eq!(state_name(&g), "Stable");
}

#[test]
fn a_cooperative_classic_member_revokes_before_its_partitions_move() {
    let now = Instant::now();
    let mut g = upgraded(now);
    consumer_join(&mut g, "c", now);
    let target_a = g.target["a"].clone();
    assert_ne!(target_a, parts(&[0, 1]), "a must give something up");
    // a rejoins still owning {0,1}: it keeps its epoch and is told what to keep.
    let r = g.classic_join(&join_req("a", &[0, 1]), &topics(), now, || unreachable!());
    assert_eq!((r.error, r.generation_id), (0, 5));
    let kept = synced(&mut g, "a", 5, now);
    assert!(kept.len() < 2);
    check_exclusive(&g);
    // What a is revoking is not handed to c yet.
    consumer_beat(&mut g, "c", now);
    check_exclusive(&g);
    let revoking: BTreeSet<i32> = g.members["a"].revoking[&ORDERS].clone();
    assert!(g.members["c"]
        .assigned
        .get(&ORDERS)
        .is_none_or(|c| c.is_disjoint(&revoking)));
    assert_eq!(
        g.classic_heartbeat("a", 5, &topics(), now),
        ErrorCode::RebalanceInProgress
    );
    // a revoked and rejoins owning what it kept: it advances.
    let owned: Vec<i32> = kept.iter().copied().collect();
    let r = g.classic_join(&join_req("a", &owned), &topics(), now, || unreachable!());
    assert_eq!((r.error, r.generation_id), (0, 6));
    assert!(g.members["a"].revoking.is_empty());
    check_exclusive(&g);
    consumer_beat(&mut g, "c", now);
    check_exclusive(&g);
    assert!(g.members["c"]
        .assigned
        .get(&ORDERS)
        .is_some_and(|c| c.is_superset(&revoking)));
}

#[test]
fn a_new_classic_member_gets_an_id_then_a_share() {
    let now = Instant::now();
    let mut g = ConsumerGroup::new("g");
    consumer_join(&mut g, "c", now);
    assert_eq!(consumer_beat(&mut g, "c", now).member_epoch, 1);
    let first = g.classic_join(&join_req("", &[]), &topics(), now, || "n".into());
    assert_eq!(first.error, ErrorCode::MemberIdRequired.code());
    assert_eq!(first.member_id, "n");
    let r = g.classic_join(&join_req("n", &[]), &topics(), now, || unreachable!());
    assert_eq!((r.error, r.generation_id, r.leader.as_str()), (0, 2, ""));
    // c still holds everything: n gets nothing yet and must come back.
    assert!(synced(&mut g, "n", 2, now).is_empty());
    assert_eq!(
        g.classic_heartbeat("n", 2, &topics(), now),
        ErrorCode::RebalanceInProgress
    );
    consumer_beat(&mut g, "c", now); // told to revoke
    consumer_beat(&mut g, "c", now); // confirms
    check_exclusive(&g);
    let r = g.classic_join(&join_req("n", &[]), &topics(), now, || unreachable!());
    assert_eq!(r.error, 0);
    assert_eq!(synced(&mut g, "n", r.generation_id, now).len(), 2);
    check_exclusive(&g);
    assert_eq!(
        g.classic_heartbeat("n", r.generation_id, &topics(), now),
        ErrorCode::None
    );
    // n leaves: c gets everything back.
    assert_eq!(g.classic_leave("n", None), ErrorCode::None);
    assert_eq!(g.classic_leave("n", None), ErrorCode::UnknownMemberId);
    consumer_beat(&mut g, "c", now);
    assert_eq!(g.members["c"].assigned, parts(&[0, 1, 2, 3]));
}

#[test]
fn malformed_classic_bytes_are_refused_not_trusted() {
    let now = Instant::now();
    let mut bad = seed("a", &[0]);
    bad.assignment = Bytes::from_static(&[0, 1, 0xff, 0xff, 0xff]);
    let err = ConsumerGroup::from_classic("g", 3, "range", vec![bad], &topics(), now).unwrap_err();
    assert_eq!(err.code, ErrorCode::InconsistentGroupProtocol);
    let mut bad = seed("a", &[0]);
    bad.protocols = vec![("range".into(), Bytes::from_static(&[7]))];
    assert!(ConsumerGroup::from_classic("g", 3, "range", vec![bad], &topics(), now).is_err());

    let mut g = upgraded(now);
    let mut req = join_req("a", &[]);
    req.protocols = vec![("range".into(), Bytes::from_static(&[0, 0, 0, 9, 1]))];
    let r = g.classic_join(&req, &topics(), now, || unreachable!());
    assert_eq!(r.error, ErrorCode::InconsistentGroupProtocol.code());
    let mut req = join_req("a", &[]);
    req.protocols = vec![("roundrobin".into(), subscription_bytes(&[]))];
    let r = g.classic_join(&req, &topics(), now, || unreachable!());
    assert_eq!(
        r.error,
        ErrorCode::InconsistentGroupProtocol.code(),
        "b supports range only"
    );
    // A consumer-protocol member's id cannot be used in JoinGroup.
    consumer_join(&mut g, "c", now);
    let r = g.classic_join(&join_req("c", &[]), &topics(), now, || unreachable!());
    assert_eq!(r.error, ErrorCode::UnknownMemberId.code());
}

#[test]
fn a_classic_member_whose_session_ends_is_removed() {
    let now = Instant::now();
    let mut g = upgraded(now);
    assert_eq!(g.expire(now + Duration::from_secs(11)).len(), 2);
    assert!(g.is_empty());
    assert_eq!(g.epoch, 7);
}

#[test]
fn the_last_consumer_protocol_member_leaving_hands_the_group_back() {
    use crate::group::membership::{Group, GroupState};
    let now = Instant::now();
    let mut g = upgraded(now);
    consumer_join(&mut g, "c", now);
    assert!(g.downgrade_seeds(&topics()).is_none(), "c is still in");
    let leave = Heartbeat {
        member_id: "c".into(),
        member_epoch: -1,
        ..Default::default()
    };
    g.heartbeat(leave, &topics(), now, T, || unreachable!())
        .expect("left");
    let (generation, protocol, seeds) = g.downgrade_seeds(&topics()).expect("only classic members");
    assert_eq!(
        generation, 5,
        "a and b are still at the upgrade's generation"
    );
    assert_eq!(protocol, "range");
    let held: Vec<Assignment> = seeds
        .iter()
        .map(|s| decode_assignment(&s.assignment, &topics()).unwrap())
        .collect();
    assert_eq!(held, vec![parts(&[0, 1]), parts(&[2, 3])]);
    let mut classic = Group::from_consumer("g", generation, protocol, seeds, Duration::ZERO, now);
    assert_eq!(classic.state, GroupState::PreparingRebalance);
    assert_eq!(classic.generation, 5);
    assert_eq!(classic.check_commit("a", 5), ErrorCode::None);
    assert_eq!(
        classic.heartbeat("a", 5, now),
        ErrorCode::RebalanceInProgress
    );
    assert_eq!(classic.upgrade_seeds().len(), 2);
}

#[test]
fn a_custom_assignors_user_data_prevents_the_upgrade() {
    let mut s = seed("a", &[0]);
    let a = ConsumerProtocolAssignment::default()
        .with_assigned_partitions(vec![AssignedPartitions::default()
            .with_topic(TopicName(StrBytes::from_static_str("orders")))
            .with_partitions(vec![0])])
        .with_user_data(Some(Bytes::from_static(b"x")));
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&1i16.to_be_bytes());
    a.encode(&mut buf, 1).unwrap();
    s.assignment = buf.freeze();
    let err = ConsumerGroup::from_classic("g", 1, "range", vec![s], &topics(), Instant::now())
        .unwrap_err();
    assert!(err.message.contains("custom assignor"), "{}", err.message);
}
