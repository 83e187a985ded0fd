//! A partition hosted by this broker: its log, its replica role (leader with a view of its
//! followers, or follower of some leader), its high watermark, and a notifier that wakes
//! long-polling fetches and `acks=all` waits when data arrives or the high watermark moves.

use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use crate::log::PartitionLog;
use crate::metadata::PartitionMeta;
use crate::replication::isr::{IsrProposal, LeaderView};

/// What this broker is for the partition, as of the metadata it last applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Single-node mode: the only replica, no followers.
    Alone,
    Leader(LeaderView),
    Follower {
        leader: i32,
    },
    /// The partition has no leader (offline) or this node is not a replica any more.
    None,
}

/// The partition's replica state; changed only under its mutex.
#[derive(Debug, Clone)]
pub struct ReplicaState {
    pub role: Role,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// The partition epoch an ISR change was last requested for (not repeated while pending).
    pub requested_at_epoch: Option<i32>,
}

/// What a metadata change asks the caller to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Unchanged,
    /// Became (or stayed, with a new epoch) a follower: (re)start the fetcher.
    StartFollowing {
        leader: i32,
        leader_epoch: i32,
    },
    BecameLeader,
    Stopped,
}

pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    pub log: RwLock<PartitionLog>,
    leader_epoch: AtomicI32,
    /// Offsets below this are visible to consumers (and acknowledged for `acks=all`).
    high_watermark: AtomicI64,
    pub replica: Mutex<ReplicaState>,
    /// Woken on appends (transaction markers included, which move the last stable offset),
    /// high-watermark moves and role changes.
    pub data_arrived: Notify,
}

impl Partition {
    /// A single-node partition: its high watermark is its log end.
    pub fn new(topic: Arc<str>, index: i32, log: PartitionLog, leader_epoch: i32) -> Partition {
        let hw = log.log_end_offset();
        Self::with_role(topic, index, log, leader_epoch, hw, Role::Alone)
    }

    /// A cluster-mode partition before its first metadata: it serves nothing until
    /// [`Partition::apply_metadata`] gives it a role. Its high watermark starts at the log
    /// start: what was committed is learnt again from the leader (or from the followers).
    pub fn replicated(topic: Arc<str>, index: i32, log: PartitionLog) -> Partition {
        let hw = log.log_start_offset();
        Self::with_role(topic, index, log, -1, hw, Role::None)
    }

    fn with_role(
        topic: Arc<str>,
        index: i32,
        log: PartitionLog,
        leader_epoch: i32,
        hw: i64,
        role: Role,
    ) -> Partition {
        Partition {
            topic,
            index,
            log: RwLock::new(log),
            leader_epoch: AtomicI32::new(leader_epoch),
            high_watermark: AtomicI64::new(hw),
            replica: Mutex::new(ReplicaState {
                role,
                leader_epoch,
                partition_epoch: -1,
                replicas: vec![],
                isr: vec![],
                requested_at_epoch: None,
            }),
            data_arrived: Notify::new(),
        }
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// Offsets below this are visible to `read_committed` consumers: the high watermark, held
    /// back at the first offset of the oldest transaction still open on this partition.
    pub fn last_stable_offset(&self) -> i64 {
        let hw = self.high_watermark();
        self.log.read().last_stable_offset(hw)
    }

    /// Publishes new data to readers (the high watermark only moves forward here).
    pub fn advance_high_watermark(&self, hw: i64) {
        self.high_watermark.fetch_max(hw, Ordering::AcqRel);
        self.data_arrived.notify_waiters();
    }

    /// A follower takes the leader's high watermark, bounded by its own log end (it may move
    /// back after a truncation).
    pub fn set_follower_high_watermark(&self, leader_hw: i64) {
        let leo = self.log.read().log_end_offset();
        self.high_watermark
            .store(leader_hw.min(leo).max(0), Ordering::Release);
    }

    /// Wakes fetches waiting for data (followers read past the high watermark).
    pub fn notify_appended(&self) {
        self.data_arrived.notify_waiters();
    }

    /// Is this broker the partition's leader right now?
    pub fn is_leader(&self) -> bool {
        matches!(self.replica.lock().role, Role::Leader(_) | Role::Alone)
    }

    /// The in-sync replica count this leader counts for `acks=all` (1 on a single node).
    pub fn isr_size(&self) -> usize {
        match &self.replica.lock().role {
            Role::Alone => 1,
            Role::Leader(v) => v.isr.len(),
            _ => 0,
        }
    }

    /// Takes the metadata image's view of the partition. `me` is this broker's id.
    pub fn apply_metadata(&self, meta: &PartitionMeta, me: i32, now_ms: i64) -> Transition {
        let mut st = self.replica.lock();
        if st.partition_epoch == meta.partition_epoch
            && st.leader_epoch == meta.leader_epoch
            && st.replicas == meta.replicas
        {
            return Transition::Unchanged;
        }
        let new_epoch = st.leader_epoch != meta.leader_epoch;
        st.partition_epoch = meta.partition_epoch;
        st.leader_epoch = meta.leader_epoch;
        st.replicas = meta.replicas.clone();
        st.isr = meta.isr.clone();
        st.requested_at_epoch = None;
        self.leader_epoch
            .store(meta.leader_epoch, Ordering::Release);
        let transition = if meta.leader == me && meta.replicas.contains(&me) {
            let leo = self.log.read().log_end_offset();
            match &mut st.role {
                Role::Leader(view) if !new_epoch => {
                    view.set_replicas(&meta.replicas, now_ms);
                    view.isr = meta.isr.clone();
                    let hw = view.advance_high_watermark(leo);
                    drop(st);
                    if let Some(hw) = hw {
                        self.advance_high_watermark(hw);
                    }
                    self.data_arrived.notify_waiters();
                    return Transition::Unchanged;
                }
                _ => {
                    let mut view = LeaderView::new(
                        me,
                        &meta.replicas,
                        meta.isr.clone(),
                        self.high_watermark(),
                        now_ms,
                    );
                    let hw = view.advance_high_watermark(leo);
                    st.role = Role::Leader(view);
                    if let Some(hw) = hw {
                        self.high_watermark.fetch_max(hw, Ordering::AcqRel);
                    }
                    Transition::BecameLeader
                }
            }
        } else if meta.leader >= 0 && meta.replicas.contains(&me) {
            let same = matches!(st.role, Role::Follower { leader } if leader == meta.leader);
            st.role = Role::Follower {
                leader: meta.leader,
            };
            if same && !new_epoch {
                Transition::Unchanged
            } else {
                Transition::StartFollowing {
                    leader: meta.leader,
                    leader_epoch: meta.leader_epoch,
                }
            }
        } else {
            st.role = Role::None;
            Transition::Stopped
        };
        drop(st);
        self.data_arrived.notify_waiters();
        transition
    }

    /// The leader records a follower's fetch position. Returns an ISR expansion to request
    /// (with the partition epoch it is based on) when the follower has caught up.
    pub fn on_follower_fetch(
        &self,
        follower: i32,
        fetch_offset: i64,
        now_ms: i64,
    ) -> Option<(IsrProposal, i32)> {
        let leo = self.log.read().log_end_offset();
        let mut st = self.replica.lock();
        let epoch = st.partition_epoch;
        let pending = st.requested_at_epoch == Some(epoch);
        let Role::Leader(view) = &mut st.role else {
            return None;
        };
        let hw = view.on_follower_fetch(follower, fetch_offset, leo, now_ms);
        let proposal = match view.proposal(now_ms, i64::MAX) {
            Some(p @ IsrProposal::Expand(_)) if !pending => Some(p),
            _ => None,
        };
        if proposal.is_some() {
            st.requested_at_epoch = Some(epoch);
        }
        drop(st);
        if let Some(hw) = hw {
            self.advance_high_watermark(hw);
        }
        proposal.map(|p| (p, epoch))
    }

    /// After a leader append: with an ISR of the leader alone the high watermark follows the
    /// log end at once; followers waiting in Fetch are woken either way.
    pub fn on_leader_append(&self) {
        let leo = self.log.read().log_end_offset();
        let hw = match &mut self.replica.lock().role {
            Role::Alone => Some(leo),
            Role::Leader(view) => view.advance_high_watermark(leo),
            _ => None,
        };
        match hw {
            Some(hw) => self.advance_high_watermark(hw),
            None => self.notify_appended(),
        }
    }

    /// The ISR change this leader should request now (lagging followers out, caught-up ones
    /// in), with the partition epoch it is based on; `None` while one is pending.
    pub fn isr_proposal(&self, now_ms: i64, lag_max_ms: i64) -> Option<(IsrProposal, i32)> {
        let mut st = self.replica.lock();
        let epoch = st.partition_epoch;
        if st.requested_at_epoch == Some(epoch) {
            return None;
        }
        let Role::Leader(view) = &st.role else {
            return None;
        };
        let p = view.proposal(now_ms, lag_max_ms)?;
        st.requested_at_epoch = Some(epoch);
        Some((p, epoch))
    }

    /// Forgets a pending ISR request (it failed to commit), so it is asked again.
    pub fn clear_isr_request(&self) {
        self.replica.lock().requested_at_epoch = None;
    }

    /// The largest follower lag (messages) this leader sees, for metrics.
    pub fn max_follower_lag(&self) -> i64 {
        let leo = self.log.read().log_end_offset();
        match &self.replica.lock().role {
            Role::Leader(v) => v
                .followers
                .values()
                .map(|f| (leo - f.log_end_offset.max(0)).max(0))
                .max()
                .unwrap_or(0),
            _ => 0,
        }
    }
}
