//! The Grafana dashboards (`dashboards/*.json`, shipped by the chart from
//! `charts/fjord-operator/files/dashboards/`): the chart's copies are the same files; every
//! dashboard has a data-source variable that every panel and variable query uses; every PromQL
//! expression (panel targets and variable queries, Grafana variables substituted) parses —
//! checked by promtool, as recording rules — and names only metrics Fjord exports
//! (`docs/metrics.md`) or Prometheus' own `up`. The same metric check runs over the alert rules.
//! Whether the expressions return data on a running cluster is the Prometheus end-to-end test's
//! part.

use std::collections::BTreeSet;
use std::process::Command;

use fjord_e2e::scenario::repo_root;
use fjord_e2e::tools::promtool;
use serde_json::Value;

fn dashboards() -> Vec<(String, Value)> {
    let dir = repo_root().join("dashboards");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("dashboards/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, json)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every (where, PromQL) of a dashboard: panel targets and the selectors inside variable
/// queries (`label_values(<selector>, label)`).
fn expressions(name: &str, d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            out.push((format!("{name}: panel '{}'", p["title"]), expr.to_string()));
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().unwrap_or_default();
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(selector, _)| selector.to_string())
                .unwrap_or_else(|| {
                    panic!(
                        "{name}: variable {} is not label_values(..): {q}",
                        v["name"]
                    )
                });
            out.push((format!("{name}: variable {}", v["name"]), inner));
        }
    }
    out
}

/// Grafana variables replaced by what Prometheus would get.
fn substituted(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$namespace", ".*")
        .replace("$cluster", ".*")
        .replace("$topic", ".*")
        .replace("$group", ".*")
        .replace("$pod", ".*")
}

/// `by (..)` and `without (..)` clauses removed: they hold label names, not metrics.
fn without_groupings(expr: &str) -> String {
    let mut out = expr.to_string();
    let opening = |text: &str| {
        ["by (", "by(", "without (", "without("]
            .iter()
            .filter_map(|k| text.find(k).map(|i| (i, k.len())))
            .min()
    };
    while let Some((start, len)) = opening(&out) {
        let Some(close) = out[start + len..].find(')') else {
            break;
        };
        out.replace_range(start..start + len + close + 1, " ");
    }
    out
}

/// Words of an expression that may name a metric: ours (`kafka_`, `fjord_`, `process_`) and
/// Prometheus' `up`, outside label matchers and groupings.
fn metric_words(expr: &str) -> BTreeSet<String> {
    let expr = without_groupings(expr);
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        if i == start {
            i += 1;
            continue;
        }
        let word = &expr[start..i];
        let ours = ["kafka_", "fjord_", "process_"]
            .iter()
            .any(|p| word.starts_with(p));
        // In `{a="x"}` a label name is followed by `=`, `!` or `~`; a metric name by `{`, `[`,
        // `)`, a space or the end.
        let is_metric = matches!(
            bytes.get(i).copied(),
            Some(b'{' | b'[' | b')' | b' ') | None
        );
        if (ours || word == "up") && is_metric {
            out.insert(word.to_string());
        }
    }
    out
}

/// The words of `expr` that are no metric `known` lists (histogram series `_bucket`, `_sum`
/// and `_count` count as their histogram).
fn unknown_metrics(expr: &str, known: &BTreeSet<String>) -> Vec<String> {
    metric_words(expr)
        .into_iter()
        .filter(|w| {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| w.strip_suffix(s))
                .unwrap_or(w);
            w != "up" && !known.contains(w) && !known.contains(base)
        })
        .collect()
}

/// Metric names listed in docs/metrics.md (both sections).
fn documented() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo_root().join("docs/metrics.md")).unwrap();
    text.lines()
        .filter_map(|l| {
            l.strip_prefix("| `")?
                .split_once('`')
                .map(|(n, _)| n.to_string())
        })
        .collect()
}

#[test]
fn the_chart_ships_the_dashboards_as_they_are() {
    let chart = repo_root().join("charts/fjord-operator/files/dashboards");
    let names = |dir: &std::path::Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect()
    };
    let ours = names(&repo_root().join("dashboards"));
    assert_eq!(
        ours,
        names(&chart),
        "dashboards/ and the chart's copies differ in files"
    );
    for name in ours {
        let a = std::fs::read(repo_root().join("dashboards").join(&name)).unwrap();
        let b = std::fs::read(chart.join(&name)).unwrap();
        assert!(
            a == b,
            "{name}: copy it into charts/fjord-operator/files/dashboards/"
        );
    }
}

#[test]
fn every_dashboard_has_a_datasource_variable_every_panel_uses() {
    let all = dashboards();
    assert_eq!(all.len(), 4, "overview, brokers, topics, operator");
    let mut uids = BTreeSet::new();
    for (name, d) in &all {
        assert!(uids.insert(d["uid"].to_string()), "{name}: duplicate uid");
        let vars = d["templating"]["list"].as_array().expect("templating");
        assert!(
            vars.iter()
                .any(|v| v["type"] == "datasource" && v["name"] == "datasource"),
            "{name}: no datasource variable"
        );
        let panels = d["panels"].as_array().expect("panels");
        assert!(!panels.is_empty(), "{name}: no panels");
        for p in panels {
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{name}: {}",
                p["title"]
            );
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{name}: {} has no query", p["title"]);
        }
        for v in vars.iter().filter(|v| v["type"] == "query") {
            assert_eq!(
                v["datasource"]["uid"], "${datasource}",
                "{name}: {}",
                v["name"]
            );
        }
    }
}

#[test]
fn every_expression_parses_and_names_only_exported_metrics() {
    let known = documented();
    let mut rules = String::from("groups:\n  - name: dashboard-expressions\n    rules:\n");
    let mut count = 0;
    let mut unknown = Vec::new();
    for (name, d) in dashboards() {
        for (place, expr) in expressions(&name, &d) {
            for m in unknown_metrics(&expr, &known) {
                unknown.push(format!("{place}: {m}"));
            }
            let expr = substituted(&expr);
            assert!(
                !expr.contains('$'),
                "{place}: unsubstituted variable in {expr}"
            );
            rules.push_str(&format!(
                "      - record: fjord:dashboard_check:{count}\n        expr: {}\n",
                serde_json::to_string(&expr).unwrap()
            ));
            count += 1;
        }
    }
    // The alert rules name only exported metrics too.
    let rules_file: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(
            repo_root().join("charts/fjord-operator/files/prometheus-rules.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    for group in rules_file["groups"].as_sequence().into_iter().flatten() {
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            let expr = rule["expr"].as_str().unwrap_or_default();
            for m in unknown_metrics(expr, &known) {
                unknown.push(format!("prometheus-rules.yaml {:?}: {m}", rule["alert"]));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics Fjord does not export: {unknown:#?}"
    );
    assert!(count > 30, "only {count} expressions found");
    let file =
        std::env::temp_dir().join(format!("fjord-dashboard-exprs-{}.yaml", std::process::id()));
    std::fs::write(&file, &rules).unwrap();
    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "promtool check rules on the dashboards' expressions:\n{text}"
    );
    assert!(
        text.contains(&format!("SUCCESS: {count} rules found")),
        "{text}"
    );
}
