//! Scaling and replication-factor changes on the real node (issue 14), with an idempotent
//! `acks=all` producer and a consumer group running throughout and the no-acknowledged-loss
//! check at the end:
//!
//! - KafkaTopic `spec.replicas` 1 -> 3 -> 2: every partition gets exactly that many replicas on
//!   distinct brokers (as `kafka-topics --describe` shows too), the preferred leader is kept, the
//!   records written before are all there;
//! - 3 -> 1 brokers is refused (the voters, and the RF 3 topic, name why) and nothing changes;
//! - 3 -> 5 under `spec.rebalance.throttleBytesPerSecond`: the new brokers get their share of
//!   replicas and leaders (within one of the others); the brokers carry the throttle while
//!   replicas move, `status.rebalance.bytesLeft` counts down, no new broker receives faster than
//!   the throttle allows, and the throttle is gone afterwards;
//! - 5 -> 3 unthrottled: brokers 4 and 3 are drained (metadata shows them hosting nothing)
//!   before their pods go;
//! - one quorum throughout: after 3 -> 5 -> 3, and on a second cluster scaled 1 -> 3,
//!   DescribeQuorum from every broker names the same leader, epoch and voters (those the cluster
//!   was created with).
//!
//! Printed: reassignment durations, bytes moved and MiB/s (throttled and not), the 3 -> 5 total.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::cli::describe_topic;
use common::load::Load;
use common::protocol::{
    broker_addresses, cluster_default, describe_quorum, replica_layout, replica_sizes,
    topic_override,
};
use common::*;
use fjord_e2e::fixture::poll_until;
use fjord_e2e::scenario::Scenario;
use k8s_openapi::api::apps::v1::StatefulSet;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureRecord;

const LOADED: &str = "scale-orders";
const RESIZED: &str = "scale-resized";
/// A topic with tens of MB, so reassignments move real data and take measurable time.
const BULK: &str = "scale-bulk";
const BULK_RECORDS: usize = 720;
const BULK_RECORD_BYTES: usize = 64 * 1024;
/// The scale-up's throttle: low enough that copying BULK takes seconds.
const THROTTLE: u64 = 2 * 1024 * 1024;
const MIB: f64 = 1024.0 * 1024.0;

/// Writes BULK_RECORDS records of BULK_RECORD_BYTES to BULK, many in flight.
async fn fill_bulk(bootstrap: &str) -> Result<()> {
    let producer = producer(bootstrap, &[("linger.ms", "20"), ("batch.size", "1000000")])?;
    let payload = vec![b'x'; BULK_RECORD_BYTES];
    // send_result enqueues at once, so many records are in flight; then every delivery is
    // awaited (acked or an error).
    let mut deliveries = Vec::with_capacity(BULK_RECORDS);
    for i in 0..BULK_RECORDS {
        let key = format!("bulk-{i}");
        loop {
            match producer.send_result(FutureRecord::to(BULK).key(&key).payload(&payload)) {
                Ok(delivery) => break deliveries.push(delivery),
                // The local queue is full: let deliveries drain.
                Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err((e, _)) => anyhow::bail!("bulk record {key}: {e}"),
            }
        }
    }
    for (i, delivery) in deliveries.into_iter().enumerate() {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => anyhow::bail!("bulk record {i} not acknowledged: {e}"),
            Err(_) => anyhow::bail!("bulk record {i}: the producer went away"),
        }
    }
    Ok(())
}

/// Bytes that arrived on brokers that did not hold a replica before: for every (partition,
/// broker) in `after` but not in `before`, that replica's size now. Also per receiving broker.
async fn bytes_moved(
    bootstrap: &str,
    before: &BTreeMap<(String, i32), Vec<i32>>,
) -> Result<(u64, BTreeMap<i32, u64>)> {
    let after = replica_layout(bootstrap).await?;
    // Only brokers that hold replicas now: a removed broker may still be listed for a while,
    // and its node port is gone.
    let holding: std::collections::BTreeSet<i32> = after.values().flatten().copied().collect();
    let mut sizes = BTreeMap::new();
    for (id, address) in broker_addresses(bootstrap).await? {
        if holding.contains(&id) {
            sizes.insert(id, replica_sizes(&address).await?);
        }
    }
    let mut per_broker: BTreeMap<i32, u64> = BTreeMap::new();
    for (key, replicas) in &after {
        let old = before.get(key).cloned().unwrap_or_default();
        for b in replicas.iter().filter(|b| !old.contains(b)) {
            let size = sizes.get(b).and_then(|s| s.get(key)).copied().unwrap_or(0);
            *per_broker.entry(*b).or_default() += size;
        }
    }
    Ok((per_broker.values().sum(), per_broker))
}

/// `spec.rebalance.throttleBytesPerSecond` of my-cluster.
fn set_throttle(s: &Scenario, bytes_per_second: u64) -> Result<()> {
    merge_patch(
        s,
        "kafka",
        "my-cluster",
        &format!(r#"{{"spec":{{"rebalance":{{"throttleBytesPerSecond":{bytes_per_second}}}}}}}"#),
    )
}

/// Asks for `brokers` brokers in Kafka my-cluster.
fn scale_to(s: &Scenario, brokers: i32) -> Result<()> {
    merge_patch(
        s,
        "kafka",
        "my-cluster",
        &format!(r#"{{"spec":{{"kafka":{{"replicas":{brokers}}}}}}}"#),
    )
}

/// A field of my-cluster's `status.rebalance`.
fn rebalance(s: &Scenario, field: &str) -> Result<String> {
    jsonpath(
        s,
        "kafka",
        "my-cluster",
        &format!("{{.status.rebalance.{field}}}"),
    )
}

fn jsonpath(s: &Scenario, kind: &str, name: &str, path: &str) -> Result<String> {
    Ok(
        s.kubectl(&["get", kind, name, "-o", &format!("jsonpath={path}")])?
            .trim()
            .to_string(),
    )
}

/// Replicas per broker and preferred leaders per broker over all partitions.
fn counts(
    layout: &BTreeMap<(String, i32), Vec<i32>>,
) -> (BTreeMap<i32, usize>, BTreeMap<i32, usize>) {
    let mut replicas = BTreeMap::new();
    let mut leaders = BTreeMap::new();
    for list in layout.values() {
        for b in list {
            *replicas.entry(*b).or_default() += 1;
        }
        if let Some(first) = list.first() {
            *leaders.entry(*first).or_default() += 1;
        }
    }
    (replicas, leaders)
}

fn spread(counts: &BTreeMap<i32, usize>, brokers: i32) -> usize {
    let all: Vec<usize> = (0..brokers)
        .map(|b| counts.get(&b).copied().unwrap_or(0))
        .collect();
    all.iter().max().unwrap() - all.iter().min().unwrap()
}

/// DescribeQuorum from each of the `brokers` brokers behind `bootstrap` once all answer (a
/// broker's own node port may take a moment to be routed after it turns Ready); fails unless
/// they agree on leader, epoch and voters.
async fn one_quorum(bootstrap: &str, brokers: usize) -> Result<Vec<(i32, (i32, i32, Vec<i32>))>> {
    let answers = std::sync::Mutex::new(Vec::new());
    poll_until(
        Duration::from_secs(60),
        &format!("DescribeQuorum from all {brokers} brokers"),
        || async {
            let addresses = broker_addresses(bootstrap).await?;
            let mut got = Vec::new();
            // Brokers 0..brokers (a removed broker may still be listed until it is forgotten).
            for (id, address) in addresses.iter().filter(|(id, _)| **id < brokers as i32) {
                match describe_quorum(address).await {
                    Ok(answer) => got.push((*id, answer)),
                    Err(e) => {
                        eprintln!("broker {id} at {address}: {e:#}");
                        return Ok(false);
                    }
                }
            }
            let complete = got.len() == brokers;
            *answers.lock().unwrap() = got;
            Ok(complete)
        },
    )
    .await?;
    let answers = answers.into_inner().unwrap();
    eprintln!("DescribeQuorum by broker: {answers:?}");
    ensure!(
        answers.windows(2).all(|w| w[0].1 == w[1].1),
        "brokers disagree about the quorum: {answers:?}"
    );
    Ok(answers)
}

/// What the status and the brokers showed while replicas moved.
#[derive(Debug, Default)]
struct MoveObservations {
    first_moving: Option<Instant>,
    last_moving: Option<Instant>,
    max_bytes_left: Option<i64>,
    throttle_seen: Option<String>,
    last_poll: Option<Instant>,
    /// The longest time between two polls: the moves may have run that much longer than seen.
    max_gap: Duration,
}

impl MoveObservations {
    fn see(&mut self, moving: bool, bytes_left: Option<i64>, rate: Option<String>) {
        let now = Instant::now();
        if let Some(last) = self.last_poll {
            self.max_gap = self.max_gap.max(now - last);
        }
        self.last_poll = Some(now);
        if moving {
            let now = Instant::now();
            self.first_moving.get_or_insert(now);
            self.last_moving = Some(now);
            if rate.is_some() {
                self.throttle_seen = rate;
            }
        }
        if let Some(b) = bytes_left {
            self.max_bytes_left = Some(self.max_bytes_left.map_or(b, |m| m.max(b)));
        }
    }

    /// "X MiB/s" for `bytes` over the observed moving time, or why there is no figure.
    fn rate(&self, bytes: u64) -> String {
        let secs = self.moving_for().as_secs_f64();
        if secs < 0.5 {
            return "no rate (the moves started and ended between two polls)".into();
        }
        format!("{:.2} MiB/s", bytes as f64 / MIB / secs)
    }

    /// From the first to the last poll that saw replicas moving.
    fn moving_for(&self) -> Duration {
        match (self.first_moving, self.last_moving) {
            (Some(first), Some(last)) => last - first,
            _ => Duration::ZERO,
        }
    }
}

async fn resize_topic(s: &Scenario, bootstrap: &str, want: usize) -> Result<Duration> {
    let before = replica_layout(bootstrap).await?;
    let started = Instant::now();
    merge_patch(
        s,
        "kafkatopic",
        RESIZED,
        &format!(r#"{{"spec":{{"replicas":{want}}}}}"#),
    )?;
    poll_until(
        Duration::from_secs(180),
        &format!("{RESIZED} at {want} replicas"),
        || async {
            let change = jsonpath(s, "kafkatopic", RESIZED, "{.status.replicasChange}")?;
            let layout = replica_layout(bootstrap).await?;
            let ours: Vec<&Vec<i32>> = layout
                .iter()
                .filter(|((t, _), _)| t == RESIZED)
                .map(|(_, r)| r)
                .collect();
            Ok(change.is_empty() && !ours.is_empty() && ours.iter().all(|r| r.len() == want))
        },
    )
    .await?;
    let took = started.elapsed();
    let after = replica_layout(bootstrap).await?;
    // What a user's own tool shows.
    let described = describe_topic(bootstrap, RESIZED)?;
    ensure!(
        described.replication_factor == want,
        "kafka-topics --describe: {described:?}"
    );
    for (partition, replicas) in &described.replicas {
        ensure!(
            after.get(&(RESIZED.to_string(), *partition)) == Some(replicas),
            "kafka-topics --describe shows {RESIZED}-{partition} on {replicas:?}, Metadata on {:?}",
            after.get(&(RESIZED.to_string(), *partition))
        );
    }
    for (key, replicas) in after.iter().filter(|((t, _), _)| t == RESIZED) {
        let mut unique = replicas.clone();
        unique.sort_unstable();
        unique.dedup();
        ensure!(unique.len() == want, "{key:?}: {replicas:?}");
        ensure!(
            replicas.first() == before[key].first(),
            "{key:?}: preferred leader changed {:?} -> {replicas:?}",
            before[key]
        );
    }
    eprintln!("{RESIZED}: replication factor {want} after {took:?}");
    Ok(took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_down_refusal_and_replication_factor_changes_lose_nothing() {
    Scenario::run("scale-on-node", |s| async move {
        let started = Instant::now();
        s.install_operator().await?;
        apply_yaml(&s, "kafka", &read_example(NODEPORT_EXAMPLE))?;
        s.wait_kafka_ready("my-cluster", Duration::from_secs(180))
            .await?;
        apply_yaml(&s, "topic", &topic_yaml("my-cluster", LOADED, 6, 3))?;
        // min.insync.replicas 1: with the cluster's 2, acks=all could never succeed at RF 1.
        apply_yaml(
            &s,
            "topic",
            &format!(
                "{}  config:\n    min.insync.replicas: 1\n",
                topic_yaml("my-cluster", RESIZED, 3, 1)
            ),
        )?;
        apply_yaml(
            &s,
            "topic",
            &format!(
                "{}  config:\n    min.insync.replicas: 1\n",
                topic_yaml("my-cluster", BULK, 4, 2)
            ),
        )?;
        wait_ready(&s, "kafkatopic", LOADED, Duration::from_secs(60)).await?;
        wait_ready(&s, "kafkatopic", RESIZED, Duration::from_secs(60)).await?;
        wait_ready(&s, "kafkatopic", BULK, Duration::from_secs(60)).await?;
        let bootstrap = s.bootstrap_servers("my-cluster", "external")?;
        let filling = Instant::now();
        fill_bulk(&bootstrap).await?;
        eprintln!(
            "{BULK}: {:.0} MiB written in {:?}",
            (BULK_RECORDS * BULK_RECORD_BYTES) as f64 / MIB,
            filling.elapsed()
        );
        let resized_records = {
            let producer = producer(&bootstrap, &[])?;
            produce(&producer, RESIZED, "kept", 300).await?
        };
        let load = Load::start(&bootstrap, LOADED, "scale-readers")?;
        let result = async {
            load.wait_acked(200, Duration::from_secs(30)).await?;

            // Replication factor 1 -> 3 -> 2, data intact.
            resize_topic(&s, &bootstrap, 3).await?;
            resize_topic(&s, &bootstrap, 2).await?;
            let seen = consume_to_end(&bootstrap, RESIZED, Duration::from_secs(60), &[])?;
            let missing = resized_records
                .keys()
                .filter(|v| !seen.contains_key(*v))
                .count();
            ensure!(
                missing == 0,
                "{missing} records of {RESIZED} lost by the resize"
            );
            // Above the broker count: refused, nothing changes.
            merge_patch(&s, "kafkatopic", RESIZED, r#"{"spec":{"replicas":4}}"#)?;
            poll_until(Duration::from_secs(60), "replicas 4 refused", || async {
                Ok(
                    jsonpath(&s, "kafkatopic", RESIZED, "{.status.replicasChange.state}")?
                        == "refused",
                )
            })
            .await?;
            let layout = replica_layout(&bootstrap).await?;
            ensure!(
                layout
                    .iter()
                    .filter(|((t, _), _)| t == RESIZED)
                    .all(|(_, r)| r.len() == 2),
                "a refused change moved replicas"
            );
            merge_patch(&s, "kafkatopic", RESIZED, r#"{"spec":{"replicas":2}}"#)?;

            // 3 -> 1 is refused and changes nothing.
            let sts = s.api::<StatefulSet>();
            scale_to(&s, 1)?;
            poll_until(Duration::from_secs(60), "ScaleDownRefused", || async {
                let warning = jsonpath(
                    &s,
                    "kafka",
                    "my-cluster",
                    "{.status.conditions[?(@.reason==\"ScaleDownRefused\")].message}",
                )?;
                Ok(warning.contains("voters") && warning.contains(LOADED))
            })
            .await?;
            tokio::time::sleep(Duration::from_secs(5)).await;
            let replicas = sts.get("my-cluster-kafka").await?.spec.unwrap().replicas;
            ensure!(
                replicas == Some(3),
                "refused scale-down changed the StatefulSet: {replicas:?}"
            );
            scale_to(&s, 3)?;

            // 3 -> 5 under a throttle: the new brokers get their share.
            set_throttle(&s, THROTTLE)?;
            let before_up = replica_layout(&bootstrap).await?;
            let up = Instant::now();
            scale_to(&s, 5)?;
            let observed = std::sync::Mutex::new(MoveObservations::default());
            poll_until(
                Duration::from_secs(420),
                "balanced over 5 brokers",
                || async {
                    let brokers = rebalance(&s, "brokers")?;
                    let reason = rebalance(&s, "reason")?;
                    let moving = rebalance(&s, "partitionsTotal")?;
                    let bytes_left = rebalance(&s, "bytesLeft")?;
                    let rate =
                        cluster_default(&bootstrap, "follower.replication.throttled.rate").await?;
                    observed.lock().unwrap().see(
                        reason == "ScaleUp" && moving.parse::<i32>().unwrap_or(0) > 0,
                        bytes_left.parse().ok(),
                        rate,
                    );
                    Ok(brokers == "5" && reason.is_empty())
                },
            )
            .await
            .with_context(|| {
                format!(
                    "status.rebalance: {}",
                    jsonpath(&s, "kafka", "my-cluster", "{.status.rebalance}").unwrap_or_default()
                )
            })?;
            let up_took = up.elapsed();
            let observed = observed.into_inner().unwrap();
            let moving_for = observed.moving_for();
            let (moved, per_broker) = bytes_moved(&bootstrap, &before_up).await?;
            eprintln!(
                "3 -> 5 moved {:.1} MiB ({per_broker:?}) in {moving_for:?} of reassignment \
                 (throttle {:.0} MiB/s per broker): {} overall; largest bytesLeft seen {:?}",
                moved as f64 / MIB,
                THROTTLE as f64 / MIB,
                observed.rate(moved),
                observed.max_bytes_left
            );
            ensure!(
                observed.throttle_seen.as_deref() == Some(THROTTLE.to_string().as_str()),
                "the brokers never had the throttle rate while replicas moved: {observed:?}"
            );
            ensure!(
                observed.max_bytes_left.is_some_and(|b| b > 0),
                "status.rebalance.bytesLeft never showed bytes to copy: {observed:?}"
            );
            // The throttle held: no new broker received more than its rate allows over the
            // longest the moves can have run (what was seen plus a poll gap at each end), plus
            // the bucket's one-second burst.
            let longest = moving_for + observed.max_gap * 2 + Duration::from_secs(1);
            let allowed = THROTTLE as f64 * longest.as_secs_f64() * 1.3;
            for (broker, bytes) in &per_broker {
                ensure!(
                    (*bytes as f64) <= allowed,
                    "broker {broker} received {bytes} bytes in at most {longest:?}, more than \
                     a {THROTTLE} B/s throttle allows"
                );
            }
            // Cleaned up: no throttle left to slow a later catch-up.
            ensure!(
                cluster_default(&bootstrap, "follower.replication.throttled.rate")
                    .await?
                    .is_none(),
                "the throttle rate stayed after the rebalance"
            );
            for topic in [LOADED, RESIZED, BULK] {
                let left =
                    topic_override(&bootstrap, topic, "follower.replication.throttled.replicas")
                        .await?;
                ensure!(
                    left.is_none(),
                    "{topic} kept its throttled replicas: {left:?}"
                );
            }
            let layout = replica_layout(&bootstrap).await?;
            let (replicas, leaders) = counts(&layout);
            eprintln!("after 3 -> 5 ({up_took:?}): replicas {replicas:?}, leaders {leaders:?}");
            ensure!(
                spread(&replicas, 5) <= 1,
                "replicas not balanced: {replicas:?}"
            );
            ensure!(
                spread(&leaders, 5) <= 1,
                "leaders not balanced: {leaders:?}"
            );
            s.wait_kafka_ready("my-cluster", Duration::from_secs(120))
                .await?;

            // 5 -> 3, unthrottled (the raw reassignment rate): brokers 4 and 3 drained before
            // their pods go.
            set_throttle(&s, 0)?;
            let before_down = replica_layout(&bootstrap).await?;
            let down = Instant::now();
            scale_to(&s, 3)?;
            let observed = std::sync::Mutex::new(MoveObservations::default());
            let stranded_seen = std::sync::Mutex::new(Vec::new());
            poll_until(
                Duration::from_secs(420),
                "StatefulSet at 3, drained",
                || async {
                    let spec = sts.get("my-cluster-kafka").await?.spec.unwrap().replicas;
                    let reason = rebalance(&s, "reason")?;
                    let pending = rebalance(&s, "partitionsPending")?;
                    observed.lock().unwrap().see(
                        spec == Some(5)
                            && reason == "ScaleDown"
                            && pending.parse::<i32>().unwrap_or(0) > 0,
                        None,
                        None,
                    );
                    if spec == Some(5) {
                        return Ok(false);
                    }
                    // The moment the StatefulSet shrinks, the leaving brokers must be empty
                    // (recorded, not retried: poll_until would retry an error).
                    let layout = replica_layout(&bootstrap).await?;
                    let stranded: Vec<_> = layout
                        .iter()
                        .filter(|(_, r)| r.iter().any(|b| *b >= spec.unwrap_or(5)))
                        .map(|(k, r)| format!("{k:?} on {r:?} with the StatefulSet at {spec:?}"))
                        .collect();
                    stranded_seen.lock().unwrap().extend(stranded);
                    Ok(spec == Some(3))
                },
            )
            .await?;
            let stranded = stranded_seen.into_inner().unwrap();
            ensure!(
                stranded.is_empty(),
                "the StatefulSet shrank while partitions still lived on removed brokers: \
                 {stranded:?}"
            );
            let observed = observed.into_inner().unwrap();
            let moving_for = observed.moving_for();
            s.wait_kafka_ready("my-cluster", Duration::from_secs(180))
                .await?;
            let (moved, per_broker) = bytes_moved(&bootstrap, &before_down).await?;
            eprintln!(
                "5 -> 3 drained and removed in {:?}: {:.1} MiB moved ({per_broker:?}) in \
                 {moving_for:?} unthrottled: {}",
                down.elapsed(),
                moved as f64 / MIB,
                observed.rate(moved)
            );
            let layout = replica_layout(&bootstrap).await?;
            ensure!(
                layout.values().all(|r| r.iter().all(|b| *b < 3)),
                "replicas on removed brokers: {layout:?}"
            );
            // Still one quorum after 3 -> 5 -> 3: the voters the cluster was created with.
            let answers = one_quorum(&bootstrap, 3).await?;
            ensure!(
                answers[0].1 .2 == vec![0, 1, 2],
                "voters changed: {answers:?}"
            );
            let acked = load.acked();
            load.wait_acked(acked + 200, Duration::from_secs(60))
                .await?;
            Ok(())
        }
        .await;
        let finished = load.finish(true).await;
        result?;
        finished?;

        // A second cluster, 1 -> 3: one quorum.
        let single = single_broker(&read_example(NODEPORT_EXAMPLE))
            .replace("name: my-cluster", "name: small");
        apply_yaml(&s, "kafka", &single)?;
        s.wait_kafka_ready("small", Duration::from_secs(180))
            .await?;
        merge_patch(&s, "kafka", "small", r#"{"spec":{"kafka":{"replicas":3}}}"#)?;
        poll_until(
            Duration::from_secs(240),
            "small at 3 ready brokers",
            || async { Ok(jsonpath(&s, "kafka", "small", "{.status.brokers.ready}")? == "3") },
        )
        .await?;
        s.wait_kafka_ready("small", Duration::from_secs(120))
            .await?;
        let small = s.bootstrap_servers("small", "external")?;
        let answers = one_quorum(&small, 3).await?;
        ensure!(answers[0].1 .2 == vec![0], "voters changed: {answers:?}");
        eprintln!("total {:?}", started.elapsed());
        Ok(())
    })
    .await;
}
