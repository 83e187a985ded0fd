//! Error paths of the data and admin APIs, checked with raw protocol requests: every refusal
//! carries Kafka's error code and changes nothing.

mod common;

use bytes::{Bytes, BytesMut};
use fjord_client::Connection;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

#[global_allocator]
static ALLOCATOR: fjord_broker::alloc_guard::GuardedAlloc = fjord_broker::alloc_guard::GuardedAlloc;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn batch(value_len: usize, producer: Option<(i64, i16, i32)>) -> Bytes {
    common::record_batch(
        Some(Bytes::from_static(b"key")),
        Bytes::from(vec![b'x'; value_len]),
        producer,
    )
}

fn produce(topic: &str, records: Bytes, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])])
}

async fn produce_code(c: &mut Connection, topic: &str, records: Bytes) -> (i16, i64) {
    let r = c.send(&produce(topic, records, -1), 9).await.unwrap();
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

async fn latest(c: &mut Connection, topic: &str) -> i64 {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-1)])]);
    c.send(&req, 7).await.unwrap().topics[0].partitions[0].offset
}

async fn create(
    c: &mut Connection,
    topic: &str,
    partitions: i32,
    rf: i16,
    configs: &[(&str, &str)],
) -> i16 {
    let t = CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(rf)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(k.to_string()))
                        .with_value(Some(StrBytes::from_string(v.to_string())))
                })
                .collect(),
        );
    let r = c
        .send(
            &CreateTopicsRequest::default()
                .with_topics(vec![t])
                .with_timeout_ms(5000),
            7,
        )
        .await
        .unwrap();
    r.topics[0].error_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_kafka_error_codes_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let running = common::start_broker(
        dir.path(),
        &[
            ("auto.create.topics.enable", "false"),
            ("message.max.bytes", "10000"),
        ],
    )
    .await;
    let mut c = Connection::connect(running.kafka_addrs[0]).await.unwrap();

    // Topic creation errors.
    assert_eq!(create(&mut c, "good", 1, 1, &[]).await, 0);
    assert_eq!(
        create(&mut c, "good", 1, 1, &[]).await,
        36,
        "TOPIC_ALREADY_EXISTS"
    );
    for bad in ["bad name", "", "a/b", "..", &"x".repeat(250)] {
        assert_eq!(
            create(&mut c, bad, 1, 1, &[]).await,
            17,
            "INVALID_TOPIC_EXCEPTION for {bad:?}"
        );
    }
    assert_eq!(
        create(&mut c, "rf3", 1, 3, &[]).await,
        38,
        "INVALID_REPLICATION_FACTOR"
    );
    assert_eq!(
        create(&mut c, "zero", 0, 1, &[]).await,
        37,
        "INVALID_PARTITIONS"
    );
    assert_eq!(
        create(&mut c, "badcfg", 1, 1, &[("retention.ms", "soon")]).await,
        40,
        "INVALID_CONFIG"
    );
    assert_eq!(
        create(&mut c, "unknowncfg", 1, 1, &[("no.such.key", "1")]).await,
        40,
        "INVALID_CONFIG"
    );

    // Metadata for a missing topic with auto-create off: an error, and no topic appears.
    let md = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("missing")))
        ]))
        .with_allow_auto_topic_creation(true);
    let r = c.send(&md, 12).await.unwrap();
    assert_eq!(r.topics[0].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    let all = c
        .send(&MetadataRequest::default().with_topics(None), 12)
        .await
        .unwrap();
    let names: Vec<String> = all
        .topics
        .iter()
        .map(|t| t.name.as_ref().unwrap().0.to_string())
        .collect();
    assert_eq!(names, vec!["good".to_string()]);

    // Produce errors.
    assert_eq!(produce_code(&mut c, "missing", batch(10, None)).await.0, 3);
    let mut corrupt = batch(10, None).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x55;
    assert_eq!(
        produce_code(&mut c, "good", Bytes::from(corrupt)).await.0,
        2,
        "CORRUPT_MESSAGE"
    );
    assert_eq!(
        produce_code(&mut c, "good", batch(20_000, None)).await.0,
        10,
        "MESSAGE_TOO_LARGE"
    );
    assert_eq!(
        produce_code(&mut c, "good", Bytes::from_static(&[1, 2, 3]))
            .await
            .0,
        2,
        "garbage records"
    );
    assert_eq!(
        latest(&mut c, "good").await,
        0,
        "refused batches left no data"
    );

    // Fetch beyond the end is OFFSET_OUT_OF_RANGE; a good batch reads back byte for byte
    // (apart from the offset the broker assigned).
    let good = batch(100, None);
    assert_eq!(produce_code(&mut c, "good", good.clone()).await, (0, 0));
    let fetch = |offset: i64| {
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(100)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name("good"))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])])
    };
    let r = c.send(&fetch(5), 12).await.unwrap();
    assert_eq!(
        r.responses[0].partitions[0].error_code, 1,
        "OFFSET_OUT_OF_RANGE"
    );
    let r = c.send(&fetch(0), 12).await.unwrap();
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.high_watermark, 1);
    assert_eq!(p.records.as_ref().unwrap(), &good);

    // Idempotence: a retried batch gets its original offset and adds nothing; a gap is refused.
    assert_eq!(create(&mut c, "idem", 1, 1, &[]).await, 0);
    let pid = c
        .send(
            &InitProducerIdRequest::default().with_transaction_timeout_ms(60_000),
            4,
        )
        .await
        .unwrap();
    assert_eq!(pid.error_code, 0);
    let id = pid.producer_id.0;
    assert_eq!(
        produce_code(&mut c, "idem", batch(10, Some((id, 0, 0)))).await,
        (0, 0)
    );
    assert_eq!(
        produce_code(&mut c, "idem", batch(10, Some((id, 0, 1)))).await,
        (0, 1)
    );
    assert_eq!(
        produce_code(&mut c, "idem", batch(10, Some((id, 0, 1)))).await,
        (0, 1),
        "duplicate answered with its offset"
    );
    assert_eq!(latest(&mut c, "idem").await, 2, "duplicate not appended");
    assert_eq!(
        produce_code(&mut c, "idem", batch(10, Some((id, 0, 5))))
            .await
            .0,
        45,
        "OUT_OF_ORDER_SEQUENCE_NUMBER"
    );
    assert_eq!(
        produce_code(&mut c, "idem", batch(10, Some((id + 1000, 0, 3)))).await,
        (0, 2),
        "a producer the partition does not know may start at any sequence (as in Kafka)"
    );
    assert_eq!(
        produce_code(&mut c, "idem", batch(10, Some((id + 1000, 0, 9))))
            .await
            .0,
        45,
        "once known, its sequence must continue"
    );

    // acks=0 gets no response: the next response on the connection belongs to the next request.
    c.send_raw_frame(&{
        use kafka_protocol::protocol::Encodable;
        let mut b = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::Produce as i16)
            .with_request_api_version(9)
            .with_correlation_id(999)
            .encode(&mut b, 2)
            .unwrap();
        produce("good", batch(10, None), 0)
            .encode(&mut b, 9)
            .unwrap();
        b.to_vec()
    })
    .await
    .unwrap();
    assert_eq!(
        latest(&mut c, "good").await,
        2,
        "acks=0 record appended, and no stray response"
    );
}
