//! Incremental fetch sessions (KIP-227), Kafka's `FetchSessionCache`.
//!
//! A consumer or follower fetching many partitions would otherwise send every partition's
//! position in every request and get every partition back in every response, data or not. With
//! a session the broker remembers the partitions and their positions: the client sends only
//! what changed (and what to forget), and the broker answers only partitions with news —
//! records, an error, or a moved high watermark or log start offset.
//!
//! This module is the cache and its rules, without I/O: [`FetchSessions::open`] turns a
//! request into the full partition list to read, and [`FetchSessions::close_full`] /
//! [`FetchSessions::close_incremental`] record what was answered and drop what an incremental
//! response leaves out. The Fetch handler (`api::fetch`) does the reading in between.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
use kafka_protocol::messages::{FetchRequest, TopicName};
use parking_lot::Mutex;
use uuid::Uuid;

use crate::protocol::errors::ErrorCode;

/// `session_epoch` of a request that opens a new session (closing the one named, if any).
const INITIAL_EPOCH: i32 = 0;
/// `session_epoch` of a request that closes its session (or uses none).
const FINAL_EPOCH: i32 = -1;

/// How many partitions all sessions may hold together
/// (`max.incremental.fetch.session.cache.slots`).
pub const DEFAULT_SLOTS: usize = 1000;
/// A session unused this long may be evicted for a new one
/// (`min.incremental.fetch.session.eviction.ms`).
pub const EVICTION_AGE: Duration = Duration::from_secs(120);

/// A topic as the request names it: by name before Fetch v13, by id from v13.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TopicRef {
    Name(String),
    Id(Uuid),
}

type PartitionKey = (TopicRef, i32);

/// What a session remembers of one partition: the last request fields and what the last
/// response said (so the next response can leave the partition out if nothing changed).
#[derive(Debug, Clone)]
struct Cached {
    request: FetchPartition,
    high_watermark: i64,
    log_start_offset: i64,
    last_stable_offset: i64,
}

#[derive(Debug)]
struct Session {
    /// The epoch the next request must carry.
    next_epoch: i32,
    partitions: IndexMap<PartitionKey, Cached>,
    /// Follower sessions may evict consumer sessions, not the other way round.
    follower: bool,
    last_used: Instant,
}

/// How to answer one Fetch request.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// No session: read the request's partitions, answer all of them, session id 0.
    Sessionless,
    /// Epoch 0: read the request's partitions, answer all of them, then open a session.
    New,
    /// An existing session: read every partition it holds (listed here, already updated by
    /// the request), and answer only those with news.
    Incremental { id: i32, topics: Vec<FetchTopic> },
}

pub struct FetchSessions {
    inner: Mutex<Cache>,
    slots: usize,
}

struct Cache {
    sessions: HashMap<i32, Session>,
    next_id: i32,
}

impl Default for FetchSessions {
    fn default() -> Self {
        FetchSessions::new(DEFAULT_SLOTS)
    }
}

impl FetchSessions {
    pub fn new(slots: usize) -> FetchSessions {
        FetchSessions {
            inner: Mutex::new(Cache {
                sessions: HashMap::new(),
                // Random start: ids from a previous process are not reused right away.
                next_id: (Uuid::new_v4().as_u128() as i32 & 0x3fff_ffff).max(1),
            }),
            slots,
        }
    }

    /// Number of open sessions.
    pub fn len(&self) -> usize {
        self.inner.lock().sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decides how to answer `req` (Fetch v7+; older versions carry no session fields and
    /// come out sessionless). An error goes back as the response's top-level error code.
    pub fn open(
        &self,
        req: &FetchRequest,
        uses_ids: bool,
        now: Instant,
    ) -> Result<Plan, ErrorCode> {
        let mut cache = self.inner.lock();
        match (req.session_id, req.session_epoch) {
            (0, FINAL_EPOCH) => Ok(Plan::Sessionless),
            (id, FINAL_EPOCH) => {
                cache.sessions.remove(&id);
                Ok(Plan::Sessionless)
            }
            (id, INITIAL_EPOCH) => {
                cache.sessions.remove(&id);
                Ok(Plan::New)
            }
            (0, _) => Err(ErrorCode::InvalidFetchSessionEpoch),
            (id, epoch) => {
                let session = cache
                    .sessions
                    .get_mut(&id)
                    .ok_or(ErrorCode::FetchSessionIdNotFound)?;
                if epoch != session.next_epoch {
                    return Err(ErrorCode::InvalidFetchSessionEpoch);
                }
                for forgotten in &req.forgotten_topics_data {
                    let topic = topic_ref(uses_ids, &forgotten.topic, forgotten.topic_id);
                    for partition in &forgotten.partitions {
                        session
                            .partitions
                            .shift_remove(&(topic.clone(), *partition));
                    }
                }
                for t in &req.topics {
                    let topic = topic_ref(uses_ids, &t.topic, t.topic_id);
                    for p in &t.partitions {
                        session
                            .partitions
                            .entry((topic.clone(), p.partition))
                            .and_modify(|c| c.request = p.clone())
                            .or_insert_with(|| Cached::new(p.clone()));
                    }
                }
                session.next_epoch = next_epoch(epoch);
                session.last_used = now;
                Ok(Plan::Incremental {
                    id,
                    topics: as_topics(&session.partitions),
                })
            }
        }
    }

    /// After a full answer to an epoch-0 request: opens a session holding its partitions and
    /// returns its id, or 0 when the cache has no room (the client then fetches without one).
    pub fn close_full(
        &self,
        req: &FetchRequest,
        uses_ids: bool,
        follower: bool,
        responses: &[FetchableTopicResponse],
        now: Instant,
    ) -> i32 {
        let mut partitions = IndexMap::new();
        for t in &req.topics {
            let topic = topic_ref(uses_ids, &t.topic, t.topic_id);
            for p in &t.partitions {
                partitions.insert((topic.clone(), p.partition), Cached::new(p.clone()));
            }
        }
        for t in responses {
            let topic = topic_ref(uses_ids, &t.topic, t.topic_id);
            for data in &t.partitions {
                if let Some(cached) = partitions.get_mut(&(topic.clone(), data.partition_index)) {
                    cached.remember(data);
                }
            }
        }
        let mut cache = self.inner.lock();
        if !cache.make_room(partitions.len(), self.slots, follower, now) {
            return 0;
        }
        let id = cache.fresh_id();
        cache.sessions.insert(
            id,
            Session {
                next_epoch: 1,
                partitions,
                follower,
                last_used: now,
            },
        );
        id
    }

    /// After reading an incremental request's partitions: keeps in `responses` only the
    /// partitions with news and remembers what they said.
    pub fn close_incremental(
        &self,
        id: i32,
        uses_ids: bool,
        responses: &mut Vec<FetchableTopicResponse>,
    ) {
        let mut cache = self.inner.lock();
        let Some(session) = cache.sessions.get_mut(&id) else {
            // Closed meanwhile (a concurrent request with epoch -1 or 0): answer it all.
            return;
        };
        for t in responses.iter_mut() {
            let topic = topic_ref(uses_ids, &t.topic, t.topic_id);
            t.partitions.retain(|data| {
                session
                    .partitions
                    .get_mut(&(topic.clone(), data.partition_index))
                    .is_none_or(|cached| cached.remember(data))
            });
        }
        responses.retain(|t| !t.partitions.is_empty());
    }
}

impl Cache {
    /// Whether `needed` more slots fit, after evicting sessions idle for [`EVICTION_AGE`]
    /// (least recently used first; a follower's session may also evict any consumer's).
    fn make_room(&mut self, needed: usize, slots: usize, follower: bool, now: Instant) -> bool {
        if needed > slots {
            return false;
        }
        loop {
            let used: usize = self.sessions.values().map(|s| s.partitions.len()).sum();
            if used + needed <= slots {
                return true;
            }
            let victim = self
                .sessions
                .iter()
                .filter(|(_, s)| {
                    now.duration_since(s.last_used) >= EVICTION_AGE || (follower && !s.follower)
                })
                .min_by_key(|(_, s)| (s.follower, s.last_used))
                .map(|(id, _)| *id);
            match victim {
                Some(id) => {
                    self.sessions.remove(&id);
                }
                None => return false,
            }
        }
    }

    fn fresh_id(&mut self) -> i32 {
        loop {
            let id = self.next_id;
            self.next_id = if self.next_id == i32::MAX {
                1
            } else {
                self.next_id + 1
            };
            if !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

impl Cached {
    fn new(request: FetchPartition) -> Cached {
        // Nothing answered yet: the first response always carries the partition.
        Cached {
            request,
            high_watermark: -1,
            log_start_offset: -1,
            last_stable_offset: -1,
        }
    }

    /// Records what `data` answers for this partition; true if it has news for the client
    /// (records, an error, or moved offsets) and so belongs in an incremental response.
    fn remember(&mut self, data: &kafka_protocol::messages::fetch_response::PartitionData) -> bool {
        let has_records = data.records.as_ref().is_some_and(|r| !r.is_empty());
        let moved = data.high_watermark != self.high_watermark
            || data.log_start_offset != self.log_start_offset
            || data.last_stable_offset != self.last_stable_offset;
        if data.error_code == ErrorCode::None.code() {
            self.high_watermark = data.high_watermark;
            self.log_start_offset = data.log_start_offset;
            self.last_stable_offset = data.last_stable_offset;
        }
        has_records || moved || data.error_code != ErrorCode::None.code()
    }
}

fn topic_ref(uses_ids: bool, name: &TopicName, id: Uuid) -> TopicRef {
    if uses_ids {
        TopicRef::Id(id)
    } else {
        TopicRef::Name(name.0.to_string())
    }
}

/// A session's partitions as request topics (consecutive partitions of a topic together).
fn as_topics(partitions: &IndexMap<PartitionKey, Cached>) -> Vec<FetchTopic> {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for ((topic, _), cached) in partitions {
        let same = topics.last().is_some_and(|t| match topic {
            TopicRef::Name(name) => t.topic.0.as_str() == name,
            TopicRef::Id(id) => t.topic_id == *id,
        });
        if !same {
            let entry = match topic {
                TopicRef::Name(name) => FetchTopic::default().with_topic(TopicName(
                    kafka_protocol::protocol::StrBytes::from_string(name.clone()),
                )),
                TopicRef::Id(id) => FetchTopic::default().with_topic_id(*id),
            };
            topics.push(entry);
        }
        if let Some(t) = topics.last_mut() {
            t.partitions.push(cached.request.clone());
        }
    }
    topics
}

fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_request::ForgottenTopic;
    use kafka_protocol::messages::fetch_response::PartitionData;

    use super::*;

    fn name(n: &str) -> TopicName {
        TopicName(kafka_protocol::protocol::StrBytes::from_string(n.into()))
    }

    fn request(id: i32, epoch: i32, parts: &[(&str, i32, i64)]) -> FetchRequest {
        let mut topics: Vec<FetchTopic> = Vec::new();
        for (topic, partition, offset) in parts {
            let p = FetchPartition::default()
                .with_partition(*partition)
                .with_fetch_offset(*offset);
            match topics.last_mut() {
                Some(t) if t.topic.0.as_str() == *topic => t.partitions.push(p),
                _ => topics.push(
                    FetchTopic::default()
                        .with_topic(name(topic))
                        .with_partitions(vec![p]),
                ),
            }
        }
        FetchRequest::default()
            .with_session_id(id)
            .with_session_epoch(epoch)
            .with_topics(topics)
    }

    fn answer(topic: &str, parts: &[(i32, i64, usize)]) -> Vec<FetchableTopicResponse> {
        vec![FetchableTopicResponse::default()
            .with_topic(name(topic))
            .with_partitions(
                parts
                    .iter()
                    .map(|(p, hw, bytes)| {
                        PartitionData::default()
                            .with_partition_index(*p)
                            .with_high_watermark(*hw)
                            .with_last_stable_offset(*hw)
                            .with_log_start_offset(0)
                            .with_records(Some(bytes::Bytes::from(vec![0u8; *bytes])))
                    })
                    .collect(),
            )]
    }

    fn offsets(plan: &Plan) -> Vec<(String, i32, i64)> {
        let Plan::Incremental { topics, .. } = plan else {
            panic!("not incremental: {plan:?}")
        };
        topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.topic.0.to_string(), p.partition, p.fetch_offset))
            })
            .collect()
    }

    /// Opens a session for t-0 and t-1 at offset 0, answered with high watermark 10.
    fn opened(sessions: &FetchSessions, now: Instant) -> i32 {
        let first = request(0, INITIAL_EPOCH, &[("t", 0, 0), ("t", 1, 0)]);
        assert_eq!(sessions.open(&first, false, now), Ok(Plan::New));
        let id = sessions.close_full(
            &first,
            false,
            false,
            &answer("t", &[(0, 10, 5), (1, 10, 5)]),
            now,
        );
        assert_ne!(id, 0);
        id
    }

    #[test]
    fn without_session_fields_a_fetch_is_sessionless() {
        let sessions = FetchSessions::default();
        let req = request(0, FINAL_EPOCH, &[("t", 0, 0)]);
        assert_eq!(
            sessions.open(&req, false, Instant::now()),
            Ok(Plan::Sessionless)
        );
        assert!(sessions.is_empty());
    }

    #[test]
    fn an_incremental_request_fetches_every_session_partition_with_updated_offsets() {
        let sessions = FetchSessions::default();
        let now = Instant::now();
        let id = opened(&sessions, now);
        // Only t-1 moved; t-0 keeps the offset the session holds.
        let plan = sessions
            .open(&request(id, 1, &[("t", 1, 7)]), false, now)
            .unwrap();
        assert_eq!(offsets(&plan), vec![("t".into(), 0, 0), ("t".into(), 1, 7)]);
    }

    #[test]
    fn an_incremental_response_leaves_out_partitions_without_news() {
        let sessions = FetchSessions::default();
        let now = Instant::now();
        let id = opened(&sessions, now);
        sessions.open(&request(id, 1, &[]), false, now).unwrap();
        // t-0: nothing new (same high watermark, no records); t-1: records.
        let mut responses = answer("t", &[(0, 10, 0), (1, 10, 3)]);
        sessions.close_incremental(id, false, &mut responses);
        let left: Vec<i32> = responses[0]
            .partitions
            .iter()
            .map(|p| p.partition_index)
            .collect();
        assert_eq!(left, vec![1]);
        // A moved high watermark is news even without records.
        sessions.open(&request(id, 2, &[]), false, now).unwrap();
        let mut responses = answer("t", &[(0, 11, 0), (1, 10, 0)]);
        sessions.close_incremental(id, false, &mut responses);
        let left: Vec<i32> = responses[0]
            .partitions
            .iter()
            .map(|p| p.partition_index)
            .collect();
        assert_eq!(left, vec![0]);
        // Nothing new at all: no topics in the response.
        sessions.open(&request(id, 3, &[]), false, now).unwrap();
        let mut responses = answer("t", &[(0, 11, 0), (1, 10, 0)]);
        sessions.close_incremental(id, false, &mut responses);
        assert!(responses.is_empty());
    }

    #[test]
    fn an_error_is_always_news() {
        let sessions = FetchSessions::default();
        let now = Instant::now();
        let id = opened(&sessions, now);
        sessions.open(&request(id, 1, &[]), false, now).unwrap();
        let mut responses = answer("t", &[(0, 10, 0)]);
        responses[0].partitions[0].error_code = ErrorCode::NotLeaderOrFollower.code();
        sessions.close_incremental(id, false, &mut responses);
        assert_eq!(responses[0].partitions.len(), 1);
    }

    #[test]
    fn forgotten_partitions_leave_the_session() {
        let sessions = FetchSessions::default();
        let now = Instant::now();
        let id = opened(&sessions, now);
        let mut req = request(id, 1, &[("u", 0, 3)]);
        req.forgotten_topics_data = vec![ForgottenTopic::default()
            .with_topic(name("t"))
            .with_partitions(vec![0])];
        let plan = sessions.open(&req, false, now).unwrap();
        assert_eq!(offsets(&plan), vec![("t".into(), 1, 0), ("u".into(), 0, 3)]);
    }

    #[test]
    fn a_wrong_epoch_or_unknown_session_is_refused() {
        let sessions = FetchSessions::default();
        let now = Instant::now();
        let id = opened(&sessions, now);
        assert_eq!(
            sessions.open(&request(id, 5, &[]), false, now),
            Err(ErrorCode::InvalidFetchSessionEpoch)
        );
        assert_eq!(
            sessions.open(&request(id + 1, 1, &[]), false, now),
            Err(ErrorCode::FetchSessionIdNotFound)
        );
        // The right epoch still works after a refused one, and the epoch moves on.
        sessions.open(&request(id, 1, &[]), false, now).unwrap();
        assert_eq!(
            sessions.open(&request(id, 1, &[]), false, now),
            Err(ErrorCode::InvalidFetchSessionEpoch)
        );
        sessions.open(&request(id, 2, &[]), false, now).unwrap();
    }

    #[test]
    fn final_epoch_closes_and_initial_epoch_replaces_a_session() {
        let sessions = FetchSessions::default();
        let now = Instant::now();
        let id = opened(&sessions, now);
        assert_eq!(
            sessions.open(&request(id, FINAL_EPOCH, &[("t", 0, 0)]), false, now),
            Ok(Plan::Sessionless)
        );
        assert!(sessions.is_empty());
        let id = opened(&sessions, now);
        assert_eq!(
            sessions.open(&request(id, INITIAL_EPOCH, &[("t", 0, 0)]), false, now),
            Ok(Plan::New)
        );
        assert!(sessions.is_empty(), "the old session is gone");
    }

    #[test]
    fn a_full_cache_evicts_only_idle_sessions_and_followers_come_first() {
        let sessions = FetchSessions::new(2);
        let start = Instant::now();
        let first = opened(&sessions, start);
        // Full (2 slots used by a fresh consumer session): another consumer gets no session.
        let req = request(0, INITIAL_EPOCH, &[("x", 0, 0)]);
        assert_eq!(sessions.close_full(&req, false, false, &[], start), 0);
        // A follower may evict the consumer's session.
        assert_ne!(sessions.close_full(&req, false, true, &[], start), 0);
        assert_eq!(
            sessions.open(&request(first, 1, &[]), false, start),
            Err(ErrorCode::FetchSessionIdNotFound)
        );
        // Once idle long enough, a consumer's new session may evict the follower's.
        let later = start + EVICTION_AGE;
        let two = request(0, INITIAL_EPOCH, &[("y", 0, 0), ("y", 1, 0)]);
        assert_ne!(sessions.close_full(&two, false, false, &[], later), 0);
        assert_eq!(sessions.len(), 1);
    }
}
