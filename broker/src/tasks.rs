//! Every background task the broker starts, owned in one place so shutdown can stop them all.
//!
//! Accept loops, connections, replica fetchers, controller duties and timers are spawned through
//! [`Tasks`]: a `TaskTracker` knows which are still running and one `CancellationToken` tells
//! them to stop. A task that does not watch the token itself is dropped at its next `.await`
//! once the token fires, so shutdown never waits on a forgotten loop. [`Tasks::shutdown`] fires
//! the token and waits, bounded, for the tracker to drain.
//!
//! Disk work is not a task: it runs on the [`DiskPool`]'s few threads, off the async workers.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The broker's task owner (see the module doc).
#[derive(Clone)]
pub struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
    runtime: Handle,
}

/// Shutdown waited its whole bound and tasks were still running.
#[derive(Debug, thiserror::Error)]
#[error("{running} task(s) still running after {waited:?}")]
pub struct StillRunning {
    pub running: usize,
    pub waited: Duration,
}

impl Tasks {
    /// Tasks spawned on `runtime` (callable from blocking code that has no runtime context).
    pub fn new(runtime: Handle) -> Tasks {
        Tasks {
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
            runtime,
        }
    }

    /// Spawns `task`; it is dropped at its next `.await` once shutdown starts.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tracker.spawn_on(
            async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = task => {}
                }
            },
            &self.runtime,
        );
    }

    /// Spawns a task that watches [`Tasks::cancelled`] itself to finish its current work
    /// (a connection answering the request it is handling); [`Tasks::shutdown`] still bounds
    /// the wait.
    pub fn spawn_graceful<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn_on(task, &self.runtime);
    }

    /// Runs blocking `work` on the blocking pool, tracked (not cancellable: it runs to its end).
    pub async fn run_blocking<T, F>(&self, work: F) -> Option<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.tracker
            .spawn_blocking_on(work, &self.runtime)
            .await
            .ok()
    }

    /// The token that fires when shutdown starts.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancel
    }

    pub fn is_stopping(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Tasks still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Tells every task to stop and waits up to `bound` for all of them to end.
    pub async fn shutdown(&self, bound: Duration) -> Result<(), StillRunning> {
        self.cancel.cancel();
        self.tracker.close();
        match tokio::time::timeout(bound, self.tracker.wait()).await {
            Ok(()) => Ok(()),
            Err(_) => Err(StillRunning {
                running: self.tracker.len(),
                waited: bound,
            }),
        }
    }
}

/// Where disk work runs: log appends, batch-header and record reads, truncations.
///
/// Why: an async worker thread serves many connections; a `pwrite` or `pread` that misses the
/// page cache, or a write held back by the kernel's dirty-page throttling, would stall all of
/// them. On these threads only the requests that wait for their own data wait.
/// Why not `spawn_blocking`: each call there wakes a parked pool thread, and measured with the
/// Java producer (16 KiB batches) that cost ~1 CPU-second per GB produced (about +70%); a few
/// long-lived threads fed by one queue stay busy under load and take the next job without a
/// wake-up (+~30%, docs/benchmark-history.md). Dropping the pool ends its threads once the
/// queued jobs are done.
pub struct DiskPool {
    jobs: mpsc::Sender<Job>,
    load: Arc<PoolLoad>,
}

/// How busy the disk threads are, for metrics: threads, jobs waiting, and the time spent
/// running jobs (all threads together).
#[derive(Default)]
struct PoolLoad {
    threads: AtomicUsize,
    queued: AtomicUsize,
    busy_nanos: AtomicU64,
}

/// A reading of the disk pool's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskPoolLoad {
    pub threads: usize,
    /// Jobs sent and not started yet.
    pub queued: usize,
    /// Time spent running jobs since the pool started, over all its threads.
    pub busy: Duration,
}

type Job = Box<dyn FnOnce() + Send>;

/// The disk pool refused or lost a job (its threads are gone: the broker is stopping).
#[derive(Debug, thiserror::Error)]
#[error("disk work not run: the disk threads stopped")]
pub struct DiskPoolStopped;

impl From<DiskPoolStopped> for std::io::Error {
    fn from(e: DiskPoolStopped) -> Self {
        std::io::Error::other(e)
    }
}

impl DiskPool {
    /// A pool of `threads` (at least one) named `fjord-disk-<n>`.
    pub fn new(threads: usize) -> std::io::Result<DiskPool> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let load = Arc::new(PoolLoad::default());
        load.threads.store(threads.max(1), Ordering::Relaxed);
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            let load = load.clone();
            std::thread::Builder::new()
                .name(format!("fjord-disk-{n}"))
                .spawn(move || loop {
                    // The lock is held only while taking a job, never while running one.
                    let next = queue.lock().recv();
                    match next {
                        Ok(job) => {
                            load.queued.fetch_sub(1, Ordering::Relaxed);
                            let started = std::time::Instant::now();
                            job();
                            let took =
                                u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                            load.busy_nanos.fetch_add(took, Ordering::Relaxed);
                        }
                        Err(mpsc::RecvError) => return,
                    }
                })?;
        }
        Ok(DiskPool { jobs, load })
    }

    /// Threads, waiting jobs and busy time so far.
    pub fn load(&self) -> DiskPoolLoad {
        DiskPoolLoad {
            threads: self.load.threads.load(Ordering::Relaxed),
            queued: self.load.queued.load(Ordering::Relaxed),
            busy: Duration::from_nanos(self.load.busy_nanos.load(Ordering::Relaxed)),
        }
    }

    /// Runs `work` on a disk thread and waits for it. A panic in `work` resumes in the caller,
    /// as it would have inline.
    pub async fn run<T, F>(&self, work: F) -> Result<T, DiskPoolStopped>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            // The caller may have gone (its request was cancelled); the work is done anyway.
            let _ = done.send(outcome);
        });
        self.load.queued.fetch_add(1, Ordering::Relaxed);
        if self.jobs.send(job).is_err() {
            self.load.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(DiskPoolStopped);
        }
        match result.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => Err(DiskPoolStopped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn disk_work_runs_on_a_disk_thread_and_drops_what_it_captured() {
        let pool = DiskPool::new(2).unwrap();
        let name = pool
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert!(name.is_some_and(|n| n.starts_with("fjord-disk-")));
        let alive = Arc::new(());
        let held = alive.clone();
        pool.run(move || drop(held)).await.unwrap();
        assert_eq!(
            Arc::strong_count(&alive),
            1,
            "the job and what it captured are gone"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panic_in_disk_work_reaches_the_caller_and_the_pool_keeps_working() {
        let pool = DiskPool::new(1).unwrap();
        let caught = tokio::spawn({
            let pool = Arc::new(pool);
            let again = pool.clone();
            async move {
                let panicked =
                    std::panic::AssertUnwindSafe(pool.run(|| panic!("disk work failed")));
                let outcome = futures::FutureExt::catch_unwind(panicked).await;
                (outcome.is_err(), again.run(|| 7).await.unwrap())
            }
        })
        .await
        .unwrap();
        assert_eq!(caught, (true, 7));
    }

    #[tokio::test]
    async fn shutdown_ends_a_loop_that_never_looks_at_the_token() {
        let tasks = Tasks::new(Handle::current());
        tasks.spawn(async {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        assert_eq!(tasks.running(), 1);
        tasks.shutdown(Duration::from_secs(5)).await.unwrap();
        assert_eq!(tasks.running(), 0);
    }

    #[tokio::test]
    async fn a_graceful_task_finishes_its_work_and_a_stuck_one_is_reported() {
        let tasks = Tasks::new(Handle::current());
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let cancel = tasks.cancelled().clone();
        tasks.spawn_graceful(async move {
            cancel.cancelled().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = done_tx.send(());
        });
        tasks.shutdown(Duration::from_secs(5)).await.unwrap();
        assert!(done_rx.await.is_ok(), "the graceful task ran to its end");

        let stuck = Tasks::new(Handle::current());
        stuck.spawn_graceful(std::future::pending());
        let err = stuck.shutdown(Duration::from_millis(50)).await.unwrap_err();
        assert_eq!(err.running, 1);
    }
}
