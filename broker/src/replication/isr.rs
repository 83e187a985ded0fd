//! The leader's view of one partition's replicas (Kafka's semantics):
//!
//! - each follower's log end offset comes from the offset it fetches at;
//! - a follower is *caught up* at time t if it fetched at or past the leader's log end offset;
//! - the high watermark is the smallest log end offset in the ISR (leader included) and never
//!   moves back;
//! - a follower not caught up for `replica.lag.time.max.ms` is proposed for removal from the
//!   ISR, and one that reached the high watermark is proposed for re-admission. Proposals go to
//!   the controller; the ISR changes only when the controller's record comes back, so metadata
//!   never claims an ISR that was not agreed.

use std::collections::BTreeMap;

/// What the leader tracks per follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerState {
    pub log_end_offset: i64,
    /// Last time (ms) the follower was fully caught up.
    pub last_caught_up_ms: i64,
}

/// One partition as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderView {
    pub leader: i32,
    pub isr: Vec<i32>,
    pub high_watermark: i64,
    pub followers: BTreeMap<i32, FollowerState>,
}

/// An ISR change the leader asks the controller for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsrProposal {
    Shrink(Vec<i32>),
    Expand(Vec<i32>),
}

impl LeaderView {
    /// A new leadership: followers start as "caught up now" so nobody is dropped before it had
    /// a chance to fetch (Kafka does the same).
    pub fn new(
        leader: i32,
        replicas: &[i32],
        isr: Vec<i32>,
        high_watermark: i64,
        now_ms: i64,
    ) -> Self {
        let followers = replicas
            .iter()
            .filter(|r| **r != leader)
            .map(|r| {
                (
                    *r,
                    FollowerState {
                        log_end_offset: -1,
                        last_caught_up_ms: now_ms,
                    },
                )
            })
            .collect();
        LeaderView {
            leader,
            isr,
            high_watermark,
            followers,
        }
    }

    /// The replica list changed (a reassignment): new followers are tracked from now, as on a
    /// new leadership; removed ones are forgotten.
    pub fn set_replicas(&mut self, replicas: &[i32], now_ms: i64) {
        self.followers.retain(|r, _| replicas.contains(r));
        for r in replicas.iter().filter(|r| **r != self.leader) {
            self.followers.entry(*r).or_insert(FollowerState {
                log_end_offset: -1,
                last_caught_up_ms: now_ms,
            });
        }
    }

    /// Records a follower fetch at `fetch_offset` while the leader's log ends at `leader_leo`.
    /// Returns the new high watermark if it advanced.
    pub fn on_follower_fetch(
        &mut self,
        follower: i32,
        fetch_offset: i64,
        leader_leo: i64,
        now_ms: i64,
    ) -> Option<i64> {
        let state = self.followers.get_mut(&follower)?;
        state.log_end_offset = fetch_offset;
        if fetch_offset >= leader_leo {
            state.last_caught_up_ms = now_ms;
        }
        self.advance_high_watermark(leader_leo)
    }

    /// Recomputes the high watermark from the ISR; it only moves forward.
    pub fn advance_high_watermark(&mut self, leader_leo: i64) -> Option<i64> {
        let min_isr_leo = self
            .isr
            .iter()
            .map(|r| {
                if *r == self.leader {
                    leader_leo
                } else {
                    self.followers.get(r).map_or(-1, |f| f.log_end_offset)
                }
            })
            .min()
            .unwrap_or(leader_leo);
        if min_isr_leo > self.high_watermark {
            self.high_watermark = min_isr_leo;
            Some(min_isr_leo)
        } else {
            None
        }
    }

    /// The ISR change to propose now, if any (shrink first: it unblocks acks=all sooner).
    pub fn proposal(&self, now_ms: i64, lag_max_ms: i64) -> Option<IsrProposal> {
        let lagging: Vec<i32> = self
            .isr
            .iter()
            .filter(|r| **r != self.leader)
            .filter(|r| {
                self.followers
                    .get(r)
                    .is_some_and(|f| now_ms - f.last_caught_up_ms > lag_max_ms)
            })
            .copied()
            .collect();
        if !lagging.is_empty() {
            let isr = self
                .isr
                .iter()
                .filter(|r| !lagging.contains(r))
                .copied()
                .collect();
            return Some(IsrProposal::Shrink(isr));
        }
        let rejoining: Vec<i32> = self
            .followers
            .iter()
            .filter(|(r, f)| !self.isr.contains(r) && f.log_end_offset >= self.high_watermark)
            .map(|(r, _)| *r)
            .collect();
        if !rejoining.is_empty() {
            let mut isr = self.isr.clone();
            isr.extend(rejoining);
            isr.sort_unstable();
            return Some(IsrProposal::Expand(isr));
        }
        None
    }
}

/// How an `acks=all` produce ends, given the ISR size and `min.insync.replicas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckDecision {
    /// Refuse before appending: NOT_ENOUGH_REPLICAS.
    RejectBeforeAppend,
    /// Keep waiting for the high watermark.
    Wait,
    /// The records are committed.
    Complete,
    /// The ISR shrank below the minimum while waiting: NOT_ENOUGH_REPLICAS_AFTER_APPEND.
    FailAfterAppend,
}

/// Before appending: is the ISR large enough?
pub fn check_before_append(isr_size: usize, min_insync: i32) -> AckDecision {
    if (isr_size as i32) < min_insync {
        AckDecision::RejectBeforeAppend
    } else {
        AckDecision::Wait
    }
}

/// While waiting for records ending at `last_offset` (exclusive end `end_offset`).
pub fn check_after_append(
    high_watermark: i64,
    end_offset: i64,
    isr_size: usize,
    min_insync: i32,
) -> AckDecision {
    if high_watermark >= end_offset {
        if (isr_size as i32) < min_insync {
            AckDecision::FailAfterAppend
        } else {
            AckDecision::Complete
        }
    } else {
        AckDecision::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> LeaderView {
        LeaderView::new(1, &[1, 2, 3], vec![1, 2, 3], 0, 0)
    }

    #[test]
    fn high_watermark_is_the_slowest_isr_member_and_never_moves_back() {
        let mut v = view();
        assert_eq!(v.on_follower_fetch(2, 10, 10, 5), None, "3 has not fetched");
        assert_eq!(v.on_follower_fetch(3, 7, 10, 5), Some(7));
        assert_eq!(v.on_follower_fetch(3, 10, 10, 6), Some(10));
        // A follower fetching from an older offset (after truncation) cannot pull HW back.
        assert_eq!(v.on_follower_fetch(2, 4, 10, 7), None);
        assert_eq!(v.high_watermark, 10);
    }

    #[test]
    fn lagging_follower_is_proposed_out_and_back_in_when_caught_up() {
        let mut v = view();
        v.on_follower_fetch(2, 100, 100, 1_000);
        v.on_follower_fetch(3, 40, 100, 1_000);
        assert_eq!(v.proposal(20_000, 30_000), None, "within the lag window");
        // 2 keeps fetching at the end of the log; 3 stays behind.
        v.on_follower_fetch(2, 100, 100, 31_000);
        assert_eq!(
            v.proposal(31_001, 30_000),
            Some(IsrProposal::Shrink(vec![1, 2]))
        );
        // The controller agreed: ISR without 3; HW now follows 1 and 2 only.
        v.isr = vec![1, 2];
        assert_eq!(v.advance_high_watermark(100), Some(100));
        v.on_follower_fetch(3, 100, 100, 32_000);
        assert_eq!(
            v.proposal(32_000, 30_000),
            Some(IsrProposal::Expand(vec![1, 2, 3]))
        );
    }

    #[test]
    fn added_replicas_are_followed_and_removed_ones_forgotten() {
        let mut v = LeaderView::new(1, &[1, 2], vec![1, 2], 0, 0);
        v.on_follower_fetch(2, 10, 10, 5);
        v.set_replicas(&[1, 2, 3], 7);
        assert_eq!(
            v.followers[&2].log_end_offset, 10,
            "known followers keep their state"
        );
        assert_eq!(v.followers[&3].log_end_offset, -1);
        v.on_follower_fetch(3, 10, 10, 8);
        assert_eq!(
            v.proposal(8, 30_000),
            Some(IsrProposal::Expand(vec![1, 2, 3]))
        );
        v.set_replicas(&[1, 3], 9);
        assert!(!v.followers.contains_key(&2));
    }

    #[test]
    fn leader_alone_commits_when_isr_is_only_the_leader() {
        let mut v = LeaderView::new(1, &[1, 2], vec![1], 0, 0);
        assert_eq!(v.advance_high_watermark(5), Some(5));
    }

    #[test]
    fn acks_all_decisions() {
        assert_eq!(check_before_append(1, 2), AckDecision::RejectBeforeAppend);
        assert_eq!(check_before_append(2, 2), AckDecision::Wait);
        assert_eq!(check_after_append(9, 10, 3, 2), AckDecision::Wait);
        assert_eq!(check_after_append(10, 10, 3, 2), AckDecision::Complete);
        assert_eq!(
            check_after_append(10, 10, 1, 2),
            AckDecision::FailAfterAppend
        );
    }
}
