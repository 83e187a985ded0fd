//! Prometheus metrics with Kafka's JMX-exporter names, so existing dashboards and alerts fit.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_errors: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
    pub messages_in: IntCounter,
    pub partitions: IntGauge,
    pub leader_count: IntGauge,
    pub log_size_bytes: IntGauge,
    pub connections: IntGauge,
    pub protocol_errors: IntCounter,
    pub under_replicated: IntGauge,
    pub offline_partitions: IntGauge,
    pub active_controller: IntGauge,
    pub replication_bytes_in: IntCounter,
    pub replication_bytes_out: IntCounter,
    pub isr_shrinks: IntCounter,
    pub isr_expands: IntCounter,
    pub under_min_isr: IntGauge,
    pub replica_max_lag: IntGauge,
    pub replica_fetchers: IntGauge,
    pub fenced_brokers: IntGauge,
    pub reassigning_partitions: IntGauge,
    pub reassignment_offsets_remaining: IntGauge,
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "kafka_network_requestmetrics_requests_total",
                "Requests handled, by API",
            ),
            &["request", "version"],
        )
        .expect("valid metric");
        r.register(Box::new(requests.clone()))
            .expect("unique metric");
        let request_errors = IntCounterVec::new(
            Opts::new(
                "kafka_network_requestmetrics_errors_total",
                "Error codes returned, by API and error",
            ),
            &["request", "error"],
        )
        .expect("valid metric");
        r.register(Box::new(request_errors.clone()))
            .expect("unique metric");
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "kafka_network_requestmetrics_totaltime_seconds",
                "Request handling time, by API",
            )
            .buckets(vec![
                0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                5.0, 10.0, 30.0,
            ]),
            &["request"],
        )
        .expect("valid metric");
        r.register(Box::new(request_seconds.clone()))
            .expect("unique metric");
        Metrics {
            bytes_in: counter(
                &r,
                "kafka_server_brokertopicmetrics_bytesin_total",
                "Bytes appended to logs by producers",
            ),
            bytes_out: counter(
                &r,
                "kafka_server_brokertopicmetrics_bytesout_total",
                "Bytes sent to consumers",
            ),
            messages_in: counter(
                &r,
                "kafka_server_brokertopicmetrics_messagesin_total",
                "Records appended",
            ),
            partitions: gauge(
                &r,
                "kafka_server_replicamanager_partitioncount",
                "Partitions hosted by this broker",
            ),
            leader_count: gauge(
                &r,
                "kafka_server_replicamanager_leadercount",
                "Partitions this broker leads",
            ),
            log_size_bytes: gauge(
                &r,
                "kafka_log_log_size_bytes_total",
                "Bytes on disk in all partition logs",
            ),
            connections: gauge(
                &r,
                "kafka_server_socket_server_connection_count",
                "Open client connections",
            ),
            protocol_errors: counter(
                &r,
                "fjord_protocol_errors_total",
                "Connections closed for malformed or unsupported requests",
            ),
            under_replicated: gauge(
                &r,
                "kafka_server_replicamanager_underreplicatedpartitions",
                "Under-replicated partitions",
            ),
            offline_partitions: gauge(
                &r,
                "kafka_controller_kafkacontroller_offlinepartitionscount",
                "Partitions without a leader",
            ),
            active_controller: gauge(
                &r,
                "kafka_controller_kafkacontroller_activecontrollercount",
                "1 on the active controller",
            ),
            replication_bytes_in: counter(
                &r,
                "kafka_server_brokertopicmetrics_replicationbytesin_total",
                "Bytes fetched from leaders by this broker's followers",
            ),
            replication_bytes_out: counter(
                &r,
                "kafka_server_brokertopicmetrics_replicationbytesout_total",
                "Bytes sent to followers",
            ),
            isr_shrinks: counter(
                &r,
                "kafka_server_replicamanager_isrshrinks_total",
                "ISR shrinks this broker's leaderships committed",
            ),
            isr_expands: counter(
                &r,
                "kafka_server_replicamanager_isrexpands_total",
                "ISR expansions this broker's leaderships committed",
            ),
            under_min_isr: gauge(
                &r,
                "kafka_server_replicamanager_underminisrpartitioncount",
                "Led partitions whose ISR is smaller than min.insync.replicas",
            ),
            replica_max_lag: gauge(
                &r,
                "kafka_server_replicafetchermanager_maxlag",
                "Largest follower lag in messages among the partitions this broker leads",
            ),
            replica_fetchers: gauge(
                &r,
                "fjord_replica_fetchers",
                "Replica fetchers running: one per broker this node follows partitions at",
            ),
            fenced_brokers: gauge(
                &r,
                "kafka_controller_kafkacontroller_fencedbrokercount",
                "Fenced brokers (as this node's metadata says)",
            ),
            reassigning_partitions: gauge(
                &r,
                "kafka_server_replicamanager_reassigningpartitions",
                "Partitions this broker leads that are being reassigned",
            ),
            reassignment_offsets_remaining: gauge(
                &r,
                "fjord_reassignment_offsets_remaining",
                "Messages the replicas being added still have to copy, over the partitions this broker leads",
            ),
            requests,
            request_errors,
            request_seconds,
            registry: r,
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
