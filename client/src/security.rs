//! How a [`Connection`](crate::Connection) secures itself: TLS (rustls, ring provider) and SASL
//! (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), as `security.protocol` SSL, SASL_PLAINTEXT or
//! SASL_SSL.
//!
//! [`ClientSecurity::from_properties`] reads Kafka client properties: `security.protocol`,
//! `sasl.mechanism` (or librdkafka's `sasl.mechanisms`), `sasl.jaas.config` with Kafka's
//! `ScramLoginModule` / `PlainLoginModule` (or librdkafka's `sasl.username` + `sasl.password`),
//! and librdkafka's PEM keys `ssl.ca.location`, `ssl.certificate.location`, `ssl.key.location`
//! (or inline `ssl.ca.pem`, `ssl.certificate.pem`, `ssl.key.pem`), plus
//! `ssl.endpoint.identification.algorithm` (`https`, the default, or `none`). Other keys
//! (`bootstrap.servers`, ...) are ignored.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::scram::ScramMechanism;
use crate::ClientError;

/// Kafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }
}

impl std::str::FromStr for SecurityProtocol {
    type Err = ClientError;

    /// Case-insensitive, as Kafka's clients accept it.
    fn from_str(s: &str) -> Result<Self, ClientError> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(SecurityProtocol::Plaintext),
            "SSL" => Ok(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Ok(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Ok(SecurityProtocol::SaslSsl),
            _ => Err(ClientError::Config(format!(
                "security.protocol '{s}' is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
            ))),
        }
    }
}

/// The SASL mechanisms this client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    /// The name sent in SaslHandshake, e.g. `SCRAM-SHA-512`.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    pub(crate) fn scram(self) -> Option<ScramMechanism> {
        match self {
            SaslMechanism::Plain => None,
            SaslMechanism::ScramSha256 => Some(ScramMechanism::Sha256),
            SaslMechanism::ScramSha512 => Some(ScramMechanism::Sha512),
        }
    }
}

impl std::str::FromStr for SaslMechanism {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, ClientError> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
            _ => Err(ClientError::Config(format!(
                "SASL mechanism '{s}' is not supported; use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
            ))),
        }
    }
}

/// PEM text given inline, or a file holding it (read at every connect, so replaced files are
/// picked up by the next connection).
#[derive(Clone, PartialEq, Eq)]
pub enum PemSource {
    File(PathBuf),
    Pem(String),
}

impl std::fmt::Debug for PemSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemSource::File(p) => write!(f, "File({})", p.display()),
            PemSource::Pem(_) => f.write_str("Pem([hidden])"),
        }
    }
}

impl PemSource {
    fn read(&self, what: &str) -> Result<Vec<u8>, ClientError> {
        match self {
            PemSource::File(p) => std::fs::read(p).map_err(|e| {
                ClientError::Tls(format!("cannot read the {what} file {}: {e}", p.display()))
            }),
            PemSource::Pem(t) => Ok(t.as_bytes().to_vec()),
        }
    }

    fn describe(&self, what: &str) -> String {
        match self {
            PemSource::File(p) => format!("the {what} file {}", p.display()),
            PemSource::Pem(_) => format!("the inline {what}"),
        }
    }
}

/// TLS settings for SSL and SASL_SSL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// CA certificates (PEM) that sign the brokers' certificates; `None` trusts the system's
    /// root certificates.
    pub ca: Option<PemSource>,
    /// Certificate chain and private key (PEM, unencrypted) for brokers that ask for a client
    /// certificate (mTLS).
    pub client_cert: Option<ClientCertificate>,
    /// Name the broker's certificate must be valid for; `None` uses the host connected to
    /// (a DNS name or an IP address).
    pub server_name: Option<String>,
    /// Check that the certificate is valid for the server name (`ssl.endpoint.identification.
    /// algorithm=https`). The chain is verified either way.
    pub verify_hostname: bool,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            ca: None,
            client_cert: None,
            server_name: None,
            verify_hostname: true,
        }
    }
}

impl TlsSettings {
    /// Trust the CA certificates in the PEM file at `path`.
    pub fn with_ca_file(path: impl Into<PathBuf>) -> TlsSettings {
        TlsSettings {
            ca: Some(PemSource::File(path.into())),
            ..TlsSettings::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    pub cert_chain: PemSource,
    pub key: PemSource,
}

/// SASL credentials for SASL_PLAINTEXT and SASL_SSL.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslSettings {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for SaslSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslSettings")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"[hidden]")
            .finish()
    }
}

impl SaslSettings {
    pub fn new(mechanism: SaslMechanism, username: &str, password: &str) -> SaslSettings {
        SaslSettings {
            mechanism,
            username: username.to_string(),
            password: password.to_string(),
        }
    }
}

/// A connection's security: TLS if `tls` is set, SASL if `sasl` is set (both: SASL_SSL; neither:
/// PLAINTEXT, the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSecurity {
    pub tls: Option<TlsSettings>,
    pub sasl: Option<SaslSettings>,
}

impl ClientSecurity {
    pub fn plaintext() -> ClientSecurity {
        ClientSecurity::default()
    }

    pub fn ssl(tls: TlsSettings) -> ClientSecurity {
        ClientSecurity {
            tls: Some(tls),
            sasl: None,
        }
    }

    pub fn sasl_plaintext(sasl: SaslSettings) -> ClientSecurity {
        ClientSecurity {
            tls: None,
            sasl: Some(sasl),
        }
    }

    pub fn sasl_ssl(tls: TlsSettings, sasl: SaslSettings) -> ClientSecurity {
        ClientSecurity {
            tls: Some(tls),
            sasl: Some(sasl),
        }
    }

    /// The `security.protocol` this configuration amounts to.
    pub fn protocol(&self) -> SecurityProtocol {
        match (self.tls.is_some(), self.sasl.is_some()) {
            (false, false) => SecurityProtocol::Plaintext,
            (true, false) => SecurityProtocol::Ssl,
            (false, true) => SecurityProtocol::SaslPlaintext,
            (true, true) => SecurityProtocol::SaslSsl,
        }
    }

    /// Builds the configuration from Kafka client properties (see the module docs). Later
    /// duplicates of a key win. Errors ([`ClientError::Config`]) name the key at fault.
    pub fn from_properties<I, K, V>(props: I) -> Result<ClientSecurity, ClientError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let map: HashMap<String, String> = props
            .into_iter()
            .map(|(k, v)| (k.as_ref().trim().to_string(), v.as_ref().to_string()))
            .collect();
        let get = |k: &str| {
            map.get(k)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let err = |k: &str, why: String| ClientError::Config(format!("{k}: {why}"));
        let protocol: SecurityProtocol = match get("security.protocol") {
            Some(p) => p.parse()?,
            None => SecurityProtocol::Plaintext,
        };
        let tls = match protocol {
            SecurityProtocol::Ssl | SecurityProtocol::SaslSsl => Some(tls_from_properties(&get)?),
            _ => None,
        };
        let sasl = match protocol {
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl => {
                let mechanism = match (get("sasl.mechanism"), get("sasl.mechanisms")) {
                    (Some(a), Some(b)) if a != b => {
                        return Err(err(
                            "sasl.mechanism",
                            format!("'{a}' differs from sasl.mechanisms '{b}'"),
                        ))
                    }
                    (Some(m), _) | (None, Some(m)) => {
                        m.parse::<SaslMechanism>().map_err(|e| match e {
                            ClientError::Config(why) => err("sasl.mechanism", why),
                            e => e,
                        })?
                    }
                    (None, None) => {
                        return Err(err(
                            "sasl.mechanism",
                            "required with SASL (GSSAPI, Kafka's default, is not supported); \
                             use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                                .into(),
                        ))
                    }
                };
                // Passwords are taken as given (not trimmed).
                let raw = |k: &str| map.get(k).filter(|v| !v.is_empty()).cloned();
                let (username, password) = match (
                    get("sasl.jaas.config"),
                    raw("sasl.username"),
                    raw("sasl.password"),
                ) {
                    (Some(jaas), None, None) => {
                        let login = parse_jaas(&jaas).map_err(|e| err("sasl.jaas.config", e))?;
                        let want = match mechanism {
                            SaslMechanism::Plain => PLAIN_LOGIN_MODULE,
                            _ => SCRAM_LOGIN_MODULE,
                        };
                        if login.module != want {
                            return Err(err(
                                "sasl.jaas.config",
                                format!(
                                    "{} needs the login module {want}, not {}",
                                    mechanism.name(),
                                    login.module
                                ),
                            ));
                        }
                        let opt = |k: &str| {
                            login
                                .options
                                .iter()
                                .find(|(n, _)| n == k)
                                .map(|(_, v)| v.clone())
                                .filter(|v| !v.is_empty())
                                .ok_or_else(|| err("sasl.jaas.config", format!("no {k}=\"...\"")))
                        };
                        (opt("username")?, opt("password")?)
                    }
                    (Some(_), _, _) => {
                        return Err(err(
                            "sasl.jaas.config",
                            "give either sasl.jaas.config or sasl.username + sasl.password".into(),
                        ))
                    }
                    (None, Some(u), Some(p)) => (u, p),
                    (None, None, _) => {
                        return Err(err(
                            "sasl.jaas.config",
                            "SASL needs credentials: sasl.jaas.config (or sasl.username + \
                             sasl.password)"
                                .into(),
                        ))
                    }
                    (None, Some(_), None) => {
                        return Err(err(
                            "sasl.password",
                            "missing (sasl.username is set)".into(),
                        ))
                    }
                };
                Some(SaslSettings {
                    mechanism,
                    username,
                    password,
                })
            }
            _ => None,
        };
        Ok(ClientSecurity { tls, sasl })
    }
}

const SCRAM_LOGIN_MODULE: &str = "org.apache.kafka.common.security.scram.ScramLoginModule";
const PLAIN_LOGIN_MODULE: &str = "org.apache.kafka.common.security.plain.PlainLoginModule";

fn tls_from_properties(get: &dyn Fn(&str) -> Option<String>) -> Result<TlsSettings, ClientError> {
    let err = |k: &str, why: String| ClientError::Config(format!("{k}: {why}"));
    for (java, ours) in [
        ("ssl.truststore.location", "ssl.ca.location (a PEM file)"),
        (
            "ssl.keystore.location",
            "ssl.certificate.location + ssl.key.location (PEM files)",
        ),
    ] {
        if get(java).is_some() {
            return Err(err(java, format!("not supported; use {ours}")));
        }
    }
    if get("ssl.key.password").is_some() {
        return Err(err(
            "ssl.key.password",
            "encrypted private keys are not supported; give an unencrypted PEM key".into(),
        ));
    }
    let source = |file_key: &str, pem_key: &str| match (get(file_key), get(pem_key)) {
        (Some(_), Some(_)) => Err(err(
            file_key,
            format!("give either {file_key} or {pem_key}"),
        )),
        (Some(f), None) => Ok(Some(PemSource::File(f.into()))),
        (None, Some(p)) => Ok(Some(PemSource::Pem(p))),
        (None, None) => Ok(None),
    };
    let ca = source("ssl.ca.location", "ssl.ca.pem")?;
    let cert = source("ssl.certificate.location", "ssl.certificate.pem")?;
    let key = source("ssl.key.location", "ssl.key.pem")?;
    let client_cert = match (cert, key) {
        (Some(cert_chain), Some(key)) => Some(ClientCertificate { cert_chain, key }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(err(
                "ssl.key.location",
                "a client certificate needs its private key".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(err(
                "ssl.certificate.location",
                "a private key needs its client certificate".into(),
            ))
        }
    };
    // Java treats an empty value as "no hostname verification"; librdkafka uses "none".
    let verify_hostname = match get("ssl.endpoint.identification.algorithm")
        .map(|v| v.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("https") => true,
        Some("none") => false,
        Some(other) => {
            return Err(err(
                "ssl.endpoint.identification.algorithm",
                format!("'{other}' is neither https nor none"),
            ))
        }
    };
    Ok(TlsSettings {
        ca,
        client_cert,
        server_name: None,
        verify_hostname,
    })
}

/// One JAAS login module entry: `<class> <flag> key="value" ...;`.
#[derive(Debug, PartialEq, Eq)]
struct JaasLogin {
    module: String,
    options: Vec<(String, String)>,
}

/// Parses a `sasl.jaas.config` value: exactly one login module with its control flag and
/// options; values quoted (with `\"` and `\\` escapes) or bare words. Errors never quote
/// values (they may be passwords).
fn parse_jaas(text: &str) -> Result<JaasLogin, String> {
    let mut chars = text.chars().peekable();
    let skip_ws = |c: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while c.peek().is_some_and(|c| c.is_whitespace()) {
            c.next();
        }
    };
    let word = |c: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        let mut w = String::new();
        while let Some(&ch) = c.peek() {
            if ch.is_whitespace() || ch == '=' || ch == ';' || ch == '"' {
                break;
            }
            w.push(ch);
            c.next();
        }
        w
    };
    skip_ws(&mut chars);
    let module = word(&mut chars);
    if module.is_empty() {
        return Err("expected a login module class name".into());
    }
    skip_ws(&mut chars);
    let flag = word(&mut chars);
    if !["required", "requisite", "sufficient", "optional"].contains(&flag.as_str()) {
        return Err(format!("expected a control flag (required) after {module}"));
    }
    let mut options = Vec::new();
    loop {
        skip_ws(&mut chars);
        match chars.peek() {
            None => return Err("the login module entry must end with ';'".into()),
            Some(';') => {
                chars.next();
                break;
            }
            Some(_) => {}
        }
        let key = word(&mut chars);
        if key.is_empty() {
            return Err("expected an option name".into());
        }
        skip_ws(&mut chars);
        if chars.next() != Some('=') {
            return Err(format!("expected '=' after option {key}"));
        }
        skip_ws(&mut chars);
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            let mut v = String::new();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quoted value of option {key}")),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => v.push(c),
                        None => return Err(format!("unterminated quoted value of option {key}")),
                    },
                    Some(c) => v.push(c),
                }
            }
            v
        } else {
            let v = word(&mut chars);
            if v.is_empty() {
                return Err(format!("option {key} has no value"));
            }
            v
        };
        if options.iter().any(|(k, _)| *k == key) {
            return Err(format!("option {key} is given twice"));
        }
        options.push((key, value));
    }
    skip_ws(&mut chars);
    if chars.next().is_some() {
        return Err("only one login module entry is allowed".into());
    }
    Ok(JaasLogin { module, options })
}

// ---------------------------------------------------------------------------------------------
// rustls configuration
// ---------------------------------------------------------------------------------------------

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for `tls` (files are read now). Public so other Fjord
/// components (the quorum's mutual TLS) build client sides the same way.
pub fn client_config(tls: &TlsSettings) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = RootCertStore::empty();
    match &tls.ca {
        Some(ca) => {
            let pem = ca.read("CA certificate")?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    ClientError::Tls(format!("{}: {e}", ca.describe("CA certificate")))
                })?;
                roots.add(cert).map_err(|e| {
                    ClientError::Tls(format!("{}: {e}", ca.describe("CA certificate")))
                })?;
            }
            if roots.is_empty() {
                return Err(ClientError::Tls(format!(
                    "{} holds no PEM certificate",
                    ca.describe("CA certificate")
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(ClientError::Tls(format!(
                    "no CA certificate given and no system root certificates found{}",
                    found
                        .errors
                        .first()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                )));
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let builder = if tls.verify_hostname {
        builder.with_root_certificates(roots)
    } else {
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyName(inner)))
    };
    match &tls.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some(cc) => {
            let pem = cc.cert_chain.read("client certificate")?;
            let chain = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    ClientError::Tls(format!(
                        "{}: {e}",
                        cc.cert_chain.describe("client certificate")
                    ))
                })?;
            if chain.is_empty() {
                return Err(ClientError::Tls(format!(
                    "{} holds no PEM certificate",
                    cc.cert_chain.describe("client certificate")
                )));
            }
            let key_pem = cc.key.read("client key")?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| ClientError::Tls(format!("{}: {e}", cc.key.describe("client key"))))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::Tls(format!("client certificate and key: {e}")))
        }
    }
}

/// The server name to verify the broker's certificate against.
pub(crate) fn server_name(
    tls: &TlsSettings,
    host: &str,
) -> Result<ServerName<'static>, ClientError> {
    let name = tls.server_name.as_deref().unwrap_or(host);
    ServerName::try_from(name.to_string())
        .map_err(|_| ClientError::Tls(format!("'{name}' is not a valid TLS server name")))
}

/// Verifies the chain like webpki but accepts a certificate for any name
/// (`ssl.endpoint.identification.algorithm=none`).
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain (and validity period) before the name, so a name error means
        // everything else was fine.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(props: &[(&str, &str)]) -> Result<ClientSecurity, ClientError> {
        ClientSecurity::from_properties(props.iter().copied())
    }

    fn config_error(props: &[(&str, &str)]) -> String {
        match parse(props) {
            Err(ClientError::Config(m)) => m,
            other => panic!("{props:?}: expected a configuration error, got {other:?}"),
        }
    }

    const SCRAM_JAAS: &str = r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="alice" password="s3cr;et \"q\" \\";"#;

    #[test]
    fn plaintext_by_default_and_unrelated_keys_ignored() {
        let s = parse(&[("bootstrap.servers", "a:9092"), ("client.id", "x")]).unwrap();
        assert_eq!(s, ClientSecurity::plaintext());
        assert_eq!(s.protocol(), SecurityProtocol::Plaintext);
        // ssl.* and sasl.* keys do nothing without a protocol that uses them.
        let s = parse(&[("ssl.ca.location", "/ca.pem"), ("sasl.mechanism", "PLAIN")]).unwrap();
        assert_eq!(s, ClientSecurity::plaintext());
    }

    #[test]
    fn sasl_ssl_with_scram_jaas() {
        let s = parse(&[
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.jaas.config", SCRAM_JAAS),
            ("ssl.ca.location", " /etc/kafka/ca.pem "),
        ])
        .unwrap();
        assert_eq!(s.protocol(), SecurityProtocol::SaslSsl);
        assert_eq!(
            s.sasl,
            Some(SaslSettings::new(
                SaslMechanism::ScramSha512,
                "alice",
                r#"s3cr;et "q" \"#
            ))
        );
        assert_eq!(s.tls, Some(TlsSettings::with_ca_file("/etc/kafka/ca.pem")));
        // The password never shows in Debug output.
        assert!(!format!("{s:?}").contains("s3cr"));
    }

    #[test]
    fn plain_jaas_and_librdkafka_keys() {
        let s = parse(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "PLAIN"),
            (
                "sasl.jaas.config",
                "  org.apache.kafka.common.security.plain.PlainLoginModule   required\n\
                 username=bob\tpassword = \"pw\" ;  ",
            ),
        ])
        .unwrap();
        assert_eq!(
            s,
            ClientSecurity::sasl_plaintext(SaslSettings::new(SaslMechanism::Plain, "bob", "pw"))
        );
        // librdkafka: sasl.mechanisms, sasl.username / sasl.password (password not trimmed).
        let s = parse(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanisms", "SCRAM-SHA-256"),
            ("sasl.username", "carol"),
            ("sasl.password", " pw "),
        ])
        .unwrap();
        assert_eq!(
            s.sasl,
            Some(SaslSettings::new(
                SaslMechanism::ScramSha256,
                "carol",
                " pw "
            ))
        );
        assert_eq!(s.tls, None);
    }

    #[test]
    fn ssl_with_client_certificate_and_inline_pem() {
        let s = parse(&[
            ("security.protocol", "SSL"),
            (
                "ssl.ca.pem",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
            ),
            ("ssl.certificate.location", "/c.pem"),
            ("ssl.key.location", "/c.key"),
            ("ssl.endpoint.identification.algorithm", "none"),
        ])
        .unwrap();
        assert_eq!(s.protocol(), SecurityProtocol::Ssl);
        let tls = s.tls.unwrap();
        assert!(matches!(tls.ca, Some(PemSource::Pem(ref p)) if p.starts_with("-----BEGIN")));
        assert_eq!(
            tls.client_cert,
            Some(ClientCertificate {
                cert_chain: PemSource::File("/c.pem".into()),
                key: PemSource::File("/c.key".into()),
            })
        );
        assert!(!tls.verify_hostname);
        assert_eq!(tls.server_name, None);
        // No CA: system roots; hostname verification on by default.
        let s = parse(&[("security.protocol", "SSL")]).unwrap();
        assert_eq!(s.tls, Some(TlsSettings::default()));
        assert!(s.tls.unwrap().verify_hostname);
    }

    #[test]
    fn configuration_errors_name_the_key() {
        let sasl = |extra: &[(&'static str, &'static str)]| {
            let mut v = vec![("security.protocol", "SASL_PLAINTEXT")];
            v.extend_from_slice(extra);
            v
        };
        for (props, want) in [
            (vec![("security.protocol", "TLS")], "security.protocol 'TLS'"),
            (sasl(&[("sasl.jaas.config", SCRAM_JAAS)]), "sasl.mechanism: required"),
            (
                sasl(&[("sasl.mechanism", "GSSAPI"), ("sasl.jaas.config", SCRAM_JAAS)]),
                "'GSSAPI' is not supported",
            ),
            (
                sasl(&[
                    ("sasl.mechanism", "PLAIN"),
                    ("sasl.mechanisms", "SCRAM-SHA-256"),
                ]),
                "differs from sasl.mechanisms",
            ),
            (sasl(&[("sasl.mechanism", "PLAIN")]), "needs credentials"),
            (
                sasl(&[("sasl.mechanism", "PLAIN"), ("sasl.jaas.config", SCRAM_JAAS)]),
                "needs the login module org.apache.kafka.common.security.plain.PlainLoginModule",
            ),
            (
                sasl(&[
                    ("sasl.mechanism", "SCRAM-SHA-256"),
                    ("sasl.jaas.config", SCRAM_JAAS),
                    ("sasl.username", "x"),
                ]),
                "give either sasl.jaas.config",
            ),
            (
                sasl(&[("sasl.mechanism", "PLAIN"), ("sasl.username", "x")]),
                "sasl.password: missing",
            ),
            (
                sasl(&[
                    ("sasl.mechanism", "SCRAM-SHA-256"),
                    (
                        "sasl.jaas.config",
                        "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"a\";",
                    ),
                ]),
                "no password=",
            ),
            (
                vec![("security.protocol", "SSL"), ("ssl.truststore.location", "/t.jks")],
                "use ssl.ca.location",
            ),
            (
                vec![("security.protocol", "SSL"), ("ssl.keystore.location", "/k.jks")],
                "ssl.certificate.location + ssl.key.location",
            ),
            (
                vec![("security.protocol", "SSL"), ("ssl.key.password", "x")],
                "encrypted private keys",
            ),
            (
                vec![("security.protocol", "SSL"), ("ssl.certificate.location", "/c")],
                "needs its private key",
            ),
            (
                vec![("security.protocol", "SSL"), ("ssl.key.location", "/k")],
                "needs its client certificate",
            ),
            (
                vec![
                    ("security.protocol", "SSL"),
                    ("ssl.ca.location", "/a"),
                    ("ssl.ca.pem", "-----BEGIN"),
                ],
                "give either ssl.ca.location or ssl.ca.pem",
            ),
            (
                vec![
                    ("security.protocol", "SSL"),
                    ("ssl.endpoint.identification.algorithm", "ldap"),
                ],
                "neither https nor none",
            ),
        ] {
            let m = config_error(&props);
            assert!(m.contains(want), "{props:?}: {m}");
        }
    }

    #[test]
    fn jaas_parser() {
        let l = parse_jaas(r#"a.B required x="1" y=two z="th\"ree";"#).unwrap();
        assert_eq!(l.module, "a.B");
        assert_eq!(
            l.options,
            vec![
                ("x".to_string(), "1".to_string()),
                ("y".into(), "two".into()),
                ("z".into(), "th\"ree".into())
            ]
        );
        assert_eq!(parse_jaas("a.B optional;").unwrap().options, vec![]);
        for (bad, want) in [
            ("", "class name"),
            ("a.B", "control flag"),
            ("a.B mandatory;", "control flag"),
            ("a.B required x=\"1\"", "must end with ';'"),
            ("a.B required x=\"1;", "unterminated"),
            ("a.B required x;", "expected '='"),
            ("a.B required x=;", "no value"),
            ("a.B required =1;", "option name"),
            ("a.B required x=1 x=2;", "given twice"),
            ("a.B required; c.D required;", "only one login module"),
        ] {
            let e = parse_jaas(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
        // Errors do not echo secrets.
        let e = parse_jaas("a.B required password=\"hunter2").unwrap_err();
        assert!(!e.contains("hunter2"));
    }

    #[test]
    fn tls_config_errors() {
        let missing = TlsSettings::with_ca_file("/nonexistent/ca.pem");
        match client_config(&missing) {
            Err(ClientError::Tls(m)) => assert!(m.contains("/nonexistent/ca.pem"), "{m}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        let empty = TlsSettings {
            ca: Some(PemSource::Pem("not a certificate".into())),
            ..TlsSettings::default()
        };
        match client_config(&empty) {
            Err(ClientError::Tls(m)) => assert!(m.contains("no PEM certificate"), "{m}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        let tls = TlsSettings::default();
        assert_eq!(
            server_name(&tls, "127.0.0.1").unwrap(),
            ServerName::try_from("127.0.0.1").unwrap()
        );
        let named = TlsSettings {
            server_name: Some("broker-0.kafka".into()),
            ..TlsSettings::default()
        };
        assert_eq!(
            server_name(&named, "10.0.0.1").unwrap(),
            ServerName::try_from("broker-0.kafka").unwrap()
        );
        assert!(matches!(
            server_name(&tls, "bad name!"),
            Err(ClientError::Tls(_))
        ));
    }
}
