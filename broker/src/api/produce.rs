//! Produce: validate each partition's batch (framing, magic, CRC, size), check idempotent
//! sequences, append with assigned offsets, and answer once the data is in the log.
//!
//! Authorization (as Kafka): a transactional request needs WRITE on its transactional id
//! (TRANSACTIONAL_ID_AUTHORIZATION_FAILED for every partition), each topic needs WRITE
//! (TOPIC_AUTHORIZATION_FAILED, checked before existence so unauthorized clients learn nothing).
//! Idempotent batches need nothing more (Kafka 2.8+ dropped the IDEMPOTENT_WRITE check here).
//! The bytes produced count against `producer_byte_rate`; the throttle goes into
//! `throttle_time_ms` and mutes the connection.

use std::sync::Arc;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::authz::Authz;
use super::topic_name;
use crate::auth::acl::AclOperation;
use crate::auth::authorizer::Resource;
use crate::log::batch::{self, BatchError};
use crate::log::AppendError;
use crate::protocol::dispatch::{s, RequestContext};
use crate::protocol::errors::ErrorCode;
use crate::state::{now_ms, Broker};

fn error(index: i32, code: ErrorCode, message: Option<String>) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(message.map(s))
}

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ProduceRequest,
) -> ProduceResponse {
    let authz = Authz::new(broker, ctx);
    let acks = req.acks;
    let txn_denied = req.transactional_id.as_ref().is_some_and(|t| {
        !t.0.is_empty() && !authz.allowed(AclOperation::Write, Resource::transactional_id(&t.0))
    });
    let produced_bytes: usize = req
        .topic_data
        .iter()
        .flat_map(|t| t.partition_data.iter())
        .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
        .sum();
    let mut responses = Vec::with_capacity(req.topic_data.len());
    for topic in req.topic_data {
        let name = if topic.name.0.is_empty() {
            broker
                .metadata
                .read()
                .topic_by_id(&topic.topic_id)
                .map(|t| t.name.clone())
                .unwrap_or_default()
        } else {
            topic.name.0.to_string()
        };
        let denied = if txn_denied {
            Some(ErrorCode::TransactionalIdAuthorizationFailed)
        } else if !authz.topic(AclOperation::Write, &name) {
            Some(ErrorCode::TopicAuthorizationFailed)
        } else {
            None
        };
        let mut parts = Vec::with_capacity(topic.partition_data.len());
        for pd in topic.partition_data {
            parts.push(match denied {
                Some(code) => error(pd.index, code, None),
                None => produce_partition(broker, &name, pd.index, pd.records, acks),
            });
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_name(&name))
                .with_topic_id(topic.topic_id)
                .with_partition_responses(parts),
        );
    }
    let throttle = broker.quotas.record(
        &broker.metadata.read(),
        crate::quota::QuotaType::Produce,
        &ctx.principal,
        &ctx.client_id,
        produced_bytes as f64,
    );
    crate::quota::throttle(throttle);
    ProduceResponse::default()
        .with_responses(responses)
        .with_throttle_time_ms(throttle as i32)
}

fn produce_partition(
    broker: &Broker,
    topic: &str,
    index: i32,
    records: Option<bytes::Bytes>,
    acks: i16,
) -> PartitionProduceResponse {
    if !matches!(acks, -1..=1) {
        return error(index, ErrorCode::InvalidRequiredAcks, None);
    }
    let partition = match broker.led_partition(topic, index) {
        Ok(p) => p,
        Err(code) => return error(index, code, None),
    };
    let Some(records) = records else {
        return error(index, ErrorCode::CorruptMessage, Some("no records".into()));
    };
    let headers = match batch::validate_all(&records) {
        Ok(h) => h,
        Err(e) => {
            let code = match e {
                BatchError::UnsupportedMagic(_) => ErrorCode::UnsupportedForMessageFormat,
                _ => ErrorCode::CorruptMessage,
            };
            broker
                .metrics
                .request_errors
                .with_label_values(&["Produce", &format!("{code:?}")])
                .inc();
            tracing::debug!(topic, partition = index, error = %e, "rejected produce batch");
            return error(index, code, Some(e.to_string()));
        }
    };
    if headers
        .iter()
        .any(|h| h.is_transactional() || h.is_control())
    {
        return error(
            index,
            ErrorCode::InvalidRecord,
            Some("transactional batches are not supported yet".into()),
        );
    }
    let mut log = partition.log.write();
    if acks == -1 && log.settings().min_insync_replicas > 1 {
        // The in-sync set of a single broker is one replica.
        return error(index, ErrorCode::NotEnoughReplicas, None);
    }
    let outcome = log.append(&records, &headers, partition.leader_epoch, now_ms());
    let log_start = log.log_start_offset();
    let leo = log.log_end_offset();
    drop(log);
    match outcome {
        Ok(o) => {
            if !o.duplicate {
                partition.advance_high_watermark(leo);
                broker.metrics.bytes_in.inc_by(o.bytes as u64);
                broker
                    .metrics
                    .messages_in
                    .inc_by(o.record_count.max(0) as u64);
            }
            PartitionProduceResponse::default()
                .with_index(index)
                .with_base_offset(o.base_offset)
                .with_log_append_time_ms(o.log_append_time)
                .with_log_start_offset(log_start)
        }
        Err(AppendError::Protocol(code)) => {
            broker
                .metrics
                .request_errors
                .with_label_values(&["Produce", &format!("{code:?}")])
                .inc();
            error(index, code, None)
        }
        Err(AppendError::Io(e)) => {
            tracing::error!(topic, partition = index, error = %e, "append failed");
            error(
                index,
                ErrorCode::UnknownServerError,
                Some(format!("storage error: {e}")),
            )
        }
    }
}
