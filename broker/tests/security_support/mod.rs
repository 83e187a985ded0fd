//! Shared helpers for the SASL/TLS integration tests: a throwaway PKI made with rcgen (CA, server
//! certificate, valid/expired/foreign client certificates), an in-process broker with PLAINTEXT,
//! SASL_PLAINTEXT, SASL_SSL and SSL listeners, a SCRAM client, typed requests over any stream,
//! and a rustls client.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use fjord_broker::auth::scram::ScramMechanism;
use hmac::{Hmac, Mac};
use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256, Sha512};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

// ---------------------------------------------------------------------------------------------
// PKI
// ---------------------------------------------------------------------------------------------

pub struct Ca {
    pub params: CertificateParams,
    pub key: KeyPair,
    pub pem: String,
}

pub fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { params, key, pem }
}

/// A leaf certificate signed by `ca`: (certificate PEM, key PEM).
pub fn leaf(
    ca: &Ca,
    dn: &[(DnType, &str)],
    sans: &[&str],
    client: bool,
    expired: bool,
) -> (String, String) {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name = DistinguishedName::new();
    for (t, v) in dn {
        params.distinguished_name.push(t.clone(), *v);
    }
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    if expired {
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Files for one test: CA, server keystore (chain + key in one PEM), client certificates.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub ca_path: PathBuf,
    pub keystore_path: PathBuf,
    pub client: (String, String),
    pub expired_client: (String, String),
    pub foreign_client: (String, String),
}

pub const CLIENT_DN: &[(DnType, &str)] = &[
    (DnType::OrganizationName, "Fjord"),
    (DnType::OrganizationalUnitName, "eng"),
    (DnType::CommonName, "alice"),
];

pub fn server_pem(ca: &Ca, cn: &str) -> String {
    let (cert, key) = leaf(
        ca,
        &[(DnType::CommonName, cn)],
        &["localhost", "127.0.0.1"],
        false,
        false,
    );
    format!("{cert}{key}")
}

pub fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("fjord-test-ca");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    let keystore_path = dir.path().join("server.pem");
    std::fs::write(&keystore_path, server_pem(&ca, "broker-1")).unwrap();
    let client = leaf(&ca, CLIENT_DN, &[], true, false);
    let expired_client = leaf(&ca, CLIENT_DN, &[], true, true);
    let other = self::ca("other-ca");
    let foreign_client = leaf(&other, CLIENT_DN, &[], true, false);
    Pki {
        dir,
        ca,
        ca_path,
        keystore_path,
        client,
        expired_client,
        foreign_client,
    }
}

impl Pki {
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

// ---------------------------------------------------------------------------------------------
// Broker
// ---------------------------------------------------------------------------------------------

pub struct TestBroker {
    pub rt: tokio::runtime::Runtime,
    pub running: fjord_broker::Running,
    pub plaintext: SocketAddr,
    pub sasl_plaintext: SocketAddr,
    pub sasl_ssl: SocketAddr,
    pub ssl: SocketAddr,
    _data: tempfile::TempDir,
}

/// A broker with PLAINTEXT, SASL_PLAINTEXT, SASL_SSL and SSL (client certificates required)
/// listeners; PLAIN (`plainuser:plainpw`) and both SCRAM mechanisms enabled.
pub fn start_broker(pki: &Pki, extra: &[(&str, &str)]) -> TestBroker {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut overrides: Vec<(String, String)> = vec![
        ("listeners", "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0,SSL://127.0.0.1:0"),
        ("admin.listener", "127.0.0.1:0"),
        ("group.initial.rebalance.delay.ms", "0"),
        ("sasl.enabled.mechanisms", "SCRAM-SHA-256,SCRAM-SHA-512,PLAIN"),
        ("sasl.plain.users", "plainuser:plainpw"),
        ("ssl.keystore.type", "PEM"),
        ("listener.name.ssl.ssl.client.auth", "required"),
        ("connection.failed.authentication.delay.ms", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    overrides.push(("log.dirs".into(), data.path().display().to_string()));
    overrides.push((
        "ssl.keystore.location".into(),
        pki.keystore_path.display().to_string(),
    ));
    overrides.push((
        "ssl.truststore.location".into(),
        pki.ca_path.display().to_string(),
    ));
    for (k, v) in extra {
        overrides.push((k.to_string(), v.to_string()));
    }
    let (config, warnings) = fjord_broker::Config::load(None, &overrides).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let running = rt.block_on(fjord_broker::start(config)).unwrap();
    let a = running.kafka_addrs.clone();
    TestBroker {
        rt,
        plaintext: a[0],
        sasl_plaintext: a[1],
        sasl_ssl: a[2],
        ssl: a[3],
        running,
        _data: data,
    }
}

impl TestBroker {
    /// Sum of a counter family's samples (e.g. failed authentications over all listeners).
    pub fn counter(&self, name: &str, listener: &str) -> u64 {
        let families = self.running.broker.metrics.registry.gather();
        families
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric())
            .filter(|m| m.get_label().iter().any(|l| l.value() == listener))
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    /// Creates a SCRAM user (both mechanisms) through AlterUserScramCredentials on PLAINTEXT.
    pub fn create_user(&self, user: &str, password: &str) {
        self.rt.block_on(async {
            let mut c = fjord_client::Connection::connect(self.plaintext)
                .await
                .unwrap();
            let salt = format!("salt-of-{user}").into_bytes();
            // One request per mechanism: Kafka refuses two changes to one user in a request.
            for m in ScramMechanism::ALL {
                let salted = m.salted_password(password.as_bytes(), &salt, 4096);
                let up = ScramCredentialUpsertion::default()
                    .with_name(s(user))
                    .with_mechanism(m.code())
                    .with_iterations(4096)
                    .with_salt(Bytes::from(salt.clone()))
                    .with_salted_password(Bytes::from(salted));
                let req = AlterUserScramCredentialsRequest::default().with_upsertions(vec![up]);
                let r = c.send(&req, 0).await.unwrap();
                for x in r.results {
                    assert_eq!(x.error_code, 0, "{:?}", x.error_message);
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Requests over any stream
// ---------------------------------------------------------------------------------------------

pub async fn write_request<S: AsyncWrite + Unpin, R: Request>(
    s: &mut S,
    req: &R,
    version: i16,
    corr: i32,
) -> std::io::Result<()> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(corr)
        .with_client_id(Some(s_("sasl-tls-test")));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header.encode(&mut buf, R::header_version(version)).unwrap();
    req.encode(&mut buf, version).unwrap();
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    s.write_all(&buf).await?;
    s.flush().await
}

fn s_(v: &str) -> StrBytes {
    s(v)
}

pub async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Bytes> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let len = (&len[..]).get_i32();
    if !(0..1 << 24).contains(&len) {
        return Err(std::io::Error::other(format!(
            "frame length {len}: not a Kafka response"
        )));
    }
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body).await?;
    Ok(Bytes::from(body))
}

/// Sends a request and decodes its response; an I/O error means the broker closed the connection.
pub async fn call<S: AsyncRead + AsyncWrite + Unpin, R: Request>(
    s: &mut S,
    req: &R,
    version: i16,
) -> std::io::Result<R::Response> {
    write_request(s, req, version, 7).await?;
    let mut body = read_frame(s).await?;
    let h = ResponseHeader::decode(&mut body, R::Response::header_version(version)).unwrap();
    assert_eq!(h.correlation_id, 7);
    Ok(R::Response::decode(&mut body, version).unwrap())
}

/// True when the broker has closed the connection (reads hit EOF or a reset).
pub async fn closed<S: AsyncRead + Unpin>(s: &mut S) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}

pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    mechanism: &str,
    version: i16,
) -> SaslHandshakeResponse {
    let req = SaslHandshakeRequest::default().with_mechanism(s_(mechanism));
    call(s, &req, version).await.unwrap()
}

pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    bytes: &[u8],
) -> std::io::Result<SaslAuthenticateResponse> {
    let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(bytes));
    call(s, &req, 2).await
}

pub async fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s
}

// ---------------------------------------------------------------------------------------------
// SCRAM client
// ---------------------------------------------------------------------------------------------

fn hmac(m: ScramMechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    match m {
        ScramMechanism::Sha256 => {
            let mut h = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
            h.update(data);
            h.finalize().into_bytes().to_vec()
        }
        ScramMechanism::Sha512 => {
            let mut h = <Hmac<Sha512> as Mac>::new_from_slice(key).unwrap();
            h.update(data);
            h.finalize().into_bytes().to_vec()
        }
    }
}

fn hash(m: ScramMechanism, data: &[u8]) -> Vec<u8> {
    match m {
        ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
        ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
    }
}

/// Client side of SCRAM: first message, then the final message for a server-first message.
pub struct ScramClient {
    pub mechanism: ScramMechanism,
    pub nonce: String,
    pub first_bare: String,
    pub expected_server_final: Option<String>,
}

impl ScramClient {
    pub fn new(mechanism: ScramMechanism, user: &str) -> ScramClient {
        let nonce = format!("cnonce{}", uuid::Uuid::new_v4().simple());
        ScramClient {
            mechanism,
            first_bare: format!("n={user},r={nonce}"),
            nonce,
            expected_server_final: None,
        }
    }

    pub fn first(&self) -> String {
        format!("n,,{}", self.first_bare)
    }

    pub fn final_message(&mut self, server_first: &[u8], password: &str) -> String {
        let sf = std::str::from_utf8(server_first).unwrap();
        let mut nonce = "";
        let mut salt = Vec::new();
        let mut iterations = 0;
        for part in sf.split(',') {
            if let Some(v) = part.strip_prefix("r=") {
                nonce = v;
            } else if let Some(v) = part.strip_prefix("s=") {
                salt = B64.decode(v).unwrap();
            } else if let Some(v) = part.strip_prefix("i=") {
                iterations = v.parse().unwrap();
            }
        }
        assert!(nonce.starts_with(&self.nonce), "server nonce extends ours");
        let m = self.mechanism;
        let salted = m.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = hmac(m, &salted, b"Client Key");
        let stored = hash(m, &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{sf},{without_proof}", self.first_bare);
        let sig = hmac(m, &stored, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let server_key = hmac(m, &salted, b"Server Key");
        let server_sig = hmac(m, &server_key, auth_message.as_bytes());
        self.expected_server_final = Some(format!("v={}", B64.encode(server_sig)));
        format!("{without_proof},p={}", B64.encode(proof))
    }
}

/// Runs a whole SCRAM exchange over SaslHandshake v1 + SaslAuthenticate; returns the final
/// SaslAuthenticate response (error or success, server signature checked on success).
pub async fn scram_login<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    m: ScramMechanism,
    user: &str,
    password: &str,
) -> SaslAuthenticateResponse {
    let h = handshake(s, m.name(), 1).await;
    assert_eq!(h.error_code, 0);
    let mut c = ScramClient::new(m, user);
    let first = authenticate(s, c.first().as_bytes()).await.unwrap();
    assert_eq!(first.error_code, 0, "{:?}", first.error_message);
    let fin = c.final_message(&first.auth_bytes, password);
    let r = authenticate(s, fin.as_bytes()).await.unwrap();
    if r.error_code == 0 {
        assert_eq!(
            std::str::from_utf8(&r.auth_bytes).unwrap(),
            c.expected_server_final.unwrap()
        );
    }
    r
}

// ---------------------------------------------------------------------------------------------
// TLS client
// ---------------------------------------------------------------------------------------------

/// A rustls client trusting `ca_pem`, presenting `identity` (certificate PEM, key PEM) if given.
pub fn tls_connector(
    ca_pem: &str,
    identity: Option<&(String, String)>,
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let cfg = match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .map(|c| c.unwrap())
                .collect();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        }
        None => b.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

pub async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<&(String, String)>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = connect(addr).await;
    tls_connector(ca_pem, identity)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}
