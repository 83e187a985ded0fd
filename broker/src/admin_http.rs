//! The admin HTTP endpoint (separate port): `/metrics` for Prometheus, `/v1/ready` for probes and
//! `/v1/restart-safety` (may this broker be stopped now?) for the operator.
//! A deliberately small HTTP/1.1 responder: GET only, one request per connection.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
    let size: u64 = parts.iter().map(|p| p.log.read().size_bytes()).sum();
    broker.metrics.log_size_bytes.set(size as i64);
    broker.metrics.partitions.set(parts.len() as i64);
    // Leaders, ISR health and the controller flag (set by the controller task).
    crate::cluster::isr::refresh_gauges(broker);
}
