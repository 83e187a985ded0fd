//! The operator's certificate authorities (issue 15): a cluster CA that signs the brokers'
//! server certificates and a clients CA that signs KafkaUser certificates, as Strimzi keeps
//! them. Everything here is pure — PEM text in, PEM text out, the clock passed in — so the
//! rules (SANs, validity, when to renew) are unit-tested without a cluster.
//!
//! Keys are ECDSA P-256: small, fast to generate in a reconcile, and accepted by rustls, the
//! JVM and librdkafka alike.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};

/// Default `validityDays` of a CA and the certificates it signs (Strimzi's default).
pub const DEFAULT_VALIDITY_DAYS: u32 = 365;
/// Default `renewalDays`: how long before expiry a certificate is replaced (Strimzi's default).
pub const DEFAULT_RENEWAL_DAYS: u32 = 30;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating a key or certificate failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("not a PEM certificate: {0}")]
    NotACertificate(String),
    #[error("writing a PKCS#12 store failed: {0}")]
    Pkcs12(String),
    #[error("validityDays {validity} must be larger than renewalDays {renewal}")]
    RenewalLongerThanValidity { validity: u32, renewal: u32 },
}

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// How long certificates live and when they are replaced (`spec.clusterCa` / `spec.clientsCa`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub validity_days: u32,
    pub renewal_days: u32,
}

impl Default for Validity {
    fn default() -> Self {
        Validity {
            validity_days: DEFAULT_VALIDITY_DAYS,
            renewal_days: DEFAULT_RENEWAL_DAYS,
        }
    }
}

impl Validity {
    /// Checked: a renewal window as long as the validity would renew on every reconcile.
    pub fn new(validity_days: u32, renewal_days: u32) -> Result<Validity, PkiError> {
        if renewal_days >= validity_days {
            return Err(PkiError::RenewalLongerThanValidity {
                validity: validity_days,
                renewal: renewal_days,
            });
        }
        Ok(Validity {
            validity_days,
            renewal_days,
        })
    }
}

/// The organization of every certificate the operator makes for itself, its CAs and the
/// brokers. KafkaUser certificates carry only their CN, so no user (whatever its name) can
/// present the principal of a broker or of the operator.
pub const ORGANIZATION: &str = "fjord.dev";

/// The common name every broker of `cluster` presents (one name for all brokers, so
/// `super.users` does not change when the cluster scales).
pub fn broker_common_name(cluster: &str) -> String {
    format!("{cluster}-kafka")
}

/// The common name of the operator's own admin certificate.
pub const OPERATOR_COMMON_NAME: &str = "fjord-operator";

/// The Kafka principal (RFC 2253 form of the subject, as brokers derive it) of a certificate
/// the operator issued with [`Usage::Broker`] or [`Usage::Operator`].
pub fn internal_principal(common_name: &str) -> String {
    format!("User:CN={common_name},O={ORGANIZATION}")
}

/// The principal of a KafkaUser authenticated by its client certificate.
pub fn user_principal(user: &str) -> String {
    format!("User:CN={user}")
}

fn params(
    common_name: &str,
    organization: Option<&str>,
    now: OffsetDateTime,
    validity: Validity,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    // A few minutes back: clocks of the brokers and clients are never exactly ours.
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(i64::from(validity.validity_days));
    params
}

/// A new self-signed CA named `common_name`.
pub fn new_ca(
    common_name: &str,
    now: OffsetDateTime,
    validity: Validity,
) -> Result<CertAndKey, PkiError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let cert = ca_params(common_name, now, validity).self_signed(&key)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A new certificate for an existing CA key: same subject and key, new validity. Certificates
/// the old one signed verify against the new one, so renewal breaks no trust.
pub fn renew_ca(
    ca: &CertAndKey,
    common_name: &str,
    now: OffsetDateTime,
    validity: Validity,
) -> Result<CertAndKey, PkiError> {
    let key = KeyPair::from_pem(&ca.key_pem)?;
    let cert = ca_params(common_name, now, validity).self_signed(&key)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: ca.key_pem.clone(),
    })
}

fn ca_params(common_name: &str, now: OffsetDateTime, validity: Validity) -> CertificateParams {
    let mut params = params(common_name, Some(ORGANIZATION), now, validity);
    // Signs leaf certificates only (path length 0).
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// What a signed certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// A broker: serves TLS and, towards other brokers, authenticates as a client.
    Broker,
    /// The operator's admin identity towards the brokers (client only).
    Operator,
    /// A KafkaUser's client certificate: subject `CN=<user>` and nothing else.
    User,
}

/// A certificate for `common_name` (and `sans`, DNS names or IP addresses) signed by `ca`.
pub fn issue(
    ca: &CertAndKey,
    common_name: &str,
    sans: &[String],
    usage: Usage,
    now: OffsetDateTime,
    validity: Validity,
) -> Result<CertAndKey, PkiError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, &ca_key)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let organization = match usage {
        Usage::Broker | Usage::Operator => Some(ORGANIZATION),
        Usage::User => None,
    };
    let mut params = params(common_name, organization, now, validity);
    params.subject_alt_names = sans
        .iter()
        .map(|s| match s.parse() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(s.clone().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match usage {
        Usage::Broker => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Usage::Operator | Usage::User => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn der(pem_text: &str) -> Result<Vec<u8>, PkiError> {
    ::pem::parse(pem_text)
        .map(|p| p.contents().to_vec())
        .map_err(|e| PkiError::NotACertificate(e.to_string()))
}

fn p12_error(e: p12_keystore::error::Error) -> PkiError {
    PkiError::Pkcs12(e.to_string())
}

/// Each certificate of a PEM bundle (several CA certificates while a CA key is replaced), as
/// its own PEM text, in order.
pub fn split_certificates(bundle: &str) -> Vec<String> {
    ::pem::parse_many(bundle)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| {
            ::pem::encode_config(
                &p,
                ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF),
            )
        })
        .collect()
}

/// A PKCS#12 truststore holding every certificate of `ca_pem` as a trusted certificate (Java
/// reads it as a truststore: the entries carry Java's trusted-certificate attribute), as
/// Strimzi's `ca.p12`.
pub fn pkcs12_truststore(ca_pem: &str, password: &str) -> Result<Vec<u8>, PkiError> {
    let mut store = p12_keystore::KeyStore::new();
    let certs = split_certificates(ca_pem);
    if certs.is_empty() {
        return Err(PkiError::NotACertificate(
            "no CERTIFICATE in the CA PEM".into(),
        ));
    }
    for (i, pem) in certs.iter().enumerate() {
        let ca = p12_keystore::Certificate::from_der(&der(pem)?).map_err(p12_error)?;
        let alias = if i == 0 {
            "ca.crt".to_string()
        } else {
            format!("ca-{i}.crt")
        };
        store.add_entry(&alias, p12_keystore::KeyStoreEntry::Certificate(ca));
    }
    store.writer(password).write().map_err(p12_error)
}

/// A PKCS#12 keystore with `leaf`'s key and its chain up to `ca_pem` under `alias`, as
/// Strimzi's `user.p12`.
pub fn pkcs12_keystore(
    alias: &str,
    leaf: &CertAndKey,
    ca_pem: &str,
    password: &str,
) -> Result<Vec<u8>, PkiError> {
    let key = p12_keystore::PrivateKey::from_der(&der(&leaf.key_pem)?).map_err(p12_error)?;
    let chain = [
        p12_keystore::Certificate::from_der(&der(&leaf.cert_pem)?).map_err(p12_error)?,
        p12_keystore::Certificate::from_der(&der(ca_pem)?).map_err(p12_error)?,
    ];
    let mut store = p12_keystore::KeyStore::new();
    let entry = p12_keystore::PrivateKeyChain::new(alias, key, chain);
    store.add_entry(alias, p12_keystore::KeyStoreEntry::PrivateKeyChain(entry));
    store.writer(password).write().map_err(p12_error)
}

/// A random password for a PKCS#12 file (alphanumeric, 32 characters).
pub fn store_password() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

/// When a PEM certificate expires.
pub fn not_after(cert_pem: &str) -> Result<OffsetDateTime, PkiError> {
    let parsed = ::pem::parse(cert_pem).map_err(|e| PkiError::NotACertificate(e.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(parsed.contents())
        .map_err(|e| PkiError::NotACertificate(e.to_string()))?;
    Ok(cert.validity().not_after.to_datetime())
}

/// Whether a certificate expiring at `expires` is due for replacement at `now`: inside the
/// renewal window, or already expired.
pub fn needs_renewal(expires: OffsetDateTime, now: OffsetDateTime, validity: Validity) -> bool {
    expires - now <= Duration::days(i64::from(validity.renewal_days))
}

/// The names a broker's server certificate must cover: its pod DNS names (short and fully
/// qualified, through the headless Service), the headless Service itself (where the operator
/// connects), the bootstrap Service's names, and any external addresses its listeners
/// advertise (node addresses, advertised hosts).
pub fn broker_sans(
    cluster: &str,
    namespace: &str,
    broker: i32,
    external: &[String],
) -> Vec<String> {
    let headless = format!("{cluster}-kafka-brokers");
    let bootstrap = format!("{cluster}-kafka-bootstrap");
    let pod = format!("{cluster}-kafka-{broker}");
    let mut sans = vec![
        format!("{pod}.{headless}.{namespace}.svc"),
        format!("{pod}.{headless}.{namespace}.svc.cluster.local"),
        format!("{pod}.{headless}"),
        format!("{headless}.{namespace}.svc"),
        format!("{headless}.{namespace}.svc.cluster.local"),
        bootstrap.clone(),
        format!("{bootstrap}.{namespace}"),
        format!("{bootstrap}.{namespace}.svc"),
        format!("{bootstrap}.{namespace}.svc.cluster.local"),
    ];
    for address in external {
        if !sans.contains(address) {
            sans.push(address.clone());
        }
    }
    sans
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::GeneralName;

    fn parse(pem_text: &str) -> Vec<u8> {
        ::pem::parse(pem_text).unwrap().contents().to_vec()
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    #[test]
    fn broker_certificates_cover_pod_bootstrap_and_external_names() {
        let validity = Validity::default();
        let ca = new_ca("cluster-ca my-cluster", now(), validity).unwrap();
        let sans = broker_sans("my-cluster", "kafka", 2, &["10.0.0.7".into()]);
        let broker = issue(
            &ca,
            "my-cluster-kafka-2",
            &sans,
            Usage::Broker,
            now(),
            validity,
        )
        .unwrap();
        let der = parse(&broker.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let names: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(ip) => format!("{ip:?}"),
                other => format!("{other:?}"),
            })
            .collect();
        for expected in [
            "my-cluster-kafka-2.my-cluster-kafka-brokers.kafka.svc",
            "my-cluster-kafka-2.my-cluster-kafka-brokers.kafka.svc.cluster.local",
            "my-cluster-kafka-bootstrap.kafka.svc",
            "my-cluster-kafka-bootstrap",
            "my-cluster-kafka-brokers.kafka.svc",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        assert!(names.contains(&"[10, 0, 0, 7]".to_string()), "{names:?}");
        // Signed by the CA: the issuer is the CA's subject, and the CA says it is one.
        let ca_der = parse(&ca.cert_pem);
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert_eq!(cert.issuer(), ca_cert.subject());
        assert!(ca_cert.is_ca());
        assert!(!cert.is_ca());
        assert!(cert.verify_signature(Some(ca_cert.public_key())).is_ok());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
    }

    #[test]
    fn client_certificates_are_for_client_auth_only() {
        let validity = Validity::default();
        let ca = new_ca("clients-ca my-cluster", now(), validity).unwrap();
        let user = issue(&ca, "alice", &[], Usage::User, now(), validity).unwrap();
        let der = parse(&user.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            subject(&cert),
            vec![("2.5.4.3".to_string(), "alice".to_string())],
            "only the CN: the principal is User:CN=alice"
        );
        assert_eq!(user_principal("alice"), "User:CN=alice");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let operator = issue(
            &ca,
            OPERATOR_COMMON_NAME,
            &[],
            Usage::Operator,
            now(),
            validity,
        )
        .unwrap();
        let der = parse(&operator.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
    }

    /// The subject's attributes (OID, value) in certificate order.
    fn subject(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<(String, String)> {
        cert.subject()
            .iter_attributes()
            .map(|a| {
                (
                    a.attr_type().to_id_string(),
                    a.as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn brokers_and_the_operator_carry_the_organization_users_cannot_have() {
        let validity = Validity::default();
        let ca = new_ca("cluster-ca c", now(), validity).unwrap();
        let broker = issue(
            &ca,
            &broker_common_name("c"),
            &[],
            Usage::Broker,
            now(),
            validity,
        )
        .unwrap();
        let der = parse(&broker.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        // Certificate order O, CN is RFC 2253's CN=...,O=... (most specific first).
        assert_eq!(
            subject(&cert),
            vec![
                ("2.5.4.10".to_string(), ORGANIZATION.to_string()),
                ("2.5.4.3".to_string(), "c-kafka".to_string())
            ]
        );
        assert_eq!(
            internal_principal(&broker_common_name("c")),
            "User:CN=c-kafka,O=fjord.dev"
        );
    }

    #[test]
    fn pkcs12_stores_read_back_with_their_password() {
        let validity = Validity::default();
        let ca = new_ca("clients-ca c", now(), validity).unwrap();
        let user = issue(&ca, "alice", &[], Usage::User, now(), validity).unwrap();
        let password = store_password();
        assert_eq!(password.len(), 32);
        let bytes = pkcs12_keystore("alice", &user, &ca.cert_pem, &password).unwrap();
        let policy = p12_keystore::Pkcs12ImportPolicy::default();
        let store = p12_keystore::KeyStore::from_pkcs12(&bytes, &password, policy).unwrap();
        let (alias, chain) = store.private_key_chain().unwrap();
        assert_eq!(alias, "alice");
        assert_eq!(chain.certs().len(), 2, "the user's certificate and the CA");
        assert_eq!(chain.certs()[0].as_der(), parse(&user.cert_pem).as_slice());
        assert_eq!(chain.key().as_der(), parse(&user.key_pem).as_slice());
        assert!(
            p12_keystore::KeyStore::from_pkcs12(&bytes, "wrong", policy).is_err(),
            "the password protects it"
        );
        let other = new_ca("clients-ca c (next)", now(), validity).unwrap();
        let bundle = format!("{}{}", other.cert_pem, ca.cert_pem);
        assert_eq!(
            split_certificates(&bundle),
            vec![other.cert_pem.clone(), ca.cert_pem.clone()]
        );
        let both = pkcs12_truststore(&bundle, &password).unwrap();
        let store = p12_keystore::KeyStore::from_pkcs12(&both, &password, policy).unwrap();
        assert_eq!(
            store.entries_len(),
            2,
            "every certificate of a bundle is trusted"
        );
        let bytes = pkcs12_truststore(&ca.cert_pem, &password).unwrap();
        let store = p12_keystore::KeyStore::from_pkcs12(&bytes, &password, policy).unwrap();
        match store.entry("ca.crt") {
            Some(p12_keystore::KeyStoreEntry::Certificate(c)) => {
                assert_eq!(c.as_der(), parse(&ca.cert_pem).as_slice())
            }
            other => panic!("no trusted CA entry: {other:?}"),
        }
    }

    #[test]
    fn validity_and_renewal_window() {
        let validity = Validity::new(100, 10).unwrap();
        let ca = new_ca("ca", now(), validity).unwrap();
        let expires = not_after(&ca.cert_pem).unwrap();
        assert_eq!(expires, now() + Duration::days(100));
        assert!(!needs_renewal(expires, now(), validity));
        assert!(!needs_renewal(
            expires,
            now() + Duration::days(89),
            validity
        ));
        assert!(needs_renewal(expires, now() + Duration::days(90), validity));
        assert!(
            needs_renewal(expires, now() + Duration::days(200), validity),
            "expired"
        );
        assert!(matches!(
            Validity::new(30, 30),
            Err(PkiError::RenewalLongerThanValidity { .. })
        ));
        assert!(matches!(
            not_after("not a certificate"),
            Err(PkiError::NotACertificate(_))
        ));
    }

    #[test]
    fn a_renewed_ca_keeps_its_key_and_still_verifies_what_it_signed() {
        let short = Validity::new(10, 5).unwrap();
        let ca = new_ca("ca", now(), short).unwrap();
        let leaf = issue(&ca, "b", &["b".into()], Usage::Broker, now(), short).unwrap();
        let later = now() + Duration::days(6);
        let renewed = renew_ca(&ca, "ca", later, short).unwrap();
        assert_eq!(renewed.key_pem, ca.key_pem);
        assert_eq!(
            not_after(&renewed.cert_pem).unwrap(),
            later + Duration::days(10)
        );
        let (leaf_der, ca_der) = (parse(&leaf.cert_pem), parse(&renewed.cert_pem));
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
        let (_, renewed) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert_eq!(leaf.issuer(), renewed.subject());
        assert!(leaf.verify_signature(Some(renewed.public_key())).is_ok());
    }

    #[test]
    fn a_certificate_signed_by_another_ca_does_not_verify() {
        let validity = Validity::default();
        let ca = new_ca("one", now(), validity).unwrap();
        let other = new_ca("two", now(), validity).unwrap();
        let leaf = issue(&ca, "b", &["b".into()], Usage::Broker, now(), validity).unwrap();
        let (leaf_der, other_der) = (parse(&leaf.cert_pem), parse(&other.cert_pem));
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
        let (_, other) = x509_parser::parse_x509_certificate(&other_der).unwrap();
        assert!(leaf.verify_signature(Some(other.public_key())).is_err());
    }
}
