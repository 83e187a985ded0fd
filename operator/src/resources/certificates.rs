//! The CA Secrets in the shape Strimzi gives them, so tools and habits carry over: the public
//! part `<cluster>-cluster-ca-cert` / `<cluster>-clients-ca-cert` (`ca.crt`, for clients to
//! trust) apart from the private key `<cluster>-cluster-ca` / `<cluster>-clients-ca`
//! (`ca.key`, for the operator alone), each with a generation annotation that grows on every
//! renewal.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;

use super::{kafka_name, owned_meta};
use crate::crd::{CertificateAuthority, Kafka};
use crate::pki::{CertAndKey, Validity, DEFAULT_RENEWAL_DAYS, DEFAULT_VALIDITY_DAYS};

/// Generation of the CA certificate (on the `-cert` Secret), as Strimzi's
/// `strimzi.io/ca-cert-generation`.
pub const CERT_GENERATION_ANNOTATION: &str = "kafka.fjord.dev/ca-cert-generation";
/// Generation of the CA key (on the key Secret), as Strimzi's `strimzi.io/ca-key-generation`.
pub const KEY_GENERATION_ANNOTATION: &str = "kafka.fjord.dev/ca-key-generation";

/// Which of a cluster's two CAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaKind {
    /// Signs broker certificates.
    Cluster,
    /// Signs KafkaUser certificates.
    Clients,
}

impl CaKind {
    fn word(self) -> &'static str {
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

/// The two Secrets of a CA at `generation` (certificate and key generation move together here:
/// a renewal keeps the key but counts as a new certificate generation only).
pub fn ca_secrets(
    kafka: &Kafka,
    kind: CaKind,
    ca: &CertAndKey,
    (cert_generation, key_generation): (u64, u64),
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
    (
        secret(
            kind.cert_secret(kafka),
            "ca.crt",
            &ca.cert_pem,
            (CERT_GENERATION_ANNOTATION, cert_generation),
        ),
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
/// What the broker certificates were issued from (CA, names, validity): when it changes they
/// are issued again.
pub const BROKER_CERTS_INPUT_ANNOTATION: &str = "kafka.fjord.dev/broker-certs-input";

/// The Secret with every broker's certificate and key (Strimzi's `<cluster>-kafka-brokers`).
pub fn broker_certs_secret_name(kafka: &Kafka) -> String {
    format!("{}-kafka-brokers", kafka_name(kafka))
}

/// Does any listener serve TLS (so brokers need certificates)?
pub fn needs_broker_certs(kafka: &Kafka) -> bool {
    kafka.spec.kafka.listeners.iter().any(|l| l.tls)
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

/// Fingerprint of what the broker certificates depend on.
pub fn broker_certs_input(ca_cert_pem: &str, names: &[Vec<String>], validity_days: u32) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(ca_cert_pem.as_bytes());
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

/// The brokers' certificate Secret: `<pod>.crt` and `<pod>.key` per broker.
pub fn broker_certs_secret(
    kafka: &Kafka,
    certs: &BTreeMap<i32, CertAndKey>,
    input: &str,
) -> Secret {
    let mut meta = owned_meta(kafka, broker_certs_secret_name(kafka));
    meta.annotations = Some(BTreeMap::from([(
        BROKER_CERTS_INPUT_ANNOTATION.to_string(),
        input.to_string(),
    )]));
    let mut data = BTreeMap::new();
    for (ordinal, cert) in certs {
        let (crt, key) = broker_cert_files(kafka, *ordinal);
        data.insert(crt, ByteString(cert.cert_pem.as_bytes().to_vec()));
        data.insert(key, ByteString(cert.key_pem.as_bytes().to_vec()));
    }
    Secret {
        metadata: meta,
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
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
        let (cert, key) = ca_secrets(&k, CaKind::Cluster, &ca, (3, 1));
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
        let certs = BTreeMap::from([(
            1,
            CertAndKey {
                cert_pem: "C1".into(),
                key_pem: "K1".into(),
            },
        )]);
        let secret = broker_certs_secret(&k, &certs, "in");
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
        let a = broker_certs_input("CA", std::slice::from_ref(&names), 365);
        assert_eq!(
            a,
            broker_certs_input("CA", std::slice::from_ref(&names), 365)
        );
        assert_ne!(
            a,
            broker_certs_input("CA2", std::slice::from_ref(&names), 365),
            "a new CA"
        );
        assert_ne!(
            a,
            broker_certs_input("CA", &[names, vec![]], 365),
            "a new broker"
        );
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
