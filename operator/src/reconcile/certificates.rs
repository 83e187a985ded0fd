//! Keeps a cluster's two CAs (cluster CA, clients CA) present and current in their Secrets:
//! created when missing, renewed inside the renewal window by re-signing the same key (what
//! the old certificate signed stays trusted, so no broker or client has to change anything at
//! that moment), and with `generateCertificateAuthority: false` left to the user, with a Warning
//! when one is missing or expiring.
//!
//! The decision is the pure [`decide`]; this module only reads and writes the Secrets. It also
//! issues the brokers' certificates for TLS listeners ([`reconcile_broker_certs`]). KafkaUser
//! certificates (clients CA) are not issued yet.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::ResourceExt;
use time::OffsetDateTime;

use crate::crd::{Condition, Kafka};
use crate::pki::{self, CertAndKey, Validity};
use crate::resources::certificates::{
    broker_cert_files, broker_cert_names, broker_certs_input, broker_certs_secret,
    broker_certs_secret_name, ca_secrets, generation, needs_broker_certs, secret_text, CaKind,
    BROKER_CERTS_INPUT_ANNOTATION, CERT_GENERATION_ANNOTATION, KEY_GENERATION_ANNOTATION,
};

use super::{apply, Context, Error};

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

/// `existing_expiry`: when the CA certificate in the Secrets expires (`None`: no usable pair).
pub fn decide(
    generated: bool,
    existing_expiry: Option<OffsetDateTime>,
    now: OffsetDateTime,
    validity: Validity,
) -> CaAction {
    match (generated, existing_expiry) {
        (true, None) => CaAction::Create,
        (false, None) => CaAction::Missing,
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
    let common_name = kind.common_name(kafka);
    let invalid = |e: pki::PkiError| Error::Invalid(e.to_string());
    match decide(kind.generated(kafka), expires, now, validity) {
        CaAction::Keep => Ok(None),
        CaAction::Create => {
            let ca = pki::new_ca(&common_name, now, validity).map_err(invalid)?;
            // A replaced CA counts as a new certificate and a new key.
            let next = (
                generations.0 + u64::from(cert_secret.is_some()),
                generations.1 + u64::from(key_secret.is_some()),
            );
            write(api, kafka, kind, &ca, next).await?;
            let note = format!("created {common_name} in Secrets {cert_name} and {key_name}");
            ctx.event(kafka, false, "CertificateAuthorityCreated", note)
                .await;
            Ok(None)
        }
        CaAction::Renew => {
            let old = existing.expect("renewal needs an existing CA");
            let ca = pki::renew_ca(&old, &common_name, now, validity).map_err(invalid)?;
            write(api, kafka, kind, &ca, (generations.0 + 1, generations.1)).await?;
            let note = format!(
                "renewed {common_name} (same key) until {}",
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

/// Issues the brokers' certificates (signed by the cluster CA) into `<cluster>-kafka-brokers`
/// when a listener serves TLS: again whenever the CA, the names they must cover
/// (`node_addresses`: every node's) or the broker count change, or the earliest one enters the
/// renewal window. Brokers re-read the files when the kubelet updates the mounted Secret, so a
/// new certificate needs no restart.
pub async fn reconcile_broker_certs(
    kafka: &Kafka,
    ctx: &Context,
    node_addresses: &[String],
) -> Result<(), Error> {
    if !needs_broker_certs(kafka) {
        return Ok(());
    }
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &kafka.namespace().unwrap_or_default());
    let kind = CaKind::Cluster;
    let (Some(cert), Some(key)) = (
        api.get_opt(&kind.cert_secret(kafka)).await?,
        api.get_opt(&kind.key_secret(kafka)).await?,
    ) else {
        // A user-managed CA not provided yet: its Warning already says so.
        return Ok(());
    };
    let (Some(cert_pem), Some(key_pem)) =
        (secret_text(&cert, "ca.crt"), secret_text(&key, "ca.key"))
    else {
        return Ok(());
    };
    let ca = CertAndKey { cert_pem, key_pem };
    let validity = kind.validity(kafka).map_err(Error::Invalid)?;
    let names: Vec<Vec<String>> = (0..kafka.spec.kafka.replicas.max(0))
        .map(|i| broker_cert_names(kafka, i, node_addresses))
        .collect();
    let input = broker_certs_input(&ca.cert_pem, &names, validity.validity_days);
    let name = broker_certs_secret_name(kafka);
    let existing = api.get_opt(&name).await?;
    let now = OffsetDateTime::now_utc();
    let current = existing.as_ref().is_some_and(|s| {
        let same_input = s
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(BROKER_CERTS_INPUT_ANNOTATION))
            == Some(&input);
        let fresh = (0..names.len() as i32).all(|i| {
            secret_text(s, &broker_cert_files(kafka, i).0)
                .and_then(|pem| pki::not_after(&pem).ok())
                .is_some_and(|expires| !pki::needs_renewal(expires, now, validity))
        });
        same_input && fresh
    });
    if current {
        return Ok(());
    }
    let invalid = |e: pki::PkiError| Error::Invalid(e.to_string());
    let mut certs = std::collections::BTreeMap::new();
    for (ordinal, sans) in names.iter().enumerate() {
        let ordinal = ordinal as i32;
        let common_name = format!("{}-kafka-{ordinal}", kafka.name_any());
        let issued = pki::issue(&ca, &common_name, sans, pki::Usage::Broker, now, validity)
            .map_err(invalid)?;
        certs.insert(ordinal, issued);
    }
    apply(&api, &broker_certs_secret(kafka, &certs, &input)).await?;
    ctx.event(
        kafka,
        false,
        "BrokerCertificatesIssued",
        format!(
            "issued certificates for {} brokers signed by the cluster CA (Secret {name})",
            certs.len()
        ),
    )
    .await;
    Ok(())
}

async fn write(
    api: &Api<Secret>,
    kafka: &Kafka,
    kind: CaKind,
    ca: &CertAndKey,
    generations: (u64, u64),
) -> Result<(), Error> {
    let (cert, key) = ca_secrets(kafka, kind, ca, generations);
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
        assert_eq!(decide(true, None, now, v), CaAction::Create);
        assert_eq!(decide(false, None, now, v), CaAction::Missing);
        let fresh = now + Duration::days(200);
        assert_eq!(decide(true, Some(fresh), now, v), CaAction::Keep);
        assert_eq!(decide(false, Some(fresh), now, v), CaAction::Keep);
        let soon = now + Duration::days(29);
        assert_eq!(decide(true, Some(soon), now, v), CaAction::Renew);
        assert_eq!(decide(false, Some(soon), now, v), CaAction::Expiring);
        let expired = now - Duration::days(1);
        assert_eq!(decide(true, Some(expired), now, v), CaAction::Renew);
    }
}
