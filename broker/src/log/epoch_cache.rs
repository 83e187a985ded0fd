//! The leader-epoch cache of one partition log (Kafka's `leader-epoch-checkpoint`): the first
//! offset written under each leader epoch. It answers OffsetsForLeaderEpoch ("where does epoch
//! e end in your log?"), which is how a follower finds the point where its log diverged from a
//! new leader's and truncates there instead of keeping records no one acknowledged.

use std::io;
use std::path::{Path, PathBuf};

const FILE: &str = "leader-epoch-checkpoint";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

#[derive(Debug)]
pub struct EpochCache {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    /// Loads the checkpoint in `dir` (an absent or unreadable file is an empty cache); entries
    /// at or past `log_end_offset` are dropped (their records were lost in a torn tail).
    pub fn open(dir: &Path, log_end_offset: i64) -> EpochCache {
        let path = dir.join(FILE);
        let entries = std::fs::read_to_string(&path)
            .map(|text| parse(&text))
            .unwrap_or_default();
        let mut cache = EpochCache { path, entries };
        let _ = cache.truncate_from_end(log_end_offset);
        cache
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// Notes that a batch of `epoch` starts at `offset`; only a newer epoch adds an entry.
    pub fn assign(&mut self, epoch: i32, offset: i64) -> io::Result<()> {
        if epoch < 0 || self.latest_epoch().is_some_and(|l| l >= epoch) {
            return Ok(());
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset: offset,
        });
        let persisted = self.persist();
        if persisted.is_err() {
            // Not on disk, so not known: the next append of this epoch tries again.
            self.entries.pop();
        }
        persisted
    }

    /// Forgets epochs that start at or after `end` (after truncating the log to `end`).
    pub fn truncate_from_end(&mut self, end: i64) -> io::Result<()> {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end);
        if self.entries.len() != before {
            self.persist()?;
        }
        Ok(())
    }

    /// Forgets everything (the log was emptied and restarts at a new offset).
    pub fn clear(&mut self) -> io::Result<()> {
        self.entries.clear();
        self.persist()
    }

    /// Kafka's answer for "the end offset of `epoch`": the largest epoch <= `epoch` this log
    /// knows and the offset where the next epoch starts (the log end offset for the latest).
    /// `(-1, -1)` when the log knows no epoch that old.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> (i32, i64) {
        let idx = self.entries.partition_point(|e| e.epoch <= epoch);
        if idx == 0 {
            return (-1, -1);
        }
        let found = self.entries[idx - 1];
        let end = self
            .entries
            .get(idx)
            .map_or(log_end_offset, |next| next.start_offset);
        (found.epoch, end)
    }

    fn persist(&self) -> io::Result<()> {
        let mut text = String::from("0\n");
        text.push_str(&format!("{}\n", self.entries.len()));
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        super::segment::write_atomically(&self.path, text.as_bytes())
    }
}

/// Kafka's checkpoint format: version line, count line, then `epoch offset` lines.
fn parse(text: &str) -> Vec<EpochEntry> {
    let mut out: Vec<EpochEntry> = Vec::new();
    for line in text.lines().skip(2) {
        let mut it = line.split_whitespace();
        let (Some(e), Some(o)) = (it.next(), it.next()) else {
            continue;
        };
        let (Ok(epoch), Ok(start_offset)) = (e.parse::<i32>(), o.parse::<i64>()) else {
            continue;
        };
        if out
            .last()
            .is_some_and(|l| l.epoch >= epoch || l.start_offset > start_offset)
        {
            continue;
        }
        out.push(EpochEntry {
            epoch,
            start_offset,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offsets_follow_kafkas_rules_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = EpochCache::open(dir.path(), 0);
        c.assign(0, 0).unwrap();
        c.assign(0, 5).unwrap();
        c.assign(2, 10).unwrap();
        c.assign(5, 30).unwrap();
        assert_eq!(c.end_offset_for(0, 40), (0, 10));
        assert_eq!(
            c.end_offset_for(1, 40),
            (0, 10),
            "epoch 1 never wrote: ends where 2 starts"
        );
        assert_eq!(c.end_offset_for(3, 40), (2, 30));
        assert_eq!(c.end_offset_for(9, 40), (5, 40));
        assert_eq!(c.end_offset_for(-1, 40), (-1, -1));
        let c = EpochCache::open(dir.path(), 40);
        assert_eq!(c.entries().len(), 3);
        // Reopened after a torn tail that lost everything from 30 on.
        let c = EpochCache::open(dir.path(), 30);
        assert_eq!(c.latest_epoch(), Some(2));
    }

    #[test]
    fn truncation_forgets_later_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = EpochCache::open(dir.path(), 0);
        c.assign(1, 0).unwrap();
        c.assign(3, 7).unwrap();
        c.truncate_from_end(7).unwrap();
        assert_eq!(c.latest_epoch(), Some(1));
        c.assign(4, 7).unwrap();
        assert_eq!(c.end_offset_for(3, 9), (1, 7));
    }
}
