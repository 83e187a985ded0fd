//! A broker pod deleted under load on a real node: an idempotent `acks=all` producer on the host
//! sends continuously to an RF 3 topic (min.insync.replicas 2) while `my-cluster-kafka-1` is
//! deleted with kubectl; the StatefulSet brings it back (a new pod), it rejoins every partition's
//! ISR, and every acknowledged record is in the log exactly once and reaches a consumer group
//! that reads throughout.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::load::Load;
use common::*;
use fjord_e2e::fixture::poll_until;
use fjord_e2e::scenario::Scenario;
use k8s_openapi::api::core::v1::Pod;

const TOPIC: &str = "restart-orders";
const VICTIM: &str = "my-cluster-kafka-1";
/// How long the producer runs at least.
const PRODUCE_FOR: Duration = Duration::from_secs(40);

async fn pod_uid(s: &Scenario, name: &str) -> Result<Option<String>> {
    Ok(s.api::<Pod>()
        .get_opt(name)
        .await?
        .and_then(|p| p.metadata.uid))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_broker_pod_comes_back_and_no_acknowledged_record_is_lost_or_duplicated() {
    Scenario::run("broker-restart-on-node", |s| async move {
        let started = Instant::now();
        let bootstrap = three_brokers_with_topic(&s, TOPIC, 3).await?;

        let load = Load::start(&bootstrap, TOPIC, "restart-readers")?;
        let producing_since = Instant::now();
        let result = async {
            load.wait_acked(200, Duration::from_secs(30)).await?;

            let old_uid = pod_uid(&s, VICTIM).await?.context("no pod to delete")?;
            s.kubectl(&["delete", "pod", VICTIM, "--wait=false"])?;
            let deleted_at = Instant::now();
            let acked_at_delete = load.acked();
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
                            && running_and_ready(&pod)
                    }))
                },
            )
            .await?;
            let acked_at_ready = load.acked();
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
            let acked_at_isr = load.acked();
            eprintln!(
                "ISRs complete {:?} after the delete ({acked_at_isr} acknowledgements)",
                deleted_at.elapsed()
            );

            // Keep producing for PRODUCE_FOR in all, and a little with the broker back.
            let rest = PRODUCE_FOR.saturating_sub(producing_since.elapsed());
            tokio::time::sleep(rest.max(Duration::from_secs(3))).await;
            let acked_at_end = load.acked();
            ensure!(
                acked_at_end > acked_at_isr,
                "no acknowledgement after broker 1 rejoined the ISR ({acked_at_isr} before, \
                 {acked_at_end} at the end): the producer is stuck"
            );
            Ok(())
        }
        .await;
        // The producer may see errors while the broker is away (retried by the client); what
        // matters is that nothing acknowledged is lost or duplicated.
        let finished = load.finish(true).await;
        result?;
        finished?;
        eprintln!("total {:?}", started.elapsed());
        Ok(())
    })
    .await;
}
