//! The alert rules users install with the chart (`charts/fjord-operator/files/prometheus-rules.yaml`)
//! pass `promtool check rules`, and their unit tests (`monitoring/alerts.test.yaml`) pass
//! `promtool test rules` — with Debian's Prometheus, provisioned by
//! `scripts/prometheus-dist.sh` (`cargo xtask test` runs it first). It also checks that every
//! alert in the rules file has a test case where it fires and one where it stays quiet, so a
//! new alert cannot be added without both.

use std::collections::BTreeSet;
use std::process::Command;

use fjord_e2e::scenario::repo_root;
use fjord_e2e::tools::promtool;

fn run(args: &[&str]) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

const RULES: &str = "charts/fjord-operator/files/prometheus-rules.yaml";
const TESTS: &str = "monitoring/alerts.test.yaml";

fn yaml(path: &str) -> serde_yaml::Value {
    let text = std::fs::read_to_string(repo_root().join(path)).expect(path);
    serde_yaml::from_str(&text).expect(path)
}

#[test]
fn the_alert_rules_are_valid_and_their_unit_tests_pass() {
    let checked = run(&["check", "rules", RULES]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run(&["test", "rules", TESTS]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_is_tested_firing_and_quiet() {
    let alerts: BTreeSet<String> = yaml(RULES)["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect();
    assert!(alerts.len() >= 10, "only {alerts:?}");
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for test in yaml(TESTS)["tests"].as_sequence().expect("tests") {
        for case in test["alert_rule_test"]
            .as_sequence()
            .cloned()
            .unwrap_or_default()
        {
            let name = case["alertname"].as_str().expect("alertname").to_string();
            let fires = case["exp_alerts"]
                .as_sequence()
                .is_some_and(|a| !a.is_empty());
            if fires {
                firing.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    let untested: Vec<_> = alerts.difference(&firing).collect();
    assert!(untested.is_empty(), "never tested firing: {untested:?}");
    let untested: Vec<_> = alerts.difference(&quiet).collect();
    assert!(untested.is_empty(), "never tested quiet: {untested:?}");
    let unknown: Vec<_> = firing
        .union(&quiet)
        .filter(|a| !alerts.contains(*a))
        .collect();
    assert!(
        unknown.is_empty(),
        "tests of alerts that do not exist: {unknown:?}"
    );
}
