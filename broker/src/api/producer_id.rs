//! InitProducerId: hands out producer ids for idempotent producers (transactions are not
//! implemented yet; a transactional id is refused with a clear error code).

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::protocol::dispatch::RequestContext;
use crate::protocol::errors::ErrorCode;
use crate::state::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    _ctx: &RequestContext,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let fail = |code: ErrorCode| {
        InitProducerIdResponse::default()
            .with_error_code(code.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if req
        .transactional_id
        .as_ref()
        .is_some_and(|t| !t.0.is_empty())
    {
        return fail(ErrorCode::UnsupportedVersion);
    }
    match broker.next_producer_id() {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::error!(error = %e, "could not reserve producer ids");
            fail(ErrorCode::UnknownServerError)
        }
    }
}
