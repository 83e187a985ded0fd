//! The one table of the APIs this broker implements. Each row names the API, the versions
//! ApiVersions advertises, and how a request is answered; the advertised list
//! ([`APIS`], read by `versions`, which also answers ApiVersions), the routing ([`route`], [`call`])
//! and the metric label names ([`name`]) are all generated from it, so they cannot drift apart.
//!
//! A row is `Key min..=max => handler(RequestType, path::to::handler)`: dispatch decodes the
//! request as `RequestType`, awaits the handler and encodes its response. The handler of a
//! `sharing` row also returns the response's record payloads ([`WithPayloads`]), which the
//! encoded response then references instead of copying (Fetch; see `chunked`). Rows marked
//! `special(Produce)` or `special(Sasl)` are answered by dispatch itself (acks=0 Produce has no
//! response; SASL goes through the connection's session), but take their versions and names from
//! here like the others. `served from N` advertises versions that are refused below N.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Request;

use super::chunked::WithPayloads;
use super::context::RequestContext;
use super::dispatch::{decode_body, encode_response, encode_response_sharing, DecodeError, Reply};
use super::versions;
use crate::api;
use crate::api::services::FromBroker;
use crate::state::Broker;

/// How dispatch answers an API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Decoded and answered by the handler named in the table ([`call`]).
    Handler,
    /// Produce: dispatch sends no response for acks=0.
    Produce,
    /// SaslHandshake and SaslAuthenticate: answered from the connection's session.
    Sasl,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Api {
    pub key: ApiKey,
    /// The lowest version ApiVersions advertises.
    pub min: i16,
    /// The highest version ApiVersions advertises (and served).
    pub max: i16,
    /// The lowest version actually served; above `min` only for Produce (see its row).
    pub served_from: i16,
    pub route: Route,
}

macro_rules! api_table {
    ($(
        $api:ident $min:literal ..= $max:literal $(served from $floor:literal)? => $how:ident $args:tt,
    )*) => {
        /// Every implemented API, in the order ApiVersions lists them.
        pub const APIS: &[Api] = &[$(Api {
            key: ApiKey::$api,
            min: $min,
            max: $max,
            served_from: api_table!(@floor $min $($floor)?),
            route: api_table!(@route $how $args),
        },)*];

        /// How `key` is answered; None when it is not implemented.
        pub fn route(key: ApiKey) -> Option<Route> {
            match key {
                $(ApiKey::$api => Some(api_table!(@route $how $args)),)*
                _ => None,
            }
        }

        /// The metric label for `key`: its `ApiKey` name, or `Other` for APIs not implemented.
        pub fn name(key: ApiKey) -> &'static str {
            match key {
                $(ApiKey::$api => stringify!($api),)*
                _ => "Other",
            }
        }

        /// Decodes the request, runs the table's handler and encodes the response, for the APIs
        /// routed [`Route::Handler`]. An undecodable body is the error (the connection closes).
        pub(super) async fn call(
            broker: &Arc<Broker>,
            ctx: &RequestContext,
            key: ApiKey,
            version: i16,
            correlation_id: i32,
            mut body: Bytes,
        ) -> Result<Reply, DecodeError> {
            match key {
                $(ApiKey::$api => api_table!(@call $api $how $args, broker, ctx, key, version, correlation_id, body),)*
                other => Ok(Reply::Close(format!("API {other:?} is not implemented"))),
            }
        }
    };
    (@floor $min:literal) => { $min };
    (@floor $min:literal $floor:literal) => { $floor };
    (@route handler $args:tt) => { Route::Handler };
    (@route sharing $args:tt) => { Route::Handler };
    (@route special ($route:ident)) => { Route::$route };
    (@call $api:ident handler ($req:ty, $handler:path), $broker:ident, $ctx:ident, $key:ident, $version:ident, $corr:ident, $body:ident) => {{
        // A row whose request type belongs to another API does not compile.
        const { assert!(<$req as Request>::KEY == ApiKey::$api as i16, "request type of another API") };
        let req: $req = decode_body(&mut $body, $version)?;
        let resp: <$req as Request>::Response = $handler(FromBroker::from_broker($broker), $ctx, req).await;
        Ok(encode_response($key, $version, $corr, &resp))
    }};
    (@call $api:ident sharing ($req:ty, $handler:path), $broker:ident, $ctx:ident, $key:ident, $version:ident, $corr:ident, $body:ident) => {{
        const { assert!(<$req as Request>::KEY == ApiKey::$api as i16, "request type of another API") };
        let req: $req = decode_body(&mut $body, $version)?;
        let out: WithPayloads<<$req as Request>::Response> = $handler(FromBroker::from_broker($broker), $ctx, req).await;
        Ok(encode_response_sharing($key, $version, $corr, &out.response, &out.payloads))
    }};
    (@call $api:ident special $args:tt, $broker:ident, $ctx:ident, $key:ident, $version:ident, $corr:ident, $body:ident) => {
        Ok(Reply::Close(format!("{:?} is answered by dispatch, not by a table handler", $key)))
    };
}

// Floors follow Kafka 4.x (KIP-896).
api_table! {
    // Advertised from v0 even though v0-2 requests are refused, because librdkafka misbehaves
    // otherwise (KAFKA-18659).
    Produce 0..=12 served from 3 => special(Produce),
    Fetch 4..=17 => sharing(FetchRequest, api::fetch::handle),
    ListOffsets 1..=9 => handler(ListOffsetsRequest, api::list_offsets::handle),
    Metadata 0..=12 => handler(MetadataRequest, api::metadata::handle),
    OffsetCommit 2..=9 => handler(OffsetCommitRequest, api::offsets::commit),
    OffsetFetch 1..=9 => handler(OffsetFetchRequest, api::offsets::fetch),
    FindCoordinator 0..=5 => handler(FindCoordinatorRequest, api::groups::find_coordinator),
    JoinGroup 0..=9 => handler(JoinGroupRequest, api::groups::join),
    Heartbeat 0..=4 => handler(HeartbeatRequest, api::groups::heartbeat),
    LeaveGroup 0..=5 => handler(LeaveGroupRequest, api::groups::leave),
    SyncGroup 0..=5 => handler(SyncGroupRequest, api::groups::sync),
    DescribeGroups 0..=5 => handler(DescribeGroupsRequest, api::groups::describe),
    ListGroups 0..=5 => handler(ListGroupsRequest, api::groups::list),
    // The consumer group protocol (KIP-848, group.protocol=consumer); Kafka 4.x ranges.
    ConsumerGroupHeartbeat 0..=1 => handler(ConsumerGroupHeartbeatRequest, api::consumer_groups::heartbeat),
    ConsumerGroupDescribe 0..=1 => handler(ConsumerGroupDescribeRequest, api::consumer_groups::describe),
    ApiVersions 0..=4 => handler(ApiVersionsRequest, versions::handle),
    CreateTopics 2..=7 => handler(CreateTopicsRequest, api::topics::create),
    DeleteTopics 1..=6 => handler(DeleteTopicsRequest, api::topics::delete),
    DeleteRecords 0..=2 => handler(DeleteRecordsRequest, api::list_offsets::delete_records),
    InitProducerId 0..=5 => handler(InitProducerIdRequest, api::producer_id::handle),
    // Transactions (KIP-98). AddPartitionsToTxn v4+ is the brokers' batched form (KIP-890);
    // EndTxn stops at v4 because transaction.version 2 is not offered.
    AddPartitionsToTxn 0..=5 => handler(AddPartitionsToTxnRequest, api::transactions::add_partitions),
    AddOffsetsToTxn 0..=4 => handler(AddOffsetsToTxnRequest, api::transactions::add_offsets),
    EndTxn 0..=4 => handler(EndTxnRequest, api::transactions::end),
    TxnOffsetCommit 0..=5 => handler(TxnOffsetCommitRequest, api::transactions::offset_commit),
    DescribeTransactions 0..=0 => handler(DescribeTransactionsRequest, api::transactions::describe),
    ListTransactions 0..=2 => handler(ListTransactionsRequest, api::transactions::list),
    DescribeProducers 0..=0 => handler(DescribeProducersRequest, api::producers::describe),
    WriteTxnMarkers 1..=1 => handler(WriteTxnMarkersRequest, api::producers::write_markers),
    OffsetForLeaderEpoch 2..=4 => handler(OffsetForLeaderEpochRequest, api::list_offsets::offset_for_leader_epoch),
    DescribeConfigs 1..=4 => handler(DescribeConfigsRequest, api::configs::describe),
    AlterConfigs 0..=2 => handler(AlterConfigsRequest, api::configs::alter),
    CreatePartitions 0..=3 => handler(CreatePartitionsRequest, api::topics::create_partitions),
    DeleteGroups 0..=2 => handler(DeleteGroupsRequest, api::groups::delete),
    IncrementalAlterConfigs 0..=1 => handler(IncrementalAlterConfigsRequest, api::configs::incremental_alter),
    OffsetDelete 0..=0 => handler(OffsetDeleteRequest, api::offsets::delete),
    DescribeCluster 0..=1 => handler(DescribeClusterRequest, api::metadata::describe_cluster),
    DescribeTopicPartitions 0..=0 => handler(DescribeTopicPartitionsRequest, api::metadata::describe_topic_partitions),
    // Cluster introspection (kafka-metadata-quorum, kafka-log-dirs); Kafka 4.x ranges.
    DescribeQuorum 0..=2 => handler(DescribeQuorumRequest, api::quorum::describe_quorum),
    DescribeLogDirs 1..=4 => handler(DescribeLogDirsRequest, api::log_dirs::describe),
    // Partition reassignment (kafka-reassign-partitions, KIP-455); Kafka 4.x ranges.
    AlterPartitionReassignments 0..=1 => handler(AlterPartitionReassignmentsRequest, api::reassignments::alter),
    ListPartitionReassignments 0..=0 => handler(ListPartitionReassignmentsRequest, api::reassignments::list),
    // kafka-leader-election; Kafka 4.x range.
    ElectLeaders 0..=2 => handler(ElectLeadersRequest, api::elect_leaders::handle),
    // Security admin. Same ranges as Kafka 4.x, whose floors drop v0 of the ACL APIs (KIP-896).
    DescribeAcls 1..=3 => handler(DescribeAclsRequest, api::acls::describe),
    CreateAcls 1..=3 => handler(CreateAclsRequest, api::acls::create),
    DeleteAcls 1..=3 => handler(DeleteAclsRequest, api::acls::delete),
    DescribeClientQuotas 0..=1 => handler(DescribeClientQuotasRequest, api::quotas::describe),
    AlterClientQuotas 0..=1 => handler(AlterClientQuotasRequest, api::quotas::alter),
    SaslHandshake 0..=1 => special(Sasl),
    SaslAuthenticate 0..=2 => special(Sasl),
    DescribeUserScramCredentials 0..=0 => handler(DescribeUserScramCredentialsRequest, api::scram::describe),
    AlterUserScramCredentials 0..=0 => handler(AlterUserScramCredentialsRequest, api::scram::alter),
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::protocol::versions::{accepts, range};

    /// Every API key the codec knows.
    fn all_keys() -> Vec<ApiKey> {
        (i16::MIN..=i16::MAX)
            .filter_map(|k| ApiKey::try_from(k).ok())
            .collect()
    }

    #[test]
    fn advertised_routed_and_named_agree() {
        let advertised: BTreeSet<i16> = APIS.iter().map(|a| a.key as i16).collect();
        assert_eq!(advertised.len(), APIS.len(), "an API has two rows");
        let keys = all_keys();
        assert!(
            keys.len() > APIS.len(),
            "the codec knows more APIs than we serve"
        );
        for key in keys {
            let row = APIS.iter().find(|a| a.key == key);
            assert_eq!(row.is_some(), advertised.contains(&(key as i16)), "{key:?}");
            // Advertised exactly when routed, and with the same route as the row.
            assert_eq!(route(key), row.map(|a| a.route), "{key:?} routing");
            assert_eq!(range(key), row.map(|a| (a.min, a.max)), "{key:?} range");
            match row {
                Some(_) => assert_eq!(name(key), format!("{key:?}"), "metric name"),
                None => {
                    assert_eq!(name(key), "Other", "{key:?} is named but not served");
                    assert!(!accepts(key, 0), "{key:?} accepted but not advertised");
                }
            }
        }
    }

    #[test]
    fn special_routes_are_produce_and_sasl_only() {
        let special: Vec<(ApiKey, Route)> = APIS
            .iter()
            .filter(|a| a.route != Route::Handler)
            .map(|a| (a.key, a.route))
            .collect();
        assert_eq!(
            special,
            vec![
                (ApiKey::Produce, Route::Produce),
                (ApiKey::SaslHandshake, Route::Sasl),
                (ApiKey::SaslAuthenticate, Route::Sasl),
            ]
        );
    }

    #[test]
    fn advertised_ranges_are_within_the_codec() {
        for a in APIS {
            let codec = a.key.valid_versions();
            assert!(
                a.min <= a.served_from && a.served_from <= a.max,
                "{:?} {}..{} served from {}",
                a.key,
                a.min,
                a.max,
                a.served_from
            );
            assert!(
                a.served_from >= codec.min && a.max <= codec.max,
                "{:?} {}..{} vs codec {codec:?}",
                a.key,
                a.served_from,
                a.max
            );
            assert!(accepts(a.key, a.served_from) && accepts(a.key, a.max));
            assert!(!accepts(a.key, a.served_from - 1) && !accepts(a.key, a.max + 1));
        }
        // Produce v0-2 are advertised (librdkafka) but refused.
        assert_eq!(range(ApiKey::Produce), Some((0, 12)));
        assert!(!accepts(ApiKey::Produce, 2));
        assert!(accepts(ApiKey::Produce, 3));
        assert!(!accepts(ApiKey::Fetch, 3));
        let below_floor: Vec<ApiKey> = APIS
            .iter()
            .filter(|a| a.served_from != a.min)
            .map(|a| a.key)
            .collect();
        assert_eq!(below_floor, vec![ApiKey::Produce]);
    }
}
