//! Replication throttles for a reassignment, as `kafka-reassign-partitions --throttle` sets
//! them: which replicas each topic lists in `leader.replication.throttled.replicas` (the
//! replicas data is copied from) and `follower.replication.throttled.replicas` (the replicas
//! being added), and how many bytes are still to copy.
//!
//! Only listed replicas that are out of the ISR are throttled by the brokers, so the lists
//! slow down the copy to new replicas and never the replication of in-sync ones.

use std::collections::BTreeMap;

use super::assignment::PartitionReplicas;

/// Topic config key listing the replicas data is read from during a reassignment.
pub const LEADER_REPLICAS: &str = "leader.replication.throttled.replicas";
/// Topic config key listing the replicas being added by a reassignment.
pub const FOLLOWER_REPLICAS: &str = "follower.replication.throttled.replicas";
/// Broker config (cluster default here) capping the throttled bytes a leader sends per second.
pub const LEADER_RATE: &str = "leader.replication.throttled.rate";
/// Broker config (cluster default here) capping the throttled bytes a follower fetches per second.
pub const FOLLOWER_RATE: &str = "follower.replication.throttled.rate";

/// The throttle keys the operator sets on topics while it reassigns and removes afterwards.
pub const TOPIC_KEYS: [&str; 2] = [LEADER_REPLICAS, FOLLOWER_REPLICAS];
/// The throttle rates the operator sets as cluster-wide broker defaults while it reassigns.
pub const BROKER_KEYS: [&str; 2] = [LEADER_RATE, FOLLOWER_RATE];

/// One topic's throttled-replica lists (`partition:broker,...`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicThrottle {
    pub leader: String,
    pub follower: String,
}

impl TopicThrottle {
    /// The topic config values to set.
    pub fn configs(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LEADER_REPLICAS.to_string(), self.leader.clone()),
            (FOLLOWER_REPLICAS.to_string(), self.follower.clone()),
        ])
    }
}

/// The throttle lists for moving `current` to `targets` (only partitions in `targets` move):
/// the current replicas are throttled as leaders (any of them may serve the copy), the added
/// replicas as followers. Topics whose moves add no replica (pure removals) need no throttle.
pub fn throttled_replicas(
    current: &[PartitionReplicas],
    targets: &[PartitionReplicas],
) -> BTreeMap<String, TopicThrottle> {
    let mut lists: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for target in targets {
        let Some(now) = current
            .iter()
            .find(|c| c.topic == target.topic && c.partition == target.partition)
        else {
            continue;
        };
        let added: Vec<i32> = target
            .replicas
            .iter()
            .copied()
            .filter(|b| !now.replicas.contains(b))
            .collect();
        if added.is_empty() {
            continue;
        }
        let (leader, follower) = lists.entry(target.topic.clone()).or_default();
        let p = target.partition;
        leader.extend(now.replicas.iter().map(|b| format!("{p}:{b}")));
        follower.extend(added.iter().map(|b| format!("{p}:{b}")));
    }
    lists
        .into_iter()
        .map(|(topic, (leader, follower))| {
            (
                topic,
                TopicThrottle {
                    leader: leader.join(","),
                    follower: follower.join(","),
                },
            )
        })
        .collect()
}

/// A partition still moving: its leader's log size and the sizes of the replicas being added
/// (missing when the broker has not created the replica yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyProgress {
    pub leader_bytes: Option<u64>,
    pub adding_bytes: Vec<Option<u64>>,
}

/// Bytes still to copy: for every replica being added, what its leader has that it lacks.
/// `None` when a leader's size is unknown (the figure would be a guess).
pub fn bytes_left(moving: &[CopyProgress]) -> Option<u64> {
    let mut left = 0u64;
    for p in moving {
        let leader = p.leader_bytes?;
        left += p
            .adding_bytes
            .iter()
            .map(|have| leader.saturating_sub(have.unwrap_or(0)))
            .sum::<u64>();
    }
    Some(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(topic: &str, partition: i32, replicas: &[i32]) -> PartitionReplicas {
        PartitionReplicas {
            topic: topic.into(),
            partition,
            replicas: replicas.to_vec(),
        }
    }

    #[test]
    fn sources_are_leader_throttled_and_added_replicas_follower_throttled() {
        let current = [p("a", 0, &[0, 1]), p("a", 1, &[1, 2]), p("b", 0, &[2])];
        let targets = [p("a", 0, &[0, 3]), p("a", 1, &[1, 2, 4]), p("b", 0, &[2])];
        let lists = throttled_replicas(&current, &targets);
        assert_eq!(
            lists["a"],
            TopicThrottle {
                leader: "0:0,0:1,1:1,1:2".into(),
                follower: "0:3,1:4".into(),
            }
        );
        assert!(!lists.contains_key("b"), "b does not move");
        assert_eq!(
            lists["a"].configs()[FOLLOWER_REPLICAS],
            "0:3,1:4",
            "the config value"
        );
    }

    #[test]
    fn removals_alone_need_no_throttle() {
        let current = [p("a", 0, &[0, 1, 2])];
        let targets = [p("a", 0, &[0, 1])];
        assert!(throttled_replicas(&current, &targets).is_empty());
        // A target for a partition the layout does not know is skipped, not guessed.
        assert!(throttled_replicas(&current, &[p("x", 0, &[1])]).is_empty());
    }

    #[test]
    fn bytes_left_counts_what_each_added_replica_lacks() {
        let moving = [
            CopyProgress {
                leader_bytes: Some(1000),
                adding_bytes: vec![Some(400), None],
            },
            CopyProgress {
                leader_bytes: Some(10),
                adding_bytes: vec![Some(50)],
            },
        ];
        // 600 + 1000 + 0 (a replica ahead of a compacted leader counts as done).
        assert_eq!(bytes_left(&moving), Some(1600));
        let unknown = [CopyProgress {
            leader_bytes: None,
            adding_bytes: vec![Some(1)],
        }];
        assert_eq!(bytes_left(&unknown), None);
        assert_eq!(bytes_left(&[]), Some(0));
    }
}
