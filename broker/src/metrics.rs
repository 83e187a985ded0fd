//! Prometheus metrics with Kafka's JMX-exporter names, so existing dashboards and alerts fit.
//!
//! Counters move where the work happens; the gauges of state (partition counts, log sizes,
//! ISR health, consumer lag, the quorum's position) are computed when Prometheus scrapes
//! (`admin_http`), so they cost nothing between scrapes. Every family is listed, with its
//! labels, in `docs/metrics.md`; `operator/tests/metrics_documented.rs` keeps the two in step.
//!
//! Label cardinality: `topic` is bounded by the topics (a deleted topic's series are
//! dropped), `partition` by the partitions hosted here, `consumergroup` by the groups with
//! committed offsets on partitions this broker leads, `request`/`version`/`error` by the
//! API table and error codes. No label carries a client id, a principal or an address.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{
    Counter, Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// A Kafka `BrokerTopicMetrics` counter: one series per topic (the `topic` tag of the JMX
/// name), and this broker's total kept alongside for code that reads it.
pub struct TopicCounter {
    by_topic: IntCounterVec,
    total: AtomicU64,
}

impl TopicCounter {
    fn new(r: &Registry, name: &str, help: &str) -> TopicCounter {
        let by_topic = IntCounterVec::new(Opts::new(name, help), &["topic"]).expect("valid metric");
        r.register(Box::new(by_topic.clone()))
            .expect("unique metric");
        TopicCounter {
            by_topic,
            total: AtomicU64::new(0),
        }
    }

    pub fn inc_by(&self, topic: &str, n: u64) {
        self.by_topic.with_label_values(&[topic]).inc_by(n);
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    /// This broker's total over every topic.
    pub fn get(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Drops a deleted topic's series.
    pub fn forget(&self, topic: &str) {
        let _ = self.by_topic.remove_label_values(&[topic]);
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_errors: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub bytes_in: TopicCounter,
    pub bytes_out: TopicCounter,
    pub messages_in: TopicCounter,
    pub partitions: IntGauge,
    pub leader_count: IntGauge,
    pub log_size_bytes: IntGauge,
    /// The log directory's file system: its size and what is still free for the broker.
    pub log_dir_capacity: IntGauge,
    pub log_dir_available: IntGauge,
    /// Bytes of each hosted partition's log (Kafka's `kafka.log:type=Log,name=Size`).
    pub partition_log_size: IntGaugeVec,
    /// Committed offset and lag per group and partition, for the partitions led here (so
    /// each partition is reported by one broker: its leader).
    pub group_offset: IntGaugeVec,
    pub group_lag: IntGaugeVec,
    /// Segment rolls: the synchronous flushes of the write path.
    pub log_roll_seconds: Histogram,
    /// Compaction (`log::cleaner`): bytes its passes read, bytes they freed, records removed.
    pub cleaner_bytes_read: IntCounter,
    pub cleaner_bytes_freed: IntCounter,
    pub cleaner_records_removed: IntCounter,
    /// Compaction's lag after each pass: bytes not cleaned yet, and the largest dirty share.
    pub cleaner_dirty_bytes: IntGauge,
    pub cleaner_max_dirty_ratio: Gauge,
    /// The async workers (network and request handling) and the disk threads: how many, and
    /// their busy time (idle ratio = 1 - rate(busy) / threads).
    pub runtime_workers: IntGauge,
    pub runtime_busy_seconds: Counter,
    pub runtime_alive_tasks: IntGauge,
    pub runtime_queue_depth: IntGauge,
    pub disk_threads: IntGauge,
    pub disk_busy_seconds: Counter,
    pub disk_queued_jobs: IntGauge,
    /// The metadata quorum as this node sees it.
    pub raft_leader: IntGauge,
    pub raft_epoch: IntGauge,
    pub raft_state: IntGaugeVec,
    pub raft_log_end: IntGauge,
    pub raft_applied: IntGauge,
    /// Open client connections by listener.
    pub connections: IntGaugeVec,
    pub protocol_errors: IntCounter,
    pub under_replicated: IntGauge,
    pub offline_partitions: IntGauge,
    pub active_controller: IntGauge,
    pub replication_bytes_in: IntCounter,
    pub replication_bytes_out: IntCounter,
    pub isr_shrinks: IntCounter,
    pub isr_expands: IntCounter,
    pub under_min_isr: IntGauge,
    pub replica_max_lag: IntGauge,
    pub replica_fetchers: IntGauge,
    pub fenced_brokers: IntGauge,
    pub reassigning_partitions: IntGauge,
    pub reassignment_offsets_remaining: IntGauge,
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn float_gauge(r: &Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn seconds_counter(r: &Registry, name: &str, help: &str) -> Counter {
    let c = Counter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

/// Moves `counter` up to `total` (a running total read from elsewhere, which only grows).
pub fn advance_to(counter: &Counter, total: f64) {
    let behind = total - counter.get();
    if behind > 0.0 {
        counter.inc_by(behind);
    }
}

fn gauges(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        // RSS, CPU seconds, open and maximum file descriptors, start time: read from /proc
        // at scrape time.
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("unique metric");
        let requests = IntCounterVec::new(
            Opts::new(
                "kafka_network_requestmetrics_requests_total",
                "Requests handled, by API, version and listener",
            ),
            &["request", "version", "listener"],
        )
        .expect("valid metric");
        r.register(Box::new(requests.clone()))
            .expect("unique metric");
        let request_errors = IntCounterVec::new(
            Opts::new(
                "kafka_network_requestmetrics_errors_total",
                "Error codes returned, by API and error",
            ),
            &["request", "error"],
        )
        .expect("valid metric");
        r.register(Box::new(request_errors.clone()))
            .expect("unique metric");
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "kafka_network_requestmetrics_totaltime_seconds",
                "Request handling time, by API and listener",
            )
            .buckets(vec![
                0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                5.0, 10.0, 30.0,
            ]),
            &["request", "listener"],
        )
        .expect("valid metric");
        r.register(Box::new(request_seconds.clone()))
            .expect("unique metric");
        Metrics {
            bytes_in: TopicCounter::new(
                &r,
                "kafka_server_brokertopicmetrics_bytesin_total",
                "Bytes appended to logs by producers, by topic",
            ),
            bytes_out: TopicCounter::new(
                &r,
                "kafka_server_brokertopicmetrics_bytesout_total",
                "Bytes sent to consumers, by topic",
            ),
            messages_in: TopicCounter::new(
                &r,
                "kafka_server_brokertopicmetrics_messagesin_total",
                "Records appended, by topic",
            ),
            log_dir_capacity: gauge(
                &r,
                "fjord_log_dir_capacity_bytes",
                "Size of the file system holding the log directory",
            ),
            log_dir_available: gauge(
                &r,
                "fjord_log_dir_available_bytes",
                "Bytes still free for the broker on the file system holding the log directory",
            ),
            partition_log_size: gauges(
                &r,
                "kafka_log_log_size",
                "Bytes on disk of one partition's log",
                &["topic", "partition"],
            ),
            group_offset: gauges(
                &r,
                "kafka_consumergroup_current_offset",
                "A group's committed offset, for partitions this broker leads",
                &["consumergroup", "topic", "partition"],
            ),
            group_lag: gauges(
                &r,
                "kafka_consumergroup_lag",
                "High watermark minus the group's committed offset, for partitions this broker leads",
                &["consumergroup", "topic", "partition"],
            ),
            log_roll_seconds: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "fjord_log_roll_seconds",
                        "Time a segment roll took (indexes and producer snapshot synced, next segment created)",
                    )
                    .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]),
                )
                .expect("valid metric");
                r.register(Box::new(h.clone())).expect("unique metric");
                h
            },
            cleaner_bytes_read: counter(
                &r,
                "fjord_log_cleaner_bytes_read_total",
                "Bytes of sealed segments read by compaction passes",
            ),
            cleaner_bytes_freed: counter(
                &r,
                "fjord_log_cleaner_bytes_freed_total",
                "Bytes compaction removed from segments it rewrote",
            ),
            cleaner_records_removed: counter(
                &r,
                "fjord_log_cleaner_records_removed_total",
                "Superseded records and expired tombstones compaction removed",
            ),
            cleaner_dirty_bytes: gauge(
                &r,
                "fjord_log_cleaner_dirty_bytes",
                "Bytes of compacted topics' logs not cleaned yet (after the last pass)",
            ),
            cleaner_max_dirty_ratio: float_gauge(
                &r,
                "fjord_log_cleaner_max_dirty_ratio",
                "The largest share of a compacted log not cleaned yet (after the last pass)",
            ),
            runtime_workers: gauge(
                &r,
                "fjord_runtime_workers",
                "Async worker threads (network and request handling)",
            ),
            runtime_busy_seconds: seconds_counter(
                &r,
                "fjord_runtime_worker_busy_seconds_total",
                "Time the async workers spent running tasks, over all workers",
            ),
            runtime_alive_tasks: gauge(&r, "fjord_runtime_alive_tasks", "Tasks alive on the async runtime"),
            runtime_queue_depth: gauge(
                &r,
                "fjord_runtime_global_queue_depth",
                "Tasks waiting in the async runtime's global queue",
            ),
            disk_threads: gauge(&r, "fjord_disk_pool_threads", "Disk threads (num.io.threads)"),
            disk_busy_seconds: seconds_counter(
                &r,
                "fjord_disk_pool_busy_seconds_total",
                "Time the disk threads spent running jobs, over all threads",
            ),
            disk_queued_jobs: gauge(
                &r,
                "fjord_disk_pool_queued_jobs",
                "Disk jobs (appends, reads, truncations) waiting for a thread",
            ),
            raft_leader: gauge(
                &r,
                "kafka_server_raftmetrics_current_leader",
                "Node id of the metadata quorum leader (the active controller), -1 when unknown",
            ),
            raft_epoch: gauge(
                &r,
                "kafka_server_raftmetrics_current_epoch",
                "The metadata quorum's current epoch (Raft term)",
            ),
            raft_state: gauges(
                &r,
                "kafka_server_raftmetrics_current_state",
                "1 for this node's role in the metadata quorum",
                &["state"],
            ),
            raft_log_end: gauge(
                &r,
                "kafka_server_raftmetrics_log_end_offset",
                "Index of the last entry in this node's metadata log",
            ),
            raft_applied: gauge(
                &r,
                "kafka_server_raftmetrics_high_watermark",
                "Index of the last metadata log entry this node applied (committed)",
            ),
            partitions: gauge(
                &r,
                "kafka_server_replicamanager_partitioncount",
                "Partitions hosted by this broker",
            ),
            leader_count: gauge(
                &r,
                "kafka_server_replicamanager_leadercount",
                "Partitions this broker leads",
            ),
            log_size_bytes: gauge(
                &r,
                "kafka_log_log_size_bytes_total",
                "Bytes on disk in all partition logs",
            ),
            connections: gauges(
                &r,
                "kafka_server_socket_server_connection_count",
                "Open client connections, by listener",
                &["listener"],
            ),
            protocol_errors: counter(
                &r,
                "fjord_protocol_errors_total",
                "Connections closed for malformed or unsupported requests",
            ),
            under_replicated: gauge(
                &r,
                "kafka_server_replicamanager_underreplicatedpartitions",
                "Under-replicated partitions",
            ),
            offline_partitions: gauge(
                &r,
                "kafka_controller_kafkacontroller_offlinepartitionscount",
                "Partitions without a leader",
            ),
            active_controller: gauge(
                &r,
                "kafka_controller_kafkacontroller_activecontrollercount",
                "1 on the active controller",
            ),
            replication_bytes_in: counter(
                &r,
                "kafka_server_brokertopicmetrics_replicationbytesin_total",
                "Bytes fetched from leaders by this broker's followers",
            ),
            replication_bytes_out: counter(
                &r,
                "kafka_server_brokertopicmetrics_replicationbytesout_total",
                "Bytes sent to followers",
            ),
            isr_shrinks: counter(
                &r,
                "kafka_server_replicamanager_isrshrinks_total",
                "ISR shrinks this broker's leaderships committed",
            ),
            isr_expands: counter(
                &r,
                "kafka_server_replicamanager_isrexpands_total",
                "ISR expansions this broker's leaderships committed",
            ),
            under_min_isr: gauge(
                &r,
                "kafka_server_replicamanager_underminisrpartitioncount",
                "Led partitions whose ISR is smaller than min.insync.replicas",
            ),
            replica_max_lag: gauge(
                &r,
                "kafka_server_replicafetchermanager_maxlag",
                "Largest follower lag in messages among the partitions this broker leads",
            ),
            replica_fetchers: gauge(
                &r,
                "fjord_replica_fetchers",
                "Replica fetchers running: one per broker this node follows partitions at",
            ),
            fenced_brokers: gauge(
                &r,
                "kafka_controller_kafkacontroller_fencedbrokercount",
                "Fenced brokers (as this node's metadata says)",
            ),
            reassigning_partitions: gauge(
                &r,
                "kafka_server_replicamanager_reassigningpartitions",
                "Partitions this broker leads that are being reassigned",
            ),
            reassignment_offsets_remaining: gauge(
                &r,
                "fjord_reassignment_offsets_remaining",
                "Messages the replicas being added still have to copy, over the partitions this broker leads",
            ),
            requests,
            request_errors,
            request_seconds,
            registry: r,
        }
    }

    /// Drops a deleted topic's counters.
    pub fn forget_topic(&self, topic: &str) {
        for c in [&self.bytes_in, &self.bytes_out, &self.messages_in] {
            c.forget(topic);
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
