//! Every background task the broker starts, owned in one place so shutdown can stop them all.
//!
//! Accept loops, connections, replica fetchers, controller duties and timers are spawned through
//! [`Tasks`]: a `TaskTracker` knows which are still running and one `CancellationToken` tells
//! them to stop. A task that does not watch the token itself is dropped at its next `.await`
//! once the token fires, so shutdown never waits on a forgotten loop. [`Tasks::shutdown`] fires
//! the token and waits, bounded, for the tracker to drain.

use std::future::Future;
use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

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
