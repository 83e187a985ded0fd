//! Replica placement for new partitions: which brokers hold each partition's replicas, and
//! which of them is the preferred leader (the first).
//!
//! Follows Kafka's assignment so operators see familiar layouts: brokers are walked round-robin
//! from a start offset, followers are placed at a shift that grows every full round (so two
//! partitions rarely share the same follower set), and with racks the broker list alternates
//! racks and a replica is only put on a rack that already has one when every rack has one.
//! Pure: the caller passes the live brokers and a random start.

use std::collections::{BTreeMap, BTreeSet};

/// One broker that can receive replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSlot {
    pub id: i32,
    pub rack: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("replication factor {rf} is larger than the {brokers} available brokers")]
    NotEnoughBrokers { rf: i32, brokers: usize },
    #[error("replication factor must be at least 1, not {0}")]
    InvalidReplicationFactor(i32),
    #[error("partition count must be at least 1, not {0}")]
    InvalidPartitions(i32),
    #[error("brokers {0:?} have no broker.rack while others do; set it on every broker or none")]
    PartialRacks(Vec<i32>),
}

/// Where the follower of `first` with index `j` goes, for a given shift (Kafka's formula).
fn replica_index(first: usize, shift: usize, j: usize, n: usize) -> usize {
    (first + 1 + (shift + j) % (n - 1)) % n
}

/// Brokers ordered so consecutive ones are on different racks: r1-b1, r2-b1, r3-b1, r1-b2, ...
pub fn rack_alternated(brokers: &[BrokerSlot]) -> Vec<i32> {
    let mut by_rack: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for b in brokers {
        by_rack
            .entry(b.rack.as_deref().unwrap_or(""))
            .or_default()
            .push(b.id);
    }
    for ids in by_rack.values_mut() {
        ids.sort_unstable();
    }
    let mut out = Vec::with_capacity(brokers.len());
    let longest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for ids in by_rack.values() {
            if let Some(id) = ids.get(i) {
                out.push(*id);
            }
        }
    }
    out
}

/// Replica lists for `partitions` new partitions (numbered from `first_partition`) with
/// `replication_factor` replicas each; `start` and `shift` are the random offsets Kafka draws.
pub fn assign(
    brokers: &[BrokerSlot],
    partitions: i32,
    replication_factor: i32,
    first_partition: i32,
    start: usize,
    shift: usize,
) -> Result<Vec<Vec<i32>>, PlacementError> {
    if replication_factor < 1 {
        return Err(PlacementError::InvalidReplicationFactor(replication_factor));
    }
    if partitions < 1 {
        return Err(PlacementError::InvalidPartitions(partitions));
    }
    let n = brokers.len();
    let rf = replication_factor as usize;
    if rf > n {
        return Err(PlacementError::NotEnoughBrokers {
            rf: replication_factor,
            brokers: n,
        });
    }
    let without_rack: Vec<i32> = brokers
        .iter()
        .filter(|b| b.rack.is_none())
        .map(|b| b.id)
        .collect();
    let racked = without_rack.len() < n;
    if racked && !without_rack.is_empty() {
        return Err(PlacementError::PartialRacks(without_rack));
    }
    let order: Vec<i32> = if racked {
        rack_alternated(brokers)
    } else {
        let mut ids: Vec<i32> = brokers.iter().map(|b| b.id).collect();
        ids.sort_unstable();
        ids
    };
    let rack_of: BTreeMap<i32, &str> = brokers
        .iter()
        .map(|b| (b.id, b.rack.as_deref().unwrap_or("")))
        .collect();
    let rack_count = rack_of.values().collect::<BTreeSet<_>>().len();

    let start = start % n;
    let mut shift = shift % n.max(1);
    let mut out = Vec::with_capacity(partitions as usize);
    for p in 0..partitions as usize {
        let absolute = first_partition as usize + p;
        if absolute > 0 && absolute.is_multiple_of(n) {
            shift += 1;
        }
        let first = (absolute + start) % n;
        let mut replicas = vec![order[first]];
        if rf > 1 {
            let mut racks: BTreeSet<&str> = BTreeSet::from([rack_of[&order[first]]]);
            let mut j = 0;
            // Walk candidates in Kafka's order; on racks, skip a broker whose rack already has
            // a replica while some rack has none.
            while replicas.len() < rf && j < n * n {
                let candidate = order[replica_index(first, shift, j, n)];
                let rack = rack_of[&candidate];
                let rack_ok = !racked || !racks.contains(rack) || racks.len() == rack_count;
                if !replicas.contains(&candidate) && rack_ok {
                    replicas.push(candidate);
                    racks.insert(rack);
                }
                j += 1;
            }
            // Unreachable with distinct brokers, but never hand out a short list.
            for id in &order {
                if replicas.len() == rf {
                    break;
                }
                if !replicas.contains(id) {
                    replicas.push(*id);
                }
            }
        }
        out.push(replicas);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(racks: &[Option<&str>]) -> Vec<BrokerSlot> {
        racks
            .iter()
            .enumerate()
            .map(|(i, r)| BrokerSlot {
                id: i as i32,
                rack: r.map(str::to_string),
            })
            .collect()
    }

    #[test]
    fn every_partition_gets_distinct_brokers_and_leaders_spread_evenly() {
        let b = brokers(&[None; 5]);
        let a = assign(&b, 10, 3, 0, 2, 1).unwrap();
        let mut leaders = BTreeMap::new();
        for r in &a {
            assert_eq!(r.len(), 3);
            assert_eq!(r.iter().collect::<BTreeSet<_>>().len(), 3, "{r:?}");
            *leaders.entry(r[0]).or_insert(0) += 1;
        }
        assert!(leaders.values().all(|c| *c == 2), "{leaders:?}");
        let mut replicas = BTreeMap::new();
        for id in a.iter().flatten() {
            *replicas.entry(*id).or_insert(0) += 1;
        }
        assert!(replicas.values().all(|c| *c == 6), "{replicas:?}");
    }

    #[test]
    fn replicas_cover_every_rack_before_reusing_one() {
        let b = brokers(&[
            Some("a"),
            Some("a"),
            Some("b"),
            Some("b"),
            Some("c"),
            Some("c"),
        ]);
        let rack = |id: i32| b[id as usize].rack.clone().unwrap();
        for start in 0..6 {
            for r in assign(&b, 12, 3, 0, start, start).unwrap() {
                let racks: BTreeSet<String> = r.iter().map(|id| rack(*id)).collect();
                assert_eq!(racks.len(), 3, "{r:?}");
            }
        }
        // RF above the rack count: every rack used, then reuse.
        for r in assign(&b, 6, 4, 0, 1, 0).unwrap() {
            let racks: BTreeSet<String> = r.iter().map(|id| rack(*id)).collect();
            assert_eq!(racks.len(), 3, "{r:?}");
            assert_eq!(r.iter().collect::<BTreeSet<_>>().len(), 4);
        }
    }

    #[test]
    fn refusals_say_why() {
        let b = brokers(&[None, None]);
        assert_eq!(
            assign(&b, 1, 3, 0, 0, 0),
            Err(PlacementError::NotEnoughBrokers { rf: 3, brokers: 2 })
        );
        assert_eq!(
            assign(&b, 0, 1, 0, 0, 0),
            Err(PlacementError::InvalidPartitions(0))
        );
        let mixed = brokers(&[Some("a"), None, Some("b")]);
        assert_eq!(
            assign(&mixed, 1, 1, 0, 0, 0),
            Err(PlacementError::PartialRacks(vec![1]))
        );
    }

    #[test]
    fn added_partitions_continue_the_rotation() {
        let b = brokers(&[None; 3]);
        let all = assign(&b, 6, 2, 0, 0, 0).unwrap();
        let tail = assign(&b, 3, 2, 3, 0, 0).unwrap();
        assert_eq!(&all[3..], &tail[..]);
    }

    #[test]
    fn single_broker_single_replica() {
        assert_eq!(
            assign(&brokers(&[None]), 2, 1, 0, 7, 3).unwrap(),
            vec![vec![0], vec![0]]
        );
    }

    #[test]
    fn rack_alternation_interleaves() {
        let b = brokers(&[Some("a"), Some("a"), Some("b"), Some("c")]);
        assert_eq!(rack_alternated(&b), vec![0, 2, 3, 1]);
    }
}
