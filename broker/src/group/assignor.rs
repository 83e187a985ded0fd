//! Server-side partition assignors of the consumer group protocol (KIP-848): with
//! `group.protocol=consumer` the coordinator, not a group leader, decides who reads what.
//! Kafka ships `uniform` (the default) and `range`; a member names one in
//! `group.remote.assignor`. Pure functions over member subscriptions, the subscribed topics'
//! partition counts and the previous target assignment, so they are unit-tested without a
//! group.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// Partitions by topic id: a member's assignment.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// The assignors this broker offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    /// Balanced and sticky: every member within one partition of every other member that
    /// could take the same partition, moving as few partitions as that allows.
    Uniform,
    /// Per topic, contiguous ranges of partitions in member id order.
    Range,
}

impl Assignor {
    pub const DEFAULT: Assignor = Assignor::Uniform;

    pub fn from_name(name: &str) -> Option<Assignor> {
        match name {
            "uniform" => Some(Assignor::Uniform),
            "range" => Some(Assignor::Range),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }
}

/// One member as an assignor sees it.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    pub id: String,
    /// Ids of the topics it subscribes to (resolved from names or its regex).
    pub topics: BTreeSet<Uuid>,
    /// Its partitions in the previous target assignment (stickiness).
    pub previous: Assignment,
}

/// Assigns every partition of every subscribed topic (`partitions`: topic id → count) to one
/// member subscribed to it. Every member gets an entry, empty if it gets nothing.
pub fn assign(
    assignor: Assignor,
    members: &[MemberSpec],
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    match assignor {
        Assignor::Uniform => uniform(members, partitions),
        Assignor::Range => range(members, partitions),
    }
}

fn empty_result(members: &[MemberSpec]) -> BTreeMap<String, Assignment> {
    members
        .iter()
        .map(|m| (m.id.clone(), Assignment::new()))
        .collect()
}

fn range(members: &[MemberSpec], partitions: &BTreeMap<Uuid, i32>) -> BTreeMap<String, Assignment> {
    let mut out = empty_result(members);
    for (topic, count) in partitions {
        let mut subscribers: Vec<&str> = members
            .iter()
            .filter(|m| m.topics.contains(topic))
            .map(|m| m.id.as_str())
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        subscribers.sort_unstable();
        let n = subscribers.len() as i32;
        let (per, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, member) in subscribers.iter().enumerate() {
            let take = per + i32::from((i as i32) < extra);
            if take > 0 {
                out.get_mut(*member)
                    .expect("every member has an entry")
                    .entry(*topic)
                    .or_default()
                    .extend(next..next + take);
            }
            next += take;
        }
    }
    out
}

fn uniform(
    members: &[MemberSpec],
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    let subscribes = |m: &MemberSpec, t: &Uuid| m.topics.contains(t);
    // owner of each partition, sticky: a member keeps what it had while still subscribed.
    let mut owner: BTreeMap<(Uuid, i32), usize> = BTreeMap::new();
    let mut counts = vec![0usize; members.len()];
    for (i, m) in members.iter().enumerate() {
        for (topic, parts) in &m.previous {
            let Some(count) = partitions.get(topic) else {
                continue;
            };
            if !subscribes(m, topic) {
                continue;
            }
            for p in parts.iter().filter(|p| **p < *count) {
                if owner.insert((*topic, *p), i).is_none() {
                    counts[i] += 1;
                }
            }
        }
    }
    // Unowned partitions go to the least loaded subscriber (ties: member order).
    for (topic, count) in partitions {
        for p in 0..*count {
            if owner.contains_key(&(*topic, p)) {
                continue;
            }
            let best = (0..members.len())
                .filter(|i| subscribes(&members[*i], topic))
                .min_by_key(|i| (counts[*i], *i));
            if let Some(i) = best {
                owner.insert((*topic, p), i);
                counts[i] += 1;
            }
        }
    }
    // Balance: move a partition from a member holding two more than another member that
    // could take it, until no such pair is left. Each move lowers the sum of squared counts,
    // so this ends.
    loop {
        let mut moved = false;
        let keys: Vec<(Uuid, i32)> = owner.keys().copied().collect();
        for key in keys {
            let from = owner[&key];
            let to = (0..members.len())
                .filter(|i| subscribes(&members[*i], &key.0))
                .min_by_key(|i| (counts[*i], *i))
                .expect("the owner itself subscribes");
            if counts[from] > counts[to] + 1 {
                owner.insert(key, to);
                counts[from] -= 1;
                counts[to] += 1;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    let mut out = empty_result(members);
    for ((topic, p), i) in owner {
        out.get_mut(&members[i].id)
            .expect("every member has an entry")
            .entry(topic)
            .or_default()
            .insert(p);
    }
    out
}

/// How many partitions an assignment holds.
pub fn size(a: &Assignment) -> usize {
    a.values().map(BTreeSet::len).sum()
}

/// `a` without the partitions in `b`.
pub fn minus(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, parts) in a {
        let rest: BTreeSet<i32> = match b.get(t) {
            Some(other) => parts.difference(other).copied().collect(),
            None => parts.clone(),
        };
        if !rest.is_empty() {
            out.insert(*t, rest);
        }
    }
    out
}

/// The partitions in both `a` and `b`.
pub fn intersection(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, parts) in a {
        if let Some(other) = b.get(t) {
            let both: BTreeSet<i32> = parts.intersection(other).copied().collect();
            if !both.is_empty() {
                out.insert(*t, both);
            }
        }
    }
    out
}

/// `a` with the partitions of `b` added.
pub fn union(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = a.clone();
    for (t, parts) in b {
        out.entry(*t).or_default().extend(parts);
    }
    out.retain(|_, p| !p.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn member(id: &str, topics: &[Uuid]) -> MemberSpec {
        MemberSpec {
            id: id.into(),
            topics: topics.iter().copied().collect(),
            previous: Assignment::new(),
        }
    }

    /// Every partition exactly once, each to a subscriber.
    fn check_complete(
        members: &[MemberSpec],
        partitions: &BTreeMap<Uuid, i32>,
        out: &BTreeMap<String, Assignment>,
    ) {
        let mut seen = BTreeSet::new();
        for m in members {
            for (t, parts) in &out[&m.id] {
                assert!(
                    m.topics.contains(t),
                    "{} got a topic it does not read",
                    m.id
                );
                for p in parts {
                    assert!(seen.insert((*t, *p)), "{t}-{p} assigned twice");
                }
            }
        }
        let all: usize = partitions
            .iter()
            .filter(|(t, _)| members.iter().any(|m| m.topics.contains(t)))
            .map(|(_, c)| *c as usize)
            .sum();
        assert_eq!(seen.len(), all, "every subscribed partition assigned");
    }

    /// No member holds two more partitions than another.
    fn assert_balanced(out: &BTreeMap<String, Assignment>) {
        let sizes: Vec<usize> = out.values().map(size).collect();
        assert!(
            sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
            "{sizes:?}"
        );
    }

    #[test]
    fn uniform_balances_and_covers_every_partition() {
        let (a, b) = (topic(1), topic(2));
        let partitions = BTreeMap::from([(a, 7), (b, 3)]);
        let members: Vec<MemberSpec> = ["m1", "m2", "m3"]
            .iter()
            .map(|id| member(id, &[a, b]))
            .collect();
        let out = assign(Assignor::Uniform, &members, &partitions);
        check_complete(&members, &partitions, &out);
        assert_balanced(&out);
    }

    #[test]
    fn uniform_keeps_partitions_where_they_were_when_a_member_joins() {
        let a = topic(1);
        let partitions = BTreeMap::from([(a, 6)]);
        let first = assign(
            Assignor::Uniform,
            &[member("m1", &[a]), member("m2", &[a])],
            &partitions,
        );
        let mut members = vec![member("m1", &[a]), member("m2", &[a]), member("m3", &[a])];
        members[0].previous = first["m1"].clone();
        members[1].previous = first["m2"].clone();
        let second = assign(Assignor::Uniform, &members, &partitions);
        check_complete(&members, &partitions, &second);
        for id in ["m1", "m2", "m3"] {
            assert_eq!(size(&second[id]), 2, "{id}: {second:?}");
        }
        // Only the partitions the newcomer needs moved.
        for id in ["m1", "m2"] {
            assert!(
                minus(&second[id], &first[id]).is_empty(),
                "{id} received partitions it did not have"
            );
        }
    }

    #[test]
    fn uniform_respects_different_subscriptions() {
        let (a, b) = (topic(1), topic(2));
        let partitions = BTreeMap::from([(a, 4), (b, 4)]);
        let members = vec![
            member("m1", &[a]),
            member("m2", &[a, b]),
            member("m3", &[b]),
        ];
        let out = assign(Assignor::Uniform, &members, &partitions);
        check_complete(&members, &partitions, &out);
        assert_balanced(&out);
    }

    #[test]
    fn a_member_that_unsubscribes_loses_that_topic() {
        let (a, b) = (topic(1), topic(2));
        let partitions = BTreeMap::from([(a, 2), (b, 2)]);
        let mut m1 = member("m1", &[b]);
        m1.previous = Assignment::from([(a, BTreeSet::from([0, 1]))]);
        let members = vec![m1, member("m2", &[a])];
        let out = assign(Assignor::Uniform, &members, &partitions);
        check_complete(&members, &partitions, &out);
        assert_eq!(out["m2"].get(&a).map(BTreeSet::len), Some(2));
    }

    #[test]
    fn range_gives_contiguous_ranges_in_member_order() {
        let a = topic(1);
        let partitions = BTreeMap::from([(a, 5)]);
        let members = vec![member("b", &[a]), member("a", &[a])];
        let out = assign(Assignor::Range, &members, &partitions);
        check_complete(&members, &partitions, &out);
        assert_eq!(out["a"][&a], BTreeSet::from([0, 1, 2]));
        assert_eq!(out["b"][&a], BTreeSet::from([3, 4]));
    }

    #[test]
    fn more_members_than_partitions_leaves_some_empty() {
        let a = topic(1);
        let partitions = BTreeMap::from([(a, 1)]);
        let members = vec![member("m1", &[a]), member("m2", &[a])];
        for assignor in [Assignor::Uniform, Assignor::Range] {
            let out = assign(assignor, &members, &partitions);
            check_complete(&members, &partitions, &out);
            assert_eq!(out.values().map(size).sum::<usize>(), 1);
        }
    }

    #[test]
    fn set_helpers() {
        let t = topic(1);
        let a = Assignment::from([(t, BTreeSet::from([0, 1, 2]))]);
        let b = Assignment::from([(t, BTreeSet::from([2, 3]))]);
        assert_eq!(
            minus(&a, &b),
            Assignment::from([(t, BTreeSet::from([0, 1]))])
        );
        assert_eq!(
            intersection(&a, &b),
            Assignment::from([(t, BTreeSet::from([2]))])
        );
        assert_eq!(size(&union(&a, &b)), 4);
        assert!(minus(&a, &a).is_empty());
    }
}
