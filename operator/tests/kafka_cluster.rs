//! The Kafka reconciler against the local cluster with a real node: CRDs install, a `Kafka`
//! becomes its objects and its broker pods really run and come Ready (the operator, in this
//! process on the host, reaches them through a nodeport listener), config edits change the
//! ConfigMap and the pod-template hash (and a roller without restart-safety answers restarts
//! nothing and says so), deleted objects come back, deleting the `Kafka`
//! garbage-collects everything, persistent storage gets claims bound by the cluster's default
//! StorageClass that outlive the cluster, and invalid resources are rejected at admission.
//!
//! The tests whose brokers run need `cargo xtask cluster up` (see `support::run_on_node`); the
//! admission test needs only a control plane.

mod support;

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use fjord_e2e::fixture::{poll_until, TestNamespace};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;
use support::*;

const HASH: &str = "kafka.fjord.dev/config-hash";

fn example(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("examples").join(name)).expect("example exists")
}

/// Metadata (no topics) from the broker at `address`.
async fn metadata(address: &str) -> Result<MetadataResponse> {
    let mut conn = tokio::time::timeout(WAIT, fjord_client::Connection::connect(address))
        .await
        .with_context(|| format!("connecting to {address}"))??;
    let request = MetadataRequest::default().with_topics(Some(vec![]));
    Ok(tokio::time::timeout(WAIT, conn.send(&request, 12))
        .await
        .with_context(|| format!("metadata from {address}"))??)
}

/// The uids of my-cluster's broker pods.
async fn pod_uids(pods: &kube::Api<Pod>) -> Result<Vec<Option<String>>> {
    Ok(pods
        .list(&ListParams::default().labels("kafka.fjord.dev/cluster=my-cluster"))
        .await?
        .items
        .into_iter()
        .map(|p| p.metadata.uid)
        .collect())
}

fn template_hash(sts: &StatefulSet) -> String {
    sts.spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()[HASH]
        .clone()
}

#[tokio::test]
async fn kafka_resource_becomes_a_statefulset_and_its_companions() {
    run_on_node("kafka-objects", |ns, node_ip| async move {
        install_crds(&ns.client).await?;
        let _operator = start_operator(&ns);
        // The example plus a nodeport listener: the operator on the host reaches brokers only
        // through node ports.
        let base = node_ports::KAFKA_OBJECTS;
        let kafka =
            reachable_from_host(&ns, &node_ip, &example("kafka-ephemeral.yaml"), base).await?;
        apply_yaml(&ns, &kafka).await?;

        let sts_api = ns.api::<StatefulSet>();
        poll_until(WAIT, "StatefulSet my-cluster-kafka", || async {
            Ok(sts_api.get_opt("my-cluster-kafka").await?.is_some())
        })
        .await?;
        let sts = sts_api.get("my-cluster-kafka").await?;
        let spec = sts.spec.clone().unwrap();
        ensure!(spec.replicas == Some(3));
        ensure!(spec.update_strategy.unwrap().type_.as_deref() == Some("OnDelete"));
        let owner = &sts.metadata.owner_references.clone().unwrap()[0];
        ensure!(owner.kind == "Kafka" && owner.name == "my-cluster");

        // Companions exist, owned by the Kafka.
        let cm = ns.api::<ConfigMap>().get("my-cluster-kafka-config").await?;
        let data = cm.data.clone().unwrap();
        ensure!(
            data.len() == 3,
            "one properties file per broker: {:?}",
            data.keys()
        );
        ensure!(data["broker-2.properties"].contains("node.id=2"));
        ensure!(data["broker-2.properties"].contains("min.insync.replicas=2"));
        for svc in ["my-cluster-kafka-brokers", "my-cluster-kafka-bootstrap"] {
            ns.api::<Service>()
                .get(svc)
                .await
                .with_context(|| svc.to_string())?;
        }
        // The nodeport listener's Services, on the node ports asked for.
        for (svc, port) in [
            ("my-cluster-kafka-external-bootstrap", base),
            ("my-cluster-kafka-external-0", base + 1),
            ("my-cluster-kafka-external-1", base + 2),
            ("my-cluster-kafka-external-2", base + 3),
        ] {
            let spec = ns
                .api::<Service>()
                .get(svc)
                .await
                .with_context(|| svc.to_string())?
                .spec
                .unwrap_or_default();
            ensure!(spec.type_.as_deref() == Some("NodePort"), "{svc}: {spec:?}");
            ensure!(
                spec.ports.unwrap_or_default()[0].node_port == Some(port),
                "{svc} is not on node port {port}"
            );
        }
        ns.api::<PodDisruptionBudget>()
            .get("my-cluster-kafka")
            .await?;
        ns.api::<ServiceAccount>().get("my-cluster-kafka").await?;

        // The real StatefulSet controller makes the pods, each labelled with its index.
        let pods = ns.api::<Pod>();
        poll_until(WAIT, "three broker pods", || async {
            Ok(pods
                .list(&ListParams::default().labels("kafka.fjord.dev/cluster=my-cluster"))
                .await?
                .items
                .len()
                == 3)
        })
        .await?;
        let pod = pods.get("my-cluster-kafka-1").await?;
        ensure!(pod.labels()["apps.kubernetes.io/pod-index"] == "1");

        // The node runs them: all three brokers come Ready and form one cluster.
        let kafkas = fjord_api(&ns, "Kafka");
        let started = std::time::Instant::now();
        let k = wait_condition_for(&kafkas, "my-cluster", "Ready", None, READY_WAIT).await?;
        eprintln!("my-cluster Ready after {:?}", started.elapsed());
        let status = &k.data["status"];
        ensure!(
            status["brokers"] == json!({"ready": 3, "total": 3}),
            "{status}"
        );
        ensure!(
            find_condition(&k, "NotReady", None).is_none(),
            "Ready and NotReady at once: {status}"
        );
        ensure_pods_ready(&ns, "my-cluster", 3).await?;
        let cluster_id = status["clusterId"].as_str().unwrap_or_default().to_string();
        ensure!(cluster_id.len() == 22, "{status}");
        ensure!(status["observedGeneration"] == json!(1));
        ensure!(
            status["listeners"][0]["bootstrapServers"]
                == json!(format!("my-cluster-kafka-bootstrap.{}.svc:9092", ns.name)),
            "{status}"
        );
        ensure!(
            status["listeners"][1]
                == json!({"name": "external", "bootstrapServers": format!("{node_ip}:{base}")}),
            "{status}"
        );
        // Through the bootstrap node port the brokers answer with the cluster id, an active
        // controller and themselves at `<node address>:<own node port>`.
        let metadata = metadata(&format!("{node_ip}:{base}")).await?;
        ensure!(
            metadata.cluster_id.as_deref() == Some(cluster_id.as_str()),
            "{metadata:?}"
        );
        ensure!(metadata.controller_id.0 >= 0, "no controller: {metadata:?}");
        let mut advertised: Vec<(i32, String)> = metadata
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        advertised.sort();
        ensure!(
            advertised
                == (0..3)
                    .map(|n| (n, format!("{node_ip}:{}", base + 1 + n)))
                    .collect::<Vec<_>>(),
            "{advertised:?}"
        );

        // `kubectl get kafka` shows the printer columns.
        let table = fjord_e2e::control_plane::kubectl(
            &fjord_e2e::tools::Tools::require()?,
            &ns.control_plane.kubeconfig,
            &["get", "kafka", "-n", &ns.name],
        )
        .map_err(anyhow::Error::msg)?;
        ensure!(
            table.contains("DESIRED") && table.contains("READY"),
            "{table}"
        );

        // Editing the broker config changes the ConfigMap and the pod-template hash.
        let before = template_hash(&sts);
        // num.partitions is static (log.retention.* would be applied at run time, no roll).
        let patch = json!({"spec": {"kafka": {"config": {"num.partitions": 2}}}});
        kafkas
            .patch("my-cluster", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        poll_until(WAIT, "the new config in the ConfigMap", || async {
            let cm = ns.api::<ConfigMap>().get("my-cluster-kafka-config").await?;
            Ok(cm.data.unwrap()["broker-0.properties"].contains("num.partitions=2"))
        })
        .await?;
        poll_until(WAIT, "a new config hash on the pod template", || async {
            Ok(template_hash(&sts_api.get("my-cluster-kafka").await?) != before)
        })
        .await?;
        // The roller wants all three restarted, but this operator runs on the host, where pod
        // DNS names do not resolve: it cannot ask a broker whether stopping it is safe, so it
        // restarts nothing and says why (a roll in a pod is tested in e2e/tests/roll_on_node.rs).
        let uids_before = pod_uids(&pods).await?;
        poll_until(WAIT, "a blocked roll in status.rollingUpdate", || async {
            let k = kafkas.get("my-cluster").await?;
            let roll = &k.data["status"]["rollingUpdate"];
            Ok(roll["pending"].as_array().is_some_and(|p| p.len() == 3)
                && roll["blockedBy"]
                    .as_str()
                    .is_some_and(|b| b.contains("restart safety unknown")))
        })
        .await?;
        let uids_after = pod_uids(&pods).await?;
        ensure!(
            uids_before == uids_after,
            "a broker was restarted without a safety answer"
        );

        // Drift is repaired: a deleted Service comes back.
        let services = ns.api::<Service>();
        services
            .delete("my-cluster-kafka-bootstrap", &DeleteParams::default())
            .await?;
        poll_until(WAIT, "the bootstrap Service to be recreated", || async {
            Ok(services
                .get_opt("my-cluster-kafka-bootstrap")
                .await?
                .is_some_and(|s| s.metadata.deletion_timestamp.is_none()))
        })
        .await?;

        // A key the operator owns is refused without touching anything.
        let cm_before = ns
            .api::<ConfigMap>()
            .get("my-cluster-kafka-config")
            .await?
            .data;
        let patch = json!({"spec": {"kafka": {"config": {"node.id": 7}}}});
        kafkas
            .patch("my-cluster", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let k = wait_condition(&kafkas, "my-cluster", "NotReady", Some("InvalidSpec")).await?;
        let message =
            find_condition(&k, "NotReady", Some("InvalidSpec")).unwrap()["message"].clone();
        ensure!(message.as_str().unwrap().contains("node.id"), "{message}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        ensure!(
            ns.api::<ConfigMap>()
                .get("my-cluster-kafka-config")
                .await?
                .data
                == cm_before
        );

        // Deleting the Kafka garbage-collects everything it owned.
        kafkas
            .delete("my-cluster", &DeleteParams::default())
            .await?;
        poll_until(
            Duration::from_secs(120),
            "garbage collection of the cluster's objects and pods",
            || async {
                Ok(sts_api.get_opt("my-cluster-kafka").await?.is_none()
                    && pods
                        .list(&ListParams::default().labels("kafka.fjord.dev/cluster=my-cluster"))
                        .await?
                        .items
                        .is_empty()
                    && ns
                        .api::<ConfigMap>()
                        .get_opt("my-cluster-kafka-config")
                        .await?
                        .is_none()
                    && services
                        .list(&ListParams::default().labels("kafka.fjord.dev/cluster=my-cluster"))
                        .await?
                        .items
                        .is_empty()
                    && ns
                        .api::<PodDisruptionBudget>()
                        .get_opt("my-cluster-kafka")
                        .await?
                        .is_none()
                    && ns
                        .api::<ServiceAccount>()
                        .get_opt("my-cluster-kafka")
                        .await?
                        .is_none())
            },
        )
        .await?;
        Ok(())
    })
    .await;
}

/// The admission error for `yaml`, which must be refused.
async fn rejection(ns: &TestNamespace, yaml: &str) -> Result<String> {
    match apply_yaml(ns, yaml).await {
        Ok(_) => anyhow::bail!("the API server accepted an invalid resource:\n{yaml}"),
        Err(e) => Ok(format!("{e:#}")),
    }
}

const VALID: &str = r#"
apiVersion: kafka.fjord.dev/v1
kind: Kafka
metadata: {name: bad}
spec:
  kafka:
    replicas: 3
    listeners:
      - {name: plain, port: 9092, type: internal, tls: false}
    storage: {type: ephemeral}
"#;

#[tokio::test]
async fn persistent_example_gets_claims_that_outlive_the_cluster() {
    run_on_node("kafka-persistent", |ns, _node_ip| async move {
        install_crds(&ns.client).await?;
        let _operator = start_operator(&ns);
        apply_yaml(&ns, &example("kafka-persistent.yaml")).await?;
        let sts_api = ns.api::<StatefulSet>();
        poll_until(WAIT, "StatefulSet prod-cluster-kafka", || async {
            Ok(sts_api.get_opt("prod-cluster-kafka").await?.is_some())
        })
        .await?;
        let spec = sts_api.get("prod-cluster-kafka").await?.spec.unwrap();
        let claims = spec.volume_claim_templates.unwrap();
        let requests = claims[0]
            .spec
            .clone()
            .unwrap()
            .resources
            .unwrap()
            .requests
            .unwrap();
        ensure!(requests["storage"].0 == "100Gi", "{requests:?}");
        let retention = spec.persistent_volume_claim_retention_policy.unwrap();
        ensure!(retention.when_deleted.as_deref() == Some("Retain"));
        ensure!(retention.when_scaled.as_deref() == Some("Retain"));
        let pod = spec.template.spec.unwrap();
        let container = &pod.containers[0];
        ensure!(container.resources.clone().unwrap().limits.unwrap()["memory"].0 == "2Gi");
        ensure!(container
            .args
            .clone()
            .unwrap()
            .contains(&"broker.rack=$(BROKER_RACK)".to_string()));

        // The StatefulSet controller makes one claim per broker (pods are created in parallel),
        // and the cluster's default StorageClass provisions and binds them. Whether the pods
        // fit on the node (1 CPU each requested, 2 cores) is not this test's business.
        let pvcs = ns.api::<PersistentVolumeClaim>();
        let claim_names: Vec<String> = (0..3)
            .map(|n| {
                format!(
                    "{}-prod-cluster-kafka-{n}",
                    claims[0].metadata.name.as_deref().unwrap()
                )
            })
            .collect();
        poll_until(Duration::from_secs(120), "three Bound claims", || async {
            let list = pvcs.list(&ListParams::default()).await?.items;
            let mut bound: Vec<String> = list
                .iter()
                .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
                .map(|c| c.name_any())
                .collect();
            bound.sort();
            Ok(bound == claim_names)
        })
        .await?;
        for name in &claim_names {
            let claim = pvcs.get(name).await?;
            let spec = claim.spec.clone().unwrap_or_default();
            ensure!(
                spec.storage_class_name.as_deref() == Some("fjord-local"),
                "{name}: {spec:?}"
            );
            ensure!(spec.volume_name.is_some(), "{name} has no volume");
        }

        // Deleting the Kafka removes the StatefulSet and its pods but keeps the claims
        // (deleteClaim: false), still Bound to their volumes.
        let kafkas = fjord_api(&ns, "Kafka");
        kafkas
            .delete("prod-cluster", &DeleteParams::default())
            .await?;
        let pods = ns.api::<Pod>();
        poll_until(
            Duration::from_secs(120),
            "the StatefulSet and its pods to be gone",
            || async {
                Ok(sts_api.get_opt("prod-cluster-kafka").await?.is_none()
                    && pods
                        .list(&ListParams::default().labels("kafka.fjord.dev/cluster=prod-cluster"))
                        .await?
                        .items
                        .is_empty())
            },
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        for name in &claim_names {
            let claim = pvcs
                .get(name)
                .await
                .with_context(|| format!("claim {name} was deleted"))?;
            ensure!(
                claim.metadata.deletion_timestamp.is_none(),
                "claim {name} is being deleted"
            );
            ensure!(
                claim.status.and_then(|s| s.phase).as_deref() == Some("Bound"),
                "claim {name} is no longer Bound"
            );
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn invalid_resources_are_rejected_with_readable_messages() {
    TestNamespace::run("kafka-invalid", |ns| async move {
        install_crds(&ns.client).await?;

        let negative = VALID.replace("replicas: 3", "replicas: -1");
        let e = rejection(&ns, &negative).await?;
        ensure!(e.contains("spec.kafka.replicas") && e.contains("greater than or equal to 1"), "{e}");

        let duplicate = VALID.replace(
            "- {name: plain, port: 9092, type: internal, tls: false}",
            "- {name: plain, port: 9092, type: internal, tls: false}\n      - {name: plain, port: 9093, type: internal, tls: false}",
        );
        let e = rejection(&ns, &duplicate).await?;
        ensure!(e.contains("listener names must be unique"), "{e}");

        let strimzi_only = format!("{VALID}  cruiseControl: {{}}\n");
        let e = rejection(&ns, &strimzi_only).await?;
        ensure!(e.contains("spec.cruiseControl is not supported"), "{e}");

        let unknown_field = VALID.replace("replicas: 3", "replicas: 3\n    brokerRackInitImage: x");
        let e = rejection(&ns, &unknown_field).await?;
        // Server-side apply words it "field not declared in schema"; kubectl's strict create
        // says "unknown field". Either way it is refused, never pruned silently.
        ensure!(
            e.contains("brokerRackInitImage")
                && (e.contains("unknown field") || e.contains("not declared in schema")),
            "{e}"
        );

        let route = VALID.replace("type: internal", "type: route");
        let e = rejection(&ns, &route).await?;
        ensure!(e.contains("spec.kafka.listeners[0].type") && e.contains("supported values"), "{e}");

        let no_size = VALID.replace("{type: ephemeral}", "{type: persistent-claim}");
        let e = rejection(&ns, &no_size).await?;
        ensure!(e.contains("persistent-claim storage needs a size"), "{e}");

        // And the valid ones are accepted.
        apply_yaml(&ns, VALID).await?;
        apply_yaml(&ns, &example("kafka-persistent.yaml")).await?;
        Ok(())
    })
    .await;
}
