//! User calls: SCRAM credentials, ACLs and client quotas.
//!
//! SCRAM passwords never leave the operator: the salted password (`Hi(password, salt, i)` of
//! RFC 5802, i.e. PBKDF2-HMAC) is computed here with a fresh random salt and only that is sent;
//! the brokers derive and keep StoredKey/ServerKey.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterUserScramCredentialsRequest, CreateAclsRequest,
    DeleteAclsRequest, DescribeAclsRequest, DescribeClientQuotasRequest,
    DescribeUserScramCredentialsRequest,
};
use rand::Rng;
use sha2::{Sha256, Sha512};

use super::{check, s, AdminError, KafkaAdmin};

/// RESOURCE_NOT_FOUND: the user has no (such) SCRAM credential.
const RESOURCE_NOT_FOUND: i16 = 91;
/// Iterations of every credential the operator writes (Kafka's minimum, and its CLI default).
pub const SCRAM_ITERATIONS: u32 = 4096;
/// Salt length in bytes (Kafka's own `ScramFormatter` uses a random salt of this order).
const SALT_LEN: usize = 32;

/// Wire codes of Kafka's ACL enums (`org.apache.kafka.common.acl`/`resource`).
pub mod acl_codes {
    /// Filter-only wildcard for resource type, pattern type, operation and permission.
    pub const ANY: i8 = 1;
    pub const RESOURCE_TOPIC: i8 = 2;
    pub const RESOURCE_GROUP: i8 = 3;
    pub const RESOURCE_CLUSTER: i8 = 4;
    pub const RESOURCE_TRANSACTIONAL_ID: i8 = 5;
    pub const PATTERN_LITERAL: i8 = 3;
    pub const PATTERN_PREFIXED: i8 = 4;
    pub const OP_ALL: i8 = 2;
    pub const OP_READ: i8 = 3;
    pub const OP_WRITE: i8 = 4;
    pub const OP_CREATE: i8 = 5;
    pub const OP_DELETE: i8 = 6;
    pub const OP_ALTER: i8 = 7;
    pub const OP_DESCRIBE: i8 = 8;
    pub const OP_CLUSTER_ACTION: i8 = 9;
    pub const OP_DESCRIBE_CONFIGS: i8 = 10;
    pub const OP_ALTER_CONFIGS: i8 = 11;
    pub const OP_IDEMPOTENT_WRITE: i8 = 12;
    pub const DENY: i8 = 2;
    pub const ALLOW: i8 = 3;
    /// The only name a CLUSTER resource has.
    pub const CLUSTER_NAME: &str = "kafka-cluster";
}

/// A SCRAM mechanism the brokers store credentials for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// Kafka's wire code (`ScramMechanism.type`).
    pub fn code(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_code(code: i8) -> Option<ScramMechanism> {
        match code {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    /// The SASL mechanism name, e.g. `SCRAM-SHA-512`.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// `SaltedPassword = Hi(password, salt, i)` (RFC 5802): PBKDF2 with the mechanism's HMAC and
    /// one output block of the hash's length.
    pub fn salted_password(self, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => {
                let mut out = vec![0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out);
                out
            }
            ScramMechanism::Sha512 => {
                let mut out = vec![0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, iterations, &mut out);
                out
            }
        }
    }
}

/// A credential as DescribeUserScramCredentials reports it (no key material).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScramCredentialInfo {
    pub mechanism: ScramMechanism,
    pub iterations: i32,
}

/// One ACL binding, in Kafka's terms (wire codes, see [`acl_codes`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclBinding {
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission_type: i8,
}

/// The client-quota entity of one user.
fn user_entity(user: &str) -> Vec<EntityData> {
    vec![EntityData::default()
        .with_entity_type(s("user"))
        .with_entity_name(Some(s(user)))]
}

impl KafkaAdmin {
    /// The user's SCRAM credentials; empty when it has none.
    pub async fn describe_scram(
        &mut self,
        user: &str,
    ) -> Result<Vec<ScramCredentialInfo>, AdminError> {
        let request = DescribeUserScramCredentialsRequest::default()
            .with_users(Some(vec![UserName::default().with_name(s(user))]));
        let response = self.call(&request, 0).await?;
        check(response.error_code, response.error_message.as_deref())?;
        let mut out = Vec::new();
        for r in response.results {
            if r.error_code == RESOURCE_NOT_FOUND {
                continue;
            }
            check(r.error_code, r.error_message.as_deref())?;
            for info in r.credential_infos {
                if let Some(mechanism) = ScramMechanism::from_code(info.mechanism) {
                    out.push(ScramCredentialInfo {
                        mechanism,
                        iterations: info.iterations,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Creates or replaces the user's credential for `mechanism`, sending only a salted password
    /// computed here with a fresh random salt.
    pub async fn upsert_scram(
        &mut self,
        user: &str,
        mechanism: ScramMechanism,
        password: &str,
    ) -> Result<(), AdminError> {
        let mut salt = [0u8; SALT_LEN];
        rand::rng().fill(&mut salt[..]);
        let salted = mechanism.salted_password(password, &salt, SCRAM_ITERATIONS);
        let request = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
            ScramCredentialUpsertion::default()
                .with_name(s(user))
                .with_mechanism(mechanism.code())
                .with_iterations(SCRAM_ITERATIONS as i32)
                .with_salt(salt.to_vec().into())
                .with_salted_password(salted.into()),
        ]);
        let response = self.call(&request, 0).await?;
        for r in response.results {
            check(r.error_code, r.error_message.as_deref())?;
        }
        Ok(())
    }

    /// Deletes the user's credentials for `mechanisms`; one that does not exist is not an error.
    /// Returns whether anything was deleted.
    pub async fn delete_scram(
        &mut self,
        user: &str,
        mechanisms: &[ScramMechanism],
    ) -> Result<bool, AdminError> {
        let mut deleted = false;
        // One request per mechanism: Kafka refuses the same user twice in one request.
        for m in mechanisms {
            let request = AlterUserScramCredentialsRequest::default().with_deletions(vec![
                ScramCredentialDeletion::default()
                    .with_name(s(user))
                    .with_mechanism(m.code()),
            ]);
            let response = self.call(&request, 0).await?;
            for r in response.results {
                if r.error_code == RESOURCE_NOT_FOUND {
                    continue;
                }
                check(r.error_code, r.error_message.as_deref())?;
                deleted = true;
            }
        }
        Ok(deleted)
    }

    /// Every ACL binding of `principal` (e.g. `User:alice`), sorted.
    pub async fn describe_acls(&mut self, principal: &str) -> Result<Vec<AclBinding>, AdminError> {
        use acl_codes::ANY;
        let request = DescribeAclsRequest::default()
            .with_resource_type_filter(ANY)
            .with_resource_name_filter(None)
            .with_pattern_type_filter(ANY)
            .with_principal_filter(Some(s(principal)))
            .with_host_filter(None)
            .with_operation(ANY)
            .with_permission_type(ANY);
        let response = self.call(&request, 3).await?;
        check(response.error_code, response.error_message.as_deref())?;
        let mut out: Vec<AclBinding> = response
            .resources
            .into_iter()
            .flat_map(|r| {
                let (rt, name, pt) = (r.resource_type, r.resource_name.to_string(), r.pattern_type);
                r.acls.into_iter().map(move |a| AclBinding {
                    resource_type: rt,
                    resource_name: name.clone(),
                    pattern_type: pt,
                    principal: a.principal.to_string(),
                    host: a.host.to_string(),
                    operation: a.operation,
                    permission_type: a.permission_type,
                })
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Creates the bindings (one request); creating an existing binding is a no-op in Kafka.
    pub async fn create_acls(&mut self, bindings: &[AclBinding]) -> Result<(), AdminError> {
        if bindings.is_empty() {
            return Ok(());
        }
        let creations = bindings
            .iter()
            .map(|b| {
                AclCreation::default()
                    .with_resource_type(b.resource_type)
                    .with_resource_name(s(&b.resource_name))
                    .with_resource_pattern_type(b.pattern_type)
                    .with_principal(s(&b.principal))
                    .with_host(s(&b.host))
                    .with_operation(b.operation)
                    .with_permission_type(b.permission_type)
            })
            .collect();
        let response = self
            .call(&CreateAclsRequest::default().with_creations(creations), 3)
            .await?;
        for r in response.results {
            check(r.error_code, r.error_message.as_deref())?;
        }
        Ok(())
    }

    /// Deletes exactly these bindings: every filter names all seven fields, so it matches
    /// one binding and nothing else.
    pub async fn delete_acls(&mut self, bindings: &[AclBinding]) -> Result<(), AdminError> {
        let filters = bindings
            .iter()
            .map(|b| {
                DeleteAclsFilter::default()
                    .with_resource_type_filter(b.resource_type)
                    .with_resource_name_filter(Some(s(&b.resource_name)))
                    .with_pattern_type_filter(b.pattern_type)
                    .with_principal_filter(Some(s(&b.principal)))
                    .with_host_filter(Some(s(&b.host)))
                    .with_operation(b.operation)
                    .with_permission_type(b.permission_type)
            })
            .collect();
        self.send_delete_acls(filters).await
    }

    /// Deletes every ACL binding of `principal`.
    pub async fn delete_all_acls(&mut self, principal: &str) -> Result<(), AdminError> {
        use acl_codes::ANY;
        let filter = DeleteAclsFilter::default()
            .with_resource_type_filter(ANY)
            .with_resource_name_filter(None)
            .with_pattern_type_filter(ANY)
            .with_principal_filter(Some(s(principal)))
            .with_host_filter(None)
            .with_operation(ANY)
            .with_permission_type(ANY);
        self.send_delete_acls(vec![filter]).await
    }

    async fn send_delete_acls(&mut self, filters: Vec<DeleteAclsFilter>) -> Result<(), AdminError> {
        if filters.is_empty() {
            return Ok(());
        }
        let response = self
            .call(&DeleteAclsRequest::default().with_filters(filters), 3)
            .await?;
        for r in response.filter_results {
            check(r.error_code, r.error_message.as_deref())?;
            for m in r.matching_acls {
                check(m.error_code, m.error_message.as_deref())?;
            }
        }
        Ok(())
    }

    /// The quotas set for exactly the entity `user=<user>` (not defaults, not user+client-id).
    pub async fn describe_user_quotas(
        &mut self,
        user: &str,
    ) -> Result<BTreeMap<String, f64>, AdminError> {
        /// DescribeClientQuotas match type EXACT.
        const MATCH_EXACT: i8 = 0;
        let request = DescribeClientQuotasRequest::default()
            .with_components(vec![ComponentData::default()
                .with_entity_type(s("user"))
                .with_match_type(MATCH_EXACT)
                .with_match(Some(s(user)))])
            .with_strict(true);
        let response = self.call(&request, 1).await?;
        check(response.error_code, response.error_message.as_deref())?;
        let mut out = BTreeMap::new();
        for entry in response.entries.unwrap_or_default() {
            let is_user = entry.entity.len() == 1
                && entry.entity[0].entity_type.as_str() == "user"
                && entry.entity[0].entity_name.as_deref() == Some(user);
            if is_user {
                for v in entry.values {
                    out.insert(v.key.to_string(), v.value);
                }
            }
        }
        Ok(out)
    }

    /// Sets `set` and removes `remove` quota keys of the entity `user=<user>` in one request.
    pub async fn alter_user_quotas(
        &mut self,
        user: &str,
        set: &BTreeMap<String, f64>,
        remove: &[String],
    ) -> Result<(), AdminError> {
        if set.is_empty() && remove.is_empty() {
            return Ok(());
        }
        let mut ops: Vec<OpData> = set
            .iter()
            .map(|(k, v)| OpData::default().with_key(s(k)).with_value(*v))
            .collect();
        ops.extend(
            remove
                .iter()
                .map(|k| OpData::default().with_key(s(k)).with_remove(true)),
        );
        let request = AlterClientQuotasRequest::default().with_entries(vec![EntryData::default()
            .with_entity(user_entity(user))
            .with_ops(ops)]);
        let response = self.call(&request, 1).await?;
        for e in response.entries {
            check(e.error_code, e.error_message.as_deref())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The salt and password of RFC 7677's SCRAM-SHA-256 example; expected values computed
    /// independently with Python's `hashlib.pbkdf2_hmac(hash, b"pencil", salt, 4096)`.
    #[test]
    fn salted_password_is_pbkdf2() {
        use base64::Engine;
        let salt = base64::engine::general_purpose::STANDARD
            .decode("W22ZaJ0SNY7soEsUEjb6gQ==")
            .unwrap();
        let hex = |b: Vec<u8>| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(ScramMechanism::Sha256.salted_password("pencil", &salt, 4096)),
            "c4a49510323ab4f952cac1fa99441939e78ea74d6be81ddf7096e87513dc615d"
        );
        assert_eq!(
            hex(ScramMechanism::Sha512.salted_password("pencil", &salt, 4096)),
            "f16efe1be67f1d09502ebd5ed9262fddffba5a377ab4f0b687e5ed5ba0f50686\
             b8a4ae166476da8ab3b951d2fa9238b63998f45461bc33a464814949cec9631d"
        );
    }

    #[test]
    fn mechanism_codes_round_trip() {
        for m in ScramMechanism::ALL {
            assert_eq!(ScramMechanism::from_code(m.code()), Some(m));
        }
        assert_eq!(ScramMechanism::Sha512.name(), "SCRAM-SHA-512");
        assert_eq!(ScramMechanism::from_code(0), None);
    }
}
