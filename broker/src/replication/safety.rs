//! "Is it safe to stop broker b now?" — the answer behind `/v1/restart-safety`, which the
//! operator asks before every restart. Stopping b is unsafe when some partition would go offline
//! (b is its only in-sync replica) or drop below `min.insync.replicas` (b is in its ISR and the
//! rest of the ISR is too small). A broker already out of a partition's ISR does not make that
//! partition worse by stopping, so it does not block.

use serde::Serialize;

/// One partition as the metadata image describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub min_insync: i32,
}

/// Why a partition blocks the restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "reason"
)]
pub enum Blocker {
    /// The broker is the last in-sync replica: the partition would be offline.
    WouldGoOffline,
    /// The ISR would have `isr_after` members, fewer than `min_insync`.
    BelowMinIsr { isr_after: usize, min_insync: i32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockingPartition {
    pub topic: String,
    pub partition: i32,
    #[serde(flatten)]
    pub blocker: Blocker,
}

/// The partitions that make stopping `broker` unsafe; empty means safe.
pub fn restart_blockers(partitions: &[PartitionView], broker: i32) -> Vec<BlockingPartition> {
    partitions
        .iter()
        .filter(|p| p.isr.contains(&broker))
        .filter_map(|p| {
            let isr_after = p.isr.len() - 1;
            let blocker = if isr_after == 0 {
                Blocker::WouldGoOffline
            } else if (isr_after as i32) < p.min_insync {
                Blocker::BelowMinIsr {
                    isr_after,
                    min_insync: p.min_insync,
                }
            } else {
                return None;
            };
            Some(BlockingPartition {
                topic: p.topic.clone(),
                partition: p.partition,
                blocker,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(isr: &[i32], replicas: &[i32], min: i32) -> PartitionView {
        PartitionView {
            topic: "t".into(),
            partition: 0,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            min_insync: min,
        }
    }

    #[test]
    fn only_in_sync_replica_of_min_isr_2_topic_is_unsafe() {
        let lagging = [p(&[1], &[1, 2, 3], 2)];
        assert_eq!(
            restart_blockers(&lagging, 1)[0].blocker,
            Blocker::WouldGoOffline
        );
        assert!(
            restart_blockers(&lagging, 2).is_empty(),
            "2 is out of the ISR already"
        );
    }

    #[test]
    fn caught_up_replication_makes_it_safe() {
        let two = [p(&[1, 2], &[1, 2, 3], 2)];
        assert_eq!(
            restart_blockers(&two, 1)[0].blocker,
            Blocker::BelowMinIsr {
                isr_after: 1,
                min_insync: 2
            }
        );
        let all = [p(&[1, 2, 3], &[1, 2, 3], 2)];
        assert!(restart_blockers(&all, 1).is_empty());
    }

    #[test]
    fn blockers_serialize_for_the_http_answer() {
        let b = restart_blockers(&[p(&[1, 2], &[1, 2], 2)], 2);
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"topic": "t", "partition": 0, "reason": "belowMinIsr", "isrAfter": 1, "minInsync": 2}])
        );
    }
}
