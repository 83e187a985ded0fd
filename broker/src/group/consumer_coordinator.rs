//! The coordinator's side of consumer-protocol groups (KIP-848): routes ConsumerGroupHeartbeat
//! to the group's state machine (`consumer_group`), describes groups for
//! ConsumerGroupDescribe, and removes members whose session or revocation time ran out.
//!
//! A group id is in one of the two maps at a time. The first consumer-protocol member of a
//! classic group with members upgrades it (Kafka 4's bidirectional migration policy): the classic
//! members become classic members of the new consumer group (`consumer_group/classic.rs`) and
//! keep speaking JoinGroup/SyncGroup/Heartbeat, which `coordinator.rs` routes there. As in
//! Kafka, a group mid-rebalance is upgraded too: its waiting members are told to rejoin
//! (REBALANCE_IN_PROGRESS) and keep their last assignment meanwhile. No group is upgraded
//! whose members are not consumers or that uses a custom assignor's user data
//! (GROUP_ID_NOT_FOUND). An empty classic group (only offsets) becomes a consumer group on its
//! first heartbeat. When the last consumer-protocol member leaves and classic members remain,
//! the group goes back to a classic group that rebalances (the downgrade).
//! Membership lives in memory, like classic membership; committed offsets are shared with
//! classic groups through the metadata image.

use std::time::Instant;

use super::assignor::Assignment;
use super::consumer_group::{
    state_name, ConsumerGroup, Heartbeat, HeartbeatOutcome, Refusal, TopicsView,
};
use super::coordinator::GroupCoordinator;
use super::membership::Group;
use crate::protocol::errors::ErrorCode;

/// One member as ConsumerGroupDescribe shows it.
#[derive(Debug, Clone)]
pub struct ConsumerMemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub assignment: Assignment,
    pub target_assignment: Assignment,
    /// The member speaks the classic protocol (JoinGroup/SyncGroup).
    pub classic: bool,
}

/// A consumer-protocol group as ConsumerGroupDescribe shows it.
#[derive(Debug, Clone)]
pub struct ConsumerGroupDescription {
    pub group_id: String,
    pub state: &'static str,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: &'static str,
    pub members: Vec<ConsumerMemberDescription>,
}

/// The consumer group a live classic group becomes when a consumer-protocol member joins.
fn upgrade(g: &Group, hb: &Heartbeat, topics: &TopicsView) -> Result<ConsumerGroup, Refusal> {
    let id = &g.id;
    let refused = |code: ErrorCode, message: String| Err(Refusal { code, message });
    if hb.member_epoch != 0 {
        return refused(
            ErrorCode::GroupIdNotFound,
            format!(
                "Group {id} is a classic group; member {} is not in it.",
                hb.member_id
            ),
        );
    }
    if hb.subscribed_topic_names.is_none() && hb.subscribed_topic_regex.is_none() {
        // Refused by the heartbeat anyway: the group is left as it is.
        return refused(
            ErrorCode::InvalidRequest,
            "SubscribedTopicNames or SubscribedTopicRegex must be set in the first heartbeat."
                .into(),
        );
    }
    if g.protocol_type.as_deref() != Some("consumer") {
        return refused(
            ErrorCode::GroupIdNotFound,
            format!(
                "Group {id} is a classic group of protocol type {:?}, not consumers; it cannot \
                 be upgraded to the consumer protocol.",
                g.protocol_type.as_deref().unwrap_or_default()
            ),
        );
    }
    let protocol = g.protocol_name.clone().unwrap_or_default();
    ConsumerGroup::from_classic(
        id,
        g.generation,
        &protocol,
        g.upgrade_seeds(),
        topics,
        Instant::now(),
    )
    .map_err(|r| Refusal {
        code: ErrorCode::GroupIdNotFound,
        message: r.message,
    })
}

impl GroupCoordinator {
    /// The heartbeat interval members are told to keep.
    pub fn consumer_heartbeat_interval_ms(&self) -> i32 {
        i32::try_from(self.consumer_timeouts.heartbeat_interval.as_millis()).unwrap_or(i32::MAX)
    }

    /// Handles a ConsumerGroupHeartbeat. `topics` are the topics of the image the member may
    /// see (name → id, partition count).
    pub async fn consumer_heartbeat(
        &self,
        group_id: &str,
        hb: Heartbeat,
        topics: &TopicsView,
    ) -> Result<HeartbeatOutcome, Refusal> {
        if group_id.is_empty() {
            return Err(Refusal {
                code: ErrorCode::InvalidGroupId,
                message: "The group id must not be empty.".into(),
            });
        }
        // Waits for a deletion of the group under way.
        let _shared = self.deletion.read().await;
        // Both maps, in the coordinator's lock order: a group moves between them atomically.
        let mut classic = self.groups.lock();
        let mut groups = self.consumer_groups.lock();
        match classic.get(group_id) {
            Some(g) if !g.is_empty() => {
                let upgraded = upgrade(g, &hb, topics)?;
                let mut old = classic.remove(group_id).expect("present");
                old.release_waiters();
                tracing::info!(
                    group = group_id,
                    epoch = upgraded.epoch,
                    members = upgraded.members.len(),
                    was = old.state.as_str(),
                    "classic group upgraded to a consumer group"
                );
                groups.insert(group_id.to_string(), upgraded);
            }
            Some(_) => {
                classic.remove(group_id);
            }
            None => {}
        }
        let group = groups
            .entry(group_id.to_string())
            .or_insert_with(|| ConsumerGroup::new(group_id));
        let before = (group.epoch, group.members.len());
        let leaving = hb.member_epoch < 0;
        let outcome = group.heartbeat(hb, topics, Instant::now(), self.consumer_timeouts, || {
            uuid::Uuid::new_v4().to_string()
        });
        if (group.epoch, group.members.len()) != before {
            tracing::info!(
                group = group_id,
                epoch = group.epoch,
                members = group.members.len(),
                state = state_name(group),
                "consumer group changed"
            );
        }
        if leaving {
            if let Some(downgraded) = self.downgrade(group) {
                groups.remove(group_id);
                classic.insert(group_id.to_string(), downgraded);
            } else if group.is_empty() && !self.has_offsets(group_id) {
                groups.remove(group_id);
            }
        }
        outcome
    }

    /// ConsumerGroupDescribe of one group: `Err` GROUP_ID_NOT_FOUND for a classic or unknown
    /// group (admin clients then fall back to DescribeGroups).
    pub fn consumer_describe(&self, group_id: &str) -> Result<ConsumerGroupDescription, Refusal> {
        let groups = self.consumer_groups.lock();
        let Some(g) = groups.get(group_id) else {
            return Err(Refusal {
                code: ErrorCode::GroupIdNotFound,
                message: format!("Group {group_id} is not a consumer group."),
            });
        };
        Ok(ConsumerGroupDescription {
            group_id: g.id.clone(),
            state: state_name(g),
            group_epoch: g.epoch,
            assignment_epoch: g.assignment_epoch,
            assignor: g.assignor.name(),
            members: g
                .members
                .values()
                .map(|m| ConsumerMemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    member_epoch: m.epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed_topic_names: m.subscribed_names.clone(),
                    subscribed_topic_regex: m.subscribed_regex.clone(),
                    assignment: m.assigned.clone(),
                    target_assignment: g.target.get(&m.id).cloned().unwrap_or_default(),
                    classic: m.classic.is_some(),
                })
                .collect(),
        })
    }

    /// Removes members whose session or revocation deadline passed, and groups left empty
    /// without committed offsets.
    pub(super) fn expire_consumer_members(&self, now: Instant) {
        let mut classic = self.groups.lock();
        let mut groups = self.consumer_groups.lock();
        let mut downgraded = Vec::new();
        for g in groups.values_mut() {
            let expired = g.expire(now);
            for member in &expired {
                tracing::info!(group = %g.id, member, "consumer group member removed: session or revocation timeout");
            }
            if !expired.is_empty() {
                downgraded.extend(self.downgrade(g).map(|d| (g.id.clone(), d)));
            }
        }
        for (id, g) in downgraded {
            groups.remove(&id);
            classic.insert(id, g);
        }
        groups.retain(|id, g| !g.is_empty() || self.has_offsets(id));
    }

    /// The classic group a consumer group becomes once only classic members are left in it
    /// (Kafka 4's downgrade under the bidirectional migration policy).
    fn downgrade(&self, g: &ConsumerGroup) -> Option<Group> {
        let (generation, protocol, seeds) = g.downgrade_seeds(&self.topics_view())?;
        tracing::info!(group = %g.id, generation, members = seeds.len(), "consumer group downgraded to a classic group: only classic members are left");
        Some(Group::from_consumer(
            &g.id,
            generation,
            protocol,
            seeds,
            self.initial_delay,
            Instant::now(),
        ))
    }
}
