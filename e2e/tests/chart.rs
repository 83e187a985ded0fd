//! The Helm chart: `helm lint --strict` is clean, and what `helm template` renders — with the
//! default values and with a values file that sets every option — is accepted by the real API
//! server (`kubectl apply --dry-run=server`). Wrong values are refused with a message naming them.
//! The Prometheus Operator objects (PodMonitors, PrometheusRule) are dry-run applied after the
//! Prometheus Operator's CRDs are installed, and the PrometheusRule is checked against the rule
//! file.
//! The scenario namespaces enforce the `restricted` Pod Security Standard (checked here once).

use anyhow::ensure;
use fjord_e2e::scenario::{repo_root, Scenario};

fn chart() -> String {
    repo_root()
        .join("charts")
        .join("fjord-operator")
        .display()
        .to_string()
}

fn all_options() -> String {
    repo_root()
        .join("charts/fjord-operator/ci/all-options-values.yaml")
        .display()
        .to_string()
}

#[tokio::test]
async fn chart_lints_and_renders_objects_the_api_server_accepts() {
    Scenario::run("helm-chart", |s| async move {
        let chart = chart();
        let all_options = all_options();
        let lint = s.helm(&["lint", "--strict", &chart])?;
        ensure!(lint.contains("0 chart(s) failed"), "helm lint: {lint}");
        let lint = s.helm(&["lint", "--strict", &chart, "-f", &all_options])?;
        ensure!(
            lint.contains("0 chart(s) failed"),
            "helm lint with every option: {lint}"
        );

        // The all-options file renders PodMonitors and a PrometheusRule: the API server must
        // know their kinds (the Prometheus Operator's CRDs; no operator runs).
        s.kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &fjord_e2e::tools::monitoring_crds().display().to_string(),
        ])?;
        for crd in ["podmonitors", "prometheusrules"] {
            s.kubectl(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                &format!("crd/{crd}.monitoring.coreos.com"),
            ])?;
        }

        // The all-options file watches namespace `kafka`; render into this scenario's namespace.
        let watch = format!("watchNamespace={}", s.namespace);
        let renders: [(&str, Vec<&str>); 2] = [
            ("defaults", vec![]),
            ("every option", vec!["-f", &all_options, "--set", &watch]),
        ];
        for (what, extra) in renders {
            let mut args = vec!["template", "fjord-chart-test", &chart];
            args.extend(extra);
            let rendered = s.helm(&args)?;
            for kind in ["Deployment", "ServiceAccount", "CustomResourceDefinition"] {
                ensure!(
                    rendered.contains(&format!("kind: {kind}")),
                    "{what}: no {kind} rendered"
                );
            }
            ensure!(
                !rendered.contains("\"*\""),
                "{what}: the RBAC rules contain a wildcard"
            );
            let file = std::env::temp_dir().join(format!("{}-{}.yaml", s.namespace, what.len()));
            std::fs::write(&file, &rendered)?;
            let applied = s.kubectl(&[
                "apply",
                "--dry-run=server",
                "--server-side",
                "--force-conflicts",
                "-f",
                &file.display().to_string(),
            ])?;
            ensure!(
                applied.contains("deployment.apps/") && applied.contains("(server dry run)"),
                "{what}: {applied}"
            );
            if what == "every option" {
                ensure!(
                    applied.contains("podmonitor.monitoring.coreos.com/")
                        && applied.contains("prometheusrule.monitoring.coreos.com/")
                        && applied.contains("configmap/"),
                    "{what}: monitoring objects and dashboards not applied: {applied}"
                );
            }
        }

        // Scenario namespaces enforce the `restricted` Pod Security Standard, so the brokers
        // and operators of every scenario pass it; a pod without its settings is refused.
        let bare_pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: unrestricted\nspec:\n  \
                        containers:\n    - name: c\n      image: localhost/fjord-broker:0.1.0\n";
        let file = std::env::temp_dir().join(format!("{}-pod.yaml", s.namespace));
        std::fs::write(&file, bare_pod)?;
        let refused = s.kubectl(&[
            "apply",
            "--dry-run=server",
            "-f",
            &file.display().to_string(),
        ]);
        let message = format!(
            "{:#}",
            refused.expect_err("an unrestricted pod was admitted")
        );
        ensure!(
            message.contains("violates PodSecurity \"restricted"),
            "refused for another reason: {message}"
        );

        // The Prometheus Operator objects: two PodMonitors and the PrometheusRule, whose
        // groups are exactly the rule file's (the one promtool tests, e2e/tests/alert_rules.rs).
        let rendered = s.helm(&[
            "template",
            "fjord-chart-test",
            &chart,
            "-f",
            &all_options,
            "--set",
            "monitoring.enabled=true",
        ])?;
        let docs: Vec<serde_yaml::Value> = rendered
            .split("\n---")
            .filter_map(|d| serde_yaml::from_str(d).ok())
            .collect();
        let of_kind = |kind: &str| -> Vec<&serde_yaml::Value> {
            docs.iter()
                .filter(|d| d["kind"].as_str() == Some(kind))
                .collect()
        };
        let monitors = of_kind("PodMonitor");
        ensure!(
            monitors.len() == 2,
            "{} PodMonitors rendered",
            monitors.len()
        );
        for m in &monitors {
            ensure!(
                m["metadata"]["labels"]["release"].as_str() == Some("kube-prometheus-stack"),
                "monitoring.labels missing on {:?}",
                m["metadata"]["name"]
            );
            let endpoint = &m["spec"]["podMetricsEndpoints"][0];
            ensure!(endpoint["interval"].as_str() == Some("15s"), "{endpoint:?}");
        }
        let rules = of_kind("PrometheusRule");
        ensure!(rules.len() == 1, "{} PrometheusRules rendered", rules.len());
        let file: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(
            repo_root().join("charts/fjord-operator/files/prometheus-rules.yaml"),
        )?)?;
        ensure!(
            rules[0]["spec"]["groups"] == file["groups"],
            "the PrometheusRule's groups differ from files/prometheus-rules.yaml"
        );
        let defaults = s.helm(&["template", "fjord-chart-test", &chart])?;
        ensure!(
            !defaults.contains("kind: PodMonitor") && !defaults.contains("kind: PrometheusRule"),
            "monitoring objects rendered for a cluster without monitoring.coreos.com/v1"
        );

        let refused = s.helm(&["template", "x", &chart, "--set", "replicas=0"]);
        ensure!(refused.is_err(), "replicas=0 was accepted");
        let message = format!("{:#}", refused.unwrap_err());
        ensure!(
            message.contains("replicas"),
            "the refusal does not name the value: {message}"
        );
        Ok::<(), anyhow::Error>(())
    })
    .await;
}
