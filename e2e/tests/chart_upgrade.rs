//! `helm upgrade` upgrades the CRDs (issue 16): Helm never upgrades a chart's `crds/` folder, so
//! the chart renders its CRDs as templates. Tested the way a user meets it: the release is
//! installed from a previous chart version whose Kafka CRD lacks a field (`metricsConfig`), then
//! upgraded to the chart of this checkout, and the API server's CRD must then have the field.
//!
//! Both chart copies rename the CRDs' group to one of this scenario (`<namespace>.fjord.dev`), so
//! the test never touches the `kafka.fjord.dev` CRDs other scenarios use. The release's operator
//! image is one that does not exist (`pullPolicy: Never`): no second operator runs.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use fjord_e2e::scenario::{repo_root, Scenario};

/// Copies directory `from` to `to` (files and subdirectories).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// A copy of the chart at `dir` with the CRDs in `group`; `previous` makes it version 0.0.1
/// with a Kafka CRD that has no `spec.kafka.metricsConfig`.
fn chart_copy(dir: &Path, group: &str, previous: bool) -> Result<()> {
    copy_dir(&repo_root().join("charts/fjord-operator"), dir)?;
    let crds = dir.join("files/crds");
    for entry in std::fs::read_dir(&crds)? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?.replace("kafka.fjord.dev", group);
        let text = if previous && path.ends_with("kafka.yaml") {
            let mut crd: serde_yaml::Value = serde_yaml::from_str(&text)?;
            let kafka = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
                ["spec"]["properties"]["kafka"]["properties"];
            let removed = kafka
                .as_mapping_mut()
                .context("kafka properties")?
                .remove("metricsConfig");
            ensure!(
                removed.is_some(),
                "the Kafka CRD has no metricsConfig to remove"
            );
            serde_yaml::to_string(&crd)?
        } else {
            text
        };
        std::fs::write(&path, text)?;
    }
    if previous {
        let chart = dir.join("Chart.yaml");
        let text = std::fs::read_to_string(&chart)?;
        let version = text
            .lines()
            .find(|l| l.starts_with("version:"))
            .context("chart version")?
            .to_string();
        std::fs::write(&chart, text.replace(&version, "version: 0.0.1"))?;
    }
    Ok(())
}

#[tokio::test]
async fn helm_upgrade_upgrades_the_crds() {
    Scenario::run("chart-upgrade", |s| async move {
        let group = format!("{}.fjord.dev", s.namespace);
        let work = std::env::temp_dir().join(format!("fjord-chart-upgrade-{}", s.namespace));
        let _ = std::fs::remove_dir_all(&work);
        let (previous, current) = (work.join("previous"), work.join("current"));
        chart_copy(&previous, &group, true)?;
        chart_copy(&current, &group, false)?;
        let suffix = s.namespace.rsplit('-').next().unwrap_or("e2e");
        let release = format!("upgrade-{suffix}");
        let watch = format!("watchNamespace={}", s.namespace);
        let settings = [
            "--set",
            watch.as_str(),
            "--set",
            "image.repository=localhost/fjord-operator-absent",
            "--set",
            "image.pullPolicy=Never",
            "--set",
            "crds.keep=false",
        ];
        let crd = format!("crd/kafkas.{group}");
        let metrics_config = "jsonpath={.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.kafka.properties.metricsConfig.type}";

        let mut install = vec!["install", release.as_str(), previous.to_str().unwrap()];
        install.extend(settings);
        s.helm(&install)?;
        s.uninstall_at_end(&release);
        let before = s.kubectl(&["get", &crd, "-o", metrics_config])?;
        ensure!(before.trim().is_empty(), "the previous CRD already has metricsConfig: {before}");

        let mut upgrade = vec!["upgrade", release.as_str(), current.to_str().unwrap()];
        upgrade.extend(settings);
        s.helm(&upgrade)?;
        let after = s.kubectl(&["get", &crd, "-o", metrics_config])?;
        ensure!(
            after.trim() == "object",
            "after helm upgrade the CRD has no metricsConfig: {after:?}"
        );
        let history = s.helm(&["history", &release])?;
        ensure!(
            history.contains("fjord-operator-0.0.1")
                && history.to_lowercase().contains("upgrade complete"),
            "release history: {history}"
        );
        let _ = std::fs::remove_dir_all(&work);
        Ok::<(), anyhow::Error>(())
    })
    .await;
}
