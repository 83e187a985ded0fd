//! DescribeClientQuotas (API 48) and AlterClientQuotas (API 49).
//!
//! Quotas are stored per entity (user, client id, user + client id, or IP; each part named or
//! the default) as `ClientQuota` metadata records. Key/value rules and the strict/non-strict
//! filter semantics live in `metadata::quota`; they follow Kafka's `ClientQuotaControlManager`
//! and `ClientQuotaCache`; `quota` enforces them. With the authorizer on, describing needs
//! DESCRIBE_CONFIGS on the cluster and altering ALTER_CONFIGS (CLUSTER_AUTHORIZATION_FAILED).

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::messages::alter_client_quotas_response;
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::*;

use super::authz::Authz;
use super::services::SecurityServices;
use crate::auth::acl::AclOperation;
use crate::metadata::quota::{QuotaEntity, QuotaError, QuotaFilter};
use crate::metadata::MetadataRecord;
use crate::protocol::context::{s, RequestContext};
use crate::protocol::errors::ErrorCode;

pub async fn describe(
    services: SecurityServices<'_>,
    ctx: &RequestContext,
    req: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    if !Authz::new(services.authorizer, ctx).cluster(AclOperation::DescribeConfigs) {
        return DescribeClientQuotasResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code())
            .with_error_message(Some(s("Authorization failed.")))
            .with_entries(None);
    }
    let components = req
        .components
        .into_iter()
        .map(|c| {
            (
                c.entity_type.to_string(),
                c.match_type,
                c._match.map(|m| m.to_string()),
            )
        })
        .collect();
    let filter = match QuotaFilter::parse(components, req.strict) {
        Ok(f) => f,
        Err(e) => {
            return DescribeClientQuotasResponse::default()
                .with_error_code(e.code().code())
                .with_error_message(Some(s(e.to_string())))
                .with_entries(None);
        }
    };
    let img = services.image.snapshot();
    let entries = img
        .quotas
        .iter()
        .filter(|(e, _)| filter.matches(e))
        .map(|(e, values)| {
            EntryData::default()
                .with_entity(
                    e.parts()
                        .into_iter()
                        .map(|(kind, name)| {
                            EntityData::default()
                                .with_entity_type(s(kind))
                                .with_entity_name(name.map(s))
                        })
                        .collect(),
                )
                .with_values(
                    values
                        .iter()
                        .map(|(k, v)| ValueData::default().with_key(s(k.clone())).with_value(*v))
                        .collect(),
                )
        })
        .collect();
    DescribeClientQuotasResponse::default().with_entries(Some(entries))
}

/// Why one AlterClientQuotas entry is refused; the message goes to the client.
#[derive(Debug, thiserror::Error)]
enum AlterationError {
    #[error(transparent)]
    Quota(#[from] QuotaError),
    #[error("Duplicate quota key {0} in the alteration of one entity")]
    DuplicateKey(String),
    #[error("Ignoring duplicate entity in the same request")]
    DuplicateEntity,
}

impl AlterationError {
    /// Every refused entry is INVALID_REQUEST.
    fn code(&self) -> ErrorCode {
        ErrorCode::InvalidRequest
    }
}

/// An entity and its changes (`None` removes a key).
type Alteration = (QuotaEntity, BTreeMap<String, Option<f64>>);

/// Validates one AlterClientQuotas entry into the entity and its changes.
fn validate_entry(
    entry: &alter_client_quotas_request::EntryData,
) -> Result<Alteration, AlterationError> {
    let entity = QuotaEntity::from_parts(
        entry
            .entity
            .iter()
            .map(|p| {
                (
                    p.entity_type.to_string(),
                    p.entity_name.as_ref().map(|n| n.to_string()),
                )
            })
            .collect(),
    )?;
    let mut changes = BTreeMap::new();
    for op in &entry.ops {
        let key = op.key.to_string();
        if changes.contains_key(&key) {
            return Err(AlterationError::DuplicateKey(key));
        }
        let value = if op.remove {
            None
        } else {
            entity.validate_value(&key, op.value)?;
            Some(op.value)
        };
        changes.insert(key, value);
    }
    Ok((entity, changes))
}

pub async fn alter(
    services: SecurityServices<'_>,
    ctx: &RequestContext,
    req: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    if !Authz::new(services.authorizer, ctx).cluster(AclOperation::AlterConfigs) {
        let entries = req
            .entries
            .iter()
            .map(|e| {
                alter_client_quotas_response::EntryData::default()
                    .with_error_code(ErrorCode::ClusterAuthorizationFailed.code())
                    .with_error_message(Some(s("Authorization failed.")))
                    .with_entity(
                        e.entity
                            .iter()
                            .map(|p| {
                                alter_client_quotas_response::EntityData::default()
                                    .with_entity_type(p.entity_type.clone())
                                    .with_entity_name(p.entity_name.clone())
                            })
                            .collect(),
                    )
            })
            .collect();
        return AlterClientQuotasResponse::default().with_entries(entries);
    }
    let mut outcomes: Vec<Result<Alteration, AlterationError>> =
        req.entries.iter().map(validate_entry).collect();
    // The same entity twice in one request is ambiguous: refuse the repeats.
    let mut seen = HashSet::new();
    for o in outcomes.iter_mut() {
        if let Ok((entity, _)) = o {
            if !seen.insert(entity.clone()) {
                *o = Err(AlterationError::DuplicateEntity);
            }
        }
    }

    let guard = services.lock().await;
    let records: Vec<MetadataRecord> = if req.validate_only {
        Vec::new()
    } else {
        let img = services.image.snapshot();
        outcomes
            .iter()
            .flatten()
            .filter_map(|(entity, changes)| {
                // Only what actually changes: removing an unset key is a no-op.
                let current = img.client_quota(entity);
                let changes: BTreeMap<String, Option<f64>> = changes
                    .iter()
                    .filter(|(k, v)| current.and_then(|c| c.get(*k)).copied() != **v)
                    .map(|(k, v)| (k.clone(), *v))
                    .collect();
                (!changes.is_empty()).then(|| MetadataRecord::ClientQuota {
                    entity: entity.clone(),
                    changes,
                })
            })
            .collect()
    };
    let stored = services.commit(&records).await.map_err(|e| {
        tracing::error!(error = %e, "storing client quotas failed");
        format!("storage error: {e}")
    });
    drop(guard);

    let entries = req
        .entries
        .into_iter()
        .zip(outcomes)
        .map(|(entry, outcome)| {
            let base = alter_client_quotas_response::EntryData::default().with_entity(
                entry
                    .entity
                    .into_iter()
                    .map(|p| {
                        alter_client_quotas_response::EntityData::default()
                            .with_entity_type(p.entity_type)
                            .with_entity_name(p.entity_name)
                    })
                    .collect(),
            );
            let failure = match outcome {
                Err(e) => Some((e.code(), e.to_string())),
                Ok(_) => stored
                    .clone()
                    .err()
                    .map(|m| (ErrorCode::UnknownServerError, m)),
            };
            match failure {
                None => base,
                Some((code, msg)) => base
                    .with_error_code(code.code())
                    .with_error_message(Some(s(msg))),
            }
        })
        .collect();
    AlterClientQuotasResponse::default().with_entries(entries)
}
