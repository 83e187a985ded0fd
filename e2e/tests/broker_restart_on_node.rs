//! A broker pod deleted under load on a real node: an idempotent `acks=all` producer on the host
//! sends continuously to an RF 3 topic (min.insync.replicas 2) while `my-cluster-kafka-1` is
//! deleted with kubectl; the StatefulSet brings it back (a new pod), it rejoins every partition's
//! ISR, and every acknowledged record is read back exactly once.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::*;
use fjord_e2e::fixture::poll_until;
use fjord_e2e::scenario::Scenario;
use k8s_openapi::api::core::v1::Pod;
use rdkafka::producer::{FutureProducer, FutureRecord};

const TOPIC: &str = "restart-orders";
const VICTIM: &str = "my-cluster-kafka-1";
/// How long the producer runs at least.
const PRODUCE_FOR: Duration = Duration::from_secs(40);

#[derive(Default)]
struct Produced {
    acked: BTreeMap<String, (i32, i64)>,
    failed: Vec<(String, String)>,
}

/// Sends batches of 20 records until `stop`; counts acknowledgements in `acked_count`.
async fn produce_until(
    producer: FutureProducer,
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
            match producer.send_result(FutureRecord::to(TOPIC).key(&key).payload(&value)) {
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

async fn pod_uid(s: &Scenario, name: &str) -> Result<Option<String>> {
    Ok(s.api::<Pod>()
        .get_opt(name)
        .await?
        .and_then(|p| p.metadata.uid))
}

fn running_and_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_broker_pod_comes_back_and_no_acknowledged_record_is_lost_or_duplicated() {
    Scenario::run("broker-restart-on-node", |s| async move {
        let started = Instant::now();
        s.install_operator().await?;
        eprintln!("operator installed after {:?}", started.elapsed());
        apply_yaml(&s, "kafka", &read_example(NODEPORT_EXAMPLE))?;
        s.wait_kafka_ready("my-cluster", Duration::from_secs(180))
            .await?;
        eprintln!("Kafka my-cluster Ready after {:?}", started.elapsed());
        apply_yaml(&s, "topic", &topic_yaml("my-cluster", TOPIC, 3, 3))?;
        wait_ready(&s, "kafkatopic", TOPIC, Duration::from_secs(60)).await?;
        let bootstrap = s.bootstrap_servers("my-cluster", "external")?;
        // The topic is fully replicated before anything happens.
        poll_until(
            Duration::from_secs(30),
            "full ISRs before the restart",
            || {
                let bootstrap = bootstrap.clone();
                async move {
                    let isrs = partition_isrs(&bootstrap, TOPIC, &[])?;
                    Ok(isrs.values().all(|isr| isr == &vec![0, 1, 2]))
                }
            },
        )
        .await?;
        eprintln!("cluster and topic ready after {:?}", started.elapsed());

        let producer = producer(&bootstrap, &[("linger.ms", "5")])?;
        let stop = Arc::new(AtomicBool::new(false));
        let acked_count = Arc::new(AtomicUsize::new(0));
        let producing_since = Instant::now();
        let task = tokio::spawn(produce_until(
            producer.clone(),
            stop.clone(),
            acked_count.clone(),
        ));
        let result = async {
            poll_until(
                Duration::from_secs(30),
                "first acknowledgements",
                || async { Ok(acked_count.load(Ordering::SeqCst) >= 200) },
            )
            .await?;

            let old_uid = pod_uid(&s, VICTIM).await?.context("no pod to delete")?;
            s.kubectl(&["delete", "pod", VICTIM, "--wait=false"])?;
            let deleted_at = Instant::now();
            let acked_at_delete = acked_count.load(Ordering::SeqCst);
            eprintln!("deleted {VICTIM} ({old_uid}) after {acked_at_delete} acknowledgements");

            let pods = s.api::<Pod>();
            // Whether broker 1 was seen out of some ISR while it was away (informational: a
            // short outage may end before the leaders drop it).
            let shrunk = AtomicBool::new(false);
            poll_until(
                Duration::from_secs(120),
                &format!("a new {VICTIM} Running and Ready"),
                || async {
                    if let Ok(isrs) = partition_isrs(&bootstrap, TOPIC, &[]) {
                        if isrs.values().any(|isr| !isr.contains(&1)) {
                            shrunk.store(true, Ordering::SeqCst);
                        }
                    }
                    Ok(pods.get_opt(VICTIM).await?.is_some_and(|pod| {
                        pod.metadata.uid.as_deref() != Some(old_uid.as_str())
                            && pod.metadata.deletion_timestamp.is_none()
                            && running_and_ready(&pod)
                    }))
                },
            )
            .await?;
            let acked_at_ready = acked_count.load(Ordering::SeqCst);
            eprintln!(
                "new {VICTIM} Ready {:?} after the delete ({acked_at_ready} acknowledgements); \
                 broker 1 seen out of an ISR meanwhile: {}",
                deleted_at.elapsed(),
                shrunk.load(Ordering::SeqCst)
            );

            poll_until(
                Duration::from_secs(90),
                "broker 1 back in every partition's ISR",
                || {
                    let bootstrap = bootstrap.clone();
                    async move {
                        let isrs = partition_isrs(&bootstrap, TOPIC, &[])?;
                        Ok(isrs.values().all(|isr| isr == &vec![0, 1, 2]))
                    }
                },
            )
            .await?;
            let acked_at_isr = acked_count.load(Ordering::SeqCst);
            eprintln!(
                "ISRs complete {:?} after the delete ({acked_at_isr} acknowledgements)",
                deleted_at.elapsed()
            );

            // Keep producing for PRODUCE_FOR in all, and a little with the broker back.
            let rest = PRODUCE_FOR.saturating_sub(producing_since.elapsed());
            tokio::time::sleep(rest.max(Duration::from_secs(3))).await;
            let acked_at_end = acked_count.load(Ordering::SeqCst);
            ensure!(
                acked_at_end > acked_at_isr,
                "no acknowledgement after broker 1 rejoined the ISR ({acked_at_isr} before, \
                 {acked_at_end} at the end): the producer is stuck"
            );
            Ok(())
        }
        .await;
        stop.store(true, Ordering::SeqCst);
        let produced = tokio::time::timeout(Duration::from_secs(90), task)
            .await
            .context("the producer did not stop within 90 s")??;
        result?;
        eprintln!(
            "produced for {:?}: {} acknowledged, {} not",
            producing_since.elapsed(),
            produced.acked.len(),
            produced.failed.len()
        );
        for (value, error) in produced.failed.iter().take(5) {
            eprintln!("not acknowledged: {value}: {error}");
        }

        let seen = consume_to_end(&bootstrap, TOPIC, Duration::from_secs(90), &[])?;
        let duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        ensure!(
            duplicates.is_empty(),
            "{} values read more than once, e.g. {:?}",
            duplicates.len(),
            duplicates.iter().take(5).collect::<Vec<_>>()
        );
        let missing: Vec<_> = produced
            .acked
            .iter()
            .filter(|(value, _)| !seen.contains_key(*value))
            .collect();
        ensure!(
            missing.is_empty(),
            "{} of {} acknowledged records missing, e.g. {:?}",
            missing.len(),
            produced.acked.len(),
            missing.iter().take(5).collect::<Vec<_>>()
        );
        let unacked_present = produced
            .failed
            .iter()
            .filter(|(v, _)| seen.contains_key(v))
            .count();
        eprintln!(
            "read {} records: every acknowledged one once ({} unacknowledged ones present); \
             total {:?}",
            seen.len(),
            unacked_present,
            started.elapsed()
        );
        Ok(())
    })
    .await;
}
