//! Replacing a CA's key without breaking trust, when asked with `kafka.fjord.dev/force-replace`
//! on its key Secret (Strimzi's `strimzi.io/force-replace`): the phases of
//! [`Replacement`], each entered only once every broker restarted onto the previous one (their
//! pod template carries the CA certificate's generation, which every step raises, so the roller
//! restarts them one at a time as in any roll):
//!
//! 1. *trust-both*: a new key and certificate; `ca.crt` holds the new and the old certificate,
//!    nothing is issued with the new key yet (brokers restart trusting both);
//! 2. *reissue*: broker, operator and user certificates are issued with the new key (brokers
//!    restart serving them);
//! 3. done: `ca.crt` is the new certificate alone (brokers restart trusting only it).
//!
//! Clients must trust the bundle from step 1 until step 3; `status.listeners[].certificates`
//! lists both meanwhile. The decision is the pure [`next_step`].

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use time::OffsetDateTime;

use crate::crd::Kafka;
use crate::pki::{self, CertAndKey};
use crate::resources::certificates::{
    generation, needs_clients_ca, secret_text, CaKind, Replacement, CERT_GENERATION_ANNOTATION,
    FORCE_REPLACE_ANNOTATION, KEY_GENERATION_ANNOTATION,
};
use crate::resources::names;
use crate::resources::statefulset::{
    CLIENTS_CA_GENERATION_ANNOTATION, CLUSTER_CA_GENERATION_ANNOTATION,
};

use super::{Context, Error};

/// What a replacement does now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Start,
    Reissue,
    Finish,
}

/// The next step of a replacement in `phase` (`None`: none under way), `forced` by the
/// annotation, for a CA the operator `generated`, when every broker runs the CA's current
/// generation (`brokers_current`).
pub fn next_step(
    phase: Option<Replacement>,
    forced: bool,
    generated: bool,
    brokers_current: bool,
) -> Option<Step> {
    match phase {
        None if forced && generated => Some(Step::Start),
        None => None,
        Some(_) if !brokers_current => None,
        Some(Replacement::TrustBoth) => Some(Step::Reissue),
        Some(Replacement::Reissue) => Some(Step::Finish),
    }
}

/// Moves `kind`'s replacement one step if it can. `Ok(true)` while a replacement is under way
/// (renewal waits until it is done).
pub async fn advance(
    kafka: &Kafka,
    ctx: &Context,
    api: &Api<Secret>,
    kind: CaKind,
    cert_secret: Option<&Secret>,
    key_secret: Option<&Secret>,
) -> Result<bool, Error> {
    let phase = cert_secret.and_then(Replacement::of);
    let forced = key_secret.is_some_and(|s| s.annotations().contains_key(FORCE_REPLACE_ANNOTATION));
    if phase.is_none() && !forced {
        return Ok(false);
    }
    let (Some(cert_secret), Some(key_secret)) = (cert_secret, key_secret) else {
        return Ok(phase.is_some());
    };
    let (Some(bundle), Some(key_pem)) = (
        secret_text(cert_secret, "ca.crt"),
        secret_text(key_secret, "ca.key"),
    ) else {
        return Ok(phase.is_some());
    };
    let generations = (
        generation(cert_secret, CERT_GENERATION_ANNOTATION),
        generation(key_secret, KEY_GENERATION_ANNOTATION),
    );
    let current = match phase {
        Some(_) => brokers_current(ctx, kafka, kind, generations.0).await?,
        None => true,
    };
    let name = kind.common_name(kafka);
    let invalid = |e: pki::PkiError| Error::Invalid(e.to_string());
    match next_step(phase, forced, kind.generated(kafka), current) {
        None => {}
        Some(Step::Start) => {
            let validity = kind.validity(kafka).map_err(Error::Invalid)?;
            let old = pki::split_certificates(&bundle);
            let new = pki::new_ca(&name, OffsetDateTime::now_utc(), validity).map_err(invalid)?;
            let both = CertAndKey {
                cert_pem: format!(
                    "{}{}",
                    new.cert_pem,
                    old.first().cloned().unwrap_or_default()
                ),
                key_pem: new.key_pem,
            };
            let next = (generations.0 + 1, generations.1 + 1);
            super::certificates::write(api, kafka, kind, &both, next, Some(Replacement::TrustBoth))
                .await?;
            let patch = serde_json::json!({
                "metadata": {"annotations": {FORCE_REPLACE_ANNOTATION: null}}
            });
            api.patch(
                &kind.key_secret(kafka),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
            let note = format!(
                "replacing the key of {name}: brokers now roll to trust the old and the new \
                 certificate (clients must trust both, ca.crt of Secret {})",
                kind.cert_secret(kafka)
            );
            ctx.event(kafka, false, "CertificateAuthorityKeyReplacing", note)
                .await;
        }
        Some(Step::Reissue) => {
            let ca = CertAndKey {
                cert_pem: bundle,
                key_pem,
            };
            let next = (generations.0 + 1, generations.1);
            super::certificates::write(api, kafka, kind, &ca, next, Some(Replacement::Reissue))
                .await?;
            let note = format!(
                "every broker trusts the new {name}: issuing certificates with the new key, \
                 brokers roll onto them"
            );
            ctx.event(kafka, false, "CertificateAuthorityKeyReplacing", note)
                .await;
        }
        Some(Step::Finish) => {
            let newest = pki::split_certificates(&bundle)
                .into_iter()
                .next()
                .unwrap_or(bundle);
            let ca = CertAndKey {
                cert_pem: newest,
                key_pem,
            };
            let next = (generations.0 + 1, generations.1);
            super::certificates::write(api, kafka, kind, &ca, next, None).await?;
            let note =
                format!("replaced the key of {name}: the old certificate is no longer trusted");
            ctx.event(kafka, false, "CertificateAuthorityKeyReplaced", note)
                .await;
        }
    }
    Ok(true)
}

/// Whether every broker of `kafka` runs a pod template that carries `kind`'s CA certificate at
/// `generation` and is ready (a CA the brokers do not use counts as current).
async fn brokers_current(
    ctx: &Context,
    kafka: &Kafka,
    kind: CaKind,
    generation: u64,
) -> Result<bool, Error> {
    let annotation = match kind {
        CaKind::Cluster => CLUSTER_CA_GENERATION_ANNOTATION,
        CaKind::Clients if needs_clients_ca(kafka) => CLIENTS_CA_GENERATION_ANNOTATION,
        CaKind::Clients => return Ok(true),
    };
    let ns = kafka.namespace().unwrap_or_default();
    let Some(sts) = Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&names::statefulset(kafka))
        .await?
    else {
        return Ok(true);
    };
    let template_generation = sts
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(annotation))
        .cloned();
    if template_generation != Some(generation.to_string()) {
        return Ok(false);
    }
    // The revision in the status is the template's only once the StatefulSet controller has
    // seen this generation: right after the template changed it still names the old one, which
    // every pod runs.
    let observed = sts.status.as_ref().and_then(|s| s.observed_generation);
    if observed.is_none() || observed != sts.metadata.generation {
        return Ok(false);
    }
    let Some(revision) = sts.status.as_ref().and_then(|s| s.update_revision.clone()) else {
        return Ok(false);
    };
    let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let selector = crate::resources::selector_string(kafka);
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let on_revision = |p: &Pod| p.labels().get("controller-revision-hash") == Some(&revision);
    let ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    Ok(pods.len() as i32 == replicas && pods.iter().all(|p| on_revision(p) && ready(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_waits_for_the_brokers_to_be_on_the_previous_one() {
        use Replacement::*;
        assert_eq!(next_step(None, false, true, true), None);
        assert_eq!(next_step(None, true, true, false), Some(Step::Start));
        assert_eq!(
            next_step(None, true, false, true),
            None,
            "a user-managed CA is the user's to replace"
        );
        assert_eq!(next_step(Some(TrustBoth), false, true, false), None);
        assert_eq!(
            next_step(Some(TrustBoth), false, true, true),
            Some(Step::Reissue)
        );
        assert_eq!(next_step(Some(Reissue), false, true, false), None);
        assert_eq!(
            next_step(Some(Reissue), true, true, true),
            Some(Step::Finish),
            "a second request while one runs does not restart it"
        );
    }
}
