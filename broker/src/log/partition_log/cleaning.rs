//! The log's side of compaction (see `log::cleaner`): which sealed segments a pass covers,
//! and swapping the cleaned copies in under the log's lock. How far the log is cleaned is kept
//! in `cleaner-offset-checkpoint` in the partition directory, so a restart does not redo it.

use std::io;
use std::path::{Path, PathBuf};

use super::PartitionLog;
use crate::log::cleaner::{CleanPlan, CleanedSegment, SegmentToClean};
use crate::log::segment::{write_atomically, Segment};

const CHECKPOINT: &str = "cleaner-offset-checkpoint";

/// The cleaned-up-to offset recorded in `dir` (0 when none is).
pub(super) fn read_checkpoint(dir: &Path) -> i64 {
    std::fs::read_to_string(dir.join(CHECKPOINT))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn write_checkpoint(dir: &Path, offset: i64) -> io::Result<()> {
    write_atomically(&dir.join(CHECKPOINT), offset.to_string().as_bytes())
}

impl PartitionLog {
    /// The next pass over this log, or None when it is not due: not compacted, nothing sealed
    /// below `upper` (the high watermark) and old enough, or too little of it uncleaned.
    /// For a compacted log: (bytes not cleaned yet, the log's size), the cleaner's lag.
    pub fn cleaner_lag(&self) -> Option<(u64, u64)> {
        if !self.settings.compact {
            return None;
        }
        let dirty = self
            .segments
            .iter()
            .filter(|seg| seg.next_offset > self.cleaned_up_to || seg.size == 0)
            .map(|seg| seg.size)
            .sum();
        Some((dirty, self.size_bytes()))
    }

    pub fn plan_cleaning(&self, upper: i64, now_ms: i64) -> Option<CleanPlan> {
        let s = &self.settings;
        if !s.compact {
            return None;
        }
        // An open transaction's records may still be aborted: nothing from its first offset on
        // is cleaned yet (Kafka's first uncleanable offset includes the first unstable one).
        let upper = self.last_stable_offset(upper);
        let old_enough = |seg: &Segment| {
            s.min_compaction_lag_ms <= 0
                || (seg.max_timestamp >= 0 && now_ms - seg.max_timestamp >= s.min_compaction_lag_ms)
        };
        let sealed = &self.segments[..self.segments.len() - 1];
        let cleanable: Vec<&Segment> = sealed
            .iter()
            .take_while(|seg| seg.next_offset <= upper && old_enough(seg))
            .collect();
        let total: u64 = cleanable.iter().map(|seg| seg.size).sum();
        let dirty: Vec<&&Segment> = cleanable
            .iter()
            .filter(|seg| seg.next_offset > self.cleaned_up_to)
            .collect();
        let dirty_bytes: u64 = dirty.iter().map(|seg| seg.size).sum();
        if dirty.is_empty() || total == 0 {
            return None;
        }
        let ratio = dirty_bytes as f64 / total as f64;
        let overdue = dirty.first().is_some_and(|seg| {
            seg.max_timestamp >= 0
                && now_ms.saturating_sub(seg.max_timestamp) > s.max_compaction_lag_ms
        });
        if ratio < s.min_cleanable_dirty_ratio && !overdue {
            return None;
        }
        let end_offset = cleanable.last().map_or(0, |seg| seg.next_offset);
        Some(CleanPlan {
            segments: cleanable
                .iter()
                .map(|seg| SegmentToClean {
                    base_offset: seg.base_offset,
                    path: seg.path.clone(),
                    file: seg.file.clone(),
                    size: seg.size,
                    next_offset: seg.next_offset,
                    max_timestamp: seg.max_timestamp,
                })
                .collect(),
            delete_horizon_ms: now_ms.saturating_sub(s.delete_retention_ms),
            end_offset,
            aborted: self
                .producers
                .txns()
                .aborted()
                .iter()
                .filter(|a| a.first_offset < end_offset)
                .copied()
                .collect(),
            dirty_from: self.cleaned_up_to,
        })
    }

    /// Swaps the cleaned copies in (blocking file I/O; call under the log's write lock) and
    /// records the log as cleaned up to `plan.end_offset` when every planned segment was still
    /// there. A copy whose original changed or went meanwhile is discarded. Returns how many
    /// segments were replaced.
    pub fn install_cleaned(
        &mut self,
        plan: &CleanPlan,
        cleaned: Vec<CleanedSegment>,
        now_ms: i64,
    ) -> io::Result<usize> {
        let unchanged = |log: &PartitionLog, base: i64, size: u64, next: i64| {
            let last = log.segments.len() - 1;
            log.segments[..last]
                .iter()
                .position(|s| s.base_offset == base && s.size == size && s.next_offset == next)
        };
        let all_there = plan
            .segments
            .iter()
            .all(|s| unchanged(self, s.base_offset, s.size, s.next_offset).is_some());
        let mut replaced = 0;
        for c in cleaned {
            let Some(i) = unchanged(self, c.base_offset, c.original_size, c.original_next_offset)
            else {
                let _ = std::fs::remove_file(&c.cleaned_path);
                continue;
            };
            if c.size == 0 && i > 0 {
                // Nothing of it stays: the segment goes (the first one stays, it holds the
                // log start offset).
                let _ = std::fs::remove_file(&c.cleaned_path);
                self.segments.remove(i).delete_files()?;
            } else {
                self.segments[i] = self.swap_in(&self.segments[i].path.clone(), &c, now_ms)?;
            }
            replaced += 1;
        }
        if all_there && plan.end_offset > self.cleaned_up_to {
            self.cleaned_up_to = plan.end_offset;
            write_checkpoint(&self.dir, self.cleaned_up_to)?;
        }
        Ok(replaced)
    }

    /// Replaces the segment file at `path` with its cleaned copy. The old indexes go first, so
    /// a crash at any point leaves either the old file or the new one, and a segment without
    /// index files is rescanned on open.
    fn swap_in(&self, path: &PathBuf, c: &CleanedSegment, now_ms: i64) -> io::Result<Segment> {
        for ext in ["index", "timeindex"] {
            match std::fs::remove_file(path.with_extension(ext)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&c.cleaned_path, path)?;
        if let Ok(dir) = std::fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        let (mut seg, _) = Segment::open(
            path,
            c.base_offset,
            self.settings.index_interval_bytes,
            true,
            now_ms,
        )?;
        // The segment still spans the offsets it did (its last records may be gone) and keeps
        // its age for retention.
        seg.next_offset = c.original_next_offset;
        seg.max_timestamp = seg.max_timestamp.max(c.original_max_timestamp);
        seg.seal()?;
        Ok(seg)
    }

    /// How far this log is compacted (the end of the last cleaned segment).
    pub fn cleaned_up_to(&self) -> i64 {
        self.cleaned_up_to
    }
}

#[cfg(test)]
mod tests;
