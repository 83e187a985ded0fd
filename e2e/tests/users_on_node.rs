//! Security end to end on a real node (issue 15), in a namespace that enforces the `restricted`
//! Pod Security Standard: a 3-broker Kafka with `authorization: simple` and no `superUsers`,
//! a TLS+SCRAM internal listener, a TLS+SCRAM nodeport listener and a mutual-TLS nodeport
//! listener.
//!
//! - It comes Ready without any super user of the user's: the brokers replicate and the
//!   operator administers over mutual TLS with certificates from the cluster CA, as principals
//!   the operator puts in `super.users` itself (an RF-3, min-ISR-2 topic takes `acks=all`
//!   writes with every replica in sync).
//! - A SCRAM user and a TLS user (client certificate from the clients CA, principal
//!   `User:CN=bob`) produce and consume from the host through the nodeport listeners, trusting
//!   only the CA from the status (`openssl s_client -verify_return_error` against the
//!   bootstrap), and are refused on a topic their ACLs do not allow; a wrong password or a
//!   missing client certificate gets nowhere. Apache Kafka's own Java tools connect with the
//!   PKCS#12 stores (`user.p12`, `ca.p12`).
//! - The replication (9091) and controller (9090) ports, probed from the node's network (the
//!   host is not a broker: it has no broker certificate): a plaintext Kafka request gets no
//!   answer, and a TLS handshake without a certificate or with a KafkaUser's certificate is
//!   refused, while the operator's certificate gets through (so the refusals are about the
//!   certificate). The NetworkPolicy that would also keep such clients out exists; the local
//!   node's bridge CNI does not enforce NetworkPolicies, so only mutual TLS is tested here.
//! - Forcing a cluster CA renewal (`kafka.fjord.dev/force-renew`) rolls every broker while a
//!   TLS user keeps producing and consuming; nothing acknowledged is lost and a client that
//!   trusts the new CA certificate works.
//! - Replacing the cluster CA's key (`kafka.fjord.dev/force-replace`) goes through its three
//!   rolls while a TLS user that trusts the published bundle keeps producing and consuming;
//!   nothing acknowledged is lost, the old certificate is no longer accepted afterwards, and the
//!   operator (whose certificate was re-issued) still administers the cluster.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use common::load::Load;
use common::*;
use fjord_e2e::fixture::poll_until;
use fjord_e2e::scenario::Scenario;
use k8s_openapi::api::core::v1::{Pod, Secret};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};

const KAFKA: &str = r#"apiVersion: kafka.fjord.dev/v1
kind: Kafka
metadata:
  name: my-cluster
spec:
  kafka:
    replicas: 3
    listeners:
      - name: internal
        port: 9093
        type: internal
        tls: true
        authentication:
          type: scram-sha-512
      - name: external
        port: 9094
        type: nodeport
        tls: true
        authentication:
          type: scram-sha-512
      - name: mtls
        port: 9095
        type: nodeport
        tls: true
        authentication:
          type: tls
    authorization:
      type: simple
    config:
      default.replication.factor: 3
      min.insync.replicas: 2
      offsets.topic.replication.factor: 3
      auto.create.topics.enable: false
    # Persistent: brokers keep their metadata log across the rolls below (a voter restarted on
    # an empty emptyDir must rejoin from the leader; see the quorum notes in issue 15).
    storage:
      type: persistent-claim
      size: 1Gi
      deleteClaim: true
"#;

const USERS: &str = r#"apiVersion: kafka.fjord.dev/v1
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
---
apiVersion: kafka.fjord.dev/v1
kind: KafkaUser
metadata:
  name: bob
  labels:
    kafka.fjord.dev/cluster: my-cluster
spec:
  authentication:
    type: tls
  authorization:
    type: simple
    acls:
      - resource: {type: topic, name: bob-, patternType: prefix}
        operations: [Write, Describe, Read, DescribeConfigs]
      - resource: {type: group, name: bob-, patternType: prefix}
        operations: [Read]
"#;

/// SCRAM-SHA-512 over TLS, trusting only `ca_file`.
fn sasl<'a>(user: &'a str, password: &'a str, ca_file: &'a str) -> [(&'a str, &'a str); 5] {
    [
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanisms", "SCRAM-SHA-512"),
        ("sasl.username", user),
        ("sasl.password", password),
        ("ssl.ca.location", ca_file),
    ]
}

/// Mutual TLS with the certificate and key in `files`, trusting only `ca_file`.
fn mtls<'a>(files: &'a (String, String), ca_file: &'a str) -> [(&'a str, &'a str); 4] {
    [
        ("security.protocol", "SSL"),
        ("ssl.ca.location", ca_file),
        ("ssl.certificate.location", files.0.as_str()),
        ("ssl.key.location", files.1.as_str()),
    ]
}

/// Bytes of one key of a Secret (binary keys such as `user.p12` included).
async fn secret_bytes(s: &Scenario, secret: &str, key: &str) -> Result<Vec<u8>> {
    let found = s
        .api::<Secret>()
        .get(secret)
        .await
        .with_context(|| format!("Secret {secret}"))?;
    let data = found.data.unwrap_or_default();
    let value = data
        .get(key)
        .with_context(|| format!("Secret {secret} has no {key}"))?;
    Ok(value.0.clone())
}

/// Writes `bytes` to a file of the scenario's own in the temp directory; its path.
fn temp_file(s: &Scenario, name: &str, bytes: &[u8]) -> Result<String> {
    let path = std::env::temp_dir().join(format!("{}-{name}", s.namespace));
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.display().to_string())
}

/// A certificate and key from a Secret, written to files: (certificate, key).
async fn cert_files(s: &Scenario, secret: &str, crt: &str, key: &str) -> Result<(String, String)> {
    Ok((
        temp_file(
            s,
            &format!("{secret}-{crt}"),
            &secret_bytes(s, secret, crt).await?,
        )?,
        temp_file(
            s,
            &format!("{secret}-{key}"),
            &secret_bytes(s, secret, key).await?,
        )?,
    ))
}

/// Sends one record to `topic` and expects TOPIC_AUTHORIZATION_FAILED.
async fn refused_on(producer: &FutureProducer, who: &str, topic: &str) -> Result<()> {
    let delivery = producer
        .send(
            FutureRecord::to(topic).key("k").payload("v"),
            Duration::from_secs(30),
        )
        .await;
    match delivery {
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed), _)) => {
            Ok(())
        }
        Err((error, _)) => {
            bail!(
                "{who} writing to {topic} failed, but not with TOPIC_AUTHORIZATION_FAILED: {error}"
            )
        }
        Ok(delivered) => bail!(
            "{who} wrote to {topic} without an ACL (partition {}, offset {})",
            delivered.partition,
            delivered.offset
        ),
    }
}

/// Produces 50 records as `who` and reads them back in a group of its own.
async fn produce_and_consume(
    bootstrap: &str,
    topic: &str,
    group: &str,
    security: &[(&str, &str)],
) -> Result<FutureProducer> {
    let producer = producer(bootstrap, security)?;
    let acked = produce(&producer, topic, "a", 50).await?;
    ensure!(acked.len() == 50, "{} of 50 acknowledged", acked.len());
    let mut reader = security.to_vec();
    reader.push(("group.id", group));
    let seen = consume_all(bootstrap, topic, 50, Duration::from_secs(60), &reader)?;
    for value in acked.keys() {
        ensure!(
            seen.get(value) == Some(&1),
            "{value} read {:?} times from {topic}",
            seen.get(value)
        );
    }
    Ok(producer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_and_tls_users_on_a_cluster_whose_own_ports_take_only_its_certificates() {
    Scenario::run("users-on-node", |s| async move {
        let started = Instant::now();
        s.install_operator().await?;
        apply_yaml(&s, "kafka", KAFKA)?;
        s.wait_kafka_ready("my-cluster", Duration::from_secs(240))
            .await?;
        eprintln!("Kafka Ready after {:?}", started.elapsed());
        let warnings = s.kubectl(&[
            "get",
            "kafka",
            "my-cluster",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Warning\")].reason}",
        ])?;
        ensure!(
            warnings.is_empty(),
            "Warnings with authorization on: {warnings}"
        );

        apply_yaml(
            &s,
            "topics",
            &format!(
                "{}---\n{}---\n{}---\n{}",
                topic_yaml("my-cluster", "alice-orders", 3, 3),
                topic_yaml("my-cluster", "bob-orders", 3, 3),
                topic_yaml("my-cluster", "bob-replaced", 3, 3),
                topic_yaml("my-cluster", "forbidden", 1, 3)
            ),
        )?;
        apply_yaml(&s, "users", USERS)?;
        for topic in ["alice-orders", "bob-orders", "bob-replaced", "forbidden"] {
            wait_ready(&s, "kafkatopic", topic, Duration::from_secs(90)).await?;
        }
        for user in ["alice", "bob"] {
            wait_ready(&s, "kafkauser", user, Duration::from_secs(90)).await?;
        }
        eprintln!("topics and users Ready after {:?}", started.elapsed());

        // The Secrets the operator wrote: alice's password, bob's certificate (CN=bob, signed
        // by the clients CA) in PEM and PKCS#12.
        let password = secret_value(&s, "alice", "password")?;
        let jaas = secret_value(&s, "alice", "sasl.jaas.config")?;
        ensure!(password.len() >= 12, "password too short: {password:?}");
        ensure!(
            jaas.contains("username=\"alice\"") && jaas.contains(&password),
            "sasl.jaas.config does not log in as alice: {jaas}"
        );
        let keys = secret_keys(&s, "bob")?;
        for key in [
            "ca.crt",
            "user.crt",
            "user.key",
            "user.p12",
            "user.password",
        ] {
            ensure!(keys.iter().any(|k| k == key), "Secret bob has {keys:?}");
        }
        let bob_crt = secret_value(&s, "bob", "user.crt")?;
        let subject = openssl_x509(
            &bob_crt,
            &["-noout", "-subject", "-issuer", "-nameopt", "RFC2253"],
        )?;
        ensure!(
            subject.contains("subject=CN=bob\n") && subject.contains("clients-ca my-cluster"),
            "bob's certificate: {subject}"
        );
        let clients_ca = temp_file(
            &s,
            "clients-ca.crt",
            &secret_bytes(&s, "my-cluster-clients-ca-cert", "ca.crt").await?,
        )?;
        let user_chain = temp_file(&s, "bob-user.crt", bob_crt.as_bytes())?;
        let verified = std::process::Command::new("openssl")
            .args(["verify", "-CAfile", &clients_ca, &user_chain])
            .output()?;
        ensure!(
            verified.status.success(),
            "bob's certificate does not verify against the clients CA: {}",
            String::from_utf8_lossy(&verified.stderr)
        );

        // The nodeport listeners serve certificates from the cluster CA in the status (on the
        // mutual-TLS one, librdkafka verifies them below: openssl without a client certificate
        // would be refused after the handshake).
        let external = s.bootstrap_servers("my-cluster", "external")?;
        let mtls_bootstrap = s.bootstrap_servers("my-cluster", "mtls")?;
        let ca_file = listener_ca_file(&s, "my-cluster", "external")?;
        let verified = openssl_connect(&external, &ca_file)?;
        ensure!(verified.contains("Verification: OK"), "{verified}");
        ensure!(
            openssl_connect(&external, &clients_ca).is_err(),
            "a client trusting another CA accepted the brokers' certificate"
        );

        // alice (SCRAM) and bob (client certificate) write and read their own topics.
        let alice = sasl("alice", &password, &ca_file);
        let alice_producer =
            produce_and_consume(&external, "alice-orders", "alice-readers", &alice).await?;
        let bob_files = cert_files(&s, "bob", "user.crt", "user.key").await?;
        let bob = mtls(&bob_files, &ca_file);
        let bob_producer =
            produce_and_consume(&mtls_bootstrap, "bob-orders", "bob-readers", &bob).await?;
        // Replication works with authorization on: every replica in sync.
        let isrs = partition_isrs(&external, "alice-orders", &alice)?;
        ensure!(
            isrs.values().all(|isr| isr == &vec![0, 1, 2]),
            "alice-orders ISRs {isrs:?}"
        );
        // Neither may write where its ACLs do not allow.
        refused_on(&alice_producer, "alice", "forbidden").await?;
        refused_on(&bob_producer, "bob", "forbidden").await?;
        refused_on(&bob_producer, "bob", "alice-orders").await?;

        // Wrong password, no SASL, no client certificate: nothing.
        let wrong = sasl("alice", "not-the-password", &ca_file);
        let (result, errors) = metadata(&external, None, &wrong, Duration::from_secs(10));
        ensure!(result.is_err(), "metadata with a wrong password succeeded");
        ensure!(
            errors
                .iter()
                .any(|e| e.rdkafka_error_code() == Some(RDKafkaErrorCode::Authentication)),
            "no authentication error reported for a wrong password: {errors:?}"
        );
        let (result, _) = metadata(&external, None, &[], Duration::from_secs(5));
        ensure!(result.is_err(), "a plaintext client got metadata");
        let no_cert = [("security.protocol", "SSL"), ("ssl.ca.location", &ca_file)];
        let (result, _) = metadata(&mtls_bootstrap, None, &no_cert, Duration::from_secs(10));
        ensure!(
            result.is_err(),
            "a client without a certificate got metadata on the mutual-TLS listener"
        );

        java_tools_use_the_pkcs12_stores(&s, &mtls_bootstrap).await?;
        internal_ports_take_only_cluster_certificates(&s, &bob_files).await?;
        network_policy_guards_the_internal_ports(&s)?;
        eprintln!("clients checked after {:?}", started.elapsed());

        ca_renewal_rolls_the_brokers_without_losing_anything(
            &s,
            &mtls_bootstrap,
            &external,
            &bob_files,
        )
        .await?;
        eprintln!("CA renewal checked after {:?}", started.elapsed());
        ca_key_replacement_keeps_trust(&s, &mtls_bootstrap, &external, &bob_files).await?;
        eprintln!("done after {:?}", started.elapsed());
        Ok(())
    })
    .await;
}

/// `kafka-topics --describe` (the Java client) with bob's `user.p12` and the cluster CA's
/// `ca.p12`, with the passwords from the Secrets.
async fn java_tools_use_the_pkcs12_stores(s: &Scenario, bootstrap: &str) -> Result<()> {
    let keystore = temp_file(s, "bob.p12", &secret_bytes(s, "bob", "user.p12").await?)?;
    let truststore = temp_file(
        s,
        "cluster-ca.p12",
        &secret_bytes(s, "my-cluster-cluster-ca-cert", "ca.p12").await?,
    )?;
    let config = format!(
        "security.protocol=SSL\n\
         ssl.keystore.type=PKCS12\nssl.keystore.location={keystore}\nssl.keystore.password={}\n\
         ssl.truststore.type=PKCS12\nssl.truststore.location={truststore}\nssl.truststore.password={}\n",
        secret_value(s, "bob", "user.password")?,
        secret_value(s, "my-cluster-cluster-ca-cert", "ca.password")?
    );
    let config = temp_file(s, "bob-java.properties", config.as_bytes())?;
    let described = cli::kafka_tool(
        "kafka-topics",
        &[
            "--bootstrap-server",
            bootstrap,
            "--command-config",
            &config,
            "--describe",
            "--topic",
            "bob-orders",
        ],
    )?;
    ensure!(
        described.contains("bob-orders") && described.contains("ReplicationFactor: 3"),
        "kafka-topics --describe as bob: {described}"
    );
    Ok(())
}

/// Runs `args` in the node's network namespace (where pod IPs are routed); success and output.
fn in_node_network(args: &[&str]) -> Result<(bool, String)> {
    let holder = fjord_e2e::scenario::cluster()?.node.holder_pid.to_string();
    let out = std::process::Command::new("nsenter")
        .args(["-t", &holder, "-n", "--"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running nsenter")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// A TLS handshake with `address` presenting `cert` (certificate, key) or none; TLS 1.2 so a
/// refused client certificate fails the handshake itself.
fn tls_handshake(
    address: &str,
    ca_file: &str,
    cert: Option<&(String, String)>,
) -> Result<(bool, String)> {
    let mut args = vec![
        "openssl", "s_client", "-connect", address, "-CAfile", ca_file, "-tls1_2", "-brief",
    ];
    if let Some((crt, key)) = cert {
        args.extend(["-cert", crt.as_str(), "-key", key.as_str()]);
    }
    in_node_network(&args)
}

/// The replication and controller ports of a broker, reached directly: no plaintext, no
/// certificate-less and no KafkaUser TLS client gets through; the operator's certificate does.
async fn internal_ports_take_only_cluster_certificates(
    s: &Scenario,
    user_cert: &(String, String),
) -> Result<()> {
    let pod = s.api::<Pod>().get("my-cluster-kafka-0").await?;
    let ip = pod
        .status
        .and_then(|st| st.pod_ip)
        .context("my-cluster-kafka-0 has no IP")?;
    let cluster_ca = temp_file(
        s,
        "cluster-ca.crt",
        &secret_bytes(s, "my-cluster-cluster-ca-cert", "ca.crt").await?,
    )?;
    let operator = cert_files(
        s,
        "my-cluster-cluster-operator-certs",
        "cluster-operator.crt",
        "cluster-operator.key",
    )
    .await?;
    for port in [9090, 9091] {
        let address = format!("{ip}:{port}");
        let (ok, text) = tls_handshake(&address, &cluster_ca, Some(&operator))?;
        ensure!(
            ok,
            "the operator's certificate was refused on {address}: {text}"
        );
        let (ok, text) = tls_handshake(&address, &cluster_ca, None)?;
        ensure!(
            !ok,
            "a handshake without a certificate succeeded on {address}: {text}"
        );
        let (ok, text) = tls_handshake(&address, &cluster_ca, Some(user_cert))?;
        ensure!(
            !ok,
            "a KafkaUser's certificate (clients CA) was accepted on {address}: {text}"
        );
    }
    // A plaintext ApiVersions request (correlation id 7) on the replication port: whatever comes
    // back, it is not a Kafka response.
    let probe = format!(
        "exec 3<>/dev/tcp/{ip}/9091; \
         printf '\\x00\\x00\\x00\\x0c\\x00\\x12\\x00\\x00\\x00\\x00\\x00\\x07\\x00\\x02id' >&3; \
         timeout 3 head -c 64 <&3 | od -An -tx1"
    );
    let (_, text) = in_node_network(&["bash", "-c", &probe])?;
    let bytes: Vec<&str> = text.split_whitespace().collect();
    ensure!(
        !(bytes.len() >= 8 && bytes[4..8] == ["00", "00", "00", "07"]),
        "the replication port answered a plaintext Kafka request: {text}"
    );
    eprintln!("replication/controller ports: operator certificate accepted; plaintext, no certificate and a user certificate refused");
    Ok(())
}

/// The NetworkPolicy lets only the cluster's brokers reach the controller and replication
/// ports (and the operator the replication and admin ports).
fn network_policy_guards_the_internal_ports(s: &Scenario) -> Result<()> {
    let rules = s.kubectl(&[
        "get",
        "networkpolicy",
        "my-cluster-network-policy-kafka",
        "-o",
        "jsonpath={range .spec.ingress[*]}{.ports[*].port}|{.from[*].podSelector.matchLabels}{\"\\n\"}{end}",
    ])?;
    let lines: Vec<&str> = rules.lines().collect();
    ensure!(
        lines.first().is_some_and(|l| l.starts_with("9090 9091|")
            && l.contains("\"app.kubernetes.io/instance\":\"my-cluster\"")),
        "first rule is not brokers-only on 9090/9091: {rules}"
    );
    ensure!(
        lines
            .iter()
            .skip(1)
            .all(|l| !l.split('|').next().unwrap_or("").contains("9090")),
        "another rule opens the controller port: {rules}"
    );
    Ok(())
}

/// Pod uid of each broker.
async fn broker_uids(s: &Scenario) -> Result<BTreeMap<i32, (String, bool)>> {
    let mut out = BTreeMap::new();
    for ordinal in 0..3 {
        if let Some(pod) = s
            .api::<Pod>()
            .get_opt(&format!("my-cluster-kafka-{ordinal}"))
            .await?
        {
            let ready = running_and_ready(&pod);
            out.insert(ordinal, (pod.metadata.uid.unwrap_or_default(), ready));
        }
    }
    Ok(out)
}

/// Forces a cluster CA renewal while bob produces and consumes on the mutual-TLS listener.
async fn ca_renewal_rolls_the_brokers_without_losing_anything(
    s: &Scenario,
    bootstrap: &str,
    external: &str,
    bob_files: &(String, String),
) -> Result<()> {
    const GENERATION: &str = "kafka.fjord.dev/ca-cert-generation";
    let generation = |s: &Scenario| {
        s.kubectl(&[
            "get",
            "secret",
            "my-cluster-cluster-ca-cert",
            "-o",
            &format!(
                "jsonpath={{.metadata.annotations.{}}}",
                GENERATION.replace('.', "\\.")
            ),
        ])
    };
    let old_generation: u64 = generation(s)?.trim().parse().context("CA generation")?;
    let old_ca = secret_value(s, "my-cluster-cluster-ca-cert", "ca.crt")?;
    let old_ca_file = temp_file(s, "old-cluster-ca.crt", old_ca.as_bytes())?;
    let before = broker_uids(s).await?;
    let security = mtls(bob_files, &old_ca_file);
    let load = Load::start_with(bootstrap, "bob-orders", "bob-roll", &security)?;
    let rolled = async {
        load.wait_acked(200, Duration::from_secs(60)).await?;
        s.kubectl(&[
            "annotate",
            "secret",
            "my-cluster-cluster-ca-cert",
            "kafka.fjord.dev/force-renew=true",
        ])?;
        let started = Instant::now();
        poll_until(
            Duration::from_secs(300),
            "every broker restarted on the renewed CA",
            || async {
                let now = broker_uids(s).await?;
                let all_new = now.len() == 3
                    && now.iter().all(|(i, (uid, ready))| {
                        *ready && before.get(i).map(|b| &b.0) != Some(uid)
                    });
                let renewed = generation(s)?.trim().parse::<u64>().unwrap_or(0) > old_generation;
                let rolling = s.kubectl(&[
                    "get",
                    "kafka",
                    "my-cluster",
                    "-o",
                    "jsonpath={.status.rollingUpdate}",
                ])?;
                Ok(all_new && renewed && rolling.trim().is_empty())
            },
        )
        .await?;
        eprintln!(
            "CA renewed and brokers rolled in {:?} ({} acknowledged so far)",
            started.elapsed(),
            load.acked()
        );
        s.wait_kafka_ready("my-cluster", Duration::from_secs(120))
            .await?;
        let acked = load.acked();
        load.wait_acked(acked + 100, Duration::from_secs(60))
            .await?;
        anyhow::Ok(())
    }
    .await;
    let finished = load.finish(false).await;
    rolled?;
    finished?;
    let annotations = s.kubectl(&[
        "get",
        "secret",
        "my-cluster-cluster-ca-cert",
        "-o",
        "jsonpath={.metadata.annotations}",
    ])?;
    ensure!(
        !annotations.contains("force-renew"),
        "the force-renew annotation was left on the Secret: {annotations}"
    );
    let new_ca = listener_ca_file(s, "my-cluster", "mtls")?;
    let new_pem = std::fs::read_to_string(&new_ca)?;
    ensure!(
        new_pem != old_ca,
        "the status still shows the old CA certificate"
    );
    let verified = openssl_connect(external, &new_ca)?;
    ensure!(verified.contains("Verification: OK"), "{verified}");
    let fresh = mtls(bob_files, &new_ca);
    let (result, errors) = metadata(
        bootstrap,
        Some("bob-orders"),
        &fresh,
        Duration::from_secs(20),
    );
    result.with_context(|| format!("metadata trusting the new CA: {errors:?}"))?;
    Ok(())
}

/// Replaces the cluster CA's key while bob produces and consumes trusting the bundle published
/// when the replacement starts.
async fn ca_key_replacement_keeps_trust(
    s: &Scenario,
    bootstrap: &str,
    external: &str,
    bob_files: &(String, String),
) -> Result<()> {
    let phase = |s: &Scenario| {
        s.kubectl(&[
            "get",
            "secret",
            "my-cluster-cluster-ca-cert",
            "-o",
            "jsonpath={.metadata.annotations.kafka\\.fjord\\.dev/ca-key-replacement}",
        ])
    };
    let old = secret_value(s, "my-cluster-cluster-ca-cert", "ca.crt")?;
    let old_file = temp_file(s, "replaced-cluster-ca.crt", old.as_bytes())?;
    s.kubectl(&[
        "annotate",
        "secret",
        "my-cluster-cluster-ca",
        "kafka.fjord.dev/force-replace=true",
    ])?;
    let started = Instant::now();
    poll_until(
        Duration::from_secs(60),
        "the replacement to start",
        || async { Ok(phase(s)?.trim() == "trust-both") },
    )
    .await?;
    let bundle = secret_value(s, "my-cluster-cluster-ca-cert", "ca.crt")?;
    ensure!(
        bundle.matches("BEGIN CERTIFICATE").count() == 2 && bundle.contains(old.trim()),
        "ca.crt during the replacement is not the new and the old certificate: {bundle}"
    );
    let status_certs = s.kubectl(&[
        "get",
        "kafka",
        "my-cluster",
        "-o",
        "jsonpath={.status.listeners[?(@.name==\"mtls\")].certificates}",
    ]);
    eprintln!(
        "replacement started; status lists {} certificate(s)",
        status_certs
            .map(|c| c.matches("BEGIN CERTIFICATE").count())
            .unwrap_or(0)
    );
    let bundle_file = temp_file(s, "bundle-cluster-ca.crt", bundle.as_bytes())?;
    let security = mtls(bob_files, &bundle_file);
    // A topic of its own: the load numbers its records from 0 again.
    let load = Load::start_with(bootstrap, "bob-replaced", "bob-replace", &security)?;
    let replaced = async {
        load.wait_acked(200, Duration::from_secs(60)).await?;
        poll_until(
            Duration::from_secs(480),
            "the key replacement to finish",
            || async {
                let done = phase(s)?.trim().is_empty();
                let certs = secret_value(s, "my-cluster-cluster-ca-cert", "ca.crt")?;
                let rolling = s.kubectl(&[
                    "get",
                    "kafka",
                    "my-cluster",
                    "-o",
                    "jsonpath={.status.rollingUpdate}",
                ])?;
                let pods = broker_uids(s).await?;
                Ok(done
                    && certs.matches("BEGIN CERTIFICATE").count() == 1
                    && rolling.trim().is_empty()
                    && pods.len() == 3
                    && pods.values().all(|(_, ready)| *ready))
            },
        )
        .await?;
        eprintln!(
            "key replaced in {:?} ({} acknowledged so far)",
            started.elapsed(),
            load.acked()
        );
        let acked = load.acked();
        load.wait_acked(acked + 100, Duration::from_secs(60))
            .await?;
        anyhow::Ok(())
    }
    .await;
    let finished = load.finish(false).await;
    replaced?;
    finished?;
    let new = secret_value(s, "my-cluster-cluster-ca-cert", "ca.crt")?;
    ensure!(
        new.trim() != old.trim(),
        "the CA certificate did not change"
    );
    let new_file = listener_ca_file(s, "my-cluster", "external")?;
    let verified = openssl_connect(external, &new_file)?;
    ensure!(verified.contains("Verification: OK"), "{verified}");
    ensure!(
        openssl_connect(external, &old_file).is_err(),
        "the brokers still present a certificate the replaced CA signed"
    );
    let key_annotations = s.kubectl(&[
        "get",
        "secret",
        "my-cluster-cluster-ca",
        "-o",
        "jsonpath={.metadata.annotations}",
    ])?;
    ensure!(
        !key_annotations.contains("force-replace"),
        "force-replace left on the key Secret: {key_annotations}"
    );
    // The operator still administers the cluster with its re-issued certificate.
    apply_yaml(s, "topic", &topic_yaml("my-cluster", "after-replace", 1, 3))?;
    wait_ready(s, "kafkatopic", "after-replace", Duration::from_secs(90)).await?;
    s.wait_kafka_ready("my-cluster", Duration::from_secs(60))
        .await?;
    Ok(())
}
