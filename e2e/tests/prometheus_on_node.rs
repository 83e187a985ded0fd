//! Monitoring as a user runs it (issue 16): a real Prometheus (Debian's, from
//! `scripts/prometheus-dist.sh`) scrapes the three broker pods and the operator pod on the node
//! — static targets carrying the labels the chart's PodMonitors give (`namespace`, `pod`,
//! `kafka_cluster`, `fjord_component`) — and loads the chart's alert rules. While a producer
//! and a consumer group run, every PromQL expression of every dashboard panel, every dashboard
//! variable and every alert rule is sent to it: none may fail, and the core panels listed below
//! must return series; the operator reports both CAs' expiry. Then one broker is frozen
//! (SIGSTOP): FjordKafkaBrokerDown and FjordKafkaUnderReplicatedPartitions must go pending or
//! firing.
//!
//! Prometheus runs on the host inside the node's network namespace, where pod IPs are routed;
//! the test talks to it there with curl.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use common::load::Load;
use common::*;
use fjord_e2e::fixture::poll_until;
use fjord_e2e::scenario::{repo_root, Scenario};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use serde_json::Value;

const TOPIC: &str = "monitored-orders";
const GROUP: &str = "monitored-billing";

/// Panels that must show data while clients run: (dashboard file, panel title).
const CORE_PANELS: &[(&str, &str)] = &[
    ("kafka-overview.json", "Brokers up"),
    ("kafka-overview.json", "Active controllers"),
    ("kafka-overview.json", "Under-replicated partitions"),
    ("kafka-overview.json", "Bytes in"),
    ("kafka-overview.json", "Messages in"),
    ("kafka-overview.json", "Requests by API"),
    ("kafka-overview.json", "Produce and Fetch p99 latency"),
    ("kafka-overview.json", "Metadata quorum"),
    ("kafka-brokers.json", "Bytes in by broker"),
    ("kafka-brokers.json", "Connections"),
    ("kafka-brokers.json", "Log volume free"),
    ("kafka-brokers.json", "Memory (RSS)"),
    ("kafka-brokers.json", "CPU"),
    ("kafka-brokers.json", "Worker and disk threads busy"),
    ("kafka-topics.json", "Bytes in by topic"),
    ("kafka-topics.json", "Bytes out by topic"),
    ("kafka-topics.json", "Size on disk by topic"),
    ("kafka-topics.json", "Consumer lag by group and topic"),
    ("operator.json", "Reconciliations by kind"),
    ("operator.json", "Managed resources"),
];

/// A Prometheus process in the node's network namespace; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    /// Its config, log and TSDB; removed on drop.
    data: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

impl Prometheus {
    fn start(config: &str) -> Result<Prometheus> {
        let data = std::env::temp_dir().join(format!("fjord-prometheus-{}", std::process::id()));
        std::fs::create_dir_all(&data)?;
        let config_file = data.join("prometheus.yml");
        std::fs::write(&config_file, config)?;
        let bin = fjord_e2e::tools::promtool().with_file_name("prometheus");
        let holder = fjord_e2e::scenario::cluster()?.node.holder_pid.to_string();
        let port = 19_000 + (std::process::id() % 1000) as u16;
        let log = std::fs::File::create(data.join("prometheus.log"))?;
        let child = Command::new("nsenter")
            .args(["-t", &holder, "-n", "--"])
            .arg(&bin)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                data.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting prometheus in the node's network namespace")?;
        Ok(Prometheus { child, port, data })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("prometheus.log")).unwrap_or_default()
    }

    /// GET `path` with `params` (URL-encoded by curl) in the node's network namespace.
    fn get(&self, path: &str, params: &[(&str, &str)]) -> Result<Value> {
        let holder = fjord_e2e::scenario::cluster()?.node.holder_pid.to_string();
        let mut cmd = Command::new("nsenter");
        cmd.args([
            "-t",
            &holder,
            "-n",
            "--",
            "curl",
            "-s",
            "--max-time",
            "10",
            "--get",
        ]);
        for (k, v) in params {
            cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
        }
        let out = cmd
            .arg(format!("http://127.0.0.1:{}{path}", self.port))
            .stdin(Stdio::null())
            .output()?;
        let body = String::from_utf8_lossy(&out.stdout).to_string();
        serde_json::from_str(&body).with_context(|| format!("GET {path}: {body:?}"))
    }

    /// An instant query: its result series, or the error Prometheus gave.
    fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let answer = self.get("/api/v1/query", &[("query", expr)])?;
        if answer["status"] != "success" {
            bail!("{expr}: {}", answer["error"]);
        }
        Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Alerts pending or firing.
    fn alerts(&self) -> Result<Vec<Alert>> {
        let answer = self.get("/api/v1/alerts", &[])?;
        Ok(answer["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let labels: BTreeMap<String, String> =
                    serde_json::from_value(a["labels"].clone()).unwrap_or_default();
                (
                    labels.get("alertname").cloned().unwrap_or_default(),
                    labels,
                    a["state"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }
}

/// An active alert: (alertname, labels, state: pending or firing).
type Alert = (String, BTreeMap<String, String>, String);

/// (pod name, pod IP) of the pods matching `selector`.
async fn pod_ips(s: &Scenario, selector: &str) -> Result<Vec<(String, String)>> {
    let pods = s
        .api::<Pod>()
        .list(&ListParams::default().labels(selector))
        .await?;
    pods.items
        .iter()
        .map(|p| {
            let name = p.metadata.name.clone().context("pod name")?;
            let ip = p
                .status
                .as_ref()
                .and_then(|st| st.pod_ip.clone())
                .context("pod IP")?;
            Ok((name, ip))
        })
        .collect()
}

/// The host PID of the broker process of pod `pod` (its HOSTNAME is the pod name).
fn broker_pid(pod: &str) -> Result<i32> {
    for entry in std::fs::read_dir("/proc")?.filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains("fjord-broker") {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let wanted = format!("HOSTNAME={pod}");
        if environ.split(|b| *b == 0).any(|e| e == wanted.as_bytes()) {
            return Ok(pid);
        }
    }
    bail!("no fjord-broker process of pod {pod}")
}

/// Grafana's variables as this scenario's dashboards would set them.
fn substituted(expr: &str, namespace: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$namespace", namespace)
        .replace("$cluster", "my-cluster")
        .replace("$topic", ".*")
        .replace("$group", ".*")
        .replace("$pod", ".*")
}

/// (dashboard, title or variable, expression) of every dashboard query.
fn dashboard_queries() -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("dashboards"))?.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().to_string();
        let d: Value = serde_json::from_str(&std::fs::read_to_string(entry.path())?)?;
        for p in d["panels"].as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push((
                    name.clone(),
                    p["title"].as_str().unwrap_or_default().to_string(),
                    t["expr"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if let Some(selector) = v["query"]["query"]
                .as_str()
                .and_then(|q| q.strip_prefix("label_values("))
                .and_then(|r| r.rsplit_once(','))
                .map(|(selector, _)| selector.to_string())
            {
                out.push((
                    name.clone(),
                    format!("${}", v["name"].as_str().unwrap_or("")),
                    selector,
                ));
            }
        }
    }
    Ok(out)
}

fn rule_expressions() -> Result<Vec<(String, String)>> {
    let rules: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(
        repo_root().join("charts/fjord-operator/files/prometheus-rules.yaml"),
    )?)?;
    Ok(rules["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .map(|r| {
            (
                r["alert"].as_str().unwrap_or_default().to_string(),
                r["expr"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

#[tokio::test]
async fn prometheus_scrapes_the_cluster_and_every_panel_and_alert_works() {
    Scenario::run("prometheus-on-node", |s| async move {
        s.install_operator().await?;
        // The nodeport example with metrics on and a short ISR lag, so a frozen broker leaves
        // the ISR within seconds.
        let kafka = read_example(NODEPORT_EXAMPLE)
            .replace(
                "    storage:",
                "    metricsConfig:\n      type: prometheus\n    storage:",
            )
            .replace(
                "      auto.create.topics.enable: false",
                "      auto.create.topics.enable: false\n      replica.lag.time.max.ms: 5000",
            );
        ensure!(kafka.contains("metricsConfig"), "example changed shape");
        apply_yaml(&s, "kafka", &kafka)?;
        s.wait_kafka_ready("my-cluster", Duration::from_secs(240))
            .await?;
        apply_yaml(&s, "topic", &topic_yaml("my-cluster", TOPIC, 3, 3))?;
        wait_ready(&s, "kafkatopic", TOPIC, Duration::from_secs(60)).await?;
        let bootstrap = s.bootstrap_servers("my-cluster", "external")?;

        let ns = s.namespace.clone();
        let mut targets = String::new();
        for (pod, ip) in pod_ips(&s, "kafka.fjord.dev/cluster=my-cluster").await? {
            targets.push_str(&format!(
                "      - targets: ['{ip}:9644']\n        labels: {{namespace: '{ns}', pod: '{pod}', kafka_cluster: my-cluster, fjord_component: broker}}\n"
            ));
        }
        let operators = pod_ips(&s, "app.kubernetes.io/name=fjord-operator").await?;
        ensure!(operators.len() == 1, "operator pods: {operators:?}");
        let (operator_pod, operator_ip) = &operators[0];
        let rules = repo_root().join("charts/fjord-operator/files/prometheus-rules.yaml");
        let config = [
            "global:".to_string(),
            "  scrape_interval: 2s".into(),
            "  evaluation_interval: 2s".into(),
            "rule_files:".into(),
            format!("  - '{}'", rules.display()),
            "scrape_configs:".into(),
            "  - job_name: fjord-brokers".into(),
            "    static_configs:".into(),
            targets.trim_end().into(),
            "  - job_name: fjord-operator".into(),
            "    honor_labels: true".into(),
            "    static_configs:".into(),
            format!("      - targets: ['{operator_ip}:8080']"),
            format!(
                "        labels: {{namespace: '{ns}', pod: '{operator_pod}', fjord_component: operator}}"
            ),
        ]
        .join("\n")
            + "\n";
        let prometheus = Prometheus::start(&config)?;
        let ready = poll_until(Duration::from_secs(60), "Prometheus scrapes all 4 targets", || {
            let up = prometheus.query("sum(up)");
            async move {
                Ok(up.ok().and_then(|r| r.first().map(|s| s["value"][1] == "4")).unwrap_or(false))
            }
        })
        .await;
        if let Err(e) = ready {
            bail!("{e:#}\nprometheus log:\n{}", prometheus.log());
        }

        let load = Load::start(&bootstrap, TOPIC, GROUP)?;
        load.wait_acked(2_000, Duration::from_secs(60)).await?;
        // Rates need a few scrapes of traffic, lag needs the group's first commits.
        poll_until(Duration::from_secs(60), "consumer lag series", || {
            let lag = prometheus.query(&format!("kafka_consumergroup_lag{{consumergroup='{GROUP}'}}"));
            async move { Ok(lag.is_ok_and(|r| !r.is_empty())) }
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(10)).await;

        let mut failed = Vec::new();
        let mut empty_core = Vec::new();
        let queries = dashboard_queries()?;
        for (dashboard, title, expr) in &queries {
            match prometheus.query(&substituted(expr, &ns)) {
                Err(e) => failed.push(format!("{dashboard} / {title}: {e:#}")),
                Ok(series) if series.is_empty() => {
                    if CORE_PANELS.contains(&(dashboard.as_str(), title.as_str()))
                        || title.starts_with('$')
                    {
                        empty_core.push(format!("{dashboard} / {title}: {expr}"));
                    }
                }
                Ok(_) => {}
            }
        }
        for (alert, expr) in rule_expressions()? {
            if let Err(e) = prometheus.query(&expr) {
                failed.push(format!("alert {alert}: {e:#}"));
            }
        }
        ensure!(failed.is_empty(), "queries Prometheus refused: {failed:#?}");
        ensure!(
            empty_core.is_empty(),
            "core panels and variables without data while clients run: {empty_core:#?}"
        );
        eprintln!("{} dashboard queries and the alert rules ran", queries.len());
        // The operator reports both CAs' expiry: about a year ahead (validityDays 365).
        let expiry = prometheus.query(&format!(
            "(fjord_operator_certificate_authority_expiry_timestamp_seconds{{namespace='{ns}', kafka='my-cluster'}} - time()) / 86400"
        ))?;
        let days: Vec<f64> = expiry
            .iter()
            .filter_map(|s| s["value"][1].as_str()?.parse().ok())
            .collect();
        ensure!(
            days.len() == 2 && days.iter().all(|d| (300.0..=366.0).contains(d)),
            "CA expiry in days: {days:?}"
        );

        // A frozen broker: its scrape times out and the leaders shrink their ISRs.
        let frozen = "my-cluster-kafka-2";
        let pid = broker_pid(frozen)?;
        // SAFETY: kill(2) with a PID read from /proc and a valid signal number.
        ensure!(unsafe { libc::kill(pid, libc::SIGSTOP) } == 0, "SIGSTOP {pid}");
        let seen = poll_until(Duration::from_secs(90), "broker-down and under-replicated alerts", || {
            let alerts = prometheus.alerts();
            async move {
                let alerts = alerts?;
                let down = alerts.iter().any(|(name, labels, state)| {
                    name == "FjordKafkaBrokerDown"
                        && labels.get("pod").map(String::as_str) == Some(frozen)
                        && (state == "pending" || state == "firing")
                });
                let under = alerts
                    .iter()
                    .any(|(name, _, _)| name == "FjordKafkaUnderReplicatedPartitions");
                Ok(down && under)
            }
        })
        .await;
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        seen?;
        load.finish(false).await?;
        Ok(())
    })
    .await;
}
