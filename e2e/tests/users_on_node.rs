//! SCRAM-SHA-512 users and ACLs end to end on a real node: a Kafka whose nodeport listener is
//! TLS (broker certificates from the operator's cluster CA) and wants `scram-sha-512` with
//! `authorization: simple`, a KafkaUser whose Secret a librdkafka client on the host logs in
//! with over TLS trusting only the CA in `status.listeners[].certificates` (and `openssl
//! s_client -verify_return_error` checks the chain and the node address; another CA is refused),
//! ACLs that let it write and read its topic and refuse another one.
//!
//! `superUsers: [ANONYMOUS]` is needed today: the operator's admin connection and the brokers'
//! replication connections use the plaintext `REPLICATION` listener (port 9091) and so act as
//! `User:ANONYMOUS`. Without it the Kafka still comes Ready, but the operator cannot create
//! topics (TOPIC_AUTHORIZATION_FAILED) or SCRAM credentials (CLUSTER_AUTHORIZATION_FAILED), and
//! followers would be refused CLUSTER_ACTION. The status says so in the
//! `OperatorHasNoCredentials` Warning. Clients on the SCRAM listener are never ANONYMOUS, so the
//! super user does not widen what they may do (this Kafka has no plaintext client listener).
//! The second scenario pins that behaviour without the super user, so the Warning stays true.

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use common::*;
use fjord_e2e::scenario::Scenario;
use k8s_openapi::api::core::v1::Secret;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;

const KAFKA: &str = r#"apiVersion: kafka.fjord.dev/v1
kind: Kafka
metadata:
  name: my-cluster
spec:
  kafka:
    replicas: 3
    listeners:
      - name: external
        port: 9094
        type: nodeport
        tls: true
        authentication:
          type: scram-sha-512
    authorization:
      type: simple
      superUsers: [ANONYMOUS]
    config:
      default.replication.factor: 3
      min.insync.replicas: 2
      offsets.topic.replication.factor: 3
      auto.create.topics.enable: false
    storage:
      type: ephemeral
"#;

const USER: &str = r#"apiVersion: kafka.fjord.dev/v1
kind: KafkaUser
metadata:
  name: alice
  labels:
    kafka.fjord.dev/cluster: my-cluster
spec:
  authentication:
    type: scram-sha-512
  authorization:
    type: simple
    acls:
      - resource: {type: topic, name: alice-orders, patternType: literal}
        operations: [Write, Describe]
      - resource: {type: topic, name: alice-orders, patternType: literal}
        operations: [Read]
      - resource: {type: group, name: alice-, patternType: prefix}
        operations: [Read]
"#;

/// SCRAM-SHA-512 over TLS, trusting only the cluster CA from the Kafka's status.
fn sasl<'a>(user: &'a str, password: &'a str, ca_file: &'a str) -> [(&'a str, &'a str); 5] {
    [
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanisms", "SCRAM-SHA-512"),
        ("sasl.username", user),
        ("sasl.password", password),
        ("ssl.ca.location", ca_file),
    ]
}

/// The two scenarios run one after the other: side by side on two shared cores (four brokers,
/// two operators) the first one's bounded waits ran out once.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn scram_user_with_acls_produces_and_consumes_from_the_host() {
    let _turn = ONE_AT_A_TIME.lock().await;
    Scenario::run("users-on-node", |s| async move {
        let started = Instant::now();
        s.install_operator().await?;
        apply_yaml(&s, "kafka", KAFKA)?;
        s.wait_kafka_ready("my-cluster", Duration::from_secs(180))
            .await?;
        eprintln!("Kafka Ready after {:?}", started.elapsed());
        ensure!(
            condition(&s, "kafka", "my-cluster", "Warning")? == "True",
            "no Warning condition (OperatorHasNoCredentials) with authorization on"
        );

        apply_yaml(
            &s,
            "topics",
            &format!(
                "{}---\n{}",
                topic_yaml("my-cluster", "alice-orders", 3, 3),
                topic_yaml("my-cluster", "forbidden", 1, 3)
            ),
        )?;
        apply_yaml(&s, "user", USER)?;
        for topic in ["alice-orders", "forbidden"] {
            wait_ready(&s, "kafkatopic", topic, Duration::from_secs(60)).await?;
        }
        wait_ready(&s, "kafkauser", "alice", Duration::from_secs(60)).await?;

        // The Secret the operator wrote for the user.
        let secret = s
            .api::<Secret>()
            .get("alice")
            .await
            .context("Secret alice")?;
        let data = secret.data.unwrap_or_default();
        let text = |key: &str| -> Result<String> {
            let bytes = data
                .get(key)
                .with_context(|| format!("Secret alice has no {key}"))?;
            Ok(String::from_utf8(bytes.0.clone())?)
        };
        let password = text("password")?;
        let jaas = text("sasl.jaas.config")?;
        ensure!(password.len() >= 12, "password too short: {password:?}");
        ensure!(
            jaas.contains("ScramLoginModule")
                && jaas.contains("username=\"alice\"")
                && jaas.contains(&format!("password=\"{password}\"")),
            "sasl.jaas.config does not log in as alice with the Secret's password: {jaas}"
        );

        let bootstrap = s.bootstrap_servers("my-cluster", "external")?;
        // The listener is TLS with certificates from the operator's cluster CA: a client that
        // trusts only the CA in the status verifies the chain and the node's address...
        let ca_file = listener_ca_file(&s, "my-cluster", "external")?;
        let verified = openssl_connect(&bootstrap, &ca_file)?;
        ensure!(verified.contains("Verification: OK"), "{verified}");
        // ...and one that trusts another CA (the clients CA) does not.
        let clients_ca = std::env::temp_dir().join(format!("{}-clients-ca.crt", s.namespace));
        std::fs::write(
            &clients_ca,
            secret_value(&s, "my-cluster-clients-ca-cert", "ca.crt")?,
        )?;
        let refused = openssl_connect(&bootstrap, &clients_ca.display().to_string());
        ensure!(
            refused.is_err(),
            "a client trusting another CA accepted the brokers' certificate"
        );
        let alice = sasl("alice", &password, &ca_file);

        // The user produces (idempotent, acks=all) and consumes in a group it may use.
        let producer = producer(&bootstrap, &alice)?;
        let acked = produce(&producer, "alice-orders", "a", 50).await?;
        ensure!(acked.len() == 50, "{} of 50 acknowledged", acked.len());
        let mut reader = alice.to_vec();
        let group = format!("alice-readers-{}", std::process::id());
        reader.push(("group.id", group.as_str()));
        let seen = consume_all(
            &bootstrap,
            "alice-orders",
            50,
            Duration::from_secs(60),
            &reader,
        )?;
        for value in acked.keys() {
            ensure!(
                seen.get(value) == Some(&1),
                "{value} read {:?} times",
                seen.get(value)
            );
        }
        // Replication works with authorization on: every replica is in sync (followers fetch
        // as the super user).
        let isrs = partition_isrs(&bootstrap, "alice-orders", &alice)?;
        ensure!(
            isrs.values().all(|isr| isr == &vec![0, 1, 2]),
            "alice-orders ISRs {isrs:?}"
        );

        // A wrong password is refused at authentication.
        let wrong = sasl("alice", "not-the-password", &ca_file);
        let (result, errors) = metadata(&bootstrap, None, &wrong, Duration::from_secs(10));
        ensure!(result.is_err(), "metadata with a wrong password succeeded");
        ensure!(
            errors
                .iter()
                .any(|e| e.rdkafka_error_code() == Some(RDKafkaErrorCode::Authentication)),
            "no authentication error reported for a wrong password: {errors:?}"
        );
        // A client without SASL gets nowhere on the SCRAM listener either.
        let (result, _) = metadata(&bootstrap, None, &[], Duration::from_secs(5));
        ensure!(result.is_err(), "a plaintext client got metadata");

        // A topic the user has no ACL for is refused.
        let delivery = producer
            .send(
                FutureRecord::to("forbidden").key("k").payload("v"),
                Duration::from_secs(30),
            )
            .await;
        match delivery {
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed), _)) => {
            }
            Err((error, _)) => bail!(
                "writing to forbidden failed, but not with TOPIC_AUTHORIZATION_FAILED: {error}"
            ),
            Ok(delivered) => bail!(
                "alice wrote to forbidden without an ACL (partition {}, offset {})",
                delivered.partition,
                delivered.offset
            ),
        }
        eprintln!("done after {:?}", started.elapsed());
        Ok(())
    })
    .await;
}

/// The NotReady message of `kind/name` once it mentions `needle`.
async fn wait_not_ready_with(s: &Scenario, kind: &str, name: &str, needle: &str) -> Result<String> {
    let message = std::sync::Mutex::new(String::new());
    fjord_e2e::fixture::poll_until(
        Duration::from_secs(60),
        &format!("{kind} {name} NotReady with {needle}"),
        || async {
            let text = s.kubectl(&[
                "get",
                kind,
                name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"NotReady\")].message}",
            ])?;
            let found = text.contains(needle);
            *message.lock().unwrap() = text;
            Ok(found)
        },
    )
    .await
    .with_context(|| format!("last NotReady message: {:?}", message.lock().unwrap()))?;
    let text = message.lock().unwrap().clone();
    Ok(text)
}

/// Without a super user for the operator's plaintext admin connection, authorization on means the
/// operator may not create topics or SCRAM credentials: the Kafka is Ready with the
/// `OperatorHasNoCredentials` Warning, and topics and users say what the brokers refused.
#[tokio::test]
async fn without_super_users_the_operator_is_refused_and_says_so() {
    let _turn = ONE_AT_A_TIME.lock().await;
    Scenario::run("users-no-super-users", |s| async move {
        s.install_operator().await?;
        let kafka = single_broker(KAFKA).replace("      superUsers: [ANONYMOUS]\n", "");
        ensure!(!kafka.contains("superUsers"), "{kafka}");
        apply_yaml(&s, "kafka", &kafka)?;
        s.wait_kafka_ready("my-cluster", Duration::from_secs(180))
            .await?;
        let warning = s.kubectl(&[
            "get",
            "kafka",
            "my-cluster",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Warning\")].reason}",
        ])?;
        ensure!(
            warning.contains("OperatorHasNoCredentials"),
            "Warning reasons {warning:?}"
        );
        apply_yaml(&s, "topic", &topic_yaml("my-cluster", "alice-orders", 1, 1))?;
        apply_yaml(&s, "user", USER)?;
        let topic = wait_not_ready_with(
            &s,
            "kafkatopic",
            "alice-orders",
            "TOPIC_AUTHORIZATION_FAILED",
        )
        .await?;
        let user =
            wait_not_ready_with(&s, "kafkauser", "alice", "CLUSTER_AUTHORIZATION_FAILED").await?;
        eprintln!("KafkaTopic: {topic}\nKafkaUser: {user}");
        // The operator cannot delete them at the brokers either; without the Kafka it lets
        // them go, so the namespace is cleaned up at once.
        s.kubectl(&[
            "delete",
            "kafka",
            "my-cluster",
            "--wait=true",
            "--timeout=60s",
        ])?;
        Ok(())
    })
    .await;
}
