//! SCRAM credential, ACL and client quota admin APIs with raw protocol requests against a real
//! broker: Kafka's error codes for bad and hostile input, nothing stored by a refusal, only
//! derived keys stored for SCRAM, and the metadata log replays to the same state.

mod common;

use bytes::Bytes;
use fjord_broker::auth::acl::{AclOperation, AclPermission, PatternType, ResourceType};
use fjord_broker::auth::scram::ScramMechanism;
use fjord_broker::metadata::{MetadataImage, MetadataRecord};
use fjord_client::Connection;
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

#[global_allocator]
static ALLOCATOR: fjord_broker::alloc_guard::GuardedAlloc = fjord_broker::alloc_guard::GuardedAlloc;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

const UNSUPPORTED_VERSION: i16 = 35;
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const INVALID_REQUEST: i16 = 42;
const RESOURCE_NOT_FOUND: i16 = 91;
const DUPLICATE_RESOURCE: i16 = 92;
const UNACCEPTABLE_CREDENTIAL: i16 = 93;

fn upsert(
    user: &str,
    mechanism: i8,
    iterations: i32,
    salt: &[u8],
    salted: &[u8],
) -> ScramCredentialUpsertion {
    ScramCredentialUpsertion::default()
        .with_name(s(user))
        .with_mechanism(mechanism)
        .with_iterations(iterations)
        .with_salt(Bytes::copy_from_slice(salt))
        .with_salted_password(Bytes::copy_from_slice(salted))
}

async fn alter_scram(
    c: &mut Connection,
    upsertions: Vec<ScramCredentialUpsertion>,
    deletions: Vec<ScramCredentialDeletion>,
) -> Vec<(String, i16, String)> {
    let req = AlterUserScramCredentialsRequest::default()
        .with_upsertions(upsertions)
        .with_deletions(deletions);
    let r = c.send(&req, 0).await.unwrap();
    r.results
        .into_iter()
        .map(|x| {
            (
                x.user.to_string(),
                x.error_code,
                x.error_message.map(|m| m.to_string()).unwrap_or_default(),
            )
        })
        .collect()
}

fn acl(rt: i8, name: &str, pt: i8, principal: &str, host: &str, op: i8, perm: i8) -> AclCreation {
    AclCreation::default()
        .with_resource_type(rt)
        .with_resource_name(s(name))
        .with_resource_pattern_type(pt)
        .with_principal(s(principal))
        .with_host(s(host))
        .with_operation(op)
        .with_permission_type(perm)
}

async fn create_acls(
    c: &mut Connection,
    v: i16,
    creations: Vec<AclCreation>,
) -> Vec<(i16, String)> {
    let r = c
        .send(&CreateAclsRequest::default().with_creations(creations), v)
        .await
        .unwrap();
    r.results
        .into_iter()
        .map(|x| {
            (
                x.error_code,
                x.error_message.map(|m| m.to_string()).unwrap_or_default(),
            )
        })
        .collect()
}

fn any_filter() -> DescribeAclsRequest {
    // The codec's defaults are empty strings, not nulls: null every string filter explicitly.
    DescribeAclsRequest::default()
        .with_resource_name_filter(None)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_resource_type_filter(1)
        .with_pattern_type_filter(1)
        .with_operation(1)
        .with_permission_type(1)
}

async fn count_acls(c: &mut Connection, f: DescribeAclsRequest) -> (i16, usize) {
    let r = c.send(&f, 3).await.unwrap();
    (r.error_code, r.resources.iter().map(|x| x.acls.len()).sum())
}

fn quota_entry(parts: &[(&str, Option<&str>)], ops: &[(&str, f64, bool)]) -> EntryData {
    EntryData::default()
        .with_entity(
            parts
                .iter()
                .map(|(t, n)| {
                    EntityData::default()
                        .with_entity_type(s(t))
                        .with_entity_name(n.map(s))
                })
                .collect(),
        )
        .with_ops(
            ops.iter()
                .map(|(k, v, r)| {
                    OpData::default()
                        .with_key(s(k))
                        .with_value(*v)
                        .with_remove(*r)
                })
                .collect(),
        )
}

async fn alter_quotas(
    c: &mut Connection,
    entries: Vec<EntryData>,
    validate_only: bool,
) -> Vec<i16> {
    let req = AlterClientQuotasRequest::default()
        .with_entries(entries)
        .with_validate_only(validate_only);
    c.send(&req, 1)
        .await
        .unwrap()
        .entries
        .iter()
        .map(|e| e.error_code)
        .collect()
}

async fn describe_quotas(
    c: &mut Connection,
    comps: &[(&str, i8, Option<&str>)],
    strict: bool,
) -> DescribeClientQuotasResponse {
    let req = DescribeClientQuotasRequest::default()
        .with_strict(strict)
        .with_components(
            comps
                .iter()
                .map(|(t, m, v)| {
                    ComponentData::default()
                        .with_entity_type(s(t))
                        .with_match_type(*m)
                        .with_match(v.map(s))
                })
                .collect(),
        );
    c.send(&req, 1).await.unwrap()
}

/// (user, error code, [(mechanism, iterations)]) from DescribeUserScramCredentials.
type DescribedUser = (String, i16, Vec<(i8, i32)>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_admin_apis() {
    let dir = tempfile::tempdir().unwrap();
    let running = common::start_broker(dir.path(), &[]).await;
    let mut c = Connection::connect(running.kafka_addrs[0]).await.unwrap();

    // ---- SCRAM ----
    let salt = b"0123456789abcdef";
    let salted256 = ScramMechanism::Sha256.salted_password(b"pw", salt, 4096);
    let salted512 = ScramMechanism::Sha512.salted_password(b"pw", salt, 8192);
    let r = alter_scram(
        &mut c,
        vec![upsert("alice", 2, 8192, salt, &salted512)],
        vec![],
    )
    .await;
    assert_eq!(r, vec![("alice".into(), 0, String::new())]);
    let r = alter_scram(
        &mut c,
        vec![upsert("bob", 1, 4096, salt, &salted256)],
        vec![],
    )
    .await;
    assert_eq!(r[0].1, 0);

    let bad = [
        (
            upsert("u1", 1, 4095, salt, &salted256),
            UNACCEPTABLE_CREDENTIAL,
            "Too few iterations",
        ),
        (
            upsert("u2", 1, 16385, salt, &salted256),
            UNACCEPTABLE_CREDENTIAL,
            "Too many iterations",
        ),
        (
            upsert("u3", 1, i32::MAX, salt, &salted256),
            UNACCEPTABLE_CREDENTIAL,
            "Too many",
        ),
        (
            upsert("u4", 1, i32::MIN, salt, &salted256),
            UNACCEPTABLE_CREDENTIAL,
            "Too few",
        ),
        (
            upsert("u5", 1, 4096, b"", &salted256),
            UNACCEPTABLE_CREDENTIAL,
            "Salt",
        ),
        (
            upsert("u6", 1, 4096, salt, b""),
            UNACCEPTABLE_CREDENTIAL,
            "Salted password",
        ),
        (
            upsert("u7", 1, 4096, &[1u8; 100_000], &salted256),
            UNACCEPTABLE_CREDENTIAL,
            "Salt",
        ),
        (
            upsert("u8", 0, 4096, salt, &salted256),
            UNSUPPORTED_SASL_MECHANISM,
            "mechanism",
        ),
        (
            upsert("u9", 3, 4096, salt, &salted256),
            UNSUPPORTED_SASL_MECHANISM,
            "mechanism",
        ),
        (
            upsert("u10", -128, 4096, salt, &salted256),
            UNSUPPORTED_SASL_MECHANISM,
            "mechanism",
        ),
        (
            upsert("", 1, 4096, salt, &salted256),
            UNACCEPTABLE_CREDENTIAL,
            "Username",
        ),
    ];
    for (u, code, text) in bad {
        let user = u.name.to_string();
        let r = alter_scram(&mut c, vec![u], vec![]).await;
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].0.as_str(), r[0].1), (user.as_str(), code), "{r:?}");
        assert!(r[0].2.contains(text), "message {:?} lacks {text:?}", r[0].2);
    }
    // Duplicate user in one request: both mechanisms for carol -> DUPLICATE_RESOURCE, nothing stored.
    let r = alter_scram(
        &mut c,
        vec![
            upsert("carol", 1, 4096, salt, &salted256),
            upsert("carol", 2, 4096, salt, &salted512),
        ],
        vec![],
    )
    .await;
    assert_eq!(
        r,
        vec![(
            "carol".into(),
            DUPLICATE_RESOURCE,
            "A user credential cannot be altered twice in the same request: carol".into()
        )]
    );
    // Deleting what does not exist.
    let del = |u: &str, m: i8| {
        ScramCredentialDeletion::default()
            .with_name(s(u))
            .with_mechanism(m)
    };
    let r = alter_scram(&mut c, vec![], vec![del("alice", 1)]).await;
    assert_eq!(r[0].1, RESOURCE_NOT_FOUND);
    let r = alter_scram(&mut c, vec![], vec![del("nobody", 2)]).await;
    assert_eq!(r[0].1, RESOURCE_NOT_FOUND);

    let describe = |users: Option<Vec<&str>>| {
        DescribeUserScramCredentialsRequest::default().with_users(users.map(|u| {
            u.into_iter()
                .map(|n| UserName::default().with_name(s(n)))
                .collect()
        }))
    };
    let r = c.send(&describe(None), 0).await.unwrap();
    let users: Vec<String> = r.results.iter().map(|x| x.user.to_string()).collect();
    assert_eq!(
        users,
        vec!["alice", "bob"],
        "refused upsertions stored nothing"
    );
    let r = c
        .send(&describe(Some(vec!["alice", "nobody", "bob", "bob"])), 0)
        .await
        .unwrap();
    let got: Vec<DescribedUser> = r
        .results
        .iter()
        .map(|x| {
            (
                x.user.to_string(),
                x.error_code,
                x.credential_infos
                    .iter()
                    .map(|i| (i.mechanism, i.iterations))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("alice".into(), 0, vec![(2, 8192)]),
            ("nobody".into(), RESOURCE_NOT_FOUND, vec![]),
            ("bob".into(), DUPLICATE_RESOURCE, vec![]),
        ]
    );
    let r = alter_scram(&mut c, vec![], vec![del("bob", 1)]).await;
    assert_eq!(r[0].1, 0);

    // ---- ACLs ----
    let ok = acl(2, "orders", 3, "User:alice", "*", 3, 3);
    let r = create_acls(
        &mut c,
        3,
        vec![
            ok.clone(),
            ok.clone(), // idempotent
            acl(2, "ord", 4, "User:alice", "10.0.0.1", 4, 2),
            acl(4, "kafka-cluster", 3, "User:admin", "*", 9, 3),
            acl(3, "grp", 3, "User:alice", "*", 3, 3),
            acl(4, "my-cluster", 3, "User:admin", "*", 9, 3),
            acl(0, "x", 3, "User:a", "*", 3, 3),
            acl(99, "x", 3, "User:a", "*", 3, 3),
            acl(1, "x", 3, "User:a", "*", 3, 3),
            acl(2, "x", 2, "User:a", "*", 3, 3),
            acl(2, "x", 3, "User:a", "*", 1, 3),
            acl(2, "x", 3, "User:a", "*", -1, 3),
            acl(2, "x", 3, "User:a", "*", 3, 1),
            acl(2, "x", 3, "User:a", "*", 3, 77),
            acl(2, "", 3, "User:a", "*", 3, 3),
            acl(2, "x", 3, "alice", "*", 3, 3),
        ],
    )
    .await;
    let codes: Vec<i16> = r.iter().map(|x| x.0).collect();
    assert_eq!(&codes[..5], &[0, 0, 0, 0, 0]);
    assert!(codes[5..].iter().all(|c| *c == INVALID_REQUEST), "{r:?}");
    assert!(r[5].1.contains("kafka-cluster"));
    assert!(r[6].1.contains("resourceType"));
    assert_eq!(count_acls(&mut c, any_filter()).await, (0, 4));
    // The same binding again: still 4.
    create_acls(&mut c, 1, vec![ok.clone()]).await;
    assert_eq!(count_acls(&mut c, any_filter()).await, (0, 4));
    // MATCH on topic "orders": the literal and the "ord" prefix.
    let m = any_filter()
        .with_resource_type_filter(2)
        .with_pattern_type_filter(2)
        .with_resource_name_filter(Some(s("orders")));
    assert_eq!(count_acls(&mut c, m).await, (0, 2));
    let h = any_filter().with_host_filter(Some(s("10.0.0.1")));
    assert_eq!(count_acls(&mut c, h).await, (0, 1));
    assert_eq!(
        count_acls(&mut c, any_filter().with_operation(0)).await.0,
        INVALID_REQUEST
    );
    assert_eq!(
        count_acls(&mut c, any_filter().with_pattern_type_filter(9))
            .await
            .0,
        INVALID_REQUEST
    );

    let filt = |rt: i8, name: Option<&str>, pt: i8, op: i8, perm: i8| {
        DeleteAclsFilter::default()
            .with_principal_filter(None)
            .with_host_filter(None)
            .with_resource_type_filter(rt)
            .with_resource_name_filter(name.map(s))
            .with_pattern_type_filter(pt)
            .with_operation(op)
            .with_permission_type(perm)
    };
    let req = DeleteAclsRequest::default().with_filters(vec![
        filt(3, None, 1, 1, 1),            // the group ACL
        filt(0, None, 1, 1, 1),            // invalid
        filt(1, Some("nothing"), 1, 1, 1), // matches nothing
        filt(3, Some("grp"), 3, 3, 3),     // same group ACL again: reported, removed once
    ]);
    let r = c.send(&req, 3).await.unwrap();
    let summary: Vec<(i16, usize)> = r
        .filter_results
        .iter()
        .map(|f| (f.error_code, f.matching_acls.len()))
        .collect();
    assert_eq!(summary, vec![(0, 1), (INVALID_REQUEST, 0), (0, 0), (0, 1)]);
    let m = &r.filter_results[0].matching_acls[0];
    assert_eq!(
        (
            m.resource_type,
            m.resource_name.as_str(),
            m.principal.as_str(),
            m.operation
        ),
        (3, "grp", "User:alice", 3)
    );
    assert_eq!(count_acls(&mut c, any_filter()).await, (0, 3));

    // ---- Quotas ----
    let codes = alter_quotas(
        &mut c,
        vec![
            quota_entry(
                &[("user", Some("alice"))],
                &[("producer_byte_rate", 1024.0, false)],
            ),
            quota_entry(&[("user", None)], &[("request_percentage", 50.0, false)]),
            quota_entry(
                &[("user", Some("alice")), ("client-id", Some("app"))],
                &[("consumer_byte_rate", 2048.0, false)],
            ),
            quota_entry(&[("user", Some("x"))], &[("bogus_key", 1.0, false)]),
            quota_entry(
                &[("user", Some("x"))],
                &[("producer_byte_rate", f64::NAN, false)],
            ),
            quota_entry(
                &[("user", Some("x"))],
                &[("producer_byte_rate", f64::INFINITY, false)],
            ),
            quota_entry(
                &[("user", Some("x"))],
                &[("producer_byte_rate", 1.5, false)],
            ),
            quota_entry(
                &[("user", Some("x"))],
                &[
                    ("producer_byte_rate", 1.0, false),
                    ("producer_byte_rate", 2.0, false),
                ],
            ),
            quota_entry(&[], &[("producer_byte_rate", 1.0, false)]),
            quota_entry(
                &[("group", Some("g"))],
                &[("producer_byte_rate", 1.0, false)],
            ),
            quota_entry(&[("user", Some(""))], &[("producer_byte_rate", 1.0, false)]),
            quota_entry(
                &[("user", Some("x")), ("ip", None)],
                &[("producer_byte_rate", 1.0, false)],
            ),
        ],
        false,
    )
    .await;
    assert_eq!(&codes[..3], &[0, 0, 0]);
    assert!(
        codes[3..].iter().all(|c| *c == INVALID_REQUEST),
        "{codes:?}"
    );
    // validate_only changes nothing.
    let codes = alter_quotas(
        &mut c,
        vec![quota_entry(
            &[("client-id", Some("vo"))],
            &[("producer_byte_rate", 1.0, false)],
        )],
        true,
    )
    .await;
    assert_eq!(codes, vec![0]);

    let all = describe_quotas(&mut c, &[], false).await;
    assert_eq!(all.error_code, 0);
    assert_eq!(
        all.entries.as_ref().unwrap().len(),
        3,
        "refused and validate-only entries stored nothing"
    );
    assert!(describe_quotas(&mut c, &[], true)
        .await
        .entries
        .unwrap()
        .is_empty());
    let r = describe_quotas(&mut c, &[("user", 0, Some("alice"))], false).await;
    assert_eq!(r.entries.unwrap().len(), 2);
    let r = describe_quotas(&mut c, &[("user", 0, Some("alice"))], true).await;
    let e = r.entries.unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].values[0].key.as_str(), e[0].values[0].value),
        ("producer_byte_rate", 1024.0)
    );
    let r = describe_quotas(&mut c, &[("user", 1, None)], true).await;
    let e = r.entries.unwrap();
    assert_eq!((e.len(), e[0].entity[0].entity_name.is_none()), (1, true));
    assert_eq!(
        describe_quotas(&mut c, &[("user", 7, None)], false)
            .await
            .error_code,
        INVALID_REQUEST
    );
    assert_eq!(
        describe_quotas(&mut c, &[("group", 2, None)], false)
            .await
            .error_code,
        UNSUPPORTED_VERSION
    );
    // Removing the last key removes the entity.
    let codes = alter_quotas(
        &mut c,
        vec![quota_entry(
            &[("user", None)],
            &[("request_percentage", 0.0, true)],
        )],
        false,
    )
    .await;
    assert_eq!(codes, vec![0]);
    assert_eq!(
        describe_quotas(&mut c, &[], false)
            .await
            .entries
            .unwrap()
            .len(),
        2
    );

    // ---- The metadata (quorum) log replays to the same state; no salted password in it ----
    let (img, log) = replay_metadata_log(dir.path());
    let live = running.broker.metadata.snapshot().clone();
    assert_eq!(img.scram, live.scram);
    assert_eq!(img.acls, live.acls);
    assert_eq!(img.quotas, live.quotas);
    assert!(img
        .scram_credential("alice", ScramMechanism::Sha512)
        .is_some());
    assert!(img
        .scram_credential("bob", ScramMechanism::Sha256)
        .is_none());
    assert!(img.acls().any(|b| b.resource_type == ResourceType::Topic
        && b.pattern_type == PatternType::Prefixed
        && b.operation == AclOperation::Write
        && b.permission == AclPermission::Deny
        && b.host == "10.0.0.1"));
    for salted in [&salted256, &salted512] {
        let hex: String = salted.iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            !log.contains(&hex),
            "salted password written to the metadata log"
        );
    }
    assert!(log.contains("stored_key"));
}

/// Replays the metadata quorum's log file (`__fjord_quorum/log.jsonl`: one Raft entry per line,
/// a normal entry's payload being one command, a list of metadata records) into a fresh image;
/// also returns the file's text.
fn replay_metadata_log(data_dir: &std::path::Path) -> (MetadataImage, String) {
    let log = std::fs::read_to_string(data_dir.join("__fjord_quorum/log.jsonl")).unwrap();
    let mut img = MetadataImage::default();
    let mut commands = 0;
    for line in log.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(command) = entry["payload"].get("Normal") {
            let records: Vec<MetadataRecord> = serde_json::from_value(command.clone()).unwrap();
            for r in &records {
                img.apply(r);
            }
            commands += 1;
        }
    }
    assert!(commands > 0, "no metadata command in the quorum log");
    (img, log)
}
