//! Upgrading a data directory written by the old single-node mode, whose metadata lived in a
//! local file (`__fjord_metadata/metadata.log`, one JSON `MetadataRecord` per line, fsynced per
//! append) and whose partition directories had no `partition.metadata` marker, with group
//! offsets in `__fjord_groups/offsets.log`. A node now always runs the metadata quorum; on its
//! first start it imports that file once: the topics (same ids and configs), their records,
//! the committed offsets and the producer-id high-water mark survive, the file is renamed, and
//! a later restart does not import it again.
//!
//! The old layout is made from a directory the broker wrote (segments are written by the same
//! code as before) by removing what the quorum added (`__fjord_quorum`, the markers) and
//! writing the metadata file and the offset journal the way the old code did.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use fjord_broker::metadata::MetadataRecord;
use fjord_client::Connection;
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, MetadataRequest, MetadataResponse,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use uuid::Uuid;

const TOPIC: &str = "legacy";
const GROUP: &str = "legacy-group";
const PER_PARTITION: usize = 10;
const RETENTION_MS: &str = "123456789";
/// The producer-id high-water mark of the old node.
const OLD_PRODUCER_IDS_END: i64 = 7000;

fn start(dir: &Path) -> (tokio::runtime::Runtime, SocketAddr) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let overrides = vec![
        ("node.id".to_string(), "1".to_string()),
        ("listeners".into(), "PLAINTEXT://127.0.0.1:0".into()),
        ("admin.listener".into(), "127.0.0.1:0".into()),
        ("log.dirs".into(), dir.display().to_string()),
        ("group.initial.rebalance.delay.ms".into(), "0".into()),
    ];
    let (config, _) = fjord_broker::Config::load(None, &overrides).unwrap();
    let running = rt.block_on(fjord_broker::start(config)).unwrap();
    let addr = running.kafka_addrs[0];
    (rt, addr)
}

fn stop(rt: tokio::runtime::Runtime) {
    rt.shutdown_timeout(Duration::from_secs(5));
}

fn admin(addr: SocketAddr) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .create()
        .unwrap()
}

fn consumer(addr: SocketAddr) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap()
}

fn metadata(rt: &tokio::runtime::Runtime, addr: SocketAddr) -> MetadataResponse {
    rt.block_on(async {
        let mut c = Connection::connect(addr).await.unwrap();
        c.send(&MetadataRequest::default().with_topics(None), 12)
            .await
            .unwrap()
    })
}

/// The topic's id and partition count, if the broker knows it.
fn topic(rt: &tokio::runtime::Runtime, addr: SocketAddr) -> Option<(Uuid, usize)> {
    metadata(rt, addr)
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == TOPIC))
        .map(|t| (t.topic_id, t.partitions.len()))
}

fn value(partition: i32, i: usize) -> String {
    format!("p{partition}-record-{i}")
}

/// Writes the directory a single node used to leave: topic `legacy` (2 partitions, a config
/// override) with records, group offsets, and the old metadata file. Returns the topic id.
fn write_old_layout(dir: &Path) -> Uuid {
    let (rt, addr) = start(dir);
    let created = rt
        .block_on(
            admin(addr).create_topics(
                [&NewTopic::new(TOPIC, 2, TopicReplication::Fixed(1))
                    .set("retention.ms", RETENTION_MS)],
                &AdminOptions::new(),
            ),
        )
        .unwrap();
    assert!(created[0].is_ok(), "{created:?}");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .create()
        .unwrap();
    for p in 0..2 {
        for i in 0..PER_PARTITION {
            producer
                .send(
                    BaseRecord::to(TOPIC)
                        .partition(p)
                        .key("k")
                        .payload(&value(p, i)),
                )
                .unwrap();
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let (id, _) = topic(&rt, addr).expect("the topic was created");
    stop(rt);

    // What the quorum added is not in an old directory.
    std::fs::remove_dir_all(dir.join("__fjord_quorum")).unwrap();
    for p in 0..2 {
        let marker = dir.join(format!("{TOPIC}-{p}")).join("partition.metadata");
        std::fs::remove_file(marker).unwrap();
    }
    // The old coordinator's offset journal: one JSON object per line, `c: null` a deletion,
    // and a torn last line from a crash.
    let committed = |group: &str, p: i32, offset: i64| {
        format!(
            r#"{{"g":"{group}","t":"{TOPIC}","p":{p},"c":{{"offset":{offset},"leader_epoch":-1,"metadata":null,"commit_ms":1700000000000}}}}"#
        )
    };
    let journal = [
        committed(GROUP, 0, 2),
        committed(GROUP, 1, 7),
        committed(GROUP, 0, 4),
        committed("dropped", 0, 1),
        format!(r#"{{"g":"dropped","t":"{TOPIC}","p":0,"c":null}}"#),
    ]
    .join("\n")
        + "\n{\"g\":\"torn";
    std::fs::create_dir_all(dir.join("__fjord_groups")).unwrap();
    std::fs::write(dir.join("__fjord_groups/offsets.log"), journal).unwrap();
    // The old store's format: each record serde_json-encoded on its own line.
    let records = [
        MetadataRecord::CreateTopic {
            name: TOPIC.into(),
            id,
            replicas: vec![vec![1], vec![1]],
            configs: BTreeMap::from([("retention.ms".to_string(), RETENTION_MS.to_string())]),
        },
        MetadataRecord::ProducerIdBlock {
            next: OLD_PRODUCER_IDS_END,
        },
    ];
    let mut text = Vec::new();
    for r in &records {
        serde_json::to_writer(&mut text, r).unwrap();
        text.push(b'\n');
    }
    std::fs::create_dir_all(dir.join("__fjord_metadata")).unwrap();
    std::fs::write(dir.join("__fjord_metadata/metadata.log"), text).unwrap();
    id
}

/// Every record of both partitions, by partition.
fn consume_all(addr: SocketAddr) -> BTreeMap<i32, Vec<String>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .set("group.id", "reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while out.values().map(Vec::len).sum::<usize>() < 2 * PER_PARTITION
        && std::time::Instant::now() < deadline
    {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let v = String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap();
            out.entry(m.partition()).or_default().push(v);
        }
    }
    out
}

#[test]
fn an_old_single_node_directory_is_imported_once() {
    let dir = tempfile::tempdir().unwrap();
    let id = write_old_layout(dir.path());

    let (rt, addr) = start(dir.path());
    let old_file = dir.path().join("__fjord_metadata/metadata.log");
    assert!(!old_file.exists(), "the old metadata file is renamed");
    assert!(
        dir.path()
            .join("__fjord_metadata/metadata.log.migrated")
            .exists(),
        "and kept"
    );
    assert_eq!(topic(&rt, addr), Some((id, 2)), "same topic, same id");
    let records = consume_all(addr);
    for p in 0..2 {
        let expected: Vec<String> = (0..PER_PARTITION).map(|i| value(p, i)).collect();
        assert_eq!(records.get(&p), Some(&expected), "partition {p}");
    }
    let c = consumer(addr);
    let mut asked = TopicPartitionList::new();
    asked.add_partition(TOPIC, 0);
    asked.add_partition(TOPIC, 1);
    let committed = c.committed_offsets(asked, Duration::from_secs(10)).unwrap();
    let offsets: Vec<Offset> = (0..2)
        .map(|p| committed.find_partition(TOPIC, p).unwrap().offset())
        .collect();
    assert_eq!(offsets, vec![Offset::Offset(4), Offset::Offset(7)]);
    drop(c);
    let configs = rt
        .block_on(
            admin(addr).describe_configs([&ResourceSpecifier::Topic(TOPIC)], &AdminOptions::new()),
        )
        .unwrap();
    let configs = configs[0].as_ref().unwrap();
    assert_eq!(
        configs.get("retention.ms").and_then(|e| e.value.clone()),
        Some(RETENTION_MS.to_string())
    );
    let pid: InitProducerIdResponse = rt.block_on(async {
        let mut c = Connection::connect(addr).await.unwrap();
        let req = InitProducerIdRequest::default()
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(kafka_protocol::messages::ProducerId(-1))
            .with_producer_epoch(-1);
        c.send(&req, 4).await.unwrap()
    });
    assert_eq!(pid.error_code, 0);
    assert!(
        pid.producer_id.0 >= OLD_PRODUCER_IDS_END,
        "producer ids handed out before the upgrade are not reused: got {}",
        pid.producer_id.0
    );
    // Deleted now, the topic must stay deleted: the import does not run a second time.
    let deleted = rt
        .block_on(admin(addr).delete_topics(&[TOPIC], &AdminOptions::new()))
        .unwrap();
    assert!(deleted[0].is_ok(), "{deleted:?}");
    stop(rt);

    let (rt, addr) = start(dir.path());
    assert_eq!(topic(&rt, addr), None, "the import ran once");
    stop(rt);
}
