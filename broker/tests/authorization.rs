//! ACL enforcement against a real in-process broker, with fjord-client (typed requests) and
//! librdkafka (the `rdkafka` crate).
//!
//! Phase 1 runs with the authorizer off: everything is allowed, topics and data are created and
//! ACLs for `User:ANONYMOUS` (the principal of a PLAINTEXT connection) are stored through
//! CreateAcls. Phase 2 restarts the broker on the same data with
//! `authorizer.class.name=StandardAuthorizer` and `super.users=User:admin`, and checks what
//! ANONYMOUS may do: Read on `a` only consumes (no produce), in group `g-ok` only; topics without
//! ACLs are invisible (listing and by name, existing or not); prefix and literal patterns do
//! not leak to other names; deny beats allow; a host filter for another address does not apply;
//! admin APIs answer CLUSTER_AUTHORIZATION_FAILED.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_client::Connection;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

#[global_allocator]
static ALLOCATOR: fjord_broker::alloc_guard::GuardedAlloc = fjord_broker::alloc_guard::GuardedAlloc;

const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
const GROUP_AUTHORIZATION_FAILED: i16 = 30;
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
const RECORDS_IN_A: usize = 10;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn name(v: &str) -> TopicName {
    TopicName(s(v))
}

fn start(
    dir: &std::path::Path,
    authorizer: bool,
) -> (tokio::runtime::Runtime, fjord_broker::Running) {
    let rt = common::runtime();
    let mut extra = vec![("group.initial.rebalance.delay.ms", "0")];
    if authorizer {
        extra.extend(common::STANDARD_AUTHORIZER_WITH_ADMIN);
    }
    let running = rt.block_on(common::start_broker(dir, &extra));
    (rt, running)
}

fn batch(value: &str) -> Bytes {
    common::record_batch(None, Bytes::copy_from_slice(value.as_bytes()), None)
}

async fn produce(c: &mut Connection, topic: &str, value: &str) -> i16 {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch(value)))])]);
    let r = c.send(&req, 9).await.unwrap();
    r.responses[0].partition_responses[0].error_code
}

async fn create_topic(c: &mut Connection, topic: &str) -> i16 {
    let t = CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(1)
        .with_replication_factor(1);
    let req = CreateTopicsRequest::default()
        .with_topics(vec![t])
        .with_timeout_ms(5000);
    c.send(&req, 7).await.unwrap().topics[0].error_code
}

/// All topics (null list) or the named ones: (name, error code) per returned topic.
async fn metadata(c: &mut Connection, topics: Option<&[&str]>) -> Vec<(String, i16)> {
    let req = MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
        .with_topics(topics.map(|t| {
            t.iter()
                .map(|n| MetadataRequestTopic::default().with_name(Some(name(n))))
                .collect()
        }));
    let r = c.send(&req, 12).await.unwrap();
    r.topics
        .into_iter()
        .map(|t| {
            (
                t.name.map(|n| n.0.to_string()).unwrap_or_default(),
                t.error_code,
            )
        })
        .collect()
}

fn acl(rt: i8, resource: &str, pattern: i8, host: &str, op: i8, perm: i8) -> AclCreation {
    AclCreation::default()
        .with_resource_type(rt)
        .with_resource_name(s(resource))
        .with_resource_pattern_type(pattern)
        .with_principal(s("User:ANONYMOUS"))
        .with_host(s(host))
        .with_operation(op)
        .with_permission_type(perm)
}

// Wire codes: resource TOPIC 2, GROUP 3; pattern LITERAL 3, PREFIXED 4; operation ALL 2,
// READ 3, WRITE 4; permission DENY 2, ALLOW 3.
fn anonymous_acls() -> Vec<AclCreation> {
    vec![
        acl(2, "a", 3, "*", 3, 3),
        acl(3, "g-ok", 3, "*", 3, 3),
        acl(2, "pay-", 4, "*", 4, 3),
        acl(2, "d", 3, "*", 2, 3),
        acl(2, "d", 3, "*", 4, 2),
        acl(2, "h", 3, "10.9.9.9", 2, 3),
    ]
}

const TOPICS: &[&str] = &["a", "b", "ab", "d", "h", "pay", "pay-in"];

async fn phase_one(addr: SocketAddr) {
    let mut c = Connection::connect(addr).await.unwrap();
    for t in TOPICS {
        assert_eq!(create_topic(&mut c, t).await, 0, "create {t}");
    }
    for i in 0..RECORDS_IN_A {
        assert_eq!(produce(&mut c, "a", &format!("a-{i}")).await, 0);
    }
    // Authorizer off: every topic is visible and writable, ACL APIs work.
    let listed: BTreeSet<String> = metadata(&mut c, None)
        .await
        .into_iter()
        .map(|t| t.0)
        .collect();
    assert_eq!(
        listed,
        TOPICS
            .iter()
            .map(|t| t.to_string())
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(produce(&mut c, "b", "free").await, 0);
    let r = c
        .send(
            &CreateAclsRequest::default().with_creations(anonymous_acls()),
            3,
        )
        .await
        .unwrap();
    assert!(r.results.iter().all(|x| x.error_code == 0), "{r:?}");
}

async fn phase_two_protocol(running: &fjord_broker::Running) {
    let addr = running.kafka_addrs[0];
    let mut c = Connection::connect(addr).await.unwrap();

    // Listing shows only what ANONYMOUS may describe (READ, WRITE and ALL imply DESCRIBE).
    let listed: Vec<String> = metadata(&mut c, None)
        .await
        .into_iter()
        .map(|t| t.0)
        .collect();
    assert_eq!(listed, vec!["a", "d", "pay-in"]);
    // By name: an existing and a missing topic look the same; nothing is auto-created.
    let named = metadata(&mut c, Some(&["b", "nope", "a", "ab", "pay", "h"])).await;
    let expect = |n: &str, code: i16| (n.to_string(), code);
    assert_eq!(
        named,
        vec![
            expect("b", TOPIC_AUTHORIZATION_FAILED),
            expect("nope", TOPIC_AUTHORIZATION_FAILED),
            expect("a", 0),
            expect("ab", TOPIC_AUTHORIZATION_FAILED),
            expect("pay", TOPIC_AUTHORIZATION_FAILED),
            expect("h", TOPIC_AUTHORIZATION_FAILED),
        ]
    );
    assert!(!running
        .broker
        .metadata
        .snapshot()
        .topics
        .contains_key("nope"));

    // Produce: READ on `a` is not WRITE; the prefix `pay-` covers `pay-in` but not `pay`; the
    // literal `a` does not cover `ab`; DENY WRITE on `d` beats ALLOW ALL; the ALLOW ALL on `h`
    // is for another host; no ACL at all is a refusal.
    for (topic, code) in [
        ("a", TOPIC_AUTHORIZATION_FAILED),
        ("ab", TOPIC_AUTHORIZATION_FAILED),
        ("b", TOPIC_AUTHORIZATION_FAILED),
        ("nope", TOPIC_AUTHORIZATION_FAILED),
        ("pay", TOPIC_AUTHORIZATION_FAILED),
        ("d", TOPIC_AUTHORIZATION_FAILED),
        ("h", TOPIC_AUTHORIZATION_FAILED),
        ("pay-in", 0),
    ] {
        assert_eq!(
            produce(&mut c, topic, "x").await,
            code,
            "produce to {topic}"
        );
    }

    // ListOffsets needs DESCRIBE: fine on `a` and `d` (ALL minus WRITE), refused on `b`.
    for (topic, code) in [("a", 0), ("d", 0), ("b", TOPIC_AUTHORIZATION_FAILED)] {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1)])]);
        let r = c.send(&req, 7).await.unwrap();
        assert_eq!(r.topics[0].partitions[0].error_code, code, "{topic}");
    }

    // Group APIs: only g-ok.
    let find = |g: &str| FindCoordinatorRequest::default().with_key(s(g));
    assert_eq!(c.send(&find("g-ok"), 3).await.unwrap().error_code, 0);
    assert_eq!(
        c.send(&find("g-bad"), 3).await.unwrap().error_code,
        GROUP_AUTHORIZATION_FAILED
    );
    let commit = |g: &str, topic: &str| {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(s(g)))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(0)])])
    };
    for (g, topic, code) in [
        ("g-bad", "a", GROUP_AUTHORIZATION_FAILED),
        ("g-ok", "b", TOPIC_AUTHORIZATION_FAILED),
        ("g-ok", "a", 0),
    ] {
        let r = c.send(&commit(g, topic), 8).await.unwrap();
        assert_eq!(r.topics[0].partitions[0].error_code, code, "{g} {topic}");
    }

    // Admin APIs.
    assert_eq!(
        create_topic(&mut c, "newt").await,
        TOPIC_AUTHORIZATION_FAILED
    );
    let r = c
        .send(
            &CreateAclsRequest::default().with_creations(vec![acl(2, "b", 3, "*", 2, 3)]),
            3,
        )
        .await
        .unwrap();
    assert_eq!(r.results[0].error_code, CLUSTER_AUTHORIZATION_FAILED);
    let describe_acls = DescribeAclsRequest::default()
        .with_resource_name_filter(None)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_resource_type_filter(1)
        .with_pattern_type_filter(1)
        .with_operation(1)
        .with_permission_type(1);
    let r = c.send(&describe_acls, 3).await.unwrap();
    assert_eq!(r.error_code, CLUSTER_AUTHORIZATION_FAILED);
    assert!(r.resources.is_empty());
    let describe_configs = |rt: i8, n: &str| {
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(rt)
            .with_resource_name(s(n))
            .with_configuration_keys(None)])
    };
    let r = c.send(&describe_configs(2, "a"), 4).await.unwrap();
    assert_eq!(r.results[0].error_code, TOPIC_AUTHORIZATION_FAILED);
    let r = c.send(&describe_configs(4, "1"), 4).await.unwrap();
    assert_eq!(r.results[0].error_code, CLUSTER_AUTHORIZATION_FAILED);
    let r = c
        .send(
            &DeleteTopicsRequest::default()
                .with_topic_names(vec![name("a")])
                .with_timeout_ms(5000),
            5,
        )
        .await
        .unwrap();
    assert_eq!(r.responses[0].error_code, TOPIC_AUTHORIZATION_FAILED);
    // An idempotent producer id: WRITE on some topic (the `pay-` prefix) is enough.
    let r = c
        .send(
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000),
            4,
        )
        .await
        .unwrap();
    assert_eq!(r.error_code, 0);
    assert!(running.broker.metadata.snapshot().topics.contains_key("a"));
}

fn consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&["a"]).unwrap();
    c
}

fn phase_two_librdkafka(rt: &tokio::runtime::Runtime, bootstrap: &str) {
    // librdkafka's producer gets the refusal as a delivery error.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    let sent = rt.block_on(producer.send(
        FutureRecord::<(), str>::to("a").payload("nope"),
        Duration::from_secs(10),
    ));
    let err = sent.expect_err("produce to `a` must be refused").0;
    assert_eq!(
        err.rdkafka_error_code(),
        Some(RDKafkaErrorCode::TopicAuthorizationFailed),
        "{err}"
    );

    // Consuming `a` in g-ok works and sees everything produced before the restart.
    let ok = consumer(bootstrap, "g-ok");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < RECORDS_IN_A && Instant::now() < deadline {
        match ok.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => got.push(
                rdkafka::Message::payload_view::<str>(&m)
                    .and_then(|p| p.ok())
                    .unwrap_or_default()
                    .to_string(),
            ),
            Some(Err(e)) => panic!("consumer in g-ok failed: {e}"),
            None => {}
        }
    }
    let want: Vec<String> = (0..RECORDS_IN_A).map(|i| format!("a-{i}")).collect();
    assert_eq!(got, want);
    ok.commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        .unwrap();
    drop(ok);

    // Another group is refused.
    let bad = consumer(bootstrap, "g-bad");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused = None;
    while refused.is_none() && Instant::now() < deadline {
        match bad.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => panic!("g-bad consumed offset {}", rdkafka::Message::offset(&m)),
            Some(Err(e)) => refused = Some(e),
            None => {}
        }
    }
    let e = refused.expect("the consumer in g-bad must get an error");
    assert_eq!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::GroupAuthorizationFailed),
        "{e}"
    );
}

#[test]
fn acls_are_enforced_for_anonymous() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, running) = start(dir.path(), false);
    rt.block_on(phase_one(running.kafka_addrs[0]));
    drop(running);
    rt.shutdown_timeout(Duration::from_secs(5));

    let (rt, running) = start(dir.path(), true);
    rt.block_on(phase_two_protocol(&running));
    let bootstrap = running.kafka_addrs[0].to_string();
    phase_two_librdkafka(&rt, &bootstrap);
    drop(running);
    rt.shutdown_timeout(Duration::from_secs(5));
}
