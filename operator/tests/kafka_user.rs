//! The KafkaUser reconciler against the real control plane and a real fjord broker, checked with
//! Apache Kafka's own CLI (`kafka-acls`, `kafka-configs`): SCRAM credential, Secret, ACLs and
//! quotas are created, converge after edits (including an ACL added behind the operator's back),
//! and are removed when the KafkaUser is deleted. A password Secret that does not exist makes the
//! user NotReady and changes nothing on the broker until it appears.
//!
//! SASL login is not implemented in the broker yet, so the credential is checked by deriving
//! StoredKey/ServerKey from the Secret's password with the broker's own SCRAM code.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::{ensure, Context as _, Result};
use fjord_broker::auth::scram::{ScramCredential, ScramMechanism};
use fjord_broker::state::Broker;
use fjord_e2e::fixture::{poll_until, TestNamespace};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;
use support::*;

/// A real broker in this process, keeping the handle so the test can read what it stores.
struct Broker1 {
    address: String,
    broker: Arc<Broker>,
    _data: tempfile::TempDir,
}

async fn start_local_broker() -> Result<Broker1> {
    let data = tempfile::tempdir()?;
    let overrides = vec![
        (
            "listeners".to_string(),
            "PLAINTEXT://127.0.0.1:0".to_string(),
        ),
        ("admin.listener".to_string(), "127.0.0.1:0".to_string()),
        ("log.dirs".to_string(), data.path().display().to_string()),
    ];
    let (config, _unknown) = fjord_broker::config::Config::load(None, &overrides)?;
    let running = fjord_broker::start(config).await?;
    Ok(Broker1 {
        address: running.kafka_addrs[0].to_string(),
        broker: running.broker,
        _data: data,
    })
}

/// A one-broker `Kafka` whose admin connection goes to `address`.
async fn apply_kafka(ns: &TestNamespace, address: &str) -> Result<()> {
    apply_yaml(
        ns,
        &format!(
            r#"
apiVersion: kafka.fjord.dev/v1
kind: Kafka
metadata:
  name: my-cluster
  annotations:
    kafka.fjord.dev/admin-bootstrap: "{address}"
spec:
  kafka:
    replicas: 1
    listeners: [{{name: plain, port: 9092, type: internal, tls: false}}]
    storage: {{type: ephemeral}}
"#
        ),
    )
    .await?;
    Ok(())
}

/// Runs a Kafka CLI tool off the async runtime (the broker under test is served by it).
async fn cli(tool: &'static str, args: &[&str]) -> Result<String> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kafka_cli(tool, &args)
    })
    .await?
}

/// `kafka-acls --list --principal <p>` as a set of `TYPE:name:PATTERN host OPERATION PERMISSION`.
async fn cli_acls(bootstrap: &str, principal: &str) -> Result<BTreeSet<String>> {
    let out = cli(
        "kafka-acls",
        &[
            "--bootstrap-server",
            bootstrap,
            "--list",
            "--principal",
            principal,
        ],
    )
    .await?;
    parse_acl_listing(&out, principal)
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(&format!("{key}="))? + key.len() + 1;
    let rest = &text[start..];
    let end = rest.find([',', ')']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

fn parse_acl_listing(out: &str, principal: &str) -> Result<BTreeSet<String>> {
    let mut resource = None;
    let mut acls = BTreeSet::new();
    for line in out.lines() {
        if line.contains("ResourcePattern(") {
            resource = Some(format!(
                "{}:{}:{}",
                field(line, "resourceType").context(line.to_string())?,
                field(line, "name").context(line.to_string())?,
                field(line, "patternType").context(line.to_string())?
            ));
        } else if line.trim_start().starts_with("(principal=") {
            ensure!(
                field(line, "principal") == Some(principal),
                "kafka-acls listed another principal: {line}"
            );
            acls.insert(format!(
                "{} {} {} {}",
                resource.clone().context("an ACL before any resource")?,
                field(line, "host").context(line.to_string())?,
                field(line, "operation").context(line.to_string())?,
                field(line, "permissionType").context(line.to_string())?
            ));
        }
    }
    Ok(acls)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `kafka-configs --describe --entity-type users --entity-name <user>`.
async fn cli_user_configs(bootstrap: &str, user: &str) -> Result<String> {
    cli(
        "kafka-configs",
        &[
            "--bootstrap-server",
            bootstrap,
            "--describe",
            "--entity-type",
            "users",
            "--entity-name",
            user,
        ],
    )
    .await
}

fn secret_text(secret: &Secret, key: &str) -> Result<String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .with_context(|| format!("Secret has no key {key}"))?;
    Ok(String::from_utf8(bytes.0.clone())?)
}

/// The broker's stored SHA-512 credential of `user`.
fn stored_credential(broker: &Broker, user: &str) -> Option<ScramCredential> {
    broker
        .metadata
        .snapshot()
        .scram_credential(user, ScramMechanism::Sha512)
        .cloned()
}

/// The stored keys are exactly what `password` yields with the stored salt and iterations,
/// computed with the broker's own SCRAM implementation (independent of the operator's PBKDF2).
fn credential_matches(stored: &ScramCredential, password: &str) -> bool {
    let salted = ScramMechanism::Sha512.salted_password(
        password.as_bytes(),
        &stored.salt,
        stored.iterations as u32,
    );
    ScramCredential::derive(
        ScramMechanism::Sha512,
        &stored.salt,
        &salted,
        stored.iterations,
    ) == *stored
}

fn status_generation(obj: &DynamicObject) -> Option<i64> {
    obj.data["status"]["observedGeneration"].as_i64()
}

/// Waits until the user is Ready for metadata.generation `generation`; on timeout the error
/// carries the last status seen.
async fn wait_ready_generation(
    users: &kube::Api<DynamicObject>,
    name: &str,
    generation: i64,
) -> Result<DynamicObject> {
    let what = format!("KafkaUser {name} Ready at generation {generation}");
    let waited =
        poll_until(WAIT, &what, || async {
            let u = users.get(name).await?;
            Ok(status_generation(&u) == Some(generation)
                && find_condition(&u, "Ready", None).is_some())
        })
        .await;
    let last = users.get(name).await?;
    waited.with_context(|| format!("last status: {}", last.data["status"]))?;
    Ok(last)
}

const ALICE: &str = r#"
apiVersion: kafka.fjord.dev/v1
kind: KafkaUser
metadata:
  name: alice
  labels: {kafka.fjord.dev/cluster: my-cluster}
spec:
  authentication: {type: scram-sha-512}
  authorization:
    type: simple
    acls:
      - resource: {type: topic, name: orders, patternType: literal}
        operations: [Read, Describe]
      - resource: {type: group, name: orders-, patternType: prefix}
        operations: [Read]
      - resource: {type: topic, name: orders}
        operations: [Write]
        type: deny
  quotas:
    producerByteRate: 1048576
    consumerByteRate: 2097152
"#;

/// Edited: the group rule is gone, the producer quota changed, the consumer quota removed.
const ALICE_EDITED: &str = r#"
apiVersion: kafka.fjord.dev/v1
kind: KafkaUser
metadata:
  name: alice
  labels: {kafka.fjord.dev/cluster: my-cluster}
spec:
  authentication: {type: scram-sha-512}
  authorization:
    type: simple
    acls:
      - resource: {type: topic, name: orders, patternType: literal}
        operations: [Read, Describe]
      - resource: {type: topic, name: orders}
        operations: [Write]
        type: deny
  quotas:
    producerByteRate: 524288
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_credential_secret_acls_and_quotas_converge_and_are_removed() {
    TestNamespace::run("kafka-user", |ns| async move {
        let started = std::time::Instant::now();
        install_crds(&ns.client).await?;
        let broker = start_local_broker().await?;
        let bootstrap = broker.address.clone();
        apply_kafka(&ns, &bootstrap).await?;
        let _operator = start_operator(&ns);
        apply_yaml(&ns, ALICE).await?;

        // Ready, with the status naming user and Secret.
        let users = fjord_api(&ns, "KafkaUser");
        let alice = wait_ready_generation(&users, "alice", 1).await?;
        eprintln!("[{:.1?}] alice Ready", started.elapsed());
        let status = &alice.data["status"];
        ensure!(status["username"] == "alice", "{status}");
        ensure!(status["secret"] == "alice", "{status}");
        ensure!(
            alice.metadata.finalizers.as_deref() == Some(&["kafka.fjord.dev/user".to_string()]),
            "finalizer missing: {:?}",
            alice.metadata.finalizers
        );

        // The Secret: generated password, JAAS line, cluster label, owned by the KafkaUser.
        let secrets = ns.api::<Secret>();
        let secret = secrets.get("alice").await?;
        let password = secret_text(&secret, "password")?;
        ensure!(
            password.len() == 32 && password.chars().all(|c| c.is_ascii_alphanumeric()),
            "generated password should be 32 alphanumerics, got {} chars",
            password.len()
        );
        ensure!(
            secret_text(&secret, "sasl.jaas.config")?
                == format!(
                    "org.apache.kafka.common.security.scram.ScramLoginModule required \
                     username=\"alice\" password=\"{password}\";"
                )
        );
        ensure!(
            secret
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kafka.fjord.dev/cluster"))
                .map(String::as_str)
                == Some("my-cluster")
        );
        let owner = &secret.metadata.owner_references.clone().unwrap_or_default()[0];
        ensure!(
            owner.kind == "KafkaUser"
                && owner.name == "alice"
                && Some(&owner.uid) == alice.metadata.uid.as_ref(),
            "{owner:?}"
        );

        // The broker holds a credential derived from exactly that password.
        let stored = stored_credential(&broker.broker, "alice").context("no SCRAM credential")?;
        ensure!(stored.iterations == 4096);
        ensure!(
            credential_matches(&stored, &password),
            "the broker's credential does not come from the Secret's password"
        );
        ensure!(!credential_matches(&stored, "not-the-password"));

        // Kafka's own tools see the ACLs, the credential and the quotas.
        let want = set(&[
            "TOPIC:orders:LITERAL * READ ALLOW",
            "TOPIC:orders:LITERAL * DESCRIBE ALLOW",
            "TOPIC:orders:LITERAL * WRITE DENY",
            "GROUP:orders-:PREFIXED * READ ALLOW",
        ]);
        let got = cli_acls(&bootstrap, "User:alice").await?;
        ensure!(got == want, "kafka-acls lists {got:#?}, expected {want:#?}");
        let configs = cli_user_configs(&bootstrap, "alice").await?;
        eprintln!("kafka-configs --describe:\n{configs}");
        ensure!(
            configs.contains("SCRAM-SHA-512=iterations=4096"),
            "kafka-configs: {configs}"
        );
        ensure!(
            configs.contains("producer_byte_rate=1048576.0")
                && configs.contains("consumer_byte_rate=2097152.0"),
            "kafka-configs: {configs}"
        );
        eprintln!(
            "[{:.1?}] first state checked with the CLI",
            started.elapsed()
        );

        // An ACL added behind the operator's back, then an edit: both converge exactly.
        cli(
            "kafka-acls",
            &[
                "--bootstrap-server",
                &bootstrap,
                "--add",
                "--allow-principal",
                "User:alice",
                "--operation",
                "Alter",
                "--topic",
                "sneaky",
            ],
        )
        .await?;
        // kafka-acls exits non-zero when CreateAcls reports an error, so the ACL was stored. It
        // is not listed again here: any reconcile of alice (a watch event, a resync) may already
        // have removed it, which is exactly the behaviour under test.
        apply_yaml(&ns, ALICE_EDITED).await?;
        wait_ready_generation(&users, "alice", 2).await?;
        let want = set(&[
            "TOPIC:orders:LITERAL * READ ALLOW",
            "TOPIC:orders:LITERAL * DESCRIBE ALLOW",
            "TOPIC:orders:LITERAL * WRITE DENY",
        ]);
        let got = cli_acls(&bootstrap, "User:alice").await?;
        ensure!(
            got == want,
            "after the edit kafka-acls lists {got:#?}, expected {want:#?}"
        );
        let configs = cli_user_configs(&bootstrap, "alice").await?;
        ensure!(
            configs.contains("producer_byte_rate=524288.0")
                && !configs.contains("consumer_byte_rate"),
            "after the edit kafka-configs: {configs}"
        );
        // The password is kept and the credential was not rewritten (same salt).
        let secret = secrets.get("alice").await?;
        ensure!(
            secret_text(&secret, "password")? == password,
            "password changed"
        );
        ensure!(
            stored_credential(&broker.broker, "alice").as_ref() == Some(&stored),
            "the credential was rewritten although the password did not change"
        );
        eprintln!("[{:.1?}] edit converged", started.elapsed());

        // Deletion removes everything from the broker, then releases the finalizer.
        users.delete("alice", &DeleteParams::default()).await?;
        poll_until(WAIT, "KafkaUser alice to be gone", || async {
            Ok(users.get_opt("alice").await?.is_none())
        })
        .await?;
        ensure!(stored_credential(&broker.broker, "alice").is_none());
        let got = cli_acls(&bootstrap, "User:alice").await?;
        ensure!(got.is_empty(), "ACLs left after deletion: {got:?}");
        let configs = cli_user_configs(&bootstrap, "alice").await?;
        ensure!(
            !configs.contains("SCRAM-SHA-512") && !configs.contains("byte_rate"),
            "left after deletion: {configs}"
        );
        ensure!(
            secrets.get_opt("alice").await?.is_none(),
            "Secret alice still exists"
        );
        eprintln!("[{:.1?}] deletion cleaned up", started.elapsed());
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_password_secret_is_not_ready_until_it_appears() {
    TestNamespace::run("kafka-user-pw", |ns| async move {
        install_crds(&ns.client).await?;
        let broker = start_local_broker().await?;
        apply_kafka(&ns, &broker.address).await?;
        let _operator = start_operator(&ns);
        apply_yaml(
            &ns,
            r#"
apiVersion: kafka.fjord.dev/v1
kind: KafkaUser
metadata:
  name: bob
  labels: {kafka.fjord.dev/cluster: my-cluster}
spec:
  authentication:
    type: scram-sha-512
    password:
      valueFrom:
        secretKeyRef: {name: bob-password, key: pw}
  authorization:
    type: simple
    acls:
      - resource: {type: topic, name: payments}
        operations: [Read]
"#,
        )
        .await?;

        let users = fjord_api(&ns, "KafkaUser");
        let bob = wait_condition(&users, "bob", "NotReady", Some("PasswordSecretNotFound")).await?;
        let condition = find_condition(&bob, "NotReady", None).unwrap_or_default();
        let message = condition["message"].as_str().unwrap_or_default();
        ensure!(
            message.contains("Secret bob-password") && message.contains("does not exist"),
            "unclear message: {message}"
        );
        // Nothing was done on the broker, and no user Secret was written.
        ensure!(stored_credential(&broker.broker, "bob").is_none());
        ensure!(
            broker
                .broker
                .metadata
                .snapshot()
                .acls()
                .all(|b| b.principal != "User:bob"),
            "ACLs were created although the user is NotReady"
        );
        ensure!(ns.api::<Secret>().get_opt("bob").await?.is_none());

        // The Secret appears: the user becomes Ready with that password.
        let source: Secret = serde_json::from_value(json!({
            "metadata": {"name": "bob-password"},
            "stringData": {"pw": "correct horse battery staple"}
        }))?;
        ns.api::<Secret>()
            .create(&PostParams::default(), &source)
            .await?;
        wait_condition(&users, "bob", "Ready", None).await?;
        let stored = stored_credential(&broker.broker, "bob").context("no credential")?;
        ensure!(credential_matches(&stored, "correct horse battery staple"));
        let secret = ns.api::<Secret>().get("bob").await?;
        ensure!(secret_text(&secret, "password")? == "correct horse battery staple");

        // Rotating the referenced password updates the credential (on the next reconcile,
        // here triggered by touching the KafkaUser).
        ns.api::<Secret>()
            .patch(
                "bob-password",
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {"pw": "tr0ub4dor&3"}})),
            )
            .await?;
        users
            .patch(
                "bob",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"touch": "1"}}})),
            )
            .await?;
        poll_until(
            WAIT,
            "bob's credential to follow the new password",
            || async {
                Ok(stored_credential(&broker.broker, "bob")
                    .is_some_and(|c| credential_matches(&c, "tr0ub4dor&3")))
            },
        )
        .await?;
        poll_until(WAIT, "bob's Secret to hold the new password", || async {
            let s = ns.api::<Secret>().get("bob").await?;
            Ok(secret_text(&s, "password")? == "tr0ub4dor&3")
        })
        .await?;

        // Authentication removed from the spec: credential and Secret go, the ACL stays.
        apply_yaml(
            &ns,
            r#"
apiVersion: kafka.fjord.dev/v1
kind: KafkaUser
metadata:
  name: bob
  labels: {kafka.fjord.dev/cluster: my-cluster}
spec:
  authorization:
    type: simple
    acls:
      - resource: {type: topic, name: payments}
        operations: [Read]
"#,
        )
        .await?;
        let bob = wait_ready_generation(&users, "bob", 2).await?;
        ensure!(
            bob.data["status"].get("secret").is_none(),
            "status still names a Secret: {}",
            bob.data["status"]
        );
        ensure!(stored_credential(&broker.broker, "bob").is_none());
        ensure!(ns.api::<Secret>().get_opt("bob").await?.is_none());
        ensure!(
            ns.api::<Secret>().get_opt("bob-password").await?.is_some(),
            "the user's own password Secret must not be touched"
        );
        let acls: Vec<String> = broker
            .broker
            .metadata
            .snapshot()
            .acls()
            .filter(|b| b.principal == "User:bob")
            .map(|b| format!("{b:?}"))
            .collect();
        ensure!(acls.len() == 1, "bob's ACLs: {acls:?}");
        Ok(())
    })
    .await;
}
