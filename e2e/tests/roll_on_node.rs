//! A rolling restart on the real node (issue 14): three brokers, an RF 3 topic with
//! min.insync.replicas 2, an idempotent `acks=all` producer and a consumer group running
//! throughout. A static broker config change makes the operator restart every broker: one pod at
//! a time (never two brokers down), the active controller last, `status.rollingUpdate` showing
//! progress, then Ready again. Midway the operator's own pod is deleted; its replacement reads
//! the roll from the status and finishes it without restarting any broker twice. Then a dynamic
//! setting (`log.retention.hours`) is applied as a cluster-wide default and restarts nothing. At the end no
//! send failed after the client's retries and every acknowledged record is in the log exactly
//! once and reached the group. Printed: roll time per broker and in total.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use common::load::Load;
use common::protocol::{cluster_default, controller_id};
use common::*;
use fjord_e2e::fixture::poll_until;
use fjord_e2e::scenario::Scenario;
use k8s_openapi::api::core::v1::Pod;

const TOPIC: &str = "roll-orders";
const BROKERS: i32 = 3;

/// Pod uid and readiness of each broker ordinal present.
async fn broker_pods(s: &Scenario) -> Result<BTreeMap<i32, (String, bool)>> {
    let mut out = BTreeMap::new();
    for ordinal in 0..BROKERS {
        let name = format!("my-cluster-kafka-{ordinal}");
        if let Some(pod) = s.api::<Pod>().get_opt(&name).await? {
            let ready = running_and_ready(&pod);
            out.insert(ordinal, (pod.metadata.uid.unwrap_or_default(), ready));
        }
    }
    Ok(out)
}

fn rolling_update(s: &Scenario) -> Result<String> {
    s.kubectl(&[
        "get",
        "kafka",
        "my-cluster",
        "-o",
        "jsonpath={.status.rollingUpdate}",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_change_rolls_one_broker_at_a_time_controller_last_and_survives_an_operator_restart()
{
    Scenario::run("roll-on-node", |s| async move {
        let started = Instant::now();
        let bootstrap = three_brokers_with_topic(&s, TOPIC, 6).await?;

        let load = Load::start(&bootstrap, TOPIC, "roll-readers")?;
        let result = async {
            load.wait_acked(200, Duration::from_secs(30)).await?;
            let controller = controller_id(&bootstrap).await?;
            let before = broker_pods(&s).await?;
            ensure!(
                before.len() == BROKERS as usize,
                "pods before the roll: {before:?}"
            );
            let mut uids: BTreeMap<i32, BTreeSet<String>> = before
                .iter()
                .map(|(o, (uid, _))| (*o, BTreeSet::from([uid.clone()])))
                .collect();

            // A static broker setting: only a restart applies it.
            merge_patch(
                &s,
                "kafka",
                "my-cluster",
                r#"{"spec":{"kafka":{"config":{"num.partitions":2}}}}"#,
            )?;
            let roll_started = Instant::now();
            let mut restarted: Vec<(i32, Duration)> = Vec::new();
            let mut saw_progress = false;
            let mut operator_killed = false;
            let mut most_down = 0;
            let deadline = Instant::now() + Duration::from_secs(600);
            loop {
                ensure!(
                    Instant::now() < deadline,
                    "the roll did not finish in 600 s; restarted so far {restarted:?}; \
                     status.rollingUpdate: {}",
                    rolling_update(&s).unwrap_or_default()
                );
                let pods = broker_pods(&s).await?;
                let down = BROKERS as usize - pods.values().filter(|(_, ready)| *ready).count();
                most_down = most_down.max(down);
                for (ordinal, (uid, ready)) in &pods {
                    let seen = uids.entry(*ordinal).or_default();
                    if seen.insert(uid.clone()) {
                        eprintln!(
                            "broker {ordinal}: new pod {uid} after {:?}",
                            roll_started.elapsed()
                        );
                    }
                    let replaced = seen.len() > 1;
                    if replaced && *ready && !restarted.iter().any(|(o, _)| o == ordinal) {
                        restarted.push((*ordinal, roll_started.elapsed()));
                    }
                }
                let status = rolling_update(&s)?;
                if !status.trim().is_empty() {
                    saw_progress = true;
                }
                if restarted.len() == 1 && !operator_killed {
                    // Mid-roll: the operator goes away; its replacement must carry on.
                    s.kubectl(&[
                        "delete",
                        "pod",
                        "-l",
                        "app.kubernetes.io/name=fjord-operator",
                        "--wait=false",
                    ])?;
                    operator_killed = true;
                    eprintln!(
                        "deleted the operator pod after {:?} (status: {status})",
                        roll_started.elapsed()
                    );
                }
                if restarted.len() == BROKERS as usize && status.trim().is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let roll_took = roll_started.elapsed();
            s.wait_kafka_ready("my-cluster", Duration::from_secs(120))
                .await?;
            eprintln!("roll order and times: {restarted:?}; total {roll_took:?}");
            ensure!(saw_progress, "status.rollingUpdate never showed the roll");
            ensure!(
                most_down <= 1,
                "{most_down} brokers were down at once during the roll"
            );
            for (ordinal, seen) in &uids {
                if seen.len() != 2 {
                    bail!(
                        "broker {ordinal} ran {} pods during the roll: {seen:?}",
                        seen.len()
                    );
                }
            }
            let last = restarted.last().map(|(o, _)| *o);
            ensure!(
                last == Some(controller),
                "the active controller (broker {controller}) was not restarted last: {restarted:?}"
            );
            let config = s.kubectl(&[
                "get",
                "configmap",
                "my-cluster-kafka-config",
                "-o",
                "jsonpath={.data.broker-0\\.properties}",
            ])?;
            ensure!(config.contains("num.partitions=2"), "{config}");
            let per_broker = roll_took / BROKERS as u32;
            eprintln!("roll time per broker: {per_broker:?}");

            // A dynamic setting is applied at run time and restarts nothing.
            let uids_before = broker_pods(&s).await?;
            merge_patch(
                &s,
                "kafka",
                "my-cluster",
                r#"{"spec":{"kafka":{"config":{"log.retention.hours":170}}}}"#,
            )?;
            poll_until(
                Duration::from_secs(60),
                "log.retention.hours=170 applied",
                || {
                    let bootstrap = bootstrap.clone();
                    async move {
                        Ok(cluster_default(&bootstrap, "log.retention.hours")
                            .await?
                            .as_deref()
                            == Some("170"))
                    }
                },
            )
            .await?;
            tokio::time::sleep(Duration::from_secs(10)).await;
            ensure!(
                broker_pods(&s).await? == uids_before,
                "a dynamic config change restarted brokers"
            );
            ensure!(
                rolling_update(&s)?.trim().is_empty(),
                "a dynamic config change started a roll: {}",
                rolling_update(&s)?
            );
            // Produce a little longer with every broker back.
            let acked = load.acked();
            load.wait_acked(acked + 200, Duration::from_secs(30))
                .await?;
            Ok(())
        }
        .await;
        let finished = load.finish(false).await;
        result?;
        finished?;
        eprintln!("total {:?}", started.elapsed());
        Ok(())
    })
    .await;
}
