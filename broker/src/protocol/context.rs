//! What every layer may know about a request: who sent it ([`RequestContext`], built by
//! dispatch from the request header and the connection's session) and the string helper
//! handlers use to fill responses. Plain data, no broker state, so API handlers and services
//! (quotas) take it without depending on dispatch.

use kafka_protocol::protocol::StrBytes;

/// Who sent a request, for handlers that need it (group membership, logs).
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub client_id: String,
    pub client_host: String,
    pub api_version: i16,
    /// The authenticated principal (`User:name`); `User:ANONYMOUS` on listeners without SASL
    /// or mTLS. Authorization decisions use this.
    pub principal: String,
    /// The listener the request came in on (metadata answers with that listener's address).
    pub listener: String,
    /// Plain TCP: large fetched regions go from the log file to the socket (`sendfile`). On
    /// TLS the bytes must be encrypted, so the handler reads them into memory instead.
    pub sends_files: bool,
}

/// Kafka's principal for unauthenticated connections.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// Shorthand used by handlers.
pub fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}
