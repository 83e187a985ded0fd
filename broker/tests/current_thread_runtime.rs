//! A broker embedded in a current-thread tokio runtime answers metadata-changing requests.
//! Every metadata change is a quorum write the handler awaits; a synchronous wait for it
//! (`block_in_place`) is impossible on such a runtime, so with one the requests below failed
//! (UNKNOWN_SERVER_ERROR / "need the multi-thread runtime"). With a single thread this also
//! shows no handler blocks the only worker while its write goes through Raft: the quorum runs
//! on that same thread.

mod common;

use bytes::Bytes;
use fjord_broker::auth::scram::ScramMechanism;
use fjord_client::Connection;
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

#[global_allocator]
static ALLOCATOR: fjord_broker::alloc_guard::GuardedAlloc = fjord_broker::alloc_guard::GuardedAlloc;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

#[test]
fn metadata_changes_on_a_current_thread_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(metadata_changes());
}

async fn metadata_changes() {
    let dir = tempfile::tempdir().unwrap();
    let running = common::start_broker(dir.path(), &[]).await;
    let broker = running.broker.clone();
    let mut c = Connection::connect(running.kafka_addrs[0]).await.unwrap();

    // CreateTopics, CreatePartitions, IncrementalAlterConfigs.
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(s("t")))
            .with_num_partitions(1)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    let r = c.send(&req, 5).await.unwrap();
    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
    let req = CreatePartitionsRequest::default()
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(TopicName(s("t")))
            .with_count(2)])
        .with_timeout_ms(5000);
    let r = c.send(&req, 1).await.unwrap();
    assert_eq!(
        r.results[0].error_code, 0,
        "{:?}",
        r.results[0].error_message
    );
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s("t"))
            .with_configs(vec![AlterableConfig::default()
                .with_name(s("retention.ms"))
                .with_config_operation(0)
                .with_value(Some(s("3600000")))]),
    ]);
    let r = c.send(&req, 0).await.unwrap();
    assert_eq!(
        r.responses[0].error_code, 0,
        "{:?}",
        r.responses[0].error_message
    );
    {
        let img = broker.metadata.snapshot();
        let t = img.topics.get("t").expect("topic t created");
        assert_eq!(t.partitions.len(), 2);
        assert_eq!(
            t.configs.get("retention.ms").map(String::as_str),
            Some("3600000")
        );
    }

    // CreateAcls, AlterUserScramCredentials, AlterClientQuotas.
    let req = CreateAclsRequest::default().with_creations(vec![AclCreation::default()
        .with_resource_type(2)
        .with_resource_name(s("t"))
        .with_resource_pattern_type(3)
        .with_principal(s("User:alice"))
        .with_host(s("*"))
        .with_operation(3)
        .with_permission_type(3)]);
    let r = c.send(&req, 1).await.unwrap();
    assert_eq!(
        r.results[0].error_code, 0,
        "{:?}",
        r.results[0].error_message
    );
    let salt = b"0123456789abcdef";
    let salted = ScramMechanism::Sha256.salted_password(b"pw", salt, 4096);
    let req = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
        ScramCredentialUpsertion::default()
            .with_name(s("alice"))
            .with_mechanism(1)
            .with_iterations(4096)
            .with_salt(Bytes::copy_from_slice(salt))
            .with_salted_password(Bytes::copy_from_slice(&salted)),
    ]);
    let r = c.send(&req, 0).await.unwrap();
    assert_eq!(
        r.results[0].error_code, 0,
        "{:?}",
        r.results[0].error_message
    );
    let req = AlterClientQuotasRequest::default().with_entries(vec![EntryData::default()
        .with_entity(vec![EntityData::default()
            .with_entity_type(s("user"))
            .with_entity_name(Some(s("alice")))])
        .with_ops(vec![OpData::default()
            .with_key(s("producer_byte_rate"))
            .with_value(1024.0)])]);
    let r = c.send(&req, 1).await.unwrap();
    assert_eq!(
        r.entries[0].error_code, 0,
        "{:?}",
        r.entries[0].error_message
    );
    {
        let img = broker.metadata.snapshot();
        assert_eq!(img.acls().count(), 1);
        assert!(img
            .scram_credential("alice", ScramMechanism::Sha256)
            .is_some());
        assert_eq!(img.quotas.len(), 1);
    }

    // InitProducerId reserves a block of producer ids through the quorum.
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000);
    let r = c.send(&req, 4).await.unwrap();
    assert_eq!(r.error_code, 0);
    assert!(r.producer_id.0 >= 0);

    // OffsetCommit answers once the offsets are in the quorum; OffsetFetch reads them back.
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(s(""))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(1)
                .with_committed_offset(42)])]);
    let r = c.send(&req, 8).await.unwrap();
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    assert!(broker.metadata.snapshot().group_offsets.contains_key("g"));
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partition_indexes(vec![1])]));
    let r = c.send(&req, 7).await.unwrap();
    assert_eq!(r.error_code, 0);
    assert_eq!(r.topics[0].partitions[0].committed_offset, 42);

    // DeleteGroups and DeleteTopics.
    let req = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("g"))]);
    let r = c.send(&req, 2).await.unwrap();
    assert_eq!(r.results[0].error_code, 0);
    assert!(broker.groups.committed("g").is_empty());
    let req = DeleteTopicsRequest::default()
        .with_topics(vec![
            DeleteTopicState::default().with_name(Some(TopicName(s("t"))))
        ])
        .with_timeout_ms(5000);
    let r = c.send(&req, 6).await.unwrap();
    assert_eq!(
        r.responses[0].error_code, 0,
        "{:?}",
        r.responses[0].error_message
    );
    assert!(!broker.metadata.snapshot().topics.contains_key("t"));

    drop(c);
    assert_eq!(broker.shutdown().await, 0, "every task ended");
}
