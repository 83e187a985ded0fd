//! The admin HTTP endpoint (separate port): `/metrics` for Prometheus, `/v1/ready` for probes and
//! `/v1/restart-safety` (may this broker be stopped now?) for the operator.
//! A deliberately small HTTP/1.1 responder: GET only, one request per connection.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::group::offsets::GroupOffsets;
use crate::state::{Broker, NotReady};

const MAX_REQUEST_HEAD: usize = 8192;

pub async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on admin.listener {addr}: {e}"))
}

pub async fn serve(broker: Arc<Broker>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let b = broker.clone();
        broker.tasks.spawn(async move {
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(10), handle(b, stream)).await;
        });
    }
}

async fn handle(broker: Arc<Broker>, mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > MAX_REQUEST_HEAD {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => {
            refresh_gauges(&broker);
            (
                "200 OK",
                "text/plain; version=0.0.4",
                broker.metrics.render(),
            )
        }
        ("GET", "/v1/ready") => {
            // The check may probe a failed log dir with a file write: off the async workers.
            let b = broker.clone();
            let readiness = tokio::task::spawn_blocking(move || b.readiness())
                .await
                .unwrap_or(Err(NotReady::Interrupted));
            match readiness {
                Ok(()) => (
                    "200 OK",
                    "application/json",
                    "{\"ready\":true}\n".to_string(),
                ),
                Err(reason) => (
                    "503 Service Unavailable",
                    "application/json",
                    serde_json::json!({"ready": false, "reason": reason.to_string()}).to_string()
                        + "\n",
                ),
            }
        }
        ("GET", "/v1/restart-safety") => {
            let answer = crate::replication::view::restart_safety(&broker);
            let body = serde_json::to_string(&answer).unwrap_or_default() + "\n";
            ("200 OK", "application/json", body)
        }
        ("GET", "/v1/test/fault") if broker.config.cluster.fault_hooks => {
            match crate::replication::faults::apply(query) {
                Ok(state) => ("200 OK", "application/json", state),
                Err(e) => ("400 Bad Request", "text/plain", format!("{e}\n")),
            }
        }
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}

/// Gauges computed at scrape time rather than on every append.
fn refresh_gauges(broker: &Broker) {
    let parts = broker.replicas.all_partitions();
    let m = &broker.metrics;
    // Series of partitions that left this broker must go too: rebuilt from empty.
    m.partition_log_size.reset();
    let mut size = 0u64;
    let mut led = HashMap::new();
    for p in &parts {
        let bytes = p.log.read().size_bytes();
        size += bytes;
        m.partition_log_size
            .with_label_values(&[p.topic.as_ref(), &p.index.to_string()])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        if p.is_leader() {
            led.insert((p.topic.to_string(), p.index), p.high_watermark());
        }
    }
    m.log_size_bytes
        .set(i64::try_from(size).unwrap_or(i64::MAX));
    m.partitions.set(parts.len() as i64);
    let (capacity, available) =
        crate::log::dir_health::disk_space(broker.log_dir_health.dir()).unwrap_or((-1, -1));
    m.log_dir_capacity.set(capacity);
    m.log_dir_available.set(available);
    let image = broker.metadata.snapshot();
    m.group_offset.reset();
    m.group_lag.reset();
    for l in group_lags(&image.group_offsets, &led) {
        let labels = [l.group, l.topic, &l.partition.to_string()];
        m.group_offset.with_label_values(&labels).set(l.offset);
        m.group_lag.with_label_values(&labels).set(l.lag);
    }
    let runtime = tokio::runtime::Handle::current().metrics();
    let workers = runtime.num_workers();
    m.runtime_workers.set(workers as i64);
    let busy: f64 = (0..workers)
        .map(|w| runtime.worker_total_busy_duration(w).as_secs_f64())
        .sum();
    crate::metrics::advance_to(&m.runtime_busy_seconds, busy);
    m.runtime_alive_tasks.set(runtime.num_alive_tasks() as i64);
    m.runtime_queue_depth
        .set(runtime.global_queue_depth() as i64);
    let disk = broker.disk.load();
    m.disk_threads.set(disk.threads as i64);
    m.disk_queued_jobs.set(disk.queued as i64);
    crate::metrics::advance_to(&m.disk_busy_seconds, disk.busy.as_secs_f64());
    let quorum = broker.cluster.quorum.position();
    m.raft_leader.set(
        quorum
            .leader
            .and_then(|l| i64::try_from(l).ok())
            .unwrap_or(-1),
    );
    m.raft_epoch
        .set(i64::try_from(quorum.term).unwrap_or(i64::MAX));
    m.raft_state.reset();
    m.raft_state.with_label_values(&[quorum.role]).set(1);
    let index = |i: Option<u64>| i.and_then(|i| i64::try_from(i).ok()).unwrap_or(-1);
    m.raft_log_end.set(index(quorum.last_log_index));
    m.raft_applied.set(index(quorum.last_applied));
    // Leaders, ISR health and the controller flag (set by the controller task).
    crate::cluster::isr::refresh_gauges(&broker.control());
}

/// One group's position on one partition.
#[derive(Debug, PartialEq, Eq)]
struct GroupLag<'a> {
    group: &'a str,
    topic: &'a str,
    partition: i32,
    offset: i64,
    lag: i64,
}

/// The committed offset and lag of every group on the partitions in `led` (their high
/// watermarks). Only the leader reports a partition, so a sum over brokers counts it once. A
/// committed offset past the high watermark (a truncated log) counts as no lag.
fn group_lags<'a>(
    offsets: &'a BTreeMap<String, GroupOffsets>,
    led: &HashMap<(String, i32), i64>,
) -> Vec<GroupLag<'a>> {
    let mut out = Vec::new();
    for (group, committed) in offsets {
        for ((topic, partition), c) in committed {
            let Some(hw) = led.get(&(topic.clone(), *partition)) else {
                continue;
            };
            out.push(GroupLag {
                group,
                topic,
                partition: *partition,
                offset: c.offset,
                lag: (hw - c.offset).max(0),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::offsets::CommittedOffset;

    #[test]
    fn lag_is_reported_for_led_partitions_only() {
        let at = |offset| CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: None,
            commit_ms: 0,
        };
        let offsets = BTreeMap::from([
            (
                "billing".to_string(),
                GroupOffsets::from([
                    (("orders".to_string(), 0), at(40)),
                    (("orders".to_string(), 1), at(7)),
                    (("orders".to_string(), 2), at(99)),
                ]),
            ),
            (
                "audit".to_string(),
                GroupOffsets::from([(("payments".to_string(), 0), at(0))]),
            ),
        ]);
        // Partitions 0 and 2 of orders are led here; 1 and payments elsewhere.
        let led = HashMap::from([
            (("orders".to_string(), 0), 100),
            (("orders".to_string(), 2), 90),
        ]);
        let lags = group_lags(&offsets, &led);
        assert_eq!(
            lags,
            vec![
                GroupLag {
                    group: "billing",
                    topic: "orders",
                    partition: 0,
                    offset: 40,
                    lag: 60
                },
                GroupLag {
                    group: "billing",
                    topic: "orders",
                    partition: 2,
                    offset: 99,
                    lag: 0
                },
            ]
        );
    }
}
