//! The follower's half of a fetch session (KIP-227) with one leader: which partitions the
//! leader's session holds and with what positions, so each fetch sends only what changed and
//! names what to forget. Without I/O; `replication::fetcher` sends what it builds.
//!
//! The first fetch (epoch 0) sends everything and opens the session; later ones carry the
//! session id and the next epoch. A partition the fetcher leaves out of a round (delayed after
//! an error, throttled, superseded) is forgotten, and sent in full when it comes back. If the
//! leader lost the session or refuses the epoch, the next fetch opens a new one.

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

use crate::protocol::errors::ErrorCode;

/// A followed partition: topic and index.
pub type PartitionKey = (Arc<str>, i32);

/// What one Fetch request carries for the session.
#[derive(Debug, Default, PartialEq)]
pub struct SessionFetch {
    pub session_id: i32,
    pub session_epoch: i32,
    pub topics: Vec<FetchTopic>,
    pub forgotten: Vec<ForgottenTopic>,
    /// Whether the leader answers only partitions with news (so a partition missing from the
    /// response just has nothing new).
    pub incremental: bool,
}

#[derive(Debug, Default)]
pub struct FollowerSession {
    id: i32,
    /// The epoch of the next request; 0 opens a session.
    epoch: i32,
    /// What the leader's session holds: the fields last sent for each partition.
    held: HashMap<PartitionKey, FetchPartition>,
    /// What the request in flight changes, applied once the leader accepted it.
    pending: Option<Pending>,
}

/// A request in flight: the partitions it (re)sends and those it forgets.
#[derive(Debug)]
struct Pending {
    sent: Vec<(PartitionKey, FetchPartition)>,
    forgotten: Vec<PartitionKey>,
}

impl FollowerSession {
    /// The request for `partitions` (the round's partitions, in order, with their current
    /// fields).
    pub fn next_fetch(&mut self, partitions: Vec<(PartitionKey, FetchPartition)>) -> SessionFetch {
        if self.epoch == 0 {
            let topics = group(partitions.iter().map(|(k, p)| (k, p.clone())));
            self.pending = Some(Pending {
                sent: partitions,
                forgotten: Vec::new(),
            });
            // Naming the old id with epoch 0 closes it on the leader.
            return SessionFetch {
                session_id: self.id,
                session_epoch: 0,
                topics,
                forgotten: Vec::new(),
                incremental: false,
            };
        }
        let wanted: HashMap<&PartitionKey, ()> = partitions.iter().map(|(k, _)| (k, ())).collect();
        let forgotten: Vec<PartitionKey> = self
            .held
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .cloned()
            .collect();
        let changed: Vec<(PartitionKey, FetchPartition)> = partitions
            .into_iter()
            .filter(|(k, p)| self.held.get(k) != Some(p))
            .collect();
        let topics = group(changed.iter().map(|(k, p)| (k, p.clone())));
        let mut forgotten_topics: Vec<ForgottenTopic> = Vec::new();
        for (topic, index) in &forgotten {
            match forgotten_topics
                .iter_mut()
                .find(|t| t.topic.0.as_str() == topic.as_ref())
            {
                Some(t) => t.partitions.push(*index),
                None => forgotten_topics.push(
                    ForgottenTopic::default()
                        .with_topic(topic_name(topic))
                        .with_partitions(vec![*index]),
                ),
            }
        }
        self.pending = Some(Pending {
            sent: changed,
            forgotten,
        });
        SessionFetch {
            session_id: self.id,
            session_epoch: self.epoch,
            topics,
            forgotten: forgotten_topics,
            incremental: true,
        }
    }

    /// Takes the leader's answer: its top-level error code and session id.
    pub fn answered(&mut self, error: ErrorCode, session_id: i32) {
        let pending = self.pending.take();
        match error {
            ErrorCode::None => {}
            // Lost or out of step: start over with a new session next time.
            ErrorCode::FetchSessionIdNotFound | ErrorCode::InvalidFetchSessionEpoch => {
                self.restart();
                return;
            }
            _ => return,
        }
        let Some(Pending { sent, forgotten }) = pending else {
            return;
        };
        if self.epoch == 0 {
            // A new session, or none if the leader had no room (then fetch in full again).
            self.id = session_id;
            self.held = sent.into_iter().collect();
            self.epoch = if session_id == 0 { 0 } else { 1 };
            if session_id == 0 {
                self.held.clear();
            }
            return;
        }
        for key in forgotten {
            self.held.remove(&key);
        }
        self.held.extend(sent);
        self.epoch = if self.epoch == i32::MAX {
            1
        } else {
            self.epoch + 1
        };
    }

    /// The next fetch opens a new session (after a lost connection or a refused epoch); the
    /// old id goes with it so the leader drops that session.
    pub fn restart(&mut self) {
        self.epoch = 0;
        self.held.clear();
        self.pending = None;
    }
}

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// Request topics for `partitions`, consecutive partitions of one topic sharing its entry.
fn group<'a>(
    partitions: impl Iterator<Item = (&'a PartitionKey, FetchPartition)>,
) -> Vec<FetchTopic> {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for ((topic, _), partition) in partitions {
        match topics.last_mut() {
            Some(t) if t.topic.0.as_str() == topic.as_ref() => t.partitions.push(partition),
            _ => topics.push(
                FetchTopic::default()
                    .with_topic(topic_name(topic))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    topics
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(topic: &str, index: i32, offset: i64) -> (PartitionKey, FetchPartition) {
        (
            (Arc::from(topic), index),
            FetchPartition::default()
                .with_partition(index)
                .with_fetch_offset(offset),
        )
    }

    fn sent(fetch: &SessionFetch) -> Vec<(String, i32, i64)> {
        fetch
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.topic.0.to_string(), p.partition, p.fetch_offset))
            })
            .collect()
    }

    #[test]
    fn the_first_fetch_sends_everything_and_later_ones_only_changes() {
        let mut session = FollowerSession::default();
        let first = session.next_fetch(vec![part("t", 0, 0), part("t", 1, 0)]);
        assert_eq!(
            (first.session_id, first.session_epoch, first.incremental),
            (0, 0, false)
        );
        assert_eq!(sent(&first).len(), 2);
        session.answered(ErrorCode::None, 42);

        let second = session.next_fetch(vec![part("t", 0, 5), part("t", 1, 0)]);
        assert_eq!((second.session_id, second.session_epoch), (42, 1));
        assert!(second.incremental);
        assert_eq!(sent(&second), vec![("t".into(), 0, 5)]);
        session.answered(ErrorCode::None, 42);

        let third = session.next_fetch(vec![part("t", 0, 5), part("t", 1, 0)]);
        assert_eq!(third.session_epoch, 2);
        assert!(third.topics.is_empty() && third.forgotten.is_empty());
    }

    #[test]
    fn a_partition_left_out_is_forgotten_and_sent_in_full_when_back() {
        let mut session = FollowerSession::default();
        session.next_fetch(vec![part("t", 0, 0), part("t", 1, 0)]);
        session.answered(ErrorCode::None, 7);
        let without = session.next_fetch(vec![part("t", 0, 0)]);
        assert_eq!(without.forgotten.len(), 1);
        assert_eq!(without.forgotten[0].partitions, vec![1]);
        session.answered(ErrorCode::None, 7);
        let back = session.next_fetch(vec![part("t", 0, 0), part("t", 1, 0)]);
        assert_eq!(sent(&back), vec![("t".into(), 1, 0)]);
        assert!(back.forgotten.is_empty());
    }

    #[test]
    fn a_refused_epoch_or_lost_session_starts_a_new_one_closing_the_old() {
        let mut session = FollowerSession::default();
        session.next_fetch(vec![part("t", 0, 0)]);
        session.answered(ErrorCode::None, 9);
        session.next_fetch(vec![part("t", 0, 3)]);
        session.answered(ErrorCode::FetchSessionIdNotFound, 0);
        let again = session.next_fetch(vec![part("t", 0, 3)]);
        assert_eq!((again.session_id, again.session_epoch), (9, 0));
        assert!(!again.incremental);
        assert_eq!(sent(&again), vec![("t".into(), 0, 3)]);
    }

    #[test]
    fn without_room_on_the_leader_every_fetch_is_full() {
        let mut session = FollowerSession::default();
        session.next_fetch(vec![part("t", 0, 0)]);
        session.answered(ErrorCode::None, 0);
        let next = session.next_fetch(vec![part("t", 0, 0)]);
        assert_eq!(next.session_epoch, 0);
        assert_eq!(sent(&next).len(), 1);
    }

    #[test]
    fn a_failed_fetch_changes_nothing_the_next_one_relies_on() {
        let mut session = FollowerSession::default();
        session.next_fetch(vec![part("t", 0, 0)]);
        session.answered(ErrorCode::None, 5);
        session.next_fetch(vec![part("t", 0, 8)]);
        // The request failed (e.g. the connection dropped): the caller restarts the session.
        session.restart();
        let next = session.next_fetch(vec![part("t", 0, 8)]);
        assert_eq!((next.session_id, next.session_epoch), (5, 0));
    }
}
