//! A classic group handing its members to a consumer-protocol group (upgrade) and taking them
//! back (downgrade), as Kafka 4 does under `group.consumer.migration.policy=bidirectional`.
//! The consumer side is `consumer_group/classic.rs`; the coordinator moves the group between
//! its two maps.

use std::time::{Duration, Instant};

use super::{err, Group, GroupState, JoinResult, Member, SyncResult};
use crate::group::consumer_group::ClassicSeed;
use crate::protocol::errors::ErrorCode;

impl Group {
    /// The members as a consumer-protocol group takes them over (`ConsumerGroup::from_classic`).
    pub fn upgrade_seeds(&self) -> Vec<ClassicSeed> {
        self.members
            .values()
            .map(|m| ClassicSeed {
                id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                session_timeout: m.session_timeout,
                rebalance_timeout: m.rebalance_timeout,
                protocols: m.protocols.clone(),
                assignment: m.assignment.clone(),
            })
            .collect()
    }

    /// The group was upgraded mid-rebalance: members waiting in JoinGroup or SyncGroup are told
    /// to rejoin (REBALANCE_IN_PROGRESS), which the consumer group then answers.
    pub fn release_waiters(&mut self) {
        for m in self.members.values_mut() {
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResult {
                    error: err(ErrorCode::RebalanceInProgress),
                    generation_id: -1,
                    member_id: m.id.clone(),
                    ..Default::default()
                });
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult {
                    error: err(ErrorCode::RebalanceInProgress),
                    ..Default::default()
                });
            }
        }
    }

    /// A classic group taking back the classic members of a consumer group whose last
    /// consumer-protocol member left: it starts rebalancing at `generation` (the consumer
    /// group's epoch), so every member rejoins and the elected leader assigns again. Until
    /// then each keeps the assignment it holds.
    pub fn from_consumer(
        id: &str,
        generation: i32,
        protocol_name: String,
        seeds: Vec<ClassicSeed>,
        initial_delay: Duration,
        now: Instant,
    ) -> Group {
        let mut g = Group::new(id, initial_delay);
        g.generation = generation;
        g.protocol_type = Some("consumer".into());
        g.protocol_name = Some(protocol_name);
        g.state = GroupState::Stable;
        for s in seeds {
            g.members.insert(
                s.id.clone(),
                Member {
                    id: s.id,
                    instance_id: s.instance_id,
                    client_id: s.client_id,
                    client_host: s.client_host,
                    session_timeout: s.session_timeout,
                    rebalance_timeout: s.rebalance_timeout,
                    protocols: s.protocols,
                    assignment: s.assignment,
                    last_heartbeat: now,
                    join_waiter: None,
                    sync_waiter: None,
                },
            );
        }
        g.prepare_rebalance(now);
        g
    }
}
