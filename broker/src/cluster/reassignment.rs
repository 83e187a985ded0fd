//! Partition reassignment (KIP-455), Kafka's way:
//!
//! 1. **Start** (AlterPartitionReassignments with replicas): the replica list becomes the
//!    target followed by the replicas being removed; `adding` are the new ones. New replicas
//!    open their log and follow the leader (not in the ISR) until the leader takes them into
//!    the ISR through an ordinary `AlterPartition`.
//! 2. **Complete**, once every target replica is in the ISR: replicas = target (in target
//!    order), ISR = ISR ∩ target, and if the leader is being removed, leadership moves to the
//!    first in-sync live target replica (a new leader epoch). The active controller (the quorum
//!    leader) checks for this periodically ([`run`]); a start whose target is already in sync
//!    (e.g. 3 → 2 replicas) completes at once.
//! 3. **Cancel** (null replicas): back to the original replicas, without the added ones.
//!
//! Every step is a `ReassignPartition` record conditional on the partition epoch it was
//! computed from (see `metadata::reassignment`), so a concurrent ISR change is never
//! overwritten: the step is recomputed from the new state instead. A replication factor change
//! (1 → 3, 3 → 2) is the same mechanism. The decisions here are pure functions of a partition.

use std::time::Duration;

use super::ControlServices;
use crate::metadata::leadership::is_live;
use crate::metadata::{MetadataCache, MetadataRecord, PartitionMeta};
use crate::protocol::errors::ErrorCode;
use crate::state::TopicError;

/// How often the active controller looks for reassignments to complete.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// How many times a request recomputes its step when the partition changed under it.
const ATTEMPTS: usize = 10;

/// Is a reassignment in progress?
pub fn is_reassigning(p: &PartitionMeta) -> bool {
    !p.adding.is_empty() || !p.removing.is_empty()
}

/// The replicas the partition is moving to: its replicas without those being removed.
pub fn target(p: &PartitionMeta) -> Vec<i32> {
    p.replicas
        .iter()
        .copied()
        .filter(|r| !p.removing.contains(r))
        .collect()
}

/// A partition's assignment after one step (the fields of a `ReassignPartition` record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

impl Step {
    fn of(p: &PartitionMeta) -> Step {
        Step {
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            leader: p.leader,
            adding: p.adding.clone(),
            removing: p.removing.clone(),
        }
    }

    /// The record carrying this step, applied only at `partition_epoch`.
    pub fn record(&self, topic: &str, partition: i32, partition_epoch: i32) -> MetadataRecord {
        MetadataRecord::ReassignPartition {
            topic: topic.to_string(),
            partition,
            partition_epoch,
            replicas: self.replicas.clone(),
            isr: self.isr.clone(),
            leader: self.leader,
            adding: self.adding.clone(),
            removing: self.removing.clone(),
        }
    }
}

fn invalid(message: impl Into<String>) -> TopicError {
    TopicError::new(ErrorCode::InvalidReplicaAssignment, message)
}

/// Kafka's checks of a requested replica list (INVALID_REPLICA_ASSIGNMENT): not empty, every
/// broker registered, none twice.
pub fn validate_target(target: &[i32], registered: impl Fn(i32) -> bool) -> Result<(), TopicError> {
    if target.is_empty() {
        return Err(invalid(
            "The manual partition assignment includes an empty replica list.",
        ));
    }
    let mut sorted = target.to_vec();
    sorted.sort_unstable();
    let mut previous = None;
    for id in sorted {
        if !registered(id) {
            return Err(invalid(format!(
                "The manual partition assignment includes broker {id}, but no such broker is registered."
            )));
        }
        if previous == Some(id) {
            return Err(invalid(format!(
                "The manual partition assignment includes the broker {id} more than once."
            )));
        }
        previous = Some(id);
    }
    Ok(())
}

fn sorted_difference(a: &[i32], b: &[i32]) -> Vec<i32> {
    let mut out: Vec<i32> = a.iter().copied().filter(|r| !b.contains(r)).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Starts (or redirects) a reassignment of `p` to a validated `target`: the step to write, or
/// `None` when the partition is already there. A start that needs no new replica in the ISR
/// completes at once.
pub fn start(p: &PartitionMeta, target: &[i32], live: impl Fn(i32) -> bool) -> Option<Step> {
    let removing = sorted_difference(&p.replicas, target);
    // Replicas an earlier reassignment was adding stay "adding" if still wanted.
    let mut adding = sorted_difference(target, &p.replicas);
    adding.extend(p.adding.iter().copied().filter(|r| target.contains(r)));
    adding.sort_unstable();
    adding.dedup();
    let mut replicas = target.to_vec();
    replicas.extend(&removing);
    let started = Step {
        replicas,
        isr: p.isr.clone(),
        leader: p.leader,
        adding,
        removing,
    };
    let step = complete(&started, live).unwrap_or(started);
    (step != Step::of(p)).then_some(step)
}

/// Completes a reassignment whose target replicas are all in the ISR (and one of them can
/// lead): the step to write, or `None` while it must wait.
pub fn complete(current: &Step, live: impl Fn(i32) -> bool) -> Option<Step> {
    if current.adding.is_empty() && current.removing.is_empty() {
        return None;
    }
    let keep = |r: &i32| !current.removing.contains(r);
    let replicas: Vec<i32> = current.replicas.iter().copied().filter(keep).collect();
    let isr: Vec<i32> = current.isr.iter().copied().filter(keep).collect();
    if replicas.is_empty() || isr.is_empty() || !replicas.iter().all(|r| isr.contains(r)) {
        return None;
    }
    let leader = if replicas.contains(&current.leader) {
        current.leader
    } else {
        replicas
            .iter()
            .copied()
            .find(|r| isr.contains(r) && live(*r))?
    };
    Some(Step {
        replicas,
        isr,
        leader,
        adding: Vec::new(),
        removing: Vec::new(),
    })
}

/// The step that cancels `p`'s reassignment: the original replicas, the ISR without the
/// replicas that were being added. Refused when nothing is in progress
/// (NO_REASSIGNMENT_IN_PROGRESS) or when only added replicas are in sync (that would be an
/// unclean election).
pub fn cancel(
    p: &PartitionMeta,
    name: &str,
    index: i32,
    live: impl Fn(i32) -> bool,
) -> Result<Step, TopicError> {
    if !is_reassigning(p) {
        return Err(TopicError::new(
            ErrorCode::NoReassignmentInProgress,
            "No partition reassignment is in progress.",
        ));
    }
    let original = |r: &i32| !p.adding.contains(r);
    let replicas: Vec<i32> = p.replicas.iter().copied().filter(original).collect();
    let isr: Vec<i32> = p.isr.iter().copied().filter(original).collect();
    if isr.is_empty() || replicas.is_empty() {
        return Err(invalid(format!(
            "Unable to revert partition assignment for {name}:{index} because it would require an unclean leader election."
        )));
    }
    let leader = if replicas.contains(&p.leader) {
        p.leader
    } else {
        replicas
            .iter()
            .copied()
            .find(|r| isr.contains(r) && live(*r))
            .unwrap_or(-1)
    };
    Ok(Step {
        replicas,
        isr,
        leader,
        adding: Vec::new(),
        removing: Vec::new(),
    })
}

/// The completions to write now, from the image (what the active controller does).
pub fn completions(image: &crate::metadata::MetadataImage) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    for (name, t) in &image.topics {
        for (i, p) in t.partitions.iter().enumerate() {
            if !is_reassigning(p) {
                continue;
            }
            if let Some(step) = complete(&Step::of(p), |id| is_live(image, id)) {
                out.push(step.record(name, i as i32, p.partition_epoch));
            }
        }
    }
    out
}

/// Starts (`Some(target)`) or cancels (`None`) the reassignment of one partition, recomputing
/// the step while concurrent changes make it stale. Waits until this node applied it.
pub async fn alter(
    image: &MetadataCache,
    cluster: &super::Cluster,
    topic: &str,
    index: i32,
    target: Option<&[i32]>,
) -> Result<(), TopicError> {
    let unknown = || {
        TopicError::new(
            ErrorCode::UnknownTopicOrPartition,
            format!("Unable to find partition {topic}:{index}."),
        )
    };
    for _ in 0..ATTEMPTS {
        let (step, epoch) = {
            let img = image.snapshot();
            let t = img.topics.get(topic).ok_or_else(|| {
                TopicError::new(
                    ErrorCode::UnknownTopicOrPartition,
                    format!("Unable to find a topic named {topic}."),
                )
            })?;
            let p = usize::try_from(index)
                .ok()
                .and_then(|i| t.partitions.get(i))
                .ok_or_else(unknown)?;
            let registered = |id: i32| img.brokers.contains_key(&id);
            let live = |id: i32| is_live(&img, id);
            let step = match target {
                Some(target) => {
                    validate_target(target, registered)?;
                    start(p, target, live)
                }
                None => Some(cancel(p, topic, index, live)?),
            };
            (step, p.partition_epoch)
        };
        let Some(step) = step else {
            return Ok(());
        };
        let record = step.record(topic, index, epoch);
        cluster
            .write(std::slice::from_ref(&record))
            .await
            .map_err(|e| {
                TopicError::new(ErrorCode::RequestTimedOut, format!("not committed: {e}"))
            })?;
        let done = {
            let img = image.snapshot();
            let p = img
                .topics
                .get(topic)
                .and_then(|t| t.partitions.get(usize::try_from(index).ok()?))
                .ok_or_else(unknown)?;
            match target {
                Some(wanted) => crate::cluster::reassignment::target(p) == wanted,
                None => !is_reassigning(p),
            }
        };
        if done {
            tracing::info!(
                topic,
                partition = index,
                ?target,
                "partition reassignment {}",
                if target.is_some() {
                    "started"
                } else {
                    "cancelled"
                }
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(TopicError::new(
        ErrorCode::RequestTimedOut,
        format!("The partition {topic}:{index} kept changing; retry the reassignment."),
    ))
}

/// Reassigning partitions this broker leads, and how many messages their added replicas
/// still have to copy.
fn refresh_gauges(control: &ControlServices) {
    let adding: std::collections::HashMap<(String, i32), Vec<i32>> = {
        let img = control.image.snapshot();
        img.topics
            .values()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| is_reassigning(p))
                    .map(|(i, p)| ((t.name.clone(), i as i32), p.adding.clone()))
            })
            .collect()
    };
    let (mut count, mut remaining) = (0i64, 0i64);
    for p in control.replicas.all_partitions() {
        let Some(added) = adding.get(&(p.topic.to_string(), p.index)) else {
            continue;
        };
        let leo = p.log.read().log_end_offset();
        let st = p.replica.lock();
        let crate::partition::Role::Leader(view) = &st.role else {
            continue;
        };
        count += 1;
        remaining += added
            .iter()
            .filter_map(|r| view.followers.get(r))
            .map(|f| (leo - f.log_end_offset.max(0)).max(0))
            .sum::<i64>();
    }
    control.metrics.reassigning_partitions.set(count);
    control
        .metrics
        .reassignment_offsets_remaining
        .set(remaining);
}

/// The controller duty: on the quorum leader, completes reassignments whose target replicas
/// are all in sync.
pub async fn run(control: ControlServices) {
    let cluster = &control.cluster;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tick.tick().await;
        if control.is_stopping() {
            return;
        }
        refresh_gauges(&control);
        if !control.is_controller() {
            continue;
        }
        let records = completions(&control.image.snapshot());
        for record in records {
            if let MetadataRecord::ReassignPartition {
                topic,
                partition,
                replicas,
                leader,
                ..
            } = &record
            {
                tracing::info!(
                    topic,
                    partition,
                    ?replicas,
                    leader,
                    "completing partition reassignment"
                );
            }
            if let Err(e) = cluster.write(std::slice::from_ref(&record)).await {
                tracing::info!(error = %e, "reassignment completion not committed; will retry");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::image::partition_defaults;

    fn all_live(_: i32) -> bool {
        true
    }

    fn apply(p: &mut PartitionMeta, s: &Step) {
        if s.leader != p.leader {
            p.leader_epoch += 1;
        }
        p.replicas = s.replicas.clone();
        p.isr = s.isr.clone();
        p.leader = s.leader;
        p.adding = s.adding.clone();
        p.removing = s.removing.clone();
        p.partition_epoch += 1;
    }

    #[test]
    fn validation_follows_kafka() {
        let registered = |id: i32| (0..3).contains(&id);
        assert!(validate_target(&[0, 1], registered).is_ok());
        for (bad, what) in [
            (vec![], "empty replica list"),
            (vec![0, 7], "broker 7, but no such broker"),
            (vec![1, 0, 1], "broker 1 more than once"),
        ] {
            let e = validate_target(&bad, registered).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidReplicaAssignment);
            assert!(e.message.contains(what), "{}", e.message);
        }
    }

    #[test]
    fn replication_factor_one_to_three_waits_for_the_new_replicas() {
        let mut p = partition_defaults(vec![0]);
        let s = start(&p, &[0, 1, 2], all_live).unwrap();
        assert_eq!(s.replicas, vec![0, 1, 2]);
        assert_eq!((s.adding.clone(), s.removing.clone()), (vec![1, 2], vec![]));
        assert_eq!((s.isr.clone(), s.leader), (vec![0], 0));
        apply(&mut p, &s);
        assert_eq!(target(&p), vec![0, 1, 2]);
        assert_eq!(complete(&Step::of(&p), all_live), None);
        p.isr = vec![0, 1];
        assert_eq!(complete(&Step::of(&p), all_live), None, "2 is not in sync");
        p.isr = vec![0, 1, 2];
        let done = complete(&Step::of(&p), all_live).unwrap();
        assert_eq!(done.replicas, vec![0, 1, 2]);
        assert!(done.adding.is_empty() && done.removing.is_empty());
        assert_eq!(done.leader, 0);
    }

    #[test]
    fn shrinking_to_in_sync_replicas_completes_at_once() {
        let p = partition_defaults(vec![0, 1, 2]);
        let s = start(&p, &[1, 2], all_live).unwrap();
        assert_eq!(s.replicas, vec![1, 2]);
        assert_eq!(s.isr, vec![1, 2]);
        assert_eq!(
            s.leader, 1,
            "the removed leader hands over to the first target replica"
        );
        assert!(s.adding.is_empty() && s.removing.is_empty());
        // A target equal to the current assignment changes nothing.
        assert_eq!(start(&p, &[0, 1, 2], all_live), None);
        // Reordering only completes at once too (the leader stays).
        let s = start(&p, &[2, 1, 0], all_live).unwrap();
        assert_eq!((s.replicas.clone(), s.leader), (vec![2, 1, 0], 0));
    }

    #[test]
    fn moving_a_partition_keeps_the_leader_until_the_target_is_in_sync() {
        let mut p = partition_defaults(vec![0, 1]);
        let s = start(&p, &[1, 2], all_live).unwrap();
        assert_eq!(s.replicas, vec![1, 2, 0]);
        assert_eq!((s.adding.clone(), s.removing.clone()), (vec![2], vec![0]));
        assert_eq!(s.leader, 0);
        apply(&mut p, &s);
        assert_eq!(target(&p), vec![1, 2]);
        p.isr = vec![0, 1, 2];
        // The first target replica in sync that is live leads; a fenced one is skipped.
        let done = complete(&Step::of(&p), |id| id != 1).unwrap();
        assert_eq!(
            (done.replicas.clone(), done.isr.clone()),
            (vec![1, 2], vec![1, 2])
        );
        assert_eq!(done.leader, 2);
        assert_eq!(
            complete(&Step::of(&p), |id| id == 0),
            None,
            "no target replica is live"
        );
    }

    #[test]
    fn cancelling_reverts_to_the_original_replicas() {
        let mut p = partition_defaults(vec![0, 1]);
        let s = start(&p, &[1, 2], all_live).unwrap();
        apply(&mut p, &s);
        p.isr = vec![0, 1, 2];
        let s = cancel(&p, "t", 0, all_live).unwrap();
        assert_eq!(
            (s.replicas.clone(), s.isr.clone(), s.leader),
            (vec![1, 0], vec![0, 1], 0)
        );
        assert!(s.adding.is_empty() && s.removing.is_empty());
        apply(&mut p, &s);
        let e = cancel(&p, "t", 0, all_live).unwrap_err();
        assert_eq!(e.code, ErrorCode::NoReassignmentInProgress);
        // Only an added replica in sync: reverting would be an unclean election.
        let mut q = partition_defaults(vec![0]);
        let s = start(&q, &[1], all_live).unwrap();
        apply(&mut q, &s);
        q.isr = vec![1];
        let e = cancel(&q, "t", 0, all_live).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidReplicaAssignment);
    }

    #[test]
    fn redirecting_a_reassignment_keeps_what_is_still_being_added() {
        let mut p = partition_defaults(vec![0]);
        let s = start(&p, &[0, 1, 2], all_live).unwrap();
        apply(&mut p, &s);
        // The same target again: nothing to write.
        assert_eq!(start(&p, &[0, 1, 2], all_live), None);
        // A new target without 2: 2 is removed, 1 is still being added.
        let s = start(&p, &[0, 1], all_live).unwrap();
        assert_eq!(s.replicas, vec![0, 1, 2]);
        assert_eq!((s.adding.clone(), s.removing.clone()), (vec![1], vec![2]));
    }

    #[test]
    fn completions_come_from_the_image_with_the_epoch_they_were_computed_from() {
        use std::collections::BTreeMap;
        let mut img = crate::metadata::MetadataImage::default();
        for id in 0..3 {
            img.apply(&MetadataRecord::RegisterBroker {
                node_id: id,
                rack: None,
                endpoints: vec![],
                incarnation: uuid::Uuid::new_v4(),
            });
        }
        img.apply(&MetadataRecord::CreateTopic {
            name: "t".into(),
            id: uuid::Uuid::new_v4(),
            replicas: vec![vec![0]],
            configs: BTreeMap::new(),
        });
        let p = img.topics["t"].partitions[0].clone();
        img.apply(
            &start(&p, &[1], all_live)
                .unwrap()
                .record("t", 0, p.partition_epoch),
        );
        assert!(completions(&img).is_empty(), "1 is not in the ISR yet");
        // The leader takes 1 into the ISR (conditional AlterPartition).
        let epoch = img.topics["t"].partitions[0].partition_epoch;
        img.apply(&MetadataRecord::AlterPartition {
            topic: "t".into(),
            partition: 0,
            partition_epoch: epoch,
            isr: vec![0, 1],
            leader: None,
        });
        let records = completions(&img);
        assert_eq!(records.len(), 1);
        // An ISR change racing with the completion makes it stale: not applied.
        let epoch = img.topics["t"].partitions[0].partition_epoch;
        let mut raced = img.clone();
        raced.apply(&MetadataRecord::AlterPartition {
            topic: "t".into(),
            partition: 0,
            partition_epoch: epoch,
            isr: vec![0, 1],
            leader: None,
        });
        let before = raced.topics["t"].partitions[0].clone();
        raced.apply(&records[0]);
        assert_eq!(raced.topics["t"].partitions[0], before);
        // Applied at the right epoch: 1 alone, leading with a new leader epoch.
        img.apply(&records[0]);
        let p = &img.topics["t"].partitions[0];
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![1], vec![1], 1)
        );
        assert_eq!(p.leader_epoch, 1);
        assert!(!is_reassigning(p));
    }
}
