//! The coordinator's side of consumer-protocol groups (KIP-848): routes ConsumerGroupHeartbeat
//! to the group's state machine (`consumer_group`), describes groups for
//! ConsumerGroupDescribe, and removes members whose session or revocation time ran out.
//!
//! A group id speaks one protocol at a time. A consumer-protocol member cannot join a classic
//! group that has members (GROUP_ID_NOT_FOUND, as Kafka answers when conversion is off) and a
//! classic JoinGroup to an active consumer group is refused with INCONSISTENT_GROUP_PROTOCOL;
//! an empty classic group (only offsets) becomes a consumer group on its first heartbeat.
//! Membership lives in memory, like classic membership; committed offsets are shared with
//! classic groups through the metadata image.

use std::time::Instant;

use super::assignor::Assignment;
use super::consumer_group::{
    state_name, ConsumerGroup, Heartbeat, HeartbeatOutcome, Refusal, TopicsView,
};
use super::coordinator::GroupCoordinator;
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
        {
            let mut classic = self.groups.lock();
            match classic.get(group_id) {
                Some(g) if !g.is_empty() => {
                    return Err(Refusal {
                        code: ErrorCode::GroupIdNotFound,
                        message: format!(
                            "Group {group_id} is a classic group with active members; members \
                             with group.protocol=consumer can join it once it is empty."
                        ),
                    })
                }
                Some(_) => {
                    classic.remove(group_id);
                }
                None => {}
            }
        }
        let mut groups = self.consumer_groups.lock();
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
        if leaving && group.is_empty() && !self.has_offsets(group_id) {
            groups.remove(group_id);
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
                })
                .collect(),
        })
    }

    /// Removes members whose session or revocation deadline passed, and groups left empty
    /// without committed offsets.
    pub(super) fn expire_consumer_members(&self, now: Instant) {
        let mut groups = self.consumer_groups.lock();
        for g in groups.values_mut() {
            for member in g.expire(now) {
                tracing::info!(group = %g.id, member, "consumer group member removed: session or revocation timeout");
            }
        }
        groups.retain(|id, g| !g.is_empty() || self.has_offsets(id));
    }
}
