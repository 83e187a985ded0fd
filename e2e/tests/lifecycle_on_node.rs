//! Lifecycles on a real node: deleting a `Kafka` removes everything the operator made for it
//! (its PersistentVolumeClaims only with `deleteClaim: true`), brokers on persistent volumes of
//! the default StorageClass come Ready and store records, and `helm uninstall` leaves none of the
//! operator's objects behind.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::*;
use fjord_e2e::fixture::poll_until;
use fjord_e2e::scenario::Scenario;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use serde::Deserialize;

/// Kinds the operator creates for a Kafka (besides the claims).
const OPERATOR_KINDS: &str =
    "statefulsets,pods,services,configmaps,poddisruptionbudgets,serviceaccounts,networkpolicies,secrets";

/// A one-broker Kafka on a 1Gi claim with an `external` nodeport listener.
fn one_broker_kafka(name: &str, delete_claim: Option<bool>) -> String {
    let delete_claim = delete_claim
        .map(|d| format!("\n      deleteClaim: {d}"))
        .unwrap_or_default();
    format!(
        r#"apiVersion: kafka.fjord.dev/v1
kind: Kafka
metadata:
  name: {name}
spec:
  kafka:
    replicas: 1
    listeners:
      - name: plain
        port: 9092
        type: internal
        tls: false
      - name: external
        port: 9094
        type: nodeport
        tls: false
    config:
      default.replication.factor: 1
      min.insync.replicas: 1
      offsets.topic.replication.factor: 1
      auto.create.topics.enable: false
    storage:
      type: persistent-claim
      size: 1Gi{delete_claim}
"#
    )
}

/// `kind/name` of every object with `selector` of `kinds` in the namespace.
fn names_by_label(s: &Scenario, kinds: &str, selector: &str) -> Result<BTreeSet<String>> {
    Ok(s.kubectl(&["get", kinds, "-l", selector, "-o", "name"])?
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

/// Which of `objects` (`kind/name`, namespaced to the scenario unless the kind is cluster-scoped)
/// still exist.
fn existing(s: &Scenario, objects: &[String]) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for object in objects {
        let out = s.kubectl(&["get", object, "--ignore-not-found", "-o", "name"])?;
        if !out.trim().is_empty() {
            found.push(object.clone());
        }
    }
    Ok(found)
}

/// The objects the operator makes for a one-broker Kafka `name` with an `external` nodeport
/// listener, by name.
fn expected_objects(name: &str) -> Vec<String> {
    [
        format!("statefulset.apps/{name}-kafka"),
        format!("pod/{name}-kafka-0"),
        format!("service/{name}-kafka-brokers"),
        format!("service/{name}-kafka-bootstrap"),
        format!("service/{name}-kafka-external-bootstrap"),
        format!("service/{name}-kafka-external-0"),
        format!("configmap/{name}-kafka-config"),
        format!("poddisruptionbudget.policy/{name}-kafka"),
        format!("serviceaccount/{name}-kafka"),
        format!("networkpolicy.networking.k8s.io/{name}-network-policy-kafka"),
        format!("secret/{name}-cluster-ca-cert"),
        format!("secret/{name}-cluster-ca"),
        format!("secret/{name}-clients-ca-cert"),
        format!("secret/{name}-clients-ca"),
        format!("secret/{name}-kafka-brokers"),
        format!("secret/{name}-cluster-operator-certs"),
    ]
    .into()
}

/// Runs a one-broker persistent Kafka, checks it stores records, deletes it, and checks every
/// operator-made object is gone. Returns the claim the broker used (its name and volume).
async fn run_and_delete_kafka(
    s: &Scenario,
    name: &str,
    delete_claim: Option<bool>,
) -> Result<(String, String)> {
    let started = Instant::now();
    s.install_operator().await?;
    apply_yaml(s, "kafka", &one_broker_kafka(name, delete_claim))?;
    s.wait_kafka_ready(name, Duration::from_secs(180)).await?;
    eprintln!("{name} Ready after {:?}", started.elapsed());

    // The broker runs on a claim of the default StorageClass.
    let selector = format!("kafka.fjord.dev/cluster={name}");
    let claims = s
        .api::<PersistentVolumeClaim>()
        .list(&ListParams::default().labels(&selector))
        .await?;
    ensure!(
        claims.items.len() == 1,
        "1 claim for {name}, got {}",
        claims.items.len()
    );
    let claim = &claims.items[0];
    let claim_name = claim.metadata.name.clone().context("claim name")?;
    let claim_spec = claim.spec.clone().context("claim spec")?;
    ensure!(
        claim.status.as_ref().and_then(|st| st.phase.as_deref()) == Some("Bound"),
        "claim {claim_name} not Bound: {:?}",
        claim.status
    );
    ensure!(
        claim_spec.storage_class_name.as_deref() == Some("fjord-local"),
        "claim {claim_name} has StorageClass {:?}, not the default fjord-local",
        claim_spec.storage_class_name
    );
    let volume = claim_spec
        .volume_name
        .clone()
        .context("claim without volume")?;
    let pod = s.api::<Pod>().get(&format!("{name}-kafka-0")).await?;
    let mounted: Vec<String> = pod
        .spec
        .and_then(|spec| spec.volumes)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.persistent_volume_claim.map(|c| c.claim_name))
        .collect();
    ensure!(
        mounted == vec![claim_name.clone()],
        "pod mounts claims {mounted:?}, not {claim_name}"
    );
    let retention = s.kubectl(&[
        "get",
        "statefulset",
        &format!("{name}-kafka"),
        "-o",
        "jsonpath={.spec.persistentVolumeClaimRetentionPolicy.whenDeleted}",
    ])?;
    let want = if delete_claim == Some(true) {
        "Delete"
    } else {
        "Retain"
    };
    ensure!(
        retention.trim() == want,
        "StatefulSet whenDeleted {retention:?}, want {want}"
    );

    // The non-root broker writes to the volume: a topic, records acknowledged and read back.
    apply_yaml(s, "topic", &topic_yaml(name, "lifecycle", 1, 1))?;
    wait_ready(s, "kafkatopic", "lifecycle", Duration::from_secs(60)).await?;
    let bootstrap = s.bootstrap_servers(name, "external")?;
    let producer = producer(&bootstrap, &[])?;
    let acked = produce(&producer, "lifecycle", "p", 20).await?;
    let seen = consume_to_end(&bootstrap, "lifecycle", Duration::from_secs(60), &[])?;
    for value in acked.keys() {
        ensure!(
            seen.get(value) == Some(&1),
            "{value} read {:?} times",
            seen.get(value)
        );
    }
    drop(producer);

    // Everything the operator made is there, found by name and by the cluster label.
    let expected = expected_objects(name);
    let labelled = names_by_label(s, OPERATOR_KINDS, &selector)?;
    for object in &expected {
        ensure!(
            labelled.contains(object),
            "{object} is not among the objects labelled {selector}: {labelled:?}"
        );
    }
    ensure!(
        existing(s, &expected)?.len() == expected.len(),
        "not every expected object exists"
    );

    let deleting = Instant::now();
    s.kubectl(&["delete", "kafka", name, "--wait=true", "--timeout=60s"])?;
    let left = std::sync::Mutex::new(Vec::new());
    poll_until(
        Duration::from_secs(120),
        &format!("every object of {name} gone"),
        || async {
            let mut now: Vec<String> = names_by_label(s, OPERATOR_KINDS, &selector)?
                .into_iter()
                .collect();
            now.extend(existing(s, &expected)?);
            let done = now.is_empty();
            *left.lock().unwrap() = now;
            Ok(done)
        },
    )
    .await
    .with_context(|| format!("left by label or name: {:?}", left.lock().unwrap()))?;
    eprintln!(
        "{name}: every operator object gone {:?} after the delete",
        deleting.elapsed()
    );
    Ok((claim_name, volume))
}

#[tokio::test]
async fn deleting_kafka_with_delete_claim_removes_everything_including_claims() {
    Scenario::run("lifecycle-delete-claim", |s| async move {
        let (claim, volume) = run_and_delete_kafka(&s, "lc-delete", Some(true)).await?;
        let claims = s.api::<PersistentVolumeClaim>();
        poll_until(
            Duration::from_secs(60),
            &format!("claim {claim} deleted"),
            || async { Ok(claims.get_opt(&claim).await?.is_none()) },
        )
        .await?;
        // The StorageClass reclaims with Delete: the provisioner removes the volume too.
        let volumes = Api::<PersistentVolume>::all(s.client.clone());
        poll_until(
            Duration::from_secs(60),
            &format!("volume {volume} deleted"),
            || async { Ok(volumes.get_opt(&volume).await?.is_none()) },
        )
        .await?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn deleting_kafka_keeps_claims_by_default() {
    Scenario::run("lifecycle-keep-claim", |s| async move {
        let (claim, volume) = run_and_delete_kafka(&s, "lc-keep", None).await?;
        // The pod and StatefulSet are gone (so nothing could still be about to collect the
        // claim), and the claim is still there, Bound to the same volume, owned by nothing.
        let kept = s
            .api::<PersistentVolumeClaim>()
            .get_opt(&claim)
            .await?
            .with_context(|| format!("claim {claim} was deleted with deleteClaim unset"))?;
        ensure!(
            kept.metadata.deletion_timestamp.is_none(),
            "claim {claim} is being deleted"
        );
        ensure!(
            kept.metadata
                .owner_references
                .unwrap_or_default()
                .is_empty(),
            "claim {claim} has owners, so it would be garbage-collected"
        );
        ensure!(
            kept.spec.and_then(|spec| spec.volume_name).as_deref() == Some(volume.as_str()),
            "claim {claim} is no longer bound to {volume}"
        );
        let volumes = Api::<PersistentVolume>::all(s.client.clone());
        ensure!(
            volumes.get_opt(&volume).await?.is_some(),
            "volume {volume} is gone"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn helm_uninstall_leaves_no_operator_objects() {
    Scenario::run("lifecycle-helm-uninstall", |s| async move {
        let release = s.install_operator().await?;
        let fullname = format!("{release}-fjord-operator");

        // What the release made, from its manifest, plus the objects named in the chart.
        let manifest = s.helm(&["get", "manifest", &release])?;
        let mut from_manifest = BTreeSet::new();
        for document in serde_yaml::Deserializer::from_str(&manifest) {
            let value = serde_yaml::Value::deserialize(document)?;
            let (Some(kind), Some(object)) = (
                value.get("kind").and_then(|k| k.as_str()),
                value
                    .get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(|n| n.as_str()),
            ) else {
                continue;
            };
            from_manifest.insert(format!("{}/{object}", kind.to_lowercase()));
        }
        let named: Vec<String> = [
            format!("deployment/{fullname}"),
            format!("serviceaccount/{fullname}"),
            format!("role/{fullname}"),
            format!("rolebinding/{fullname}"),
            format!("clusterrole/{fullname}-nodes"),
            format!("clusterrolebinding/{fullname}-nodes"),
            format!("service/{fullname}-metrics"),
        ]
        .into();
        for object in &named {
            ensure!(
                from_manifest.contains(object),
                "the release's manifest has no {object}: {from_manifest:?}"
            );
        }
        let objects: Vec<String> = from_manifest.into_iter().collect();
        let before = existing(&s, &objects)?;
        ensure!(
            before.len() == objects.len(),
            "only {before:?} of {objects:?} exist after install"
        );
        let instance = format!("app.kubernetes.io/instance={release}");
        let namespaced =
            "deployments,replicasets,pods,serviceaccounts,roles,rolebindings,services,configmaps";
        let cluster_scoped = "clusterroles,clusterrolebindings";
        let labelled = names_by_label(&s, namespaced, &instance)?;
        ensure!(
            labelled.iter().any(|o| o.starts_with("pod/")),
            "no operator pod labelled {instance}: {labelled:?}"
        );
        ensure!(
            names_by_label(&s, cluster_scoped, &instance)?.len() == 2,
            "the -nodes ClusterRole and ClusterRoleBinding are not labelled {instance}"
        );

        let uninstalling = Instant::now();
        s.helm(&["uninstall", &release, "--wait", "--timeout", "120s"])?;
        let left = std::sync::Mutex::new(Vec::new());
        poll_until(
            Duration::from_secs(90),
            "every object of the release gone",
            || async {
                let mut now = existing(&s, &objects)?;
                now.extend(names_by_label(&s, namespaced, &instance)?);
                now.extend(names_by_label(&s, cluster_scoped, &instance)?);
                let done = now.is_empty();
                *left.lock().unwrap() = now;
                Ok(done)
            },
        )
        .await
        .with_context(|| format!("left after helm uninstall: {:?}", left.lock().unwrap()))?;
        let releases = s.helm(&["list", "-q"])?;
        ensure!(
            !releases.lines().any(|r| r.trim() == release),
            "helm still lists {release}: {releases}"
        );
        ensure!(
            s.helm(&["status", &release]).is_err(),
            "helm status still finds {release}"
        );
        eprintln!(
            "release {release}: {} objects gone {:?} after helm uninstall",
            objects.len(),
            uninstalling.elapsed()
        );
        Ok(())
    })
    .await;
}
