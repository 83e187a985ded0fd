//! CreateAcls (API 30), DescribeAcls (API 29) and DeleteAcls (API 31).
//!
//! Bindings are stored as `AccessControlEntry` metadata records with a random id; creating a
//! binding that already exists succeeds without a new record. Validation, filter semantics and
//! error codes follow Kafka's `AclApis` and `AclControlManager` (see `auth::acl`).
//! With the authorizer on, DescribeAcls needs DESCRIBE on the cluster and CreateAcls / DeleteAcls
//! ALTER (CLUSTER_AUTHORIZATION_FAILED). With it off they still work (Kafka would answer
//! SECURITY_DISABLED), so ACLs can be prepared before authorization is switched on.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::*;
use uuid::Uuid;

use super::authz::Authz;
use super::services::SecurityServices;
use crate::auth::acl::{
    AclBinding, AclError, AclFilter, AclOperation, PatternType, RawAcl, ResourceType,
};
use crate::metadata::MetadataRecord;
use crate::protocol::context::{s, RequestContext};
use crate::protocol::errors::ErrorCode;

fn storage_message(e: &std::io::Error) -> String {
    tracing::error!(error = %e, "storing ACL changes failed");
    format!("storage error: {e}")
}

pub async fn create(
    services: SecurityServices<'_>,
    ctx: &RequestContext,
    req: CreateAclsRequest,
) -> CreateAclsResponse {
    if !Authz::new(services.authorizer, ctx).cluster(AclOperation::Alter) {
        let results = req
            .creations
            .iter()
            .map(|_| {
                AclCreationResult::default()
                    .with_error_code(ErrorCode::ClusterAuthorizationFailed.code())
                    .with_error_message(Some(s("Authorization failed.")))
            })
            .collect();
        return CreateAclsResponse::default().with_results(results);
    }
    let parsed: Vec<Result<AclBinding, AclError>> = req
        .creations
        .into_iter()
        .map(|c| {
            AclBinding::from_raw(RawAcl {
                resource_type: c.resource_type,
                resource_name: Some(c.resource_name.to_string()),
                pattern_type: c.resource_pattern_type,
                principal: Some(c.principal.to_string()),
                host: Some(c.host.to_string()),
                operation: c.operation,
                permission: c.permission_type,
            })
        })
        .collect();

    let guard = services.lock().await;
    let mut records = Vec::new();
    {
        let img = services.image.snapshot();
        // One pass over the stored bindings, so a large request stays linear.
        let mut known: HashSet<&AclBinding> = img.acls().collect();
        for acl in parsed.iter().flatten() {
            if known.insert(acl) {
                records.push(MetadataRecord::AccessControlEntry {
                    id: Uuid::new_v4(),
                    acl: acl.clone(),
                });
            }
        }
    }
    let stored = services
        .commit(&records)
        .await
        .map_err(|e| storage_message(&e));
    drop(guard);
    if !records.is_empty() && stored.is_ok() {
        tracing::info!(count = records.len(), "created ACLs");
    }

    let results = parsed
        .into_iter()
        .map(|p| {
            let failure = match p {
                Err(e) => Some((e.code(), e.to_string())),
                Ok(_) => stored
                    .clone()
                    .err()
                    .map(|msg| (ErrorCode::UnknownServerError, msg)),
            };
            match failure {
                None => AclCreationResult::default(),
                Some((code, msg)) => AclCreationResult::default()
                    .with_error_code(code.code())
                    .with_error_message(Some(s(msg))),
            }
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

/// Bindings grouped by resource pattern, in a stable order, as DescribeAcls returns them.
fn group_by_resource<'a>(
    acls: impl Iterator<Item = &'a AclBinding>,
) -> BTreeMap<(ResourceType, String, PatternType), Vec<&'a AclBinding>> {
    let mut out: BTreeMap<_, Vec<&AclBinding>> = BTreeMap::new();
    for b in acls {
        out.entry((b.resource_type, b.resource_name.clone(), b.pattern_type))
            .or_default()
            .push(b);
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

pub async fn describe(
    services: SecurityServices<'_>,
    ctx: &RequestContext,
    req: DescribeAclsRequest,
) -> DescribeAclsResponse {
    if !Authz::new(services.authorizer, ctx).cluster(AclOperation::Describe) {
        return DescribeAclsResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code())
            .with_error_message(Some(s("Authorization failed.")));
    }
    let filter = AclFilter::from_raw(RawAcl {
        resource_type: req.resource_type_filter,
        resource_name: req.resource_name_filter.map(|n| n.to_string()),
        pattern_type: req.pattern_type_filter,
        principal: req.principal_filter.map(|n| n.to_string()),
        host: req.host_filter.map(|n| n.to_string()),
        operation: req.operation,
        permission: req.permission_type,
    });
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            return DescribeAclsResponse::default()
                .with_error_code(e.code().code())
                .with_error_message(Some(s(e.to_string())))
        }
    };
    let img = services.image.snapshot();
    let resources = group_by_resource(img.acls().filter(|b| filter.matches(b)))
        .into_iter()
        .map(|((rt, name, pt), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(rt.code())
                .with_resource_name(s(name))
                .with_pattern_type(pt.code())
                .with_acls(
                    acls.into_iter()
                        .map(|b| {
                            AclDescription::default()
                                .with_principal(s(b.principal.clone()))
                                .with_host(s(b.host.clone()))
                                .with_operation(b.operation.code())
                                .with_permission_type(b.permission.code())
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeAclsResponse::default().with_resources(resources)
}

fn matching_acl(b: &AclBinding) -> DeleteAclsMatchingAcl {
    DeleteAclsMatchingAcl::default()
        .with_resource_type(b.resource_type.code())
        .with_resource_name(s(b.resource_name.clone()))
        .with_pattern_type(b.pattern_type.code())
        .with_principal(s(b.principal.clone()))
        .with_host(s(b.host.clone()))
        .with_operation(b.operation.code())
        .with_permission_type(b.permission.code())
}

pub async fn delete(
    services: SecurityServices<'_>,
    ctx: &RequestContext,
    req: DeleteAclsRequest,
) -> DeleteAclsResponse {
    if !Authz::new(services.authorizer, ctx).cluster(AclOperation::Alter) {
        let results = req
            .filters
            .iter()
            .map(|_| {
                DeleteAclsFilterResult::default()
                    .with_error_code(ErrorCode::ClusterAuthorizationFailed.code())
                    .with_error_message(Some(s("Authorization failed.")))
            })
            .collect();
        return DeleteAclsResponse::default().with_filter_results(results);
    }
    let filters: Vec<Result<AclFilter, AclError>> = req
        .filters
        .into_iter()
        .map(|f| {
            AclFilter::from_raw(RawAcl {
                resource_type: f.resource_type_filter,
                resource_name: f.resource_name_filter.map(|n| n.to_string()),
                pattern_type: f.pattern_type_filter,
                principal: f.principal_filter.map(|n| n.to_string()),
                host: f.host_filter.map(|n| n.to_string()),
                operation: f.operation,
                permission: f.permission_type,
            })
        })
        .collect();

    let guard = services.lock().await;
    // Every filter sees the ACLs as they were before the request, as in Kafka: two filters
    // matching the same binding both report it; it is removed once.
    let matched: Vec<Result<Vec<(Uuid, AclBinding)>, AclError>> = {
        let img = services.image.snapshot();
        filters
            .into_iter()
            .map(|f| {
                f.map(|f| {
                    img.acls
                        .iter()
                        .filter(|(_, b)| f.matches(b))
                        .map(|(id, b)| (*id, b.clone()))
                        .collect()
                })
            })
            .collect()
    };
    let ids: BTreeSet<Uuid> = matched
        .iter()
        .flatten()
        .flat_map(|m| m.iter().map(|(id, _)| *id))
        .collect();
    let records: Vec<MetadataRecord> = ids
        .iter()
        .map(|id| MetadataRecord::RemoveAccessControlEntry { id: *id })
        .collect();
    let stored = services
        .commit(&records)
        .await
        .map_err(|e| storage_message(&e));
    drop(guard);
    if !records.is_empty() && stored.is_ok() {
        tracing::info!(count = records.len(), "deleted ACLs");
    }

    let filter_results = matched
        .into_iter()
        .map(|m| match (m, &stored) {
            (Err(e), _) => DeleteAclsFilterResult::default()
                .with_error_code(e.code().code())
                .with_error_message(Some(s(e.to_string()))),
            (Ok(found), Err(msg)) if !found.is_empty() => DeleteAclsFilterResult::default()
                .with_error_code(ErrorCode::UnknownServerError.code())
                .with_error_message(Some(s(msg.clone()))),
            (Ok(mut found), _) => {
                found.sort_by(|a, b| a.1.cmp(&b.1));
                DeleteAclsFilterResult::default()
                    .with_matching_acls(found.iter().map(|(_, b)| matching_acl(b)).collect())
            }
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(filter_results)
}
