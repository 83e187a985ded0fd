//! The certificate Secrets in the shape Strimzi gives them, so tools and habits carry over: the
//! CAs' public part `<cluster>-cluster-ca-cert` / `<cluster>-clients-ca-cert` (`ca.crt`, also as
//! `ca.p12`, for clients to trust) apart from the private key `<cluster>-cluster-ca` /
//! `<cluster>-clients-ca` (`ca.key`, for the operator alone), each with a generation annotation
//! that grows on every renewal; and the Secrets of what the cluster CA signs — the brokers'
//! `<cluster>-kafka-brokers` and the operator's `<cluster>-cluster-operator-certs` — with the
//! fingerprint they were issued from. Where brokers mount them is decided here too.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;

use super::{kafka_name, owned_meta};
use crate::crd::kafka::ListenerAuthenticationType;
use crate::crd::{CertificateAuthority, Kafka};
use crate::pki::{CertAndKey, Validity, DEFAULT_RENEWAL_DAYS, DEFAULT_VALIDITY_DAYS};

/// Generation of the CA certificate (on the `-cert` Secret), as Strimzi's
/// `strimzi.io/ca-cert-generation`.
pub const CERT_GENERATION_ANNOTATION: &str = "kafka.fjord.dev/ca-cert-generation";
/// Generation of the CA key (on the key Secret), as Strimzi's `strimzi.io/ca-key-generation`.
pub const KEY_GENERATION_ANNOTATION: &str = "kafka.fjord.dev/ca-key-generation";

/// Annotation on a CA's key Secret asking for a new key (Strimzi's `strimzi.io/force-replace`);
/// removed once the replacement starts.
pub const FORCE_REPLACE_ANNOTATION: &str = "kafka.fjord.dev/force-replace";
/// Annotation on a CA's `-cert` Secret while its key is being replaced: the [`Replacement`]
/// phase.
pub const REPLACEMENT_ANNOTATION: &str = "kafka.fjord.dev/ca-key-replacement";

/// Where a CA key replacement stands. Trust is never broken: first every broker trusts the old
/// and the new certificate (`ca.crt` holds both, new first) while everything is still signed by
/// the old key; then everything is issued again with the new key; then the old certificate goes.
/// Each step waits until every broker restarted onto the previous one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replacement {
    /// `ca.crt` is the new and the old certificate; nothing is issued with the new key yet.
    TrustBoth,
    /// Certificates are issued with the new key; `ca.crt` still holds both.
    Reissue,
}

impl Replacement {
    pub fn as_str(self) -> &'static str {
        match self {
            Replacement::TrustBoth => "trust-both",
            Replacement::Reissue => "reissue",
        }
    }

    /// The phase recorded on a `-cert` Secret, if a replacement is under way.
    pub fn of(secret: &Secret) -> Option<Replacement> {
        let annotations = secret.metadata.annotations.as_ref()?;
        match annotations.get(REPLACEMENT_ANNOTATION)?.as_str() {
            "trust-both" => Some(Replacement::TrustBoth),
            "reissue" => Some(Replacement::Reissue),
            _ => None,
        }
    }
}

/// Which of a cluster's two CAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaKind {
    /// Signs broker certificates.
    Cluster,
    /// Signs KafkaUser certificates.
    Clients,
}

impl CaKind {
    /// `cluster` or `clients`, as in the Secret names (and the expiry metric's label).
    pub fn word(self) -> &'static str {
        match self {
            CaKind::Cluster => "cluster",
            CaKind::Clients => "clients",
        }
    }

    /// The Secret with the CA certificate (`ca.crt`).
    pub fn cert_secret(self, kafka: &Kafka) -> String {
        format!("{}-{}-ca-cert", kafka_name(kafka), self.word())
    }

    /// The Secret with the CA key (`ca.key`).
    pub fn key_secret(self, kafka: &Kafka) -> String {
        format!("{}-{}-ca", kafka_name(kafka), self.word())
    }

    /// The CA certificate's common name.
    pub fn common_name(self, kafka: &Kafka) -> String {
        format!("{}-ca {}", self.word(), kafka_name(kafka))
    }

    /// Its `spec.clusterCa` / `spec.clientsCa`.
    pub fn spec(self, kafka: &Kafka) -> Option<&CertificateAuthority> {
        match self {
            CaKind::Cluster => kafka.spec.cluster_ca.as_ref(),
            CaKind::Clients => kafka.spec.clients_ca.as_ref(),
        }
    }

    /// Whether the operator creates and renews it (`generateCertificateAuthority`, default true).
    pub fn generated(self, kafka: &Kafka) -> bool {
        self.spec(kafka)
            .and_then(|c| c.generate_certificate_authority)
            .unwrap_or(true)
    }

    /// Its validity and renewal window; an impossible pair is an error naming the field.
    pub fn validity(self, kafka: &Kafka) -> Result<Validity, String> {
        let spec = self.spec(kafka);
        let validity = spec
            .and_then(|c| c.validity_days)
            .unwrap_or(DEFAULT_VALIDITY_DAYS);
        let renewal = spec
            .and_then(|c| c.renewal_days)
            .unwrap_or(DEFAULT_RENEWAL_DAYS);
        Validity::new(validity, renewal).map_err(|e| format!("spec.{}Ca: {e}", self.word()))
    }
}

/// The CA certificate as a PKCS#12 truststore (`ca.p12`) and its password (`ca.password`).
pub struct Truststore {
    pub p12: Vec<u8>,
    pub password: String,
}

/// The two Secrets of a CA at `generation` (certificate and key generation move together here:
/// a renewal keeps the key but counts as a new certificate generation only). The public one
/// also carries the certificate as a PKCS#12 truststore for Java clients.
pub fn ca_secrets(
    kafka: &Kafka,
    kind: CaKind,
    ca: &CertAndKey,
    (cert_generation, key_generation): (u64, u64),
    truststore: Truststore,
    replacement: Option<Replacement>,
) -> (Secret, Secret) {
    let secret = |name: String, key: &str, value: &str, annotation: (&str, u64)| {
        let mut meta = owned_meta(kafka, name);
        meta.annotations = Some(BTreeMap::from([(
            annotation.0.to_string(),
            annotation.1.to_string(),
        )]));
        Secret {
            metadata: meta,
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([(
                key.to_string(),
                ByteString(value.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        }
    };
    let mut cert = secret(
        kind.cert_secret(kafka),
        "ca.crt",
        &ca.cert_pem,
        (CERT_GENERATION_ANNOTATION, cert_generation),
    );
    if let (Some(phase), Some(annotations)) = (replacement, cert.metadata.annotations.as_mut()) {
        annotations.insert(REPLACEMENT_ANNOTATION.into(), phase.as_str().into());
    }
    if let Some(data) = cert.data.as_mut() {
        data.insert("ca.p12".into(), ByteString(truststore.p12));
        data.insert(
            "ca.password".into(),
            ByteString(truststore.password.into_bytes()),
        );
    }
    (
        cert,
        secret(
            kind.key_secret(kafka),
            "ca.key",
            &ca.key_pem,
            (KEY_GENERATION_ANNOTATION, key_generation),
        ),
    )
}

/// Where broker pods mount their certificates (`<pod>.crt`, `<pod>.key`). Not below the
/// read-only ConfigMap mount, so the kubelet can create the mount point.
pub const BROKER_CERTS_DIR: &str = "/etc/fjord-tls/broker";
/// Where broker pods mount the cluster CA certificate (`ca.crt`): what the replication and
/// controller listeners trust, so only brokers (and the operator) get through them.
pub const CLUSTER_CA_DIR: &str = "/etc/fjord-tls/cluster-ca";
/// Where broker pods mount the clients CA certificate: what listeners with
/// `authentication.type: tls` trust (KafkaUser certificates).
pub const CLIENTS_CA_DIR: &str = "/etc/fjord-tls/clients-ca";
/// What a Secret of issued certificates was issued from (CA, subject, names, validity): when
/// it changes they are issued again.
pub const ISSUED_FROM_ANNOTATION: &str = "kafka.fjord.dev/issued-from";

/// The Secret with every broker's certificate and key (Strimzi's `<cluster>-kafka-brokers`).
pub fn broker_certs_secret_name(kafka: &Kafka) -> String {
    format!("{}-kafka-brokers", kafka_name(kafka))
}

/// The Secret with the operator's own client certificate for this cluster (Strimzi's
/// `<cluster>-cluster-operator-certs`).
pub fn operator_certs_secret_name(kafka: &Kafka) -> String {
    format!("{}-cluster-operator-certs", kafka_name(kafka))
}

/// File names of the operator's certificate and key in its Secret.
pub const OPERATOR_CERT_FILES: (&str, &str) = ("cluster-operator.crt", "cluster-operator.key");

/// Does some listener authenticate clients by certificate (so brokers trust the clients CA)?
pub fn needs_clients_ca(kafka: &Kafka) -> bool {
    kafka.spec.kafka.listeners.iter().any(|l| {
        matches!(
            l.authentication.as_ref().map(|a| a.type_),
            Some(ListenerAuthenticationType::Tls)
        )
    })
}

/// The names broker `ordinal`'s certificate covers: its pod and the bootstrap Service in the
/// cluster, every node address (a nodeport listener advertises the node the pod landed on,
/// known only after scheduling), and the `advertisedHost`s of nodeport listeners.
pub fn broker_cert_names(kafka: &Kafka, ordinal: i32, node_addresses: &[String]) -> Vec<String> {
    let mut external: Vec<String> = node_addresses.to_vec();
    for l in &kafka.spec.kafka.listeners {
        let custom = l
            .configuration
            .as_ref()
            .into_iter()
            .flat_map(|c| c.brokers.iter())
            .find(|b| b.broker == ordinal);
        if let Some(host) = custom.and_then(|b| b.advertised_host.clone()) {
            external.push(host);
        }
    }
    crate::pki::broker_sans(
        &kafka_name(kafka),
        &super::namespace(kafka),
        ordinal,
        &external,
    )
}

/// Fingerprint of what issued certificates depend on: the CA certificate, the subject, the
/// names of each certificate and the validity.
pub fn issued_from(
    ca_cert_pem: &str,
    common_name: &str,
    names: &[Vec<String>],
    validity_days: u32,
) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(ca_cert_pem.as_bytes());
    hasher.update(format!("|{common_name}").as_bytes());
    for (i, list) in names.iter().enumerate() {
        hasher.update(format!("|{i}:{}", list.join(",")).as_bytes());
    }
    hasher.update(format!("|{validity_days}").as_bytes());
    hasher.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The file names of broker `ordinal`'s certificate and key in the Secret (and the mount).
pub fn broker_cert_files(kafka: &Kafka, ordinal: i32) -> (String, String) {
    let pod = format!("{}-kafka-{ordinal}", kafka_name(kafka));
    (format!("{pod}.crt"), format!("{pod}.key"))
}

/// A Secret of issued certificates: `files` (name -> PEM) and the fingerprint they were
/// issued from.
pub fn issued_secret(
    kafka: &Kafka,
    name: String,
    files: BTreeMap<String, String>,
    input: &str,
) -> Secret {
    let mut meta = owned_meta(kafka, name);
    meta.annotations = Some(BTreeMap::from([(
        ISSUED_FROM_ANNOTATION.to_string(),
        input.to_string(),
    )]));
    Secret {
        metadata: meta,
        type_: Some("Opaque".into()),
        data: Some(
            files
                .into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// Whether the certificates in `secret` (`cert_files`) were issued from `input` and none is
/// due for renewal at `now`.
pub fn issued_is_current(
    secret: &Secret,
    input: &str,
    cert_files: &[String],
    now: time::OffsetDateTime,
    validity: Validity,
) -> bool {
    let same_input = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ISSUED_FROM_ANNOTATION))
        .is_some_and(|v| v == input);
    same_input
        && cert_files.iter().all(|file| {
            secret_text(secret, file)
                .and_then(|pem| crate::pki::not_after(&pem).ok())
                .is_some_and(|expires| !crate::pki::needs_renewal(expires, now, validity))
        })
}

/// A generation annotation's value (0 when absent or unreadable).
pub fn generation(secret: &Secret, annotation: &str) -> u64 {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotation))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The text of `key` in a Secret, when present and UTF-8.
pub fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_support::{kafka, THREE_BROKERS};

    #[test]
    fn secrets_have_strimzi_names_keys_and_generations() {
        let k = kafka(THREE_BROKERS);
        let ca = CertAndKey {
            cert_pem: "CERT".into(),
            key_pem: "KEY".into(),
        };
        let truststore = Truststore {
            p12: b"P12".to_vec(),
            password: "pw".into(),
        };
        let (cert, key) = ca_secrets(&k, CaKind::Cluster, &ca, (3, 1), truststore, None);
        assert_eq!(Replacement::of(&cert), None);
        assert_eq!(secret_text(&cert, "ca.p12").as_deref(), Some("P12"));
        assert_eq!(secret_text(&cert, "ca.password").as_deref(), Some("pw"));
        assert_eq!(
            cert.metadata.name.as_deref(),
            Some("my-cluster-cluster-ca-cert")
        );
        assert_eq!(key.metadata.name.as_deref(), Some("my-cluster-cluster-ca"));
        assert_eq!(secret_text(&cert, "ca.crt").as_deref(), Some("CERT"));
        assert_eq!(secret_text(&key, "ca.key").as_deref(), Some("KEY"));
        assert_eq!(
            secret_text(&cert, "ca.key"),
            None,
            "the public Secret never holds the key"
        );
        assert_eq!(generation(&cert, CERT_GENERATION_ANNOTATION), 3);
        assert_eq!(generation(&key, KEY_GENERATION_ANNOTATION), 1);
        assert_eq!(
            cert.metadata.owner_references.unwrap()[0].kind,
            "Kafka",
            "deleted with the cluster"
        );
        assert_eq!(
            CaKind::Clients.cert_secret(&k),
            "my-cluster-clients-ca-cert"
        );
        assert_eq!(CaKind::Clients.key_secret(&k), "my-cluster-clients-ca");
    }

    #[test]
    fn broker_certificates_name_pods_nodes_and_advertised_hosts() {
        let k = kafka(THREE_BROKERS);
        let names = broker_cert_names(&k, 1, &["10.0.0.5".into()]);
        assert!(names.contains(&"my-cluster-kafka-1.my-cluster-kafka-brokers.prod.svc".into()));
        assert!(names.contains(&"10.0.0.5".into()));
        assert!(names.contains(&"my-cluster-kafka-brokers.prod.svc".into()));
        let files = BTreeMap::from([
            ("my-cluster-kafka-1.crt".to_string(), "C1".to_string()),
            ("my-cluster-kafka-1.key".to_string(), "K1".to_string()),
        ]);
        let secret = issued_secret(&k, broker_certs_secret_name(&k), files, "in");
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("my-cluster-kafka-brokers")
        );
        assert_eq!(
            secret_text(&secret, "my-cluster-kafka-1.crt").as_deref(),
            Some("C1")
        );
        assert_eq!(
            secret_text(&secret, "my-cluster-kafka-1.key").as_deref(),
            Some("K1")
        );
        let one = std::slice::from_ref(&names);
        let a = issued_from("CA", "c-kafka", one, 365);
        assert_eq!(a, issued_from("CA", "c-kafka", one, 365));
        assert_ne!(a, issued_from("CA2", "c-kafka", one, 365), "a new CA");
        assert_ne!(a, issued_from("CA", "c-kafka-0", one, 365), "a new subject");
        assert_ne!(a, issued_from("CA", "c-kafka", one, 30), "a new validity");
        assert_ne!(
            a,
            issued_from("CA", "c-kafka", &[names, vec![]], 365),
            "a new broker"
        );
    }

    #[test]
    fn issued_certificates_are_current_until_their_input_changes_or_renewal_is_due() {
        let k = kafka(THREE_BROKERS);
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let validity = Validity::new(100, 10).unwrap();
        let ca = crate::pki::new_ca("ca", now, validity).unwrap();
        let leaf =
            crate::pki::issue(&ca, "x", &[], crate::pki::Usage::User, now, validity).unwrap();
        let files = BTreeMap::from([("x.crt".to_string(), leaf.cert_pem.clone())]);
        let secret = issued_secret(&k, "s".into(), files, "in-1");
        let crt = ["x.crt".to_string()];
        assert!(issued_is_current(&secret, "in-1", &crt, now, validity));
        assert!(!issued_is_current(&secret, "in-2", &crt, now, validity));
        let late = now + time::Duration::days(91);
        assert!(!issued_is_current(&secret, "in-1", &crt, late, validity));
        let missing = ["y.crt".to_string()];
        assert!(!issued_is_current(&secret, "in-1", &missing, now, validity));
    }

    #[test]
    fn ca_settings_default_like_strimzi_and_are_checked() {
        let k = kafka(THREE_BROKERS);
        assert!(CaKind::Cluster.generated(&k));
        let v = CaKind::Cluster.validity(&k).unwrap();
        assert_eq!((v.validity_days, v.renewal_days), (365, 30));
        let mut k = k;
        k.spec.clients_ca = Some(CertificateAuthority {
            generate_certificate_authority: Some(false),
            validity_days: Some(10),
            renewal_days: Some(10),
        });
        assert!(!CaKind::Clients.generated(&k));
        let e = CaKind::Clients.validity(&k).unwrap_err();
        assert!(e.starts_with("spec.clientsCa:"), "{e}");
    }
}
