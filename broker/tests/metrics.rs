//! What a user's Prometheus sees on a running cluster (issue 16): three broker processes, a
//! topic written by a real producer and read by a real consumer group, then `/metrics` of every
//! broker scraped. Checked: per-topic counters, requests and connections by listener, consumer
//! lag reported once per partition (by its leader) with the right value, per-partition log
//! sizes, segment rolls timed, worker and disk thread load, the log volume's size and free
//! space, the metadata quorum's state agreed by all
//! brokers with exactly one leader, process metrics, and a deleted topic's series gone.

#[path = "common/procs.rs"]
mod procs;

use std::collections::BTreeMap;
use std::time::Duration;

use procs::{wait_for, ProcCluster};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "metrics-orders";
const GROUP: &str = "metrics-billing";
const BROKERS: usize = 3;

/// The sum of family `name`'s series over every broker whose labels include `labels`.
fn total(cluster: &ProcCluster, name: &str, labels: &[(&str, &str)]) -> f64 {
    (0..BROKERS)
        .flat_map(|i| cluster.series(i, name))
        .filter(|(l, _)| {
            labels
                .iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

/// Every broker's series of `name` naming `topic`.
fn of_topic(cluster: &ProcCluster, name: &str, topic: &str) -> Vec<BTreeMap<String, String>> {
    (0..BROKERS)
        .flat_map(|i| cluster.series(i, name))
        .map(|(l, _)| l)
        .filter(|l| l.get("topic").map(String::as_str) == Some(topic))
        .collect()
}

#[test]
fn a_scrape_shows_topics_lag_quorum_and_process() {
    let dir = procs::test_dir();
    let cluster = ProcCluster::start(dir.path(), BROKERS, &[]);
    let bootstrap = cluster.bootstrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let created = rt
        .block_on(admin.create_topics(
            [&NewTopic::new(TOPIC, 2, TopicReplication::Fixed(3)).set("segment.bytes", "1024")],
            &AdminOptions::new(),
        ))
        .unwrap();
    assert!(created[0].is_ok(), "{created:?}");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .create()
        .unwrap();
    // 10 records to partition 0, 4 to partition 1.
    for (partition, count) in [(0, 10), (1, 4)] {
        for i in 0..count {
            let payload = format!("order-{partition}-{i}-{}", "x".repeat(150));
            rt.block_on(
                producer.send(
                    FutureRecord::<(), _>::to(TOPIC)
                        .partition(partition)
                        .payload(&payload),
                    Duration::from_secs(30),
                ),
            )
            .unwrap();
        }
    }
    // The group committed 4 on partition 0 and everything on partition 1.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", GROUP)
        .create()
        .unwrap();
    let mut commit = TopicPartitionList::new();
    commit
        .add_partition_offset(TOPIC, 0, Offset::Offset(4))
        .unwrap();
    commit
        .add_partition_offset(TOPIC, 1, Offset::Offset(4))
        .unwrap();
    consumer.commit(&commit, CommitMode::Sync).unwrap();

    let topic = [("topic", TOPIC)];
    wait_for("every broker's scrape counts the records", 30, || {
        total(
            &cluster,
            "kafka_server_brokertopicmetrics_messagesin_total",
            &topic,
        ) == 14.0
    });
    assert!(
        total(
            &cluster,
            "kafka_server_brokertopicmetrics_bytesin_total",
            &topic
        ) > 14.0
    );
    // Requests are counted by API and listener; connections by listener.
    let produce = [("request", "Produce"), ("listener", "PLAINTEXT")];
    assert!(
        total(
            &cluster,
            "kafka_network_requestmetrics_requests_total",
            &produce
        ) >= 14.0
    );
    let listener = [("listener", "PLAINTEXT")];
    assert!(
        total(
            &cluster,
            "kafka_server_socket_server_connection_count",
            &listener
        ) >= 1.0
    );

    // Lag: one series per partition over the whole cluster (its leader's), 6 and 0.
    let lag = |p: &str| {
        let labels = [("consumergroup", GROUP), ("topic", TOPIC), ("partition", p)];
        let series = (0..BROKERS)
            .flat_map(|i| cluster.series(i, "kafka_consumergroup_lag"))
            .filter(|(l, _)| {
                labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .count();
        (series, total(&cluster, "kafka_consumergroup_lag", &labels))
    };
    assert_eq!(lag("0"), (1, 6.0), "partition 0: 10 records, committed 4");
    assert_eq!(lag("1"), (1, 0.0), "partition 1: all 4 committed");
    let committed = total(
        &cluster,
        "kafka_consumergroup_current_offset",
        &[("consumergroup", GROUP), ("partition", "0")],
    );
    assert_eq!(committed, 4.0);

    // Every replica's log has a size: 2 partitions × 3 replicas.
    let sizes: Vec<f64> = (0..BROKERS)
        .flat_map(|i| cluster.series(i, "kafka_log_log_size"))
        .filter(|(l, _)| l.get("topic").map(String::as_str) == Some(TOPIC))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(sizes.len(), 6, "{sizes:?}");
    assert!(sizes.iter().all(|s| *s > 0.0), "{sizes:?}");

    // The quorum: one leader, named the same by everyone, all in the same epoch.
    let leaders: Vec<f64> = (0..BROKERS)
        .filter_map(|i| cluster.metric(i, "kafka_server_raftmetrics_current_leader"))
        .collect();
    assert_eq!(leaders.len(), BROKERS);
    assert!(
        leaders.iter().all(|l| *l == leaders[0] && *l >= 0.0),
        "{leaders:?}"
    );
    assert_eq!(
        total(
            &cluster,
            "kafka_server_raftmetrics_current_state",
            &[("state", "leader")]
        ),
        1.0
    );
    let applied = cluster
        .metric(0, "kafka_server_raftmetrics_high_watermark")
        .unwrap();
    let end = cluster
        .metric(0, "kafka_server_raftmetrics_log_end_offset")
        .unwrap();
    assert!(
        applied > 0.0 && applied <= end,
        "applied {applied}, log end {end}"
    );
    let rss = cluster.metric(0, "process_resident_memory_bytes").unwrap();
    assert!(rss > 1e6, "rss {rss}");
    assert!(cluster.metric(0, "process_open_fds").unwrap() > 0.0);
    // 1 KiB segments: the 10 records of partition 0 (~190 bytes each) rolled at least once on
    // every replica.
    let rolls = (0..BROKERS)
        .filter_map(|i| cluster.metric(i, "fjord_log_roll_seconds_count"))
        .collect::<Vec<_>>();
    assert!(
        rolls.len() == BROKERS && rolls.iter().all(|n| *n >= 1.0),
        "rolls {rolls:?}"
    );
    for name in ["fjord_runtime_workers", "fjord_disk_pool_threads"] {
        assert!(cluster.metric(0, name).unwrap() >= 1.0, "{name}");
    }
    for name in [
        "fjord_runtime_worker_busy_seconds_total",
        "fjord_disk_pool_busy_seconds_total",
    ] {
        assert!(cluster.metric(0, name).unwrap() > 0.0, "{name}");
    }
    let capacity = cluster.metric(0, "fjord_log_dir_capacity_bytes").unwrap();
    let available = cluster.metric(0, "fjord_log_dir_available_bytes").unwrap();
    assert!(
        capacity > 0.0 && available <= capacity,
        "{available} of {capacity}"
    );

    // A deleted topic leaves no series behind.
    let deleted = rt
        .block_on(admin.delete_topics(&[TOPIC], &AdminOptions::new()))
        .unwrap();
    assert!(deleted[0].is_ok(), "{deleted:?}");
    wait_for("the deleted topic's series are gone", 30, || {
        [
            "kafka_server_brokertopicmetrics_messagesin_total",
            "kafka_server_brokertopicmetrics_bytesin_total",
            "kafka_log_log_size",
            "kafka_consumergroup_lag",
        ]
        .iter()
        .all(|name| of_topic(&cluster, name, TOPIC).is_empty())
    });
}
