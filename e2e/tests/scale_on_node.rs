//! Scaling and replication-factor changes on the real node (issue 14), with an idempotent
//! `acks=all` producer and a consumer group running throughout and the no-acknowledged-loss
//! check at the end:
//!
//! - KafkaTopic `spec.replicas` 1 -> 3 -> 2: every partition gets exactly that many replicas on
//!   distinct brokers, the preferred leader is kept, the records written before are all there;
//! - 3 -> 1 brokers is refused (the voters, and the RF 3 topic, name why) and nothing changes;
//! - 3 -> 5: the new brokers get their share of replicas and leaders (within one of the others);
//! - 5 -> 3: brokers 4 and 3 are drained (metadata shows them hosting nothing) before their pods go;
//! - a second cluster scaled 1 -> 3 keeps one quorum: DescribeQuorum from every broker names the
//!   same leader, epoch and voters.
//!
//! Printed: reassignment durations and the scale 3 -> 5 total.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::load::Load;
use common::protocol::{broker_addresses, describe_quorum, replica_layout};
use common::*;
use fjord_e2e::fixture::poll_until;
use fjord_e2e::scenario::Scenario;
use k8s_openapi::api::apps::v1::StatefulSet;

const LOADED: &str = "scale-orders";
const RESIZED: &str = "scale-resized";

/// Asks for `brokers` brokers in Kafka my-cluster.
fn scale_to(s: &Scenario, brokers: i32) -> Result<()> {
    merge_patch(
        s,
        "kafka",
        "my-cluster",
        &format!(r#"{{"spec":{{"kafka":{{"replicas":{brokers}}}}}}}"#),
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
        wait_ready(&s, "kafkatopic", LOADED, Duration::from_secs(60)).await?;
        wait_ready(&s, "kafkatopic", RESIZED, Duration::from_secs(60)).await?;
        let bootstrap = s.bootstrap_servers("my-cluster", "external")?;
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

            // 3 -> 5: the new brokers get their share.
            let up = Instant::now();
            scale_to(&s, 5)?;
            poll_until(
                Duration::from_secs(420),
                "balanced over 5 brokers",
                || async {
                    let brokers =
                        jsonpath(&s, "kafka", "my-cluster", "{.status.rebalance.brokers}")?;
                    let reason = jsonpath(&s, "kafka", "my-cluster", "{.status.rebalance.reason}")?;
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

            // 5 -> 3: brokers 4 and 3 drained before their pods go.
            let down = Instant::now();
            scale_to(&s, 3)?;
            poll_until(
                Duration::from_secs(420),
                "StatefulSet at 3, drained",
                || async {
                    let spec = sts.get("my-cluster-kafka").await?.spec.unwrap().replicas;
                    if spec == Some(5) {
                        return Ok(false);
                    }
                    // The moment the StatefulSet shrinks, the leaving brokers must be empty.
                    let layout = replica_layout(&bootstrap).await?;
                    let stranded: Vec<_> = layout
                        .iter()
                        .filter(|(_, r)| r.iter().any(|b| *b >= spec.unwrap_or(5)))
                        .collect();
                    ensure!(
                        stranded.is_empty(),
                        "StatefulSet at {spec:?} while partitions still live on removed brokers: \
                     {stranded:?}"
                    );
                    Ok(spec == Some(3))
                },
            )
            .await?;
            s.wait_kafka_ready("my-cluster", Duration::from_secs(180))
                .await?;
            eprintln!("5 -> 3 drained and removed in {:?}", down.elapsed());
            let layout = replica_layout(&bootstrap).await?;
            ensure!(
                layout.values().all(|r| r.iter().all(|b| *b < 3)),
                "replicas on removed brokers: {layout:?}"
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
        // Every broker answers (its own node port may take a moment to be routed after it
        // turns Ready), and all give the same answer.
        let answers = std::sync::Mutex::new(Vec::new());
        poll_until(
            Duration::from_secs(60),
            "DescribeQuorum from all three brokers",
            || async {
                let addresses = broker_addresses(&small).await?;
                let mut got = Vec::new();
                for (id, address) in &addresses {
                    match describe_quorum(address).await {
                        Ok(answer) => got.push((*id, answer)),
                        Err(e) => {
                            eprintln!("broker {id} at {address}: {e:#}");
                            return Ok(false);
                        }
                    }
                }
                let complete = got.len() == 3;
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
        ensure!(answers[0].1 .2 == vec![0], "voters changed: {answers:?}");
        eprintln!("total {:?}", started.elapsed());
        Ok(())
    })
    .await;
}
