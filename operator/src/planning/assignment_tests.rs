//! Examples and seeded property tests for the assignment planner.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn brokers(ids: &[i32]) -> Vec<BrokerSlot> {
    ids.iter()
        .map(|&id| BrokerSlot { id, rack: None })
        .collect()
}

fn racked(ids: &[i32], racks: usize) -> Vec<BrokerSlot> {
    ids.iter()
        .map(|&id| BrokerSlot {
            id,
            rack: (racks > 0).then(|| format!("zone-{}", id as usize % racks)),
        })
        .collect()
}

fn partitions(topic: &str, lists: &[&[i32]]) -> Vec<PartitionReplicas> {
    lists
        .iter()
        .enumerate()
        .map(|(i, r)| PartitionReplicas {
            topic: topic.into(),
            partition: i as i32,
            replicas: r.to_vec(),
        })
        .collect()
}

fn spread(counts: &BTreeMap<i32, usize>) -> usize {
    counts.values().max().unwrap() - counts.values().min().unwrap()
}

/// Checks what every plan must satisfy and returns the broker ids.
fn assert_valid(target: &[PartitionReplicas], goal: &Goal, current: &[PartitionReplicas]) {
    let allowed: BTreeSet<i32> = goal.brokers.iter().map(|b| b.id).collect();
    for (t, c) in target.iter().zip(current) {
        assert_eq!((&t.topic, t.partition), (&c.topic, c.partition));
        let unique: BTreeSet<i32> = t.replicas.iter().copied().collect();
        assert_eq!(unique.len(), t.replicas.len(), "duplicate broker in {t:?}");
        assert!(
            unique.is_subset(&allowed),
            "{t:?} uses a broker outside {allowed:?}"
        );
        let rf = goal
            .replication_factors
            .get(&t.topic)
            .copied()
            .unwrap_or(c.replicas.len());
        assert_eq!(t.replicas.len(), rf, "{t:?}");
    }
}

#[test]
fn new_brokers_get_their_share_and_leaders_spread() {
    let current = partitions(
        "orders",
        &[&[0, 1], &[1, 2], &[2, 0], &[0, 1], &[1, 2], &[2, 0]],
    );
    let goal = Goal {
        brokers: brokers(&[0, 1, 2, 3, 4]),
        balance: true,
        ..Goal::default()
    };
    let target = plan(&current, &goal).unwrap();
    assert_valid(&target, &goal, &current);
    let ids = [0, 1, 2, 3, 4];
    assert!(spread(&replica_counts(&target, &ids)) <= 1);
    assert!(spread(&leader_counts(&target, &ids)) <= 1);
    // 12 replicas over 5 brokers: the two new brokers get 2 or 3 each, and only those move.
    let moves = replica_moves(&current, &target);
    let new_brokers: usize = replica_counts(&target, &ids)[&3] + replica_counts(&target, &ids)[&4];
    assert_eq!(moves, new_brokers);
    assert!((4..=5).contains(&moves), "{moves} moves");
}

#[test]
fn every_topic_spreads_onto_new_brokers_not_only_the_biggest() {
    // 50 partitions of an (empty) internal topic and 6 of a data topic, all RF 3 on 0..3: the
    // counts alone balance by moving internal replicas; the data topic must move too.
    let full: &[i32] = &[0, 1, 2];
    let mut current = partitions("__consumer_offsets", &[full; 50]);
    current.extend(partitions("orders", &[full; 6]));
    let goal = Goal {
        brokers: brokers(&[0, 1, 2, 3, 4]),
        balance: true,
        ..Goal::default()
    };
    let target = plan(&current, &goal).unwrap();
    assert_valid(&target, &goal, &current);
    let ids = [0, 1, 2, 3, 4];
    assert!(spread(&replica_counts(&target, &ids)) <= 1);
    for topic in ["__consumer_offsets", "orders"] {
        let of_topic: Vec<PartitionReplicas> = target
            .iter()
            .filter(|p| p.topic == topic)
            .cloned()
            .collect();
        let counts = replica_counts(&of_topic, &ids);
        eprintln!("{topic}: {counts:?}");
        // Within two: the greedy search balances totals exactly, topics nearly.
        assert!(
            spread(&counts) <= 2,
            "{topic} is not spread over the brokers: {counts:?}"
        );
    }
}

#[test]
fn a_balanced_cluster_is_left_alone() {
    let current = partitions("t", &[&[0, 1], &[1, 2], &[2, 0]]);
    let goal = Goal {
        brokers: brokers(&[0, 1, 2]),
        balance: true,
        ..Goal::default()
    };
    let target = plan(&current, &goal).unwrap();
    assert!(changes(&current, &target).is_empty());
}

#[test]
fn draining_moves_only_the_drained_replicas() {
    let current = partitions("t", &[&[4, 0, 1], &[3, 4, 2], &[0, 1, 2], &[1, 3, 0]]);
    let goal = Goal {
        brokers: brokers(&[0, 1, 2]),
        ..Goal::default()
    };
    let target = plan(&current, &goal).unwrap();
    assert_valid(&target, &goal, &current);
    assert_eq!(replica_moves(&current, &target), 4);
    assert_eq!(
        target[2].replicas,
        vec![0, 1, 2],
        "untouched partition kept as is"
    );
    // The old second replica becomes the preferred leader when the leader's broker goes.
    assert_eq!(target[0].replicas[..2], [0, 1]);
}

#[test]
fn too_few_brokers_are_refused_with_the_topics_that_block() {
    let mut current = partitions("big", &[&[0, 1, 2]]);
    current.extend(partitions("small", &[&[0]]));
    let err = plan(
        &current,
        &Goal {
            brokers: brokers(&[0, 1]),
            ..Goal::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        err,
        PlanError::NotEnoughBrokers {
            brokers: 2,
            topics: vec![("big".into(), 3)]
        }
    );
    assert_eq!(
        err.to_string(),
        "2 broker(s) cannot hold topic big (replication factor 3)"
    );
    assert_eq!(
        plan(&current, &Goal::default()).unwrap_err(),
        PlanError::NoBrokers
    );
}

#[test]
fn replication_factor_changes_keep_existing_replicas_and_leaders() {
    let current = partitions("t", &[&[0], &[1], &[2]]);
    let up = Goal {
        brokers: brokers(&[0, 1, 2]),
        replication_factors: BTreeMap::from([("t".into(), 3)]),
        balance: false,
    };
    let grown = plan(&current, &up).unwrap();
    assert_valid(&grown, &up, &current);
    for (c, g) in current.iter().zip(&grown) {
        assert_eq!(g.replicas[0], c.replicas[0], "leader kept");
    }
    let down = Goal {
        replication_factors: BTreeMap::from([("t".into(), 2)]),
        ..up
    };
    let shrunk = plan(&grown, &down).unwrap();
    assert_valid(&shrunk, &down, &grown);
    for (g, s) in grown.iter().zip(&shrunk) {
        assert_eq!(s.replicas[0], g.replicas[0], "leader kept");
        assert!(s.replicas.iter().all(|b| g.replicas.contains(b)));
    }
    assert!(spread(&replica_counts(&shrunk, &[0, 1, 2])) <= 1);
}

#[test]
fn new_replicas_go_to_racks_the_partition_lacks() {
    let current = partitions("t", &[&[0]]);
    let goal = Goal {
        // zone-0: 0, 2; zone-1: 1, 3.
        brokers: racked(&[0, 1, 2, 3], 2),
        replication_factors: BTreeMap::from([("t".into(), 2)]),
        balance: false,
    };
    let target = plan(&current, &goal).unwrap();
    assert_eq!(target[0].replicas[0], 0);
    assert!([1, 3].contains(&target[0].replicas[1]), "{target:?}");
}

/// A random cluster: topics created by the planner itself (so rack-aware), on the first
/// `initial` brokers.
fn random_cluster(rng: &mut StdRng, initial: &[BrokerSlot]) -> Vec<PartitionReplicas> {
    let topics = rng.random_range(1..=4);
    let mut empty = Vec::new();
    let mut rfs = BTreeMap::new();
    for t in 0..topics {
        let name = format!("topic-{t}");
        let rf = rng.random_range(1..=initial.len().min(3));
        rfs.insert(name.clone(), rf);
        for p in 0..rng.random_range(1..=12) {
            empty.push(PartitionReplicas {
                topic: name.clone(),
                partition: p,
                replicas: Vec::new(),
            });
        }
    }
    plan(
        &empty,
        &Goal {
            brokers: initial.to_vec(),
            replication_factors: rfs,
            balance: false,
        },
    )
    .unwrap()
}

fn rack_count(replicas: &[i32], slots: &[BrokerSlot]) -> usize {
    replicas
        .iter()
        .map(|b| {
            let slot = slots.iter().find(|s| s.id == *b).unwrap();
            slot.rack.clone().unwrap_or_else(|| format!("own-{b}"))
        })
        .collect::<BTreeSet<_>>()
        .len()
}

#[test]
fn property_scale_up_balances_replicas_and_leaders_without_losing_racks() {
    for seed in 0..400u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let racks = [0, 2, 3][rng.random_range(0..3)];
        let per_rack = rng.random_range(1..=3);
        let total = if racks == 0 {
            rng.random_range(2..=7)
        } else {
            racks * per_rack
        };
        let ids: Vec<i32> = (0..total as i32).collect();
        let all = racked(&ids, racks);
        let initial_count = rng.random_range(1..=total);
        let initial: Vec<BrokerSlot> = all[..initial_count].to_vec();
        let current = random_cluster(&mut rng, &initial);
        let goal = Goal {
            brokers: all.clone(),
            balance: true,
            ..Goal::default()
        };
        let target = plan(&current, &goal).unwrap();
        assert_valid(&target, &goal, &current);
        assert!(
            spread(&replica_counts(&target, &ids)) <= 1,
            "seed {seed}: {target:?}"
        );
        assert!(
            spread(&leader_counts(&target, &ids)) <= 1,
            "seed {seed}: {target:?}"
        );
        for (c, t) in current.iter().zip(&target) {
            assert!(
                rack_count(&t.replicas, &all) >= rack_count(&c.replicas, &all),
                "seed {seed}: {c:?} -> {t:?} lost a rack"
            );
        }
        // Planning again changes nothing: a balanced cluster needs zero moves.
        let again = plan(&target, &goal).unwrap();
        assert!(changes(&target, &again).is_empty(), "seed {seed}");
    }
}

#[test]
fn property_drains_and_rf_changes_touch_only_what_they_must() {
    for seed in 0..400u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let total = rng.random_range(2..=6);
        let ids: Vec<i32> = (0..total).collect();
        let all = brokers(&ids);
        let current = random_cluster(&mut rng, &all);
        // Drain the highest ordinals, keeping at least one broker.
        let keep = rng.random_range(1..=total as usize);
        let goal = Goal {
            brokers: all[..keep].to_vec(),
            ..Goal::default()
        };
        let needs = current.iter().map(|p| p.replicas.len()).max().unwrap();
        match plan(&current, &goal) {
            Err(PlanError::NotEnoughBrokers { topics, .. }) => {
                assert!(
                    needs > keep,
                    "seed {seed}: refused though {keep} brokers suffice"
                );
                assert!(!topics.is_empty());
            }
            Err(e) => panic!("seed {seed}: {e}"),
            Ok(target) => {
                assert!(needs <= keep, "seed {seed}");
                assert_valid(&target, &goal, &current);
                let drained: usize = current
                    .iter()
                    .map(|p| p.replicas.iter().filter(|&&b| b >= keep as i32).count())
                    .sum();
                assert_eq!(replica_moves(&current, &target), drained, "seed {seed}");
                let kept = &ids[..keep];
                let counts = replica_counts(&target, kept);
                assert!(counts.keys().all(|b| kept.contains(b)), "seed {seed}");
            }
        }
        // A replication-factor change touches only its topic and keeps its surviving replicas.
        let topic = current[0].topic.clone();
        let rf = rng.random_range(1..=total as usize);
        let goal = Goal {
            brokers: all.clone(),
            replication_factors: BTreeMap::from([(topic.clone(), rf)]),
            balance: false,
        };
        let target = plan(&current, &goal).unwrap();
        assert_valid(&target, &goal, &current);
        for (c, t) in current.iter().zip(&target) {
            if c.topic != topic {
                assert_eq!(c, t, "seed {seed}: other topic touched");
            } else if rf >= c.replicas.len() {
                assert_eq!(
                    t.replicas[..c.replicas.len()],
                    c.replicas[..],
                    "seed {seed}"
                );
            } else {
                assert!(
                    t.replicas.iter().all(|b| c.replicas.contains(b)),
                    "seed {seed}"
                );
                assert_eq!(t.replicas[0], c.replicas[0], "seed {seed}: leader kept");
            }
        }
    }
}
