//! The operator's Kafka admin client: typed calls over `fjord-client`, one method per thing a
//! reconciler needs. Every call has a deadline, and Kafka error codes come back as
//! [`AdminError::Kafka`] with the protocol's name so conditions can quote them.

mod broker_configs;
mod log_dirs;
mod partitions;
mod throttles;
mod topics;
mod users;

use std::time::Duration;

use fjord_client::{ClientError, ClientSecurity, Connection};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::MetadataRequest;
use kafka_protocol::protocol::{Request, StrBytes};

pub use log_dirs::copy_progress;
pub use partitions::{ClusterLayout, OngoingReassignment, PartitionState};
pub use topics::{TopicDescription, TopicInfo};
pub use users::{acl_codes, AclBinding, ScramCredentialInfo, ScramMechanism, SCRAM_ITERATIONS};

/// Deadline for one request/response round trip (and for connecting).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot reach the brokers at {address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("request to the brokers failed: {0}")]
    Protocol(String),
    #[error("the brokers answered {name}{}", .message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Kafka {
        code: i16,
        name: String,
        message: Option<String>,
    },
}

impl AdminError {
    /// The Kafka error name (e.g. `INVALID_CONFIG`), when the brokers answered with one.
    pub fn kafka_error(&self) -> Option<&str> {
        match self {
            AdminError::Kafka { name, .. } => Some(name),
            _ => None,
        }
    }
}

impl From<ClientError> for AdminError {
    fn from(e: ClientError) -> Self {
        AdminError::Protocol(e.to_string())
    }
}

/// A protocol string from text (every request field the admin calls fill).
pub(crate) fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// Turns a response error code into a result; `message` is the broker's own explanation.
pub(crate) fn check(code: i16, message: Option<&str>) -> Result<(), AdminError> {
    if code == 0 {
        return Ok(());
    }
    let name = match ResponseError::try_from_code(code) {
        Some(ResponseError::Unknown(_)) | None => format!("ERROR_CODE_{code}"),
        Some(e) => screaming_snake(&e.to_string()),
    };
    Err(AdminError::Kafka {
        code,
        name,
        message: message.filter(|m| !m.is_empty()).map(str::to_string),
    })
}

/// `InvalidConfig` -> `INVALID_CONFIG`, the name Kafka's docs and tools use.
fn screaming_snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// What the cluster says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterInfo {
    pub cluster_id: Option<String>,
    /// Active controller (quorum leader), `None` when there is none.
    pub controller_id: Option<i32>,
    pub broker_ids: Vec<i32>,
}

/// One admin connection to a cluster.
pub struct KafkaAdmin {
    conn: Connection,
    address: String,
    /// How this connection was secured; connections to single brokers use the same.
    security: ClientSecurity,
}

impl KafkaAdmin {
    /// Connects to `address` (`host:port`) secured as `security` says (the operator's mutual
    /// TLS identity on the replication listener; plaintext only for a test's own brokers).
    pub async fn connect(
        address: &str,
        security: ClientSecurity,
    ) -> Result<KafkaAdmin, AdminError> {
        let unreachable = |reason: String| AdminError::Unreachable {
            address: address.to_string(),
            reason,
        };
        let conn = tokio::time::timeout(CALL_TIMEOUT, Connection::connect_with(address, &security))
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(KafkaAdmin {
            conn,
            address: address.to_string(),
            security,
        })
    }

    /// Another admin connection, to one broker at `address`, secured like this one.
    pub async fn connect_to(&self, address: &str) -> Result<KafkaAdmin, AdminError> {
        KafkaAdmin::connect(address, self.security.clone()).await
    }

    /// Sends one request with the call deadline.
    pub(crate) async fn call<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, AdminError> {
        tokio::time::timeout(CALL_TIMEOUT, self.conn.send(request, version))
            .await
            .map_err(|_| AdminError::Unreachable {
                address: self.address.clone(),
                reason: "no answer within 15 s".into(),
            })?
            .map_err(AdminError::from)
    }

    /// Cluster id, active controller and registered brokers (Metadata without topics).
    pub async fn cluster(&mut self) -> Result<ClusterInfo, AdminError> {
        let request = MetadataRequest::default().with_topics(Some(vec![]));
        let response = self.call(&request, 12).await?;
        let mut broker_ids: Vec<i32> = response.brokers.iter().map(|b| b.node_id.0).collect();
        broker_ids.sort_unstable();
        Ok(ClusterInfo {
            cluster_id: response.cluster_id.map(|s| s.to_string()),
            controller_id: (response.controller_id.0 >= 0).then_some(response.controller_id.0),
            broker_ids,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_get_kafka_names() {
        let e = check(40, Some("unknown key")).unwrap_err();
        assert_eq!(e.kafka_error(), Some("INVALID_CONFIG"));
        assert_eq!(
            e.to_string(),
            "the brokers answered INVALID_CONFIG: unknown key"
        );
        assert!(check(0, None).is_ok());
    }
}
