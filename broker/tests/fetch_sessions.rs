//! Incremental fetch sessions (KIP-227) over real TCP against an in-process broker: a session
//! opens on epoch 0, later requests carry only changed positions and get only partitions with
//! news, forgotten partitions leave it, wrong epochs and unknown ids are refused with the codes
//! Kafka clients handle, and epoch -1 closes it. (Followers use sessions in every replication
//! test; the Java consumer in the compatibility suite.)

mod common;

use bytes::Bytes;
use fjord_client::Connection;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const TOPIC: &str = "sessions";
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;

fn name(v: &str) -> TopicName {
    TopicName(StrBytes::from_string(v.to_string()))
}

async fn produce(c: &mut Connection, partition: i32, value: &str) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(TOPIC))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(common::record_batch(
                    None,
                    Bytes::from(value.to_string()),
                    None,
                )))])]);
    let r = c.send(&req, 9).await.unwrap();
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
}

/// A Fetch v12 of `session_id`/`epoch` naming `(partition, offset)` positions.
fn fetch(session_id: i32, epoch: i32, positions: &[(i32, i64)]) -> FetchRequest {
    let partitions = positions
        .iter()
        .map(|(p, offset)| {
            FetchPartition::default()
                .with_partition(*p)
                .with_fetch_offset(*offset)
                .with_partition_max_bytes(1 << 20)
        })
        .collect();
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(200)
        .with_min_bytes(1)
        .with_max_bytes(10 << 20)
        .with_session_id(session_id)
        .with_session_epoch(epoch)
        .with_topics(if positions.is_empty() {
            vec![]
        } else {
            vec![FetchTopic::default()
                .with_topic(name(TOPIC))
                .with_partitions(partitions)]
        })
}

/// The partitions a response answers, with their high watermark and whether records came.
fn answered(r: &FetchResponse) -> Vec<(i32, i64, bool)> {
    r.responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| {
            (
                p.partition_index,
                p.high_watermark,
                p.records.as_ref().is_some_and(|b| !b.is_empty()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_fetch_sessions_answer_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let running = common::start_broker(dir.path(), &[]).await;
    let mut c = Connection::connect(running.kafka_addrs[0]).await.unwrap();
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(TOPIC))
            .with_num_partitions(3)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    let r = c.send(&req, 5).await.unwrap();
    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
    produce(&mut c, 0, "a").await;
    produce(&mut c, 1, "b").await;

    // Epoch 0 opens a session and answers every partition.
    let r = c
        .send(&fetch(0, 0, &[(0, 0), (1, 0), (2, 0)]), 12)
        .await
        .unwrap();
    assert_eq!(r.error_code, 0);
    let id = r.session_id;
    assert_ne!(id, 0, "a session was opened");
    assert_eq!(
        answered(&r),
        vec![(0, 1, true), (1, 1, true), (2, 0, false)]
    );

    // The client moved past what it read and says so; nothing else is new: an empty answer.
    let r = c.send(&fetch(id, 1, &[(0, 1), (1, 1)]), 12).await.unwrap();
    assert_eq!((r.error_code, r.session_id), (0, id));
    assert_eq!(answered(&r), vec![]);

    // A record on partition 2 (not named in the request: the session holds its position).
    produce(&mut c, 2, "c").await;
    let r = c.send(&fetch(id, 2, &[]), 12).await.unwrap();
    assert_eq!(answered(&r), vec![(2, 1, true)]);

    // Forget partition 2: new records there no longer come back.
    let forget = fetch(id, 3, &[]).with_forgotten_topics_data(vec![ForgottenTopic::default()
        .with_topic(name(TOPIC))
        .with_partitions(vec![2])]);
    let r = c.send(&forget, 12).await.unwrap();
    assert_eq!(r.error_code, 0);
    produce(&mut c, 2, "d").await;
    produce(&mut c, 0, "e").await;
    let r = c.send(&fetch(id, 4, &[]), 12).await.unwrap();
    assert_eq!(answered(&r), vec![(0, 2, true)]);

    // Wrong epoch, unknown id: refused with the codes clients restart their session on.
    let r = c.send(&fetch(id, 9, &[]), 12).await.unwrap();
    assert_eq!(
        (r.error_code, r.session_id),
        (INVALID_FETCH_SESSION_EPOCH, 0)
    );
    assert!(r.responses.is_empty());
    let r = c
        .send(&fetch(id.wrapping_add(1), 1, &[]), 12)
        .await
        .unwrap();
    assert_eq!(r.error_code, FETCH_SESSION_ID_NOT_FOUND);
    // The refused request did not move the session on: epoch 5 is still next.
    let r = c.send(&fetch(id, 5, &[(0, 2)]), 12).await.unwrap();
    assert_eq!(r.error_code, 0);

    // Epoch -1 closes it (and is answered in full, without a session).
    let r = c.send(&fetch(id, -1, &[(0, 0)]), 12).await.unwrap();
    assert_eq!((r.error_code, r.session_id), (0, 0));
    assert_eq!(answered(&r), vec![(0, 2, true)]);
    let r = c.send(&fetch(id, 6, &[]), 12).await.unwrap();
    assert_eq!(r.error_code, FETCH_SESSION_ID_NOT_FOUND);

    // Fetch v12 without session fields (epoch -1, id 0) stays sessionless.
    let r = c.send(&fetch(0, -1, &[(1, 0)]), 12).await.unwrap();
    assert_eq!((r.error_code, r.session_id), (0, 0));
    assert_eq!(answered(&r), vec![(1, 1, true)]);
    drop(c);
    assert_eq!(running.broker.shutdown().await, 0, "every task ended");
}
