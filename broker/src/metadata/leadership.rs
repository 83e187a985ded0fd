//! Partition leadership and ISR changes as the metadata image applies them.
//!
//! Every rule here runs inside `MetadataImage::apply`, in log order, on every node, so all nodes
//! agree on leaders and ISRs without asking anyone. The only non-deterministic decision — "has
//! broker b stopped heartbeating?" — is the controller's, and it reaches the image as a
//! `FenceBroker` record.
//!
//! Kafka's rules (KRaft without eligible leader replicas):
//! - the leader is the first replica, in assignment order, that is in the ISR and not fenced;
//! - fencing a broker removes it from every ISR it is in, except as the last member (so the
//!   partition remembers who has the data), and moves its leaderships; a partition with no
//!   eligible replica goes offline (leader -1) until one comes back;
//! - a broker that registers again (a restart) is treated the same way first: its log may be
//!   behind or wiped, so it has to re-earn its ISR place through the leader;
//! - an `AlterPartition` is conditional on the partition epoch it was computed from, so a stale
//!   request (from a deposed leader, or racing with the controller) changes nothing; it may not
//!   add fenced or unknown brokers to the ISR, and names a leader from outside the current ISR
//!   only for a partition without a leader, as the ISR's only member (an unclean election,
//!   what ElectLeaders UNCLEAN writes);
//! - ElectLeaders PREFERRED and the leader rebalancer write an `AlterPartition` that keeps the
//!   ISR and names the first replica leader ([`preferred_election`]);
//! - with `unclean.leader.election.enable=true` an offline partition elects any live replica.

use super::image::{MetadataImage, PartitionMeta};

/// Does the topic (or the cluster default) allow electing a replica outside the ISR?
fn unclean_allowed(
    image: &MetadataImage,
    configs: &std::collections::BTreeMap<String, String>,
) -> bool {
    configs
        .get("unclean.leader.election.enable")
        .or_else(|| {
            image
                .broker_configs
                .get(&None)
                .and_then(|c| c.get("unclean.leader.election.enable"))
        })
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Is `id` a registered broker that is not fenced?
pub fn is_live(image: &MetadataImage, id: i32) -> bool {
    image.brokers.get(&id).is_some_and(|b| !b.fenced)
}

/// The preferred live in-sync replica, in assignment order.
pub fn elect(p: &PartitionMeta, live: impl Fn(i32) -> bool) -> Option<i32> {
    p.replicas
        .iter()
        .copied()
        .find(|r| p.isr.contains(r) && live(*r))
}

/// Removes `node` from the partition's ISR (unless it is the last member) and, if it led,
/// elects another leader. Returns whether anything changed.
fn step_down(p: &mut PartitionMeta, node: i32, live: &dyn Fn(i32) -> bool, unclean: bool) -> bool {
    let mut changed = false;
    if p.isr.contains(&node) && p.isr.len() > 1 {
        p.isr.retain(|r| *r != node);
        changed = true;
    }
    if p.leader == node {
        let next = elect(p, |r| r != node && live(r));
        let next = match next {
            Some(l) => Some(l),
            None if unclean => {
                let any = p.replicas.iter().copied().find(|r| *r != node && live(*r));
                if let Some(l) = any {
                    p.isr = vec![l];
                }
                any
            }
            None => None,
        };
        p.leader = next.unwrap_or(-1);
        p.leader_epoch += 1;
        changed = true;
    }
    changed
}

/// Gives offline partitions a leader again if an eligible replica is live.
fn revive(p: &mut PartitionMeta, live: &dyn Fn(i32) -> bool, unclean: bool) -> bool {
    if p.leader >= 0 {
        return false;
    }
    let next = elect(p, live).or_else(|| {
        if !unclean {
            return None;
        }
        let any = p.replicas.iter().copied().find(|r| live(*r))?;
        p.isr = vec![any];
        Some(any)
    });
    match next {
        Some(l) => {
            p.leader = l;
            p.leader_epoch += 1;
            true
        }
        None => false,
    }
}

/// Runs `f` on every partition that has `node` as a replica, bumping the partition epoch of
/// those it changed.
fn for_partitions_of(
    image: &mut MetadataImage,
    node: Option<i32>,
    f: impl Fn(&mut PartitionMeta, &dyn Fn(i32) -> bool, bool) -> bool,
) {
    let liveness: std::collections::BTreeMap<i32, bool> = image
        .brokers
        .iter()
        .map(|(id, b)| (*id, !b.fenced))
        .collect();
    let live = move |id: i32| liveness.get(&id).copied().unwrap_or(false);
    let names: Vec<String> = image.topics.keys().cloned().collect();
    for name in names {
        let unclean = {
            let t = &image.topics[&name];
            unclean_allowed(image, &t.configs)
        };
        let t = image.topics.get_mut(&name).expect("listed above");
        for p in &mut t.partitions {
            if node.is_some_and(|n| !p.replicas.contains(&n)) {
                continue;
            }
            if f(p, &live, unclean) {
                p.partition_epoch += 1;
            }
        }
    }
}

/// `FenceBroker`: the broker stopped heartbeating (or is shutting down).
pub fn fence(image: &mut MetadataImage, node: i32) {
    if let Some(b) = image.brokers.get_mut(&node) {
        b.fenced = true;
    }
    for_partitions_of(image, Some(node), |p, live, unclean| {
        step_down(p, node, live, unclean)
    });
}

/// `UnfenceBroker`: the broker is heartbeating again; offline partitions it can lead revive.
pub fn unfence(image: &mut MetadataImage, node: i32) {
    match image.brokers.get_mut(&node) {
        Some(b) => b.fenced = false,
        None => return,
    }
    for_partitions_of(image, Some(node), |p, live, unclean| {
        revive(p, live, unclean)
    });
}

/// A registration with a new incarnation (the broker restarted): leave every ISR and
/// leadership as if fenced, then come back as a live broker.
pub fn reregister(image: &mut MetadataImage, node: i32) {
    fence(image, node);
    unfence(image, node);
}

/// Revives every offline partition that has a live eligible replica (after config changes
/// such as enabling unclean election).
pub fn revive_all(image: &mut MetadataImage) {
    for_partitions_of(image, None, |p, live, unclean| revive(p, live, unclean));
}

/// A requested ISR/leader change, applied only if still based on the current partition epoch.
pub struct AlterRequest<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub partition_epoch: i32,
    pub isr: &'a [i32],
    /// A new leader (must be in the new ISR and live); `None` keeps the current one.
    pub leader: Option<i32>,
}

/// Why an `AlterPartition` was not applied (logged; the requester sees the unchanged image).
#[derive(Debug, PartialEq, Eq)]
pub enum AlterRejected {
    UnknownPartition,
    StaleEpoch,
    InvalidIsr,
    IneligibleLeader,
}

pub fn alter(image: &mut MetadataImage, req: &AlterRequest) -> Result<(), AlterRejected> {
    let live: Vec<i32> = image
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .map(|b| b.id)
        .collect();
    let p = image
        .topics
        .get_mut(req.topic)
        .and_then(|t| t.partitions.get_mut(usize::try_from(req.partition).ok()?))
        .ok_or(AlterRejected::UnknownPartition)?;
    if p.partition_epoch != req.partition_epoch {
        return Err(AlterRejected::StaleEpoch);
    }
    let mut isr = req.isr.to_vec();
    isr.sort_unstable();
    isr.dedup();
    let added_ok = isr.iter().all(|r| p.isr.contains(r) || live.contains(r));
    if isr.is_empty() || !isr.iter().all(|r| p.replicas.contains(r)) || !added_ok {
        return Err(AlterRejected::InvalidIsr);
    }
    let leader = match req.leader {
        // A leader from outside the current ISR is an unclean election: only for a partition
        // without a leader, and the ISR becomes that replica alone.
        Some(l) if !p.isr.contains(&l) && (p.leader >= 0 || isr != [l]) => {
            return Err(AlterRejected::IneligibleLeader)
        }
        Some(l) if isr.contains(&l) && live.contains(&l) => l,
        Some(_) => return Err(AlterRejected::IneligibleLeader),
        None if isr.contains(&p.leader) => p.leader,
        None => return Err(AlterRejected::IneligibleLeader),
    };
    if leader != p.leader {
        p.leader = leader;
        p.leader_epoch += 1;
    }
    p.isr = isr;
    p.partition_epoch += 1;
    Ok(())
}

/// What electing a leader for one partition would do (ElectLeaders, the leader rebalancer).
/// `Elect` is written as an `AlterPartition` with `leader: Some(leader)`, conditional on
/// `partition_epoch`, so it changes nothing if the partition moved meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Election {
    /// The partition already has the leader this election would give it.
    NotNeeded,
    /// No replica may be elected now (Kafka's PREFERRED_LEADER_NOT_AVAILABLE or
    /// ELIGIBLE_LEADERS_NOT_AVAILABLE).
    NotAvailable,
    Elect {
        leader: i32,
        isr: Vec<i32>,
        partition_epoch: i32,
    },
}

impl Election {
    /// The conditional record that carries out an `Elect`.
    pub fn record(&self, topic: &str, partition: i32) -> Option<super::MetadataRecord> {
        match self {
            Election::Elect {
                leader,
                isr,
                partition_epoch,
            } => Some(super::MetadataRecord::AlterPartition {
                topic: topic.to_string(),
                partition,
                partition_epoch: *partition_epoch,
                isr: isr.clone(),
                leader: Some(*leader),
            }),
            _ => None,
        }
    }
}

/// PREFERRED election: the first assigned replica leads if it is live and in the ISR; the ISR
/// stays as it is.
pub fn preferred_election(p: &PartitionMeta, live: impl Fn(i32) -> bool) -> Election {
    let Some(&preferred) = p.replicas.first() else {
        return Election::NotAvailable;
    };
    if p.leader == preferred {
        Election::NotNeeded
    } else if p.isr.contains(&preferred) && live(preferred) {
        Election::Elect {
            leader: preferred,
            isr: p.isr.clone(),
            partition_epoch: p.partition_epoch,
        }
    } else {
        Election::NotAvailable
    }
}

/// UNCLEAN election, for a partition without a leader only: a live in-sync replica if there
/// is one, else the first live replica in assignment order, whose log becomes the truth (the
/// ISR is that replica alone; records only the old ISR had are lost).
pub fn unclean_election(p: &PartitionMeta, live: impl Fn(i32) -> bool) -> Election {
    if p.leader >= 0 {
        return Election::NotNeeded;
    }
    let partition_epoch = p.partition_epoch;
    if let Some(leader) = elect(p, &live) {
        return Election::Elect {
            leader,
            isr: p.isr.clone(),
            partition_epoch,
        };
    }
    match p.replicas.iter().copied().find(|r| live(*r)) {
        Some(leader) => Election::Elect {
            leader,
            isr: vec![leader],
            partition_epoch,
        },
        None => Election::NotAvailable,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::*;
    use crate::metadata::MetadataRecord;

    fn register(img: &mut MetadataImage, id: i32, incarnation: Uuid) {
        img.apply(&MetadataRecord::RegisterBroker {
            node_id: id,
            rack: None,
            endpoints: vec![],
            incarnation,
        });
    }

    fn cluster() -> (MetadataImage, [Uuid; 3]) {
        let mut img = MetadataImage::default();
        let ids = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
        for (i, inc) in ids.iter().enumerate() {
            register(&mut img, i as i32 + 1, *inc);
        }
        img.apply(&MetadataRecord::CreateTopic {
            name: "t".into(),
            id: Uuid::new_v4(),
            replicas: vec![vec![1, 2, 3], vec![2, 3, 1]],
            configs: BTreeMap::new(),
        });
        (img, ids)
    }

    fn part(img: &MetadataImage, i: usize) -> &PartitionMeta {
        &img.topics["t"].partitions[i]
    }

    #[test]
    fn fencing_the_leader_elects_the_next_in_sync_replica() {
        let (mut img, _) = cluster();
        img.apply(&MetadataRecord::FenceBroker { node_id: 1 });
        let p0 = part(&img, 0);
        assert_eq!((p0.leader, p0.leader_epoch), (2, 1));
        assert_eq!(p0.isr, vec![2, 3]);
        let p1 = part(&img, 1);
        assert_eq!((p1.leader, p1.leader_epoch), (2, 0), "1 only followed here");
        assert_eq!(p1.isr, vec![2, 3]);
        assert_eq!(p1.partition_epoch, 1);
    }

    #[test]
    fn last_in_sync_replica_stays_in_the_isr_and_the_partition_goes_offline() {
        let (mut img, _) = cluster();
        img.apply(&MetadataRecord::FenceBroker { node_id: 2 });
        img.apply(&MetadataRecord::FenceBroker { node_id: 3 });
        img.apply(&MetadataRecord::FenceBroker { node_id: 1 });
        let p0 = part(&img, 0);
        assert_eq!(p0.leader, -1);
        assert_eq!(p0.isr, vec![1], "1 was the last in-sync replica");
        // 3 comes back: not in the ISR, so it may not lead (no unclean election).
        img.apply(&MetadataRecord::UnfenceBroker { node_id: 3 });
        assert_eq!(part(&img, 0).leader, -1);
        // 1 comes back: it has the data, it leads again with a new epoch.
        img.apply(&MetadataRecord::UnfenceBroker { node_id: 1 });
        let p0 = part(&img, 0);
        assert_eq!((p0.leader, p0.isr.clone()), (1, vec![1]));
        assert!(p0.leader_epoch >= 2);
    }

    #[test]
    fn unclean_election_picks_a_live_out_of_sync_replica_when_enabled() {
        let (mut img, _) = cluster();
        for n in [2, 3, 1] {
            img.apply(&MetadataRecord::FenceBroker { node_id: n });
        }
        img.apply(&MetadataRecord::AlterTopicConfig {
            name: "t".into(),
            changes: BTreeMap::from([(
                "unclean.leader.election.enable".into(),
                Some("true".into()),
            )]),
        });
        img.apply(&MetadataRecord::UnfenceBroker { node_id: 3 });
        let p0 = part(&img, 0);
        assert_eq!((p0.leader, p0.isr.clone()), (3, vec![3]));
    }

    #[test]
    fn a_restarted_broker_leaves_the_isr_and_its_leaderships() {
        let (mut img, ids) = cluster();
        register(&mut img, 1, ids[0]);
        assert_eq!(part(&img, 0).leader, 1, "same incarnation: nothing changes");
        register(&mut img, 1, Uuid::new_v4());
        let p0 = part(&img, 0);
        assert_eq!(p0.leader, 2);
        assert_eq!(p0.isr, vec![2, 3]);
        assert!(!img.brokers[&1].fenced);
    }

    #[test]
    fn alter_partition_is_conditional_on_the_partition_epoch() {
        let (mut img, _) = cluster();
        let shrink = MetadataRecord::AlterPartition {
            topic: "t".into(),
            partition: 0,
            partition_epoch: 0,
            isr: vec![1, 2],
            leader: None,
        };
        img.apply(&shrink);
        assert_eq!(part(&img, 0).isr, vec![1, 2]);
        assert_eq!(part(&img, 0).partition_epoch, 1);
        // The same request again is stale now.
        let expand = MetadataRecord::AlterPartition {
            topic: "t".into(),
            partition: 0,
            partition_epoch: 0,
            isr: vec![1, 2, 3],
            leader: None,
        };
        img.apply(&expand);
        assert_eq!(part(&img, 0).isr, vec![1, 2]);
    }

    #[test]
    fn alter_partition_never_adds_a_fenced_broker() {
        let (mut img, _) = cluster();
        img.apply(&MetadataRecord::FenceBroker { node_id: 3 });
        let epoch = part(&img, 0).partition_epoch;
        let req = AlterRequest {
            topic: "t",
            partition: 0,
            partition_epoch: epoch,
            isr: &[1, 2, 3],
            leader: None,
        };
        assert_eq!(alter(&mut img, &req), Err(AlterRejected::InvalidIsr));
        let req = AlterRequest {
            isr: &[1, 2],
            leader: Some(3),
            ..req
        };
        assert_eq!(alter(&mut img, &req), Err(AlterRejected::IneligibleLeader));
        let req = AlterRequest {
            leader: Some(2),
            ..req
        };
        assert_eq!(alter(&mut img, &req), Ok(()));
        assert_eq!((part(&img, 0).leader, part(&img, 0).leader_epoch), (2, 1));
    }

    fn live_in(img: &MetadataImage) -> impl Fn(i32) -> bool + '_ {
        |id| is_live(img, id)
    }

    #[test]
    fn preferred_election_needs_the_preferred_replica_live_and_in_sync() {
        let (mut img, _) = cluster();
        assert_eq!(
            preferred_election(part(&img, 0), live_in(&img)),
            Election::NotNeeded
        );
        // 1 restarts: 2 leads, 1 is live but out of the ISR.
        register(&mut img, 1, Uuid::new_v4());
        assert_eq!(
            preferred_election(part(&img, 0), live_in(&img)),
            Election::NotAvailable
        );
        // The leader takes 1 back into the ISR: now 1 can be elected, with the ISR unchanged.
        let epoch = part(&img, 0).partition_epoch;
        img.apply(&MetadataRecord::AlterPartition {
            topic: "t".into(),
            partition: 0,
            partition_epoch: epoch,
            isr: vec![1, 2, 3],
            leader: None,
        });
        let election = preferred_election(part(&img, 0), live_in(&img));
        let epoch = part(&img, 0).partition_epoch;
        assert_eq!(
            election,
            Election::Elect {
                leader: 1,
                isr: vec![1, 2, 3],
                partition_epoch: epoch
            }
        );
        let record = election.record("t", 0).unwrap();
        let leader_epoch = part(&img, 0).leader_epoch;
        img.apply(&record);
        let p0 = part(&img, 0);
        assert_eq!((p0.leader, p0.isr.clone()), (1, vec![1, 2, 3]));
        assert_eq!(p0.leader_epoch, leader_epoch + 1);
        // Applying the same election again is stale: nothing changes.
        let before = p0.clone();
        img.apply(&record);
        assert_eq!(part(&img, 0), &before);
        assert_eq!(
            preferred_election(part(&img, 0), live_in(&img)),
            Election::NotNeeded
        );
        // A fenced preferred replica is not available.
        img.apply(&MetadataRecord::FenceBroker { node_id: 2 });
        assert_eq!(
            preferred_election(part(&img, 1), live_in(&img)),
            Election::NotAvailable
        );
    }

    #[test]
    fn unclean_election_only_for_a_partition_without_a_leader() {
        let (mut img, _) = cluster();
        assert_eq!(
            unclean_election(part(&img, 0), live_in(&img)),
            Election::NotNeeded
        );
        for n in [2, 3, 1] {
            img.apply(&MetadataRecord::FenceBroker { node_id: n });
        }
        assert_eq!(
            unclean_election(part(&img, 0), live_in(&img)),
            Election::NotAvailable,
            "nobody is live"
        );
        img.apply(&MetadataRecord::UnfenceBroker { node_id: 3 });
        let p0 = part(&img, 0);
        assert_eq!((p0.leader, p0.isr.clone()), (-1, vec![1]));
        let election = unclean_election(p0, live_in(&img));
        assert_eq!(
            election,
            Election::Elect {
                leader: 3,
                isr: vec![3],
                partition_epoch: p0.partition_epoch
            }
        );
        img.apply(&election.record("t", 0).unwrap());
        let p0 = part(&img, 0);
        assert_eq!((p0.leader, p0.isr.clone()), (3, vec![3]));
        // 1 returns: it is no longer in the ISR and does not take over.
        img.apply(&MetadataRecord::UnfenceBroker { node_id: 1 });
        assert_eq!(part(&img, 0).leader, 3);
        assert_eq!(
            unclean_election(part(&img, 0), live_in(&img)),
            Election::NotNeeded
        );
    }

    #[test]
    fn alter_partition_elects_outside_the_isr_only_without_a_leader() {
        let (mut img, _) = cluster();
        register(&mut img, 1, Uuid::new_v4());
        // Partition 0: 2 leads, ISR [2, 3], 1 live but out of sync.
        let epoch = part(&img, 0).partition_epoch;
        let req = AlterRequest {
            topic: "t",
            partition: 0,
            partition_epoch: epoch,
            isr: &[1],
            leader: Some(1),
        };
        assert_eq!(alter(&mut img, &req), Err(AlterRejected::IneligibleLeader));
        let req = AlterRequest {
            isr: &[1, 2, 3],
            ..req
        };
        assert_eq!(alter(&mut img, &req), Err(AlterRejected::IneligibleLeader));
        assert_eq!(part(&img, 0).leader, 2);
        // Without a leader, a live replica outside the ISR may lead, alone in the ISR.
        img.apply(&MetadataRecord::FenceBroker { node_id: 3 });
        img.apply(&MetadataRecord::FenceBroker { node_id: 2 });
        assert_eq!(part(&img, 0).leader, -1);
        let epoch = part(&img, 0).partition_epoch;
        let req = AlterRequest {
            topic: "t",
            partition: 0,
            partition_epoch: epoch,
            isr: &[1, 2],
            leader: Some(1),
        };
        assert_eq!(alter(&mut img, &req), Err(AlterRejected::IneligibleLeader));
        let req = AlterRequest { isr: &[1], ..req };
        assert_eq!(alter(&mut img, &req), Ok(()));
        assert_eq!(
            (part(&img, 0).leader, part(&img, 0).isr.clone()),
            (1, vec![1])
        );
    }
}
