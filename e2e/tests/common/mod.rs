//! Helpers the end-to-end scenarios share: a real Kafka client (librdkafka) on the host talking
//! to brokers in pods through their nodeport listener.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

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
    config
        .set("group.id", format!("e2e-reader-{}", std::process::id()))
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
                let value = message
                    .payload_view::<str>()
                    .transpose()
                    .context("non-UTF-8 value")?
                    .unwrap_or_default()
                    .to_string();
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
