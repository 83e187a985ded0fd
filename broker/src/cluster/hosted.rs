//! Which partition logs this node hosts: after every applied metadata batch the
//! hosted set is reconciled with the image — logs are opened for partitions whose replica list
//! contains this node and removed (with their directories) for deleted topics and for
//! partitions reassigned away from this node (once it is no longer in the replica list: its
//! role is dropped first, which stops its fetcher).
//!
//! Each partition directory holds a `partition.metadata` file with the topic id (as Kafka
//! does): a directory left by an earlier topic of the same name is wiped instead of reused,
//! while a restart (which replays the log) keeps its data.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use uuid::Uuid;

use crate::log::PartitionLog;
use crate::metadata::MetadataRecord;
use crate::partition::{Partition, Transition};
use crate::state::{now_ms, Broker};

const MARKER: &str = "partition.metadata";

/// The applier's hook: reconcile hosted logs and replica roles, and refresh settings after
/// config changes.
pub fn on_applied(broker: &Arc<Broker>, records: &[MetadataRecord]) {
    let mut partitions_changed = false;
    let mut configs_changed = false;
    for r in records {
        match r {
            MetadataRecord::CreateTopic { .. }
            | MetadataRecord::DeleteTopic { .. }
            | MetadataRecord::AddPartitions { .. }
            | MetadataRecord::PartitionChange { .. }
            | MetadataRecord::AlterPartition { .. }
            | MetadataRecord::ReassignPartition { .. }
            | MetadataRecord::PartitionReassignmentState { .. }
            | MetadataRecord::FenceBroker { .. }
            | MetadataRecord::UnfenceBroker { .. }
            | MetadataRecord::RegisterBroker { .. } => partitions_changed = true,
            MetadataRecord::AlterTopicConfig { .. } | MetadataRecord::AlterBrokerConfig { .. } => {
                configs_changed = true;
                partitions_changed = true;
            }
            _ => {}
        }
    }
    if partitions_changed {
        sync(broker);
    }
    if configs_changed {
        broker.topics().refresh_settings(None);
    }
}

fn topic_id_in(dir: &Path) -> Option<Uuid> {
    let text = std::fs::read_to_string(dir.join(MARKER)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("topic_id:"))
        .and_then(|id| Uuid::parse_str(id.trim()).ok())
}

/// Marks `dir` as a partition directory of topic `id` (kept across restarts by `open_partition`).
pub(crate) fn write_marker(dir: &Path, id: Uuid) -> std::io::Result<()> {
    std::fs::write(dir.join(MARKER), format!("version: 0\ntopic_id: {id}\n"))
}

fn open_partition(
    broker: &Broker,
    topic: &Arc<str>,
    id: Uuid,
    index: i32,
    settings: &crate::topic_config::TopicSettings,
) -> std::io::Result<Arc<Partition>> {
    let dir = broker.replicas.partition_dir(topic, index);
    if dir.exists() && topic_id_in(&dir) != Some(id) {
        tracing::info!(dir = %dir.display(), "removing a directory left by an earlier topic");
        std::fs::remove_dir_all(&dir)?;
    }
    let mut log = PartitionLog::open(&dir, settings.clone(), now_ms())?;
    let rolls = broker.metrics.log_roll_seconds.clone();
    log.observe_rolls(std::sync::Arc::new(move |took| {
        rolls.observe(took.as_secs_f64())
    }));
    if topic_id_in(&dir) != Some(id) {
        write_marker(&dir, id)?;
    }
    Ok(Arc::new(Partition::replicated(topic.clone(), index, log)))
}

fn remove_topic(broker: &Broker, name: &str) {
    broker.metrics.forget_topic(name);
    for p in broker.replicas.remove_topic(name) {
        let dir = p.log.read().dir().to_path_buf();
        p.advance_high_watermark(i64::MAX);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove deleted topic's directory");
        }
    }
}

/// Reconciles the hosted partition logs with the metadata image, then every hosted
/// partition's replica role (starting follower fetchers where needed).
pub fn sync(broker: &Arc<Broker>) {
    open_and_remove(broker);
    apply_roles(broker);
    remove_unassigned(broker);
}

/// Removes the logs (and directories) of hosted partitions of existing topics whose replica
/// list no longer contains this node: a reassignment moved them away. `apply_roles` ran first,
/// so the partition has no role any more and its fetcher stops.
fn remove_unassigned(broker: &Broker) {
    let cluster = &broker.cluster;
    let me = broker.config.node_id;
    let mut hosted = cluster.hosted_ids.lock();
    let gone: Vec<Arc<Partition>> = {
        let img = broker.metadata.snapshot();
        broker
            .replicas
            .all_partitions()
            .into_iter()
            .filter(|p| {
                let Some(t) = img.topics.get(p.topic.as_ref()) else {
                    return false;
                };
                hosted.get(&t.name) == Some(&t.id)
                    && usize::try_from(p.index)
                        .ok()
                        .and_then(|i| t.partitions.get(i))
                        .is_some_and(|m| !m.replicas.contains(&me))
            })
            .collect()
    };
    for p in gone {
        if broker.replicas.remove(&p.topic, p.index) {
            hosted.remove(p.topic.as_ref());
        }
        // Under the log's write lock: an append in flight finishes first.
        let log = p.log.write();
        let dir = log.dir().to_path_buf();
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                tracing::info!(topic = %p.topic, partition = p.index, dir = %dir.display(), "removed the log of a partition reassigned away from this broker")
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove a reassigned partition's directory")
            }
        }
        drop(log);
        p.notify_appended();
    }
    drop(hosted);
    broker
        .metrics
        .partitions
        .set(broker.replicas.count() as i64);
}

/// At start-up: removes partition directories of existing topics that this node does not
/// replicate (left by a reassignment completed while it was down, or interrupted removal).
/// Only directories whose `partition.metadata` names the topic's current id are touched.
pub fn remove_strays(broker: &Broker) {
    let me = broker.config.node_id;
    let Ok(entries) = std::fs::read_dir(broker.config.data_dir()) else {
        return;
    };
    let strays: Vec<std::path::PathBuf> = {
        let img = broker.metadata.snapshot();
        entries
            .flatten()
            .map(|e| e.path())
            .filter(|dir| {
                let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
                    return false;
                };
                let Some((topic, index)) = name.rsplit_once('-') else {
                    return false;
                };
                let (Some(t), Ok(index)) = (img.topics.get(topic), index.parse::<usize>()) else {
                    return false;
                };
                topic_id_in(dir) == Some(t.id)
                    && t.partitions
                        .get(index)
                        .is_some_and(|m| !m.replicas.contains(&me))
            })
            .collect()
    };
    let hosted: Vec<std::path::PathBuf> = broker
        .replicas
        .all_partitions()
        .iter()
        .map(|p| p.log.read().dir().to_path_buf())
        .collect();
    for dir in strays.into_iter().filter(|d| !hosted.contains(d)) {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "removed a stray partition directory (not a replica here)")
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove a stray partition directory")
            }
        }
    }
}

/// Gives each hosted partition its role from the image.
fn apply_roles(broker: &Arc<Broker>) {
    let me = broker.config.node_id;
    let now = now_ms();
    let img = broker.metadata.snapshot().clone_partitions();
    for p in broker.replicas.all_partitions() {
        let Some(meta) = img
            .get(p.topic.as_ref())
            .and_then(|parts| parts.get(usize::try_from(p.index).ok()?))
        else {
            continue;
        };
        match p.apply_metadata(meta, me, now) {
            Transition::StartFollowing {
                leader,
                leader_epoch,
            } => {
                tracing::debug!(topic = %p.topic, partition = p.index, leader, leader_epoch, "following");
                broker.fetchers.follow(p.clone(), leader, leader_epoch);
            }
            Transition::BecameLeader => {
                tracing::debug!(topic = %p.topic, partition = p.index, epoch = meta.leader_epoch, "leading");
            }
            Transition::Stopped | Transition::Unchanged => {}
        }
    }
}

/// Opens logs for newly hosted partitions and removes those of deleted topics.
fn open_and_remove(broker: &Broker) {
    let cluster = &broker.cluster;
    let mut hosted = cluster.hosted_ids.lock();
    let me = broker.config.node_id;
    // (name, id, configs, [(index, leader epoch)]) of every topic with a replica here.
    let wanted: Vec<_> = broker
        .metadata
        .snapshot()
        .topics
        .values()
        .map(|t| {
            let mine: Vec<(i32, i32)> = t
                .partitions
                .iter()
                .enumerate()
                .filter(|(_, p)| p.replicas.contains(&me))
                .map(|(i, p)| (i as i32, p.leader_epoch))
                .collect();
            (t.name.clone(), t.id, t.configs.clone(), mine)
        })
        .collect();
    let current: BTreeMap<&str, Uuid> = wanted
        .iter()
        .map(|(name, id, _, _)| (name.as_str(), *id))
        .collect();
    let stale: Vec<String> = broker
        .replicas
        .hosted_topics()
        .into_iter()
        .filter(|name| current.get(name.as_str()) != hosted.get(name))
        .collect();
    for name in stale {
        hosted.remove(&name);
        remove_topic(broker, &name);
        tracing::info!(topic = %name, "removed a deleted topic's logs");
    }
    for (name, id, configs, mine) in wanted {
        if mine.is_empty() {
            continue;
        }
        let missing: Vec<(i32, i32)> = mine
            .into_iter()
            .filter(|(i, _)| !broker.replicas.hosts(&name, *i))
            .collect();
        if missing.is_empty() {
            continue;
        }
        let settings = broker.topics().settings_for(&configs);
        let topic: Arc<str> = Arc::from(name.as_str());
        let mut opened = BTreeMap::new();
        for (index, _) in missing {
            match open_partition(broker, &topic, id, index, &settings) {
                Ok(p) => {
                    opened.insert(index, p);
                }
                Err(e) => {
                    tracing::error!(topic = %name, partition = index, error = %e, "cannot open partition log")
                }
            }
        }
        hosted.insert(name.clone(), id);
        broker.replicas.add(&name, opened);
    }
    broker
        .metrics
        .partitions
        .set(broker.replicas.count() as i64);
}
