//! Keeps a cluster's two CAs (cluster CA, clients CA) present and current in their Secrets:
//! created when missing, renewed inside the renewal window by re-signing the same key (what
//! the old certificate signed stays trusted, so no broker or client has to change anything at
//! that moment), and with `generateCertificateAuthority: false` left to the user, with a Warning
//! when one is missing or expiring.
//!
//! The decision is the pure [`decide`]; this module only reads and writes the Secrets. It also
//! issues what the cluster CA signs: every broker's certificate ([`reconcile_broker_certs`],
//! for the mutual-TLS replication and controller listeners and any TLS client listener) and
//! the operator's own admin certificate ([`reconcile_operator_cert`]). KafkaUser certificates
//! (clients CA) are issued by the user reconciler through [`ensure_issued`].
//!
//! `kafka.fjord.dev/force-renew` on a CA's `-cert` Secret renews that CA now (same key), which
//! re-issues what it signed and rolls the brokers (their pod template carries the CA
//! certificate generations).

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::ResourceExt;
use time::OffsetDateTime;

use crate::crd::{Condition, Kafka};
use crate::pki::{self, CertAndKey, Validity};
use crate::resources::certificates::{
    broker_cert_files, broker_cert_names, broker_certs_secret_name, ca_secrets, generation,
    issued_from, issued_is_current, issued_secret, operator_certs_secret_name, secret_text, CaKind,
    CERT_GENERATION_ANNOTATION, KEY_GENERATION_ANNOTATION, OPERATOR_CERT_FILES,
};
use crate::resources::certificates::{Replacement, Truststore};

use super::{apply, Context, Error};

/// Annotation on a CA's `-cert` Secret asking the operator to renew that CA now (Strimzi's
/// `strimzi.io/force-renew`); removed once done.
pub const FORCE_RENEW_ANNOTATION: &str = "kafka.fjord.dev/force-renew";

/// What to do with one CA now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaAction {
    Keep,
    /// A new key and certificate (none usable exists).
    Create,
    /// A new certificate for the existing key.
    Renew,
    /// User-managed and absent: say so.
    Missing,
    /// User-managed and inside the renewal window (or expired): say so.
    Expiring,
}

/// `existing_expiry`: when the CA certificate in the Secrets expires (`None`: no usable pair);
/// `forced`: the user asked for a renewal now ([`FORCE_RENEW_ANNOTATION`]; only for a CA the
/// operator generates).
pub fn decide(
    generated: bool,
    existing_expiry: Option<OffsetDateTime>,
    now: OffsetDateTime,
    validity: Validity,
    forced: bool,
) -> CaAction {
    match (generated, existing_expiry) {
        (true, None) => CaAction::Create,
        (false, None) => CaAction::Missing,
        (true, Some(_)) if forced => CaAction::Renew,
        (generated, Some(expires)) if pki::needs_renewal(expires, now, validity) => {
            if generated {
                CaAction::Renew
            } else {
                CaAction::Expiring
            }
        }
        (_, Some(_)) => CaAction::Keep,
    }
}

/// Both CAs of `kafka`; Warnings for what the user must fix.
pub async fn reconcile_cas(kafka: &Kafka, ctx: &Context) -> Result<Vec<Condition>, Error> {
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &kafka.namespace().unwrap_or_default());
    let mut warnings = Vec::new();
    for kind in [CaKind::Cluster, CaKind::Clients] {
        warnings.extend(reconcile_ca(kafka, ctx, &api, kind).await?);
    }
    Ok(warnings)
}

async fn reconcile_ca(
    kafka: &Kafka,
    ctx: &Context,
    api: &Api<Secret>,
    kind: CaKind,
) -> Result<Option<Condition>, Error> {
    let validity = match kind.validity(kafka) {
        Ok(v) => v,
        Err(e) => return Ok(Some(Condition::warning("InvalidCertificateAuthority", e))),
    };
    let (cert_name, key_name) = (kind.cert_secret(kafka), kind.key_secret(kafka));
    let cert_secret = api.get_opt(&cert_name).await?;
    let key_secret = api.get_opt(&key_name).await?;
    let existing = cert_secret
        .as_ref()
        .and_then(|s| secret_text(s, "ca.crt"))
        .zip(key_secret.as_ref().and_then(|s| secret_text(s, "ca.key")))
        .map(|(cert_pem, key_pem)| CertAndKey { cert_pem, key_pem });
    let expires = existing
        .as_ref()
        .and_then(|ca| pki::not_after(&ca.cert_pem).ok());
    let now = OffsetDateTime::now_utc();
    let generations = (
        cert_secret
            .as_ref()
            .map_or(0, |s| generation(s, CERT_GENERATION_ANNOTATION)),
        key_secret
            .as_ref()
            .map_or(0, |s| generation(s, KEY_GENERATION_ANNOTATION)),
    );
    if super::ca_replacement::advance(
        kafka,
        ctx,
        api,
        kind,
        cert_secret.as_ref(),
        key_secret.as_ref(),
    )
    .await?
    {
        // A key replacement under way: it renews the certificate itself.
        return Ok(None);
    }
    let common_name = kind.common_name(kafka);
    let invalid = |e: pki::PkiError| Error::Invalid(e.to_string());
    // What the expiry alert watches: the CA certificate the brokers present from now on.
    let namespace = kafka.namespace().unwrap_or_default();
    let expiry = ctx.metrics.ca_expiry.with_label_values(&[
        namespace.as_str(),
        kafka.name_any().as_str(),
        kind.word(),
    ]);
    let record_expiry = |cert_pem: &str| {
        if let Ok(when) = pki::not_after(cert_pem) {
            expiry.set(when.unix_timestamp());
        }
    };
    if let Some(ca) = &existing {
        record_expiry(&ca.cert_pem);
    }
    let forced = cert_secret
        .as_ref()
        .is_some_and(|s| s.annotations().contains_key(FORCE_RENEW_ANNOTATION));
    match decide(kind.generated(kafka), expires, now, validity, forced) {
        CaAction::Keep => Ok(None),
        CaAction::Create => {
            let ca = pki::new_ca(&common_name, now, validity).map_err(invalid)?;
            // A replaced CA counts as a new certificate and a new key.
            let next = (
                generations.0 + u64::from(cert_secret.is_some()),
                generations.1 + u64::from(key_secret.is_some()),
            );
            write(api, kafka, kind, &ca, next, None).await?;
            record_expiry(&ca.cert_pem);
            let note = format!("created {common_name} in Secrets {cert_name} and {key_name}");
            ctx.event(kafka, false, "CertificateAuthorityCreated", note)
                .await;
            Ok(None)
        }
        CaAction::Renew => {
            let old = existing.expect("renewal needs an existing CA");
            let ca = pki::renew_ca(&old, &common_name, now, validity).map_err(invalid)?;
            write(
                api,
                kafka,
                kind,
                &ca,
                (generations.0 + 1, generations.1),
                None,
            )
            .await?;
            record_expiry(&ca.cert_pem);
            if forced {
                // The user's annotation is not in the operator's applied fields: remove it
                // explicitly, or every reconcile would renew again.
                let patch = serde_json::json!({
                    "metadata": {"annotations": {FORCE_RENEW_ANNOTATION: null}}
                });
                api.patch(
                    &cert_name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await?;
            }
            let note = format!(
                "renewed {common_name} (same key{}) until {}",
                if forced {
                    ", as asked by annotation"
                } else {
                    ""
                },
                pki::not_after(&ca.cert_pem).map_err(invalid)?
            );
            ctx.event(kafka, false, "CertificateAuthorityRenewed", note)
                .await;
            Ok(None)
        }
        CaAction::Missing => Ok(Some(Condition::warning(
            "CertificateAuthorityMissing",
            format!(
                "generateCertificateAuthority is false, so put the {common_name} certificate in \
                 Secret {cert_name} (key ca.crt) and its key in Secret {key_name} (key ca.key)"
            ),
        ))),
        CaAction::Expiring => Ok(Some(Condition::warning(
            "CertificateAuthorityExpiring",
            format!(
                "the user-managed {common_name} in Secret {cert_name} expires {}; replace it",
                expires.map(|e| e.to_string()).unwrap_or_default()
            ),
        ))),
    }
}

/// A stored CA as a signer: the certificate that goes with the key (the first of `ca.crt`, which
/// holds two while the key is replaced) and whether issuing must wait (a key replacement whose
/// brokers do not trust the new key yet).
pub struct StoredCa {
    pub ca: CertAndKey,
    pub hold_issuing: bool,
}

/// The signing certificate and key of `kind`, when both are stored (a user-managed CA may be
/// missing: its Warning already says so).
pub async fn stored_ca(
    api: &Api<Secret>,
    kafka: &Kafka,
    kind: CaKind,
) -> Result<Option<StoredCa>, Error> {
    let (Some(cert), Some(key)) = (
        api.get_opt(&kind.cert_secret(kafka)).await?,
        api.get_opt(&kind.key_secret(kafka)).await?,
    ) else {
        return Ok(None);
    };
    let hold_issuing = Replacement::of(&cert) == Some(Replacement::TrustBoth);
    let signing = secret_text(&cert, "ca.crt")
        .and_then(|bundle| pki::split_certificates(&bundle).into_iter().next());
    Ok(signing
        .zip(secret_text(&key, "ca.key"))
        .map(|(cert_pem, key_pem)| StoredCa {
            ca: CertAndKey { cert_pem, key_pem },
            hold_issuing,
        }))
}

/// One certificate to issue into a Secret: file names and the names (SANs) it covers.
pub struct Leaf {
    pub cert_file: String,
    pub key_file: String,
    pub sans: Vec<String>,
}

/// A Secret of certificates signed by one CA, all with the same subject.
pub struct Issuance {
    pub secret: String,
    pub common_name: String,
    pub usage: pki::Usage,
    pub leaves: Vec<Leaf>,
    /// Files stored next to the certificates (e.g. `ca.crt`).
    pub extra_files: std::collections::BTreeMap<String, String>,
}

/// Issues `issuance` into its Secret unless what is stored was issued from the same input and
/// is not due for renewal, or issuing is on hold (a key replacement) and something is stored.
/// `Ok(true)` when it issued.
pub async fn ensure_issued(
    api: &Api<Secret>,
    kafka: &Kafka,
    signer: &StoredCa,
    validity: Validity,
    issuance: Issuance,
) -> Result<bool, Error> {
    let ca = &signer.ca;
    let names: Vec<Vec<String>> = issuance.leaves.iter().map(|l| l.sans.clone()).collect();
    let input = issued_from(
        &ca.cert_pem,
        &issuance.common_name,
        &names,
        validity.validity_days,
    );
    let now = OffsetDateTime::now_utc();
    let cert_files: Vec<String> = issuance
        .leaves
        .iter()
        .map(|l| l.cert_file.clone())
        .collect();
    if let Some(existing) = api.get_opt(&issuance.secret).await? {
        if signer.hold_issuing || issued_is_current(&existing, &input, &cert_files, now, validity) {
            return Ok(false);
        }
    }
    let invalid = |e: pki::PkiError| Error::Invalid(e.to_string());
    let mut files = issuance.extra_files;
    for leaf in &issuance.leaves {
        let issued = pki::issue(
            ca,
            &issuance.common_name,
            &leaf.sans,
            issuance.usage,
            now,
            validity,
        )
        .map_err(invalid)?;
        files.insert(leaf.cert_file.clone(), issued.cert_pem);
        files.insert(leaf.key_file.clone(), issued.key_pem);
    }
    apply(api, &issued_secret(kafka, issuance.secret, files, &input)).await?;
    Ok(true)
}

/// Issues the brokers' certificates (signed by the cluster CA, subject
/// `CN=<cluster>-kafka,O=fjord.dev`) into `<cluster>-kafka-brokers`: again whenever the CA,
/// the names they must cover (`node_addresses`: every node's) or the broker count change, or
/// one enters the renewal window. Every broker has one: the replication and controller
/// listeners are mutual TLS. Brokers re-read the files when the kubelet updates the mounted
/// Secret, so a new certificate needs no restart.
pub async fn reconcile_broker_certs(
    kafka: &Kafka,
    ctx: &Context,
    node_addresses: &[String],
) -> Result<(), Error> {
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &kafka.namespace().unwrap_or_default());
    let Some(ca) = stored_ca(&api, kafka, CaKind::Cluster).await? else {
        return Ok(());
    };
    let validity = CaKind::Cluster.validity(kafka).map_err(Error::Invalid)?;
    let leaves: Vec<Leaf> = (0..kafka.spec.kafka.replicas.max(0))
        .map(|i| {
            let (cert_file, key_file) = broker_cert_files(kafka, i);
            Leaf {
                cert_file,
                key_file,
                sans: broker_cert_names(kafka, i, node_addresses),
            }
        })
        .collect();
    let count = leaves.len();
    let name = broker_certs_secret_name(kafka);
    let issuance = Issuance {
        secret: name.clone(),
        common_name: pki::broker_common_name(&kafka.name_any()),
        usage: pki::Usage::Broker,
        leaves,
        extra_files: Default::default(),
    };
    if ensure_issued(&api, kafka, &ca, validity, issuance).await? {
        let note = format!(
            "issued certificates for {count} brokers signed by the cluster CA (Secret {name})"
        );
        ctx.event(kafka, false, "BrokerCertificatesIssued", note)
            .await;
    }
    Ok(())
}

/// Issues the operator's own client certificate for this cluster (cluster CA, subject
/// `CN=fjord-operator,O=fjord.dev`, in `super.users`) into `<cluster>-cluster-operator-certs`:
/// its admin connections authenticate with it on the replication listener.
pub async fn reconcile_operator_cert(kafka: &Kafka, ctx: &Context) -> Result<(), Error> {
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &kafka.namespace().unwrap_or_default());
    let Some(ca) = stored_ca(&api, kafka, CaKind::Cluster).await? else {
        return Ok(());
    };
    let validity = CaKind::Cluster.validity(kafka).map_err(Error::Invalid)?;
    let (cert_file, key_file) = OPERATOR_CERT_FILES;
    let issuance = Issuance {
        secret: operator_certs_secret_name(kafka),
        common_name: pki::OPERATOR_COMMON_NAME.into(),
        usage: pki::Usage::Operator,
        leaves: vec![Leaf {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            sans: Vec::new(),
        }],
        extra_files: Default::default(),
    };
    ensure_issued(&api, kafka, &ca, validity, issuance).await?;
    Ok(())
}

/// How the operator's admin connections to `kafka` authenticate: mutual TLS with its
/// certificate, trusting the cluster CA. `None` while either is not stored yet.
pub async fn operator_tls(
    kafka: &Kafka,
    client: &kube::Client,
) -> Result<Option<fjord_client::TlsSettings>, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &kafka.namespace().unwrap_or_default());
    let (Some(ca), Some(own)) = (
        api.get_opt(&CaKind::Cluster.cert_secret(kafka)).await?,
        api.get_opt(&operator_certs_secret_name(kafka)).await?,
    ) else {
        return Ok(None);
    };
    let (cert_file, key_file) = OPERATOR_CERT_FILES;
    let (Some(ca_pem), Some(cert), Some(key)) = (
        secret_text(&ca, "ca.crt"),
        secret_text(&own, cert_file),
        secret_text(&own, key_file),
    ) else {
        return Ok(None);
    };
    Ok(Some(fjord_client::TlsSettings {
        ca: Some(fjord_client::PemSource::Pem(ca_pem)),
        client_cert: Some(fjord_client::ClientCertificate {
            cert_chain: fjord_client::PemSource::Pem(cert),
            key: fjord_client::PemSource::Pem(key),
        }),
        server_name: None,
        verify_hostname: true,
    }))
}

/// Writes a CA's two Secrets (`ca.cert_pem` may be a bundle: every certificate in it is
/// trusted, the first signs).
pub(super) async fn write(
    api: &Api<Secret>,
    kafka: &Kafka,
    kind: CaKind,
    ca: &CertAndKey,
    generations: (u64, u64),
    replacement: Option<Replacement>,
) -> Result<(), Error> {
    let password = pki::store_password();
    let truststore = Truststore {
        p12: pki::pkcs12_truststore(&ca.cert_pem, &password)
            .map_err(|e| Error::Invalid(e.to_string()))?,
        password,
    };
    let (cert, key) = ca_secrets(kafka, kind, ca, generations, truststore, replacement);
    // The key first: a certificate Secret never points at a key that is not stored yet.
    apply(api, &key).await?;
    apply(api, &cert).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    #[test]
    fn create_renew_keep_or_warn() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let v = Validity::new(365, 30).unwrap();
        assert_eq!(decide(true, None, now, v, false), CaAction::Create);
        assert_eq!(decide(false, None, now, v, false), CaAction::Missing);
        let fresh = now + Duration::days(200);
        assert_eq!(decide(true, Some(fresh), now, v, false), CaAction::Keep);
        assert_eq!(decide(false, Some(fresh), now, v, false), CaAction::Keep);
        let soon = now + Duration::days(29);
        assert_eq!(decide(true, Some(soon), now, v, false), CaAction::Renew);
        assert_eq!(decide(false, Some(soon), now, v, false), CaAction::Expiring);
        let expired = now - Duration::days(1);
        assert_eq!(decide(true, Some(expired), now, v, false), CaAction::Renew);
        // Forced: a generated CA renews at once; a user's CA is the user's to replace.
        assert_eq!(decide(true, Some(fresh), now, v, true), CaAction::Renew);
        assert_eq!(decide(false, Some(fresh), now, v, true), CaAction::Keep);
        assert_eq!(decide(true, None, now, v, true), CaAction::Create);
    }
}
