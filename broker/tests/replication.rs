//! Data replication between real broker processes, driven by librdkafka:
//!
//! - followers copy the leader's log and join the ISR; `acks=all` waits for them;
//! - SIGKILL of a partition leader: the controller fences it, an in-sync follower leads, and
//!   every acknowledged record is still there; the killed broker returns, truncates what it
//!   alone had, catches up and is back in the ISR;
//! - `min.insync.replicas=2` with one broker left: NOT_ENOUGH_REPLICAS, and
//!   `/v1/restart-safety` says unsafe for the last in-sync replica, safe once replication
//!   caught up again;
//! - a broker whose partition data is wiped rejoins and re-replicates everything.

mod common;
#[path = "common/procs.rs"]
mod procs;

use std::collections::BTreeMap;
use std::time::Duration;

use procs::{wait_for, ProcCluster};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

const TOPIC: &str = "replicated";
const PARTITIONS: i32 = 3;

fn rt() -> tokio::runtime::Runtime {
    common::runtime()
}

fn create_topic(rt: &tokio::runtime::Runtime, bootstrap: &str) {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", bootstrap);
    procs::create_replicated_topic(rt, client, TOPIC, PARTITIONS);
}

/// (partition -> (leader, replicas, isr)) as the cluster describes it.
fn describe(bootstrap: &str) -> BTreeMap<i32, procs::Described> {
    procs::describe_topic(bootstrap, TOPIC)
}

fn all_in_sync(bootstrap: &str, n: usize) -> bool {
    let d = describe(bootstrap);
    d.len() == PARTITIONS as usize && d.values().all(|(l, _, isr)| *l >= 0 && isr.len() == n)
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

/// Produces `count` records `prefix-i` round-robin over the partitions; returns what was
/// acknowledged as (partition, offset, value).
fn produce(
    rt: &tokio::runtime::Runtime,
    p: &FutureProducer,
    prefix: &str,
    count: usize,
) -> Vec<(i32, i64, String)> {
    rt.block_on(async {
        let sends: Vec<_> = (0..count)
            .map(|i| {
                let value = format!("{prefix}-{i}");
                let partition = (i as i32) % PARTITIONS;
                let fut = p
                    .send_result(
                        FutureRecord::<(), String>::to(TOPIC)
                            .partition(partition)
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
                let d = r
                    .expect("delivery future completes")
                    .unwrap_or_else(|(e, _)| panic!("{value} not acknowledged: {e}"));
                (d.partition, d.offset, value)
            })
            .collect()
    })
}

/// Reads every partition from the beginning to its high watermark: (partition, offset, value).
fn read_all(bootstrap: &str) -> Vec<(i32, i64, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "replication-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut ends = BTreeMap::new();
    for p in 0..PARTITIONS {
        let (_, high) = consumer
            .fetch_watermarks(TOPIC, p, Duration::from_secs(10))
            .unwrap();
        ends.insert(p, high);
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut pos: BTreeMap<i32, i64> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while ends
        .iter()
        .any(|(p, e)| pos.get(p).copied().unwrap_or(0) < *e)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "read {pos:?} of {ends:?}"
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
            out.push((m.partition(), m.offset(), v));
            pos.insert(m.partition(), m.offset() + 1);
        }
    }
    out
}

/// Every acknowledged record is at its offset, once.
fn assert_all_present(acked: &[(i32, i64, String)], read: &[(i32, i64, String)]) {
    let by_pos: BTreeMap<(i32, i64), &str> = read
        .iter()
        .map(|(p, o, v)| ((*p, *o), v.as_str()))
        .collect();
    for (p, o, v) in acked {
        assert_eq!(
            by_pos.get(&(*p, *o)).copied(),
            Some(v.as_str()),
            "acknowledged record {v} at {p}/{o} is missing"
        );
    }
    let mut values: Vec<&str> = read.iter().map(|(_, _, v)| v.as_str()).collect();
    let n = values.len();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), n, "no record is stored twice");
}

fn leader_of(bootstrap: &str, partition: i32) -> i32 {
    describe(bootstrap).get(&partition).map_or(-1, |d| d.0)
}

#[test]
fn followers_replicate_and_a_killed_leader_loses_no_acknowledged_record() {
    let dir = procs::test_dir();
    let mut cluster = ProcCluster::start(dir.path(), 3, &[]);
    let rt = rt();
    let bootstrap = cluster.bootstrap();
    create_topic(&rt, &bootstrap);
    wait_for("every replica in sync after create", 30, || {
        all_in_sync(&bootstrap, 3)
    });
    let p = producer(&bootstrap);
    let mut acked = produce(&rt, &p, "first", 3000);
    println!("acknowledged {} records with acks=all", acked.len());
    assert!(all_in_sync(&bootstrap, 3), "{:?}", describe(&bootstrap));

    // Kill partition 0's leader without warning.
    let victim = leader_of(&bootstrap, 0);
    assert!(victim >= 0);
    cluster.kill(victim as usize);
    println!("SIGKILLed broker {victim} (leader of partition 0)");
    wait_for("a new leader for partition 0", 30, || {
        let l = leader_of(&bootstrap, 0);
        l >= 0 && l != victim
    });
    let d = describe(&bootstrap);
    assert!(
        d.values().all(|(_, _, isr)| !isr.contains(&victim)),
        "the fenced broker left every ISR: {d:?}"
    );
    acked.extend(produce(&rt, &p, "second", 1500));
    let read = read_all(&bootstrap);
    assert_all_present(&acked, &read);
    println!(
        "after the kill: {} records read, all acknowledged present",
        read.len()
    );

    // The killed broker returns, catches up and rejoins every ISR.
    cluster.spawn(victim as usize);
    cluster.wait_ready(victim as usize);
    wait_for("the restarted broker back in every ISR", 60, || {
        all_in_sync(&bootstrap, 3)
    });
    let safety = cluster
        .admin_get(victim as usize, "/v1/restart-safety")
        .unwrap();
    assert!(safety.1.contains("\"safe\":true"), "{safety:?}");

    // The two other brokers stop replicating (test fault hook): partition 0's leader becomes
    // the last in-sync replica of a min.insync.replicas=2 topic.
    let keep = leader_of(&bootstrap, 0) as usize;
    let others: Vec<usize> = (0..3).filter(|i| *i != keep).collect();
    for i in &others {
        cluster.fault(*i, "pause-fetchers", true);
    }
    wait_for("partition 0's ISR shrinks to its leader", 30, || {
        describe(&bootstrap)
            .get(&0)
            .is_some_and(|(_, _, isr)| *isr == vec![keep as i32])
    });
    let (_, body) = cluster.admin_get(keep, "/v1/restart-safety").unwrap();
    assert!(
        body.contains("\"safe\":false") && body.contains("wouldGoOffline"),
        "the last in-sync replica is unsafe to stop: {body}"
    );
    let strict: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .set("message.timeout.ms", "3000")
        .set("retries", "0")
        .create()
        .unwrap();
    let refused = rt.block_on(strict.send(
        FutureRecord::<(), str>::to(TOPIC).partition(0).payload("x"),
        Duration::from_secs(5),
    ));
    match refused {
        Err((KafkaError::MessageProduction(code), _)) => {
            assert_eq!(code, RDKafkaErrorCode::NotEnoughReplicas)
        }
        other => panic!("expected NOT_ENOUGH_REPLICAS, got {other:?}"),
    }
    for i in &others {
        cluster.fault(*i, "pause-fetchers", false);
    }
    wait_for("all three back in sync", 60, || all_in_sync(&bootstrap, 3));
    let (_, body) = cluster.admin_get(keep, "/v1/restart-safety").unwrap();
    assert!(
        body.contains("\"safe\":true"),
        "safe once caught up: {body}"
    );
    let read = read_all(&bootstrap);
    assert_all_present(&acked, &read);
}

#[test]
fn a_broker_with_wiped_partition_data_rejoins_and_re_replicates() {
    let dir = procs::test_dir();
    let mut cluster = ProcCluster::start(dir.path(), 3, &[]);
    let rt = rt();
    let bootstrap = cluster.bootstrap();
    create_topic(&rt, &bootstrap);
    wait_for("in sync after create", 30, || all_in_sync(&bootstrap, 3));
    let p = producer(&bootstrap);
    let acked = produce(&rt, &p, "wipe", 2000);
    cluster.kill(2);
    // Wipe the partition logs (the quorum's own log stays: a voter that forgets its votes could
    // break Raft's safety, which is not what this test is about).
    let mut wiped = 0;
    for e in std::fs::read_dir(&cluster.nodes[2].dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with(TOPIC) {
            std::fs::remove_dir_all(e.path()).unwrap();
            wiped += 1;
        }
    }
    assert_eq!(
        wiped, PARTITIONS,
        "node 2 hosted a replica of every partition"
    );
    cluster.spawn(2);
    cluster.wait_ready(2);
    wait_for("the wiped broker back in every ISR", 60, || {
        all_in_sync(&bootstrap, 3)
    });
    // Now only node 2 may lead: everything must have been copied back to it.
    cluster.kill(0);
    cluster.kill(1);
    cluster.spawn(0);
    cluster.wait_ready(0);
    wait_for("node 2 leads every partition", 60, || {
        let d = describe(&bootstrap);
        d.len() == PARTITIONS as usize && d.values().all(|(l, _, _)| *l == 2)
    });
    let read = read_all(&bootstrap);
    assert_all_present(&acked, &read);
    assert_eq!(read.len(), acked.len());
}

/// Size in bytes of `TOPIC`-`partition` on broker `node`, from DescribeLogDirs.
/// One `acks=1` record sent to broker `node` alone; whether it was acknowledged.
fn produce_to_node(
    rt: &tokio::runtime::Runtime,
    cluster: &ProcCluster,
    node: usize,
    partition: i32,
    value: &str,
) -> bool {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    rt.block_on(async {
        let Ok(mut conn) = fjord_client::Connection::connect(cluster.addr(node)).await else {
            return false;
        };
        let request = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(common::record_batch(
                        None,
                        bytes::Bytes::from(value.to_string()),
                        None,
                    )))])]);
        conn.send(&request, 9).await.is_ok_and(|r| {
            r.responses
                .iter()
                .flat_map(|t| t.partition_responses.iter())
                .all(|p| p.error_code == 0)
        })
    })
}

/// The leader of `partition` in broker `node`'s own metadata (asked of that broker alone; a
/// client's metadata request may go to any broker it knows).
fn leader_seen_by(
    rt: &tokio::runtime::Runtime,
    cluster: &ProcCluster,
    node: usize,
    partition: i32,
) -> i32 {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{MetadataRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    rt.block_on(async {
        let Ok(mut conn) = fjord_client::Connection::connect(cluster.addr(node)).await else {
            return -1;
        };
        let request = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str(TOPIC))))]));
        let Ok(response) = conn.send(&request, 12).await else {
            return -1;
        };
        response
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition)
            .map_or(-1, |p| p.leader_id.0)
    })
}

fn replica_size(
    rt: &tokio::runtime::Runtime,
    cluster: &ProcCluster,
    node: usize,
    partition: i32,
) -> i64 {
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    use kafka_protocol::messages::{DescribeLogDirsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    rt.block_on(async {
        let mut conn = fjord_client::Connection::connect(cluster.addr(node))
            .await
            .unwrap();
        let request = DescribeLogDirsRequest::default().with_topics(Some(vec![
            DescribableLogDirTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(vec![partition]),
        ]));
        let response = conn.send(&request, 1).await.unwrap();
        response
            .results
            .iter()
            .flat_map(|d| d.topics.iter())
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition)
            .map_or(-1, |p| p.partition_size)
    })
}

/// A leader cut off from the quorum and its followers keeps accepting `acks=1` writes no one
/// else gets; the others elect a new leader and move on. When the old leader returns it
/// truncates those records and copies the new leader's log: they are the only ones lost, and
/// they were never acknowledged by the in-sync replicas.
#[test]
fn a_partitioned_leader_truncates_its_divergent_records_when_it_returns() {
    let dir = procs::test_dir();
    let cluster = ProcCluster::start(dir.path(), 3, &[]);
    let rt = rt();
    let bootstrap = cluster.bootstrap();
    create_topic(&rt, &bootstrap);
    wait_for("in sync after create", 30, || all_in_sync(&bootstrap, 3));
    let p = producer(&bootstrap);
    let mut acked = produce(&rt, &p, "before", 600);

    let old = leader_of(&bootstrap, 0) as usize;
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let others_bootstrap = others
        .iter()
        .map(|i| cluster.addr(*i))
        .collect::<Vec<_>>()
        .join(",");
    cluster.fault(old, "isolate", true);
    println!("isolated broker {old} (leader of partition 0)");
    wait_for("the others elect a new leader for partition 0", 30, || {
        let l = leader_of(&others_bootstrap, 0);
        l >= 0 && l != old as i32
    });
    // Until a broker applies that election it may still fetch from the old leader as its
    // follower, and whatever it copies is no longer divergent (Kafka behaves the same). Write
    // only once every other broker's own metadata names the new leader.
    let new = leader_of(&others_bootstrap, 0);
    wait_for("every other broker applied the election", 30, || {
        others
            .iter()
            .all(|i| leader_seen_by(&rt, &cluster, *i, 0) == new)
    });
    // The isolated broker still believes it leads: acks=1 writes sent to it alone land only
    // on it. (Not through a Kafka client: one would learn the real leader from the other
    // brokers' metadata and send the records there.)
    let diverged = (0..50)
        .filter(|i| produce_to_node(&rt, &cluster, old, 0, &format!("diverged-{i}")))
        .count();
    assert!(diverged > 0, "the isolated leader took acks=1 writes");
    println!("{diverged} acks=1 records written to the isolated old leader only");
    let p2 = producer(&others_bootstrap);
    acked.extend(produce(&rt, &p2, "after", 300));

    cluster.fault(old, "isolate", false);
    // Asked through the others: the returning broker's own view is stale until it catches up.
    wait_for("the old leader is back in every ISR", 60, || {
        all_in_sync(&others_bootstrap, 3)
    });
    wait_for(
        "the returning broker truncated its divergent tail",
        30,
        || cluster.log_count(old, "truncating a divergent log tail") >= 1,
    );
    let read = read_all(&others_bootstrap);
    assert_all_present(&acked, &read);
    assert!(
        read.iter().all(|(_, _, v)| !v.starts_with("diverged-")),
        "records only the partitioned leader had are gone"
    );
    let new = leader_of(&others_bootstrap, 0) as usize;
    wait_for("the old leader's copy matches the new leader's", 30, || {
        replica_size(&rt, &cluster, old, 0) == replica_size(&rt, &cluster, new, 0)
    });
}

/// The group coordinator (by FindCoordinator through node `via`).
fn coordinator_of(
    rt: &tokio::runtime::Runtime,
    cluster: &ProcCluster,
    via: usize,
    group: &str,
) -> i32 {
    use kafka_protocol::messages::FindCoordinatorRequest;
    use kafka_protocol::protocol::StrBytes;
    rt.block_on(async {
        let mut c = fjord_client::Connection::connect(cluster.addr(via))
            .await
            .unwrap();
        let request = FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(vec![StrBytes::from_string(group.to_string())]);
        let r = c.send(&request, 4).await.unwrap();
        r.coordinators.first().map_or(-1, |c| c.node_id.0)
    })
}

/// Committed offsets are replicated through the metadata log: after the coordinator is
/// killed, the group's new coordinator answers with the same offsets.
#[test]
fn committed_offsets_survive_the_coordinators_death() {
    let dir = procs::test_dir();
    let mut cluster = ProcCluster::start(dir.path(), 3, &[]);
    let rt = rt();
    let bootstrap = cluster.bootstrap();
    create_topic(&rt, &bootstrap);
    wait_for("in sync after create", 30, || all_in_sync(&bootstrap, 3));
    let p = producer(&bootstrap);
    produce(&rt, &p, "offsets", 300);
    let group = "replicated-offsets";
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let mut n = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while n < 300 {
        assert!(std::time::Instant::now() < deadline, "consumed {n}");
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(200)) {
            n += 1;
        }
    }
    consumer
        .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        .unwrap();
    drop(consumer);
    let coordinator = coordinator_of(&rt, &cluster, 0, group);
    assert!(coordinator >= 0);
    cluster.kill(coordinator as usize);
    println!("killed the coordinator of {group}: broker {coordinator}");
    let survivor = (coordinator as usize + 1) % 3;
    wait_for("another coordinator takes the group", 30, || {
        let c = coordinator_of(&rt, &cluster, survivor, group);
        c >= 0 && c != coordinator
    });
    let survivors = (0..3)
        .filter(|i| *i != coordinator as usize)
        .map(|i| cluster.addr(i))
        .collect::<Vec<_>>()
        .join(",");
    let again: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &survivors)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(TOPIC, p);
    }
    let committed = again
        .committed_offsets(tpl, Duration::from_secs(30))
        .unwrap();
    for e in committed.elements() {
        assert_eq!(
            e.offset(),
            Offset::Offset(100),
            "partition {} committed offset after the coordinator moved",
            e.partition()
        );
    }
}

/// Five brokers (five voters): with two of them down — one of them the active controller —
/// the quorum still has a majority, leaders move, writes go on and nothing acknowledged is
/// lost; the replication gauges say what is going on.
#[test]
fn five_brokers_keep_serving_with_two_down() {
    let dir = procs::test_dir();
    let mut cluster = ProcCluster::start(dir.path(), 5, &[]);
    let rt = rt();
    let bootstrap = cluster.bootstrap();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let topic = NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(3));
    let created = rt
        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .unwrap();
    assert!(created[0].is_ok(), "{created:?}");
    wait_for("in sync after create", 30, || all_in_sync(&bootstrap, 3));
    let p = producer(&bootstrap);
    let mut acked = produce(&rt, &p, "five", 1500);
    let controller = (0..5)
        .find(|i| {
            cluster.metric(*i, "kafka_controller_kafkacontroller_activecontrollercount")
                == Some(1.0)
        })
        .expect("one broker is the active controller");
    let other = (controller + 1) % 5;
    cluster.kill(controller);
    cluster.kill(other);
    println!("killed brokers {controller} (active controller) and {other}");
    let live: Vec<usize> = (0..5).filter(|i| *i != controller && *i != other).collect();
    let live_bootstrap = live
        .iter()
        .map(|i| cluster.addr(*i))
        .collect::<Vec<_>>()
        .join(",");
    wait_for("leaders on live brokers only", 30, || {
        let d = describe(&live_bootstrap);
        d.len() == PARTITIONS as usize
            && d.values().all(|(l, _, isr)| {
                live.contains(&(*l as usize))
                    && !isr.contains(&(controller as i32))
                    && !isr.contains(&(other as i32))
            })
    });
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &live_bootstrap)
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(TOPIC), Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        md.brokers().len(),
        3,
        "fenced brokers are not offered to clients"
    );
    let under: f64 = live
        .iter()
        .filter_map(|i| cluster.metric(*i, "kafka_server_replicamanager_underreplicatedpartitions"))
        .sum();
    assert!(under >= 1.0, "under-replicated partitions are reported");
    let new_controller = live
        .iter()
        .filter(|i| {
            cluster.metric(
                **i,
                "kafka_controller_kafkacontroller_activecontrollercount",
            ) == Some(1.0)
        })
        .count();
    assert_eq!(new_controller, 1, "exactly one new active controller");
    let p2 = producer(&live_bootstrap);
    acked.extend(produce(&rt, &p2, "five-after", 1500));
    let read = read_all(&live_bootstrap);
    assert_all_present(&acked, &read);
    assert_eq!(read.len(), acked.len());
    cluster.spawn(controller);
    cluster.spawn(other);
    cluster.wait_ready_all();
    wait_for("all back in sync", 60, || all_in_sync(&bootstrap, 3));
    let under: f64 = (0..5)
        .filter_map(|i| cluster.metric(i, "kafka_server_replicamanager_underreplicatedpartitions"))
        .sum();
    assert_eq!(under, 0.0, "nothing under-replicated once everyone is back");
}

/// Broker-only nodes (`process.roles=broker`) are Raft learners: they receive the metadata log
/// without voting, register, host replicas and lead partitions like any broker, and survive a
/// restart.
#[test]
fn broker_only_nodes_learn_the_metadata_and_host_replicas() {
    let dir = procs::test_dir();
    let mut cluster = ProcCluster::start_mixed(dir.path(), 3, 2, &[]);
    let rt = rt();
    let bootstrap = cluster.bootstrap();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    // Enough partitions that placement gives the broker-only nodes replicas and leaderships.
    let topic = NewTopic::new(TOPIC, 10, TopicReplication::Fixed(3));
    let created = rt
        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .unwrap();
    assert!(created[0].is_ok(), "{created:?}");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    wait_for("every partition fully in sync", 30, || {
        let Ok(md) = consumer.fetch_metadata(Some(TOPIC), Duration::from_secs(5)) else {
            return false;
        };
        md.brokers().len() == 5
            && md.topics()[0].partitions().len() == 10
            && md.topics()[0]
                .partitions()
                .iter()
                .all(|p| p.leader() >= 0 && p.isr().len() == 3)
    });
    let md = consumer
        .fetch_metadata(Some(TOPIC), Duration::from_secs(5))
        .unwrap();
    let led_by_learners = md.topics()[0]
        .partitions()
        .iter()
        .filter(|p| p.leader() >= 3)
        .count();
    assert!(led_by_learners > 0, "broker-only nodes lead partitions too");
    // The learners answer with the same metadata as the voters.
    for i in [3, 4] {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.addr(i))
            .create()
            .unwrap();
        let theirs = c
            .fetch_metadata(Some(TOPIC), Duration::from_secs(5))
            .unwrap();
        let leaders = |m: &rdkafka::metadata::Metadata| {
            m.topics()[0]
                .partitions()
                .iter()
                .map(|p| (p.id(), p.leader()))
                .collect::<Vec<_>>()
        };
        assert_eq!(theirs.brokers().len(), 5);
        assert_eq!(
            leaders(&theirs),
            leaders(&md),
            "node {i} sees the same leaders"
        );
    }
    cluster.kill(4);
    cluster.spawn(4);
    cluster.wait_ready(4);
    wait_for("the restarted learner is back in sync", 60, || {
        consumer
            .fetch_metadata(Some(TOPIC), Duration::from_secs(5))
            .is_ok_and(|md| {
                md.topics()[0]
                    .partitions()
                    .iter()
                    .all(|p| p.leader() >= 0 && p.isr().len() == 3)
            })
    });
}
