//! Fetches large enough to leave the stored batches in the log file (`sendfile` on plain TCP):
//! librdkafka consumes records of many sizes, across small segments that roll often and with a
//! per-partition fetch limit smaller than some batches, and gets every byte back exactly, in
//! order. Followers take the same path in every replication test.

mod common;

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

#[global_allocator]
static ALLOCATOR: fjord_broker::alloc_guard::GuardedAlloc = fjord_broker::alloc_guard::GuardedAlloc;

const TOPIC: &str = "large-fetches";
const RECORDS: usize = 3000;

/// Record `i`: 100 bytes to ~60 KiB, its content derived from `i` so a byte from the wrong
/// place in a file shows.
fn value(i: usize) -> Vec<u8> {
    let len = 100 + (i * 7919) % 60_000;
    (0..len).map(|j| ((i * 31 + j * 17) % 251) as u8).collect()
}

#[test]
fn every_byte_of_large_fetches_arrives_in_order() {
    let rt = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    let running = rt.block_on(common::start_broker(dir.path(), &[]));
    let bootstrap = running.kafka_addrs[0].to_string();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let created = rt
        .block_on(admin.create_topics(
            // Segments of 1 MiB: a fetch regularly stops at a segment's end and the next starts
            // in a new file.
            &[NewTopic::new(TOPIC, 2, TopicReplication::Fixed(1)).set("segment.bytes", "1048576")],
            &AdminOptions::new(),
        ))
        .unwrap();
    assert!(created[0].is_ok(), "{created:?}");

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "20")
        .set("batch.size", "500000")
        .set("message.max.bytes", "1000000")
        .create()
        .unwrap();
    for i in 0..RECORDS {
        let key = i.to_string();
        let payload = value(i);
        let partition = (i % 2) as i32;
        let mut record = BaseRecord::to(TOPIC)
            .key(&key)
            .payload(&payload)
            .partition(partition);
        while let Err((e, r)) = producer.send(record) {
            assert!(
                matches!(
                    e,
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull
                    )
                ),
                "send failed: {e}"
            );
            record = r;
            producer.poll(Duration::from_millis(10));
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "large-fetches")
        .set("auto.offset.reset", "earliest")
        // Smaller than the largest batches: the broker's first-batch exception is used too.
        .set("max.partition.fetch.bytes", "200000")
        .set("fetch.max.bytes", "3000000")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let mut next = [0usize, 1usize];
    let mut received = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while received < RECORDS && Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        let partition = m.partition() as usize;
        let i: usize = std::str::from_utf8(m.key().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(i, next[partition], "partition {partition} out of order");
        assert!(
            m.payload() == Some(value(i).as_slice()),
            "record {i}: payload differs"
        );
        next[partition] += 2;
        received += 1;
    }
    assert_eq!(received, RECORDS, "every record consumed");
    drop(running);
    let segments = walk_logs(dir.path());
    assert!(
        segments >= 40,
        "the log rolled often ({segments} segment files)"
    );
}

/// Segment files (`*.log`) under `dir`.
fn walk_logs(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk_logs(&path)
            } else {
                usize::from(path.extension().is_some_and(|x| x == "log"))
            }
        })
        .sum()
}
