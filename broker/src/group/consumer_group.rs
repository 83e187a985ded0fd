//! One consumer group of the KIP-848 protocol (`group.protocol=consumer`): members heartbeat,
//! the coordinator computes a target assignment with a server-side assignor and hands it out
//! member by member, each partition only once its previous owner has given it up.
//!
//! Epochs, as Kafka keeps them: the **group epoch** grows whenever membership, subscriptions
//! or the subscribed topics' partition counts change; the **assignment epoch** is the group
//! epoch the target assignment was computed at; a member's **member epoch** reaches the
//! assignment epoch once it has revoked what the target takes from it. A member that must
//! revoke gets its reduced assignment and keeps its epoch until it reports (in a heartbeat's
//! owned partitions) that it let go; only then does it advance and receive new partitions,
//! and only partitions no other member still holds or is revoking. So no partition is ever
//! owned by two members at once.
//!
//! Members still speaking the classic protocol (a group upgraded from classic, or classic
//! clients joining it) are members here too, served through `classic.rs`.
//!
//! Pure state: the caller passes the current time and the topics of the metadata image, and
//! applies the outcome; unit-tested without a coordinator.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::assignor::{self, Assignment, Assignor, MemberSpec};
use crate::protocol::errors::ErrorCode;

mod classic;
pub use classic::{ClassicMember, ClassicSeed};

/// Topic name → (id, partition count), from the metadata image.
pub type TopicsView = BTreeMap<String, (Uuid, i32)>;

/// A consumer group heartbeat, as decoded from the request.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1 when unchanged.
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns, when it reports them.
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

/// What the coordinator answers.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatOutcome {
    pub member_id: String,
    pub member_epoch: i32,
    /// Present when the member's assignment changed (or on joining).
    pub assignment: Option<Assignment>,
}

/// A refused heartbeat: the error and a message saying why.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// Member epoch of a static member that left for a restart (`-2` in the request).
const LEFT_STATIC: i32 = -2;
const LEAVE: i32 = -1;

#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    previous_epoch: i32,
    rebalance_timeout: Duration,
    pub subscribed_names: Vec<String>,
    pub subscribed_regex: Option<String>,
    pub assignor: Option<Assignor>,
    /// What the member owns or may own now (as the coordinator last told it).
    pub assigned: Assignment,
    /// What it was told to give up and has not yet confirmed.
    pub revoking: Assignment,
    session_deadline: Instant,
    revocation_deadline: Option<Instant>,
    /// A static member that left to restart: it keeps its assignment until its session ends.
    left: bool,
    /// Set for a member speaking the classic protocol (JoinGroup/SyncGroup), `classic.rs`.
    pub classic: Option<ClassicMember>,
}

impl Member {
    fn new(id: &str, client_id: &str, client_host: &str, now: Instant) -> Member {
        Member {
            id: id.to_string(),
            instance_id: None,
            rack_id: None,
            client_id: client_id.to_string(),
            client_host: client_host.to_string(),
            epoch: 0,
            previous_epoch: 0,
            rebalance_timeout: Duration::from_secs(300),
            subscribed_names: Vec::new(),
            subscribed_regex: None,
            assignor: None,
            assigned: Assignment::new(),
            revoking: Assignment::new(),
            session_deadline: now,
            revocation_deadline: None,
            left: false,
            classic: None,
        }
    }

    fn subscribes(&self, name: &str, regex: Option<&regex::Regex>) -> bool {
        self.subscribed_names.iter().any(|n| n == name) || regex.is_some_and(|r| r.is_match(name))
    }
}

/// Timings the coordinator is configured with.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub session: Duration,
    pub heartbeat_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct ConsumerGroup {
    pub id: String,
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, Member>,
    /// The target assignment, per member, computed at `assignment_epoch`.
    pub target: BTreeMap<String, Assignment>,
    /// The subscribed topics (name → id, partitions) the current group epoch saw.
    subscribed_topics: TopicsView,
    pub assignor: Assignor,
}

/// The group's state, as ConsumerGroupDescribe and ListGroups name it.
pub fn state_name(g: &ConsumerGroup) -> &'static str {
    if g.members.is_empty() {
        "Empty"
    } else if g.epoch > g.assignment_epoch {
        "Assigning"
    } else if g.members.values().any(|m| {
        m.epoch != g.assignment_epoch
            || !m.revoking.is_empty()
            || g.target.get(&m.id) != Some(&m.assigned)
    }) {
        "Reconciling"
    } else {
        "Stable"
    }
}

/// Kafka's regexes are Java's (RE2/J in Kafka 4); the common subset is the same in Rust's
/// `regex`. Anchored: the whole topic name must match, as `Pattern.matches` does.
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, Refusal> {
    regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
        refuse(
            ErrorCode::InvalidRegularExpression,
            format!("SubscribedTopicRegex {pattern:?} is not a valid regular expression: {e}"),
        )
    })
}

impl ConsumerGroup {
    pub fn new(id: &str) -> ConsumerGroup {
        ConsumerGroup {
            id: id.to_string(),
            epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            subscribed_topics: TopicsView::new(),
            assignor: Assignor::DEFAULT,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Handles one heartbeat. `new_member_id` names a joining member that sent none (v0).
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        topics: &TopicsView,
        now: Instant,
        timeouts: Timeouts,
        new_member_id: impl FnOnce() -> String,
    ) -> Result<HeartbeatOutcome, Refusal> {
        if let Some(name) = &hb.server_assignor {
            if Assignor::from_name(name).is_none() {
                return Err(refuse(
                    ErrorCode::UnsupportedAssignor,
                    format!("Assignor {name} is not supported; use uniform or range."),
                ));
            }
        }
        if let Some(r) = &hb.subscribed_topic_regex {
            compile_regex(r)?;
        }
        let epoch_before = self.epoch;
        let id = match hb.member_epoch {
            LEAVE | LEFT_STATIC => {
                let out = self.leave(&hb)?;
                self.refresh_subscribed_topics(topics, epoch_before);
                return Ok(out);
            }
            0 => self.join(&hb, now, timeouts, new_member_id)?,
            epoch if epoch > 0 => {
                self.existing(&hb)?;
                hb.member_id.clone()
            }
            other => {
                return Err(refuse(
                    ErrorCode::InvalidRequest,
                    format!("MemberEpoch {other} is not valid."),
                ))
            }
        };
        self.refresh_subscribed_topics(topics, epoch_before);
        if self.epoch > self.assignment_epoch {
            self.compute_target(topics);
        }
        let member = self.members.get_mut(&id).expect("joined or existing");
        member.session_deadline = now + timeouts.session;
        let joined = hb.member_epoch == 0;
        let changed = self.reconcile(&id, hb.owned.as_ref(), now);
        let member = &self.members[&id];
        let client_differs = hb.owned.as_ref().is_some_and(|o| *o != member.assigned);
        Ok(HeartbeatOutcome {
            member_id: id,
            member_epoch: member.epoch,
            assignment: (joined || changed || client_differs).then(|| member.assigned.clone()),
        })
    }

    fn leave(&mut self, hb: &Heartbeat) -> Result<HeartbeatOutcome, Refusal> {
        let id = if hb.member_id.is_empty() {
            hb.instance_id.as_ref().and_then(|inst| {
                self.members
                    .values()
                    .find(|m| m.instance_id.as_ref() == Some(inst))
                    .map(|m| m.id.clone())
            })
        } else {
            Some(hb.member_id.clone())
        };
        let Some(id) = id.filter(|id| self.members.contains_key(id)) else {
            return Err(refuse(
                ErrorCode::UnknownMemberId,
                format!("Member {} is not in group {}.", hb.member_id, self.id),
            ));
        };
        if hb.member_epoch == LEFT_STATIC && self.members[&id].instance_id.is_some() {
            // Keeps its partitions for its session: a restart with the same instance id
            // takes them over without a rebalance.
            self.members.get_mut(&id).expect("checked").left = true;
        } else {
            self.remove_member(&id);
        }
        Ok(HeartbeatOutcome {
            member_id: id,
            member_epoch: hb.member_epoch,
            assignment: None,
        })
    }

    /// Adds a member (or takes a restarted static member back); returns its id.
    fn join(
        &mut self,
        hb: &Heartbeat,
        now: Instant,
        timeouts: Timeouts,
        new_member_id: impl FnOnce() -> String,
    ) -> Result<String, Refusal> {
        if hb.subscribed_topic_names.is_none() && hb.subscribed_topic_regex.is_none() {
            return Err(refuse(
                ErrorCode::InvalidRequest,
                "SubscribedTopicNames or SubscribedTopicRegex must be set in the first heartbeat.",
            ));
        }
        let member_id = if hb.member_id.is_empty() {
            new_member_id()
        } else {
            hb.member_id.clone()
        };
        if let Some(instance) = &hb.instance_id {
            let holder = self
                .members
                .values()
                .find(|m| m.instance_id.as_ref() == Some(instance))
                .map(|m| (m.id.clone(), m.left));
            match holder {
                Some((old, true)) => {
                    // A static member back from a restart: same partitions, no rebalance.
                    let mut m = self.members.remove(&old).expect("found");
                    let target = self.target.remove(&old).unwrap_or_default();
                    m.id = member_id.clone();
                    m.left = false;
                    m.client_id = hb.client_id.clone();
                    m.client_host = hb.client_host.clone();
                    self.target.insert(member_id.clone(), target);
                    self.members.insert(member_id.clone(), m);
                    self.update_subscription(&member_id, hb);
                    return Ok(member_id);
                }
                Some((old, false)) if old != member_id => {
                    return Err(refuse(
                        ErrorCode::UnreleasedInstanceId,
                        format!(
                            "Static member {instance} is still in group {} as {old}; it must leave first.",
                            self.id
                        ),
                    ))
                }
                _ => {}
            }
        }
        if self.members.contains_key(&member_id) {
            // A member rejoining after it was fenced or lost its state: starts over.
            self.remove_member(&member_id);
        }
        let mut m = Member::new(&member_id, &hb.client_id, &hb.client_host, now);
        m.instance_id = hb.instance_id.clone();
        m.rack_id = hb.rack_id.clone();
        if hb.rebalance_timeout_ms > 0 {
            m.rebalance_timeout = Duration::from_millis(hb.rebalance_timeout_ms as u64);
        }
        m.session_deadline = now + timeouts.session;
        self.members.insert(member_id.clone(), m);
        self.update_subscription(&member_id, hb);
        self.epoch += 1;
        Ok(member_id)
    }

    fn existing(&mut self, hb: &Heartbeat) -> Result<(), Refusal> {
        let Some(m) = self
            .members
            .get(&hb.member_id)
            .filter(|m| !m.left && m.classic.is_none())
        else {
            return Err(refuse(
                ErrorCode::UnknownMemberId,
                format!("Member {} is not in group {}.", hb.member_id, self.id),
            ));
        };
        if hb.member_epoch > m.epoch {
            return Err(refuse(
                ErrorCode::FencedMemberEpoch,
                format!(
                    "Member epoch {} is newer than the coordinator's {}; rejoin.",
                    hb.member_epoch, m.epoch
                ),
            ));
        }
        if hb.member_epoch < m.epoch {
            // The member missed the answer that advanced it: fine if it owns nothing it
            // should not.
            let lost_response = hb.member_epoch == m.previous_epoch
                && hb.owned.as_ref().is_none_or(|o| {
                    assignor::minus(o, &assignor::union(&m.assigned, &m.revoking)).is_empty()
                });
            if !lost_response {
                return Err(refuse(
                    ErrorCode::FencedMemberEpoch,
                    format!(
                        "Member epoch {} is older than the coordinator's {}; rejoin.",
                        hb.member_epoch, m.epoch
                    ),
                ));
            }
        }
        if hb.rebalance_timeout_ms > 0 {
            self.members
                .get_mut(&hb.member_id)
                .expect("checked")
                .rebalance_timeout = Duration::from_millis(hb.rebalance_timeout_ms as u64);
        }
        self.update_subscription(&hb.member_id, hb);
        Ok(())
    }

    /// Applies the subscription fields a heartbeat carries; a change bumps the group epoch.
    fn update_subscription(&mut self, id: &str, hb: &Heartbeat) {
        let m = self.members.get_mut(id).expect("member exists");
        let mut changed = false;
        if let Some(names) = &hb.subscribed_topic_names {
            let mut names = names.clone();
            names.sort();
            names.dedup();
            changed |= m.subscribed_names != names;
            m.subscribed_names = names;
        }
        if let Some(regex) = &hb.subscribed_topic_regex {
            let regex = (!regex.is_empty()).then(|| regex.clone());
            changed |= m.subscribed_regex != regex;
            m.subscribed_regex = regex;
        }
        if let Some(name) = &hb.server_assignor {
            let a = Assignor::from_name(name);
            changed |= m.assignor != a;
            m.assignor = a;
        }
        if hb.rack_id.is_some() {
            m.rack_id = hb.rack_id.clone();
        }
        if changed && m.epoch > 0 {
            self.epoch += 1;
        }
    }

    /// The topics some member subscribes to, resolved against the image.
    fn resolve_subscriptions(&self, topics: &TopicsView) -> TopicsView {
        let regexes: BTreeMap<&str, Option<regex::Regex>> = self
            .members
            .values()
            .map(|m| {
                (
                    m.id.as_str(),
                    m.subscribed_regex
                        .as_deref()
                        .and_then(|r| compile_regex(r).ok()),
                )
            })
            .collect();
        topics
            .iter()
            .filter(|(name, _)| {
                self.members
                    .values()
                    .any(|m| m.subscribes(name, regexes[m.id.as_str()].as_ref()))
            })
            .map(|(n, v)| (n.clone(), *v))
            .collect()
    }

    /// A subscribed topic created, deleted or grown is a new group epoch (one per heartbeat:
    /// a join that also changes the subscribed topics is one change).
    fn refresh_subscribed_topics(&mut self, topics: &TopicsView, epoch_before: i32) {
        let now = self.resolve_subscriptions(topics);
        if now != self.subscribed_topics {
            self.subscribed_topics = now;
            if self.epoch == epoch_before {
                self.epoch += 1;
            }
        }
    }

    fn compute_target(&mut self, topics: &TopicsView) {
        // The assignor most members ask for (Kafka's rule), the default when none asks.
        let mut votes: BTreeMap<&'static str, usize> = BTreeMap::new();
        for a in self.members.values().filter_map(|m| m.assignor) {
            *votes.entry(a.name()).or_default() += 1;
        }
        self.assignor = votes
            .into_iter()
            .max_by_key(|(name, n)| (*n, std::cmp::Reverse(*name)))
            .and_then(|(name, _)| Assignor::from_name(name))
            .unwrap_or(Assignor::DEFAULT);
        let specs: Vec<MemberSpec> = self
            .members
            .values()
            .map(|m| {
                let regex = m
                    .subscribed_regex
                    .as_deref()
                    .and_then(|r| compile_regex(r).ok());
                MemberSpec {
                    id: m.id.clone(),
                    topics: topics
                        .iter()
                        .filter(|(name, _)| m.subscribes(name, regex.as_ref()))
                        .map(|(_, (id, _))| *id)
                        .collect(),
                    previous: self.target.get(&m.id).cloned().unwrap_or_default(),
                }
            })
            .collect();
        let partitions: BTreeMap<Uuid, i32> = self.subscribed_topics.values().copied().collect();
        self.target = assignor::assign(self.assignor, &specs, &partitions);
        self.assignment_epoch = self.epoch;
    }

    /// Partitions other members than `id` own or are still revoking.
    fn held_by_others(&self, id: &str) -> Assignment {
        self.members
            .values()
            .filter(|m| m.id != id)
            .fold(Assignment::new(), |acc, m| {
                assignor::union(&assignor::union(&acc, &m.assigned), &m.revoking)
            })
    }

    /// Moves member `id` towards its target; true when its assignment changed.
    fn reconcile(&mut self, id: &str, owned: Option<&Assignment>, now: Instant) -> bool {
        let target = self.target.get(id).cloned().unwrap_or_default();
        let held = self.held_by_others(id);
        let assignment_epoch = self.assignment_epoch;
        let m = self.members.get_mut(id).expect("member exists");
        if !m.revoking.is_empty() {
            let released = owned.is_some_and(|o| assignor::intersection(o, &m.revoking).is_empty());
            if !released {
                return false;
            }
            m.revoking.clear();
            m.revocation_deadline = None;
        }
        if m.epoch == assignment_epoch && m.assigned == target {
            return false;
        }
        let keep = assignor::intersection(&m.assigned, &target);
        let revoke = assignor::minus(&m.assigned, &target);
        if !revoke.is_empty() {
            m.assigned = keep;
            m.revoking = revoke;
            m.revocation_deadline = Some(now + m.rebalance_timeout);
            return true;
        }
        let before = m.assigned.clone();
        let advanced = m.epoch != assignment_epoch;
        if advanced {
            m.previous_epoch = m.epoch;
            m.epoch = assignment_epoch;
        }
        let free = assignor::minus(&assignor::minus(&target, &keep), &held);
        m.assigned = assignor::union(&keep, &free);
        advanced || m.assigned != before
    }

    fn remove_member(&mut self, id: &str) {
        if self.members.remove(id).is_some() {
            self.target.remove(id);
            self.epoch += 1;
        }
    }

    /// Removes members whose session ended or who did not revoke in time; returns their ids.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.session_deadline <= now || m.revocation_deadline.is_some_and(|d| d <= now)
            })
            .map(|m| m.id.clone())
            .collect();
        for id in &gone {
            self.remove_member(id);
        }
        gone
    }

    /// Offset commits from a consumer-protocol member carry its member epoch.
    pub fn check_commit(&self, member_id: &str, member_epoch: i32) -> Result<(), Refusal> {
        if member_epoch < 0 && member_id.is_empty() {
            // A commit from outside the group (admin tools): only while the group is empty.
            return if self.members.is_empty() {
                Ok(())
            } else {
                Err(refuse(
                    ErrorCode::UnknownMemberId,
                    format!("Group {} has active members.", self.id),
                ))
            };
        }
        let Some(m) = self.members.get(member_id) else {
            return Err(refuse(
                ErrorCode::UnknownMemberId,
                format!("Member {member_id} is not in group {}.", self.id),
            ));
        };
        if member_epoch != m.epoch {
            // A classic member commits with its generation, which is its member epoch.
            let code = if m.classic.is_some() {
                ErrorCode::IllegalGeneration
            } else {
                ErrorCode::StaleMemberEpoch
            };
            return Err(refuse(
                code,
                format!(
                    "Member epoch {member_epoch} differs from the coordinator's {}.",
                    m.epoch
                ),
            ));
        }
        Ok(())
    }

    /// The subscribed topic names of active members (offsets of these cannot be deleted).
    pub fn subscribed_topic_names(&self) -> BTreeSet<String> {
        self.subscribed_topics.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests;
