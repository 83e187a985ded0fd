//! The operator's HTTP endpoint: `/metrics` (Prometheus), `/healthz` (process alive) and
//! `/readyz` (connected to the API server). Small on purpose: GET only, one request per connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;

/// What the endpoint reports.
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub ready: AtomicBool,
}

/// Status line, content type and body for `method path` (pure, so it is unit-tested).
pub fn respond(
    state: &HttpState,
    method: &str,
    path: &str,
) -> (&'static str, &'static str, String) {
    match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4",
            state.metrics.render(),
        ),
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".into()),
        ("GET", "/readyz") if state.ready.load(Ordering::Relaxed) => {
            ("200 OK", "text/plain", "ready\n".into())
        }
        ("GET", "/readyz") => (
            "503 Service Unavailable",
            "text/plain",
            "not ready\n".into(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".into()),
    }
}

pub async fn serve(state: Arc<HttpState>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let deadline = std::time::Duration::from_secs(10);
            let _ = tokio::time::timeout(deadline, answer(&state, stream)).await;
        });
    }
}

async fn answer(state: &HttpState, mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || head.len() > 8192 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut request_line = text.lines().next().unwrap_or("").split_whitespace();
    let method = request_line.next().unwrap_or("");
    let path = request_line
        .next()
        .unwrap_or("")
        .split('?')
        .next()
        .unwrap_or("");
    let (status, content_type, body) = respond(state, method, path);
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_flag() {
        let state = HttpState {
            metrics: Arc::new(Metrics::default()),
            ready: AtomicBool::new(false),
        };
        assert_eq!(
            respond(&state, "GET", "/readyz").0,
            "503 Service Unavailable"
        );
        state.ready.store(true, Ordering::Relaxed);
        assert_eq!(respond(&state, "GET", "/readyz").0, "200 OK");
        assert_eq!(respond(&state, "GET", "/healthz").0, "200 OK");
        assert!(respond(&state, "GET", "/metrics")
            .2
            .contains("fjord_operator_leader"));
        assert_eq!(
            respond(&state, "POST", "/metrics").0,
            "405 Method Not Allowed"
        );
    }
}
