//! The group coordinator: all groups of this broker, their committed offsets, and the periodic
//! tick that expires sessions and completes timed-out rebalances.
//!
//! Committed offsets have one owner, the metadata image: the coordinator reads them from the
//! current snapshot and changes them only through quorum writes, awaited (never blocking a
//! runtime worker): OffsetCommit, OffsetDelete and DeleteGroups answer only once the change is
//! applied on this node. So a restart, a new coordinator or a full local disk never leaves this
//! node answering offsets other than the quorum's. Group
//! deletion runs alone (the `deletion` lock), so a group cannot gain members or offsets between
//! its emptiness check and the durable removal of its offsets.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use super::consumer_group::{self, ConsumerGroup, Timeouts};
use super::membership::{
    Group, GroupState, JoinOutcome, JoinRequest, JoinResult, MemberSnapshot, SyncOutcome,
    SyncResult,
};
use super::offsets::{CommittedOffset, GroupOffsets};
use crate::config::Config;
use crate::metadata::{MetadataCache, ReplicatedOffset};
use crate::protocol::errors::ErrorCode;

/// Writes offset changes through the metadata log; the change reaches every node's image when
/// it is applied. The returned future resolves once the write is committed and applied on
/// this node.
pub type OffsetReplicator = Box<
    dyn Fn(&str, Vec<ReplicatedOffset>) -> Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>
        + Send
        + Sync,
>;

pub struct GroupCoordinator {
    pub(super) groups: Mutex<HashMap<String, Group>>,
    /// Consumer-protocol (KIP-848) groups, `consumer_group.rs`, with their classic members. A
    /// group id is in at most one of the two maps.
    pub(super) consumer_groups: Mutex<HashMap<String, ConsumerGroup>>,
    pub(super) consumer_timeouts: Timeouts,
    /// Where committed offsets are read (`group_offsets` of the current image).
    metadata: Arc<MetadataCache>,
    replicator: OnceLock<OffsetReplicator>,
    /// Group deletion takes it exclusively across its check and its (awaited) offset write;
    /// joins, offset commits and offset deletions share it. An async lock: it is held across
    /// quorum writes, where the `groups` mutex must never be.
    pub(super) deletion: tokio::sync::RwLock<()>,
    pub(super) initial_delay: Duration,
    min_session_ms: i32,
    max_session_ms: i32,
}

/// Which protocol a group speaks (ListGroups v5 `GroupType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupType {
    Classic,
    Consumer,
}

impl GroupType {
    pub fn name(self) -> &'static str {
        match self {
            GroupType::Classic => "classic",
            GroupType::Consumer => "consumer",
        }
    }
}

/// A group as ListGroups shows it.
#[derive(Debug, Clone)]
pub struct ListedGroup {
    pub id: String,
    pub protocol_type: String,
    pub state: &'static str,
    pub group_type: GroupType,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberSnapshot>,
}

impl GroupCoordinator {
    pub fn new(config: &Config, metadata: Arc<MetadataCache>) -> GroupCoordinator {
        GroupCoordinator {
            groups: Mutex::new(HashMap::new()),
            consumer_groups: Mutex::new(HashMap::new()),
            consumer_timeouts: Timeouts {
                session: Duration::from_millis(config.group_consumer_session_timeout_ms),
                heartbeat_interval: Duration::from_millis(
                    config.group_consumer_heartbeat_interval_ms,
                ),
            },
            metadata,
            replicator: OnceLock::new(),
            deletion: tokio::sync::RwLock::new(()),
            initial_delay: Duration::from_millis(config.group_initial_rebalance_delay_ms),
            min_session_ms: config.group_min_session_timeout_ms,
            max_session_ms: config.group_max_session_timeout_ms,
        }
    }

    /// Offset changes go through `replicator` (the metadata quorum); set once the broker is
    /// open.
    pub fn set_replicator(&self, replicator: OffsetReplicator) {
        let _ = self.replicator.set(replicator);
    }

    /// Writes offset changes (`None`: delete) through the metadata quorum.
    async fn store(
        &self,
        group: &str,
        changes: Vec<(String, i32, Option<CommittedOffset>)>,
    ) -> std::io::Result<()> {
        let Some(replicate) = self.replicator.get() else {
            return Err(std::io::Error::other(
                "offsets cannot be written before the broker is open",
            ));
        };
        let offsets = changes
            .into_iter()
            .map(|(topic, partition, committed)| ReplicatedOffset {
                topic,
                partition,
                committed,
            })
            .collect();
        replicate(group, offsets).await
    }

    /// Every topic of the current image (name → id, partitions), for classic members of
    /// consumer groups: they subscribe by names they learned from Metadata.
    pub(super) fn topics_view(&self) -> consumer_group::TopicsView {
        self.metadata
            .snapshot()
            .topics
            .values()
            .map(|t| (t.name.clone(), (t.id, t.partitions.len() as i32)))
            .collect()
    }

    /// Does the image hold committed offsets of `group`?
    pub(super) fn has_offsets(&self, group: &str) -> bool {
        self.metadata.snapshot().group_offsets.contains_key(group)
    }

    pub async fn join(&self, group_id: &str, req: JoinRequest) -> JoinResult {
        tracing::debug!(group = group_id, member = %req.member_id, "join");
        if group_id.is_empty() {
            return JoinResult {
                error: ErrorCode::InvalidGroupId.code(),
                member_id: req.member_id,
                ..Default::default()
            };
        }
        if req.session_timeout_ms < self.min_session_ms
            || req.session_timeout_ms > self.max_session_ms
        {
            return JoinResult {
                error: ErrorCode::InvalidSessionTimeout.code(),
                member_id: req.member_id,
                ..Default::default()
            };
        }
        let outcome = {
            // Waits for a deletion of the group under way, as the `groups` lock did when the
            // deletion held it.
            let _shared = self.deletion.read().await;
            // Both maps, in the coordinator's lock order (classic first): a heartbeat cannot
            // move the group between them meanwhile.
            let mut groups = self.groups.lock();
            {
                let mut consumer_groups = self.consumer_groups.lock();
                match consumer_groups.get_mut(group_id) {
                    Some(g) if !g.is_empty() => {
                        // A classic member of a consumer-protocol group (Kafka 4's
                        // bidirectional migration policy): the consumer group assigns.
                        let client_id = req.client_id.clone();
                        let r = g.classic_join(&req, &self.topics_view(), Instant::now(), || {
                            format!("{}-{}", client_id, uuid::Uuid::new_v4())
                        });
                        tracing::debug!(group = group_id, member = %r.member_id, error = r.error, generation = r.generation_id, "classic join to a consumer group");
                        return r;
                    }
                    Some(_) => {
                        // Only offsets: the group becomes classic.
                        consumer_groups.remove(group_id);
                    }
                    None => {}
                }
            }
            let g = groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id, self.initial_delay));
            let client_id = req.client_id.clone();
            g.join(
                req,
                || format!("{}-{}", client_id, uuid::Uuid::new_v4()),
                Instant::now(),
            )
        };
        match outcome {
            JoinOutcome::Now(r) => r,
            JoinOutcome::Wait(rx) => rx.await.unwrap_or(JoinResult {
                error: ErrorCode::UnknownServerError.code(),
                ..Default::default()
            }),
        }
    }

    pub async fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncResult {
        tracing::debug!(group = group_id, member = member_id, generation, "sync");
        if let Some(g) = self.consumer_groups.lock().get_mut(group_id) {
            return g.classic_sync(member_id, generation, &self.topics_view(), Instant::now());
        }
        let outcome = {
            let mut groups = self.groups.lock();
            match groups.get_mut(group_id) {
                Some(g) => g.sync(member_id, generation, assignments, Instant::now()),
                None => SyncOutcome::Now(SyncResult {
                    error: ErrorCode::UnknownMemberId.code(),
                    ..Default::default()
                }),
            }
        };
        match outcome {
            SyncOutcome::Now(r) => r,
            SyncOutcome::Wait(rx) => rx.await.unwrap_or(SyncResult {
                error: ErrorCode::RebalanceInProgress.code(),
                ..Default::default()
            }),
        }
    }

    pub fn heartbeat(&self, group_id: &str, member_id: &str, generation: i32) -> ErrorCode {
        if let Some(g) = self.consumer_groups.lock().get_mut(group_id) {
            return g.classic_heartbeat(member_id, generation, &self.topics_view(), Instant::now());
        }
        match self.groups.lock().get_mut(group_id) {
            Some(g) => g.heartbeat(member_id, generation, Instant::now()),
            None => ErrorCode::UnknownMemberId,
        }
    }

    /// Removes members; members are named by id, or by instance id for static members.
    pub fn leave(&self, group_id: &str, members: &[(String, Option<String>)]) -> Vec<ErrorCode> {
        tracing::debug!(group = group_id, ?members, "leave");
        if let Some(g) = self.consumer_groups.lock().get_mut(group_id) {
            return members
                .iter()
                .map(|(id, instance)| g.classic_leave(id, instance.as_deref()))
                .collect();
        }
        let mut groups = self.groups.lock();
        let Some(g) = groups.get_mut(group_id) else {
            return members.iter().map(|_| ErrorCode::UnknownMemberId).collect();
        };
        let now = Instant::now();
        members
            .iter()
            .map(|(id, instance)| {
                let id = match (id.is_empty(), instance) {
                    (true, Some(inst)) => g.find_static_member(inst).unwrap_or_default(),
                    _ => id.clone(),
                };
                if g.remove_member(&id, now) {
                    ErrorCode::None
                } else {
                    ErrorCode::UnknownMemberId
                }
            })
            .collect()
    }

    pub fn tick(&self) {
        let now = Instant::now();
        for g in self.groups.lock().values_mut() {
            g.tick(now);
        }
        self.expire_consumer_members(now);
    }

    /// Validates and stores offsets; returns one error for the whole request (per Kafka), once
    /// the offsets are durable in the metadata quorum.
    pub async fn commit_offsets(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        items: Vec<(String, i32, i64, i32, Option<String>)>,
    ) -> ErrorCode {
        if group_id.is_empty() {
            return ErrorCode::InvalidGroupId;
        }
        // Held until the offsets are stored: a deletion of the group comes wholly before or after.
        let _shared = self.deletion.read().await;
        {
            let consumer = self
                .consumer_groups
                .lock()
                .get(group_id)
                .map(|g| g.check_commit(member_id, generation));
            let groups = self.groups.lock();
            let code = match (consumer, groups.get(group_id)) {
                (Some(Ok(())), _) => ErrorCode::None,
                (Some(Err(refusal)), _) => refusal.code,
                (None, Some(g)) => g.check_commit(member_id, generation),
                (None, None) if generation < 0 => ErrorCode::None,
                (None, None) => ErrorCode::IllegalGeneration,
            };
            if code != ErrorCode::None {
                return code;
            }
        }
        tracing::debug!(group = group_id, member = member_id, generation, offsets = ?items.iter().map(|i| (i.1, i.2)).collect::<Vec<_>>(), "offset commit");
        let now = crate::state::now_ms();
        let entries = items
            .into_iter()
            .map(|(t, p, offset, leader_epoch, metadata)| {
                (
                    t,
                    p,
                    Some(CommittedOffset {
                        offset,
                        leader_epoch,
                        metadata,
                        commit_ms: now,
                    }),
                )
            })
            .collect();
        match self.store(group_id, entries).await {
            Ok(()) => ErrorCode::None,
            Err(e) => {
                tracing::error!(group = group_id, error = %e, "offset commit could not be stored");
                ErrorCode::UnknownServerError
            }
        }
    }

    pub fn committed(&self, group_id: &str) -> GroupOffsets {
        self.metadata
            .snapshot()
            .group_offsets
            .get(group_id)
            .cloned()
            .unwrap_or_default()
    }

    /// DescribeGroups: classic groups. A consumer-protocol group is answered
    /// GROUP_ID_NOT_FOUND (`None`), as Kafka does, so admin clients use ConsumerGroupDescribe.
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        if self.consumer_groups.lock().contains_key(group_id) {
            return None;
        }
        Some(self.describe_classic(group_id))
    }

    fn describe_classic(&self, group_id: &str) -> GroupDescription {
        let groups = self.groups.lock();
        match groups.get(group_id) {
            Some(g) => GroupDescription {
                group_id: group_id.to_string(),
                state: g.state.as_str(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                protocol: g.protocol_name.clone().unwrap_or_default(),
                members: g.members(),
            },
            None => {
                let known = self.has_offsets(group_id);
                GroupDescription {
                    group_id: group_id.to_string(),
                    state: if known { "Empty" } else { "Dead" },
                    protocol_type: if known {
                        "consumer".into()
                    } else {
                        String::new()
                    },
                    protocol: String::new(),
                    members: Vec::new(),
                }
            }
        }
    }

    /// Every known group (with members or committed offsets).
    pub fn list(&self) -> Vec<ListedGroup> {
        let image = self.metadata.snapshot();
        let offsets = &image.group_offsets;
        let groups = self.groups.lock();
        let consumer_groups = self.consumer_groups.lock();
        let mut out: Vec<ListedGroup> = groups
            .values()
            .filter(|g| !g.is_empty() || offsets.contains_key(&g.id))
            .map(|g| ListedGroup {
                id: g.id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_else(|| "consumer".into()),
                state: g.state.as_str(),
                group_type: GroupType::Classic,
            })
            .collect();
        out.extend(consumer_groups.values().map(|g| ListedGroup {
            id: g.id.clone(),
            protocol_type: "consumer".into(),
            state: consumer_group::state_name(g),
            group_type: GroupType::Consumer,
        }));
        for id in offsets.keys() {
            if !groups.contains_key(id) && !consumer_groups.contains_key(id) {
                out.push(ListedGroup {
                    id: id.clone(),
                    protocol_type: "consumer".into(),
                    state: GroupState::Empty.as_str(),
                    group_type: GroupType::Classic,
                });
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    pub async fn delete_group(&self, group_id: &str) -> ErrorCode {
        // Alone until its offsets are deleted: no join or offset commit slips in between.
        let _alone = self.deletion.write().await;
        let keys: Vec<(String, i32, Option<CommittedOffset>)> = {
            let image = self.metadata.snapshot();
            let known = image.group_offsets.get(group_id);
            {
                let mut consumer_groups = self.consumer_groups.lock();
                match consumer_groups.get(group_id) {
                    Some(g) if !g.is_empty() => return ErrorCode::NonEmptyGroup,
                    Some(_) => {
                        consumer_groups.remove(group_id);
                    }
                    None => {}
                }
            }
            let mut groups = self.groups.lock();
            match groups.get(group_id) {
                Some(g) if !g.is_empty() => return ErrorCode::NonEmptyGroup,
                None if known.is_none() => return ErrorCode::GroupIdNotFound,
                _ => {}
            }
            groups.remove(group_id);
            known
                .map(|g| g.keys().map(|(t, p)| (t.clone(), *p, None)).collect())
                .unwrap_or_default()
        };
        if keys.is_empty() {
            return ErrorCode::None;
        }
        if let Err(e) = self.store(group_id, keys).await {
            tracing::error!(group = group_id, error = %e, "deleting group offsets failed");
            return ErrorCode::UnknownServerError;
        }
        ErrorCode::None
    }

    /// Deletes offsets of partitions; refused for topics the active group subscribes to.
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<(String, i32, ErrorCode)>, ErrorCode> {
        let _shared = self.deletion.read().await;
        let consumer_subscribed = self
            .consumer_groups
            .lock()
            .get(group_id)
            .filter(|g| !g.is_empty())
            .map(|g| g.subscribed_topic_names().into_iter().collect::<Vec<_>>());
        let subscribed: Vec<String> = if let Some(topics) = consumer_subscribed {
            topics
        } else {
            let groups = self.groups.lock();
            match groups.get(group_id) {
                Some(g) if !g.is_empty() && g.protocol_type.as_deref() == Some("consumer") => {
                    subscribed_topics(&g.member_metadata())
                }
                Some(_) => Vec::new(),
                None if self.has_offsets(group_id) => Vec::new(),
                None => return Err(ErrorCode::GroupIdNotFound),
            }
        };
        let mut results = Vec::new();
        let mut to_delete = Vec::new();
        for (t, p) in partitions {
            if subscribed.contains(&t) {
                results.push((t, p, ErrorCode::GroupSubscribedToTopic));
            } else {
                to_delete.push((t.clone(), p, None));
                results.push((t, p, ErrorCode::None));
            }
        }
        if !to_delete.is_empty() {
            if let Err(e) = self.store(group_id, to_delete).await {
                tracing::error!(group = group_id, error = %e, "deleting offsets failed");
                return Err(ErrorCode::UnknownServerError);
            }
        }
        Ok(results)
    }
}

/// Topics named in consumer-protocol subscriptions (ConsumerProtocolSubscription).
fn subscribed_topics(metadata: &[Bytes]) -> Vec<String> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    let mut out = Vec::new();
    for md in metadata {
        let mut buf = md.clone();
        if buf.len() < 2 {
            continue;
        }
        let version = i16::from_be_bytes([buf[0], buf[1]]);
        let _ = bytes::Buf::get_i16(&mut buf);
        if let Ok(sub) = ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3)) {
            out.extend(sub.topics.iter().map(|t| t.to_string()));
        }
    }
    out
}
