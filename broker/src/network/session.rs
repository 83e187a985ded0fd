//! Per-connection security state: which listener the connection came in on, its principal
//! (`User:ANONYMOUS`, `User:<sasl name>`, or `User:<certificate DN>` for mTLS) and where it is in
//! the SASL exchange.
//!
//! On a SASL listener a connection starts in `AwaitingHandshake`: only ApiVersions,
//! SaslHandshake and SaslAuthenticate are served until authentication succeeds; anything else
//! closes the connection. A v1 handshake is followed by SaslAuthenticate requests; a v0 handshake
//! by raw size-prefixed SASL tokens (Kafka's legacy flow). A failed authentication is logged and
//! counted, answered after a delay that doubles for repeated failures from one address, and the
//! connection is closed after the answer, as Kafka does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};

use super::listener::ListenerRuntime;
use crate::auth::plain::PlainUsers;
use crate::auth::sasl::{Authenticator, Credentials, SaslMechanism};
use crate::auth::scram::{ScramCredential, ScramMechanism};
use crate::auth::scram_server::Step;
use crate::config::security::ListenerSecurity;
use crate::protocol::context::{s, ANONYMOUS};
use crate::protocol::errors::ErrorCode;
use crate::state::Broker;

enum SaslState {
    /// The listener does not use SASL.
    NotSasl,
    AwaitingHandshake,
    Authenticating {
        mechanism: SaslMechanism,
        auth: Authenticator,
        /// After a v0 handshake, tokens come raw instead of in SaslAuthenticate requests.
        raw_tokens: bool,
    },
    Authenticated,
    /// A failure was answered; the connection is about to close.
    Failed,
}

/// One connection's security state, handed to dispatch with every request.
pub struct Session {
    pub peer: SocketAddr,
    pub listener: Arc<ListenerRuntime>,
    pub principal: String,
    state: SaslState,
}

impl Session {
    /// A connection on `listener`; `tls_principal` is the client certificate's principal on a
    /// TLS listener that verified one.
    pub fn new(
        peer: SocketAddr,
        listener: Arc<ListenerRuntime>,
        tls_principal: Option<String>,
    ) -> Session {
        let state = if listener.security.protocol.uses_sasl() {
            SaslState::AwaitingHandshake
        } else {
            SaslState::NotSasl
        };
        // On SASL_SSL the SASL identity wins; a certificate names the principal only on SSL.
        let principal = match (&state, tls_principal) {
            (SaslState::NotSasl, Some(p)) => p,
            _ => ANONYMOUS.to_string(),
        };
        Session {
            peer,
            listener,
            principal,
            state,
        }
    }

    /// A connection on an unauthenticated PLAINTEXT listener named `PLAINTEXT` (tests, fuzzing).
    pub fn plaintext(peer: SocketAddr) -> Session {
        let rt = ListenerRuntime::new(ListenerSecurity::plaintext("PLAINTEXT"), Duration::ZERO)
            .unwrap_or_else(|_| unreachable!("a plaintext listener loads no files"));
        Session::new(peer, Arc::new(rt), None)
    }

    pub fn listener_name(&self) -> &str {
        &self.listener.security.name
    }

    /// Whether the next frame is a raw SASL token rather than a request.
    pub fn expects_raw_token(&self) -> bool {
        matches!(
            self.state,
            SaslState::Authenticating {
                raw_tokens: true,
                ..
            }
        )
    }

    /// Whether a request for `key` may be served now (SASL requests are always routed to this
    /// module, which checks their order itself).
    pub fn allows(&self, key: ApiKey) -> bool {
        match self.state {
            SaslState::NotSasl | SaslState::Authenticated => true,
            SaslState::AwaitingHandshake => matches!(
                key,
                ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
            ),
            // A second handshake is answered (ILLEGAL_SASL_STATE) before the connection closes.
            SaslState::Authenticating { .. } => {
                matches!(key, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate)
            }
            SaslState::Failed => false,
        }
    }
}

struct BrokerCredentials<'a> {
    broker: &'a Broker,
    plain: &'a PlainUsers,
}

impl Credentials for BrokerCredentials<'_> {
    fn scram(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        self.broker
            .metadata
            .snapshot()
            .scram_credential(user, mechanism)
            .cloned()
    }

    fn plain_users(&self) -> &PlainUsers {
        self.plain
    }
}

/// SaslHandshake. Returns the response and whether to close the connection after it.
pub fn handshake(
    session: &mut Session,
    req: &SaslHandshakeRequest,
    version: i16,
) -> (SaslHandshakeResponse, bool) {
    let enabled: Vec<_> = session
        .listener
        .security
        .mechanisms
        .iter()
        .map(|m| s(m.name()))
        .collect();
    let resp = SaslHandshakeResponse::default().with_mechanisms(enabled);
    match session.state {
        // Kafka answers a handshake on a listener without SASL with ILLEGAL_SASL_STATE.
        SaslState::NotSasl => (
            resp.with_error_code(ErrorCode::IllegalSaslState as i16),
            false,
        ),
        SaslState::AwaitingHandshake => {
            let wanted = req.mechanism.as_str();
            match SaslMechanism::parse(wanted)
                .filter(|m| session.listener.security.mechanisms.contains(m))
            {
                Some(m) => {
                    session.state = SaslState::Authenticating {
                        mechanism: m,
                        auth: Authenticator::new(m),
                        raw_tokens: version == 0,
                    };
                    (resp, false)
                }
                None => {
                    tracing::warn!(peer = %session.peer, listener = session.listener_name(),
                        mechanism = %wanted.escape_debug(), "unsupported SASL mechanism requested");
                    session.state = SaslState::Failed;
                    session.listener.count_failure();
                    (
                        resp.with_error_code(ErrorCode::UnsupportedSaslMechanism as i16),
                        true,
                    )
                }
            }
        }
        _ => {
            session.state = SaslState::Failed;
            (
                resp.with_error_code(ErrorCode::IllegalSaslState as i16),
                true,
            )
        }
    }
}

/// SaslAuthenticate. Returns the response and whether to close the connection after it.
pub async fn authenticate(
    broker: &Broker,
    session: &mut Session,
    req: &SaslAuthenticateRequest,
) -> (SaslAuthenticateResponse, bool) {
    let in_order = matches!(
        session.state,
        SaslState::Authenticating {
            raw_tokens: false,
            ..
        }
    );
    if !in_order {
        let msg = match session.state {
            SaslState::NotSasl => "SASL authentication is not enabled on this listener",
            SaslState::Authenticated => {
                "Already authenticated (re-authentication is not supported)"
            }
            _ => "SaslAuthenticate is only valid after a successful SaslHandshake v1",
        };
        session.state = SaslState::Failed;
        let resp = SaslAuthenticateResponse::default()
            .with_error_code(ErrorCode::IllegalSaslState as i16)
            .with_error_message(Some(s(msg)));
        return (resp, true);
    }
    match step(broker, session, &req.auth_bytes).await {
        Ok(bytes) => (
            SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(bytes)),
            false,
        ),
        Err(e) => (
            SaslAuthenticateResponse::default()
                .with_error_code(e.code().code())
                .with_error_message(Some(s(e.to_string()))),
            true,
        ),
    }
}

/// Why a SASL token was not accepted; the message is what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslStepError {
    #[error("no SASL exchange in progress")]
    NoExchange,
    /// Refused credentials (the reason itself is only logged).
    #[error("{}", .0.failure_message())]
    Failed(SaslMechanism),
}

impl SaslStepError {
    /// The SaslAuthenticate error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            SaslStepError::NoExchange => ErrorCode::IllegalSaslState,
            SaslStepError::Failed(_) => ErrorCode::SaslAuthenticationFailed,
        }
    }
}

/// A raw SASL token after a v0 handshake: the response token, or why to close (Kafka closes
/// without an answer when a legacy exchange fails).
pub async fn raw_token(
    broker: &Broker,
    session: &mut Session,
    token: &[u8],
) -> Result<Vec<u8>, SaslStepError> {
    step(broker, session, token).await
}

/// Feeds one token to the authenticator. On failure: log, count, wait, and return the client
/// message.
async fn step(
    broker: &Broker,
    session: &mut Session,
    token: &[u8],
) -> Result<Vec<u8>, SaslStepError> {
    let SaslState::Authenticating {
        mechanism, auth, ..
    } = &mut session.state
    else {
        return Err(SaslStepError::NoExchange);
    };
    let mechanism = *mechanism;
    let creds = BrokerCredentials {
        broker,
        plain: &session.listener.security.plain_users,
    };
    match auth.step(token, &creds) {
        Step::Challenge(bytes) => Ok(bytes),
        Step::Success { user, response } => {
            session.principal = format!("User:{user}");
            session.state = SaslState::Authenticated;
            session.listener.count_success();
            tracing::debug!(peer = %session.peer, listener = session.listener_name(),
                principal = %session.principal, mechanism = mechanism.name(), "authenticated");
            Ok(response)
        }
        Step::Failure(reason) => {
            session.state = SaslState::Failed;
            session.listener.count_failure();
            let delay = session
                .listener
                .failures
                .record(session.peer.ip(), session.listener.failed_auth_delay);
            tracing::warn!(peer = %session.peer, listener = session.listener_name(),
                mechanism = mechanism.name(), %reason, delay_ms = delay.as_millis() as u64,
                "failed authentication");
            tokio::time::sleep(delay).await;
            Err(SaslStepError::Failed(mechanism))
        }
    }
}
