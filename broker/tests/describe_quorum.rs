//! DescribeQuorum and DescribeLogDirs against a real three-node cluster (combined
//! broker+controller nodes, metadata through the fjord-quorum Raft log), checked with typed
//! requests and with Apache Kafka's own CLI tools:
//!
//! - every broker, followers included (they forward to the quorum leader), describes
//!   `__cluster_metadata`-0 with the same leader, all three voters with known log end offsets, and
//!   each voter's CONTROLLER endpoint;
//! - `kafka-metadata-quorum describe --status` and `--replication` print that quorum;
//! - `kafka-log-dirs --describe --topic-list` lists each broker's log dir with the topic's
//!   partitions, non-empty where the broker leads after records were produced; a topic filter in
//!   the request is honoured.
//!
//! A single node (no quorum) answers as its own leader and only voter, refuses a request for
//! another partition with INVALID_REQUEST, and with the authorizer on refuses both APIs to a
//! principal without DESCRIBE on the cluster.

#[path = "common/kafka_cli.rs"]
mod kafka_cli;
use kafka_cli::kafka_cli;
#[path = "common/cluster.rs"]
mod cluster;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use cluster::{bootstrap, start_cluster, stop, wait_until, Node, CLUSTER_ID};
use fjord_client::Connection;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{
    DescribeLogDirsRequest, DescribeLogDirsResponse, DescribeQuorumRequest, DescribeQuorumResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
const INVALID_REQUEST: i16 = 42;
const TOPIC: &str = "logdirs";
const PARTITIONS: i32 = 3;

fn name(v: &str) -> TopicName {
    TopicName(StrBytes::from_string(v.to_string()))
}

fn metadata_partition_request() -> DescribeQuorumRequest {
    DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(name("__cluster_metadata"))
        .with_partitions(vec![PartitionData::default().with_partition_index(0)])])
}

fn describe_quorum(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    request: &DescribeQuorumRequest,
    version: i16,
) -> DescribeQuorumResponse {
    rt.block_on(async {
        let mut conn = Connection::connect(addr).await.unwrap();
        conn.send(request, version).await.unwrap()
    })
}

fn describe_log_dirs(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    topics: Option<Vec<DescribableLogDirTopic>>,
) -> DescribeLogDirsResponse {
    rt.block_on(async {
        let mut conn = Connection::connect(addr).await.unwrap();
        let request = DescribeLogDirsRequest::default().with_topics(topics);
        conn.send(&request, 4).await.unwrap()
    })
}

fn quorum_leader(node: &Node) -> i32 {
    node.broker.cluster.leader().unwrap()
}

/// `Key:   value` lines of `kafka-metadata-quorum describe --status`.
fn status_fields(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn produce_to_every_partition(rt: &tokio::runtime::Runtime, bootstrap: &str) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "1")
        .set("message.timeout.ms", "20000")
        .create()
        .unwrap();
    for p in 0..PARTITIONS {
        for i in 0..5 {
            let value = format!("record {i} of partition {p}");
            let record = FutureRecord::<(), _>::to(TOPIC)
                .partition(p)
                .payload(&value);
            let delivered = rt.block_on(producer.send(record, Duration::from_secs(20)));
            delivered.unwrap_or_else(|(e, _)| panic!("partition {p}: {e}"));
        }
    }
}

#[test]
fn kafka_cli_describes_the_quorum_and_log_dirs_of_a_three_node_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let nodes = start_cluster(dir.path(), 3);
    let all: Vec<&Node> = nodes.iter().collect();
    wait_until("every node names the same quorum leader", || {
        all.iter()
            .all(|n| quorum_leader(n) == quorum_leader(all[0]))
    });
    let leader = quorum_leader(all[0]);
    let voters = all[0].broker.config.cluster.voters.clone();
    assert_eq!(voters.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);

    // Every broker gives the leader's complete view: a follower answering from its own view
    // would not know the other voters' log end offsets (-1).
    for n in &all {
        let resp = describe_quorum(&rt, n.addr, &metadata_partition_request(), 2);
        assert_eq!(resp.error_code, 0, "node {}: {resp:?}", n.id);
        assert_eq!(resp.topics.len(), 1);
        assert_eq!(resp.topics[0].topic_name.0.as_str(), "__cluster_metadata");
        let p = &resp.topics[0].partitions[0];
        assert_eq!((p.partition_index, p.error_code), (0, 0), "{p:?}");
        assert_eq!(p.leader_id.0, leader, "node {} names another leader", n.id);
        assert!(p.leader_epoch >= 1, "{p:?}");
        let ids: Vec<i32> = p.current_voters.iter().map(|v| v.replica_id.0).collect();
        assert_eq!(ids, vec![0, 1, 2]);
        assert!(p.observers.is_empty());
        for v in &p.current_voters {
            assert!(v.log_end_offset > 0, "node {}: voter {v:?}", n.id);
        }
        let leader_end = p
            .current_voters
            .iter()
            .find(|v| v.replica_id.0 == leader)
            .unwrap()
            .log_end_offset;
        assert!(
            p.high_watermark > 0 && p.high_watermark <= leader_end,
            "high watermark {} vs leader end {leader_end}",
            p.high_watermark
        );
        let endpoints: BTreeMap<i32, String> = resp
            .nodes
            .iter()
            .map(|node| {
                let l = &node.listeners[0];
                assert_eq!(l.name.as_str(), "CONTROLLER");
                (node.node_id.0, format!("{}:{}", l.host, l.port))
            })
            .collect();
        assert_eq!(endpoints, voters, "node {}", n.id);
    }
    // v0 (no node endpoints, no timestamps) decodes too.
    let v0 = describe_quorum(&rt, all[1].addr, &metadata_partition_request(), 0);
    assert_eq!(v0.topics[0].partitions[0].leader_id.0, leader);
    assert!(v0.nodes.is_empty());

    // kafka-metadata-quorum describe --status, through every broker.
    let out = kafka_cli(
        "kafka-metadata-quorum",
        &[
            "--bootstrap-server",
            &bootstrap(&all),
            "describe",
            "--status",
        ],
    );
    let status = status_fields(&out);
    assert_eq!(status["ClusterId"], CLUSTER_ID, "{out}");
    assert_eq!(status["LeaderId"], leader.to_string(), "{out}");
    assert!(status["LeaderEpoch"].parse::<i32>().unwrap() >= 1, "{out}");
    assert!(status["HighWatermark"].parse::<i64>().unwrap() > 0, "{out}");
    assert!(
        status["MaxFollowerLag"].parse::<i64>().unwrap() >= 0,
        "{out}"
    );
    for (id, address) in &voters {
        let voter = format!("{{\"id\": {id}, \"endpoints\": [\"CONTROLLER://{address}\"]}}");
        assert!(
            status["CurrentVoters"].contains(&voter),
            "no {voter} in\n{out}"
        );
    }
    assert_eq!(status["CurrentObservers"], "[]", "{out}");

    // --replication through a follower only.
    let follower = all.iter().find(|n| n.id != leader).unwrap();
    let out = kafka_cli(
        "kafka-metadata-quorum",
        &[
            "--bootstrap-server",
            &bootstrap(&[follower]),
            "describe",
            "--replication",
        ],
    );
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NodeId",
            "DirectoryId",
            "LogEndOffset",
            "Lag",
            "LastFetchTimestamp",
            "LastCaughtUpTimestamp",
            "Status"
        ]
    );
    let rows: BTreeMap<i32, Vec<&str>> = lines
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(cols.len(), 7, "{l}");
            (cols[0].parse().unwrap(), cols)
        })
        .collect();
    assert_eq!(
        rows.keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 2],
        "{out}"
    );
    for (id, cols) in &rows {
        let role = if *id == leader { "Leader" } else { "Follower" };
        assert_eq!(cols[6], role, "{out}");
        assert!(cols[2].parse::<i64>().unwrap() > 0, "log end offset: {out}");
        assert!(cols[3].parse::<i64>().unwrap() >= 0, "lag: {out}");
    }
    assert_eq!(rows[&leader][3], "0", "the leader has no lag: {out}");

    // kafka-log-dirs: a topic on every broker, records in every partition.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap(&all))
        .create()
        .unwrap();
    let created = rt
        .block_on(admin.create_topics(
            [&NewTopic::new(
                TOPIC,
                PARTITIONS,
                TopicReplication::Fixed(3),
            )],
            &AdminOptions::new(),
        ))
        .unwrap();
    assert!(created[0].is_ok(), "{created:?}");
    let other = rt
        .block_on(admin.create_topics(
            [&NewTopic::new(
                "not-asked-for",
                1,
                TopicReplication::Fixed(3),
            )],
            &AdminOptions::new(),
        ))
        .unwrap();
    assert!(other[0].is_ok(), "{other:?}");
    for n in &all {
        wait_until("the topics reached every node", || {
            n.broker.replicas.topic_partitions(TOPIC).map(|p| p.len()) == Some(PARTITIONS as usize)
                && n.broker
                    .replicas
                    .topic_partitions("not-asked-for")
                    .is_some()
        });
    }
    produce_to_every_partition(&rt, &bootstrap(&all));
    let leaders: BTreeMap<i32, i32> = {
        let image = all[0].broker.metadata.snapshot();
        image.topics[TOPIC]
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| (i as i32, p.leader))
            .collect()
    };

    let out = kafka_cli(
        "kafka-log-dirs",
        &[
            "--bootstrap-server",
            &bootstrap(&all),
            "--describe",
            "--topic-list",
            TOPIC,
        ],
    );
    assert!(
        out.contains("Received log directory information from brokers 0,1,2"),
        "{out}"
    );
    let json = out
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    let doc: serde_json::Value = serde_json::from_str(json).unwrap();
    let brokers = doc["brokers"].as_array().unwrap();
    assert_eq!(brokers.len(), 3, "{json}");
    for b in brokers {
        let id = b["broker"].as_i64().unwrap() as i32;
        let log_dirs = b["logDirs"].as_array().unwrap();
        assert_eq!(log_dirs.len(), 1, "{json}");
        let expected_dir = std::path::absolute(dir.path().join(id.to_string())).unwrap();
        assert_eq!(log_dirs[0]["logDir"], expected_dir.display().to_string());
        assert!(log_dirs[0]["error"].is_null(), "{json}");
        let sizes: BTreeMap<String, i64> = log_dirs[0]["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                assert_eq!(p["offsetLag"], 0, "{p}");
                assert_eq!(p["isFuture"], false, "{p}");
                (
                    p["partition"].as_str().unwrap().to_string(),
                    p["size"].as_i64().unwrap(),
                )
            })
            .collect();
        let expected: BTreeSet<String> = (0..PARTITIONS).map(|p| format!("{TOPIC}-{p}")).collect();
        assert_eq!(
            sizes.keys().cloned().collect::<BTreeSet<_>>(),
            expected,
            "broker {id} hosts a replica of every partition: {json}"
        );
        for (p, l) in &leaders {
            if *l == id {
                let size = sizes[&format!("{TOPIC}-{p}")];
                assert!(
                    size > 0,
                    "broker {id} leads {TOPIC}-{p} but reports size {size}"
                );
            }
        }
    }

    // The request's topic filter is honoured (the CLI filters client-side, so check it here),
    // and v4 reports the disk's size.
    let asked = DescribableLogDirTopic::default()
        .with_topic(name(TOPIC))
        .with_partitions(vec![1]);
    let resp = describe_log_dirs(&rt, all[0].addr, Some(vec![asked]));
    assert_eq!(resp.error_code, 0);
    assert_eq!(resp.results.len(), 1);
    let r = &resp.results[0];
    assert!(
        r.total_bytes > 0 && (0..=r.total_bytes).contains(&r.usable_bytes),
        "{r:?}"
    );
    let listed: Vec<(String, Vec<i32>)> = r
        .topics
        .iter()
        .map(|t| {
            let parts = t.partitions.iter().map(|p| p.partition_index).collect();
            (t.name.0.to_string(), parts)
        })
        .collect();
    assert_eq!(listed, vec![(TOPIC.to_string(), vec![1])]);
    let everything = describe_log_dirs(&rt, all[0].addr, None);
    let names: BTreeSet<String> = everything.results[0]
        .topics
        .iter()
        .map(|t| t.name.0.to_string())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([TOPIC.into(), "not-asked-for".into()])
    );

    drop(admin);
    for n in nodes {
        stop(n);
    }
}

fn start_single(dir: &Path, authorizer: bool) -> (tokio::runtime::Runtime, SocketAddr) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut overrides = vec![
        ("node.id".to_string(), "7".to_string()),
        ("listeners".into(), "PLAINTEXT://127.0.0.1:0".into()),
        ("admin.listener".into(), "127.0.0.1:0".into()),
        ("log.dirs".into(), dir.display().to_string()),
    ];
    if authorizer {
        overrides.push((
            "authorizer.class.name".into(),
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer".into(),
        ));
        overrides.push(("super.users".into(), "User:admin".into()));
    }
    let (config, _) = fjord_broker::Config::load(None, &overrides).unwrap();
    let running = rt.block_on(fjord_broker::start(config)).unwrap();
    let addr = running.kafka_addrs[0];
    (rt, addr)
}

#[test]
fn a_single_node_is_its_own_quorum_and_both_apis_need_cluster_describe() {
    let dir = tempfile::tempdir().unwrap();
    let client = tokio::runtime::Runtime::new().unwrap();
    {
        let (rt, addr) = start_single(&dir.path().join("open"), false);
        let resp = describe_quorum(&client, addr, &metadata_partition_request(), 2);
        assert_eq!(resp.error_code, 0);
        let p = &resp.topics[0].partitions[0];
        assert_eq!(p.leader_id.0, 7);
        let ids: Vec<i32> = p.current_voters.iter().map(|v| v.replica_id.0).collect();
        assert_eq!(ids, vec![7]);
        assert_eq!(resp.nodes[0].listeners[0].port, addr.port());

        let out = kafka_cli(
            "kafka-metadata-quorum",
            &[
                "--bootstrap-server",
                &addr.to_string(),
                "describe",
                "--status",
            ],
        );
        let status = status_fields(&out);
        assert_eq!(status["LeaderId"], "7", "{out}");
        assert!(status["CurrentVoters"].starts_with("[{\"id\": 7"), "{out}");

        let wrong = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
            .with_topic_name(name("__cluster_metadata"))
            .with_partitions(vec![PartitionData::default().with_partition_index(1)])]);
        let resp = describe_quorum(&client, addr, &wrong, 2);
        assert_eq!(resp.error_code, INVALID_REQUEST);
        rt.shutdown_timeout(Duration::from_secs(5));
    }
    {
        let (rt, addr) = start_single(&dir.path().join("locked"), true);
        let resp = describe_quorum(&client, addr, &metadata_partition_request(), 2);
        assert_eq!(resp.error_code, CLUSTER_AUTHORIZATION_FAILED);
        assert!(resp.topics.is_empty());
        let resp = describe_log_dirs(&client, addr, None);
        assert_eq!(resp.error_code, CLUSTER_AUTHORIZATION_FAILED);
        assert!(resp.results.is_empty());
        rt.shutdown_timeout(Duration::from_secs(5));
    }
}
