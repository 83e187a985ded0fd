//! Client load that runs through a scenario: an idempotent `acks=all` producer sending
//! continuously and a consumer group reading along, then the no-acknowledged-loss check (every
//! acknowledged record in the log exactly once, and seen by the group).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{client_config, consume_to_end, producer};

/// What the producer sent: acknowledged values with (partition, offset), and failures.
#[derive(Default)]
pub struct Produced {
    pub acked: BTreeMap<String, (i32, i64)>,
    pub failed: Vec<(String, String)>,
}

/// A producer and a consumer group running until [`Load::finish`].
pub struct Load {
    topic: String,
    bootstrap: String,
    stop: Arc<AtomicBool>,
    /// Set once the producer has stopped and every send has its outcome: only then is the
    /// acknowledged count final, so only then may the group consumer compare against it.
    produced_all: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    producing: tokio::task::JoinHandle<Produced>,
    consuming: std::thread::JoinHandle<Result<BTreeMap<String, usize>>>,
    started: Instant,
    /// Client settings both clients (and the final read) use: security, for secured listeners.
    security: Vec<(String, String)>,
    /// The consumer group; the final read uses `<group>-check` (under an ACL prefix with it).
    group: String,
}

impl Load {
    /// Starts producing to `topic` and consuming it in group `group`.
    pub fn start(bootstrap: &str, topic: &str, group: &str) -> Result<Load> {
        Load::start_with(bootstrap, topic, group, &[])
    }

    /// [`Load::start`] with client settings (`security.protocol`, certificates, ...).
    pub fn start_with(
        bootstrap: &str,
        topic: &str,
        group: &str,
        security: &[(&str, &str)],
    ) -> Result<Load> {
        let stop = Arc::new(AtomicBool::new(false));
        let produced_all = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let mut settings = security.to_vec();
        settings.push(("linger.ms", "5"));
        let producer = producer(bootstrap, &settings)?;
        let producing = tokio::spawn(produce_until(
            producer,
            topic.to_string(),
            stop.clone(),
            acked.clone(),
        ));
        let mut config = client_config(bootstrap, security);
        config
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000");
        let consumer: BaseConsumer = config.create()?;
        consumer.subscribe(&[topic])?;
        let (consumer_produced_all, consumer_acked) = (produced_all.clone(), acked.clone());
        let consuming = std::thread::spawn(move || {
            consume_until(consumer, consumer_produced_all, consumer_acked)
        });
        Ok(Load {
            topic: topic.to_string(),
            bootstrap: bootstrap.to_string(),
            stop,
            produced_all,
            acked,
            producing,
            consuming,
            started: Instant::now(),
            security: security
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            group: group.to_string(),
        })
    }

    /// Acknowledgements so far.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }

    /// Waits until at least `count` records are acknowledged.
    pub async fn wait_acked(&self, count: usize, timeout: Duration) -> Result<()> {
        fjord_e2e::fixture::poll_until(timeout, &format!("{count} acknowledgements"), || async {
            Ok(self.acked() >= count)
        })
        .await
    }

    /// Stops both clients and checks: nothing acknowledged is missing from the log or read
    /// twice from it, the group saw every acknowledged record, and (unless `failures_allowed`)
    /// no send failed after the client's own retries.
    pub async fn finish(self, failures_allowed: bool) -> Result<Produced> {
        self.stop.store(true, Ordering::SeqCst);
        let produced = tokio::time::timeout(Duration::from_secs(90), self.producing).await;
        // Set even when the producer failed, so the consumer thread ends (after its 90 s).
        self.produced_all.store(true, Ordering::SeqCst);
        let produced = produced.context("the producer did not stop within 90 s")??;
        let grouped = self
            .consuming
            .join()
            .map_err(|_| anyhow::anyhow!("the group consumer panicked"))??;
        eprintln!(
            "produced for {:?}: {} acknowledged, {} not; the group read {} distinct values",
            self.started.elapsed(),
            produced.acked.len(),
            produced.failed.len(),
            grouped.len()
        );
        for (value, error) in produced.failed.iter().take(5) {
            eprintln!("not acknowledged: {value}: {error}");
        }
        ensure!(
            failures_allowed || produced.failed.is_empty(),
            "{} sends failed after the client's retries, e.g. {:?}",
            produced.failed.len(),
            produced.failed.iter().take(3).collect::<Vec<_>>()
        );
        let check_group = format!("{}-check", self.group);
        let mut security: Vec<(&str, &str)> = self
            .security
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        security.push(("group.id", &check_group));
        let log = consume_to_end(
            &self.bootstrap,
            &self.topic,
            Duration::from_secs(90),
            &security,
        )?;
        let duplicates: Vec<_> = log.iter().filter(|(_, n)| **n > 1).collect();
        ensure!(
            duplicates.is_empty(),
            "{} values are in the log more than once, e.g. {:?}",
            duplicates.len(),
            duplicates.iter().take(5).collect::<Vec<_>>()
        );
        let missing: Vec<_> = produced
            .acked
            .keys()
            .filter(|value| !log.contains_key(*value))
            .collect();
        ensure!(
            missing.is_empty(),
            "{} of {} acknowledged records missing from the log, e.g. {:?}",
            missing.len(),
            produced.acked.len(),
            missing.iter().take(5).collect::<Vec<_>>()
        );
        let unseen: Vec<_> = produced
            .acked
            .keys()
            .filter(|value| !grouped.contains_key(*value))
            .collect();
        ensure!(
            unseen.is_empty(),
            "the consumer group never received {} acknowledged records, e.g. {:?}",
            unseen.len(),
            unseen.iter().take(5).collect::<Vec<_>>()
        );
        let redelivered = grouped.values().filter(|n| **n > 1).count();
        eprintln!(
            "log: every acknowledged record once ({} records); group: all received, {redelivered} \
             redelivered after rebalances (at-least-once)",
            log.len()
        );
        Ok(produced)
    }
}

/// Sends batches of 20 records until `stop`; counts acknowledgements in `acked_count`.
pub async fn produce_until(
    producer: FutureProducer,
    topic: String,
    stop: Arc<AtomicBool>,
    acked_count: Arc<AtomicUsize>,
) -> Produced {
    let mut produced = Produced::default();
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let mut batch = Vec::new();
        for _ in 0..20 {
            let value = format!("r-{i}");
            let key = format!("key-{i}");
            i += 1;
            match producer.send_result(FutureRecord::to(&topic).key(&key).payload(&value)) {
                Ok(delivery) => batch.push((value, delivery)),
                Err((error, _)) => produced.failed.push((value, error.to_string())),
            }
        }
        for (value, delivery) in batch {
            match delivery.await {
                Ok(Ok(delivered)) => {
                    produced
                        .acked
                        .insert(value, (delivered.partition, delivered.offset));
                    acked_count.fetch_add(1, Ordering::SeqCst);
                }
                Ok(Err((error, _))) => produced.failed.push((value, error.to_string())),
                Err(_) => produced.failed.push((value, "delivery canceled".into())),
            }
        }
    }
    produced
}

/// Polls until `produced_all`, then keeps reading until it has received as many distinct values
/// as were acknowledged (and 3 s passed quietly), or 90 s pass; value -> times received.
///
/// Waiting for `produced_all` rather than the producer's stop signal matters: the producer's
/// last batch may wait seconds for `acks=all` (a replica that just came back), and a count taken
/// before those acknowledgements would let the group stop short of records it can still read.
fn consume_until(
    consumer: BaseConsumer,
    produced_all: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> Result<BTreeMap<String, usize>> {
    let mut seen = BTreeMap::<String, usize>::new();
    let mut stopped_at: Option<Instant> = None;
    let mut last_record = Instant::now();
    loop {
        if produced_all.load(Ordering::SeqCst) {
            let since = *stopped_at.get_or_insert_with(Instant::now);
            let caught_up = seen.len() >= acked.load(Ordering::SeqCst)
                && last_record.elapsed() > Duration::from_secs(3);
            if caught_up || since.elapsed() > Duration::from_secs(90) {
                break;
            }
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let value = super::value_text(&message)?;
                *seen.entry(value).or_default() += 1;
                last_record = Instant::now();
            }
            Some(Err(error)) => eprintln!("group consumer: {error}"),
            None => {}
        }
    }
    Ok(seen)
}
