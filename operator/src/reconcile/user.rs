//! KafkaUser reconciler: makes one user's SCRAM credential, ACLs and quotas on the brokers match
//! the resource, and keeps its credentials in a Secret named like the user.
//!
//! - `spec.authentication` (scram-sha-512): the password comes from
//!   `password.valueFrom.secretKeyRef` or is generated once and then kept (read back from the
//!   user's Secret). The brokers get only a salted password (PBKDF2, random salt, 4096
//!   iterations) through AlterUserScramCredentials, and only when the credential is missing or
//!   the password changed: the Secret carries a SHA-256 of the password the brokers were last
//!   given. The Secret (`password`, `sasl.jaas.config`) is owned by the KafkaUser, so it is
//!   garbage-collected with it. Without authentication, credentials and Secret are removed.
//! - `spec.authorization`: the principal's ACLs are made exactly the spec's (create missing,
//!   delete extra); without it, the principal has no ACLs.
//! - `spec.quotas`: the quotas of entity `user=<name>` are made exactly the spec's.
//! - Deletion (finalizer): credentials, ACLs and quotas are removed from the brokers.
//!
//! A password that cannot be read (missing Secret or key) makes the user NotReady and changes
//! nothing on the brokers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::{Resource, ResourceExt};
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};

use crate::crd::condition::{merge_conditions, now_rfc3339};
use crate::crd::user::{SecretKeyRef, UserQuotas};
use crate::crd::{Condition, KafkaUser, KafkaUserStatus, CLUSTER_LABEL};
use crate::kafka_admin::{AdminError, KafkaAdmin, ScramMechanism};

use super::user_acls::{self, AclDiff};
use super::{
    connect_admin, object_key, owning_cluster, patch_status, Context, Error, FIELD_MANAGER,
    RECHECK, RESYNC,
};

pub const FINALIZER: &str = "kafka.fjord.dev/user";
/// Annotation on the user's Secret: hex SHA-256 of the password the brokers were last given.
pub const PASSWORD_HASH_ANNOTATION: &str = "kafka.fjord.dev/password-sha256";
pub const PASSWORD_KEY: &str = "password";
pub const JAAS_KEY: &str = "sasl.jaas.config";
/// The mechanism `scram-sha-512` means.
pub const MECHANISM: ScramMechanism = ScramMechanism::Sha512;
/// Length of generated passwords (alphanumeric).
pub const GENERATED_PASSWORD_LEN: usize = 32;
/// Users whose password lives in a Secret of their own are looked at this often: the controller
/// is not told when that Secret changes.
pub const PASSWORD_REF_RESYNC: Duration = Duration::from_secs(60);

/// Kafka client-quota keys of the three `spec.quotas` fields.
pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
pub const REQUEST_PERCENTAGE: &str = "request_percentage";

// ---------------------------------------------------------------------------------------------
// Pure parts

/// The `sasl.jaas.config` line a Java client uses to log in as this user.
pub fn jaas_config(username: &str, password: &str) -> String {
    format!(
        "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{}\" password=\"{}\";",
        jaas_escape(username),
        jaas_escape(password)
    )
}

/// JAAS option values are double-quoted strings with backslash escapes.
fn jaas_escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A fresh random password: 32 alphanumerics (~190 bits).
pub fn generate_password() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), GENERATED_PASSWORD_LEN)
}

/// Hex SHA-256 of a password, as kept in [`PASSWORD_HASH_ANNOTATION`].
pub fn password_hash(password: &str) -> String {
    Sha256::digest(password.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// True when `secret` is controlled by the KafkaUser with `uid`.
pub fn owned_by(secret: &Secret, uid: &str) -> bool {
    secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.kind == "KafkaUser")
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
}

/// The password `secretKeyRef` points at, or why it cannot be used (a NotReady condition).
pub fn password_from_ref(
    reference: &SecretKeyRef,
    secret: Option<&Secret>,
) -> Result<String, Condition> {
    let (name, key) = (&reference.name, &reference.key);
    let Some(secret) = secret else {
        return Err(Condition::not_ready(
            "PasswordSecretNotFound",
            format!(
                "spec.authentication.password.valueFrom.secretKeyRef names Secret {name}, which \
                 does not exist in this namespace; nothing was changed on the brokers"
            ),
        ));
    };
    let Some(raw) = secret.data.as_ref().and_then(|d| d.get(key)) else {
        return Err(Condition::not_ready(
            "PasswordKeyNotFound",
            format!(
                "Secret {name} has no key {key} (named by \
                 spec.authentication.password.valueFrom.secretKeyRef); nothing was changed on the \
                 brokers"
            ),
        ));
    };
    match String::from_utf8(raw.0.clone()) {
        Ok(p) if !p.is_empty() => Ok(p),
        Ok(_) => Err(Condition::not_ready(
            "InvalidPassword",
            format!("key {key} of Secret {name} is empty; nothing was changed on the brokers"),
        )),
        Err(_) => Err(Condition::not_ready(
            "InvalidPassword",
            format!(
                "key {key} of Secret {name} is not UTF-8 text; nothing was changed on the brokers"
            ),
        )),
    }
}

/// Where this reconcile's password came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordOrigin {
    /// `spec.authentication.password.valueFrom.secretKeyRef`.
    Referenced,
    /// Generated earlier, read back from the user's Secret.
    Kept,
    /// Generated now (no usable Secret yet).
    Generated,
}

/// Generated-password decision: keep the password in the user's own Secret (one this KafkaUser
/// controls, with a non-empty `password`), else generate a new one.
pub fn kept_or_generated(
    user_secret: Option<&Secret>,
    uid: &str,
    generate: impl FnOnce() -> String,
) -> (String, PasswordOrigin) {
    match user_secret
        .filter(|s| owned_by(s, uid))
        .and_then(|s| secret_value(s, PASSWORD_KEY))
        .filter(|p| !p.is_empty())
    {
        Some(p) => (p, PasswordOrigin::Kept),
        None => (generate(), PasswordOrigin::Generated),
    }
}

/// A Secret named like the user that this KafkaUser does not control is never overwritten.
pub fn secret_conflict(
    user_secret: Option<&Secret>,
    username: &str,
    uid: &str,
) -> Option<Condition> {
    let secret = user_secret?;
    (!owned_by(secret, uid)).then(|| {
        Condition::not_ready(
            "SecretConflict",
            format!(
                "Secret {username} exists and does not belong to this KafkaUser; the operator \
                 keeps the user's credentials in a Secret named like the user and will not \
                 overwrite another one (delete or rename it)"
            ),
        )
    })
}

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

/// The user's Secret, owned (controller reference) by the KafkaUser.
pub fn user_secret(user: &KafkaUser, cluster: &str, password: &str) -> Secret {
    let username = user.name_any();
    let data = BTreeMap::from([
        (
            PASSWORD_KEY.to_string(),
            ByteString(password.as_bytes().to_vec()),
        ),
        (
            JAAS_KEY.to_string(),
            ByteString(jaas_config(&username, password).into_bytes()),
        ),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(username.clone()),
            namespace: user.namespace(),
            labels: Some(BTreeMap::from([
                (CLUSTER_LABEL.to_string(), cluster.to_string()),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "fjord-operator".to_string(),
                ),
                ("app.kubernetes.io/instance".to_string(), username),
            ])),
            annotations: Some(BTreeMap::from([(
                PASSWORD_HASH_ANNOTATION.to_string(),
                password_hash(password),
            )])),
            owner_references: user.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        data: Some(data),
        type_: Some("Opaque".to_string()),
        ..Secret::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Reconciler

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
    let password = match &user.spec.authentication {
        None => None,
        Some(auth) => {
            if let Some(c) = secret_conflict(existing_secret.as_ref(), &username, &uid) {
                not_ready(ctx, &api, &user, c, None).await?;
                return Ok(Action::requeue(RECHECK));
            }
            match auth.password.as_ref().map(|p| &p.value_from.secret_key_ref) {
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
            }
        }
    };

    let mut admin = match connect_admin(&kafka, &ctx.client).await {
        Ok(a) => a,
        Err(e) => return unreachable(&api, &user, e, previous_secret).await,
    };
    let referenced = matches!(password, Some((_, PasswordOrigin::Referenced)));
    let secret_name = password.as_ref().map(|_| username.clone());
    let converged = converge(
        ctx,
        &mut admin,
        &user,
        &cluster,
        &secrets,
        existing_secret.as_ref(),
        password,
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

/// Brings credential, Secret, ACLs and quotas in line, in that order. On failure, says which
/// step failed.
async fn converge(
    ctx: &Context,
    admin: &mut KafkaAdmin,
    user: &KafkaUser,
    cluster: &str,
    secrets: &Api<Secret>,
    existing_secret: Option<&Secret>,
    password: Option<(String, PasswordOrigin)>,
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
    match password {
        Some((password, origin)) => {
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
        None => {
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
                    format!("deleted the SCRAM credentials of {username} (no spec.authentication)"),
                )
                .await;
            }
            if owned_secret.is_some() {
                delete_secret(secrets, &username)
                    .await
                    .map_err(step("the Secret"))?;
            }
        }
    }

    // ACLs.
    let principal = user_acls::principal(&username);
    let desired = user_acls::desired_bindings(&username, user.spec.authorization.as_ref());
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

    // Quotas.
    let desired = desired_quotas(user.spec.quotas.as_ref());
    let current = admin
        .describe_user_quotas(&username)
        .await
        .map_err(admin_step("quotas"))?;
    let changes = quota_changes(&desired, &current);
    if !changes.is_empty() {
        admin
            .alter_user_quotas(&username, &changes.set, &changes.remove)
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
    admin
        .delete_all_acls(&user_acls::principal(&username))
        .await?;
    let quotas = admin.describe_user_quotas(&username).await?;
    let keys: Vec<String> = quotas.into_keys().collect();
    admin
        .alter_user_quotas(&username, &BTreeMap::new(), &keys)
        .await?;
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
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn secret(
        owner_uid: Option<&str>,
        data: &[(&str, &[u8])],
        annotations: &[(&str, &str)],
    ) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("alice".into()),
                owner_references: owner_uid.map(|uid| {
                    vec![OwnerReference {
                        api_version: "kafka.fjord.dev/v1".into(),
                        kind: "KafkaUser".into(),
                        name: "alice".into(),
                        uid: uid.into(),
                        controller: Some(true),
                        block_owner_deletion: Some(true),
                    }]
                }),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    fn user(yaml: &str) -> KafkaUser {
        let mut u = KafkaUser::new("alice", serde_yaml::from_str(yaml).unwrap());
        u.metadata.namespace = Some("ns".into());
        u.metadata.uid = Some("uid-1".into());
        u
    }

    #[test]
    fn jaas_line_is_what_java_clients_expect() {
        assert_eq!(
            jaas_config("alice", "s3cret"),
            "org.apache.kafka.common.security.scram.ScramLoginModule required \
             username=\"alice\" password=\"s3cret\";"
        );
        // Quotes and backslashes in a chosen password are escaped for the JAAS parser.
        assert_eq!(
            jaas_config("a", r#"p"w\x"#),
            r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="a" password="p\"w\\x";"#
        );
    }

    #[test]
    fn generated_passwords_are_32_random_alphanumerics() {
        let (a, b) = (generate_password(), generate_password());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn password_is_kept_only_from_the_users_own_secret() {
        let own = secret(Some("uid-1"), &[("password", b"kept")], &[]);
        assert_eq!(
            kept_or_generated(Some(&own), "uid-1", || "new".into()),
            ("kept".into(), PasswordOrigin::Kept)
        );
        // A Secret of an earlier KafkaUser with the same name, or nobody's, is not reused.
        let stale = secret(Some("uid-0"), &[("password", b"old")], &[]);
        assert_eq!(
            kept_or_generated(Some(&stale), "uid-1", || "new".into()),
            ("new".into(), PasswordOrigin::Generated)
        );
        let empty = secret(Some("uid-1"), &[("password", b"")], &[]);
        assert_eq!(
            kept_or_generated(Some(&empty), "uid-1", || "new".into()).1,
            PasswordOrigin::Generated
        );
        assert_eq!(
            kept_or_generated(None, "uid-1", || "new".into()).1,
            PasswordOrigin::Generated
        );
    }

    #[test]
    fn foreign_secret_with_the_users_name_is_a_conflict() {
        let foreign = secret(None, &[("password", b"x")], &[]);
        let c = secret_conflict(Some(&foreign), "alice", "uid-1").unwrap();
        assert_eq!(c.reason.as_deref(), Some("SecretConflict"));
        let own = secret(Some("uid-1"), &[], &[]);
        assert!(secret_conflict(Some(&own), "alice", "uid-1").is_none());
        assert!(secret_conflict(None, "alice", "uid-1").is_none());
    }

    #[test]
    fn referenced_password_problems_are_readable() {
        let r = SecretKeyRef {
            name: "alice-pw".into(),
            key: "pw".into(),
        };
        let missing = password_from_ref(&r, None).unwrap_err();
        assert_eq!(missing.type_, "NotReady");
        assert_eq!(missing.reason.as_deref(), Some("PasswordSecretNotFound"));
        assert!(missing.message.unwrap().contains("Secret alice-pw"));
        let no_key = secret(None, &[("other", b"x")], &[]);
        let e = password_from_ref(&r, Some(&no_key)).unwrap_err();
        assert_eq!(e.reason.as_deref(), Some("PasswordKeyNotFound"));
        assert!(e.message.unwrap().contains("no key pw"));
        let bad = secret(None, &[("pw", &[0xff, 0xfe])], &[]);
        assert_eq!(
            password_from_ref(&r, Some(&bad))
                .unwrap_err()
                .reason
                .as_deref(),
            Some("InvalidPassword")
        );
        let good = secret(None, &[("pw", b"hunter22")], &[]);
        assert_eq!(password_from_ref(&r, Some(&good)).unwrap(), "hunter22");
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

    #[test]
    fn secret_is_owned_labelled_and_holds_password_and_jaas() {
        let u = user("{authentication: {type: scram-sha-512}}");
        let s = user_secret(&u, "my-cluster", "pw");
        assert_eq!(s.metadata.name.as_deref(), Some("alice"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(
            s.labels().get(CLUSTER_LABEL).map(String::as_str),
            Some("my-cluster")
        );
        assert_eq!(secret_value(&s, PASSWORD_KEY).as_deref(), Some("pw"));
        assert_eq!(secret_value(&s, JAAS_KEY), Some(jaas_config("alice", "pw")));
        assert_eq!(
            s.annotations().get(PASSWORD_HASH_ANNOTATION),
            Some(&password_hash("pw"))
        );
        assert!(owned_by(&s, "uid-1"));
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.kind, "KafkaUser");
    }
}
