//! DescribeQuorum (what `kafka-metadata-quorum describe --status / --replication` uses): the
//! metadata quorum presented as KRaft's `__cluster_metadata` partition 0.
//!
//! Needs DESCRIBE on the cluster (CLUSTER_AUTHORIZATION_FAILED otherwise), as in Kafka. A request
//! for anything but exactly `__cluster_metadata`-0 is INVALID_REQUEST, as in Kafka.
//!
//! The Raft log of fjord-quorum stands in for the metadata log. A Raft log index `i`
//! is Kafka offset `i`, so a log end offset is the last index + 1 and the high watermark is the
//! committed index + 1; the leader epoch is the Raft term. Only the quorum leader knows every
//! voter's log end offset (openraft's replication progress), so a follower forwards the request
//! to the leader's broker over a PLAINTEXT listener, like a Kafka broker forwards it to the active
//! controller. When that is impossible (no PLAINTEXT endpoint, the leader refuses or is
//! unreachable) the follower answers from its own view: the leader's id and epoch, its own log end
//! offset, the offset it has applied as the high watermark (a lower bound), and -1 (unknown) for
//! the other voters' log end offsets. While no leader is known the answer is
//! NOT_LEADER_OR_FOLLOWER, which the admin client retries.
//!
//! Timestamps: openraft does not report when a follower last fetched, so `lastFetchTimestamp` is
//! -1 (unknown) for followers; `lastCaughtUpTimestamp` is now for a follower whose replicated log
//! reaches the leader's end, else -1. The leader reports now for both, as Kafka does.
//!
//! A single node (no voters configured) is a one-voter quorum answered the same way; its
//! controller listener is a loopback one nobody else knows, so the voter's node entry shows the
//! listener the request came in on.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{
    describe_quorum_request, BrokerId, DescribeQuorumRequest, DescribeQuorumResponse,
    RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::authz::Authz;
use super::services::ControllerServices;
use super::topic_name;
use crate::auth::acl::AclOperation;
use crate::cluster::Cluster;
use crate::protocol::context::{s, RequestContext};
use crate::protocol::errors::ErrorCode;
use crate::state::now_ms;

/// KRaft's metadata topic, which the quorum is described as.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// Client id of a request a follower forwards to the leader; the receiver never forwards it on.
const FORWARD_CLIENT_ID: &str = "fjord-describe-quorum-forward";
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);
/// A quorum description is small; anything larger is not a DescribeQuorum answer.
const MAX_FORWARD_RESPONSE: usize = 1 << 20;

pub async fn describe_quorum(
    services: ControllerServices<'_>,
    ctx: &RequestContext,
    req: DescribeQuorumRequest,
) -> DescribeQuorumResponse {
    for_version(answer(services, ctx, req).await, ctx.api_version)
}

/// Drops what `version` cannot carry (the encoder refuses non-default values of newer fields):
/// messages and node endpoints before v2, timestamps before v1.
fn for_version(mut resp: DescribeQuorumResponse, version: i16) -> DescribeQuorumResponse {
    if version < 2 {
        resp.error_message = None;
        resp.nodes.clear();
    }
    for p in resp.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
        if version < 2 {
            p.error_message = None;
        }
        if version < 1 {
            for r in p.current_voters.iter_mut().chain(p.observers.iter_mut()) {
                r.last_fetch_timestamp = -1;
                r.last_caught_up_timestamp = -1;
            }
        }
    }
    resp
}

async fn answer(
    services: ControllerServices<'_>,
    ctx: &RequestContext,
    req: DescribeQuorumRequest,
) -> DescribeQuorumResponse {
    if !Authz::new(services.authorizer, ctx).cluster(AclOperation::Describe) {
        return top_level_error(
            ErrorCode::ClusterAuthorizationFailed,
            "DESCRIBE on the cluster is required",
        );
    }
    if !asks_for_metadata_partition(&req) {
        return top_level_error(
            ErrorCode::InvalidRequest,
            "only __cluster_metadata partition 0 can be described",
        );
    }
    let cluster = &services.cluster;
    let me = services.config.node_id;
    let leader = cluster.leader();
    if let Some(leader) = leader.filter(|l| *l != me) {
        if ctx.client_id != FORWARD_CLIENT_ID {
            if let Some(resp) = forward(services, leader, &ctx.listener, ctx.api_version).await {
                return resp;
            }
        }
    }
    if leader.is_none() {
        return partition_error(
            ErrorCode::NotLeaderOrFollower,
            "no metadata quorum leader is known yet",
        );
    }
    local_view(services, cluster, &ctx.listener)
}

fn asks_for_metadata_partition(req: &DescribeQuorumRequest) -> bool {
    matches!(req.topics.as_slice(), [t] if t.topic_name.0.as_str() == METADATA_TOPIC
        && matches!(t.partitions.as_slice(), [p] if p.partition_index == 0))
}

fn top_level_error(code: ErrorCode, message: &str) -> DescribeQuorumResponse {
    DescribeQuorumResponse::default()
        .with_error_code(code.code())
        .with_error_message(Some(s(message)))
}

fn partition_error(code: ErrorCode, message: &str) -> DescribeQuorumResponse {
    respond(
        PartitionData::default()
            .with_error_code(code.code())
            .with_error_message(Some(s(message)))
            .with_leader_id(BrokerId(-1))
            .with_leader_epoch(-1)
            .with_high_watermark(-1),
        Vec::new(),
    )
}

fn respond(partition: PartitionData, nodes: Vec<Node>) -> DescribeQuorumResponse {
    DescribeQuorumResponse::default()
        .with_topics(vec![TopicData::default()
            .with_topic_name(topic_name(METADATA_TOPIC))
            .with_partitions(vec![partition.with_partition_index(0)])])
        .with_nodes(nodes)
}

fn replica(id: i32, log_end_offset: i64, fetched: i64, caught_up: i64) -> ReplicaState {
    ReplicaState::default()
        .with_replica_id(BrokerId(id))
        .with_log_end_offset(log_end_offset)
        .with_last_fetch_timestamp(fetched)
        .with_last_caught_up_timestamp(caught_up)
}

/// `host:port` (or `[v6]:port`) into a listener entry.
fn listener(name: &str, address: &str) -> Option<Listener> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some(
        Listener::default()
            .with_name(s(name))
            .with_host(s(host))
            .with_port(port.parse().ok()?),
    )
}

/// What this node's Raft metrics say about the quorum (complete on the leader).
fn local_view(
    services: ControllerServices<'_>,
    cluster: &Cluster,
    request_listener: &str,
) -> DescribeQuorumResponse {
    let me = services.config.node_id;
    let m = cluster.quorum.metrics().borrow().clone();
    let leader = m
        .current_leader
        .and_then(|l| i32::try_from(l).ok())
        .unwrap_or(-1);
    let membership = m.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let own_end = m.last_log_index.map_or(0, |i| i as i64 + 1);
    // Leader only: every member's replicated log end.
    let progress = m.replication.as_ref().filter(|_| leader == me);
    let end_of = |id: u64| -> i64 {
        if id == me as u64 {
            return own_end;
        }
        match progress.and_then(|p| p.get(&id)) {
            Some(matched) => matched.map_or(0, |l| l.index as i64 + 1),
            None => -1,
        }
    };
    let high_watermark = if progress.is_some() {
        // The highest end a majority of voters has reached: the committed end.
        let mut ends: Vec<i64> = voters.iter().map(|v| end_of(*v).max(0)).collect();
        ends.sort_unstable_by(|a, b| b.cmp(a));
        ends.get(ends.len() / 2).copied().unwrap_or(0)
    } else {
        m.last_applied.map_or(0, |l| l.index as i64 + 1)
    };
    let now = now_ms();
    let current_voters = voters
        .iter()
        .filter_map(|v| i32::try_from(*v).ok())
        .map(|id| {
            let end = end_of(id as u64);
            if progress.is_none() {
                replica(id, end, -1, -1)
            } else if id == me {
                replica(id, end, now, now)
            } else {
                replica(id, end, -1, if end >= own_end { now } else { -1 })
            }
        })
        .collect();
    let listener_name = services
        .config
        .cluster
        .controller_listener
        .as_ref()
        .map_or("CONTROLLER", |l| l.name.as_str());
    let nodes = voters
        .iter()
        .filter_map(|v| {
            if services.config.cluster.local_controller {
                // The only voter's controller listener is a loopback one nobody else knows:
                // it is shown with the listener the request came in on.
                let l = services.config.advertised_for(request_listener);
                return Some(
                    Node::default()
                        .with_node_id(BrokerId(i32::try_from(*v).ok()?))
                        .with_listeners(
                            listener(&l.name, &format!("{}:{}", l.host, l.port))
                                .into_iter()
                                .collect(),
                        ),
                );
            }
            let address = membership.get_node(v).map(|n| n.addr.clone()).or_else(|| {
                let id = i32::try_from(*v).ok()?;
                services.config.cluster.voters.get(&id).cloned()
            })?;
            Some(
                Node::default()
                    .with_node_id(BrokerId(i32::try_from(*v).ok()?))
                    .with_listeners(listener(listener_name, &address).into_iter().collect()),
            )
        })
        .collect();
    respond(
        PartitionData::default()
            .with_leader_id(BrokerId(leader))
            .with_leader_epoch(i32::try_from(m.current_term).unwrap_or(i32::MAX))
            .with_high_watermark(high_watermark)
            .with_current_voters(current_voters),
        nodes,
    )
}

/// Asks the leader's broker, over a PLAINTEXT endpoint (preferring the listener the request came
/// in on). None when there is no such endpoint or the leader does not give a complete answer.
async fn forward(
    services: ControllerServices<'_>,
    leader: i32,
    listener: &str,
    version: i16,
) -> Option<DescribeQuorumResponse> {
    let address = {
        let image = services.image.snapshot();
        let endpoints = &image.brokers.get(&leader)?.endpoints;
        let plaintext = |e: &&crate::metadata::BrokerEndpoint| e.security_protocol == "PLAINTEXT";
        let e = endpoints
            .iter()
            .filter(plaintext)
            .find(|e| e.listener == listener)
            .or_else(|| endpoints.iter().find(plaintext))?;
        format!("{}:{}", e.host, e.port)
    };
    let request = DescribeQuorumRequest::default().with_topics(vec![
        describe_quorum_request::TopicData::default()
            .with_topic_name(topic_name(METADATA_TOPIC))
            .with_partitions(vec![
                describe_quorum_request::PartitionData::default().with_partition_index(0)
            ]),
    ]);
    let answer = tokio::time::timeout(FORWARD_TIMEOUT, exchange(&address, &request, version)).await;
    match answer {
        Ok(Ok(resp))
            if resp.error_code == 0
                && resp
                    .topics
                    .first()
                    .and_then(|t| t.partitions.first())
                    .is_some_and(|p| p.error_code == 0) =>
        {
            Some(resp)
        }
        Ok(Ok(resp)) => {
            tracing::debug!(
                leader,
                error = resp.error_code,
                "the quorum leader did not describe the quorum; answering locally"
            );
            None
        }
        Ok(Err(e)) => {
            tracing::debug!(leader, %address, error = %e, "could not forward DescribeQuorum; answering locally");
            None
        }
        Err(_) => {
            tracing::debug!(leader, %address, "forwarded DescribeQuorum timed out; answering locally");
            None
        }
    }
}

/// One request/response exchange on a fresh connection.
async fn exchange(
    address: &str,
    request: &DescribeQuorumRequest,
    version: i16,
) -> anyhow::Result<DescribeQuorumResponse> {
    let header = RequestHeader::default()
        .with_request_api_key(DescribeQuorumRequest::KEY)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(s(FORWARD_CLIENT_ID)));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header.encode(&mut buf, DescribeQuorumRequest::header_version(version))?;
    request.encode(&mut buf, version)?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());

    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.write_all(&buf).await?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = usize::try_from((&len[..]).get_i32())?;
    anyhow::ensure!(len <= MAX_FORWARD_RESPONSE, "response of {len} bytes");
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    let mut body = Bytes::from(body);
    let header =
        ResponseHeader::decode(&mut body, DescribeQuorumResponse::header_version(version))?;
    anyhow::ensure!(header.correlation_id == 1, "unexpected correlation id");
    DescribeQuorumResponse::decode(&mut body, version)
}
