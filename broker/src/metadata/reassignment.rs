//! How the image applies a `ReassignPartition` record (KIP-455 partition reassignment).
//!
//! What to write — start, cancel, complete — is decided by the active controller and the
//! request handler (`cluster::reassignment`); here the record is only checked against the
//! partition it applies to, in log order on every node:
//! - it is conditional on the partition epoch it was computed from, so a concurrent ISR change
//!   (or another reassignment) makes it a no-op instead of being overwritten;
//! - the replica list, the adding/removing lists and the ISR must be consistent, the ISR may
//!   only lose members (replicas join the ISR through the leader's `AlterPartition`), and a
//!   new leader must be a live member of the new ISR.
//!
//! A leader change bumps the leader epoch; every applied record bumps the partition epoch.

use super::image::MetadataImage;

/// A `ReassignPartition` record's fields.
pub struct ReassignRequest<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub partition_epoch: i32,
    pub replicas: &'a [i32],
    pub isr: &'a [i32],
    /// -1 only when no replica can lead.
    pub leader: i32,
    pub adding: &'a [i32],
    pub removing: &'a [i32],
}

/// Why a `ReassignPartition` was not applied (logged; the writer sees the unchanged image).
#[derive(Debug, PartialEq, Eq)]
pub enum ReassignRejected {
    UnknownPartition,
    StaleEpoch,
    InvalidAssignment,
    InvalidIsr,
    IneligibleLeader,
}

fn has_duplicates(ids: &[i32]) -> bool {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.windows(2).any(|w| w[0] == w[1])
}

pub fn apply(image: &mut MetadataImage, req: &ReassignRequest) -> Result<(), ReassignRejected> {
    let live = |id: i32| image.brokers.get(&id).is_some_and(|b| !b.fenced);
    let leader_live = req.leader < 0 || live(req.leader);
    let p = image
        .topics
        .get_mut(req.topic)
        .and_then(|t| t.partitions.get_mut(usize::try_from(req.partition).ok()?))
        .ok_or(ReassignRejected::UnknownPartition)?;
    if p.partition_epoch != req.partition_epoch {
        return Err(ReassignRejected::StaleEpoch);
    }
    let within = |ids: &[i32]| ids.iter().all(|r| req.replicas.contains(r));
    if req.replicas.is_empty()
        || has_duplicates(req.replicas)
        || !within(req.adding)
        || !within(req.removing)
        || req.adding.iter().any(|r| req.removing.contains(r))
    {
        return Err(ReassignRejected::InvalidAssignment);
    }
    if req.isr.is_empty()
        || has_duplicates(req.isr)
        || !within(req.isr)
        || !req.isr.iter().all(|r| p.isr.contains(r))
    {
        return Err(ReassignRejected::InvalidIsr);
    }
    if req.leader >= 0 && (!req.isr.contains(&req.leader) || !leader_live) {
        return Err(ReassignRejected::IneligibleLeader);
    }
    if req.leader != p.leader {
        p.leader = req.leader;
        p.leader_epoch += 1;
    }
    p.replicas = req.replicas.to_vec();
    p.isr = req.isr.to_vec();
    p.adding = req.adding.to_vec();
    p.removing = req.removing.to_vec();
    p.partition_epoch += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::*;
    use crate::metadata::snapshot::{image_from_records, image_to_records};
    use crate::metadata::MetadataRecord;

    fn image() -> MetadataImage {
        let mut img = MetadataImage::default();
        for id in 0..4 {
            img.apply(&MetadataRecord::RegisterBroker {
                node_id: id,
                rack: None,
                endpoints: vec![],
                incarnation: Uuid::new_v4(),
            });
        }
        img.apply(&MetadataRecord::CreateTopic {
            name: "t".into(),
            id: Uuid::new_v4(),
            replicas: vec![vec![0, 1]],
            configs: BTreeMap::new(),
        });
        img
    }

    fn record(epoch: i32, replicas: &[i32], isr: &[i32], leader: i32) -> MetadataRecord {
        MetadataRecord::ReassignPartition {
            topic: "t".into(),
            partition: 0,
            partition_epoch: epoch,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            adding: vec![2],
            removing: vec![0],
        }
    }

    #[test]
    fn applies_only_at_the_partition_epoch_it_was_computed_from() {
        let mut img = image();
        img.apply(&record(0, &[1, 2, 0], &[0, 1], 0));
        let p = &img.topics["t"].partitions[0];
        assert_eq!(p.replicas, vec![1, 2, 0]);
        assert_eq!((p.adding.clone(), p.removing.clone()), (vec![2], vec![0]));
        assert_eq!((p.partition_epoch, p.leader_epoch), (1, 0));
        // The same record again is stale.
        let before = p.clone();
        img.apply(&record(0, &[1, 2, 0], &[0, 1], 0));
        assert_eq!(img.topics["t"].partitions[0], before);
    }

    #[test]
    fn rejects_inconsistent_assignments_isrs_and_leaders() {
        let mut img = image();
        let req = |replicas: &'static [i32], isr: &'static [i32], leader| ReassignRequest {
            topic: "t",
            partition: 0,
            partition_epoch: 0,
            replicas,
            isr,
            leader,
            adding: &[2],
            removing: &[0],
        };
        use ReassignRejected::*;
        assert_eq!(
            apply(&mut img, &req(&[1, 2], &[1], 1)),
            Err(InvalidAssignment)
        );
        assert_eq!(
            apply(&mut img, &req(&[1, 2, 0, 1], &[1], 1)),
            Err(InvalidAssignment)
        );
        assert_eq!(apply(&mut img, &req(&[1, 2, 0], &[], 1)), Err(InvalidIsr));
        assert_eq!(
            apply(&mut img, &req(&[1, 2, 0], &[1, 2], 1)),
            Err(InvalidIsr),
            "2 never joined the ISR"
        );
        assert_eq!(
            apply(&mut img, &req(&[1, 2, 0], &[0], 1)),
            Err(IneligibleLeader)
        );
        img.apply(&MetadataRecord::FenceBroker { node_id: 1 });
        let epoch = img.topics["t"].partitions[0].partition_epoch;
        let fenced_leader = ReassignRequest {
            partition_epoch: epoch,
            ..req(&[1, 2, 0], &[0], 1)
        };
        assert_eq!(apply(&mut img, &fenced_leader), Err(IneligibleLeader));
    }

    #[test]
    fn a_new_leader_bumps_the_leader_epoch() {
        let mut img = image();
        img.apply(&MetadataRecord::ReassignPartition {
            topic: "t".into(),
            partition: 0,
            partition_epoch: 0,
            replicas: vec![1],
            isr: vec![1],
            leader: 1,
            adding: vec![],
            removing: vec![],
        });
        let p = &img.topics["t"].partitions[0];
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (1, 1, 1));
        assert_eq!(p.replicas, vec![1]);
    }

    #[test]
    fn snapshots_keep_a_reassignment_in_progress() {
        let mut img = image();
        img.apply(&record(0, &[1, 2, 0], &[0, 1], 0));
        let restored = image_from_records(&image_to_records(&img));
        assert_eq!(restored.topics, img.topics);
    }
}
