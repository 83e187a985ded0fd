//! fjord-client: a small async Kafka protocol client over `kafka-protocol`.
//!
//! One [`Connection`] sends typed requests and decodes typed responses, negotiating nothing: the
//! caller picks the version. The operator, the end-to-end tests and the tools build on it; it is
//! deliberately thin so tests can also send requests no well-behaved client would.
//!
//! [`Connection::connect`] is plain TCP. [`Connection::connect_with`] adds TLS and/or SASL
//! (PLAIN, SCRAM-SHA-256/512) as described by a [`ClientSecurity`], which
//! [`ClientSecurity::from_properties`] builds from Kafka client properties.

pub mod scram;
pub mod security;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, ToSocketAddrs};

pub use security::{
    client_config as rustls_client_config, ClientCertificate, ClientSecurity, PemSource,
    SaslMechanism, SaslSettings, SecurityProtocol, TlsSettings,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("could not encode request: {0}")]
    Encode(String),
    #[error("could not decode response: {0}")]
    Decode(String),
    #[error("response correlation id {got} does not match request {want}")]
    Correlation { want: i32, got: i32 },
    #[error("response of {0} bytes is larger than the 256 MiB limit")]
    TooLarge(usize),
    /// TLS could not be set up: unreadable or invalid certificate files, a broker certificate
    /// that does not verify, a refused client certificate, a failed handshake.
    #[error("TLS: {0}")]
    Tls(String),
    /// The broker refused the credentials (SASL_AUTHENTICATION_FAILED).
    #[error("SASL authentication with {mechanism} failed: {message}")]
    SaslAuthenticationFailed { mechanism: String, message: String },
    /// The listener does not enable the mechanism (UNSUPPORTED_SASL_MECHANISM).
    #[error("SASL mechanism {mechanism} is not enabled on this listener (enabled: {})", enabled.join(", "))]
    UnsupportedSaslMechanism {
        mechanism: String,
        enabled: Vec<String>,
    },
    /// The SCRAM server-final message does not prove knowledge of the credentials: the peer is
    /// not the broker the credentials were registered with.
    #[error("the {mechanism} server signature does not verify: the broker does not know the credentials")]
    BadServerSignature { mechanism: String },
    /// Any other SASL protocol failure (malformed server messages, ILLEGAL_SASL_STATE, ...).
    #[error("SASL: {0}")]
    Sasl(String),
    /// Invalid security configuration (the message names the property).
    #[error("invalid security configuration: {0}")]
    Config(String),
}

/// An I/O error, or [`ClientError::Tls`] when TLS is what failed (e.g. a TLS 1.3 broker refusing
/// the client certificate after the client finished its handshake).
fn io_error(e: std::io::Error) -> ClientError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => ClientError::Tls(tls.to_string()),
        None => ClientError::Io(e),
    }
}

/// A broker address: the host (which TLS verifies the certificate against, unless
/// [`TlsSettings::server_name`] overrides it) and the port. Implemented for `(&str, u16)`,
/// `(String, u16)`, [`SocketAddr`] and `"host:port"` strings (`"[::1]:9092"` for IPv6).
pub trait BrokerAddress {
    fn host_port(&self) -> Result<(String, u16), ClientError>;
}

impl BrokerAddress for (&str, u16) {
    fn host_port(&self) -> Result<(String, u16), ClientError> {
        Ok((self.0.to_string(), self.1))
    }
}

impl BrokerAddress for (String, u16) {
    fn host_port(&self) -> Result<(String, u16), ClientError> {
        Ok((self.0.clone(), self.1))
    }
}

impl BrokerAddress for SocketAddr {
    fn host_port(&self) -> Result<(String, u16), ClientError> {
        Ok((self.ip().to_string(), self.port()))
    }
}

impl BrokerAddress for str {
    fn host_port(&self) -> Result<(String, u16), ClientError> {
        let bad = || ClientError::Config(format!("broker address '{self}' is not host:port"));
        let (host, port) = self.rsplit_once(':').ok_or_else(bad)?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = port.parse().map_err(|_| bad())?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok((host.to_string(), port))
    }
}

impl BrokerAddress for String {
    fn host_port(&self) -> Result<(String, u16), ClientError> {
        self.as_str().host_port()
    }
}

impl<T: BrokerAddress + ?Sized> BrokerAddress for &T {
    fn host_port(&self) -> Result<(String, u16), ClientError> {
        (**self).host_port()
    }
}

/// TCP, or TLS over TCP.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Responses above this size are refused rather than allocated.
const MAX_RESPONSE: usize = 256 << 20;

pub struct Connection {
    stream: Stream,
    next_correlation: i32,
    client_id: String,
    session_lifetime: Option<Duration>,
}

impl Connection {
    /// A plain TCP connection (PLAINTEXT).
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Connection, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection::new(Stream::Plain(stream)))
    }

    fn new(stream: Stream) -> Connection {
        Connection {
            stream,
            next_correlation: 1,
            client_id: "fjord-client".into(),
            session_lifetime: None,
        }
    }

    /// A connection secured as `security` says: TLS (handshake done, broker certificate
    /// verified) and/or SASL (SaslHandshake v1 + SaslAuthenticate v2, server signature verified
    /// for SCRAM), ready for requests. Certificate files are read on every call.
    ///
    /// With TLS 1.3 a broker that refuses the client certificate may only say so on the first
    /// request, which then fails with [`ClientError::Tls`].
    pub async fn connect_with(
        addr: impl BrokerAddress,
        security: &ClientSecurity,
    ) -> Result<Connection, ClientError> {
        let (host, port) = addr.host_port()?;
        // Build the TLS configuration first: a bad file fails before anything touches the net.
        let tls = match &security.tls {
            Some(t) => Some((
                Arc::new(security::client_config(t)?),
                security::server_name(t, &host)?,
            )),
            None => None,
        };
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        tcp.set_nodelay(true)?;
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some((config, name)) => {
                let shown = name.to_str().into_owned();
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| {
                        ClientError::Tls(format!("handshake with {shown} (port {port}): {e}"))
                    })?;
                Stream::Tls(Box::new(tls))
            }
        };
        let mut conn = Connection::new(stream);
        if let Some(sasl) = &security.sasl {
            conn.authenticate(sasl).await?;
        }
        Ok(conn)
    }

    /// How long the broker keeps this SASL session (SaslAuthenticate `session_lifetime_ms`);
    /// `None` without SASL or when the broker sets no limit. Reconnect before it ends.
    pub fn sasl_session_lifetime(&self) -> Option<Duration> {
        self.session_lifetime
    }

    /// Runs the SASL exchange on a fresh connection.
    async fn authenticate(&mut self, sasl: &SaslSettings) -> Result<(), ClientError> {
        let name = sasl.mechanism.name();
        let handshake =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(name));
        let h = self.send(&handshake, 1).await?;
        match h.error_code {
            0 => {}
            33 => {
                return Err(ClientError::UnsupportedSaslMechanism {
                    mechanism: name.into(),
                    enabled: h.mechanisms.iter().map(|m| m.to_string()).collect(),
                })
            }
            34 => {
                return Err(ClientError::Sasl(
                    "the broker does not expect SASL here (ILLEGAL_SASL_STATE): is the listener \
                     SASL_PLAINTEXT or SASL_SSL?"
                        .into(),
                ))
            }
            code => {
                return Err(ClientError::Sasl(format!(
                    "SaslHandshake error code {code}"
                )))
            }
        }
        let last = match sasl.mechanism.scram() {
            None => {
                let mut token = Vec::with_capacity(sasl.username.len() + sasl.password.len() + 2);
                token.push(0);
                token.extend_from_slice(sasl.username.as_bytes());
                token.push(0);
                token.extend_from_slice(sasl.password.as_bytes());
                self.sasl_step(name, token).await?
            }
            Some(m) => {
                let client = scram::ScramClient::new(m, &sasl.username, &sasl.password)?;
                let first = self
                    .sasl_step(name, client.client_first().into_bytes())
                    .await?;
                let (fin, check) = client.client_final(&first.auth_bytes)?;
                let last = self.sasl_step(name, fin.into_bytes()).await?;
                check.verify(&last.auth_bytes)?;
                last
            }
        };
        self.session_lifetime = u64::try_from(last.session_lifetime_ms)
            .ok()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        Ok(())
    }

    /// One SaslAuthenticate (v2) round trip; errors become [`ClientError`]s.
    async fn sasl_step(
        &mut self,
        mechanism: &str,
        token: Vec<u8>,
    ) -> Result<SaslAuthenticateResponse, ClientError> {
        let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
        let r = self.send(&req, 2).await?;
        let message = r.error_message.as_ref().map(|m| m.to_string());
        match r.error_code {
            0 => Ok(r),
            58 => Err(ClientError::SaslAuthenticationFailed {
                mechanism: mechanism.into(),
                message: message.unwrap_or_else(|| "invalid credentials".into()),
            }),
            code => Err(ClientError::Sasl(format!(
                "SaslAuthenticate error code {code}{}",
                message.map(|m| format!(": {m}")).unwrap_or_default()
            ))),
        }
    }

    /// Sends `request` at `version` and waits for its response.
    pub async fn send<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let correlation = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(|e| ClientError::Encode(e.to_string()))?;
        request
            .encode(&mut buf, version)
            .map_err(|e| ClientError::Encode(e.to_string()))?;
        let len = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&len.to_be_bytes());
        self.write(&buf).await?;
        let mut body = self.read_frame().await?;
        let resp_header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        if resp_header.correlation_id != correlation {
            return Err(ClientError::Correlation {
                want: correlation,
                got: resp_header.correlation_id,
            });
        }
        R::Response::decode(&mut body, version).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Sends raw bytes as one frame (for tests of malformed input).
    pub async fn send_raw_frame(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        let mut buf = BytesMut::with_capacity(payload.len() + 4);
        buf.put_i32(payload.len() as i32);
        buf.put_slice(payload);
        self.write(&buf).await
    }

    async fn write(&mut self, buf: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(buf).await.map_err(io_error)?;
        // TLS may hold records back until flushed; for TCP this is a no-op.
        self.stream.flush().await.map_err(io_error)
    }

    /// Reads one size-prefixed frame.
    pub async fn read_frame(&mut self) -> Result<Bytes, ClientError> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await.map_err(io_error)?;
        let len = (&len[..]).get_i32();
        if len < 0 || len as usize > MAX_RESPONSE {
            return Err(ClientError::TooLarge(len as usize));
        }
        let mut body = vec![0u8; len as usize];
        self.stream.read_exact(&mut body).await.map_err(io_error)?;
        Ok(Bytes::from(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{SaslAuthenticateResponse, SaslHandshakeResponse};
    use tokio::net::TcpListener;

    #[test]
    fn broker_addresses() {
        let ok = |a: &dyn BrokerAddress| a.host_port().unwrap();
        assert_eq!(ok(&("kafka-0", 9093)), ("kafka-0".into(), 9093));
        assert_eq!(ok(&("h".to_string(), 1)), ("h".into(), 1));
        assert_eq!(ok(&"kafka-0.svc:9094"), ("kafka-0.svc".into(), 9094));
        assert_eq!(ok(&"[::1]:9092".to_string()), ("::1".into(), 9092));
        let sa: SocketAddr = "127.0.0.1:19092".parse().unwrap();
        assert_eq!(ok(&sa), ("127.0.0.1".into(), 19092));
        for bad in ["kafka", ":9092", "kafka:port", "kafka:70000"] {
            assert!(
                matches!(bad.host_port(), Err(ClientError::Config(_))),
                "{bad}"
            );
        }
    }

    /// A fake SASL broker: accepts SaslHandshake, then answers each SaslAuthenticate with
    /// `reply(step, client_message)`.
    async fn fake_sasl_broker(
        reply: impl Fn(usize, &str) -> String + Send + 'static,
    ) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut step = 0;
            loop {
                let mut len = [0u8; 4];
                if s.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
                s.read_exact(&mut body).await.unwrap();
                let mut body = Bytes::from(body);
                let key = i16::from_be_bytes([body[0], body[1]]);
                let version = i16::from_be_bytes([body[2], body[3]]);
                let mut out = BytesMut::new();
                out.put_i32(0);
                if key == 17 {
                    let h = RequestHeader::decode(
                        &mut body,
                        SaslHandshakeRequest::header_version(version),
                    )
                    .unwrap();
                    ResponseHeader::default()
                        .with_correlation_id(h.correlation_id)
                        .encode(&mut out, SaslHandshakeResponse::header_version(version))
                        .unwrap();
                    SaslHandshakeResponse::default()
                        .encode(&mut out, version)
                        .unwrap();
                } else {
                    assert_eq!(key, 36);
                    let h = RequestHeader::decode(
                        &mut body,
                        SaslAuthenticateRequest::header_version(version),
                    )
                    .unwrap();
                    let req = SaslAuthenticateRequest::decode(&mut body, version).unwrap();
                    let answer = reply(step, std::str::from_utf8(&req.auth_bytes).unwrap());
                    step += 1;
                    ResponseHeader::default()
                        .with_correlation_id(h.correlation_id)
                        .encode(&mut out, SaslAuthenticateResponse::header_version(version))
                        .unwrap();
                    SaslAuthenticateResponse::default()
                        .with_auth_bytes(Bytes::from(answer.into_bytes()))
                        .with_session_lifetime_ms(60_000)
                        .encode(&mut out, version)
                        .unwrap();
                }
                let n = (out.len() - 4) as i32;
                out[..4].copy_from_slice(&n.to_be_bytes());
                s.write_all(&out).await.unwrap();
            }
        });
        addr
    }

    fn client_nonce(client_first: &str) -> String {
        client_first.split("r=").nth(1).unwrap().to_string()
    }

    fn scram(user: &str, pw: &str) -> ClientSecurity {
        ClientSecurity::sasl_plaintext(SaslSettings::new(SaslMechanism::ScramSha256, user, pw))
    }

    #[tokio::test]
    async fn an_impostor_server_signature_is_refused() {
        // The impostor does not know the password, so it cannot sign the exchange.
        let addr = fake_sasl_broker(|step, msg| match step {
            0 => format!("r={}srv,s=c2FsdA==,i=4096", client_nonce(msg)),
            _ => "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".into(),
        })
        .await;
        match Connection::connect_with(addr, &scram("user", "pencil")).await {
            Err(ClientError::BadServerSignature { mechanism }) => {
                assert_eq!(mechanism, "SCRAM-SHA-256")
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[tokio::test]
    async fn a_server_that_knows_the_password_is_accepted() {
        // The same fake broker, this time computing the real signature (it knows "pencil").
        let firsts = std::sync::Mutex::new((String::new(), String::new()));
        let addr = fake_sasl_broker(move |step, msg| {
            if step == 0 {
                let sf = format!("r={}srv,s=c2FsdA==,i=4096", client_nonce(msg));
                *firsts.lock().unwrap() = (msg.to_string(), sf.clone());
                return sf;
            }
            let (first, server_first) = firsts.lock().unwrap().clone();
            // A client with the same nonce computes the same proof.
            let c = scram::ScramClient::with_nonce(
                scram::ScramMechanism::Sha256,
                "user",
                "pencil",
                client_nonce(&first),
            );
            let (fin, _) = c.client_final(server_first.as_bytes()).unwrap();
            assert_eq!(fin, msg, "the proof matches the password");
            // Derive the signature the slow way, independently of ScramServerCheck.
            let salted = scram::ScramMechanism::Sha256.salted_password(b"pencil", b"salt", 4096);
            use base64::Engine;
            use hmac::Mac;
            let mut k = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&salted).unwrap();
            k.update(b"Server Key");
            let server_key = k.finalize().into_bytes();
            let auth = format!(
                "{},{},{}",
                &first[3..],
                server_first,
                fin.rsplit_once(",p=").unwrap().0
            );
            let mut s = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&server_key).unwrap();
            s.update(auth.as_bytes());
            format!(
                "v={}",
                base64::engine::general_purpose::STANDARD.encode(s.finalize().into_bytes())
            )
        })
        .await;
        let c = Connection::connect_with(addr, &scram("user", "pencil"))
            .await
            .unwrap();
        assert_eq!(c.sasl_session_lifetime(), Some(Duration::from_secs(60)));
    }

    #[tokio::test]
    async fn a_server_first_with_too_few_iterations_is_refused() {
        let addr =
            fake_sasl_broker(|_, msg| format!("r={}srv,s=c2FsdA==,i=1", client_nonce(msg))).await;
        match Connection::connect_with(addr, &scram("user", "pencil")).await {
            Err(ClientError::Sasl(m)) => assert!(m.contains("below the minimum"), "{m}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
