//! `docs/metrics.md` lists every metric the broker and the operator export, with its labels:
//! this test compares each section's table with what the registry really exports (names and
//! label names, both directions), so the document cannot drift from the code. Both crates are
//! checked here because this is the crate that sees both (the broker is a dev-dependency).

use std::collections::BTreeMap;

use prometheus::Registry;

/// Name → sorted label names of every family `registry` exports.
fn exported(registry: &Registry) -> BTreeMap<String, Vec<String>> {
    registry
        .gather()
        .iter()
        .map(|f| {
            let mut labels: Vec<String> = f
                .get_metric()
                .first()
                .map(|m| m.get_label().iter().map(|l| l.name().to_string()).collect())
                .unwrap_or_default();
            labels.sort();
            (f.name().to_string(), labels)
        })
        .collect()
}

/// Name → sorted labels from the table rows (`| \`name\` | \`a\`, \`b\` | … |`, `—` for none)
/// of the `## {section}` part of docs/metrics.md.
fn documented(section: &str) -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
        .expect("docs/metrics.md");
    let heading = format!("\n## {section}\n");
    let start = text
        .find(&heading)
        .expect("the section is in docs/metrics.md")
        + heading.len();
    let body = &text[start..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    body.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let mut labels: Vec<String> = cells
                .get(2)?
                .split(',')
                .map(|s| s.trim().trim_matches('`').to_string())
                .filter(|s| !s.is_empty() && s != "—")
                .collect();
            labels.sort();
            Some((name.to_string(), labels))
        })
        .collect()
}

#[test]
fn every_broker_metric_is_documented_with_its_labels_and_nothing_else_is() {
    let m = fjord_broker::metrics::Metrics::new();
    // A labelled family exports nothing until it has a series: give each one.
    m.requests
        .with_label_values(&["Produce", "9", "PLAIN"])
        .inc();
    m.request_errors
        .with_label_values(&["Produce", "None"])
        .inc();
    m.request_seconds
        .with_label_values(&["Produce", "PLAIN"])
        .observe(0.1);
    for c in [&m.bytes_in, &m.bytes_out, &m.messages_in] {
        c.inc_by("t", 1);
    }
    m.partition_log_size.with_label_values(&["t", "0"]).set(1);
    m.group_offset.with_label_values(&["g", "t", "0"]).set(1);
    m.group_lag.with_label_values(&["g", "t", "0"]).set(1);
    m.raft_state.with_label_values(&["leader"]).set(1);
    m.connections.with_label_values(&["PLAIN"]).set(1);
    // The authentication counters are registered with the listeners (network::server).
    let (failed, succeeded) =
        fjord_broker::network::listener::register_auth_metrics(&m.registry).expect("registered");
    failed.with_label_values(&["PLAIN"]).inc();
    succeeded.with_label_values(&["PLAIN"]).inc();
    assert_eq!(
        exported(&m.registry),
        documented("Broker"),
        "the broker's metrics (left) and docs/metrics.md (right) disagree"
    );
}

#[test]
fn every_operator_metric_is_documented_with_its_labels_and_nothing_else_is() {
    let m = fjord_operator::metrics::Metrics::default();
    drop(m.reconcile_started("Kafka"));
    m.reconcile_failed("Kafka", "Conflict");
    m.managed.with_label_values(&["Kafka"]).set(1);
    m.broker_restarts
        .with_label_values(&["ConfigChanged"])
        .inc();
    m.roll_pending
        .with_label_values(&["ns", "my-cluster"])
        .set(1);
    m.refusals
        .with_label_values(&["ScaleDownBelowVoters"])
        .inc();
    m.reassignment_pending
        .with_label_values(&["ns", "my-cluster"])
        .set(1);
    m.ca_expiry
        .with_label_values(&["ns", "my-cluster", "cluster"])
        .set(1);
    assert_eq!(
        exported(&m.registry),
        documented("Operator"),
        "the operator's metrics (left) and docs/metrics.md (right) disagree"
    );
}
