//! The operator's own Prometheus metrics (served on `/metrics` by [`crate::http`]).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub reconciliations: IntCounterVec,
    pub failures: IntCounterVec,
    pub duration: HistogramVec,
    pub managed: IntGaugeVec,
    pub leader: IntGauge,
    /// Broker pods the roller deleted, by reason.
    pub broker_restarts: IntCounterVec,
    /// Brokers a roll still has to restart (including the one restarting), per cluster.
    pub roll_pending: IntGaugeVec,
    /// Day-2 requests refused (changing nothing), by reason.
    pub refusals: IntCounterVec,
    /// Replica moves a reassignment still has to finish, per cluster.
    pub reassignment_pending: IntGaugeVec,
    /// When each cluster's CA certificates expire (Unix seconds), per cluster and CA.
    pub ca_expiry: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let reconciliations = IntCounterVec::new(
            Opts::new(
                "fjord_operator_reconciliations_total",
                "Reconciliations run, by kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let failures = IntCounterVec::new(
            Opts::new(
                "fjord_operator_reconcile_failures_total",
                "Reconciliations that failed, by kind and reason",
            ),
            &["kind", "reason"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "fjord_operator_reconcile_duration_seconds",
                "Time one reconciliation took, by kind",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["kind"],
        )
        .expect("valid metric");
        let managed = IntGaugeVec::new(
            Opts::new(
                "fjord_operator_managed_resources",
                "Custom resources the operator currently manages, by kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "fjord_operator_leader",
            "1 while this replica holds the leader lease",
        )
        .expect("valid metric");
        let broker_restarts = IntCounterVec::new(
            Opts::new(
                "fjord_operator_broker_restarts_total",
                "Broker pods restarted by rolling updates, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let roll_pending = IntGaugeVec::new(
            Opts::new(
                "fjord_operator_rolling_update_pending_brokers",
                "Brokers a rolling update still has to restart, per Kafka cluster",
            ),
            &["namespace", "kafka"],
        )
        .expect("valid metric");
        let refusals = IntCounterVec::new(
            Opts::new(
                "fjord_operator_refusals_total",
                "Day-2 changes refused without changing anything, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let reassignment_pending = IntGaugeVec::new(
            Opts::new(
                "fjord_operator_reassignment_pending_partitions",
                "Partitions a rebalance, drain or replication-factor change is still moving, per Kafka cluster",
            ),
            &["namespace", "kafka"],
        )
        .expect("valid metric");
        let ca_expiry = IntGaugeVec::new(
            Opts::new(
                "fjord_operator_certificate_authority_expiry_timestamp_seconds",
                "When a Kafka cluster's CA certificate expires, in seconds since the Unix epoch",
            ),
            &["namespace", "kafka", "ca"],
        )
        .expect("valid metric");
        for c in [
            // RSS, CPU seconds, file descriptors, threads: read from /proc at scrape time.
            Box::new(prometheus::process_collector::ProcessCollector::for_self())
                as Box<dyn prometheus::core::Collector>,
            Box::new(reconciliations.clone()),
            Box::new(failures.clone()),
            Box::new(duration.clone()),
            Box::new(managed.clone()),
            Box::new(leader.clone()),
            Box::new(broker_restarts.clone()),
            Box::new(roll_pending.clone()),
            Box::new(refusals.clone()),
            Box::new(reassignment_pending.clone()),
            Box::new(ca_expiry.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            reconciliations,
            failures,
            duration,
            managed,
            leader,
            broker_restarts,
            roll_pending,
            refusals,
            reassignment_pending,
            ca_expiry,
        }
    }
}

impl Metrics {
    /// Starts timing a reconciliation of `kind`; the timer records when dropped.
    pub fn reconcile_started(&self, kind: &str) -> prometheus::HistogramTimer {
        self.reconciliations.with_label_values(&[kind]).inc();
        self.duration.with_label_values(&[kind]).start_timer()
    }

    pub fn reconcile_failed(&self, kind: &str, reason: &str) {
        self.failures.with_label_values(&[kind, reason]).inc();
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_failures_are_rendered_with_labels() {
        let m = Metrics::default();
        drop(m.reconcile_started("Kafka"));
        m.reconcile_failed("KafkaTopic", "BrokersUnreachable");
        let text = m.render();
        assert!(text.contains("fjord_operator_reconciliations_total{kind=\"Kafka\"} 1"));
        assert!(text.contains(
            "fjord_operator_reconcile_failures_total{kind=\"KafkaTopic\",reason=\"BrokersUnreachable\"} 1"
        ));
        assert!(text.contains("fjord_operator_reconcile_duration_seconds_count{kind=\"Kafka\"} 1"));
    }
}
