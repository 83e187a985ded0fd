//! InitProducerId: hands out producer ids for idempotent producers, and for transactional
//! ones asks the transaction coordinator (`txn::coordinator`), which bumps the epoch of a
//! known transactional id and aborts a transaction its previous instance left open.
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
            // KIP-360 (v3+): a producer recovering names the id and epoch it has.
            let expected =
                (req.producer_id.0 >= 0).then_some((req.producer_id.0, req.producer_epoch));
            return match services
                .init_transactional(&t.0, req.transaction_timeout_ms, expected)
                .await
            {
                Ok((id, epoch)) => InitProducerIdResponse::default()
                    .with_producer_id(ProducerId(id))
                    .with_producer_epoch(epoch),
                Err(code) => fail(code),
            };
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
