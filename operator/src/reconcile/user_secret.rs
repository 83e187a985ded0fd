//! What a KafkaUser's Secret holds and who the user is on the brokers — the pure part of the
//! user reconciler.
//!
//! - SCRAM users: the password (from `secretKeyRef`, kept from the Secret, or generated) and a
//!   ready `sasl.jaas.config`; principal `User:<name>`, quota entity `<name>`.
//! - TLS users: a client certificate the clients CA signed, subject `CN=<name>` only, as PEM
//!   (`user.crt`, `user.key`, `ca.crt`) and PKCS#12 (`user.p12` with `user.password`) like
//!   Strimzi's; principal `User:CN=<name>` (the broker's RFC 2253 form of the subject), quota
//!   entity `CN=<name>`. It is issued again when the clients CA certificate or the validity
//!   changes, or when it enters the renewal window.
//!
//! The Secret is named like the user and controlled by the KafkaUser, so it goes with it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::crd::user::{SecretKeyRef, UserAuthenticationType};
use crate::crd::{Condition, KafkaUser, CLUSTER_LABEL};
use crate::pki::{self, CertAndKey, PkiError, Validity};
use crate::resources::certificates::{issued_from, issued_is_current, ISSUED_FROM_ANNOTATION};

/// Annotation on the user's Secret: hex SHA-256 of the password the brokers were last given.
pub const PASSWORD_HASH_ANNOTATION: &str = "kafka.fjord.dev/password-sha256";
pub const PASSWORD_KEY: &str = "password";
pub const JAAS_KEY: &str = "sasl.jaas.config";
/// Length of generated passwords (alphanumeric).
pub const GENERATED_PASSWORD_LEN: usize = 32;
/// The TLS user's files (Strimzi's names).
pub const USER_CRT: &str = "user.crt";
pub const USER_KEY: &str = "user.key";
pub const USER_P12: &str = "user.p12";
pub const USER_P12_PASSWORD: &str = "user.password";
pub const CA_CRT: &str = "ca.crt";

/// The principal the brokers see for a user authenticated as `auth` (`None`: no
/// authentication in the spec, ACLs still name `User:<name>`).
pub fn principal(name: &str, auth: Option<UserAuthenticationType>) -> String {
    match auth {
        Some(UserAuthenticationType::Tls) => pki::user_principal(name),
        _ => format!("User:{name}"),
    }
}

/// The `user` quota entity for a user authenticated as `auth` (the principal without `User:`).
pub fn quota_entity(name: &str, auth: Option<UserAuthenticationType>) -> String {
    let principal = principal(name, auth);
    principal
        .strip_prefix("User:")
        .unwrap_or(&principal)
        .to_string()
}

/// The principals a user of this name could have had under another authentication type: a
/// user that switches type loses the ACLs and quotas of the old one.
pub fn other_principals(name: &str, auth: Option<UserAuthenticationType>) -> Vec<String> {
    let current = principal(name, auth);
    [None, Some(UserAuthenticationType::Tls)]
        .into_iter()
        .map(|a| principal(name, a))
        .filter(|p| *p != current)
        .collect()
}

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
    let annotations = BTreeMap::from([(
        PASSWORD_HASH_ANNOTATION.to_string(),
        password_hash(password),
    )]);
    Secret {
        metadata: user_meta(user, cluster, annotations),
        data: Some(data),
        type_: Some("Opaque".to_string()),
        ..Secret::default()
    }
}

fn user_meta(user: &KafkaUser, cluster: &str, annotations: BTreeMap<String, String>) -> ObjectMeta {
    let username = user.name_any();
    ObjectMeta {
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
        annotations: Some(annotations),
        owner_references: user.controller_owner_ref(&()).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// The TLS user's Secret to write now, or `None` when `existing` (the user's own Secret) still
/// holds a certificate issued from the current clients CA and validity, outside the renewal
/// window.
pub fn tls_user_secret(
    user: &KafkaUser,
    cluster: &str,
    existing: Option<&Secret>,
    clients_ca: &CertAndKey,
    validity: Validity,
    now: OffsetDateTime,
) -> Result<Option<Secret>, PkiError> {
    let name = user.name_any();
    let input = issued_from(&clients_ca.cert_pem, &name, &[], validity.validity_days);
    let current = existing
        .is_some_and(|s| issued_is_current(s, &input, &[USER_CRT.to_string()], now, validity));
    if current {
        return Ok(None);
    }
    let leaf = pki::issue(clients_ca, &name, &[], pki::Usage::User, now, validity)?;
    let password = pki::store_password();
    let p12 = pki::pkcs12_keystore(&name, &leaf, &clients_ca.cert_pem, &password)?;
    let data = BTreeMap::from([
        (
            CA_CRT.to_string(),
            ByteString(clients_ca.cert_pem.clone().into_bytes()),
        ),
        (USER_CRT.to_string(), ByteString(leaf.cert_pem.into_bytes())),
        (USER_KEY.to_string(), ByteString(leaf.key_pem.into_bytes())),
        (USER_P12.to_string(), ByteString(p12)),
        (
            USER_P12_PASSWORD.to_string(),
            ByteString(password.into_bytes()),
        ),
    ]);
    let annotations = BTreeMap::from([(ISSUED_FROM_ANNOTATION.to_string(), input)]);
    Ok(Some(Secret {
        metadata: user_meta(user, cluster, annotations),
        data: Some(data),
        type_: Some("Opaque".to_string()),
        ..Secret::default()
    }))
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

    #[test]
    fn principals_and_quota_entities_follow_the_authentication_type() {
        let tls = Some(UserAuthenticationType::Tls);
        let scram = Some(UserAuthenticationType::ScramSha512);
        assert_eq!(principal("alice", scram), "User:alice");
        assert_eq!(principal("alice", None), "User:alice");
        assert_eq!(principal("alice", tls), "User:CN=alice");
        assert_eq!(quota_entity("alice", scram), "alice");
        assert_eq!(quota_entity("alice", tls), "CN=alice");
        assert_eq!(other_principals("alice", tls), vec!["User:alice"]);
        assert_eq!(other_principals("alice", scram), vec!["User:CN=alice"]);
    }

    #[test]
    fn tls_users_get_a_certificate_from_the_clients_ca_kept_until_it_must_change() {
        let u = user("{authentication: {type: tls}}");
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let validity = Validity::new(100, 10).unwrap();
        let ca = pki::new_ca("clients-ca c", now, validity).unwrap();
        let s = tls_user_secret(&u, "c", None, &ca, validity, now)
            .unwrap()
            .expect("a first certificate");
        assert!(owned_by(&s, "uid-1"));
        assert_eq!(secret_value(&s, CA_CRT), Some(ca.cert_pem.clone()));
        for key in [USER_CRT, USER_KEY, USER_P12, USER_P12_PASSWORD] {
            assert!(
                s.data.as_ref().unwrap().contains_key(key),
                "{key} in the Secret"
            );
        }
        let crt = secret_value(&s, USER_CRT).unwrap();
        let der = ::pem::parse(&crt).unwrap().contents().to_vec();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(cert.subject().to_string(), "CN=alice");
        let ca_der = ::pem::parse(&ca.cert_pem).unwrap().contents().to_vec();
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert!(cert.verify_signature(Some(ca_cert.public_key())).is_ok());
        // Kept while current; issued again for a new CA or inside the renewal window.
        assert_eq!(
            tls_user_secret(&u, "c", Some(&s), &ca, validity, now).unwrap(),
            None
        );
        let late = now + time::Duration::days(91);
        assert!(tls_user_secret(&u, "c", Some(&s), &ca, validity, late)
            .unwrap()
            .is_some());
        let renewed = pki::renew_ca(&ca, "clients-ca c", now, validity).unwrap();
        assert!(tls_user_secret(&u, "c", Some(&s), &renewed, validity, now)
            .unwrap()
            .is_some());
    }
}
