//! Automatic preferred-leader rebalancing (`auto.leader.rebalance.enable`): after a broker
//! restarts, the partitions it prefers to lead are led by others. Every
//! `leader.imbalance.check.interval.seconds` the active controller (the quorum leader) looks at
//! each broker's imbalance — the share of the partitions it is the preferred (first) replica of
//! that it does not lead — and, for a broker above `leader.imbalance.per.broker.percentage`,
//! moves those leaderships back wherever the preferred replica is live and in the ISR.
//!
//! The decision ([`plan`]) is a pure function of the metadata image. Each move is a
//! conditional `AlterPartition` (see `metadata::leadership::preferred_election`), so a plan
//! computed from an image that changed meanwhile changes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use super::ControlServices;
use crate::metadata::leadership::{is_live, preferred_election};
use crate::metadata::{MetadataImage, MetadataRecord};

/// (partitions `broker` is the preferred replica of, of those the ones it does not lead).
pub fn imbalance(image: &MetadataImage) -> BTreeMap<i32, (usize, usize)> {
    let mut out: BTreeMap<i32, (usize, usize)> = BTreeMap::new();
    for p in image.topics.values().flat_map(|t| t.partitions.iter()) {
        let Some(&preferred) = p.replicas.first() else {
            continue;
        };
        let e = out.entry(preferred).or_default();
        e.0 += 1;
        if p.leader != preferred {
            e.1 += 1;
        }
    }
    out
}

/// The preferred-leader elections to write now: for every broker whose imbalance ratio exceeds
/// `percentage` %, each partition it prefers but does not lead, if it is live and in the ISR.
/// In topic, then partition order.
pub fn plan(image: &MetadataImage, percentage: u32) -> Vec<MetadataRecord> {
    let over: Vec<i32> = imbalance(image)
        .into_iter()
        .filter(|(_, (total, not_led))| *not_led * 100 > percentage as usize * *total)
        .map(|(b, _)| b)
        .collect();
    if over.is_empty() {
        return Vec::new();
    }
    let mut records = Vec::new();
    for (name, t) in &image.topics {
        for (i, p) in t.partitions.iter().enumerate() {
            if !p.replicas.first().is_some_and(|b| over.contains(b)) {
                continue;
            }
            let election = preferred_election(p, |id| is_live(image, id));
            if let Some(r) = election.record(name, i as i32) {
                records.push(r);
            }
        }
    }
    records
}

/// The rebalance duty: on the quorum leader, every check interval, write [`plan`].
pub async fn run(control: ControlServices) {
    let config = &control.config.cluster;
    if !config.auto_leader_rebalance_enable {
        return;
    }
    let every = Duration::from_secs(config.leader_imbalance_check_interval_seconds.max(1));
    let percentage = config.leader_imbalance_per_broker_percentage;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate: wait a full interval first
    loop {
        tick.tick().await;
        if control.is_stopping() {
            return;
        }
        if !control.is_controller() {
            continue;
        }
        let records = plan(&control.image.snapshot(), percentage);
        if records.is_empty() {
            continue;
        }
        let moves: Vec<String> = records
            .iter()
            .filter_map(|r| match r {
                MetadataRecord::AlterPartition {
                    topic,
                    partition,
                    leader: Some(l),
                    ..
                } => Some(format!("{topic}-{partition}->{l}")),
                _ => None,
            })
            .collect();
        tracing::info!(?moves, "leader imbalance: electing preferred leaders");
        if let Err(e) = control.cluster.write(&records).await {
            tracing::info!(error = %e, "preferred leader elections not committed; will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::*;

    fn register(img: &mut MetadataImage, id: i32) {
        img.apply(&MetadataRecord::RegisterBroker {
            node_id: id,
            rack: None,
            endpoints: vec![],
            incarnation: Uuid::new_v4(),
        });
    }

    /// Brokers 0..3 and topic "t" with 3 partitions preferring 0, 1 and 2.
    fn image() -> MetadataImage {
        let mut img = MetadataImage::default();
        for id in 0..3 {
            register(&mut img, id);
        }
        img.apply(&MetadataRecord::CreateTopic {
            name: "t".into(),
            id: Uuid::new_v4(),
            replicas: vec![vec![0, 1, 2], vec![1, 2, 0], vec![2, 0, 1]],
            configs: BTreeMap::new(),
        });
        img
    }

    fn rejoin_isr(img: &mut MetadataImage, topic: &str, partition: usize, node: i32) {
        let p = &img.topics[topic].partitions[partition];
        let mut isr = p.isr.clone();
        isr.push(node);
        let record = MetadataRecord::AlterPartition {
            topic: topic.into(),
            partition: partition as i32,
            partition_epoch: p.partition_epoch,
            isr,
            leader: None,
        };
        img.apply(&record);
    }

    fn leaders(img: &MetadataImage, topic: &str) -> Vec<i32> {
        img.topics[topic]
            .partitions
            .iter()
            .map(|p| p.leader)
            .collect()
    }

    #[test]
    fn a_balanced_cluster_needs_nothing() {
        let img = image();
        assert!(plan(&img, 10).is_empty());
        assert_eq!(imbalance(&img)[&0], (1, 0));
    }

    #[test]
    fn leadership_returns_to_a_restarted_broker_once_it_is_in_sync() {
        let mut img = image();
        register(&mut img, 0); // a restart: 0 leaves the ISRs and its leadership
        assert_eq!(leaders(&img, "t"), vec![1, 1, 2]);
        assert_eq!(imbalance(&img)[&0], (1, 1));
        assert!(plan(&img, 10).is_empty(), "0 is not in sync yet");
        rejoin_isr(&mut img, "t", 0, 0);
        let records = plan(&img, 10);
        assert_eq!(records.len(), 1);
        assert!(matches!(
            &records[0],
            MetadataRecord::AlterPartition { topic, partition: 0, leader: Some(0), .. } if topic == "t"
        ));
        for r in &records {
            img.apply(r);
        }
        assert_eq!(leaders(&img, "t"), vec![0, 1, 2]);
        assert!(plan(&img, 10).is_empty());
    }

    #[test]
    fn a_fenced_preferred_replica_is_left_alone() {
        let mut img = image();
        img.apply(&MetadataRecord::FenceBroker { node_id: 0 });
        assert_eq!(leaders(&img, "t")[0], 1);
        assert!(plan(&img, 10).is_empty());
    }

    #[test]
    fn only_brokers_above_the_percentage_are_rebalanced() {
        let mut img = image();
        img.apply(&MetadataRecord::CreateTopic {
            name: "u".into(),
            id: Uuid::new_v4(),
            replicas: vec![vec![0, 1, 2]; 9],
            configs: BTreeMap::new(),
        });
        // 0 prefers 10 partitions; move the leadership of one of them away (1 of 10 = 10 %).
        let p = &img.topics["u"].partitions[3];
        img.apply(&MetadataRecord::AlterPartition {
            topic: "u".into(),
            partition: 3,
            partition_epoch: p.partition_epoch,
            isr: p.isr.clone(),
            leader: Some(1),
        });
        assert_eq!(imbalance(&img)[&0], (10, 1));
        assert!(plan(&img, 10).is_empty(), "10 % is not above 10 %");
        let records = plan(&img, 5);
        assert_eq!(records.len(), 1);
        for r in &records {
            img.apply(r);
        }
        assert_eq!(leaders(&img, "u")[3], 0);
        assert!(plan(&img, 0).is_empty());
    }
}
