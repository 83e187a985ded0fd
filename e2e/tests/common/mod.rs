//! Helpers the end-to-end scenarios share: a real Kafka client (librdkafka) on the host talking
//! to brokers in pods through their nodeport listener.

#![allow(dead_code)]

pub mod cli;
pub mod load;
pub mod protocol;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use fjord_e2e::scenario::Scenario;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::metadata::Metadata;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientContext;

/// The 3-broker example with an `external` nodeport listener.
pub const NODEPORT_EXAMPLE: &str = "examples/kafka-nodeport.yaml";

pub fn read_example(rel: &str) -> String {
    let path = fjord_e2e::scenario::repo_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn client_config(bootstrap: &str, extra: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in extra {
        config.set(*key, *value);
    }
    config
}

/// An idempotent `acks=all` producer.
pub fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> Result<FutureProducer> {
    let mut config = client_config(bootstrap, extra);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "60000");
    Ok(config.create()?)
}

/// Sends `count` records keyed `key-<i>` with value `<prefix>-<i>`; returns (partition, offset)
/// per acknowledged value.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    prefix: &str,
    count: usize,
) -> Result<BTreeMap<String, (i32, i64)>> {
    let mut acked = BTreeMap::new();
    for i in 0..count {
        let value = format!("{prefix}-{i}");
        let key = format!("key-{i}");
        let delivery = producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&value),
                Duration::from_secs(60),
            )
            .await;
        match delivery {
            Ok(delivered) => {
                acked.insert(value, (delivered.partition, delivered.offset));
            }
            Err((error, _)) => bail!("record {value} was not acknowledged: {error}"),
        }
    }
    Ok(acked)
}

/// Reads every record of `topic` from the beginning until `expected` values were seen or
/// `timeout` passes; returns value -> how many times it was read.
pub fn consume_all(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
    extra: &[(&str, &str)],
) -> Result<BTreeMap<String, usize>> {
    let mut config = client_config(bootstrap, extra);
    if config.get("group.id").is_none() {
        config.set("group.id", format!("e2e-reader-{}", std::process::id()));
    }
    config
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = config.create()?;
    consumer.subscribe(&[topic])?;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && total < expected {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(message)) => {
                let value = value_text(&message)?;
                *seen.entry(value).or_default() += 1;
                total += 1;
            }
            Some(Err(error)) => eprintln!("consumer: {error}"),
            None => {}
        }
    }
    // Drain briefly for duplicates beyond the expected count.
    let drain_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < drain_until {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let value = message
                .payload_view::<str>()
                .and_then(|v| v.ok())
                .unwrap_or_default()
                .to_string();
            *seen.entry(value).or_default() += 1;
        }
    }
    Ok(seen)
}

/// Applies `yaml` in the scenario's namespace (through a file named after `what`).
pub fn apply_yaml(s: &Scenario, what: &str, yaml: &str) -> Result<()> {
    let file = std::env::temp_dir().join(format!("{}-{what}.yaml", s.namespace));
    std::fs::write(&file, yaml)?;
    s.kubectl(&["apply", "-f", &file.display().to_string()])?;
    Ok(())
}

/// `status` of the condition `type_` of `kind/name` ("" when absent).
pub fn condition(s: &Scenario, kind: &str, name: &str, type_: &str) -> Result<String> {
    let jsonpath = format!("jsonpath={{.status.conditions[?(@.type==\"{type_}\")].status}}");
    Ok(s.kubectl(&["get", kind, name, "-o", &jsonpath])?
        .trim()
        .to_string())
}

/// Waits until `kind/name` (kafkatopic, kafkauser, ...) reports Ready=True.
pub async fn wait_ready(s: &Scenario, kind: &str, name: &str, timeout: Duration) -> Result<()> {
    fjord_e2e::fixture::poll_until(timeout, &format!("{kind} {name} Ready"), || async {
        Ok(condition(s, kind, name, "Ready")? == "True")
    })
    .await
}

/// A KafkaTopic of `cluster`.
/// `yaml` (a Kafka resource with the nodeport example's settings) turned into a single broker:
/// one replica, and replication factors and min ISR of 1.
pub fn single_broker(yaml: &str) -> String {
    yaml.replace("replicas: 3", "replicas: 1")
        .replace(
            "default.replication.factor: 3",
            "default.replication.factor: 1",
        )
        .replace("min.insync.replicas: 2", "min.insync.replicas: 1")
        .replace(
            "offsets.topic.replication.factor: 3",
            "offsets.topic.replication.factor: 1",
        )
}

/// A record's value as text.
pub fn value_text(message: &rdkafka::message::BorrowedMessage<'_>) -> Result<String> {
    Ok(message
        .payload_view::<str>()
        .transpose()
        .context("non-UTF-8 value")?
        .unwrap_or_default()
        .to_string())
}

/// Running, Ready and not being deleted.
pub fn running_and_ready(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    pod.metadata.deletion_timestamp.is_none()
        && status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The operator installed, the 3-broker nodeport example Ready, and `topic` (RF 3) created with
/// every partition's ISR full; returns the external bootstrap servers.
pub async fn three_brokers_with_topic(
    s: &Scenario,
    topic: &str,
    partitions: i32,
) -> Result<String> {
    let started = Instant::now();
    s.install_operator().await?;
    apply_yaml(s, "kafka", &read_example(NODEPORT_EXAMPLE))?;
    s.wait_kafka_ready("my-cluster", Duration::from_secs(180))
        .await?;
    eprintln!("Kafka my-cluster Ready after {:?}", started.elapsed());
    apply_yaml(s, "topic", &topic_yaml("my-cluster", topic, partitions, 3))?;
    wait_ready(s, "kafkatopic", topic, Duration::from_secs(60)).await?;
    let bootstrap = s.bootstrap_servers("my-cluster", "external")?;
    fjord_e2e::fixture::poll_until(Duration::from_secs(30), "full ISRs", || {
        let bootstrap = bootstrap.clone();
        async move {
            let isrs = partition_isrs(&bootstrap, topic, &[])?;
            Ok(isrs.values().all(|isr| isr == &vec![0, 1, 2]))
        }
    })
    .await?;
    eprintln!("cluster and topic ready after {:?}", started.elapsed());
    Ok(bootstrap)
}

/// Merge-patches `kind/name` with `json` (kubectl patch --type=merge).
pub fn merge_patch(s: &Scenario, kind: &str, name: &str, json: &str) -> Result<()> {
    s.kubectl(&["patch", kind, name, "--type=merge", "-p", json])?;
    Ok(())
}

pub fn topic_yaml(cluster: &str, name: &str, partitions: i32, replicas: i32) -> String {
    format!(
        "apiVersion: kafka.fjord.dev/v1\nkind: KafkaTopic\nmetadata:\n  name: {name}\n  labels:\n    \
         kafka.fjord.dev/cluster: {cluster}\nspec:\n  partitions: {partitions}\n  replicas: {replicas}\n"
    )
}

/// A client context that keeps the errors librdkafka reports (authentication failures arrive
/// only this way).
#[derive(Default)]
pub struct ErrorRecorder {
    pub errors: std::sync::Mutex<Vec<KafkaError>>,
}

impl ClientContext for ErrorRecorder {
    fn error(&self, error: KafkaError, reason: &str) {
        eprintln!("librdkafka error: {error}: {reason}");
        self.errors.lock().unwrap().push(error);
    }
}

impl ConsumerContext for ErrorRecorder {}

/// Metadata (for `topic`, or all topics) as a client with `extra` settings sees it, plus the
/// errors librdkafka reported meanwhile.
pub fn metadata(
    bootstrap: &str,
    topic: Option<&str>,
    extra: &[(&str, &str)],
    timeout: Duration,
) -> (Result<Metadata>, Vec<KafkaError>) {
    let consumer: BaseConsumer<ErrorRecorder> =
        match client_config(bootstrap, extra).create_with_context(ErrorRecorder::default()) {
            Ok(consumer) => consumer,
            Err(error) => return (Err(error.into()), Vec::new()),
        };
    let result = consumer
        .fetch_metadata(topic, timeout)
        .map_err(anyhow::Error::from);
    // A consumer gets librdkafka's errors (e.g. a failed SASL authentication) from `poll`.
    let mut errors = Vec::new();
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        if let Some(Err(error)) = consumer.poll(Duration::from_millis(100)) {
            errors.push(error);
        }
    }
    errors.extend(consumer.context().errors.lock().unwrap().iter().cloned());
    (result, errors)
}

/// The ISR of every partition of `topic`, by partition id.
pub fn partition_isrs(
    bootstrap: &str,
    topic: &str,
    extra: &[(&str, &str)],
) -> Result<BTreeMap<i32, Vec<i32>>> {
    let (metadata, _) = metadata(bootstrap, Some(topic), extra, Duration::from_secs(10));
    let metadata = metadata?;
    let topic_metadata = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .with_context(|| format!("no metadata for topic {topic}"))?;
    ensure!(
        topic_metadata.error().is_none(),
        "topic {topic}: {:?}",
        topic_metadata.error()
    );
    let mut isrs = BTreeMap::new();
    for partition in topic_metadata.partitions() {
        let mut isr = partition.isr().to_vec();
        isr.sort_unstable();
        isrs.insert(partition.id(), isr);
    }
    ensure!(!isrs.is_empty(), "topic {topic} has no partitions");
    Ok(isrs)
}

/// Reads every partition of `topic` from the beginning up to the high watermarks it has when
/// called (partitions assigned directly, no group); returns value -> how many times it was read.
pub fn consume_to_end(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
    extra: &[(&str, &str)],
) -> Result<BTreeMap<String, usize>> {
    let mut config = client_config(bootstrap, extra);
    if config.get("group.id").is_none() {
        // Never joined (partitions are assigned), but librdkafka wants one; a caller under
        // authorization passes one its ACLs allow.
        config.set("group.id", format!("e2e-to-end-{}", std::process::id()));
    }
    config.set("enable.auto.commit", "false");
    let consumer: BaseConsumer = config.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .with_context(|| format!("no metadata for {topic}"))?
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    let mut remaining: BTreeMap<i32, i64> = BTreeMap::new();
    let mut assignment = rdkafka::TopicPartitionList::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        if high > low {
            remaining.insert(partition, high);
        }
        assignment.add_partition_offset(topic, partition, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = Instant::now() + timeout;
    while !remaining.is_empty() {
        if Instant::now() >= deadline {
            bail!(
                "timed out reading {topic} to its end; partitions left (to offset): {remaining:?}"
            );
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(message)) => {
                let value = value_text(&message)?;
                *seen.entry(value).or_default() += 1;
                let partition = message.partition();
                if remaining
                    .get(&partition)
                    .is_some_and(|high| message.offset() + 1 >= *high)
                {
                    remaining.remove(&partition);
                }
            }
            Some(Err(error)) => eprintln!("consumer: {error}"),
            None => {}
        }
    }
    Ok(seen)
}

/// `openssl x509 -noout <args>` on a PEM certificate; its output, or an error with it.
pub fn openssl_x509(pem: &str, args: &[&str]) -> anyhow::Result<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("openssl")
        .args(["x509", "-noout"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running openssl")?;
    child
        .stdin
        .take()
        .context("openssl stdin")?
        .write_all(pem.as_bytes())?;
    let out = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "openssl x509 {args:?}: {text}");
    Ok(text)
}

/// The CA certificate `status.listeners[<listener>].certificates` gives for a TLS listener,
/// written to a file for clients (`ssl.ca.location`, `openssl -CAfile`).
pub fn listener_ca_file(s: &Scenario, kafka: &str, listener: &str) -> Result<String> {
    let pem = s.kubectl(&[
        "get",
        "kafka",
        kafka,
        "-o",
        &format!("jsonpath={{.status.listeners[?(@.name==\"{listener}\")].certificates[0]}}"),
    ])?;
    ensure!(
        pem.contains("BEGIN CERTIFICATE"),
        "status.listeners[{listener}].certificates has no certificate: {pem:?}"
    );
    let file = std::env::temp_dir().join(format!("{}-{kafka}-{listener}-ca.crt", s.namespace));
    std::fs::write(&file, pem)?;
    Ok(file.display().to_string())
}

/// `openssl s_client` to `address` trusting only `ca_file`, verifying the certificate chain and
/// that it names the host (`-verify_ip` / `-verify_hostname`); Err with openssl's output when
/// the handshake or the verification fails.
pub fn openssl_connect(address: &str, ca_file: &str) -> Result<String> {
    use std::process::{Command, Stdio};
    let (host, _) = address
        .rsplit_once(':')
        .with_context(|| format!("no port in {address}"))?;
    let verify_name = if host.parse::<std::net::IpAddr>().is_ok() {
        "-verify_ip"
    } else {
        "-verify_hostname"
    };
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            address,
            "-CAfile",
            ca_file,
            "-verify_return_error",
            verify_name,
            host,
            "-brief",
        ])
        .stdin(Stdio::null())
        .output()
        .context("running openssl s_client")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "openssl s_client {address}: {text}");
    Ok(text)
}

/// One key of a Secret in the scenario's namespace, decoded.
pub fn secret_value(s: &Scenario, secret: &str, key: &str) -> Result<String> {
    s.kubectl(&[
        "get",
        "secret",
        secret,
        "-o",
        &format!("go-template={{{{index .data \"{key}\" | base64decode}}}}"),
    ])
}

/// The keys a Secret holds, sorted.
pub fn secret_keys(s: &Scenario, secret: &str) -> Result<Vec<String>> {
    let keys = s.kubectl(&[
        "get",
        "secret",
        secret,
        "-o",
        "go-template={{range $k, $v := .data}}{{$k}} {{end}}",
    ])?;
    Ok(keys.split_whitespace().map(str::to_string).collect())
}
