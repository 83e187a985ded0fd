//! Partition reassignment (KIP-455) on three real broker processes, driven by Apache Kafka's
//! own `kafka-reassign-partitions`, checked with `kafka-topics --describe`, `kafka-configs`
//! and librdkafka:
//!
//! - `--generate` proposes moving a topic onto brokers 1,2; `--execute` of that proposal and
//!   `--verify` until complete; broker 0's directories of the topic are gone afterwards;
//! - replication factor 3 → 2 (removing the leader: leadership moves) and 1 → 3 (with
//!   `--throttle`: the throttle configs are set, the new replicas catch up no faster than the
//!   rate allows, and the final `--verify` removes the configs);
//! - a reassignment that cannot complete (the new replica's fetchers are paused) shows in
//!   `--list` and `kafka-topics --describe`, and `--cancel` reverts it;
//! - after each, every record produced before is read back (exact count), and at the end the
//!   new replicas alone serve the data (the old leader is killed);
//! - invalid requests get Kafka's error codes (typed requests).

#[path = "common/kafka_cli.rs"]
mod kafka_cli;
#[path = "common/procs.rs"]
mod procs;
use kafka_cli::kafka_cli;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fjord_client::Connection;
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ListPartitionReassignmentsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use procs::{wait_for, ProcCluster};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

const INVALID_REPLICATION_FACTOR: i16 = 38;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn reassign(bootstrap: &str, args: &[&str]) -> String {
    let mut all = vec!["--bootstrap-server", bootstrap];
    all.extend_from_slice(args);
    kafka_cli("kafka-reassign-partitions", &all)
}

/// Runs `--verify` until no partition of the file is still in progress; returns the last output.
fn verify_until_complete(bootstrap: &str, file: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = reassign(
            bootstrap,
            &[
                "--verify",
                "--reassignment-json-file",
                file.to_str().unwrap(),
            ],
        );
        if !out.contains("still in progress") {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "reassignment not complete:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// (partition -> (leader, replicas, isr)) from `kafka-topics --describe`.
fn describe_cli(bootstrap: &str, topic: &str) -> BTreeMap<i32, (i32, Vec<i32>, BTreeSet<i32>)> {
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
    let ids = |v: &str| -> Vec<i32> {
        v.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.trim().parse().unwrap())
            .collect()
    };
    out.lines()
        .filter(|l| l.contains("Partition:"))
        .map(|l| {
            let field = |name: &str| -> String {
                l.split('\t')
                    .map(str::trim)
                    .find_map(|f| f.strip_prefix(name))
                    .unwrap_or_else(|| panic!("no {name} in {l:?}"))
                    .trim()
                    .to_string()
            };
            (
                field("Partition:").parse().unwrap(),
                (
                    field("Leader:").parse().unwrap(),
                    ids(&field("Replicas:")),
                    ids(&field("Isr:")).into_iter().collect(),
                ),
            )
        })
        .collect()
}

/// (partition -> (leader, isr)) as librdkafka sees it.
fn metadata(bootstrap: &str, topic: &str) -> BTreeMap<i32, (i32, BTreeSet<i32>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
        return BTreeMap::new();
    };
    md.topics()
        .first()
        .map(|t| {
            t.partitions()
                .iter()
                .map(|p| (p.id(), (p.leader(), p.isr().iter().copied().collect())))
                .collect()
        })
        .unwrap_or_default()
}

/// Creates the topics with the cluster's own placement; returns each one's replica lists.
fn create_topics(rt: &tokio::runtime::Runtime, bootstrap: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let topics = [
        NewTopic::new("moved", 2, TopicReplication::Fixed(2)),
        NewTopic::new("shrink", 1, TopicReplication::Fixed(3)),
        NewTopic::new("grow", 1, TopicReplication::Fixed(1)),
        NewTopic::new("cancelled", 1, TopicReplication::Fixed(1)),
    ];
    let results = rt
        .block_on(admin.create_topics(&topics, &AdminOptions::new()))
        .unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
}

fn others(of: &[i32]) -> Vec<i32> {
    (0..3).filter(|b| !of.contains(b)).collect()
}

fn joined(ids: &[i32]) -> String {
    ids.iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Produces `count` records of about `size` bytes round-robin over `partitions`; returns the
/// values acknowledged (acks=all).
fn produce(
    rt: &tokio::runtime::Runtime,
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    count: usize,
    size: usize,
) -> BTreeSet<String> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();
    let padding = "x".repeat(size);
    rt.block_on(async {
        let sends: Vec<_> = (0..count)
            .map(|i| {
                let value = format!("{topic}-{i}-{padding}");
                let fut = producer
                    .send_result(
                        FutureRecord::<(), String>::to(topic)
                            .partition(i as i32 % partitions)
                            .payload(&value),
                    )
                    .map_err(|(e, _)| e)
                    .expect("the producer queue has room");
                async move { (fut.await, value) }
            })
            .collect();
        futures::future::join_all(sends)
            .await
            .into_iter()
            .map(|(r, value)| {
                r.expect("delivery completes")
                    .unwrap_or_else(|(e, _)| panic!("{topic} record not acknowledged: {e}"));
                value
            })
            .collect()
    })
}

/// Reads every partition of `topic` from the beginning up to its high watermark.
fn read_all(bootstrap: &str, topic: &str, partitions: i32) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("check-{topic}-{}", rand_suffix()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        ends.insert(p, high);
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut pos: BTreeMap<i32, i64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ends
        .iter()
        .any(|(p, e)| pos.get(p).copied().unwrap_or(0) < *e)
    {
        assert!(
            Instant::now() < deadline,
            "{topic}: read {pos:?} of {ends:?}"
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string());
            pos.insert(m.partition(), m.offset() + 1);
        }
    }
    out
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Every acknowledged record, each exactly once, and nothing else.
fn assert_intact(bootstrap: &str, topic: &str, partitions: i32, acked: &BTreeSet<String>) {
    let read = read_all(bootstrap, topic, partitions);
    assert_eq!(read.len(), acked.len(), "{topic}: record count");
    let distinct: BTreeSet<String> = read.into_iter().collect();
    assert_eq!(&distinct, acked, "{topic}: the records read back");
    println!("{topic}: all {} records read back", acked.len());
}

fn write_json(dir: &Path, name: &str, json: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, json).unwrap();
    path
}

fn partition_dir(cluster: &ProcCluster, node: usize, topic: &str, p: i32) -> PathBuf {
    cluster.nodes[node].dir.join(format!("{topic}-{p}"))
}

/// The broker's dynamic configs (`kafka-configs --describe`) as one string.
fn configs(bootstrap: &str, entity_type: &str, name: &str) -> String {
    kafka_cli(
        "kafka-configs",
        &[
            "--bootstrap-server",
            bootstrap,
            "--describe",
            "--entity-type",
            entity_type,
            "--entity-name",
            name,
        ],
    )
}

fn alter_request(
    topic: &str,
    partition: i32,
    replicas: Option<&[i32]>,
) -> AlterPartitionReassignmentsRequest {
    AlterPartitionReassignmentsRequest::default().with_topics(vec![ReassignableTopic::default()
        .with_name(TopicName(StrBytes::from_string(topic.into())))
        .with_partitions(vec![ReassignablePartition::default()
            .with_partition_index(partition)
            .with_replicas(
                replicas.map(|r| r.iter().copied().map(BrokerId).collect()),
            )])])
}

/// The error code one AlterPartitionReassignments request gets for its partition.
fn alter_error(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    request: AlterPartitionReassignmentsRequest,
    version: i16,
) -> i16 {
    rt.block_on(async {
        let mut conn = Connection::connect(addr).await.unwrap();
        let response = conn.send(&request, version).await.unwrap();
        assert_eq!(response.error_code, 0);
        response.responses[0].partitions[0].error_code
    })
}

#[test]
fn kafka_reassign_partitions_moves_grows_shrinks_and_cancels() {
    let dir = procs::test_dir();
    let mut cluster = ProcCluster::start(dir.path(), 3, &[]);
    let rt = rt();
    let bootstrap = cluster.bootstrap();
    create_topics(&rt, &bootstrap);
    let full_isrs = |bootstrap: &str| {
        [("moved", 2), ("shrink", 3), ("grow", 1), ("cancelled", 1)]
            .iter()
            .all(|(t, rf)| {
                let md = metadata(bootstrap, t);
                !md.is_empty() && md.values().all(|(l, isr)| *l >= 0 && isr.len() == *rf)
            })
    };
    wait_for("every new partition has its full ISR", 30, || {
        full_isrs(&bootstrap)
    });
    let layout = |t: &str| -> BTreeMap<i32, Vec<i32>> {
        describe_cli(&bootstrap, t)
            .into_iter()
            .map(|(p, (_, replicas, _))| (p, replicas))
            .collect()
    };
    let (moved_before, shrink_before, grow_before, cancelled_before) = (
        layout("moved"),
        layout("shrink")[&0].clone(),
        layout("grow")[&0].clone(),
        layout("cancelled")[&0].clone(),
    );
    let moved = produce(&rt, &bootstrap, "moved", 2, 2000, 100);
    let shrink = produce(&rt, &bootstrap, "shrink", 1, 1000, 100);
    // About 800 kB: at 80 kB/s the new replicas need about 9 s to catch up.
    let grow = produce(&rt, &bootstrap, "grow", 1, 800, 1000);
    let cancelled = produce(&rt, &bootstrap, "cancelled", 1, 500, 100);
    println!("produced the records to reassign");

    // Invalid requests, answered with Kafka's codes.
    let addr = cluster.addr(1);
    for (request, code, what) in [
        (
            alter_request("moved", 0, Some(&[1, 1])),
            INVALID_REPLICA_ASSIGNMENT,
            "duplicate",
        ),
        (
            alter_request("moved", 0, Some(&[1, 7])),
            INVALID_REPLICA_ASSIGNMENT,
            "unknown broker",
        ),
        (
            alter_request("moved", 0, Some(&[])),
            INVALID_REPLICA_ASSIGNMENT,
            "empty",
        ),
        (
            alter_request("moved", 0, None),
            NO_REASSIGNMENT_IN_PROGRESS,
            "cancel nothing",
        ),
        (
            alter_request("nope", 0, Some(&[1])),
            UNKNOWN_TOPIC_OR_PARTITION,
            "unknown topic",
        ),
        (
            alter_request("moved", 9, Some(&[1])),
            UNKNOWN_TOPIC_OR_PARTITION,
            "unknown partition",
        ),
    ] {
        assert_eq!(alter_error(&rt, &addr, request, 0), code, "{what}");
    }
    let mut keep_rf = alter_request("moved", 0, Some(&[0, 1, 2]));
    keep_rf.allow_replication_factor_change = false;
    assert_eq!(
        alter_error(&rt, &addr, keep_rf, 1),
        INVALID_REPLICATION_FACTOR
    );
    let nothing_moving = rt.block_on(async {
        let mut conn = Connection::connect(addr.as_str()).await.unwrap();
        conn.send(&ListPartitionReassignmentsRequest::default(), 0)
            .await
            .unwrap()
    });
    assert!(nothing_moving.topics.is_empty(), "{nothing_moving:?}");
    assert_eq!(
        layout("moved"),
        moved_before,
        "refused requests changed nothing"
    );

    // 1. --generate a move of "moved" off the first replica of moved-0, then --execute it.
    let leaving = moved_before[&0][0];
    let staying = others(&[leaving]);
    let topics_file = write_json(
        dir.path(),
        "topics.json",
        r#"{"version":1,"topics":[{"topic":"moved"}]}"#,
    );
    let generated = reassign(
        &bootstrap,
        &[
            "--generate",
            "--topics-to-move-json-file",
            topics_file.to_str().unwrap(),
            "--broker-list",
            &joined(&staying),
        ],
    );
    let proposal = generated
        .split("Proposed partition reassignment configuration")
        .nth(1)
        .expect("a proposal")
        .trim()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let parsed: serde_json::Value = serde_json::from_str(&proposal).unwrap();
    let proposed: BTreeMap<i32, Vec<i32>> = parsed["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let replicas = p["replicas"].as_array().unwrap();
            (
                p["partition"].as_i64().unwrap() as i32,
                replicas
                    .iter()
                    .map(|r| r.as_i64().unwrap() as i32)
                    .collect(),
            )
        })
        .collect();
    for (p, replicas) in &proposed {
        let set: BTreeSet<i32> = replicas.iter().copied().collect();
        assert_eq!(
            set,
            staying.iter().copied().collect(),
            "moved-{p}: {proposal}"
        );
    }
    assert_eq!(proposed.len(), 2, "{proposal}");
    let moved_file = write_json(dir.path(), "moved.json", &proposal);
    let executed = reassign(
        &bootstrap,
        &[
            "--execute",
            "--reassignment-json-file",
            moved_file.to_str().unwrap(),
        ],
    );
    assert!(
        executed.contains("Successfully started partition reassignments for moved-0,moved-1"),
        "{executed}"
    );
    let verified = verify_until_complete(&bootstrap, &moved_file);
    for p in 0..2 {
        assert!(
            verified.contains(&format!(
                "Reassignment of partition moved-{p} is completed."
            )),
            "{verified}"
        );
    }
    let d = describe_cli(&bootstrap, "moved");
    for (p, want) in &proposed {
        let (leader, replicas, isr) = &d[p];
        assert_eq!(replicas, want, "moved-{p}: the proposed replicas, in order");
        assert_eq!(isr, &staying.iter().copied().collect(), "moved-{p}");
        assert!(staying.contains(leader), "moved-{p} led by {leader}");
    }
    wait_for(
        &format!("broker {leaving} removed its logs of 'moved'"),
        30,
        || (0..2).all(|p| !partition_dir(&cluster, leaving as usize, "moved", p).exists()),
    );
    for p in 0..2 {
        for node in &staying {
            assert!(partition_dir(&cluster, *node as usize, "moved", p).exists());
        }
    }
    assert_intact(&bootstrap, "moved", 2, &moved);

    // 2. Replication factor 3 -> 2, dropping the leader (the first replica): everything left
    //    is in sync, so it completes at once and leadership moves.
    let shrink_target = shrink_before[1..].to_vec();
    let shrink_file = write_json(
        dir.path(),
        "shrink.json",
        &format!(
            r#"{{"version":1,"partitions":[{{"topic":"shrink","partition":0,"replicas":[{}]}}]}}"#,
            joined(&shrink_target)
        ),
    );
    reassign(
        &bootstrap,
        &[
            "--execute",
            "--reassignment-json-file",
            shrink_file.to_str().unwrap(),
        ],
    );
    let verified = verify_until_complete(&bootstrap, &shrink_file);
    assert!(
        verified.contains("Reassignment of partition shrink-0 is completed."),
        "{verified}"
    );
    let (leader, replicas, isr) = describe_cli(&bootstrap, "shrink")[&0].clone();
    assert_eq!(replicas, shrink_target);
    assert_eq!(leader, shrink_target[0], "the removed leader handed over");
    assert_eq!(isr, shrink_target.iter().copied().collect());
    let dropped = shrink_before[0] as usize;
    wait_for("the removed replica's log of 'shrink' is gone", 30, || {
        !partition_dir(&cluster, dropped, "shrink", 0).exists()
    });
    assert_intact(&bootstrap, "shrink", 1, &shrink);

    // 3. Replication factor 1 -> 3 with an 80 kB/s throttle.
    let grow_leader = grow_before[0];
    let added = others(&[grow_leader]);
    let grow_target: Vec<i32> = std::iter::once(grow_leader).chain(added.clone()).collect();
    let grow_file = write_json(
        dir.path(),
        "grow.json",
        &format!(
            r#"{{"version":1,"partitions":[{{"topic":"grow","partition":0,"replicas":[{}]}}]}}"#,
            joined(&grow_target)
        ),
    );
    let executed = reassign(
        &bootstrap,
        &[
            "--execute",
            "--reassignment-json-file",
            grow_file.to_str().unwrap(),
            "--throttle",
            "80000",
        ],
    );
    // From here a poller times the catch-up while the CLI checks run.
    let poller = {
        let bootstrap = bootstrap.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            while metadata(&bootstrap, "grow")
                .get(&0)
                .is_none_or(|(_, isr)| isr.len() < 3)
            {
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "grow-0 never caught up"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            started.elapsed()
        })
    };
    assert!(
        executed.contains("The inter-broker throttle limit was set to 80000 B/s"),
        "{executed}"
    );
    let listed = reassign(&bootstrap, &["--list"]);
    let expected = format!(
        "grow-0: replicas: {}. adding: {}.",
        joined(&grow_target),
        joined(&added)
    );
    assert!(listed.contains(&expected), "{listed}");
    let gauge = |name: &str| -> Option<i64> {
        let (_, body) = cluster.admin_get(grow_leader as usize, "/metrics")?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    };
    let reassigning = gauge("kafka_server_replicamanager_reassigningpartitions ");
    let remaining = gauge("fjord_reassignment_offsets_remaining ");
    println!("while throttled: reassigning {reassigning:?}, offsets remaining {remaining:?}");
    assert_eq!(
        reassigning,
        Some(1),
        "the leader counts its reassigning partition"
    );
    assert!(remaining.is_some_and(|r| r > 0), "{remaining:?}");
    let broker_configs = configs(&bootstrap, "brokers", &added[0].to_string());
    for key in ["leader", "follower"] {
        assert!(
            broker_configs.contains(&format!("{key}.replication.throttled.rate=80000")),
            "{broker_configs}"
        );
    }
    let topic_configs = configs(&bootstrap, "topics", "grow");
    let followers = format!(
        "follower.replication.throttled.replicas=0:{},0:{}",
        added[0], added[1]
    );
    assert!(topic_configs.contains(&followers), "{topic_configs}");
    let leaders = format!("leader.replication.throttled.replicas=0:{grow_leader}");
    assert!(topic_configs.contains(&leaders), "{topic_configs}");
    let caught_up = poller.join().unwrap();
    println!(
        "grow-0: 800 kB replicated to two new replicas {caught_up:?} after --execute at 80 kB/s"
    );
    // Unthrottled this takes well under a second.
    assert!(
        caught_up >= Duration::from_secs(5),
        "the throttle did not slow replication: {caught_up:?}"
    );
    let verified = verify_until_complete(&bootstrap, &grow_file);
    assert!(
        verified.contains("Reassignment of partition grow-0 is completed."),
        "{verified}"
    );
    assert!(
        verified.contains("Clearing broker-level throttles"),
        "{verified}"
    );
    let (leader, replicas, isr) = describe_cli(&bootstrap, "grow")[&0].clone();
    assert_eq!((leader, replicas), (grow_leader, grow_target.clone()));
    assert_eq!(isr, BTreeSet::from([0, 1, 2]));
    for (entity_type, name) in [
        ("brokers", "0"),
        ("brokers", "1"),
        ("brokers", "2"),
        ("topics", "grow"),
    ] {
        let c = configs(&bootstrap, entity_type, name);
        assert!(
            !c.contains("throttled"),
            "{entity_type} {name} still throttled: {c}"
        );
    }
    wait_for("the reassigning gauge back to 0", 10, || {
        gauge("kafka_server_replicamanager_reassigningpartitions ") == Some(0)
    });
    assert_intact(&bootstrap, "grow", 1, &grow);

    // 4. A reassignment that cannot complete (the new replica's broker does not fetch) is
    //    listed, then cancelled: back to the original replica, and the new one's log is gone.
    let original = cancelled_before[0];
    let stalled = others(&[original])[0];
    cluster.fault(stalled as usize, "pause-fetchers", true);
    let cancel_file = write_json(
        dir.path(),
        "cancel.json",
        &format!(
            r#"{{"version":1,"partitions":[{{"topic":"cancelled","partition":0,"replicas":[{original},{stalled}]}}]}}"#
        ),
    );
    reassign(
        &bootstrap,
        &[
            "--execute",
            "--reassignment-json-file",
            cancel_file.to_str().unwrap(),
        ],
    );
    wait_for("the new replica opened a log for 'cancelled'", 30, || {
        partition_dir(&cluster, stalled as usize, "cancelled", 0).exists()
    });
    let listed = reassign(&bootstrap, &["--list"]);
    let expected = format!("cancelled-0: replicas: {original},{stalled}. adding: {stalled}.");
    assert!(listed.contains(&expected), "{listed}");
    let described = kafka_cli(
        "kafka-topics",
        &[
            "--bootstrap-server",
            &bootstrap,
            "--describe",
            "--topic",
            "cancelled",
        ],
    );
    assert!(
        described.contains(&format!("Adding Replicas: {stalled}")),
        "{described}"
    );
    let verified = reassign(
        &bootstrap,
        &[
            "--verify",
            "--reassignment-json-file",
            cancel_file.to_str().unwrap(),
        ],
    );
    assert!(
        verified.contains("Reassignment of partition cancelled-0 is still in progress."),
        "{verified}"
    );
    let cancelled_out = reassign(
        &bootstrap,
        &[
            "--cancel",
            "--reassignment-json-file",
            cancel_file.to_str().unwrap(),
        ],
    );
    assert!(
        cancelled_out.contains("Successfully cancelled partition reassignment"),
        "{cancelled_out}"
    );
    let (leader, replicas, isr) = describe_cli(&bootstrap, "cancelled")[&0].clone();
    assert_eq!(
        (leader, replicas, isr),
        (original, vec![original], BTreeSet::from([original]))
    );
    assert!(reassign(&bootstrap, &["--list"]).contains("No partition reassignments found."));
    wait_for("the cancelled replica's log is gone", 30, || {
        !partition_dir(&cluster, stalled as usize, "cancelled", 0).exists()
    });
    cluster.fault(stalled as usize, "pause-fetchers", false);
    assert_intact(&bootstrap, "cancelled", 1, &cancelled);

    // 5. The new replicas hold the data on their own: kill the old (and only) leader of grow.
    let after = |bootstrap: &str| {
        [("moved", 2), ("shrink", 2), ("grow", 3)]
            .iter()
            .all(|(t, rf)| {
                let md = metadata(bootstrap, t);
                !md.is_empty() && md.values().all(|(l, isr)| *l >= 0 && isr.len() == *rf)
            })
    };
    wait_for("every ISR full again", 60, || after(&bootstrap));
    cluster.kill(grow_leader as usize);
    wait_for("a new leader for grow-0", 30, || {
        metadata(&bootstrap, "grow")
            .get(&0)
            .is_some_and(|(l, _)| added.contains(l))
    });
    assert_intact(&bootstrap, "grow", 1, &grow);
    assert_intact(&bootstrap, "moved", 2, &moved);
    assert_intact(&bootstrap, "shrink", 1, &shrink);
}
