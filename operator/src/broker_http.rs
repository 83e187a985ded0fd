//! The brokers' admin HTTP endpoint (port 9644), as the roller asks it "may broker n stop now?"
//! (`/v1/restart-safety`). A plain HTTP/1.1 GET over TCP with a deadline: the endpoint answers
//! small JSON documents and closes the connection, so no HTTP client library is needed.

use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Deadline for connecting, sending and reading the whole answer.
const DEADLINE: Duration = Duration::from_secs(5);
/// Larger answers are not what the endpoint sends.
const MAX_ANSWER: u64 = 4 << 20;

/// A partition the broker says would go offline or below min ISR if it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BlockingPartition {
    pub topic: String,
    pub partition: i32,
    /// `wouldGoOffline` or `belowMinIsr`.
    pub reason: String,
}

/// The broker's `/v1/restart-safety` answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartSafetyAnswer {
    pub safe: bool,
    #[serde(default)]
    pub blocking: Vec<BlockingPartition>,
    #[serde(default)]
    pub quorum_stopped: Option<String>,
}

/// GETs `path` from `address` (`host:port`); the status code and body.
pub async fn get(address: &str, path: &str) -> Result<(u16, String), String> {
    tokio::time::timeout(DEADLINE, get_inner(address, path))
        .await
        .map_err(|_| format!("no answer from {address} within {DEADLINE:?}"))?
}

async fn get_inner(address: &str, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending to {address}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut raw)
        .await
        .map_err(|e| format!("reading from {address}: {e}"))?;
    parse_response(&String::from_utf8_lossy(&raw))
}

/// Status code and body of an HTTP/1.1 response without chunked encoding.
fn parse_response(text: &str) -> Result<(u16, String), String> {
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "malformed HTTP answer (no header end)".to_string())?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("malformed HTTP status line: {:?}", head.lines().next()))?;
    Ok((status, body.to_string()))
}

/// Asks the broker at `address` (its admin `host:port`) whether it may stop now.
pub async fn restart_safety(address: &str) -> Result<RestartSafetyAnswer, String> {
    let (status, body) = get(address, "/v1/restart-safety").await?;
    if status != 200 {
        return Err(format!(
            "restart-safety answered HTTP {status}: {}",
            body.trim()
        ));
    }
    serde_json::from_str(&body).map_err(|e| format!("unreadable restart-safety answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_as_the_broker_writes_them() {
        let (status, body) = parse_response(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"broker\":1,\"safe\":false,\
             \"blocking\":[{\"topic\":\"orders\",\"partition\":0,\"reason\":\"belowMinIsr\",\
             \"isrAfter\":1,\"minInsync\":2}]}\n",
        )
        .unwrap();
        assert_eq!(status, 200);
        let answer: RestartSafetyAnswer = serde_json::from_str(&body).unwrap();
        assert!(!answer.safe);
        assert_eq!(answer.blocking[0].reason, "belowMinIsr");
        assert_eq!(answer.quorum_stopped, None);
        assert!(parse_response("garbage").is_err());
        assert!(parse_response("HTTP/1.1 abc\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn an_unreachable_broker_is_an_error_not_a_hang() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        assert!(restart_safety(&address).await.is_err());
    }
}
