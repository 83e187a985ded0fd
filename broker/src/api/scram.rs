//! DescribeUserScramCredentials (API 50) and AlterUserScramCredentials (API 51).
//!
//! Upsertions arrive as salt + salted password + iterations; the broker derives StoredKey and
//! ServerKey (`auth::scram`) and stores only those, through `UserScramCredential` metadata
//! records. Validation and error codes follow Kafka's `ScramControlManager` and `ScramImage`.
//! With the authorizer on, describing needs DESCRIBE on the cluster and altering ALTER
//! (CLUSTER_AUTHORIZATION_FAILED).

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::*;

use super::authz::Authz;
use super::services::SecurityServices;
use crate::auth::acl::AclOperation;
use crate::auth::scram::{self, ScramCredential, ScramMechanism};
use crate::metadata::MetadataRecord;
use crate::protocol::context::{s, RequestContext};
use crate::protocol::errors::ErrorCode;

type Failure = (ErrorCode, String);

pub async fn describe(
    services: SecurityServices<'_>,
    ctx: &RequestContext,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    if !Authz::new(services.authorizer, ctx).cluster(AclOperation::Describe) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code())
            .with_error_message(Some(s("Authorization failed.")));
    }
    let img = services.image.snapshot();
    let requested: Vec<String> = match req.users {
        Some(users) if !users.is_empty() => users.iter().map(|u| u.name.to_string()).collect(),
        // Null or empty: every user that has a credential.
        _ => img.scram.keys().cloned().collect(),
    };
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for u in &requested {
        *counts.entry(u.as_str()).or_default() += 1;
    }
    let mut seen = std::collections::HashSet::new();
    let mut results = Vec::new();
    for user in &requested {
        if !seen.insert(user.as_str()) {
            continue;
        }
        let base = DescribeUserScramCredentialsResult::default().with_user(s(user.clone()));
        let outcome: Result<Vec<CredentialInfo>, Failure> = if counts[user.as_str()] > 1 {
            Err((
                ErrorCode::DuplicateResource,
                format!("Cannot describe SCRAM credentials for the same user twice in a single request: {user}"),
            ))
        } else {
            match img.scram.get(user) {
                Some(creds) if !creds.is_empty() => Ok(creds
                    .iter()
                    .map(|(m, c)| {
                        CredentialInfo::default()
                            .with_mechanism(m.code())
                            .with_iterations(c.iterations)
                    })
                    .collect()),
                _ => Err((
                    ErrorCode::ResourceNotFound,
                    format!("Attempt to describe a user credential that does not exist: {user}"),
                )),
            }
        };
        results.push(match outcome {
            Ok(infos) => base.with_credential_infos(infos),
            Err((code, msg)) => base
                .with_error_code(code.code())
                .with_error_message(Some(s(msg))),
        });
    }
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

/// One requested change, validated into the record it will write.
enum Change {
    Delete(ScramMechanism),
    Upsert(ScramMechanism, ScramCredential),
}

fn mechanism(code: i8) -> Result<ScramMechanism, Failure> {
    ScramMechanism::from_code(code).ok_or_else(|| {
        (
            ErrorCode::UnsupportedSaslMechanism,
            format!("Unknown SCRAM mechanism {code}; supported are SCRAM-SHA-256 (1) and SCRAM-SHA-512 (2)"),
        )
    })
}

fn check_name(name: &str) -> Result<(), Failure> {
    if name.is_empty() {
        return Err((
            ErrorCode::UnacceptableCredential,
            "Username must not be empty".into(),
        ));
    }
    Ok(())
}

pub async fn alter(
    services: SecurityServices<'_>,
    ctx: &RequestContext,
    req: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    if !Authz::new(services.authorizer, ctx).cluster(AclOperation::Alter) {
        let results = req
            .deletions
            .iter()
            .map(|d| &d.name)
            .chain(req.upsertions.iter().map(|u| &u.name))
            .map(|name| {
                AlterUserScramCredentialsResult::default()
                    .with_user(name.clone())
                    .with_error_code(ErrorCode::ClusterAuthorizationFailed.code())
                    .with_error_message(Some(s("Authorization failed.")))
            })
            .collect();
        return AlterUserScramCredentialsResponse::default().with_results(results);
    }
    // Users in order of first appearance, each with how often it appears.
    let mut order: Vec<String> = Vec::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for name in req
        .deletions
        .iter()
        .map(|d| &d.name)
        .chain(req.upsertions.iter().map(|u| &u.name))
    {
        let c = counts.entry(name.to_string()).or_default();
        if *c == 0 {
            order.push(name.to_string());
        }
        *c += 1;
    }

    let _guard = services.lock().await;
    let mut outcomes: BTreeMap<String, Result<Change, Failure>> = BTreeMap::new();
    {
        let img = services.image.snapshot();
        for d in &req.deletions {
            let name = d.name.to_string();
            let outcome = check_name(&name).and_then(|()| mechanism(d.mechanism)).and_then(|m| {
                if img.scram_credential(&name, m).is_none() {
                    Err((
                        ErrorCode::ResourceNotFound,
                        format!("Attempt to delete a user credential that does not exist: {name} has no {} credential", m.name()),
                    ))
                } else {
                    Ok(Change::Delete(m))
                }
            });
            outcomes.insert(name, outcome);
        }
    }
    for u in &req.upsertions {
        let name = u.name.to_string();
        let outcome = check_name(&name)
            .and_then(|()| mechanism(u.mechanism))
            .and_then(|m| {
                scram::validate_upsertion(m, u.iterations, &u.salt, &u.salted_password)
                    .map_err(|e| (e.code(), e.to_string()))?;
                Ok(Change::Upsert(
                    m,
                    ScramCredential::derive(m, &u.salt, &u.salted_password, u.iterations),
                ))
            });
        outcomes.insert(name, outcome);
    }
    for (name, n) in &counts {
        if *n > 1 {
            outcomes.insert(
                name.clone(),
                Err((
                    ErrorCode::DuplicateResource,
                    format!(
                        "A user credential cannot be altered twice in the same request: {name}"
                    ),
                )),
            );
        }
    }

    let records: Vec<MetadataRecord> = outcomes
        .iter()
        .filter_map(|(name, o)| match o {
            Ok(Change::Delete(m)) => Some(MetadataRecord::RemoveUserScramCredential {
                name: name.clone(),
                mechanism: *m,
            }),
            Ok(Change::Upsert(m, c)) => Some(MetadataRecord::UserScramCredential {
                name: name.clone(),
                mechanism: *m,
                credential: c.clone(),
            }),
            Err(_) => None,
        })
        .collect();
    let storage_failure = services.commit(&records).await.err().map(|e| {
        tracing::error!(error = %e, "storing SCRAM credentials failed");
        (ErrorCode::UnknownServerError, format!("storage error: {e}"))
    });
    drop(_guard);

    let results = order
        .into_iter()
        .map(|name| {
            let result = AlterUserScramCredentialsResult::default().with_user(s(name.clone()));
            let failure = match outcomes.remove(&name) {
                Some(Ok(_)) => storage_failure.clone(),
                Some(Err(f)) => Some(f),
                None => None,
            };
            match failure {
                None => result,
                Some((code, msg)) => result
                    .with_error_code(code.code())
                    .with_error_message(Some(s(msg))),
            }
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}
