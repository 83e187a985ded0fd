//! Leader elections on real broker processes, driven by Apache Kafka's CLI tools:
//!
//! - a partition leader is SIGKILLed and restarted: it rejoins the ISR as a follower;
//!   `kafka-leader-election --election-type preferred --all-topic-partitions` moves the
//!   leadership back to it (`kafka-topics --describe` shows the preferred replica leading with
//!   the full ISR, and every acknowledged record is still readable); run again it has nothing to
//!   do, and for an explicit partition it reports a valid replica already elected;
//! - a partition whose only in-sync replica died is offline; PREFERRED cannot help, UNCLEAN
//!   elects a live out-of-sync replica;
//! - with `auto.leader.rebalance.enable` (a short check interval) the controller moves the
//!   leadership back by itself;
//! - a single-node broker answers ELECTION_NOT_NEEDED / UNKNOWN_TOPIC_OR_PARTITION, and with the
//!   authorizer on, a principal without ALTER on the cluster gets CLUSTER_AUTHORIZATION_FAILED.

mod common;

#[path = "common/kafka_cli.rs"]
mod kafka_cli;
#[path = "common/procs.rs"]
mod procs;
use kafka_cli::{kafka_cli, run_cli};

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use fjord_client::Connection;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{
    CreateTopicsRequest, ElectLeadersRequest, ElectLeadersResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use procs::{wait_for, Described, ProcCluster};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

const PARTITIONS: i32 = 3;

fn rt() -> tokio::runtime::Runtime {
    common::runtime()
}

fn create_topic(rt: &tokio::runtime::Runtime, bootstrap: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let new = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(3))
        .set("min.insync.replicas", "2");
    let results = rt
        .block_on(admin.create_topics([&new], &AdminOptions::new()))
        .unwrap();
    assert!(results[0].is_ok(), "{results:?}");
}

/// The topic as librdkafka's metadata describes it.
fn describe(bootstrap: &str, topic: &str) -> BTreeMap<i32, Described> {
    procs::describe_topic(bootstrap, topic)
}

fn all_in_sync(bootstrap: &str, topic: &str) -> bool {
    let d = describe(bootstrap, topic);
    d.len() == PARTITIONS as usize && d.values().all(|(l, _, isr)| *l >= 0 && isr.len() == 3)
}

/// The topic as `kafka-topics --describe` prints it.
fn describe_cli(bootstrap: &str, topic: &str) -> BTreeMap<i32, Described> {
    let out = kafka_cli(
        "kafka-topics",
        &[
            "--bootstrap-server",
            bootstrap,
            "--describe",
            "--topic",
            topic,
        ],
    );
    let list = |v: &str| -> Vec<i32> {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect()
    };
    let mut parts = BTreeMap::new();
    for line in out.lines().filter(|l| l.contains("Partition: ")) {
        let fields: BTreeMap<&str, &str> = line
            .split('\t')
            .filter_map(|f| f.trim().split_once(": "))
            .collect();
        let mut isr = list(fields.get("Isr").copied().unwrap_or(""));
        isr.sort();
        parts.insert(
            fields["Partition"].trim().parse().unwrap(),
            (
                fields["Leader"].trim().parse().unwrap_or(-1),
                list(fields["Replicas"]),
                isr,
            ),
        );
    }
    parts
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap()
}

/// Produces `per_partition` records to every partition with acks=all.
fn produce(rt: &tokio::runtime::Runtime, p: &FutureProducer, topic: &str, per_partition: usize) {
    rt.block_on(async {
        let sends: Vec<_> = (0..per_partition * PARTITIONS as usize)
            .map(|i| {
                let value = format!("v-{i}");
                p.send_result(
                    FutureRecord::<(), String>::to(topic)
                        .partition(i as i32 % PARTITIONS)
                        .payload(&value),
                )
                .map_err(|(e, _)| e)
                .expect("the producer queue has room")
            })
            .collect();
        for r in futures::future::join_all(sends).await {
            r.expect("delivery future completes")
                .unwrap_or_else(|(e, _)| panic!("record not acknowledged: {e}"));
        }
    })
}

/// Each partition's high watermark, as its current leader reports it.
fn high_watermarks(bootstrap: &str, topic: &str) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    (0..PARTITIONS)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .collect()
}

/// SIGKILLs the preferred leader of partition 0, waits for a new leader, restarts it and waits
/// until it is back in every ISR. Returns the restarted broker's id.
fn kill_and_restart_preferred_leader(cluster: &mut ProcCluster, topic: &str) -> i32 {
    let bootstrap = cluster.bootstrap();
    let (leader, replicas, _) = describe(&bootstrap, topic)[&0].clone();
    assert_eq!(
        leader, replicas[0],
        "a new partition is led by its preferred replica"
    );
    let victim = leader;
    cluster.kill(victim as usize);
    println!("SIGKILLed broker {victim}, leader of {topic}-0");
    wait_for("a new leader for partition 0", 30, || {
        let l = describe(&bootstrap, topic).get(&0).map_or(-1, |d| d.0);
        l >= 0 && l != victim
    });
    cluster.spawn(victim as usize);
    cluster.wait_ready(victim as usize);
    wait_for("the restarted broker back in every ISR", 60, || {
        all_in_sync(&bootstrap, topic)
    });
    victim
}

#[test]
fn kafka_leader_election_moves_leadership_back_to_the_preferred_replica() {
    let dir = procs::test_dir();
    let mut cluster =
        ProcCluster::start(dir.path(), 3, &[("auto.leader.rebalance.enable", "false")]);
    let rt = rt();
    let bootstrap = cluster.bootstrap();
    let topic = "elect";
    create_topic(&rt, &bootstrap, topic);
    wait_for("every replica in sync after create", 30, || {
        all_in_sync(&bootstrap, topic)
    });
    let p = producer(&bootstrap);
    produce(&rt, &p, topic, 200);

    let victim = kill_and_restart_preferred_leader(&mut cluster, topic);
    produce(&rt, &p, topic, 100);
    // Automatic rebalancing is off: the restarted broker stays a follower.
    std::thread::sleep(Duration::from_secs(2));
    let before = describe_cli(&bootstrap, topic);
    assert_eq!(before.len(), PARTITIONS as usize, "{before:?}");
    let (leader, replicas, isr) = &before[&0];
    assert_eq!(replicas[0], victim);
    assert_ne!(
        *leader, victim,
        "the restarted broker does not lead: {before:?}"
    );
    assert_eq!(isr.len(), 3, "{before:?}");
    let moved: Vec<String> = before
        .iter()
        .filter(|(_, (l, r, _))| *l != r[0])
        .map(|(i, _)| format!("{topic}-{i}"))
        .collect();
    assert!(moved.contains(&format!("{topic}-0")), "{moved:?}");

    // PREFERRED over every partition.
    let out = kafka_cli(
        "kafka-leader-election",
        &[
            "--bootstrap-server",
            &bootstrap,
            "--election-type",
            "preferred",
            "--all-topic-partitions",
        ],
    );
    let line = out
        .lines()
        .find(|l| {
            l.starts_with("Successfully completed leader election (PREFERRED) for partitions")
        })
        .unwrap_or_else(|| panic!("no success line in:\n{out}"));
    for tp in &moved {
        assert!(line.contains(tp.as_str()), "{tp} not in: {line}");
    }
    assert!(!out.contains("Error completing"), "{out}");

    // Every broker serves the new leaders: kafka-topics shows the preferred replicas leading
    // with the full ISR (retried briefly: another broker may apply the change a moment later).
    let mut after = BTreeMap::new();
    for attempt in 0..10 {
        after = describe_cli(&bootstrap, topic);
        let balanced = after.len() == PARTITIONS as usize
            && after
                .values()
                .all(|(l, r, isr)| *l == r[0] && isr.len() == r.len());
        if balanced {
            break;
        }
        assert!(attempt < 9, "not every preferred replica leads: {after:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(after[&0].0, victim, "{after:?}");
    let mut full = after[&0].1.clone();
    full.sort();
    assert_eq!(after[&0].2, full, "full ISR: {after:?}");

    // The new leaders have every acknowledged record and take new ones.
    // (A new leader learns the high watermark from its followers' next fetches.)
    wait_for(
        "the new leaders' high watermarks cover every record",
        15,
        || high_watermarks(&bootstrap, topic) == vec![300; 3],
    );
    produce(&rt, &p, topic, 50);
    assert_eq!(high_watermarks(&bootstrap, topic), vec![350; 3]);

    // Nothing left to do: with --all-topic-partitions Kafka leaves such partitions out of the
    // answer, so the tool prints no result at all.
    let out = kafka_cli(
        "kafka-leader-election",
        &[
            "--bootstrap-server",
            &bootstrap,
            "--election-type",
            "preferred",
            "--all-topic-partitions",
        ],
    );
    assert!(
        !out.contains("Successfully completed") && !out.contains("Error completing"),
        "{out}"
    );
    // For a named partition the answer is ELECTION_NOT_NEEDED.
    let out = kafka_cli(
        "kafka-leader-election",
        &[
            "--bootstrap-server",
            &bootstrap,
            "--election-type",
            "preferred",
            "--topic",
            topic,
            "--partition",
            "0",
        ],
    );
    assert!(
        out.contains(&format!(
            "Valid replica already elected for partitions {topic}-0"
        )),
        "{out}"
    );
    // UNCLEAN for a partition that has a leader: ELECTION_NOT_NEEDED too.
    let out = kafka_cli(
        "kafka-leader-election",
        &[
            "--bootstrap-server",
            &bootstrap,
            "--election-type",
            "unclean",
            "--topic",
            topic,
            "--partition",
            "1",
        ],
    );
    assert!(
        out.contains(&format!(
            "Valid replica already elected for partitions {topic}-1"
        )),
        "{out}"
    );
    // An unknown partition is an error.
    let (ok, out, err) = run_cli(
        "kafka-leader-election",
        &[
            "--bootstrap-server",
            &bootstrap,
            "--election-type",
            "preferred",
            "--topic",
            topic,
            "--partition",
            "7",
        ],
    );
    assert!(!ok, "{out}");
    assert!(
        format!("{out}{err}").contains("UnknownTopicOrPartitionException"),
        "{out}\n{err}"
    );

    // Partition 0's followers stop replicating, so its leader is the only in-sync replica;
    // then that leader dies: the partition is offline.
    let leader = victim as usize;
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for i in &others {
        cluster.fault(*i, "pause-fetchers", true);
    }
    wait_for("partition 0's ISR shrinks to its leader", 30, || {
        describe(&bootstrap, topic)
            .get(&0)
            .is_some_and(|(_, _, isr)| *isr == vec![leader as i32])
    });
    cluster.kill(leader);
    for i in &others {
        cluster.fault(*i, "pause-fetchers", false);
    }
    let live_bootstrap = others
        .iter()
        .map(|i| cluster.addr(*i))
        .collect::<Vec<_>>()
        .join(",");
    wait_for("partition 0 offline", 30, || {
        describe(&live_bootstrap, topic)
            .get(&0)
            .is_some_and(|(l, _, _)| *l == -1)
    });
    // PREFERRED cannot help: the preferred replica is dead.
    let (ok, out, err) = run_cli(
        "kafka-leader-election",
        &[
            "--bootstrap-server",
            &live_bootstrap,
            "--election-type",
            "preferred",
            "--topic",
            topic,
            "--partition",
            "0",
        ],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "Error completing leader election (PREFERRED) for partition: {topic}-0"
        )) && out.contains("PreferredLeaderNotAvailableException"),
        "{out}\n{err}"
    );
    // UNCLEAN elects a live replica outside the ISR.
    let out = kafka_cli(
        "kafka-leader-election",
        &[
            "--bootstrap-server",
            &live_bootstrap,
            "--election-type",
            "unclean",
            "--topic",
            topic,
            "--partition",
            "0",
        ],
    );
    assert!(
        out.contains(&format!(
            "Successfully completed leader election (UNCLEAN) for partitions {topic}-0"
        )),
        "{out}"
    );
    let d = describe_cli(&live_bootstrap, topic);
    let (l, _, isr) = &d[&0];
    assert!(
        others.contains(&(*l as usize)),
        "a live replica leads: {d:?}"
    );
    assert!(isr.contains(l), "{d:?}");
    // The unclean leader takes writes.
    let p2 = producer(&live_bootstrap);
    produce(&rt, &p2, topic, 10);
}

#[test]
fn auto_leader_rebalance_moves_leadership_back_without_the_cli() {
    let dir = procs::test_dir();
    let mut cluster = ProcCluster::start(
        dir.path(),
        3,
        &[
            ("auto.leader.rebalance.enable", "true"),
            ("leader.imbalance.check.interval.seconds", "1"),
        ],
    );
    let rt = rt();
    let bootstrap = cluster.bootstrap();
    let topic = "rebalanced";
    create_topic(&rt, &bootstrap, topic);
    wait_for("every replica in sync after create", 30, || {
        all_in_sync(&bootstrap, topic)
    });
    let p = producer(&bootstrap);
    produce(&rt, &p, topic, 100);
    let victim = kill_and_restart_preferred_leader(&mut cluster, topic);
    wait_for("the preferred replica leads partition 0 again", 30, || {
        describe(&bootstrap, topic)
            .get(&0)
            .is_some_and(|(l, _, isr)| *l == victim && isr.len() == 3)
    });
    let d = describe_cli(&bootstrap, topic);
    assert!(
        d.values().all(|(l, r, isr)| *l == r[0] && isr.len() == 3),
        "every partition led by its preferred replica: {d:?}"
    );
    let logged: usize = (0..3)
        .map(|i| cluster.log_count(i, "electing preferred leaders"))
        .sum();
    assert!(logged > 0, "the controller logged its rebalance");
    produce(&rt, &p, topic, 10);
    wait_for(
        "every record readable from the preferred leaders",
        15,
        || high_watermarks(&bootstrap, topic) == vec![110; 3],
    );
}

fn start_single(dir: &Path, authorizer: bool) -> (tokio::runtime::Runtime, fjord_broker::Running) {
    let rt = rt();
    let extra: &[(&str, &str)] = if authorizer {
        &common::STANDARD_AUTHORIZER_WITH_ADMIN
    } else {
        &[]
    };
    let running = rt.block_on(common::start_broker(dir, extra));
    (rt, running)
}

fn topic_partitions(wanted: &[(&str, &[i32])]) -> Option<Vec<TopicPartitions>> {
    Some(
        wanted
            .iter()
            .map(|(t, ps)| {
                TopicPartitions::default()
                    .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                    .with_partitions(ps.to_vec())
            })
            .collect(),
    )
}

/// (topic, partition, error code) of every result, in answer order.
fn codes(r: &ElectLeadersResponse) -> Vec<(String, i32, i16)> {
    r.replica_election_results
        .iter()
        .flat_map(|t| {
            t.partition_result
                .iter()
                .map(|p| (t.topic.0.to_string(), p.partition_id, p.error_code))
        })
        .collect()
}

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
const ELECTION_NOT_NEEDED: i16 = 84;

#[test]
fn single_node_elections_are_never_needed_and_need_alter_on_the_cluster() {
    let dir = procs::test_dir();
    let (rt, running) = start_single(&dir.path().join("open"), false);
    let addr = running.kafka_addrs[0];
    rt.block_on(async {
        let mut c = Connection::connect(addr).await.unwrap();
        let create = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("solo")))
                .with_num_partitions(2)
                .with_replication_factor(1)])
            .with_timeout_ms(5000);
        let created = c.send(&create, 7).await.unwrap();
        assert_eq!(created.topics[0].error_code, 0);
        for (version, election_type) in [(0, 0), (1, 0), (2, 0), (2, 1)] {
            let req = ElectLeadersRequest::default()
                .with_election_type(election_type)
                .with_topic_partitions(topic_partitions(&[("solo", &[0, 1, 5]), ("nope", &[0])]))
                .with_timeout_ms(5000);
            let r = c.send(&req, version).await.unwrap();
            assert_eq!(r.error_code, 0);
            assert_eq!(
                codes(&r),
                vec![
                    ("nope".into(), 0, UNKNOWN_TOPIC_OR_PARTITION),
                    ("solo".into(), 0, ELECTION_NOT_NEEDED),
                    ("solo".into(), 1, ELECTION_NOT_NEEDED),
                    ("solo".into(), 5, UNKNOWN_TOPIC_OR_PARTITION),
                ],
                "v{version} type {election_type}"
            );
        }
        // Every partition: nothing needed, so nothing listed (as in Kafka).
        let all = ElectLeadersRequest::default()
            .with_topic_partitions(None)
            .with_timeout_ms(5000);
        let r = c.send(&all, 2).await.unwrap();
        assert_eq!(codes(&r), vec![]);
    });
    drop(running);
    drop(rt);

    let (rt, running) = start_single(&dir.path().join("secured"), true);
    let addr = running.kafka_addrs[0];
    rt.block_on(async {
        let mut c = Connection::connect(addr).await.unwrap();
        for version in 0..=2 {
            let req = ElectLeadersRequest::default()
                .with_topic_partitions(topic_partitions(&[("solo", &[0, 1])]))
                .with_timeout_ms(5000);
            let r = c.send(&req, version).await.unwrap();
            let top = if version == 0 {
                0
            } else {
                CLUSTER_AUTHORIZATION_FAILED
            };
            assert_eq!(r.error_code, top, "v{version}");
            assert_eq!(
                codes(&r),
                vec![
                    ("solo".into(), 0, CLUSTER_AUTHORIZATION_FAILED),
                    ("solo".into(), 1, CLUSTER_AUTHORIZATION_FAILED),
                ],
                "v{version}"
            );
        }
    });
    drop(running);
}
