//! TLS for SSL and SASL_SSL listeners with rustls (ring provider): PEM certificate chain and key,
//! optional client-certificate verification against a PEM CA bundle, certificate files reloaded
//! when they change (new handshakes get the new files; established connections keep theirs),
//! and Kafka's default principal for client certificates (`User:` + the subject DN, RFC 2253).

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// What is wrong with a listener's TLS files; the message names the file or part at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate chain: {0}")]
    CertificateChain(rustls::pki_types::pem::Error),
    #[error("certificate chain: no CERTIFICATE found in the PEM")]
    NoCertificate,
    #[error("private key: {0}")]
    PrivateKey(rustls::pki_types::pem::Error),
    #[error("TLS protocol versions: {0}")]
    ProtocolVersions(rustls::Error),
    #[error("truststore: {0}")]
    Truststore(rustls::pki_types::pem::Error),
    #[error("truststore certificate: {0}")]
    TruststoreCertificate(rustls::Error),
    #[error("truststore: no CERTIFICATE found in the PEM")]
    EmptyTruststore,
    #[error("truststore: {0}")]
    ClientVerifier(rustls::server::VerifierBuilderError),
    #[error("certificate and key: {0}")]
    CertificateAndKey(rustls::Error),
}

/// `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

/// PEM text given inline in the configuration, or a file holding it (reloaded on change).
#[derive(Clone, PartialEq, Eq)]
pub enum PemSource {
    File(PathBuf),
    Inline(String),
}

impl std::fmt::Debug for PemSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemSource::File(p) => write!(f, "File({})", p.display()),
            PemSource::Inline(_) => f.write_str("Inline([hidden])"),
        }
    }
}

impl PemSource {
    /// A value starting with `-----BEGIN` is PEM text; anything else is a file path.
    pub fn from_value(v: &str) -> PemSource {
        if v.trim_start().starts_with("-----BEGIN") {
            PemSource::Inline(v.to_string())
        } else {
            PemSource::File(PathBuf::from(v))
        }
    }

    fn read(&self) -> Result<Vec<u8>, TlsError> {
        match self {
            PemSource::File(p) => std::fs::read(p).map_err(|source| TlsError::Read {
                path: p.clone(),
                source,
            }),
            PemSource::Inline(t) => Ok(t.as_bytes().to_vec()),
        }
    }

    /// What changes when the file is replaced (follows symlinks, as Kubernetes secrets use).
    fn fingerprint(&self) -> Option<(u64, u64, i64, i64)> {
        use std::os::unix::fs::MetadataExt;
        match self {
            PemSource::File(p) => std::fs::metadata(p)
                .ok()
                .map(|m| (m.ino(), m.len(), m.mtime(), m.mtime_nsec())),
            PemSource::Inline(_) => None,
        }
    }
}

/// One listener's TLS settings (validated keys; files are read when the acceptor is built).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_chain: PemSource,
    pub key: PemSource,
    pub truststore: Option<PemSource>,
    pub client_auth: ClientAuth,
    /// TLS 1.2 allowed (`ssl.enabled.protocols` contains TLSv1.2).
    pub tls12: bool,
    /// TLS 1.3 allowed.
    pub tls13: bool,
}

/// Parses the `ssl.*` keys through `get` (which applies per-listener overrides). Errors name the
/// key.
pub fn parse_settings(
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<TlsSettings, (String, String)> {
    let e = |k: &str, r: String| (k.to_string(), r);
    for k in ["ssl.keystore.type", "ssl.truststore.type"] {
        if let Some(v) = get(k) {
            if !v.eq_ignore_ascii_case("PEM") {
                return Err(e(k, format!("'{v}' is not supported; only PEM is")));
            }
        }
    }
    if get("ssl.key.password").is_some_and(|v| !v.is_empty()) {
        return Err(e(
            "ssl.key.password",
            "encrypted private keys are not supported; give an unencrypted PEM key".into(),
        ));
    }
    let location = get("ssl.keystore.location").filter(|v| !v.is_empty());
    let chain = get("ssl.keystore.certificate.chain").filter(|v| !v.is_empty());
    let key = get("ssl.keystore.key").filter(|v| !v.is_empty());
    let (cert_chain, key) =
        match (location, chain, key) {
            (Some(l), None, None) => (PemSource::File(l.clone().into()), PemSource::File(l.into())),
            (None, Some(c), Some(k)) => (PemSource::from_value(&c), PemSource::from_value(&k)),
            (None, None, None) => return Err(e(
                "ssl.keystore.location",
                "a TLS listener needs ssl.keystore.location (PEM with key and certificate chain) \
                 or ssl.keystore.certificate.chain and ssl.keystore.key"
                    .into(),
            )),
            (Some(_), _, _) => {
                return Err(e(
                    "ssl.keystore.location",
                    "give either ssl.keystore.location or ssl.keystore.certificate.chain + \
                 ssl.keystore.key, not both"
                        .into(),
                ))
            }
            (None, _, _) => {
                return Err(e(
                    "ssl.keystore.key",
                    "ssl.keystore.certificate.chain and ssl.keystore.key go together".into(),
                ))
            }
        };
    let truststore = match (
        get("ssl.truststore.location").filter(|v| !v.is_empty()),
        get("ssl.truststore.certificates").filter(|v| !v.is_empty()),
    ) {
        (Some(_), Some(_)) => {
            return Err(e(
                "ssl.truststore.location",
                "give either ssl.truststore.location or ssl.truststore.certificates".into(),
            ))
        }
        (Some(l), None) => Some(PemSource::File(l.into())),
        (None, Some(c)) => Some(PemSource::from_value(&c)),
        (None, None) => None,
    };
    let client_auth = match get("ssl.client.auth")
        .as_deref()
        .map(str::to_ascii_lowercase)
    {
        None => ClientAuth::None,
        Some(v) => match v.as_str() {
            "none" | "" => ClientAuth::None,
            "requested" => ClientAuth::Requested,
            "required" => ClientAuth::Required,
            _ => {
                return Err(e(
                    "ssl.client.auth",
                    format!("'{v}' is not one of required, requested, none"),
                ))
            }
        },
    };
    if client_auth != ClientAuth::None && truststore.is_none() {
        return Err(e(
            "ssl.truststore.location",
            "ssl.client.auth requested/required needs a truststore (PEM CA certificates)".into(),
        ));
    }
    let (mut tls12, mut tls13) = (true, true);
    if let Some(v) = get("ssl.enabled.protocols") {
        (tls12, tls13) = (false, false);
        for p in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match p {
                "TLSv1.2" => tls12 = true,
                "TLSv1.3" => tls13 = true,
                _ => {
                    return Err(e(
                        "ssl.enabled.protocols",
                        format!("'{p}' is not supported (TLSv1.2, TLSv1.3)"),
                    ))
                }
            }
        }
        if !(tls12 || tls13) {
            return Err(e("ssl.enabled.protocols", "no protocol enabled".into()));
        }
    }
    Ok(TlsSettings {
        cert_chain,
        key,
        truststore,
        client_auth,
        tls12,
        tls13,
    })
}

type Fingerprint = Vec<Option<(u64, u64, i64, i64)>>;

/// Builds rustls server configs from `TlsSettings`, rebuilding when the files change.
pub struct ReloadingTls {
    settings: TlsSettings,
    /// Fingerprint of the files behind `current`, and of the last state that failed to load.
    state: Mutex<(Fingerprint, Arc<ServerConfig>, Option<Fingerprint>)>,
}

impl ReloadingTls {
    /// Loads the files now; errors describe what is wrong with them.
    pub fn new(settings: TlsSettings) -> Result<ReloadingTls, TlsError> {
        let fp = fingerprint(&settings);
        let config = build(&settings)?;
        Ok(ReloadingTls {
            settings,
            state: Mutex::new((fp, config, None)),
        })
    }

    /// The acceptor for the next handshake, reloading the files first if they changed. A reload
    /// that fails (a half-written file, a key that does not match) keeps the previous
    /// certificate and logs once per state of the files.
    pub fn acceptor(&self) -> TlsAcceptor {
        let fp = fingerprint(&self.settings);
        let mut st = self.state.lock();
        if fp != st.0 && st.2.as_ref() != Some(&fp) {
            match build(&self.settings) {
                Ok(cfg) => {
                    tracing::info!("TLS certificate files changed: reloaded");
                    *st = (fp, cfg, None);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate files changed but cannot be loaded; keeping the previous ones");
                    st.2 = Some(fp);
                }
            }
        }
        TlsAcceptor::from(st.1.clone())
    }

    pub fn client_auth(&self) -> ClientAuth {
        self.settings.client_auth
    }
}

fn fingerprint(s: &TlsSettings) -> Fingerprint {
    let mut out = vec![s.cert_chain.fingerprint(), s.key.fingerprint()];
    if let Some(t) = &s.truststore {
        out.push(t.fingerprint());
    }
    out
}

fn build(s: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain_pem = s.cert_chain.read()?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<_, _>>()
        .map_err(TlsError::CertificateChain)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key_pem = s.key.read()?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(TlsError::PrivateKey)?;
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if s.tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if s.tls12 {
        versions.push(&rustls::version::TLS12);
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(TlsError::ProtocolVersions)?;
    let builder = match (&s.truststore, s.client_auth) {
        (Some(t), auth) if auth != ClientAuth::None => {
            let pem = t.read()?;
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&pem) {
                let c = c.map_err(TlsError::Truststore)?;
                roots.add(c).map_err(TlsError::TruststoreCertificate)?;
            }
            if roots.is_empty() {
                return Err(TlsError::EmptyTruststore);
            }
            let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if auth == ClientAuth::Requested {
                v = v.allow_unauthenticated();
            }
            let verifier = v.build().map_err(TlsError::ClientVerifier)?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(TlsError::CertificateAndKey)?;
    Ok(Arc::new(config))
}

/// Kafka's default SSL principal: `User:` + the subject DN in RFC 2253 form (most specific RDN
/// first, e.g. `User:CN=alice,OU=eng,O=Fjord`).
pub fn principal_from_cert(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut rdns: Vec<String> = Vec::new();
    for rdn in cert.subject().iter_rdn() {
        let attrs: Vec<String> = rdn
            .iter()
            .map(|a| {
                let oid = a.attr_type();
                let key = match oid.to_id_string().as_str() {
                    "2.5.4.3" => "CN".to_string(),
                    "2.5.4.6" => "C".into(),
                    "2.5.4.7" => "L".into(),
                    "2.5.4.8" => "ST".into(),
                    "2.5.4.9" => "STREET".into(),
                    "2.5.4.10" => "O".into(),
                    "2.5.4.11" => "OU".into(),
                    "0.9.2342.19200300.100.1.25" => "DC".into(),
                    "0.9.2342.19200300.100.1.1" => "UID".into(),
                    other => other.to_string(),
                };
                let value = match a.as_str() {
                    Ok(v) => escape_rfc2253(v),
                    Err(_) => {
                        let hex: String = a.as_slice().iter().map(|b| format!("{b:02x}")).collect();
                        format!("#{hex}")
                    }
                };
                format!("{key}={value}")
            })
            .collect();
        rdns.push(attrs.join("+"));
    }
    rdns.reverse();
    Some(format!("User:{}", rdns.join(",")))
}

fn escape_rfc2253(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<TlsSettings, (String, String)> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse_settings(&|k| m.get(k).cloned())
    }

    #[test]
    fn settings_validation_names_keys() {
        let ok = settings(&[("ssl.keystore.location", "/x.pem")]).unwrap();
        assert_eq!(ok.cert_chain, PemSource::File("/x.pem".into()));
        assert_eq!(ok.client_auth, ClientAuth::None);
        assert_eq!(settings(&[]).unwrap_err().0, "ssl.keystore.location");
        let e = settings(&[
            ("ssl.keystore.location", "/x"),
            ("ssl.keystore.type", "JKS"),
        ]);
        assert_eq!(e.unwrap_err().0, "ssl.keystore.type");
        let e = settings(&[
            ("ssl.keystore.location", "/x"),
            ("ssl.client.auth", "required"),
        ]);
        assert_eq!(e.unwrap_err().0, "ssl.truststore.location");
        let e = settings(&[
            ("ssl.keystore.location", "/x"),
            ("ssl.client.auth", "maybe"),
        ]);
        assert_eq!(e.unwrap_err().0, "ssl.client.auth");
        let e = settings(&[("ssl.keystore.certificate.chain", "/c")]);
        assert_eq!(e.unwrap_err().0, "ssl.keystore.key");
        let e = settings(&[("ssl.keystore.location", "/x"), ("ssl.key.password", "pw")]);
        assert_eq!(e.unwrap_err().0, "ssl.key.password");
        let s = settings(&[
            ("ssl.keystore.certificate.chain", "/c"),
            ("ssl.keystore.key", "-----BEGIN PRIVATE KEY-----\n..."),
            ("ssl.enabled.protocols", "TLSv1.3"),
        ])
        .unwrap();
        assert!(matches!(s.key, PemSource::Inline(_)) && !format!("{s:?}").contains("..."));
        assert!(s.tls13 && !s.tls12);
        let e = settings(&[
            ("ssl.keystore.location", "/x"),
            ("ssl.enabled.protocols", "SSLv3"),
        ]);
        assert_eq!(e.unwrap_err().0, "ssl.enabled.protocols");
    }

    #[test]
    fn rfc2253_escaping() {
        assert_eq!(escape_rfc2253("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape_rfc2253("#x "), "\\#x\\ ");
        assert_eq!(escape_rfc2253(""), "");
    }
}
