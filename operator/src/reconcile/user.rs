//! KafkaUser reconciler: makes one user's credential, ACLs and quotas on the brokers match
//! the resource, and keeps its credentials in a Secret named like the user (built by
//! [`super::user_secret`]).
//!
//! - `spec.authentication` `tls`: a client certificate from the clients CA in the Secret
//!   (renewed as the CA or the renewal window asks); the brokers need nothing (they trust the
//!   clients CA), so any SCRAM credential of the name is removed.
//! - `spec.authentication` `scram-sha-512`: the password comes from
//!   `password.valueFrom.secretKeyRef` or is generated once and then kept (read back from the
//!   user's Secret). The brokers get only a salted password (PBKDF2, random salt, 4096
//!   iterations) through AlterUserScramCredentials, and only when the credential is missing or
//!   the password changed: the Secret carries a SHA-256 of the password the brokers were last
//!   given. The Secret (`password`, `sasl.jaas.config`) is owned by the KafkaUser, so it is
//!   garbage-collected with it. Without authentication, credentials and Secret are removed.
//! - `spec.authorization`: the principal's ACLs (`User:<name>`, or `User:CN=<name>` for TLS)
//!   are made exactly the spec's (create missing, delete extra); without it, the principal has
//!   no ACLs. ACLs of the other principal form (a user that switched type) are removed.
//! - `spec.quotas`: the quotas of entity `user=<name>` (`user=CN=<name>`) are made exactly the
//!   spec's.
//! - Deletion (finalizer): credentials, ACLs and quotas are removed from the brokers.
//!
//! A password that cannot be read (missing Secret or key) makes the user NotReady and changes
//! nothing on the brokers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::ResourceExt;

use crate::crd::condition::{merge_conditions, now_rfc3339};
use crate::crd::user::{UserAuthenticationType, UserQuotas};
use crate::crd::{Condition, KafkaUser, KafkaUserStatus};
use crate::kafka_admin::{AdminError, KafkaAdmin, ScramMechanism};
use crate::resources::certificates::CaKind;

use super::user_acls::{self, AclDiff};
use super::user_secret::{
    generate_password, kept_or_generated, other_principals, owned_by, password_from_ref,
    password_hash, principal, quota_entity, secret_conflict, tls_user_secret, user_secret,
    PasswordOrigin, PASSWORD_HASH_ANNOTATION,
};
use super::{
    connect_admin, object_key, owning_cluster, patch_status, Context, Error, FIELD_MANAGER,
    RECHECK, RESYNC,
};

pub const FINALIZER: &str = "kafka.fjord.dev/user";
/// The mechanism `scram-sha-512` means.
pub const MECHANISM: ScramMechanism = ScramMechanism::Sha512;
/// Users whose password lives in a Secret of their own are looked at this often: the controller
/// is not told when that Secret changes.
pub const PASSWORD_REF_RESYNC: Duration = Duration::from_secs(60);

/// Kafka client-quota keys of the three `spec.quotas` fields.
pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
pub const REQUEST_PERCENTAGE: &str = "request_percentage";

// ---------------------------------------------------------------------------------------------
// Pure parts

/// What to do with the broker-side credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialAction {
    Keep,
    Create,
    Update,
}

/// Upsert only when the brokers have no credential, or were last given another password.
pub fn credential_action(
    broker_has_credential: bool,
    recorded_hash: Option<&str>,
    password: &str,
) -> CredentialAction {
    if !broker_has_credential {
        CredentialAction::Create
    } else if recorded_hash != Some(password_hash(password).as_str()) {
        CredentialAction::Update
    } else {
        CredentialAction::Keep
    }
}

/// The quotas the spec asks for, under Kafka's keys.
pub fn desired_quotas(quotas: Option<&UserQuotas>) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    if let Some(q) = quotas {
        if let Some(v) = q.producer_byte_rate {
            out.insert(PRODUCER_BYTE_RATE.to_string(), v as f64);
        }
        if let Some(v) = q.consumer_byte_rate {
            out.insert(CONSUMER_BYTE_RATE.to_string(), v as f64);
        }
        if let Some(v) = q.request_percentage {
            out.insert(REQUEST_PERCENTAGE.to_string(), f64::from(v));
        }
    }
    out
}

/// The AlterClientQuotas operations that make `current` exactly `desired`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QuotaChanges {
    pub set: BTreeMap<String, f64>,
    pub remove: Vec<String>,
}

impl QuotaChanges {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

pub fn quota_changes(
    desired: &BTreeMap<String, f64>,
    current: &BTreeMap<String, f64>,
) -> QuotaChanges {
    QuotaChanges {
        set: desired
            .iter()
            .filter(|(k, v)| current.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        remove: current
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .cloned()
            .collect(),
    }
}

/// Entry point for the controller.
pub async fn reconcile(user: Arc<KafkaUser>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started("KafkaUser");
    let ns = user.namespace().unwrap_or_default();
    let api: Api<KafkaUser> = Api::namespaced(ctx.client.clone(), &ns);
    let key = object_key(user.as_ref());
    let action = finalizer(&api, FINALIZER, user, |event| async {
        match event {
            Finalizer::Apply(u) => apply(u, &ctx).await,
            Finalizer::Cleanup(u) => cleanup(u, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(e.to_string()))?;
    ctx.succeeded(&key);
    Ok(action)
}

/// Writes status (a merge patch; `secret` is cleared explicitly when there is none).
async fn write_status(
    api: &Api<KafkaUser>,
    user: &KafkaUser,
    conditions: Vec<Condition>,
    secret: Option<String>,
) -> Result<(), Error> {
    let previous = user.status.clone().unwrap_or_default();
    let status = KafkaUserStatus {
        conditions: merge_conditions(&previous.conditions, conditions, &now_rfc3339()),
        observed_generation: user.metadata.generation,
        username: Some(user.name_any()),
        secret: secret.clone(),
    };
    let mut value = serde_json::to_value(&status).map_err(|e| Error::Invalid(e.to_string()))?;
    if secret.is_none() {
        value["secret"] = serde_json::Value::Null;
    }
    patch_status(api, &user.name_any(), &value).await
}

/// NotReady without touching the brokers; a Warning event only when the reason is new.
async fn not_ready(
    ctx: &Context,
    api: &Api<KafkaUser>,
    user: &KafkaUser,
    condition: Condition,
    secret: Option<String>,
) -> Result<(), Error> {
    let reason = condition.reason.clone().unwrap_or_default();
    let already = user.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "NotReady" && c.reason.as_deref() == Some(reason.as_str()))
    });
    if !already {
        let message = condition.message.clone().unwrap_or_default();
        ctx.event(user, true, &reason, message).await;
    }
    write_status(api, user, vec![condition], secret).await
}

async fn apply(user: Arc<KafkaUser>, ctx: &Context) -> Result<Action, Error> {
    let ns = user.namespace().unwrap_or_default();
    let api: Api<KafkaUser> = Api::namespaced(ctx.client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let username = user.name_any();
    let uid = user.uid().unwrap_or_default();
    let previous_secret = user.status.as_ref().and_then(|s| s.secret.clone());

    let kafka = match owning_cluster(&ctx.client, user.as_ref()).await {
        Ok(k) => k,
        Err(problem) => {
            let c = Condition::not_ready(problem.reason, problem.message);
            not_ready(ctx, &api, &user, c, previous_secret).await?;
            return Ok(Action::requeue(RECHECK));
        }
    };
    let cluster = kafka.name_any();

    // Everything read from Kubernetes and checked before the brokers are touched.
    let existing_secret = secrets.get_opt(&username).await?;
    if user.spec.authentication.is_some() {
        if let Some(c) = secret_conflict(existing_secret.as_ref(), &username, &uid) {
            not_ready(ctx, &api, &user, c, None).await?;
            return Ok(Action::requeue(RECHECK));
        }
    }
    let credentials = match &user.spec.authentication {
        None => Credentials::None,
        Some(auth) if auth.type_ == UserAuthenticationType::Tls => {
            let owned = existing_secret.as_ref().filter(|s| owned_by(s, &uid));
            match tls_credentials(&user, &kafka, &secrets, owned).await? {
                Ok(secret) => Credentials::Tls(secret.map(Box::new)),
                Err(c) => {
                    not_ready(ctx, &api, &user, c, previous_secret).await?;
                    return Ok(Action::requeue(RECHECK));
                }
            }
        }
        Some(auth) => {
            let password = match auth.password.as_ref().map(|p| &p.value_from.secret_key_ref) {
                Some(reference) if reference.name == username => {
                    let c = Condition::not_ready(
                        "PasswordSecretConflict",
                        format!(
                            "secretKeyRef names Secret {username}, which is the Secret the \
                             operator writes for this user; keep the password in a Secret with \
                             another name"
                        ),
                    );
                    not_ready(ctx, &api, &user, c, previous_secret).await?;
                    return Ok(Action::requeue(RECHECK));
                }
                Some(reference) => {
                    let source = secrets.get_opt(&reference.name).await?;
                    match password_from_ref(reference, source.as_ref()) {
                        Ok(p) => Some((p, PasswordOrigin::Referenced)),
                        Err(c) => {
                            not_ready(ctx, &api, &user, c, previous_secret).await?;
                            return Ok(Action::requeue(RECHECK));
                        }
                    }
                }
                None => Some(kept_or_generated(
                    existing_secret.as_ref(),
                    &uid,
                    generate_password,
                )),
            };
            let (password, origin) = password.expect("every branch gives a password or returns");
            Credentials::Scram(password, origin)
        }
    };

    let mut admin = match connect_admin(&kafka, &ctx.client).await {
        Ok(a) => a,
        Err(e) => return unreachable(&api, &user, e, previous_secret).await,
    };
    let referenced = matches!(
        credentials,
        Credentials::Scram(_, PasswordOrigin::Referenced)
    );
    let secret_name = (!matches!(credentials, Credentials::None)).then(|| username.clone());
    let converged = converge(
        ctx,
        &mut admin,
        &user,
        &cluster,
        &secrets,
        existing_secret.as_ref(),
        credentials,
    )
    .await;
    match converged {
        Ok(()) => {
            write_status(&api, &user, vec![Condition::ready()], secret_name).await?;
            Ok(Action::requeue(if referenced {
                PASSWORD_REF_RESYNC
            } else {
                RESYNC
            }))
        }
        Err((step, Error::Admin(e @ AdminError::Kafka { .. }))) => {
            let message = format!("user {username}: setting {step} failed: {e}");
            let c = Condition::not_ready("BrokerRefused", message);
            not_ready(ctx, &api, &user, c, previous_secret).await?;
            Ok(Action::requeue(RESYNC))
        }
        Err((_, Error::Admin(e))) => unreachable(&api, &user, e, previous_secret).await,
        Err((_, e)) => Err(e),
    }
}

/// What the user authenticates with after this reconcile.
enum Credentials {
    None,
    Scram(String, PasswordOrigin),
    /// A certificate Secret to write (`None`: the stored certificate is current).
    Tls(Option<Box<Secret>>),
}

/// The TLS user's Secret to write (`Ok(None)`: the stored one is current), or why there is no
/// certificate to give (the clients CA is missing: a NotReady condition).
async fn tls_credentials(
    user: &KafkaUser,
    kafka: &crate::crd::Kafka,
    secrets: &Api<Secret>,
    owned: Option<&Secret>,
) -> Result<Result<Option<Secret>, Condition>, Error> {
    let validity = CaKind::Clients.validity(kafka).map_err(Error::Invalid)?;
    let Some(ca) = super::certificates::stored_ca(secrets, kafka, CaKind::Clients).await? else {
        return Ok(Err(Condition::not_ready(
            "ClientsCaMissing",
            format!(
                "the clients CA of Kafka {} is not in Secrets {} and {} yet",
                kafka.name_any(),
                CaKind::Clients.cert_secret(kafka),
                CaKind::Clients.key_secret(kafka)
            ),
        )));
    };
    if ca.hold_issuing && owned.is_some() {
        // The clients CA's key is being replaced and the brokers do not trust the new one yet.
        return Ok(Ok(None));
    }
    let now = time::OffsetDateTime::now_utc();
    tls_user_secret(user, &kafka.name_any(), owned, &ca.ca, validity, now)
        .map(Ok)
        .map_err(|e| Error::Invalid(e.to_string()))
}

/// Brings credential, Secret, ACLs and quotas in line, in that order. On failure, says which
/// step failed.
async fn converge(
    ctx: &Context,
    admin: &mut KafkaAdmin,
    user: &KafkaUser,
    cluster: &str,
    secrets: &Api<Secret>,
    existing_secret: Option<&Secret>,
    credentials: Credentials,
) -> Result<(), (&'static str, Error)> {
    let username = user.name_any();
    let uid = user.uid().unwrap_or_default();
    let step = |name: &'static str| move |e: Error| (name, e);
    let admin_step = |name: &'static str| move |e: AdminError| (name, Error::Admin(e));

    // SCRAM credential and Secret.
    let creds = admin
        .describe_scram(&username)
        .await
        .map_err(admin_step("the SCRAM credential"))?;
    let owned_secret = existing_secret.filter(|s| owned_by(s, &uid));
    match credentials {
        Credentials::Scram(password, origin) => {
            let has = creds.iter().any(|c| c.mechanism == MECHANISM);
            let recorded = owned_secret
                .and_then(|s| s.annotations().get(PASSWORD_HASH_ANNOTATION))
                .map(String::as_str);
            let action = credential_action(has, recorded, &password);
            if origin == PasswordOrigin::Generated && existing_secret.is_none() {
                // Claim the Secret (create, not apply) before the brokers get a new password: if
                // another writer got there first (an old leader finishing a reconcile), this
                // fails and the next reconcile keeps the password that writer stored.
                let mut claim = user_secret(user, cluster, &password);
                claim.metadata.annotations = None;
                let params = PostParams {
                    field_manager: Some(FIELD_MANAGER.to_string()),
                    ..PostParams::default()
                };
                secrets
                    .create(&params, &claim)
                    .await
                    .map_err(|e| ("the Secret", Error::Kube(e)))?;
            }
            if action != CredentialAction::Keep {
                admin
                    .upsert_scram(&username, MECHANISM, &password)
                    .await
                    .map_err(admin_step("the SCRAM credential"))?;
                let (reason, verb) = match action {
                    CredentialAction::Create => ("CredentialCreated", "created"),
                    _ => ("CredentialUpdated", "updated"),
                };
                let source = match origin {
                    PasswordOrigin::Referenced => "password from the referenced Secret",
                    PasswordOrigin::Kept => "password kept in the user's Secret",
                    PasswordOrigin::Generated => "generated password",
                };
                ctx.event(
                    user,
                    false,
                    reason,
                    format!(
                        "{verb} the {} credential of {username} ({source})",
                        MECHANISM.name()
                    ),
                )
                .await;
            }
            // Other mechanisms are not in the spec: remove them.
            let others: Vec<ScramMechanism> = creds
                .iter()
                .map(|c| c.mechanism)
                .filter(|m| *m != MECHANISM)
                .collect();
            if !others.is_empty() {
                admin
                    .delete_scram(&username, &others)
                    .await
                    .map_err(admin_step("the SCRAM credential"))?;
            }
            super::apply(secrets, &user_secret(user, cluster, &password))
                .await
                .map_err(step("the Secret"))?;
        }
        Credentials::None | Credentials::Tls(_) => {
            if !creds.is_empty() {
                let all: Vec<ScramMechanism> = creds.iter().map(|c| c.mechanism).collect();
                admin
                    .delete_scram(&username, &all)
                    .await
                    .map_err(admin_step("the SCRAM credential"))?;
                ctx.event(
                    user,
                    false,
                    "CredentialDeleted",
                    format!("deleted the SCRAM credentials of {username} (no scram-sha-512 authentication)"),
                )
                .await;
            }
            if let Credentials::Tls(Some(secret)) = credentials {
                super::apply(secrets, &secret)
                    .await
                    .map_err(step("the Secret"))?;
                ctx.event(
                    user,
                    false,
                    "CertificateIssued",
                    format!(
                        "issued a client certificate for {username} (User:CN={username}) signed \
                         by the clients CA, in Secret {username}"
                    ),
                )
                .await;
            } else if matches!(credentials, Credentials::None) && owned_secret.is_some() {
                delete_secret(secrets, &username)
                    .await
                    .map_err(step("the Secret"))?;
            }
        }
    }

    // ACLs.
    let auth = user.spec.authentication.as_ref().map(|a| a.type_);
    let principal = principal(&username, auth);
    let desired = user_acls::desired_bindings(&principal, user.spec.authorization.as_ref());
    let current = admin
        .describe_acls(&principal)
        .await
        .map_err(admin_step("ACLs"))?;
    let diff = user_acls::diff(&desired, &current);
    if !diff.is_empty() {
        let (narrowing, widening) = diff.narrowing_first();
        for phase in [&narrowing, &widening] {
            admin
                .create_acls(&phase.create)
                .await
                .map_err(admin_step("ACLs"))?;
            admin
                .delete_acls(&phase.delete)
                .await
                .map_err(admin_step("ACLs"))?;
        }
        ctx.event(user, false, "AclsUpdated", acl_summary(&diff))
            .await;
    }
    for old in other_principals(&username, auth) {
        let left = admin
            .describe_acls(&old)
            .await
            .map_err(admin_step("ACLs"))?;
        if !left.is_empty() {
            admin
                .delete_all_acls(&old)
                .await
                .map_err(admin_step("ACLs"))?;
            let note = format!(
                "deleted {} ACL(s) of {old}: {username} now authenticates as {principal}",
                left.len()
            );
            ctx.event(user, false, "AclsUpdated", note).await;
        }
    }

    // Quotas.
    let entity = quota_entity(&username, auth);
    for old in other_principals(&username, auth) {
        let old = old.strip_prefix("User:").unwrap_or(&old).to_string();
        let left = admin
            .describe_user_quotas(&old)
            .await
            .map_err(admin_step("quotas"))?;
        if !left.is_empty() {
            let keys: Vec<String> = left.into_keys().collect();
            admin
                .alter_user_quotas(&old, &BTreeMap::new(), &keys)
                .await
                .map_err(admin_step("quotas"))?;
        }
    }
    let desired = desired_quotas(user.spec.quotas.as_ref());
    let current = admin
        .describe_user_quotas(&entity)
        .await
        .map_err(admin_step("quotas"))?;
    let changes = quota_changes(&desired, &current);
    if !changes.is_empty() {
        admin
            .alter_user_quotas(&entity, &changes.set, &changes.remove)
            .await
            .map_err(admin_step("quotas"))?;
        ctx.event(
            user,
            false,
            "QuotasUpdated",
            format!(
                "quotas of user {username}: set {:?}, removed {:?}",
                changes.set, changes.remove
            ),
        )
        .await;
    }
    Ok(())
}

/// `created 2 ACLs (...); deleted 1 ACL (...)`, for the event.
fn acl_summary(diff: &AclDiff) -> String {
    let list = |v: &[crate::kafka_admin::AclBinding]| {
        v.iter()
            .map(user_acls::describe)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    if !diff.create.is_empty() {
        parts.push(format!(
            "created {} ACL(s): {}",
            diff.create.len(),
            list(&diff.create)
        ));
    }
    if !diff.delete.is_empty() {
        parts.push(format!(
            "deleted {} ACL(s): {}",
            diff.delete.len(),
            list(&diff.delete)
        ));
    }
    parts.join("; ")
}

async fn delete_secret(secrets: &Api<Secret>, name: &str) -> Result<(), Error> {
    match secrets.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn unreachable(
    api: &Api<KafkaUser>,
    user: &KafkaUser,
    error: AdminError,
    secret: Option<String>,
) -> Result<Action, Error> {
    let c = Condition::not_ready("BrokersUnreachable", error.to_string());
    write_status(api, user, vec![c], secret).await?;
    Err(Error::Admin(error))
}

async fn cleanup(user: Arc<KafkaUser>, ctx: &Context) -> Result<Action, Error> {
    let username = user.name_any();
    let kafka = match owning_cluster(&ctx.client, user.as_ref()).await {
        Ok(k) => k,
        Err(problem) => {
            // No cluster, nothing to remove from it: let the resource go.
            tracing::info!(user = %username, reason = problem.reason, "cluster gone; releasing KafkaUser");
            return Ok(Action::await_change());
        }
    };
    if kafka.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let mut admin = connect_admin(&kafka, &ctx.client).await?;
    admin.delete_scram(&username, &ScramMechanism::ALL).await?;
    // Both principal forms (SCRAM and TLS): whatever the user was, nothing of it is left.
    for auth in [None, Some(UserAuthenticationType::Tls)] {
        admin.delete_all_acls(&principal(&username, auth)).await?;
        let entity = quota_entity(&username, auth);
        let quotas = admin.describe_user_quotas(&entity).await?;
        let keys: Vec<String> = quotas.into_keys().collect();
        if !keys.is_empty() {
            admin
                .alter_user_quotas(&entity, &BTreeMap::new(), &keys)
                .await?;
        }
    }
    // The Secret would be garbage-collected anyway (owner reference); removing it now means it
    // is gone when the KafkaUser is.
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &user.namespace().unwrap_or_default());
    if let Some(secret) = secrets.get_opt(&username).await? {
        if owned_by(&secret, &user.uid().unwrap_or_default()) {
            delete_secret(&secrets, &username).await?;
        }
    }
    ctx.event(
        user.as_ref(),
        false,
        "UserDeleted",
        format!("removed the credentials, ACLs and quotas of {username} from the brokers"),
    )
    .await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(yaml: &str) -> KafkaUser {
        let mut u = KafkaUser::new("alice", serde_yaml::from_str(yaml).unwrap());
        u.metadata.namespace = Some("ns".into());
        u.metadata.uid = Some("uid-1".into());
        u
    }

    #[test]
    fn credential_is_upserted_only_when_missing_or_changed() {
        let h = password_hash("pw");
        assert_eq!(
            credential_action(false, Some(&h), "pw"),
            CredentialAction::Create
        );
        assert_eq!(
            credential_action(true, Some(&h), "pw"),
            CredentialAction::Keep
        );
        assert_eq!(
            credential_action(true, Some(&h), "pw2"),
            CredentialAction::Update
        );
        assert_eq!(
            credential_action(true, None, "pw"),
            CredentialAction::Update
        );
        assert_eq!(
            password_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn quotas_converge_exactly() {
        let u = user("{quotas: {producerByteRate: 1024, requestPercentage: 50}}");
        let desired = desired_quotas(u.spec.quotas.as_ref());
        assert_eq!(
            desired,
            BTreeMap::from([
                ("producer_byte_rate".into(), 1024.0),
                ("request_percentage".into(), 50.0)
            ])
        );
        let current = BTreeMap::from([
            ("producer_byte_rate".to_string(), 1024.0),
            ("request_percentage".to_string(), 25.0),
            ("consumer_byte_rate".to_string(), 4096.0),
        ]);
        assert_eq!(
            quota_changes(&desired, &current),
            QuotaChanges {
                set: BTreeMap::from([("request_percentage".into(), 50.0)]),
                remove: vec!["consumer_byte_rate".into()],
            }
        );
        assert!(quota_changes(&desired, &desired).is_empty());
        assert_eq!(
            quota_changes(&desired_quotas(None), &current).remove.len(),
            3
        );
    }
}
