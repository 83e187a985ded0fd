//! The product end to end on a real node: the operator installed with Helm runs in a pod from
//! our image, a `Kafka` resource becomes three broker pods running our broker image that come
//! Ready, a `KafkaTopic` becomes a topic, and a librdkafka client on the host produces and
//! consumes through the nodeport listener. The operator keeps the cluster and clients CAs in
//! Strimzi-shaped Secrets.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context};
use common::*;
use fjord_e2e::scenario::Scenario;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;

#[tokio::test]
async fn kafka_comes_ready_on_the_node_and_serves_clients_on_the_host() {
    Scenario::run("kafka-on-node", |s| async move {
        s.install_operator().await?;
        let operator_pods = s
            .api::<Pod>()
            .list(&ListParams::default().labels("app.kubernetes.io/name=fjord-operator"))
            .await?;
        ensure!(
            operator_pods.items.len() == 1,
            "one operator pod, got {}",
            operator_pods.items.len()
        );

        s.kubectl(&[
            "apply",
            "-f",
            &fjord_e2e::scenario::repo_root()
                .join(NODEPORT_EXAMPLE)
                .display()
                .to_string(),
        ])?;
        s.wait_kafka_ready("my-cluster", Duration::from_secs(240))
            .await?;

        let broker_archive = fjord_e2e::scenario::image_archives()
            .into_iter()
            .find(|p| p.to_string_lossy().contains("fjord-broker"))
            .context("no fjord-broker image archive in target/images")?;
        let broker_image = fjord_e2e::oci::open_archive(&broker_archive)?.image;
        // Three broker pods, Running and Ready, from our image (its digest in the pod status).
        let pods = s
            .api::<Pod>()
            .list(&ListParams::default().labels("kafka.fjord.dev/cluster=my-cluster"))
            .await?;
        ensure!(
            pods.items.len() == 3,
            "3 broker pods, got {}",
            pods.items.len()
        );
        for pod in &pods.items {
            let status = pod.status.clone().context("pod status")?;
            ensure!(
                status.phase.as_deref() == Some("Running"),
                "{:?} not running",
                pod.metadata.name
            );
            let container = &status.container_statuses.clone().unwrap_or_default()[0];
            ensure!(container.ready, "{:?} not ready", pod.metadata.name);
            ensure!(
                container.image.contains("fjord-broker"),
                "image {}",
                container.image
            );
            // The image the kubelet runs is the one `cargo xtask image` wrote: containerd
            // reports the image config's digest as the pod's image ID.
            ensure!(
                container.image_id == broker_image.config_digest,
                "pod runs image {} but target/images holds {}",
                container.image_id,
                broker_image.config_digest
            );
        }
        // The operator made both CAs, in Strimzi's Secrets: a CA certificate valid for the
        // default 365 days in `-cert` (also as a PKCS#12 truststore), its key only in the
        // other Secret.
        for (ca, cn) in [
            ("cluster-ca", "cluster-ca my-cluster"),
            ("clients-ca", "clients-ca my-cluster"),
        ] {
            let cert_secret = format!("my-cluster-{ca}-cert");
            let pem = secret_value(&s, &cert_secret, "ca.crt")?;
            let described =
                openssl_x509(&pem, &["-subject", "-enddate", "-ext", "basicConstraints"])?;
            ensure!(described.contains(cn), "{cert_secret}: {described}");
            ensure!(
                described.contains("CA:TRUE"),
                "{cert_secret} is no CA: {described}"
            );
            let keys = secret_keys(&s, &cert_secret)?;
            ensure!(
                keys == ["ca.crt", "ca.p12", "ca.password"],
                "{cert_secret} holds {keys:?} (the certificate, PEM and PKCS#12, never the key)"
            );
            let key_secret = format!("my-cluster-{ca}");
            let keys = secret_keys(&s, &key_secret)?;
            ensure!(keys == ["ca.key"], "{key_secret} holds {keys:?}");
            let end = openssl_x509(&pem, &["-checkend", &(364 * 24 * 3600).to_string()]);
            ensure!(
                end.is_ok(),
                "{cert_secret} expires within 364 days: {end:?}"
            );
        }

        // `kubectl logs` works against the node.
        let logs = s.kubectl(&["logs", "my-cluster-kafka-0", "--tail=50"])?;
        ensure!(!logs.trim().is_empty(), "kubectl logs returned nothing");

        let topic = r#"apiVersion: kafka.fjord.dev/v1
kind: KafkaTopic
metadata:
  name: e2e-orders
  labels:
    kafka.fjord.dev/cluster: my-cluster
spec:
  partitions: 3
  replicas: 3
"#;
        let topic_file = std::env::temp_dir().join(format!("{}-topic.yaml", s.namespace));
        std::fs::write(&topic_file, topic)?;
        s.kubectl(&["apply", "-f", &topic_file.display().to_string()])?;
        fjord_e2e::fixture::poll_until(
            Duration::from_secs(60),
            "KafkaTopic e2e-orders Ready",
            || async {
                let ready = s.kubectl(&[
                    "get",
                    "kafkatopic",
                    "e2e-orders",
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])?;
                Ok(ready.trim() == "True")
            },
        )
        .await?;

        let bootstrap = s.bootstrap_servers("my-cluster", "external")?;
        ensure!(
            bootstrap.starts_with(&s.cluster.node_address().to_string()),
            "bootstrap {bootstrap} is not on the node address"
        );
        let producer = producer(&bootstrap, &[])?;
        let acked = produce(&producer, "e2e-orders", "v", 100).await?;
        ensure!(acked.len() == 100);
        let seen = consume_all(&bootstrap, "e2e-orders", 100, Duration::from_secs(60), &[])?;
        for value in acked.keys() {
            ensure!(
                seen.get(value) == Some(&1),
                "{value} read {:?} times",
                seen.get(value)
            );
        }
        Ok(())
    })
    .await;
}
