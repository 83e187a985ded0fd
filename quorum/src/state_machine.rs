//! Applies committed entries to the application's [`Applier`] and snapshots its state.
//!
//! The latest snapshot is kept in `snapshot.json` (`{meta, state}`); on start the applier is
//! restored from it and Raft re-applies only the entries after it.
//!
//! The index of the snapshot on disk is published ([`StateMachine::durable_snapshot`]) for the
//! log store, which must never drop entries that snapshot does not cover yet: openraft purges
//! a follower's log as soon as it *schedules* the install of a leader's snapshot, and a crash
//! before that snapshot is on disk would leave a node whose state stops below its log's start.
//! For the same reason the file only ever moves forward: a snapshot this node finished building
//! after a newer one was installed is not written over it.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::log_store::{read_json, write_json_atomic};
use crate::{Applier, TypeConfig};

type Result<T> = std::result::Result<T, StorageError<u64>>;
type Meta = SnapshotMeta<u64, openraft::BasicNode>;

fn io_err(verb: ErrorVerb, e: impl ToString) -> StorageError<u64> {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        openraft::AnyError::error(e.to_string()),
    )
    .into()
}

/// What `snapshot.json` holds.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: Meta,
    state: serde_json::Value,
}

struct Inner {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, openraft::BasicNode>,
    snapshot: Option<(Meta, Vec<u8>)>,
    snapshots_built: u64,
}

/// The index of the last entry covered by the snapshot on disk (`None`: no snapshot).
pub type DurableSnapshot = tokio::sync::watch::Receiver<Option<u64>>;

/// The state machine; clones share state (the snapshot builder is a clone).
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<Inner>>,
    applier: Arc<dyn Applier>,
    path: PathBuf,
    /// Held while an entry is applied and its index recorded, and while a snapshot reads the
    /// applier's state and that index: Raft builds snapshots on another task while entries keep
    /// being applied, and a snapshot whose state and `last_log_id` disagree would make every
    /// node restored from it skip the entries in between. Never held across an await, and
    /// separate from `inner` so the applier's hooks may read `last_applied`.
    applying: Arc<Mutex<()>>,
    /// Held while `snapshot.json` is compared and written, so the file only moves forward.
    persisting: Arc<Mutex<()>>,
    durable: Arc<tokio::sync::watch::Sender<Option<u64>>>,
}

impl StateMachine {
    /// Opens the state machine in `dir`, restoring `applier` from the last snapshot if any.
    pub fn open(dir: &Path, applier: Arc<dyn Applier>) -> std::io::Result<StateMachine> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("snapshot.json");
        let mut inner = Inner {
            last_applied: None,
            membership: StoredMembership::default(),
            snapshot: None,
            snapshots_built: 0,
        };
        if let Some(file) = read_json::<SnapshotFile>(&path)? {
            applier
                .restore(file.state.clone())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            inner.last_applied = file.meta.last_log_id;
            inner.membership = file.meta.last_membership.clone();
            let bytes = serde_json::to_vec(&file)?;
            inner.snapshot = Some((file.meta, bytes));
        }
        let on_disk = inner.last_applied.map(|l| l.index);
        Ok(StateMachine {
            inner: Arc::new(Mutex::new(inner)),
            applier,
            path,
            applying: Arc::default(),
            persisting: Arc::default(),
            durable: Arc::new(tokio::sync::watch::Sender::new(on_disk)),
        })
    }

    /// Follows the index covered by the snapshot on disk.
    pub fn durable_snapshot(&self) -> DurableSnapshot {
        self.durable.subscribe()
    }

    /// Writes `file` as the snapshot on disk if it covers more than the one there; returns
    /// whether it did. Blocking (the write ends with an fsync).
    fn persist_if_newer(&self, file: &SnapshotFile) -> std::io::Result<bool> {
        let _persisting = self.persisting.lock().unwrap_or_else(|p| p.into_inner());
        let index = file.meta.last_log_id.map(|l| l.index);
        if index <= *self.durable.borrow() {
            return Ok(false);
        }
        write_json_atomic(&self.path, file)?;
        self.durable.send_replace(index);
        Ok(true)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `entries` in order, each under the `applying` lock with its index recorded.
    fn apply_blocking(&self, entries: Vec<Entry<TypeConfig>>) -> Vec<()> {
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let _applying = self.applying.lock().unwrap_or_else(|p| p.into_inner());
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(command) => self.applier.apply(&command.0),
                EntryPayload::Membership(m) => {
                    self.lock().membership = StoredMembership::new(Some(entry.log_id), m.clone());
                }
            }
            self.lock().last_applied = Some(entry.log_id);
            out.push(());
        }
        out
    }

    /// The last applied log id (for tests and readiness).
    pub fn last_applied(&self) -> Option<LogId<u64>> {
        self.lock().last_applied
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let (state, meta) = {
            let _applying = self.applying.lock().unwrap_or_else(|p| p.into_inner());
            // The state and the index it includes, read together.
            let state = self.applier.snapshot();
            let mut inner = self.lock();
            inner.snapshots_built += 1;
            let meta = Meta {
                last_log_id: inner.last_applied,
                last_membership: inner.membership.clone(),
                snapshot_id: format!(
                    "{}-{}",
                    inner.last_applied.map(|l| l.index).unwrap_or(0),
                    inner.snapshots_built
                ),
            };
            (state, meta)
        };
        let file = SnapshotFile {
            meta: meta.clone(),
            state,
        };
        // Written without the `applying` lock (entries keep being applied meanwhile), and on a
        // blocking thread: the write ends with an fsync.
        let machine = self.clone();
        let (bytes, written) =
            tokio::task::spawn_blocking(move || -> std::io::Result<(Vec<u8>, bool)> {
                let written = machine.persist_if_newer(&file)?;
                Ok((serde_json::to_vec(&file)?, written))
            })
            .await
            .map_err(|e| io_err(ErrorVerb::Write, e))?
            .map_err(|e| io_err(ErrorVerb::Write, e))?;
        if written {
            self.lock().snapshot = Some((meta.clone(), bytes.clone()));
        } else {
            tracing::debug!(
                ?meta,
                "a newer snapshot was installed while this one was built"
            );
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(
        Option<LogId<u64>>,
        StoredMembership<u64, openraft::BasicNode>,
    )> {
        let inner = self.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        // The applier's hooks do file I/O (the broker opens and removes partition logs when a
        // batch changes what it hosts, as Kafka's metadata publisher does on its own thread):
        // off the async workers, on a blocking thread, awaited so entries stay in log order
        // and an index is reported applied only after its hooks ran.
        let machine = self.clone();
        tokio::task::spawn_blocking(move || machine.apply_blocking(entries))
            .await
            .map_err(|e| io_err(ErrorVerb::Write, e))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        let bytes = snapshot.into_inner();
        let (machine, meta) = (self.clone(), meta.clone());
        // Restoring runs the applier's hooks and writes the snapshot file: a blocking thread.
        tokio::task::spawn_blocking(move || -> std::result::Result<(), Box<StorageError<u64>>> {
            let file: SnapshotFile =
                serde_json::from_slice(&bytes).map_err(|e| Box::new(io_err(ErrorVerb::Read, e)))?;
            machine
                .applier
                .restore(file.state.clone())
                .map_err(|e| Box::new(io_err(ErrorVerb::Write, e)))?;
            machine
                .persist_if_newer(&file)
                .map_err(|e| Box::new(io_err(ErrorVerb::Write, e)))?;
            let mut inner = machine.lock();
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
            inner.snapshot = Some((meta, bytes));
            Ok(())
        })
        .await
        .map_err(|e| io_err(ErrorVerb::Write, e))?
        .map_err(|e| *e)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        Ok(self.lock().snapshot.clone().map(|(meta, bytes)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RestoreError;
    use openraft::CommittedLeaderId;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// Counts applied commands; taking a snapshot is slow, as a large image's is.
    struct Counter(AtomicU64);

    impl Applier for Counter {
        fn apply(&self, _command: &serde_json::Value) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn snapshot(&self) -> serde_json::Value {
            let count = self.0.load(Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(100));
            serde_json::json!(count)
        }
        fn restore(&self, state: serde_json::Value) -> std::result::Result<(), RestoreError> {
            self.0.store(state.as_u64().unwrap_or(0), Ordering::SeqCst);
            Ok(())
        }
    }

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(crate::Command(serde_json::json!(index))),
        }
    }

    /// A state machine with entries 1..=10 applied and a (slow) snapshot of them being built.
    async fn ten_applied_and_a_snapshot_being_built(
        dir: &Path,
    ) -> (StateMachine, tokio::task::JoinHandle<Snapshot<TypeConfig>>) {
        let mut sm = StateMachine::open(dir, Arc::new(Counter(AtomicU64::new(0)))).unwrap();
        sm.apply((1..=10).map(entry)).await.unwrap();
        let mut builder = sm.get_snapshot_builder().await;
        let building = tokio::spawn(async move { builder.build_snapshot().await.unwrap() });
        (sm, building)
    }

    /// Regression: the snapshot's state was read before its index, so entries applied in
    /// between were counted in `last_log_id` but missing from the state, and every node
    /// restored from it skipped them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_holds_exactly_the_entries_its_index_says() {
        let dir = tempfile::tempdir().unwrap();
        let (sm, building) = ten_applied_and_a_snapshot_being_built(dir.path()).await;
        // Entries applied while the snapshot is being taken.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut applier_side = sm.clone();
        let applying =
            tokio::spawn(async move { applier_side.apply((11..=20).map(entry)).await.unwrap() });
        let snapshot = building.await.unwrap();
        applying.await.unwrap();
        let state: u64 = serde_json::from_slice::<SnapshotFile>(&snapshot.snapshot.into_inner())
            .unwrap()
            .state
            .as_u64()
            .unwrap();
        let index = snapshot.meta.last_log_id.map(|l| l.index).unwrap();
        assert_eq!(
            state, index,
            "state of {state} entries labelled as up to {index}"
        );
        // And a node restored from it continues from the right place.
        let restored =
            StateMachine::open(dir.path(), Arc::new(Counter(AtomicU64::new(0)))).unwrap();
        assert_eq!(
            restored.last_applied().map(|l| l.index),
            Some(state),
            "restored state and index agree"
        );
    }

    /// Records the thread each command is applied on.
    struct ThreadRecorder(Mutex<Vec<std::thread::ThreadId>>);

    impl Applier for ThreadRecorder {
        fn apply(&self, _command: &serde_json::Value) {
            self.0.lock().unwrap().push(std::thread::current().id());
        }
        fn snapshot(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn restore(&self, _state: serde_json::Value) -> std::result::Result<(), RestoreError> {
            Ok(())
        }
    }

    /// The applier's hooks do file I/O (the broker opens partition logs there), so entries
    /// are applied on a blocking thread, not on the runtime's: on a current-thread runtime the
    /// runtime thread is this test's.
    #[tokio::test(flavor = "current_thread")]
    async fn entries_are_applied_off_the_runtime_threads_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Arc::new(ThreadRecorder(Mutex::new(Vec::new())));
        let mut sm = StateMachine::open(dir.path(), recorder.clone()).unwrap();
        sm.apply((1..=5).map(entry)).await.unwrap();
        let threads = recorder.0.lock().unwrap().clone();
        assert_eq!(threads.len(), 5, "every entry applied");
        let runtime_thread = std::thread::current().id();
        assert!(
            threads.iter().all(|t| *t != runtime_thread),
            "an entry was applied on the runtime thread"
        );
        assert_eq!(sm.last_applied().map(|l| l.index), Some(5));
    }

    /// openraft builds snapshots on a task of its own; a follower may install the leader's
    /// (newer) snapshot meanwhile. The older one, finished later, must not replace it on disk:
    /// the log was purged up to the installed one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_finished_after_a_newer_install_does_not_replace_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut sm, building) = ten_applied_and_a_snapshot_being_built(dir.path()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let installed = Meta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(2, 0), 50)),
            last_membership: StoredMembership::default(),
            snapshot_id: "leader-50".into(),
        };
        let bytes = serde_json::to_vec(&SnapshotFile {
            meta: installed.clone(),
            state: serde_json::json!(50),
        })
        .unwrap();
        sm.install_snapshot(&installed, Box::new(Cursor::new(bytes)))
            .await
            .unwrap();
        assert_eq!(*sm.durable_snapshot().borrow(), Some(50));
        building.await.unwrap();
        assert_eq!(*sm.durable_snapshot().borrow(), Some(50), "moved backwards");
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.snapshot_id, "leader-50");
        let restored =
            StateMachine::open(dir.path(), Arc::new(Counter(AtomicU64::new(0)))).unwrap();
        assert_eq!(restored.last_applied().map(|l| l.index), Some(50));
    }
}
