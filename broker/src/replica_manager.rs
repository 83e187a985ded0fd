//! The replica manager: the partitions this broker hosts, and the question every data-path
//! handler asks first, "do I lead this partition, and if not, what do I answer?".
//!
//! Kafka splits the broker the same way (`ReplicaManager` next to `KafkaApis`): the hosted set
//! has one owner, changed only by `cluster::hosted` as metadata is applied, and read by the
//! Produce, Fetch and offset handlers, the ISR and reassignment duties, retention and shutdown.
//! It needs only the metadata image (for leadership) and the data directory, so it is built and
//! tested without a broker around it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::metadata::MetadataCache;
use crate::partition::Partition;
use crate::protocol::errors::ErrorCode;

/// Hosted partitions by topic, then partition index.
type Hosted = HashMap<String, BTreeMap<i32, Arc<Partition>>>;

/// See the module documentation.
pub struct ReplicaManager {
    node_id: i32,
    data_dir: PathBuf,
    image: Arc<MetadataCache>,
    partitions: RwLock<Hosted>,
}

impl ReplicaManager {
    pub fn new(node_id: i32, data_dir: PathBuf, image: Arc<MetadataCache>) -> ReplicaManager {
        ReplicaManager {
            node_id,
            data_dir,
            image,
            partitions: RwLock::new(HashMap::new()),
        }
    }

    /// The log directory every hosted partition lives under.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where the log of `topic`-`index` lives (Kafka's `<topic>-<partition>` directories).
    pub fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.data_dir.join(format!("{topic}-{index}"))
    }

    /// The hosted replica of `topic`-`index`, whatever its role.
    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .get(topic)
            .and_then(|m| m.get(&index).cloned())
    }

    /// The hosted replicas of `topic`, or `None` when none is hosted here.
    pub fn topic_partitions(&self, topic: &str) -> Option<Vec<Arc<Partition>>> {
        self.partitions
            .read()
            .get(topic)
            .map(|m| m.values().cloned().collect())
    }

    /// Every hosted replica (a snapshot: the set may change right after).
    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// How many replicas are hosted.
    pub fn count(&self) -> usize {
        self.partitions.read().values().map(BTreeMap::len).sum()
    }

    /// The topics with at least one hosted replica.
    pub fn hosted_topics(&self) -> Vec<String> {
        self.partitions.read().keys().cloned().collect()
    }

    /// Whether `topic`-`index` is hosted here.
    pub fn hosts(&self, topic: &str, index: i32) -> bool {
        self.partitions
            .read()
            .get(topic)
            .is_some_and(|m| m.contains_key(&index))
    }

    /// The hosted partition if this node leads it; otherwise the error to answer:
    /// NOT_LEADER_OR_FOLLOWER for a partition the metadata knows (led elsewhere, or not yet
    /// opened here), UNKNOWN_TOPIC_OR_PARTITION for one it does not. Produce, Fetch,
    /// ListOffsets, DeleteRecords and OffsetForLeaderEpoch go through it.
    pub fn led_partition(&self, topic: &str, index: i32) -> Result<Arc<Partition>, ErrorCode> {
        let image = self.image.snapshot();
        let meta = image
            .topics
            .get(topic)
            .and_then(|t| t.partitions.get(usize::try_from(index).ok()?));
        let Some(meta) = meta else {
            return Err(ErrorCode::UnknownTopicOrPartition);
        };
        match self.partition(topic, index) {
            Some(p) if meta.leader == self.node_id => Ok(p),
            _ => Err(ErrorCode::NotLeaderOrFollower),
        }
    }

    /// Adds newly opened replicas of `topic`.
    pub fn add(&self, topic: &str, opened: BTreeMap<i32, Arc<Partition>>) {
        if opened.is_empty() {
            return;
        }
        self.partitions
            .write()
            .entry(topic.to_string())
            .or_default()
            .extend(opened);
    }

    /// Takes every replica of `topic` out of the hosted set and returns them (their logs are
    /// the caller's to remove).
    pub fn remove_topic(&self, topic: &str) -> Vec<Arc<Partition>> {
        self.partitions
            .write()
            .remove(topic)
            .map(|m| m.into_values().collect())
            .unwrap_or_default()
    }

    /// Takes one replica out of the hosted set. Returns whether it was the topic's last.
    pub fn remove(&self, topic: &str, index: i32) -> bool {
        let mut parts = self.partitions.write();
        let Some(m) = parts.get_mut(topic) else {
            return false;
        };
        m.remove(&index);
        let last = m.is_empty();
        if last {
            parts.remove(topic);
        }
        last
    }

    /// Deletes expired segments in every hosted log (called periodically on a blocking thread).
    pub fn enforce_retention(&self, now_ms: i64) {
        for p in self.all_partitions() {
            let mut log = p.log.write();
            match log.enforce_retention(now_ms) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(topic = %p.topic, partition = p.index, segments = n, "retention deleted segments")
                }
                Err(e) => {
                    tracing::error!(topic = %p.topic, partition = p.index, error = %e, "retention failed")
                }
            }
        }
    }

    /// One compaction pass over every hosted log with `cleanup.policy=compact` that is due
    /// (called periodically on a blocking thread). The reading and rewriting happens without
    /// the log's lock; only the swap takes it (`log::cleaner`).
    ///
    /// Reads and writes share one byte-rate limit, `max_bytes_per_second` (Kafka's
    /// `log.cleaner.io.max.bytes.per.second`); a pass maps at most `max_map_bytes` of keys
    /// (`log.cleaner.dedupe.buffer.size`). Returns the pass's totals and how far
    /// compaction is behind once it is done.
    pub fn clean_compacted(
        &self,
        now_ms: i64,
        max_bytes_per_second: f64,
        max_map_bytes: u64,
    ) -> (
        crate::log::cleaner::CleanStats,
        crate::log::cleaner::CleanerLag,
    ) {
        let mut total = crate::log::cleaner::CleanStats::default();
        let mut throttle = crate::log::io_throttle::IoThrottle::new(max_bytes_per_second);
        for p in self.all_partitions() {
            let Some(mut plan) = p.log.read().plan_cleaning(p.high_watermark(), now_ms) else {
                continue;
            };
            let outcome = crate::log::cleaner::clean(&mut plan, max_map_bytes, &mut throttle)
                .and_then(|(cleaned, stats)| {
                    let replaced = p.log.write().install_cleaned(&plan, cleaned, now_ms)?;
                    Ok((replaced, stats))
                });
            match outcome {
                Ok((replaced, stats)) => {
                    if replaced > 0 {
                        tracing::info!(
                            topic = %p.topic,
                            partition = p.index,
                            segments = replaced,
                            records_removed = stats.records_removed,
                            bytes_before = stats.bytes_before,
                            bytes_after = stats.bytes_after,
                            "compacted"
                        );
                    }
                    total.segments_rewritten += replaced;
                    total.bytes_read += stats.bytes_read;
                    total.bytes_before += stats.bytes_before;
                    total.bytes_after += stats.bytes_after;
                    total.records_removed += stats.records_removed;
                }
                Err(e) => {
                    tracing::error!(topic = %p.topic, partition = p.index, error = %e, "compaction failed; the log is unchanged and the next pass retries")
                }
            }
        }
        if !throttle.slept.is_zero() {
            tracing::debug!(
                slept_ms = throttle.slept.as_millis() as u64,
                "compaction throttled"
            );
        }
        let mut lag = crate::log::cleaner::CleanerLag::default();
        for p in self.all_partitions() {
            if let Some((dirty, size)) = p.log.read().cleaner_lag() {
                lag.dirty_bytes += dirty;
                if size > 0 {
                    lag.max_dirty_ratio = lag.max_dirty_ratio.max(dirty as f64 / size as f64);
                }
            }
        }
        (total, lag)
    }

    /// Flushes every hosted log to disk (shutdown; blocking file I/O).
    pub fn flush_all(&self) {
        for p in self.all_partitions() {
            if let Err(e) = p.log.read().flush() {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "flush failed");
            }
        }
    }
}

/// A replica manager for node `me` over an image holding topic `t` whose partition `i` is led
/// by `leaders[i]`, with the logs of the first `opened` partitions open under `dir`. For the
/// unit tests of this module and of the handlers that use it.
#[cfg(test)]
pub(crate) fn with_topic(
    dir: &std::path::Path,
    me: i32,
    leaders: &[i32],
    opened: i32,
) -> ReplicaManager {
    use crate::log::PartitionLog;
    use crate::metadata::{MetadataImage, PartitionMeta, TopicMeta};
    use crate::topic_config::TopicSettings;

    let meta = |leader: i32| PartitionMeta {
        replicas: vec![leader],
        isr: vec![leader],
        leader,
        leader_epoch: 0,
        partition_epoch: 0,
        adding: vec![],
        removing: vec![],
    };
    let mut image = MetadataImage::default();
    image.topics.insert(
        "t".into(),
        TopicMeta {
            name: "t".into(),
            id: uuid::Uuid::new_v4(),
            partitions: leaders.iter().map(|l| meta(*l)).collect(),
            configs: BTreeMap::new(),
        },
    );
    let replicas = ReplicaManager::new(me, dir.to_path_buf(), Arc::new(MetadataCache::new(image)));
    let settings = TopicSettings::resolve(&BTreeMap::new(), &BTreeMap::new());
    let logs = (0..opened)
        .map(|i| {
            let log = PartitionLog::open(&replicas.partition_dir("t", i), settings.clone(), 0)
                .expect("open a log");
            (i, Arc::new(Partition::replicated(Arc::from("t"), i, log)))
        })
        .collect();
    replicas.add("t", logs);
    replicas
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: i32 = 1;

    /// Topic `t` with partition 0 led here, 1 led by broker 2 and 2 led here but not opened.
    fn manager(dir: &std::path::Path) -> ReplicaManager {
        with_topic(dir, ME, &[ME, 2, ME], 2)
    }

    #[test]
    fn leadership_answers_come_from_the_image_and_the_hosted_set() {
        let dir = tempfile::tempdir().unwrap();
        let replicas = manager(dir.path());
        assert_eq!(replicas.led_partition("t", 0).unwrap().index, 0);
        assert_eq!(
            replicas.led_partition("t", 1).err(),
            Some(ErrorCode::NotLeaderOrFollower),
            "led by another broker"
        );
        assert_eq!(
            replicas.led_partition("t", 2).err(),
            Some(ErrorCode::NotLeaderOrFollower),
            "led here by the image, but the log is not open yet"
        );
        for (topic, index) in [("t", 3), ("t", -1), ("other", 0)] {
            assert_eq!(
                replicas.led_partition(topic, index).err(),
                Some(ErrorCode::UnknownTopicOrPartition),
                "{topic}-{index}"
            );
        }
    }

    #[test]
    fn the_hosted_set_grows_and_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let replicas = manager(dir.path());
        assert_eq!(replicas.count(), 2);
        assert!(replicas.hosts("t", 1) && !replicas.hosts("t", 2));
        assert_eq!(replicas.hosted_topics(), vec!["t".to_string()]);
        assert!(!replicas.remove("t", 0), "partition 1 is still hosted");
        assert!(replicas.partition("t", 0).is_none());
        assert!(replicas.remove("t", 1), "the topic's last replica");
        assert!(replicas.topic_partitions("t").is_none());
        assert_eq!(replicas.count(), 0);
        assert!(replicas.remove_topic("t").is_empty());
    }
}
