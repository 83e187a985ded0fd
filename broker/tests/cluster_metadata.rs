//! Three brokers in one process, in cluster mode (combined broker+controller, metadata through
//! the fjord-quorum Raft log), each on its own tokio runtime so one can be stopped: a topic
//! created through one broker is described identically by all three with leaders spread over
//! them; librdkafka produces to every partition and reads it back following the leaders;
//! `acks=all` with `min.insync.replicas=2` is acknowledged (every replica starts in sync); a deleted
//! topic's logs go from every broker; after the
//! quorum leader's broker stops the survivors elect a new leader and still create topics; the
//! stopped node restarts, rejoins and sees every topic. Role/voter combinations are validated.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{GroupId, HeartbeatRequest, MetadataRequest};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

const CLUSTER_ID: &str = "MkU3OEVBNTcwNTJENDM2Qk";

struct Node {
    id: i32,
    rt: tokio::runtime::Runtime,
    broker: Arc<fjord_broker::Broker>,
    addr: SocketAddr,
}

fn overrides(id: i32, dir: &Path, voters: &str, controller_port: u16) -> Vec<(String, String)> {
    [
        ("node.id", id.to_string()),
        ("process.roles", "broker,controller".into()),
        ("controller.quorum.voters", voters.into()),
        ("controller.listener.names", "CONTROLLER".into()),
        (
            "listeners",
            format!("PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:{controller_port}"),
        ),
        (
            "listener.security.protocol.map",
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".into(),
        ),
        ("admin.listener", "127.0.0.1:0".into()),
        ("log.dirs", dir.join(id.to_string()).display().to_string()),
        ("cluster.id", CLUSTER_ID.into()),
        ("group.initial.rebalance.delay.ms", "100".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn start(id: i32, dir: &Path, voters: &str, controller_port: u16) -> Node {
    let (config, _) =
        fjord_broker::Config::load(None, &overrides(id, dir, voters, controller_port)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // A restarted node may find its controller port still held for a moment.
        match rt.block_on(fjord_broker::start(config.clone())) {
            Ok(running) => {
                return Node {
                    id,
                    rt,
                    broker: running.broker,
                    addr: running.kafka_addrs[0],
                }
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "node {id} did not start: {e:#}");
                rt.shutdown_timeout(Duration::from_secs(1));
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn stop(node: Node) {
    let Node { rt, broker, .. } = node;
    drop(broker);
    rt.shutdown_timeout(Duration::from_secs(5));
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn bootstrap(nodes: &[&Node]) -> String {
    nodes
        .iter()
        .map(|n| n.addr.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn create_topic(client_rt: &tokio::runtime::Runtime, bootstrap: &str, name: &str, parts: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let topic = NewTopic::new(name, parts, TopicReplication::Fixed(3));
    let results = client_rt
        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .unwrap();
    assert!(results[0].is_ok(), "{results:?}");
}

/// (partition, leader, replicas, isr) of `topic` as librdkafka sees it through `node`.
fn describe(node: &Node, topic: &str) -> Vec<(i32, i32, Vec<i32>, Vec<i32>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", node.addr.to_string())
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    assert_eq!(md.brokers().len(), 3, "every registered broker is listed");
    let t = &md.topics()[0];
    assert!(t.error().is_none(), "{:?}", t.error());
    let mut out: Vec<_> = t
        .partitions()
        .iter()
        .map(|p| (p.id(), p.leader(), p.replicas().to_vec(), p.isr().to_vec()))
        .collect();
    out.sort();
    out
}

fn controller_id(client_rt: &tokio::runtime::Runtime, node: &Node) -> i32 {
    client_rt.block_on(async {
        let mut conn = fjord_client::Connection::connect(node.addr).await.unwrap();
        let response = conn
            .send(&MetadataRequest::default().with_topics(Some(vec![])), 12)
            .await
            .unwrap();
        response.controller_id.0
    })
}

fn produce_one_per_partition(client_rt: &tokio::runtime::Runtime, bootstrap: &str, topic: &str) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "1")
        .set("message.timeout.ms", "20000")
        .create()
        .unwrap();
    for p in 0..6 {
        let value = format!("value-{p}");
        let key = format!("key-{p}");
        let record = FutureRecord::to(topic)
            .partition(p)
            .key(&key)
            .payload(&value);
        let delivered = client_rt.block_on(producer.send(record, Duration::from_secs(20)));
        let delivery = delivered.unwrap_or_else(|(e, _)| panic!("partition {p}: {e}"));
        assert_eq!(delivery.partition, p);
    }
}

fn consume_all(bootstrap: &str, topic: &str) -> BTreeMap<i32, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "cluster-metadata-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..6 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 6 {
        assert!(Instant::now() < deadline, "consumed only {seen:?}");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
            seen.insert(m.partition(), value);
        }
    }
    seen
}

/// A subscribed consumer group: its coordinator is the broker FindCoordinator names (others
/// answer NOT_COORDINATOR); it reads every partition and commits.
fn consume_as_group(bootstrap: &str, topic: &str) -> usize {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "cluster-metadata-group")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 6 {
        assert!(Instant::now() < deadline, "group consumed only {seen:?}");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            seen.insert(m.partition());
        }
    }
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();
    let committed = consumer
        .committed(Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .filter(|e| e.offset() == Offset::Offset(1))
        .count();
    committed
}

/// A free port below the kernel's ephemeral range (32768 and up here). A port the kernel picks
/// for `bind(0)` comes from that range, and once released it can become the source port of any
/// outgoing connection before the broker binds it (seen in CI: "Address already in use" on a
/// controller listener while other tests and a local Kubernetes node were busy).
fn unused_port(host: &str) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (start.wrapping_add(n.wrapping_mul(97)) % 12_000) as u16;
        if std::net::TcpListener::bind((host, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {host} between 20000 and 31999");
}

#[test]
fn three_brokers_share_metadata_and_survive_losing_the_quorum_leader() {
    let dir = tempfile::tempdir().unwrap();
    let client_rt = tokio::runtime::Runtime::new().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| unused_port("127.0.0.1")).collect();
    let voters = (0..3)
        .map(|i| format!("{i}@127.0.0.1:{}", ports[i]))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<Option<Node>> = (0..3)
        .map(|i| Some(start(i as i32, dir.path(), &voters, ports[i])))
        .collect();
    for n in nodes.iter().flatten() {
        wait_until("every broker registered on every node", || {
            n.broker.metadata.snapshot().brokers.len() == 3
        });
    }

    // A topic created through broker 0 is described identically everywhere.
    let all: Vec<&Node> = nodes.iter().flatten().collect();
    create_topic(&client_rt, &bootstrap(&all[..1]), "spread", 6);
    for n in &all {
        wait_until("the topic reached every node", || {
            n.broker.metadata.snapshot().topics.contains_key("spread")
                && n.broker
                    .replicas
                    .topic_partitions("spread")
                    .map(|p| p.len())
                    == Some(6)
        });
    }
    let first = describe(all[0], "spread");
    assert_eq!(first.len(), 6);
    let leaders: BTreeSet<i32> = first.iter().map(|p| p.1).collect();
    assert_eq!(leaders, BTreeSet::from([0, 1, 2]), "{first:?}");
    for (_, leader, replicas, isr) in &first {
        assert_eq!(replicas.len(), 3);
        assert_eq!(replicas[0], *leader, "the preferred replica leads");
        let mut sorted = replicas.clone();
        sorted.sort();
        let mut isr = isr.clone();
        isr.sort();
        assert_eq!(isr, sorted, "every replica of a new partition is in sync");
    }
    for n in &all[1..] {
        assert_eq!(describe(n, "spread"), first, "node {} differs", n.id);
    }
    let controller = controller_id(&client_rt, all[0]);
    assert!((0..3).contains(&controller), "controller {controller}");
    for n in &all {
        assert_eq!(controller_id(&client_rt, n), controller);
    }

    // librdkafka follows the leaders: acks=1 to every partition, read back.
    let everyone = bootstrap(&all);
    produce_one_per_partition(&client_rt, &everyone, "spread");
    let seen = consume_all(&everyone, "spread");
    for p in 0..6 {
        assert_eq!(seen[&p], format!("value-{p}"));
    }
    assert_eq!(consume_as_group(&everyone, "spread"), 6);
    let coordinator = all[0]
        .broker
        .metadata
        .snapshot()
        .coordinator_for("cluster-metadata-group")
        .unwrap();
    let other = all.iter().find(|n| n.id != coordinator).unwrap();
    let code = client_rt.block_on(async {
        let mut conn = fjord_client::Connection::connect(other.addr).await.unwrap();
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("cluster-metadata-group")))
            .with_generation_id(1)
            .with_member_id(StrBytes::from_static_str("m"));
        conn.send(&request, 4).await.unwrap().error_code
    });
    assert_eq!(
        code, 16,
        "NOT_COORDINATOR from a broker that is not the coordinator"
    );

    // acks=all with min.insync.replicas=2 is acknowledged once the followers have the record.
    {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &everyone)
            .create()
            .unwrap();
        let topic =
            NewTopic::new("strict", 1, TopicReplication::Fixed(3)).set("min.insync.replicas", "2");
        let r = client_rt
            .block_on(admin.create_topics([&topic], &AdminOptions::new()))
            .unwrap();
        assert!(r[0].is_ok(), "{r:?}");
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &everyone)
            .set("acks", "all")
            .set("retries", "0")
            .set("message.timeout.ms", "10000")
            .create()
            .unwrap();
        let sent = client_rt.block_on(
            producer.send(
                FutureRecord::<(), _>::to("strict")
                    .partition(0)
                    .payload("x"),
                Duration::from_secs(10),
            ),
        );
        let delivered = sent.unwrap_or_else(|(e, _)| panic!("acks=all refused: {e}"));
        assert_eq!((delivered.partition, delivered.offset), (0, 0));
    }

    // More replicas than registered brokers is refused with Kafka's error.
    {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", all[1].addr.to_string())
            .create()
            .unwrap();
        let topic = NewTopic::new("too-many", 1, TopicReplication::Fixed(4));
        let r = client_rt
            .block_on(admin.create_topics([&topic], &AdminOptions::new()))
            .unwrap();
        assert!(
            matches!(&r[0], Err((_, RDKafkaErrorCode::InvalidReplicationFactor))),
            "{r:?}"
        );
    }

    // A topic deleted through one broker disappears, with its logs, from every broker.
    {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", all[2].addr.to_string())
            .create()
            .unwrap();
        let r = client_rt
            .block_on(admin.delete_topics(&["strict"], &AdminOptions::new()))
            .unwrap();
        assert!(r[0].is_ok(), "{r:?}");
        for n in &all {
            // The hook forgets the partition first and removes its directory right after.
            let dir = dir.path().join(n.id.to_string()).join("strict-0");
            wait_until(
                "the deleted topic and its directory are gone everywhere",
                || {
                    !n.broker.metadata.snapshot().topics.contains_key("strict")
                        && n.broker.replicas.topic_partitions("strict").is_none()
                        && !dir.exists()
                },
            );
        }
    }
    drop(all);

    // Stop the quorum leader's broker: the survivors elect a new leader and create topics.
    let leader = nodes[0].as_ref().unwrap().broker.cluster.leader().unwrap();
    let stopped = nodes[leader as usize].take().unwrap();
    stop(stopped);
    let survivors: Vec<&Node> = nodes.iter().flatten().collect();
    assert_eq!(survivors.len(), 2);
    for n in &survivors {
        wait_until("a new quorum leader", || {
            n.broker.cluster.leader().is_some_and(|l| l != leader)
        });
    }
    create_topic(&client_rt, &bootstrap(&survivors[1..]), "after-failover", 3);
    for n in &survivors {
        wait_until("the new topic reached the survivors", || {
            n.broker
                .metadata
                .snapshot()
                .topics
                .contains_key("after-failover")
        });
    }
    let new_controller = controller_id(&client_rt, survivors[0]);
    assert_ne!(new_controller, leader);
    drop(survivors);

    // The stopped node restarts, rejoins and sees every topic.
    let back = start(leader, dir.path(), &voters, ports[leader as usize]);
    wait_until("the restarted node caught up", || {
        let img = back.broker.metadata.snapshot();
        ["spread", "after-failover"]
            .iter()
            .all(|t| img.topics.contains_key(*t))
    });
    wait_until("the restarted node opened its logs", || {
        back.broker
            .replicas
            .topic_partitions("after-failover")
            .map(|p| p.len())
            == Some(3)
    });
    let reference = nodes.iter().flatten().next().unwrap();
    // It re-earns its ISR places by catching up; then everyone describes the same thing.
    wait_until("the restarted node is back in every ISR", || {
        describe(&back, "spread")
            .iter()
            .all(|(_, leader, _, isr)| *leader >= 0 && isr.len() == 3)
    });
    wait_until("every node describes the same partitions", || {
        describe(&back, "spread") == describe(reference, "spread")
    });
    assert_eq!(
        back.broker.metadata.snapshot().topics,
        reference.broker.metadata.snapshot().topics
    );
    nodes[leader as usize] = Some(back);
    // Data written before the restart is still there on the partitions it leads.
    let everyone = bootstrap(&nodes.iter().flatten().collect::<Vec<_>>());
    let seen = consume_all(&everyone, "spread");
    assert_eq!(seen.len(), 6);
    for n in nodes.into_iter().flatten() {
        stop(n);
    }
}

#[test]
fn cluster_roles_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = overrides(3, dir.path(), "0@127.0.0.1:9990,1@127.0.0.1:9991", 9993);
    let e = fjord_broker::Config::load(None, &o).unwrap_err();
    assert_eq!(e.key, "controller.quorum.voters");
    assert!(e.reason.contains("node.id 3"), "{}", e.reason);

    // As a broker-only node (a Raft learner) it is fine.
    let set_roles = |o: &mut Vec<(String, String)>, roles: &str| {
        for (k, v) in o.iter_mut() {
            if k == "process.roles" {
                *v = roles.into();
            }
        }
    };
    set_roles(&mut o, "broker");
    fjord_broker::Config::load(None, &o).expect("a broker-only node need not be a voter");
    // Controller-only nodes are not supported; a voter must be broker,controller.
    set_roles(&mut o, "controller");
    let e = fjord_broker::Config::load(None, &o).unwrap_err();
    assert_eq!(e.key, "process.roles");
    let mut voter = overrides(0, dir.path(), "0@127.0.0.1:9990,1@127.0.0.1:9991", 9990);
    set_roles(&mut voter, "broker");
    let e = fjord_broker::Config::load(None, &voter).unwrap_err();
    assert_eq!(e.key, "process.roles");

    let o: Vec<_> = overrides(0, dir.path(), "0@127.0.0.1:9990", 9990)
        .into_iter()
        .filter(|(k, _)| k != "cluster.id")
        .collect();
    let e = fjord_broker::Config::load(None, &o).unwrap_err();
    assert_eq!(e.key, "cluster.id");
}
