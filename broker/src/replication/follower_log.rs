//! What a follower writes to its own log: the leader's batches appended as they are, a
//! truncation to where the two logs stop agreeing, and a restart at the leader's log start.
//!
//! Why a module of its own: this is the follower's disk work, and it runs on the disk threads
//! (`tasks::DiskPool`), not on the async worker that runs the fetcher's network loop. So the
//! functions here are blocking and take owned or `Arc` data; the fetcher (`super::fetcher`)
//! decides what to write and records the outcome (metrics, throttles, log-dir health).
//! Every write re-checks the partition's leader epoch under the log's lock: a partition whose
//! leader moved on while the response was on its way is left alone.

use std::io;
use std::sync::Arc;

use bytes::Bytes;

use crate::log::{AppendError, ReplicaAppend};
use crate::partition::Partition;
use crate::protocol::errors::ErrorCode;
use crate::state::now_ms;

/// One partition's part of a leader's fetch response, owned so the disk pool can write it.
pub struct Fetched {
    pub partition: Arc<Partition>,
    /// The leader epoch the partition was fetched for.
    pub leader_epoch: i32,
    pub error: ErrorCode,
    pub records: Option<Bytes>,
    pub log_start_offset: i64,
    pub high_watermark: i64,
}

/// Why a write did not happen.
#[derive(Debug)]
pub enum Refused {
    /// The partition's leader epoch moved on: it leaves the fetcher.
    Superseded,
    /// The leader answered an error, or the log refused the data: retry after a pause.
    Partition(String),
    /// The log directory failed while appending `bytes`.
    Disk { error: io::Error, bytes: usize },
}

/// Writes what the leader returned for one partition (blocking). `Ok(None)`: nothing to
/// append (an empty answer, or an out-of-range answer that moved the log).
pub fn write(fetched: &Fetched) -> Result<Option<ReplicaAppend>, Refused> {
    let p = &fetched.partition;
    match fetched.error {
        ErrorCode::None => {}
        ErrorCode::OffsetOutOfRange => return out_of_range(fetched).map(|()| None),
        code @ (ErrorCode::FencedLeaderEpoch | ErrorCode::NotLeaderOrFollower) => {
            // Metadata on this node is behind or ahead; wait for it to settle.
            return Err(if p.leader_epoch() == fetched.leader_epoch {
                Refused::Partition(format!("leader answered {code:?}"))
            } else {
                Refused::Superseded
            });
        }
        other => return Err(Refused::Partition(format!("leader answered {other:?}"))),
    }
    let Some(records) = fetched.records.as_ref().filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let mut log = p.log.write();
    if p.leader_epoch() != fetched.leader_epoch {
        return Err(Refused::Superseded);
    }
    match log.append_replica(records, now_ms()) {
        Ok(appended) => Ok(Some(appended)),
        Err(AppendError::Io(error)) => Err(Refused::Disk {
            error,
            bytes: records.len(),
        }),
        Err(e) => Err(Refused::Partition(format!(
            "append of fetched data failed: {e}"
        ))),
    }
}

/// Truncates the log to `offset` (blocking). With `leader_epoch`, only while the partition is
/// still at that epoch.
pub fn truncate(p: &Partition, offset: i64, leader_epoch: Option<i32>) -> Result<(), Refused> {
    let mut log = p.log.write();
    if leader_epoch.is_some_and(|epoch| p.leader_epoch() != epoch) {
        return Err(Refused::Superseded);
    }
    log.truncate_to(offset, now_ms())
        .map_err(|e| Refused::Partition(e.to_string()))
}

/// The leader does not have our fetch offset: behind its log start we restart the log there;
/// ahead of what it committed we truncate to its high watermark.
fn out_of_range(fetched: &Fetched) -> Result<(), Refused> {
    let p = &fetched.partition;
    let mut log = p.log.write();
    if p.leader_epoch() != fetched.leader_epoch {
        return Err(Refused::Superseded);
    }
    let leo = log.log_end_offset();
    let moved = if fetched.log_start_offset >= 0 && leo < fetched.log_start_offset {
        log.truncate_fully_and_start_at(fetched.log_start_offset, now_ms())
    } else if fetched.high_watermark >= 0 && leo > fetched.high_watermark {
        // Ahead of what the leader committed and not matched by its epochs: drop to its HW.
        log.truncate_to(fetched.high_watermark, now_ms())
    } else {
        return Err(Refused::Partition("fetch offset out of range".into()));
    };
    moved.map_err(|e| Refused::Partition(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::PartitionLog;
    use crate::topic_config::TopicSettings;

    fn partition(dir: &std::path::Path) -> Arc<Partition> {
        let log = PartitionLog::open(
            dir,
            TopicSettings::resolve(&Default::default(), &Default::default()),
            0,
        )
        .unwrap();
        Arc::new(Partition::replicated("t".into(), 0, log))
    }

    fn answer(p: &Arc<Partition>, error: ErrorCode, start: i64, hw: i64) -> Fetched {
        Fetched {
            partition: p.clone(),
            leader_epoch: p.leader_epoch(),
            error,
            records: None,
            log_start_offset: start,
            high_watermark: hw,
        }
    }

    #[test]
    fn an_answer_for_an_older_epoch_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path());
        let mut stale = answer(&p, ErrorCode::None, 0, 0);
        stale.leader_epoch = p.leader_epoch() + 1;
        stale.records = Some(Bytes::from_static(b"not even a batch"));
        assert!(matches!(write(&stale), Err(Refused::Superseded)));
        assert_eq!(p.log.read().log_end_offset(), 0);
    }

    #[test]
    fn behind_the_leaders_log_start_the_log_restarts_there() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path());
        let fetched = answer(&p, ErrorCode::OffsetOutOfRange, 500, 900);
        assert!(matches!(write(&fetched), Ok(None)));
        let log = p.log.read();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 500));
    }

    #[test]
    fn an_error_answer_at_the_current_epoch_is_retried_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path());
        let fetched = answer(&p, ErrorCode::NotLeaderOrFollower, -1, -1);
        assert!(matches!(write(&fetched), Err(Refused::Partition(_))));
        let empty = answer(&p, ErrorCode::None, 0, 0);
        assert!(matches!(write(&empty), Ok(None)));
    }
}
