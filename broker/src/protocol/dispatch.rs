//! Turns one request frame into one response frame: header parsing, version checks, body decode,
//! routing to the API handler (the table in `apis`), and response encoding. Malformed or
//! unsupported requests close the connection (as Kafka does) and never reach a handler.
//!
//! SASL requests (and raw SASL tokens after a v0 handshake) go to `network::session`, which owns
//! the connection's authentication state; until a SASL listener's connection has authenticated,
//! any other request except ApiVersions closes the connection.
//!
//! Each request that gets past header parsing is handled inside a debug-level `request` span
//! (API name, version, correlation id, client id, principal, listener), so every event a handler
//! logs carries them, and a served request ends with a debug `request served` event giving its
//! duration. Below debug the span is disabled and its fields are never formatted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};
use tracing::Instrument;

use super::apis::{self, Route};
use super::chunked::{Chunk, Payload};
use super::context::RequestContext;
use super::errors::ErrorCode;
use super::versions;
use crate::api;
use crate::api::services::FromBroker;
use crate::network::session::{self, Session};
use crate::state::Broker;

/// What the connection should do with a request.
pub enum Reply {
    Response(Bytes),
    /// A response in pieces (frame size first), some sharing memory, some regions of log files
    /// (see `chunked`).
    Chunks(Vec<Chunk>),
    /// Produce with acks=0 gets no response at all.
    NoResponse,
    Close(String),
    /// Send the response, then close (failed or out-of-order SASL exchanges).
    ResponseThenClose(Bytes, String),
}

pub(super) fn encode_response<R: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Reply {
    let header_version = key.response_header_version(version);
    // Sized up front: large fetch responses would otherwise be copied on every growth step.
    let capacity = 64 + body.compute_size(version).unwrap_or(0);
    let mut buf = BytesMut::with_capacity(capacity);
    buf.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    if let Err(e) = header
        .encode(&mut buf, header_version)
        .and_then(|()| body.encode(&mut buf, version))
    {
        return Reply::Close(format!("could not encode {key:?} v{version} response: {e}"));
    }
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Reply::Response(buf.freeze())
}

/// [`encode_response`] for responses carrying record payloads: slices of `payloads` are
/// referenced, not copied (see [`super::chunked`]).
pub(super) fn encode_response_sharing<R: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
    payloads: &[Payload],
) -> Reply {
    if payloads.is_empty() {
        return encode_response(key, version, correlation_id, body);
    }
    let header_version = key.response_header_version(version);
    let shared: usize = payloads.iter().map(|p| p.bytes.len()).sum();
    let copied = body
        .compute_size(version)
        .unwrap_or(0)
        .saturating_sub(shared);
    let mut buf = super::chunked::ChunkedBuf::new(payloads, 64 + copied);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    if let Err(e) = header
        .encode(&mut buf, header_version)
        .and_then(|()| body.encode(&mut buf, version))
    {
        return Reply::Close(format!("could not encode {key:?} v{version} response: {e}"));
    }
    let Ok(len) = i32::try_from(buf.len()) else {
        return Reply::Close(format!("{key:?} v{version} response too large"));
    };
    let Some(mut chunks) = buf.finish() else {
        return Reply::Close(format!(
            "{key:?} v{version} response: encoder rewrote shared bytes"
        ));
    };
    chunks.insert(0, Chunk::Memory(Bytes::copy_from_slice(&len.to_be_bytes())));
    Reply::Chunks(chunks)
}

/// Why a request body (or header) could not be decoded; the connection closes with this.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{0:#}")]
    Malformed(anyhow::Error),
    #[error("decoder panicked")]
    Panicked,
}

/// Decodes a body, treating a decoder panic like any other malformed input.
pub(super) fn decode_body<T: Decodable>(body: &mut Bytes, version: i16) -> Result<T, DecodeError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| T::decode(body, version))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(DecodeError::Malformed(e)),
        Err(_) => Err(DecodeError::Panicked),
    }
}

/// An ApiVersions answer for a version we do not know (KIP-511): v0 layout, error set, our ranges.
fn unsupported_api_versions(correlation_id: i32) -> Reply {
    let resp = versions::response(ErrorCode::UnsupportedVersion);
    encode_response(ApiKey::ApiVersions, 0, correlation_id, &resp)
}

/// A raw SASL token answer: the token in a size-prefixed frame, no Kafka header.
fn raw_frame(token: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(4 + token.len());
    buf.put_i32(token.len() as i32);
    buf.put_slice(token);
    buf.freeze()
}

/// SaslHandshake / SaslAuthenticate: answered from the session's state machine.
async fn handle_sasl(
    broker: &Arc<Broker>,
    session: &mut Session,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    mut body: Bytes,
) -> Reply {
    let (reply, close) = if key == ApiKey::SaslHandshake {
        let req: SaslHandshakeRequest = match decode_body(&mut body, version) {
            Ok(r) => r,
            Err(e) => return Reply::Close(format!("malformed SaslHandshake v{version}: {e}")),
        };
        let (resp, close) = session::handshake(session, &req, version);
        (encode_response(key, version, correlation_id, &resp), close)
    } else {
        let req: SaslAuthenticateRequest = match decode_body(&mut body, version) {
            Ok(r) => r,
            Err(e) => return Reply::Close(format!("malformed SaslAuthenticate v{version}: {e}")),
        };
        let (resp, close) = session::authenticate(broker, session, &req).await;
        (encode_response(key, version, correlation_id, &resp), close)
    };
    match (reply, close) {
        (Reply::Response(b), true) => {
            Reply::ResponseThenClose(b, format!("{key:?} refused: closing the connection"))
        }
        (r, _) => r,
    }
}

pub async fn handle(broker: &Arc<Broker>, session: &mut Session, frame: Bytes) -> Reply {
    if session.expects_raw_token() {
        return match session::raw_token(broker, session, &frame).await {
            Ok(token) => Reply::Response(raw_frame(&token)),
            Err(e) => Reply::Close(format!("legacy SASL exchange failed: {e}")),
        };
    }
    let peer = session.peer;
    if frame.len() < 8 {
        return Reply::Close(format!(
            "request of {} bytes is shorter than a request header",
            frame.len()
        ));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(key) = ApiKey::try_from(raw_key) else {
        return Reply::Close(format!("unknown API key {raw_key}"));
    };
    if !session.allows(key) {
        return Reply::Close(format!(
            "{key:?} request before SASL authentication completed on listener {}",
            session.listener_name()
        ));
    }
    if key == ApiKey::ApiVersions && !versions::accepts(key, version) {
        return unsupported_api_versions(correlation_id);
    }
    if !versions::accepts(key, version) {
        return Reply::Close(format!("unsupported version {version} of {key:?}"));
    }
    let mut body = frame.clone();
    let header: RequestHeader = match decode_body(&mut body, key.request_header_version(version)) {
        Ok(h) => h,
        Err(e) => return Reply::Close(format!("malformed request header: {e}")),
    };
    let ctx = RequestContext {
        client_id: header
            .client_id
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        client_host: format!("/{}", peer.ip()),
        principal: session.principal.clone(),
        listener: session.listener_name().to_string(),
        api_version: version,
        sends_files: !session.listener.security.protocol.uses_tls(),
    };
    let api_name = apis::name(key);
    // Field values are only evaluated when the span is enabled (`debug_span!` checks the level
    // first), so at the default `info` filter this costs no formatting and no allocation.
    let span = tracing::debug_span!(
        "request",
        api = api_name,
        version,
        correlation_id,
        client_id = %ctx.client_id,
        principal = %ctx.principal,
        listener = %ctx.listener,
    );
    // Instrumented rather than entered: the span must follow the handler across its awaits.
    serve(broker, session, &ctx, key, version, correlation_id, body)
        .instrument(span)
        .await
}

/// Decodes the body, runs the API's handler and encodes its response; times served requests.
async fn serve(
    broker: &Arc<Broker>,
    session: &mut Session,
    ctx: &RequestContext,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    mut body: Bytes,
) -> Reply {
    let started = Instant::now();
    let api_name = apis::name(key);
    broker
        .metrics
        .requests
        .with_label_values(&[api_name, &version.to_string(), &ctx.listener])
        .inc();

    let reply = match apis::route(key) {
        Some(Route::Sasl) => handle_sasl(broker, session, key, version, correlation_id, body).await,
        Some(Route::Produce) => {
            let req: ProduceRequest = match decode_body(&mut body, version) {
                Ok(r) => r,
                Err(e) => return malformed(key, version, &e),
            };
            let acks = req.acks;
            let resp = api::produce::handle(FromBroker::from_broker(broker), ctx, req).await;
            if acks == 0 {
                Reply::NoResponse
            } else {
                encode_response(key, version, correlation_id, &resp)
            }
        }
        Some(Route::Handler) => {
            match apis::call(broker, ctx, key, version, correlation_id, body).await {
                Ok(reply) => reply,
                Err(e) => return malformed(key, version, &e),
            }
        }
        // `accepts` above already refused APIs without a row.
        None => return Reply::Close(format!("API {key:?} is not implemented")),
    };
    let elapsed = started.elapsed();
    observe(broker, api_name, &ctx.listener, elapsed);
    // Inside the request span: at debug level every served request leaves one line with its
    // span fields and duration.
    tracing::debug!(elapsed_us = elapsed.as_micros() as u64, "request served");
    reply
}

/// A request body that does not decode closes the connection (and is not timed as served).
fn malformed(key: ApiKey, version: i16, e: &DecodeError) -> Reply {
    Reply::Close(format!("malformed {key:?} v{version} request: {e}"))
}

fn observe(broker: &Broker, api: &'static str, listener: &str, elapsed: Duration) {
    broker
        .metrics
        .request_seconds
        .with_label_values(&[api, listener])
        .observe(elapsed.as_secs_f64());
}
