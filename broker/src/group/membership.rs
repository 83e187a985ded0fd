//! One consumer group's membership state machine (Kafka's classic rebalance protocol).
//!
//! Pure state plus waiters: time is passed in, nothing here does I/O, so the transitions are
//! unit-tested directly. States: Empty -> PreparingRebalance -> CompletingRebalance -> Stable.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;
use tokio::sync::oneshot;

use crate::protocol::errors::ErrorCode;

mod migration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member must first get an id (MEMBER_ID_REQUIRED) and rejoin with it.
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: i16,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: (member id, instance id, metadata for the chosen protocol).
    pub members: Vec<(String, Option<String>, Bytes)>,
}

#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
pub struct MemberSnapshot {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heartbeat: Instant,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    members: IndexMap<String, Member>,
    pending_members: HashSet<String>,
    rebalance_deadline: Option<Instant>,
    /// For the first rebalance of an empty group: wait this long for more members (extended on
    /// each join up to the rebalance timeout), so a group starting together rebalances once.
    initial_delay: Duration,
    initial_delay_until: Option<Instant>,
}

fn err(code: ErrorCode) -> i16 {
    code.code()
}

/// What a join produced: an answer now, or a receiver that the rebalance completes.
pub enum JoinOutcome {
    Now(JoinResult),
    Wait(oneshot::Receiver<JoinResult>),
}

pub enum SyncOutcome {
    Now(SyncResult),
    Wait(oneshot::Receiver<SyncResult>),
}

impl Group {
    pub fn new(id: &str, initial_delay: Duration) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: IndexMap::new(),
            pending_members: HashSet::new(),
            rebalance_deadline: None,
            initial_delay,
            initial_delay_until: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn has_member(&self, id: &str) -> bool {
        self.members.contains_key(id)
    }

    pub fn members(&self) -> Vec<MemberSnapshot> {
        self.members
            .values()
            .map(|m| MemberSnapshot {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: self
                    .protocol_name
                    .as_ref()
                    .and_then(|p| m.protocols.iter().find(|(n, _)| n == p))
                    .map(|(_, md)| md.clone())
                    .unwrap_or_default(),
                assignment: m.assignment.clone(),
            })
            .collect()
    }

    /// Subscribed protocol metadata of every member for the chosen protocol.
    pub fn member_metadata(&self) -> Vec<Bytes> {
        self.members().into_iter().map(|m| m.metadata).collect()
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(60))
    }

    pub fn join(
        &mut self,
        req: JoinRequest,
        new_member_id: impl FnOnce() -> String,
        now: Instant,
    ) -> JoinOutcome {
        if req.protocols.is_empty() || req.protocol_type.is_empty() {
            return JoinOutcome::Now(JoinResult {
                error: err(ErrorCode::InconsistentGroupProtocol),
                ..Default::default()
            });
        }
        if !self.members.is_empty() {
            let same_type = self.protocol_type.as_deref() == Some(req.protocol_type.as_str());
            let common = self.members.values().all(|m| {
                m.protocols
                    .iter()
                    .any(|(n, _)| req.protocols.iter().any(|(rn, _)| rn == n))
            });
            if !same_type || !common {
                return JoinOutcome::Now(JoinResult {
                    error: err(ErrorCode::InconsistentGroupProtocol),
                    member_id: req.member_id,
                    ..Default::default()
                });
            }
        }
        let mut member_id = req.member_id.clone();
        if member_id.is_empty() {
            // Static members keep their slot across restarts: replace the old member id.
            if let Some(instance) = &req.group_instance_id {
                if let Some(old) = self
                    .members
                    .values()
                    .find(|m| m.instance_id.as_ref() == Some(instance))
                    .map(|m| m.id.clone())
                {
                    if let Some(mut m) = self.members.shift_remove(&old) {
                        if let Some(w) = m.join_waiter.take() {
                            let _ = w.send(JoinResult {
                                error: err(ErrorCode::FencedInstanceId),
                                member_id: old.clone(),
                                ..Default::default()
                            });
                        }
                        if self.leader.as_deref() == Some(old.as_str()) {
                            self.leader = None;
                        }
                    }
                }
            }
            member_id = new_member_id();
            if req.require_known_member_id && req.group_instance_id.is_none() {
                self.pending_members.insert(member_id.clone());
                return JoinOutcome::Now(JoinResult {
                    error: err(ErrorCode::MemberIdRequired),
                    member_id,
                    generation_id: -1,
                    ..Default::default()
                });
            }
        } else if !self.members.contains_key(&member_id) && !self.pending_members.remove(&member_id)
        {
            return JoinOutcome::Now(JoinResult {
                error: err(ErrorCode::UnknownMemberId),
                member_id,
                ..Default::default()
            });
        }

        let (tx, rx) = oneshot::channel();
        let changed = match self.members.get_mut(&member_id) {
            Some(m) => {
                let changed = m.protocols != req.protocols;
                m.protocols = req.protocols.clone();
                m.session_timeout = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
                m.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64);
                m.last_heartbeat = now;
                if let Some(old) = m.join_waiter.replace(tx) {
                    let _ = old.send(JoinResult {
                        error: err(ErrorCode::UnknownMemberId),
                        ..Default::default()
                    });
                }
                changed
            }
            None => {
                self.members.insert(
                    member_id.clone(),
                    Member {
                        id: member_id.clone(),
                        instance_id: req.group_instance_id.clone(),
                        client_id: req.client_id.clone(),
                        client_host: req.client_host.clone(),
                        session_timeout: Duration::from_millis(req.session_timeout_ms.max(0) as u64),
                        rebalance_timeout: Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64),
                        protocols: req.protocols.clone(),
                        assignment: Bytes::new(),
                        last_heartbeat: now,
                        join_waiter: Some(tx),
                        sync_waiter: None,
                    },
                );
                true
            }
        };
        if self.protocol_type.is_none() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        match self.state {
            GroupState::PreparingRebalance => {
                if let Some(until) = self.initial_delay_until {
                    // More members are arriving: wait a little longer, within the rebalance timeout.
                    let cap = self.rebalance_deadline.unwrap_or(now);
                    self.initial_delay_until = Some((now + self.initial_delay).min(cap).max(until));
                }
            }
            GroupState::CompletingRebalance | GroupState::Stable
                if !changed && self.leader.as_deref() != Some(member_id.as_str()) =>
            {
                // A follower re-sent its join with nothing new: answer with the current generation.
                let m = self.members.get_mut(&member_id).expect("member exists");
                m.join_waiter = None;
                return JoinOutcome::Now(self.join_result_for(&member_id));
            }
            _ => self.prepare_rebalance(now),
        }
        self.try_complete_join(now);
        JoinOutcome::Wait(rx)
    }

    fn prepare_rebalance(&mut self, now: Instant) {
        if self.state == GroupState::CompletingRebalance || self.state == GroupState::Stable {
            for m in self.members.values_mut() {
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(SyncResult {
                        error: err(ErrorCode::RebalanceInProgress),
                        ..Default::default()
                    });
                }
            }
        }
        let was_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = Some(now + self.max_rebalance_timeout());
        self.initial_delay_until = if was_empty && !self.initial_delay.is_zero() {
            Some((now + self.initial_delay).min(self.rebalance_deadline.expect("set above")))
        } else {
            None
        };
    }

    /// Completes the join phase when every member has rejoined (after the initial delay), or when
    /// the rebalance timeout has passed (members that did not rejoin are removed).
    pub fn try_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some());
        let delay_over = self.initial_delay_until.is_none_or(|t| now >= t);
        let timed_out = self.rebalance_deadline.is_some_and(|d| now >= d);
        if !((all_joined && delay_over) || timed_out) {
            return;
        }
        self.members.retain(|_, m| m.join_waiter.is_some());
        self.initial_delay_until = None;
        self.rebalance_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader = None;
            return;
        }
        self.protocol_name = Some(self.select_protocol());
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        tracing::debug!(group = %self.id, generation = self.generation, members = ?self.members.keys().collect::<Vec<_>>(), "rebalance: join phase complete");
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.join_result_for(&id);
            if let Some(w) = self.members.get_mut(&id).and_then(|m| m.join_waiter.take()) {
                let _ = w.send(result);
            }
        }
    }

    /// The protocol every member supports that gets the most first-preference votes.
    fn select_protocol(&self) -> String {
        let first = self.members.values().next().expect("non-empty group");
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(mn, _)| mn == *n))
            })
            .collect();
        let mut votes: HashMap<&String, usize> = HashMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                *votes.entry(n).or_default() += 1;
            }
        }
        candidates
            .iter()
            .max_by_key(|n| {
                (
                    votes.get(*n).copied().unwrap_or(0),
                    std::cmp::Reverse(candidates.iter().position(|c| c == *n)),
                )
            })
            .map(|n| (*n).clone())
            .unwrap_or_else(|| first.protocols[0].0.clone())
    }

    fn join_result_for(&self, member_id: &str) -> JoinResult {
        let is_leader = self.leader.as_deref() == Some(member_id);
        let protocol = self.protocol_name.clone();
        JoinResult {
            error: 0,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.members
                    .values()
                    .map(|m| {
                        let md = protocol
                            .as_ref()
                            .and_then(|p| m.protocols.iter().find(|(n, _)| n == p))
                            .map(|(_, d)| d.clone())
                            .unwrap_or_default();
                        (m.id.clone(), m.instance_id.clone(), md)
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    pub fn sync(
        &mut self,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> SyncOutcome {
        let now_result = |error: ErrorCode| {
            SyncOutcome::Now(SyncResult {
                error: err(error),
                ..Default::default()
            })
        };
        let Some(m) = self.members.get_mut(member_id) else {
            return now_result(ErrorCode::UnknownMemberId);
        };
        if generation != self.generation {
            return now_result(ErrorCode::IllegalGeneration);
        }
        m.last_heartbeat = now;
        match self.state {
            GroupState::PreparingRebalance => now_result(ErrorCode::RebalanceInProgress),
            GroupState::Stable => SyncOutcome::Now(SyncResult {
                error: 0,
                protocol_type: self.protocol_type.clone(),
                protocol_name: self.protocol_name.clone(),
                assignment: m.assignment.clone(),
            }),
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                m.sync_waiter = Some(tx);
                if self.leader.as_deref() == Some(member_id) {
                    let assigned: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = assigned.get(&m.id).cloned().unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    for m in self.members.values_mut() {
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(SyncResult {
                                error: 0,
                                protocol_type: self.protocol_type.clone(),
                                protocol_name: self.protocol_name.clone(),
                                assignment: m.assignment.clone(),
                            });
                        }
                    }
                }
                SyncOutcome::Wait(rx)
            }
            GroupState::Empty | GroupState::Dead => now_result(ErrorCode::UnknownMemberId),
        }
    }

    pub fn heartbeat(&mut self, member_id: &str, generation: i32, now: Instant) -> ErrorCode {
        let Some(m) = self.members.get_mut(member_id) else {
            return ErrorCode::UnknownMemberId;
        };
        m.last_heartbeat = now;
        if generation != self.generation {
            return ErrorCode::IllegalGeneration;
        }
        match self.state {
            GroupState::PreparingRebalance => ErrorCode::RebalanceInProgress,
            GroupState::CompletingRebalance | GroupState::Stable => ErrorCode::None,
            GroupState::Empty | GroupState::Dead => ErrorCode::UnknownMemberId,
        }
    }

    /// Removes a member (LeaveGroup or session expiry) and rebalances the rest.
    pub fn remove_member(&mut self, member_id: &str, now: Instant) -> bool {
        let Some(mut m) = self.members.shift_remove(member_id) else {
            return false;
        };
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(JoinResult {
                error: err(ErrorCode::UnknownMemberId),
                ..Default::default()
            });
        }
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(SyncResult {
                error: err(ErrorCode::UnknownMemberId),
                ..Default::default()
            });
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if self.members.is_empty() {
                    self.generation += 1;
                    self.state = GroupState::Empty;
                    self.protocol_name = None;
                } else {
                    self.prepare_rebalance(now);
                }
            }
            GroupState::PreparingRebalance => self.try_complete_join(now),
            _ => {}
        }
        if self.members.is_empty() && self.state != GroupState::PreparingRebalance {
            self.state = GroupState::Empty;
            self.protocol_type = None;
        }
        true
    }

    pub fn find_static_member(&self, instance_id: &str) -> Option<String> {
        self.members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance_id))
            .map(|m| m.id.clone())
    }

    /// Expires members whose session ran out and advances timed-out rebalances.
    pub fn tick(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.join_waiter.is_none() && now.duration_since(m.last_heartbeat) > m.session_timeout
            })
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.remove_member(&id, now);
        }
        self.try_complete_join(now);
    }

    /// Validates an offset commit from a member (generation -1 means a standalone committer).
    pub fn check_commit(&self, member_id: &str, generation: i32) -> ErrorCode {
        if generation < 0 && member_id.is_empty() {
            return if self.members.is_empty() {
                ErrorCode::None
            } else {
                ErrorCode::UnknownMemberId
            };
        }
        if !self.members.contains_key(member_id) {
            return ErrorCode::UnknownMemberId;
        }
        if generation != self.generation {
            return ErrorCode::IllegalGeneration;
        }
        match self.state {
            GroupState::Stable | GroupState::PreparingRebalance => ErrorCode::None,
            GroupState::CompletingRebalance => ErrorCode::RebalanceInProgress,
            _ => ErrorCode::UnknownMemberId,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(member: &str, proto: &str) -> JoinRequest {
        JoinRequest {
            member_id: member.to_string(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: vec![(proto.to_string(), Bytes::from_static(b"md"))],
            require_known_member_id: true,
        }
    }

    fn join_id(g: &mut Group, id: &str, now: Instant) -> oneshot::Receiver<JoinResult> {
        match g.join(req("", "range"), || id.to_string(), now) {
            JoinOutcome::Now(r) => assert_eq!(r.error, ErrorCode::MemberIdRequired.code()),
            JoinOutcome::Wait(_) => panic!("expected MEMBER_ID_REQUIRED"),
        }
        match g.join(req(id, "range"), || unreachable!(), now) {
            JoinOutcome::Wait(rx) => rx,
            JoinOutcome::Now(r) => panic!("unexpected immediate answer {r:?}"),
        }
    }

    #[test]
    fn two_members_rebalance_sync_and_leave() {
        let t0 = Instant::now();
        let mut g = Group::new("g", Duration::from_millis(100));
        let mut a = join_id(&mut g, "a", t0);
        let mut b = join_id(&mut g, "b", t0);
        assert!(
            a.try_recv().is_err(),
            "initial delay holds the first rebalance"
        );
        g.tick(t0 + Duration::from_millis(150));
        let ra = a.try_recv().unwrap();
        let rb = b.try_recv().unwrap();
        assert_eq!(ra.generation_id, 1);
        assert_eq!(ra.leader, "a");
        assert_eq!(ra.members.len(), 2);
        assert!(rb.members.is_empty());
        let SyncOutcome::Wait(mut sb) = g.sync("b", 1, vec![], t0) else {
            panic!()
        };
        let SyncOutcome::Wait(mut sa) = g.sync(
            "a",
            1,
            vec![
                ("a".into(), Bytes::from_static(b"A")),
                ("b".into(), Bytes::from_static(b"B")),
            ],
            t0,
        ) else {
            panic!()
        };
        assert_eq!(sa.try_recv().unwrap().assignment, Bytes::from_static(b"A"));
        assert_eq!(sb.try_recv().unwrap().assignment, Bytes::from_static(b"B"));
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(g.heartbeat("a", 1, t0), ErrorCode::None);
        assert_eq!(g.heartbeat("a", 0, t0), ErrorCode::IllegalGeneration);
        // b leaves: a must rejoin
        assert!(g.remove_member("b", t0));
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(g.heartbeat("a", 1, t0), ErrorCode::RebalanceInProgress);
        let JoinOutcome::Wait(mut a2) = g.join(req("a", "range"), || unreachable!(), t0) else {
            panic!()
        };
        let r = a2.try_recv().unwrap();
        assert_eq!(r.generation_id, 2);
        assert_eq!(r.members.len(), 1);
    }

    #[test]
    fn expired_member_is_removed_and_unknown_member_refused() {
        let t0 = Instant::now();
        let mut g = Group::new("g", Duration::ZERO);
        let mut a = join_id(&mut g, "a", t0);
        assert_eq!(a.try_recv().unwrap().generation_id, 1);
        g.tick(t0 + Duration::from_secs(11));
        assert!(g.is_empty());
        assert_eq!(g.state, GroupState::Empty);
        let JoinOutcome::Now(r) = g.join(req("zzz", "range"), || unreachable!(), t0) else {
            panic!()
        };
        assert_eq!(r.error, ErrorCode::UnknownMemberId.code());
    }

    #[test]
    fn inconsistent_protocols_are_refused() {
        let t0 = Instant::now();
        let mut g = Group::new("g", Duration::ZERO);
        let _a = join_id(&mut g, "a", t0);
        let JoinOutcome::Now(r) = g.join(req("", "roundrobin"), || "b".into(), t0) else {
            panic!()
        };
        assert_eq!(r.error, ErrorCode::InconsistentGroupProtocol.code());
    }

    #[test]
    fn rebalance_timeout_drops_members_that_do_not_rejoin() {
        let t0 = Instant::now();
        let mut g = Group::new("g", Duration::ZERO);
        let mut a = join_id(&mut g, "a", t0);
        a.try_recv().unwrap();
        let mut b = join_id(&mut g, "b", t0); // b joining triggers a rebalance; a never rejoins
        assert!(b.try_recv().is_err());
        g.tick(t0 + Duration::from_secs(31));
        let r = b.try_recv().unwrap();
        assert_eq!(r.generation_id, 2);
        assert!(!g.has_member("a"));
    }

    #[test]
    fn commit_checks() {
        let t0 = Instant::now();
        let mut g = Group::new("g", Duration::ZERO);
        assert_eq!(g.check_commit("", -1), ErrorCode::None);
        let mut a = join_id(&mut g, "a", t0);
        a.try_recv().unwrap();
        assert_eq!(g.check_commit("", -1), ErrorCode::UnknownMemberId);
        assert_eq!(g.check_commit("a", 1), ErrorCode::RebalanceInProgress);
        let _ = g.sync("a", 1, vec![], t0);
        assert_eq!(g.check_commit("a", 1), ErrorCode::None);
        assert_eq!(g.check_commit("a", 7), ErrorCode::IllegalGeneration);
    }
}
