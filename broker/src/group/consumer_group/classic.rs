//! Classic members of a consumer-protocol group: how a live classic group is upgraded to the
//! consumer protocol (KIP-848, Kafka 4's `group.consumer.migration.policy=bidirectional`) and
//! how members that still speak JoinGroup/SyncGroup/Heartbeat/LeaveGroup are served by the
//! consumer group's server-side assignment.
//!
//! Upgrade: when the first consumer-protocol member arrives at a classic group with members
//! that use the "consumer" protocol type (and no custom assignor data), `ConsumerGroup::from_classic` seeds a
//! consumer group with them: each keeps its protocols, timeouts, subscription (decoded from its
//! JoinGroup metadata) and the assignment it got in SyncGroup, at member epoch = the classic
//! generation, which becomes the group epoch. The classic group is dropped; committed offsets
//! live in the metadata image and are shared, so nothing moves. Downgrade: once only classic
//! members are left, `downgrade_seeds` hands them back to a classic group (`membership`).
//!
//! A classic member cannot be told to give up partitions mid-flight; it learns of a change
//! from Heartbeat (REBALANCE_IN_PROGRESS whenever what it holds differs from its target) and
//! rejoins. Its JoinGroup carries the partitions it still owns (an eager client revoked them
//! all, a cooperative one keeps what it was not told to drop): the rest are released at once,
//! then the member reconciles like a consumer-protocol member (`ConsumerGroup::reconcile`),
//! so it only ever receives partitions no other member holds or is revoking. SyncGroup hands
//! out what it may own at its epoch, encoded as a ConsumerProtocolAssignment; the client never
//! leads (the JoinGroup response names no leader and no members), so it runs no assignor.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedPartitions;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::{assignor, Assignment, ConsumerGroup, Heartbeat, Member, Refusal, TopicsView};
use crate::group::membership::{JoinRequest, JoinResult, SyncResult};
use crate::protocol::errors::ErrorCode;

/// What a member speaking the classic protocol keeps beside its consumer-group state.
#[derive(Debug, Clone)]
pub struct ClassicMember {
    /// Protocol name → metadata, as in its last JoinGroup.
    pub protocols: Vec<(String, Bytes)>,
    /// The protocol its JoinGroup and SyncGroup responses name.
    pub protocol_name: String,
    pub session_timeout: Duration,
    /// The ConsumerProtocolSubscription version it sent; its assignments use the same.
    pub version: i16,
}

/// A member of a classic group about to be upgraded (`Group::upgrade_seeds`).
#[derive(Debug, Clone)]
pub struct ClassicSeed {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    /// The ConsumerProtocolAssignment it got in SyncGroup.
    pub assignment: Bytes,
}

const PROTOCOL_TYPE: &str = "consumer";

fn inconsistent(message: String) -> Refusal {
    Refusal {
        code: ErrorCode::InconsistentGroupProtocol,
        message,
    }
}

/// The highest ConsumerProtocol version this broker reads and writes; newer clients' bytes
/// start with the fields of this one (Kafka reads them the same way).
const MAX_VERSION: i16 = 3;

/// The version a ConsumerProtocol message starts with (capped at `MAX_VERSION`) and its body;
/// `None` when too short or negative.
fn version_of(bytes: &Bytes) -> Option<(i16, Bytes)> {
    if bytes.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    (version >= 0).then(|| (version.min(MAX_VERSION), bytes.slice(2..)))
}

/// Decodes a member's ConsumerProtocolSubscription; `None` for malformed bytes.
pub fn decode_subscription(bytes: &Bytes) -> Option<(i16, ConsumerProtocolSubscription)> {
    let (version, mut body) = version_of(bytes)?;
    let sub = ConsumerProtocolSubscription::decode(&mut body, version).ok()?;
    Some((version, sub))
}

fn decode_raw_assignment(bytes: &Bytes) -> Option<ConsumerProtocolAssignment> {
    if bytes.is_empty() {
        return Some(ConsumerProtocolAssignment::default());
    }
    let (version, mut body) = version_of(bytes)?;
    ConsumerProtocolAssignment::decode(&mut body, version).ok()
}

/// Decodes a ConsumerProtocolAssignment (empty bytes: nothing assigned) into topic ids; topics
/// the image does not know are dropped.
pub fn decode_assignment(bytes: &Bytes, topics: &TopicsView) -> Option<Assignment> {
    let a = decode_raw_assignment(bytes)?;
    Some(to_ids(
        a.assigned_partitions
            .iter()
            .map(|t| (t.topic.0.as_str(), t.partitions.as_slice())),
        topics,
    ))
}

fn to_ids<'a>(
    parts: impl Iterator<Item = (&'a str, &'a [i32])>,
    topics: &TopicsView,
) -> Assignment {
    let mut out = Assignment::new();
    for (name, partitions) in parts {
        if let Some((id, count)) = topics.get(name) {
            out.entry(*id)
                .or_default()
                .extend(partitions.iter().filter(|p| (0..*count).contains(*p)));
        }
    }
    out.retain(|_, p| !p.is_empty());
    out
}

/// Encodes an assignment as the ConsumerProtocolAssignment a classic client reads.
pub fn encode_assignment(a: &Assignment, version: i16, topics: &TopicsView) -> Bytes {
    let partitions = topics
        .iter()
        .filter_map(|(name, (id, _))| {
            a.get(id).map(|p| {
                AssignedPartitions::default()
                    .with_topic(TopicName(StrBytes::from_string(name.clone())))
                    .with_partitions(p.iter().copied().collect())
            })
        })
        .collect();
    let version = version.clamp(0, MAX_VERSION);
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&version.to_be_bytes());
    ConsumerProtocolAssignment::default()
        .with_assigned_partitions(partitions)
        .encode(&mut buf, version)
        .expect("an assignment built here encodes");
    buf.freeze()
}

/// The subscription a classic member sends: its topics, and the partitions it still owns.
struct Subscription {
    version: i16,
    topics: Vec<String>,
    owned: Assignment,
    rack_id: Option<String>,
}

fn subscription(metadata: &Bytes, topics: &TopicsView) -> Option<Subscription> {
    let (version, sub) = decode_subscription(metadata)?;
    Some(Subscription {
        version,
        topics: sub.topics.iter().map(|t| t.to_string()).collect(),
        owned: to_ids(
            sub.owned_partitions
                .iter()
                .map(|t| (t.topic.0.as_str(), t.partitions.as_slice())),
            topics,
        ),
        rack_id: sub.rack_id.map(|r| r.to_string()),
    })
}

impl ConsumerGroup {
    /// A consumer group seeded with a classic group's members at `generation`: each keeps its
    /// subscription and last assignment, so nothing moves until the next change.
    pub fn from_classic(
        id: &str,
        generation: i32,
        protocol: &str,
        seeds: Vec<ClassicSeed>,
        topics: &TopicsView,
        now: Instant,
    ) -> Result<ConsumerGroup, Refusal> {
        let mut g = ConsumerGroup::new(id);
        g.epoch = generation;
        g.assignment_epoch = generation;
        for seed in seeds {
            let metadata = seed
                .protocols
                .iter()
                .find(|(n, _)| n == protocol)
                .map(|(_, md)| md.clone())
                .unwrap_or_default();
            let sub = subscription(&metadata, topics).ok_or_else(|| {
                inconsistent(format!(
                    "Member {} of classic group {id} sent a subscription that is not a \
                     ConsumerProtocolSubscription; the group cannot be upgraded.",
                    seed.id
                ))
            })?;
            let raw = decode_raw_assignment(&seed.assignment).ok_or_else(|| {
                inconsistent(format!(
                    "Member {} of classic group {id} holds an assignment that is not a \
                     ConsumerProtocolAssignment; the group cannot be upgraded.",
                    seed.id
                ))
            })?;
            if raw.user_data.as_ref().is_some_and(|u| !u.is_empty()) {
                // A client-side assignor's own data: the server-side assignor cannot keep it.
                return Err(inconsistent(format!(
                    "Cannot upgrade classic group {id} to consumer group because an unsupported \
                     custom assignor is in use. Please refer to the documentation or switch to a \
                     default assignor before re-attempting the upgrade."
                )));
            }
            let assigned = decode_assignment(&seed.assignment, topics).unwrap_or_default();
            let mut m = Member::new(&seed.id, &seed.client_id, &seed.client_host, now);
            m.instance_id = seed.instance_id;
            m.rack_id = sub.rack_id;
            m.epoch = generation;
            m.previous_epoch = generation;
            m.rebalance_timeout = seed.rebalance_timeout;
            m.session_deadline = now + seed.session_timeout;
            let mut names = sub.topics;
            names.sort();
            names.dedup();
            m.subscribed_names = names;
            m.assigned = assigned.clone();
            m.classic = Some(ClassicMember {
                protocols: seed.protocols,
                protocol_name: protocol.to_string(),
                session_timeout: seed.session_timeout,
                version: sub.version,
            });
            g.target.insert(seed.id.clone(), assigned);
            g.members.insert(seed.id, m);
        }
        g.subscribed_topics = g.resolve_subscriptions(topics);
        Ok(g)
    }

    /// The classic member `id`, checked against the generation it claims.
    fn classic_member(&self, id: &str, generation: i32) -> Result<&Member, ErrorCode> {
        let m = self
            .members
            .get(id)
            .filter(|m| m.classic.is_some())
            .ok_or(ErrorCode::UnknownMemberId)?;
        if m.epoch != generation {
            return Err(ErrorCode::IllegalGeneration);
        }
        Ok(m)
    }

    /// Does classic member `id` need to rejoin (its holdings differ from its target)?
    fn classic_must_rejoin(&self, m: &Member) -> bool {
        !m.revoking.is_empty()
            || m.epoch != self.assignment_epoch
            || self.target.get(&m.id).is_none_or(|t| *t != m.assigned)
    }

    /// Brings the target up to date after changes that did not recompute it (leaves, expiries).
    fn refresh_target(&mut self, topics: &TopicsView, epoch_before: i32) {
        self.refresh_subscribed_topics(topics, epoch_before);
        if self.epoch > self.assignment_epoch {
            self.compute_target(topics);
        }
    }

    /// JoinGroup from a classic member (new or known).
    pub fn classic_join(
        &mut self,
        req: &JoinRequest,
        topics: &TopicsView,
        now: Instant,
        new_member_id: impl FnOnce() -> String,
    ) -> JoinResult {
        let failed = |code: ErrorCode, member_id: &str| JoinResult {
            error: code.code(),
            generation_id: -1,
            member_id: member_id.to_string(),
            ..Default::default()
        };
        if req.protocol_type != PROTOCOL_TYPE || req.protocols.is_empty() {
            return failed(ErrorCode::InconsistentGroupProtocol, &req.member_id);
        }
        // A protocol every other classic member supports, the member's preference first.
        let Some((protocol, metadata)) = req
            .protocols
            .iter()
            .find(|(name, _)| {
                self.members
                    .values()
                    .filter(|m| m.id != req.member_id)
                    .filter_map(|m| m.classic.as_ref())
                    .all(|c| c.protocols.iter().any(|(n, _)| n == name))
            })
            .cloned()
        else {
            return failed(ErrorCode::InconsistentGroupProtocol, &req.member_id);
        };
        let Some(sub) = subscription(&metadata, topics) else {
            tracing::info!(group = %self.id, member = %req.member_id, "classic join refused: its metadata is not a ConsumerProtocolSubscription");
            return failed(ErrorCode::InconsistentGroupProtocol, &req.member_id);
        };
        let known = self
            .members
            .get(&req.member_id)
            .map(|m| m.classic.is_some());
        if known == Some(false) {
            // A consumer-protocol member's id: it cannot switch protocols without leaving.
            return failed(ErrorCode::UnknownMemberId, &req.member_id);
        }
        let id = if req.member_id.is_empty() {
            let id = new_member_id();
            if req.require_known_member_id && req.group_instance_id.is_none() {
                return failed(ErrorCode::MemberIdRequired, &id);
            }
            id
        } else {
            req.member_id.clone()
        };
        let epoch_before = self.epoch;
        if known.is_none() {
            if let Some(instance) = &req.group_instance_id {
                // A static member restarted: its old incarnation leaves.
                let old = self
                    .members
                    .values()
                    .find(|m| m.instance_id.as_ref() == Some(instance))
                    .map(|m| m.id.clone());
                if let Some(old) = old {
                    self.remove_member(&old);
                }
            }
            let mut m = Member::new(&id, &req.client_id, &req.client_host, now);
            m.instance_id = req.group_instance_id.clone();
            self.members.insert(id.clone(), m);
            self.epoch += 1;
        }
        let hb = Heartbeat {
            subscribed_topic_names: Some(sub.topics),
            rack_id: sub.rack_id,
            ..Default::default()
        };
        self.update_subscription(&id, &hb);
        let session_timeout = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
        let m = self.members.get_mut(&id).expect("present");
        m.classic = Some(ClassicMember {
            protocols: req.protocols.clone(),
            protocol_name: protocol.clone(),
            session_timeout,
            version: sub.version,
        });
        m.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64);
        m.session_deadline = now + session_timeout;
        // What it no longer owns is released now: eager clients revoke everything before
        // rejoining, cooperative ones what their last assignment dropped.
        let owned = assignor::intersection(&sub.owned, &assignor::union(&m.assigned, &m.revoking));
        m.assigned = assignor::intersection(&m.assigned, &owned);
        m.revoking = assignor::intersection(&m.revoking, &owned);
        if m.revoking.is_empty() {
            m.revocation_deadline = None;
        }
        self.refresh_target(topics, epoch_before);
        self.reconcile(&id, Some(&owned), now);
        JoinResult {
            error: 0,
            generation_id: self.members[&id].epoch,
            protocol_type: Some(PROTOCOL_TYPE.into()),
            protocol_name: Some(protocol),
            // Not the member: it must not run an assignor, the group assigns.
            leader: String::new(),
            member_id: id,
            members: Vec::new(),
        }
    }

    /// SyncGroup from a classic member: what it may own at its epoch. The assignments in the
    /// request (none from a member that does not lead) are ignored.
    pub fn classic_sync(
        &mut self,
        member_id: &str,
        generation: i32,
        topics: &TopicsView,
        now: Instant,
    ) -> SyncResult {
        let m = match self.classic_member(member_id, generation) {
            Ok(m) => m,
            Err(code) => {
                return SyncResult {
                    error: code.code(),
                    ..Default::default()
                }
            }
        };
        let classic = m.classic.as_ref().expect("a classic member");
        let result = SyncResult {
            error: 0,
            protocol_type: Some(PROTOCOL_TYPE.into()),
            protocol_name: Some(classic.protocol_name.clone()),
            assignment: encode_assignment(&m.assigned, classic.version, topics),
        };
        let deadline = now + classic.session_timeout;
        self.members
            .get_mut(member_id)
            .expect("checked")
            .session_deadline = deadline;
        result
    }

    /// Heartbeat from a classic member: REBALANCE_IN_PROGRESS while it should rejoin.
    pub fn classic_heartbeat(
        &mut self,
        member_id: &str,
        generation: i32,
        topics: &TopicsView,
        now: Instant,
    ) -> ErrorCode {
        let epoch_before = self.epoch;
        self.refresh_target(topics, epoch_before);
        let m = match self.classic_member(member_id, generation) {
            Ok(m) => m,
            Err(code) => return code,
        };
        let rejoin = self.classic_must_rejoin(m);
        let deadline = now
            + m.classic
                .as_ref()
                .expect("a classic member")
                .session_timeout;
        self.members
            .get_mut(member_id)
            .expect("checked")
            .session_deadline = deadline;
        if rejoin {
            ErrorCode::RebalanceInProgress
        } else {
            ErrorCode::None
        }
    }

    /// LeaveGroup of a classic member, by id or by instance id.
    pub fn classic_leave(&mut self, member_id: &str, instance_id: Option<&str>) -> ErrorCode {
        let id = if member_id.is_empty() {
            instance_id.and_then(|inst| {
                self.members
                    .values()
                    .find(|m| m.instance_id.as_deref() == Some(inst))
                    .map(|m| m.id.clone())
            })
        } else {
            Some(member_id.to_string())
        };
        match id.filter(|id| self.members.get(id).is_some_and(|m| m.classic.is_some())) {
            Some(id) => {
                self.remove_member(&id);
                ErrorCode::None
            }
            None => ErrorCode::UnknownMemberId,
        }
    }

    /// When only classic members are left (the last consumer-protocol member left), the
    /// generation and protocol of a classic group taking them back, and the members, each with
    /// what it may still own; `None` while a consumer-protocol member remains (or none at all).
    /// The generation is the newest member epoch (the group epoch before the leave, when the
    /// group was stable), so the members' commits stay valid while they rejoin.
    pub fn downgrade_seeds(&self, topics: &TopicsView) -> Option<(i32, String, Vec<ClassicSeed>)> {
        let classics: Vec<(&Member, &ClassicMember)> = self
            .members
            .values()
            .map(|m| m.classic.as_ref().map(|c| (m, c)))
            .collect::<Option<_>>()?;
        let first = classics.first()?.1;
        let protocol = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .find(|n| {
                classics
                    .iter()
                    .all(|(_, c)| c.protocols.iter().any(|(cn, _)| cn == *n))
            })
            .unwrap_or(&first.protocol_name)
            .clone();
        let generation = classics.iter().map(|(m, _)| m.epoch).max()?;
        let seeds = classics
            .into_iter()
            .map(|(m, c)| ClassicSeed {
                id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                session_timeout: c.session_timeout,
                rebalance_timeout: m.rebalance_timeout,
                protocols: c.protocols.clone(),
                assignment: encode_assignment(
                    &assignor::union(&m.assigned, &m.revoking),
                    c.version,
                    topics,
                ),
            })
            .collect();
        Some((generation, protocol, seeds))
    }

    /// Members still speaking the classic protocol.
    pub fn classic_members(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.classic.is_some())
            .count()
    }
}

#[cfg(test)]
mod tests;
