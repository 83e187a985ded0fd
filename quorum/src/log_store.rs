//! The Raft log and vote on disk: `log.jsonl` (one entry per line, fsynced before Raft is told
//! the entries are durable), `vote.json` (written atomically), `committed.json` and
//! `purged.json` (the last entry compacted into a snapshot).
//!
//! `committed.json` is only a start-up hint (how far the state machine may replay before a
//! leader confirms the commit index), so it is replaced without fsync: every metadata write
//! commits, and an fsync'd rename per commit tripled a single node's commit latency. After a
//! crash it may be stale or unreadable; it is then ignored (the state machine replays from the
//! snapshot and catches up when the leader commits), which Raft allows: the commit index is
//! never taken from it beyond what the durable log holds.
//!
//! A purge never removes entries the snapshot on disk does not cover yet: it waits for the state
//! machine's [`DurableSnapshot`] to reach the purge point (see `state_machine` for why).
//!
//! Metadata logs are small (records per topic/partition change), so the whole log lives in memory
//! too and a truncation or purge rewrites the file.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError,
    StorageIOError, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::state_machine::DurableSnapshot;
use crate::TypeConfig;

/// How long a purge waits for the snapshot covering it to be on disk. Installing a snapshot
/// takes far less; past this the purge fails (and Raft stops) rather than leave a log that
/// starts above the node's state.
const PURGE_WAITS_FOR_SNAPSHOT: std::time::Duration = std::time::Duration::from_secs(120);

type Result<T> = std::result::Result<T, StorageError<u64>>;

fn io_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl ToString) -> StorageError<u64> {
    StorageIOError::new(subject, verb, openraft::AnyError::error(e.to_string())).into()
}

/// Writes `value` as JSON to `path` atomically (temp file, fsync, rename, fsync dir).
pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(value)?)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Replaces `path` with `value` as JSON (temp file and rename, no fsync): for hints that may be
/// lost in a crash.
fn write_json_replace<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, serde_json::to_vec(value)?)?;
    fs::rename(&tmp, path)
}

pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

struct Inner {
    dir: PathBuf,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    last_purged: Option<LogId<u64>>,
    file: File,
}

impl Inner {
    fn log_path(dir: &Path) -> PathBuf {
        dir.join("log.jsonl")
    }

    /// Rewrites `log.jsonl` from memory (after truncate/purge).
    fn rewrite(&mut self) -> std::io::Result<()> {
        let tmp = self.dir.join("log.jsonl.tmp");
        {
            let mut f = File::create(&tmp)?;
            for e in self.entries.values() {
                serde_json::to_writer(&mut f, e)?;
                f.write_all(b"\n")?;
            }
            f.sync_all()?;
        }
        fs::rename(&tmp, Self::log_path(&self.dir))?;
        File::open(&self.dir)?.sync_all()?;
        self.file = OpenOptions::new()
            .append(true)
            .open(Self::log_path(&self.dir))?;
        Ok(())
    }
}

/// The log store; clones share the same log (the reader handed to Raft is a clone).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    /// The snapshot on disk, which purges wait for; `None` only in this module's unit tests.
    durable_snapshot: Option<DurableSnapshot>,
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, purging only what `durable_snapshot` covers.
    pub fn open(dir: &Path, durable_snapshot: DurableSnapshot) -> std::io::Result<LogStore> {
        let mut store = Self::open_unguarded(dir)?;
        store.durable_snapshot = Some(durable_snapshot);
        Ok(store)
    }

    /// Opens (or creates) the log in `dir`. A torn last line (crash mid-append) is dropped: it
    /// was never acknowledged as durable.
    fn open_unguarded(dir: &Path) -> std::io::Result<LogStore> {
        fs::create_dir_all(dir)?;
        let path = Inner::log_path(dir);
        let mut entries = BTreeMap::new();
        if path.exists() {
            let reader = BufReader::new(File::open(&path)?);
            for line in reader.lines() {
                let line = line?;
                match serde_json::from_str::<Entry<TypeConfig>>(&line) {
                    Ok(e) => {
                        entries.insert(e.log_id.index, e);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "dropping a torn entry at the end of the Raft log");
                        break;
                    }
                }
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            entries,
            vote: read_json(&dir.join("vote.json"))?,
            committed: read_json(&dir.join("committed.json")).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "ignoring an unreadable committed.json (a hint only)");
                None
            }),
            last_purged: read_json(&dir.join("purged.json"))?,
            file,
        };
        // Entries at or below the purge point may remain if a crash hit between writing
        // purged.json and rewriting the log.
        if let Some(p) = inner.last_purged {
            let before = inner.entries.len();
            inner.entries.retain(|i, _| *i > p.index);
            if inner.entries.len() != before {
                inner.rewrite()?;
            }
        }
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
            durable_snapshot: None,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this log has never been written (a pristine node).
    pub fn is_pristine(&self) -> bool {
        let inner = self.lock();
        inner.entries.is_empty() && inner.vote.is_none() && inner.last_purged.is_none()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        let entries: Vec<Entry<TypeConfig>> = self
            .lock()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect();
        // Raft assumes what it reads is contiguous; a hole would otherwise surface as a panic
        // far from its cause, so name it here.
        if let Some(pair) = entries
            .windows(2)
            .find(|w| w[1].log_id.index != w[0].log_id.index + 1)
        {
            tracing::error!(
                after = pair[0].log_id.index,
                next = pair[1].log_id.index,
                "the Raft log has a hole"
            );
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let inner = self.lock();
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<()> {
        let mut inner = self.lock();
        write_json_atomic(&inner.dir.join("vote.json"), vote)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<()> {
        let mut inner = self.lock();
        write_json_replace(&inner.dir.join("committed.json"), &committed)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>> {
        Ok(self.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.lock();
        let mut buf = Vec::new();
        let mut batch = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut buf, &e)
                .map_err(|err| io_err(ErrorSubject::Logs, ErrorVerb::Write, err))?;
            buf.push(b'\n');
            batch.push(e);
        }
        let written = inner
            .file
            .write_all(&buf)
            .and_then(|()| inner.file.sync_data());
        if let Err(e) = &written {
            let err = io_err(ErrorSubject::Logs, ErrorVerb::Write, e);
            callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
            return Err(err);
        }
        for e in batch {
            inner.entries.insert(e.log_id.index, e);
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<()> {
        let mut inner = self.lock();
        inner.entries.retain(|i, _| *i < log_id.index);
        inner
            .rewrite()
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<()> {
        if let Some(durable) = &mut self.durable_snapshot {
            let covered = matches!(
                tokio::time::timeout(
                    PURGE_WAITS_FOR_SNAPSHOT,
                    durable.wait_for(|on_disk| *on_disk >= Some(log_id.index)),
                )
                .await,
                Ok(Ok(_))
            );
            if !covered {
                return Err(io_err(
                    ErrorSubject::Logs,
                    ErrorVerb::Delete,
                    format!(
                        "no snapshot on disk covers the purge up to {log_id} (on disk: {:?})",
                        *durable.borrow()
                    ),
                ));
            }
        }
        let mut inner = self.lock();
        write_json_atomic(&inner.dir.join("purged.json"), &log_id)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        inner.last_purged = Some(log_id);
        inner.entries.retain(|i, _| *i > log_id.index);
        inner
            .rewrite()
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 0), index),
            payload: EntryPayload::Normal(crate::Command(serde_json::json!({ "i": index }))),
        }
    }

    fn append_now(store: &LogStore, entries: Vec<Entry<TypeConfig>>) {
        let mut inner = store.lock();
        for e in entries {
            serde_json::to_writer(&mut inner.file, &e).unwrap();
            inner.file.write_all(b"\n").unwrap();
            inner.entries.insert(e.log_id.index, e);
        }
    }

    #[tokio::test]
    async fn log_survives_reopen_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open_unguarded(dir.path()).unwrap();
        assert!(store.is_pristine());
        append_now(&store, (1..=5).map(|i| entry(1, i)).collect());
        store
            .truncate(LogId::new(CommittedLeaderId::new(1, 0), 4))
            .await
            .unwrap();
        store.save_vote(&Vote::new(2, 1)).await.unwrap();
        drop(store);

        let mut store = LogStore::open_unguarded(dir.path()).unwrap();
        let got = store.try_get_log_entries(0..).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
        assert!(!store.is_pristine());
    }

    #[tokio::test]
    async fn the_committed_hint_survives_reopen_and_a_lost_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open_unguarded(dir.path()).unwrap();
        append_now(&store, (1..=3).map(|i| entry(1, i)).collect());
        let committed = Some(LogId::new(CommittedLeaderId::new(1, 0), 2));
        store.save_committed(committed).await.unwrap();
        drop(store);
        let mut store = LogStore::open_unguarded(dir.path()).unwrap();
        assert_eq!(store.read_committed().await.unwrap(), committed);
        drop(store);
        // A crash can leave the unsynced file empty: the store still opens, without the hint.
        std::fs::write(dir.path().join("committed.json"), b"").unwrap();
        let mut store = LogStore::open_unguarded(dir.path()).unwrap();
        assert_eq!(store.read_committed().await.unwrap(), None);
        assert_eq!(store.try_get_log_entries(0..).await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn purge_moves_the_log_start_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open_unguarded(dir.path()).unwrap();
        append_now(&store, (1..=6).map(|i| entry(1, i)).collect());
        store
            .purge(LogId::new(CommittedLeaderId::new(1, 0), 3))
            .await
            .unwrap();
        drop(store);
        // A crash mid-append leaves half a line.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("log.jsonl"))
            .unwrap();
        f.write_all(b"{\"log_id\":{\"lea").unwrap();
        drop(f);

        let mut store = LogStore::open_unguarded(dir.path()).unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(3));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(6));
        let got = store.try_get_log_entries(0..).await.unwrap();
        assert_eq!(got.len(), 3);
    }

    /// A follower's purge is scheduled together with the install of the leader's snapshot and
    /// may run first: it must wait until that snapshot is on disk.
    #[tokio::test]
    async fn a_purge_waits_for_the_snapshot_covering_it_to_be_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (on_disk, durable) = tokio::sync::watch::channel(Some(2));
        let store = LogStore::open(dir.path(), durable).unwrap();
        append_now(&store, (1..=8).map(|i| entry(1, i)).collect());
        let mut purging = store.clone();
        let purge = tokio::spawn(async move {
            purging
                .purge(LogId::new(CommittedLeaderId::new(1, 0), 5))
                .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!purge.is_finished(), "purged past the snapshot on disk");
        assert_eq!(store.lock().entries.len(), 8, "nothing removed yet");
        on_disk.send_replace(Some(5));
        purge.await.unwrap().expect("purge once covered");
        let mut reader = store.clone();
        let left = reader.try_get_log_entries(0..).await.unwrap();
        assert_eq!(left.first().map(|e| e.log_id.index), Some(6));
    }
}
