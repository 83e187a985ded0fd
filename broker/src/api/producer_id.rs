//! InitProducerId: hands out producer ids for idempotent producers (transactions are not
//! implemented yet; a transactional id is refused with a clear error code).
//!
//! Authorization as in Kafka 4: a transactional id needs WRITE on it
//! (TRANSACTIONAL_ID_AUTHORIZATION_FAILED); an idempotent producer needs IDEMPOTENT_WRITE on the
//! cluster or WRITE on at least one topic (CLUSTER_AUTHORIZATION_FAILED).

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::authz::Authz;
use super::services::ProducerIdServices;
use crate::auth::acl::{AclOperation, ResourceType};
use crate::auth::authorizer::Resource;
use crate::protocol::context::RequestContext;
use crate::protocol::errors::ErrorCode;

pub async fn handle(
    services: ProducerIdServices<'_>,
    ctx: &RequestContext,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let authz = Authz::new(services.authorizer, ctx);
    let fail = |code: ErrorCode| {
        InitProducerIdResponse::default()
            .with_error_code(code.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    match req.transactional_id.as_ref().filter(|t| !t.0.is_empty()) {
        Some(t) => {
            if !authz.allowed(AclOperation::Write, Resource::transactional_id(&t.0)) {
                return fail(ErrorCode::TransactionalIdAuthorizationFailed);
            }
            return fail(ErrorCode::UnsupportedVersion);
        }
        None => {
            if !authz.cluster(AclOperation::IdempotentWrite)
                && !authz.any_of(AclOperation::Write, ResourceType::Topic)
            {
                return fail(ErrorCode::ClusterAuthorizationFailed);
            }
        }
    }
    match services.next_producer_id().await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::error!(error = %e, "could not reserve producer ids");
            fail(ErrorCode::UnknownServerError)
        }
    }
}
