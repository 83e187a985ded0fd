//! The transactional APIs (KIP-98): AddPartitionsToTxn, AddOffsetsToTxn, EndTxn,
//! TxnOffsetCommit, DescribeTransactions and ListTransactions, answered through the
//! transaction coordinator (`txn::coordinator`). InitProducerId is in `producer_id`.
//!
//! Authorization as in Kafka: the transactional APIs need WRITE on the transactional id
//! (TRANSACTIONAL_ID_AUTHORIZATION_FAILED), AddPartitionsToTxn also WRITE on each topic,
//! AddOffsetsToTxn READ on the group; TxnOffsetCommit needs READ on the group and on each
//! topic; DescribeTransactions and ListTransactions need DESCRIBE on the transactional id
//! (ListTransactions leaves out what the principal may not describe).

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedTransaction;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;

use super::authz::Authz;
use super::services::TransactionServices;
use crate::auth::acl::AclOperation;
use crate::auth::authorizer::Resource;
use crate::group::offsets::CommittedOffset;
use crate::metadata::ReplicatedOffset;
use crate::protocol::context::{s, RequestContext};
use crate::protocol::errors::ErrorCode;
use crate::state::now_ms;
use crate::txn::state::TxnStatus;

/// What one AddPartitionsToTxn transaction asks (the v0–3 top level, or one v4+ entry).
struct AddPartitions<'r> {
    transactional_id: &'r str,
    producer_id: i64,
    producer_epoch: i16,
    verify_only: bool,
    topics: &'r [add_partitions_to_txn_request::AddPartitionsToTxnTopic],
}

pub async fn add_partitions(
    services: TransactionServices<'_>,
    ctx: &RequestContext,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    if ctx.api_version <= 3 {
        let ask = AddPartitions {
            transactional_id: &req.v3_and_below_transactional_id.0,
            producer_id: req.v3_and_below_producer_id.0,
            producer_epoch: req.v3_and_below_producer_epoch,
            verify_only: false,
            topics: &req.v3_and_below_topics,
        };
        let results = add_one(services, ctx, &ask).await;
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    }
    // v4+ (brokers verifying a transactional produce, KIP-890) batch transactions and need
    // CLUSTER_ACTION.
    if !Authz::new(services.authorizer, ctx).cluster(AclOperation::ClusterAction) {
        return AddPartitionsToTxnResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code());
    }
    let mut by_transaction = Vec::new();
    for t in &req.transactions {
        let ask = AddPartitions {
            transactional_id: &t.transactional_id.0,
            producer_id: t.producer_id.0,
            producer_epoch: t.producer_epoch,
            verify_only: t.verify_only,
            topics: &t.topics,
        };
        let topic_results = add_one(services, ctx, &ask).await;
        by_transaction.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_topic_results(topic_results),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(by_transaction)
}

async fn add_one(
    services: TransactionServices<'_>,
    ctx: &RequestContext,
    ask: &AddPartitions<'_>,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let authz = Authz::new(services.authorizer, ctx);
    let image = services.image.snapshot();
    let mut codes: Vec<(String, i32, ErrorCode)> = Vec::new();
    for t in ask.topics {
        let name = t.name.0.to_string();
        for &p in &t.partitions {
            let code = if !authz.topic(AclOperation::Write, &name) {
                ErrorCode::TopicAuthorizationFailed
            } else if !image.has_partition(&name, p) {
                ErrorCode::UnknownTopicOrPartition
            } else {
                ErrorCode::None
            };
            codes.push((name.clone(), p, code));
        }
    }
    let txn_denied = !authz.allowed(
        AclOperation::Write,
        Resource::transactional_id(ask.transactional_id),
    );
    let refused = codes.iter().any(|(_, _, c)| *c != ErrorCode::None);
    if txn_denied {
        for c in &mut codes {
            c.2 = ErrorCode::TransactionalIdAuthorizationFailed;
        }
    } else if refused {
        // As Kafka: when any partition is refused, none is added.
        for c in &mut codes {
            if c.2 == ErrorCode::None {
                c.2 = ErrorCode::OperationNotAttempted;
            }
        }
    } else if ask.verify_only {
        for c in &mut codes {
            let partition = (c.0.clone(), c.1);
            c.2 = match services.transactions.contains(
                ask.transactional_id,
                ask.producer_id,
                ask.producer_epoch,
                &partition,
            ) {
                Ok(true) => ErrorCode::None,
                Ok(false) => ErrorCode::InvalidTxnState,
                Err(code) => code,
            };
        }
    } else {
        let partitions: Vec<(String, i32)> =
            codes.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
        let result = services
            .transactions
            .add(
                ask.transactional_id,
                ask.producer_id,
                ask.producer_epoch,
                &partitions,
                None,
            )
            .await;
        let code = result.err().unwrap_or(ErrorCode::None);
        for c in &mut codes {
            c.2 = code;
        }
    }
    let mut topics: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for (topic, partition, code) in codes {
        let result = AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(partition)
            .with_partition_error_code(code.code());
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.results_by_partition.push(result),
            None => topics.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(TopicName(s(topic)))
                    .with_results_by_partition(vec![result]),
            ),
        }
    }
    topics
}

pub async fn add_offsets(
    services: TransactionServices<'_>,
    ctx: &RequestContext,
    req: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let authz = Authz::new(services.authorizer, ctx);
    let code = if !authz.allowed(
        AclOperation::Write,
        Resource::transactional_id(&req.transactional_id.0),
    ) {
        ErrorCode::TransactionalIdAuthorizationFailed
    } else if !authz.group(AclOperation::Read, &req.group_id.0) {
        ErrorCode::GroupAuthorizationFailed
    } else {
        services
            .transactions
            .add(
                &req.transactional_id.0,
                req.producer_id.0,
                req.producer_epoch,
                &[],
                Some(&req.group_id.0),
            )
            .await
            .err()
            .unwrap_or(ErrorCode::None)
    };
    AddOffsetsToTxnResponse::default().with_error_code(code.code())
}

pub async fn end(
    services: TransactionServices<'_>,
    ctx: &RequestContext,
    req: EndTxnRequest,
) -> EndTxnResponse {
    let authz = Authz::new(services.authorizer, ctx);
    let code = if !authz.allowed(
        AclOperation::Write,
        Resource::transactional_id(&req.transactional_id.0),
    ) {
        ErrorCode::TransactionalIdAuthorizationFailed
    } else {
        services
            .transactions
            .end(
                &req.transactional_id.0,
                req.producer_id.0,
                req.producer_epoch,
                req.committed,
            )
            .await
            .err()
            .unwrap_or(ErrorCode::None)
    };
    EndTxnResponse::default().with_error_code(code.code())
}

pub async fn offset_commit(
    services: TransactionServices<'_>,
    ctx: &RequestContext,
    req: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let authz = Authz::new(services.authorizer, ctx);
    let group = req.group_id.0.to_string();
    let image = services.image.snapshot();
    let shared = if !authz.allowed(
        AclOperation::Write,
        Resource::transactional_id(&req.transactional_id.0),
    ) {
        Some(ErrorCode::TransactionalIdAuthorizationFailed)
    } else if !authz.group(AclOperation::Read, &group) {
        Some(ErrorCode::GroupAuthorizationFailed)
    } else if image.coordinator_for(&group) != Some(services.node_id) {
        Some(ErrorCode::NotCoordinator)
    } else {
        None
    };
    let now = now_ms();
    let mut codes: Vec<(String, i32, ErrorCode)> = Vec::new();
    let mut offsets = Vec::new();
    for t in &req.topics {
        let name = t.name.0.to_string();
        for p in &t.partitions {
            let code = match shared {
                Some(code) => code,
                None if !authz.topic(AclOperation::Read, &name) => {
                    ErrorCode::TopicAuthorizationFailed
                }
                None if !image.has_partition(&name, p.partition_index) => {
                    ErrorCode::UnknownTopicOrPartition
                }
                None => {
                    offsets.push(ReplicatedOffset {
                        topic: name.clone(),
                        partition: p.partition_index,
                        committed: Some(CommittedOffset {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                            commit_ms: now,
                        }),
                    });
                    ErrorCode::None
                }
            };
            codes.push((name.clone(), p.partition_index, code));
        }
    }
    if !offsets.is_empty() {
        let result = services
            .transactions
            .commit_offsets(
                &req.transactional_id.0,
                req.producer_id.0,
                req.producer_epoch,
                &group,
                offsets,
            )
            .await;
        if let Err(code) = result {
            for c in codes.iter_mut().filter(|c| c.2 == ErrorCode::None) {
                c.2 = code;
            }
        }
    }
    let mut topics: Vec<TxnOffsetCommitResponseTopic> = Vec::new();
    for (topic, partition, code) in codes {
        let result = TxnOffsetCommitResponsePartition::default()
            .with_partition_index(partition)
            .with_error_code(code.code());
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(result),
            None => topics.push(
                TxnOffsetCommitResponseTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partitions(vec![result]),
            ),
        }
    }
    TxnOffsetCommitResponse::default().with_topics(topics)
}

pub async fn describe(
    services: TransactionServices<'_>,
    ctx: &RequestContext,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let authz = Authz::new(services.authorizer, ctx);
    let states = req
        .transactional_ids
        .iter()
        .map(|id| {
            let base = TransactionState::default()
                .with_transactional_id(id.clone())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1)
                .with_transaction_state(s(""));
            if !authz.allowed(AclOperation::Describe, Resource::transactional_id(&id.0)) {
                return base.with_error_code(ErrorCode::TransactionalIdAuthorizationFailed.code());
            }
            match services.transactions.describe(&id.0) {
                Err(code) => base.with_error_code(code.code()),
                Ok(m) => {
                    let mut topics: Vec<TopicData> = Vec::new();
                    for (topic, partition) in &m.partitions {
                        match topics.iter_mut().find(|t| t.topic.0.as_str() == topic) {
                            Some(t) => t.partitions.push(*partition),
                            None => topics.push(
                                TopicData::default()
                                    .with_topic(TopicName(s(topic.clone())))
                                    .with_partitions(vec![*partition]),
                            ),
                        }
                    }
                    base.with_transaction_state(s(m.status.name()))
                        .with_transaction_timeout_ms(m.timeout_ms)
                        .with_transaction_start_time_ms(m.start_ms)
                        .with_producer_id(ProducerId(m.producer_id))
                        .with_producer_epoch(m.producer_epoch)
                        .with_topics(topics)
                }
            }
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

pub async fn list(
    services: TransactionServices<'_>,
    ctx: &RequestContext,
    req: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let authz = Authz::new(services.authorizer, ctx);
    let mut unknown = Vec::new();
    let mut wanted = Vec::new();
    for f in &req.state_filters {
        match TxnStatus::from_name(f) {
            Some(st) => wanted.push(st),
            None => unknown.push(f.clone()),
        }
    }
    let pattern = match req
        .transactional_id_pattern
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        None => None,
        Some(p) => match regex::Regex::new(&format!("^(?:{p})$")) {
            Ok(re) => Some(re),
            Err(_) => {
                return ListTransactionsResponse::default()
                    .with_error_code(ErrorCode::InvalidRegularExpression.code())
            }
        },
    };
    let now = now_ms();
    let states = services
        .transactions
        .coordinated()
        .into_iter()
        .filter(|m| wanted.is_empty() || wanted.contains(&m.status))
        .filter(|m| {
            req.producer_id_filters.is_empty()
                || req.producer_id_filters.iter().any(|p| p.0 == m.producer_id)
        })
        .filter(|m| {
            // v1: only transactions running longer than this (ongoing ones have a start).
            req.duration_filter < 0 || (m.start_ms >= 0 && now - m.start_ms >= req.duration_filter)
        })
        .filter(|m| {
            pattern
                .as_ref()
                .is_none_or(|re| re.is_match(&m.transactional_id))
        })
        .filter(|m| {
            authz.allowed(
                AclOperation::Describe,
                Resource::transactional_id(&m.transactional_id),
            )
        })
        .map(|m| {
            ListedTransaction::default()
                .with_transactional_id(TransactionalId(s(m.transactional_id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(s(m.status.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}
