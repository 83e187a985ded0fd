//! The KafkaTopic reconciler against the real control plane and a real fjord broker, checked
//! with Apache Kafka's own `kafka-topics` and `kafka-configs`.

mod support;

use anyhow::{ensure, Result};
use fjord_e2e::fixture::{poll_until, TestNamespace};
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use support::*;

fn cluster_yaml(address: &str) -> String {
    format!(
        r#"
apiVersion: kafka.fjord.dev/v1
kind: Kafka
metadata:
  name: my-cluster
  annotations: {{kafka.fjord.dev/admin-bootstrap: "{address}"}}
spec:
  kafka:
    replicas: 1
    listeners: [{{name: plain, port: 9092, type: internal, tls: false}}]
    storage: {{type: ephemeral}}
"#
    )
}

fn describe(address: &str, topic: &str) -> Result<String> {
    kafka_cli(
        "kafka-topics",
        &[
            "--bootstrap-server",
            address,
            "--describe",
            "--topic",
            topic,
        ],
    )
}

fn overrides(address: &str, topic: &str) -> Result<String> {
    kafka_cli(
        "kafka-configs",
        &[
            "--bootstrap-server",
            address,
            "--describe",
            "--entity-type",
            "topics",
            "--entity-name",
            topic,
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topics_follow_their_resources() {
    TestNamespace::run("kafka-topic", |ns| async move {
        kafka_bin_dir()?;
        install_crds(&ns.client).await?;
        let broker = start_broker().await?;
        let addr = broker.address.clone();
        apply_yaml(&ns, &cluster_yaml(&addr)).await?;
        // A topic nobody declared: the operator must leave it alone.
        kafka_cli(
            "kafka-topics",
            &["--bootstrap-server", &addr, "--create", "--topic", "unmanaged", "--partitions", "1"],
        )?;
        let _operator = start_operator(&ns);
        let topics = fjord_api(&ns, "KafkaTopic");

        // Create: partitions, replicas and config as declared (the example, on our cluster).
        let example = std::fs::read_to_string(repo_root().join("examples/kafka-topic.yaml"))?
            .replace("replicas: 3", "replicas: 1");
        apply_yaml(&ns, &example).await?;
        let t = wait_condition(&topics, "orders", "Ready", None).await?;
        ensure!(t.data["status"]["topicName"] == "orders");
        ensure!(t.data["status"]["topicId"].as_str().is_some_and(|id| id.len() == 36));
        let d = describe(&addr, "orders")?;
        ensure!(d.contains("PartitionCount: 6") && d.contains("ReplicationFactor: 1"), "{d}");
        ensure!(d.contains("retention.ms=604800000"), "{d}");

        // Grow partitions and change config: set one key, drop another.
        let patch = json!({"spec": {"partitions": 8, "config": {"retention.ms": 3600000, "cleanup.policy": null}}});
        topics.patch("orders", &PatchParams::default(), &Patch::Merge(&patch)).await?;
        poll_until(WAIT, "8 partitions and the new retention", || async {
            let d = describe(&addr, "orders")?;
            Ok(d.contains("PartitionCount: 8") && d.contains("retention.ms=3600000"))
        })
        .await?;
        let o = overrides(&addr, "orders")?;
        ensure!(!o.contains("cleanup.policy"), "removed key must be gone: {o}");

        // A partition decrease is refused and changes nothing.
        let patch = json!({"spec": {"partitions": 2, "config": {"retention.ms": 5}}});
        topics.patch("orders", &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let t = wait_condition(&topics, "orders", "NotReady", Some("PartitionDecreaseNotSupported")).await?;
        let message = find_condition(&t, "NotReady", None).unwrap()["message"].to_string();
        ensure!(message.contains("has 8 partitions"), "{message}");
        let d = describe(&addr, "orders")?;
        ensure!(d.contains("PartitionCount: 8") && d.contains("retention.ms=3600000"), "{d}");

        // An unknown config key is refused by the brokers; nothing changes.
        let patch = json!({"spec": {"partitions": 8, "config": {"retention.ms": 5, "no.such.key": 1}}});
        topics.patch("orders", &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let t = wait_condition(&topics, "orders", "NotReady", Some("InvalidConfig")).await?;
        let message = find_condition(&t, "NotReady", None).unwrap()["message"].to_string();
        ensure!(message.contains("no.such.key"), "{message}");
        ensure!(overrides(&addr, "orders")?.contains("retention.ms=3600000"));

        // Back to valid: Ready again.
        let patch = json!({"spec": {"config": {"no.such.key": null}}});
        topics.patch("orders", &PatchParams::default(), &Patch::Merge(&patch)).await?;
        wait_condition(&topics, "orders", "Ready", None).await?;
        ensure!(overrides(&addr, "orders")?.contains("retention.ms=5"));

        // The example user of the same cluster: credential, Secret and its four ACL bindings.
        let example = std::fs::read_to_string(repo_root().join("examples/kafka-user.yaml"))?;
        apply_yaml(&ns, &example).await?;
        let users = fjord_api(&ns, "KafkaUser");
        let u = wait_condition(&users, "orders-reader", "Ready", None).await?;
        ensure!(u.data["status"]["secret"] == "orders-reader", "{}", u.data["status"]);
        let acls = kafka_cli(
            "kafka-acls",
            &["--bootstrap-server", &addr, "--list", "--principal", "User:orders-reader"],
        )?;
        let bindings = acls.lines().filter(|l| l.contains("principal=User:orders-reader")).count();
        ensure!(bindings == 4, "{acls}");
        ensure!(acls.contains("operation=WRITE, permissionType=DENY"), "{acls}");

        // The Secret's sasl.jaas.config logs in over SCRAM-SHA-512; a wrong password does not.
        let secret = ns
            .api::<k8s_openapi::api::core::v1::Secret>()
            .get("orders-reader")
            .await?;
        let data = secret.data.unwrap_or_default();
        let jaas = String::from_utf8(data["sasl.jaas.config"].0.clone())?;
        let password = String::from_utf8(data["password"].0.clone())?;
        let dir = tempfile::tempdir()?;
        let good = scram_client_config(dir.path(), &jaas)?;
        let listed = kafka_cli(
            "kafka-topics",
            &["--bootstrap-server", &broker.sasl_address, "--list", "--command-config", good.to_str().unwrap()],
        )?;
        ensure!(listed.lines().any(|l| l == "orders"), "{listed}");
        let wrong = dir.path().join("wrong.properties");
        std::fs::write(
            &wrong,
            std::fs::read_to_string(&good)?.replace(&password, "not-the-password"),
        )?;
        let refused = kafka_cli(
            "kafka-topics",
            &["--bootstrap-server", &broker.sasl_address, "--list", "--command-config", wrong.to_str().unwrap()],
        );
        let message = format!("{:#}", refused.expect_err("a wrong password must be refused"));
        ensure!(message.contains("Authentication failed"), "{message}");

        // A topic of a cluster that does not exist.
        apply_yaml(
            &ns,
            "apiVersion: kafka.fjord.dev/v1\nkind: KafkaTopic\nmetadata: {name: lost, labels: {kafka.fjord.dev/cluster: nope}}\nspec: {partitions: 1}\n",
        )
        .await?;
        let t = wait_condition(&topics, "lost", "NotReady", Some("ClusterNotFound")).await?;
        ensure!(find_condition(&t, "NotReady", None).unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("nope"));

        // Deleting the resource deletes the topic (and only it).
        topics.delete("orders", &DeleteParams::default()).await?;
        poll_until(WAIT, "KafkaTopic orders to be gone", || async {
            Ok(topics.get_opt("orders").await?.is_none())
        })
        .await?;
        let list = kafka_cli("kafka-topics", &["--bootstrap-server", &addr, "--list"])?;
        ensure!(!list.lines().any(|l| l == "orders"), "{list}");
        ensure!(list.lines().any(|l| l == "unmanaged"), "{list}");
        topics.delete("lost", &DeleteParams::default()).await?;
        poll_until(WAIT, "KafkaTopic lost to be released", || async {
            Ok(topics.get_opt("lost").await?.is_none())
        })
        .await?;
        Ok(())
    })
    .await;
}
