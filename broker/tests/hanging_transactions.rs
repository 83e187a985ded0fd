//! A hanging transaction, and Kafka's own tool ending it. A producer that writes
//! transactional data without its coordinator knowing (here: raw Produce requests carrying a
//! transactional id no InitProducerId ever saw) leaves the partition with a transaction no
//! coordinator will ever end, and every `read_committed` reader stops in front of it. As in
//! Kafka, `kafka-transactions find-hanging` finds it (DescribeProducers against
//! ListTransactions) and `kafka-transactions abort` ends it (WriteTxnMarkers to the leader):
//! the last stable offset then reaches the high watermark and the records stay invisible to
//! `read_committed`.

mod common;
#[path = "common/kafka_cli.rs"]
mod kafka_cli;

use std::time::Duration;

use fjord_client::Connection;
use kafka_cli::kafka_cli;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const TOPIC: &str = "hanging";

/// (high watermark, last stable offset) of partition 0.
async fn ends(c: &mut Connection) -> (i64, i64) {
    let mut out = [0i64; 2];
    for (slot, isolation) in out.iter_mut().zip([0i8, 1]) {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(isolation)
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1)])]);
        let r = c.send(&req, 7).await.unwrap();
        assert_eq!(r.topics[0].partitions[0].error_code, 0);
        *slot = r.topics[0].partitions[0].offset;
    }
    (out[0], out[1])
}

async fn cli(args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kafka_cli("kafka-transactions", &args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_transactions_finds_and_aborts_a_hanging_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let running = common::start_broker(dir.path(), &[]).await;
    let node = running.broker.config.node_id.to_string();
    let bootstrap = running.kafka_addrs[0].to_string();
    let mut c = Connection::connect(running.kafka_addrs[0]).await.unwrap();

    let created = c
        .send(
            &CreateTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                    .with_num_partitions(1)
                    .with_replication_factor(1)]),
            7,
        )
        .await
        .unwrap();
    assert_eq!(created.topics[0].error_code, 0);
    let init = c
        .send(
            &InitProducerIdRequest::default().with_transaction_timeout_ms(-1),
            4,
        )
        .await
        .unwrap();
    assert_eq!(init.error_code, 0);
    let produce = ProduceRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("ghost"))))
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(common::transactional_batch(
                    (init.producer_id.0, init.producer_epoch),
                    3,
                    b"never committed",
                )))])]);
    let r = c.send(&produce, 9).await.unwrap();
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    assert_eq!(
        ends(&mut c).await,
        (3, 0),
        "the open transaction holds read_committed at 0"
    );

    let pid = init.producer_id.0.to_string();
    let args = |extra: &[&str]| -> Vec<String> {
        ["--bootstrap-server", bootstrap.as_str()]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let hanging = cli(args(&["find-hanging", "--broker-id", &node])).await;
    assert!(
        hanging.contains(TOPIC) && hanging.contains(&pid),
        "find-hanging did not list the transaction:\n{hanging}"
    );
    cli(args(&[
        "abort",
        "--topic",
        TOPIC,
        "--partition",
        "0",
        "--start-offset",
        "0",
    ]))
    .await;
    // The abort marker takes offset 3; the partition is stable again.
    let mut stable = false;
    for _ in 0..50 {
        if ends(&mut c).await == (4, 4) {
            stable = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stable, "still {:?} after the abort", ends(&mut c).await);
    let after = cli(args(&["find-hanging", "--broker-id", &node])).await;
    assert!(
        !after.contains(&pid),
        "still hanging after the abort:\n{after}"
    );
    running.broker.shutdown().await;
}
