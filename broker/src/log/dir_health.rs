//! Can the log directory be written? A failed append or roll there (a full disk, EIO) marks
//! it failed: producers get KAFKA_STORAGE_ERROR for that append and `/v1/ready` answers 503
//! with the directory and the error until a write there succeeds again.
//!
//! The state is left when a write at least as large as the largest failed one succeeds: an
//! append, or a probe that the readiness check runs (at most once a second) while the directory
//! is failed (a broker that is not ready may get no traffic at all, so waiting for an append
//! could keep it unready after the disk was cleaned up). A smaller write that still fits on a
//! nearly full disk does not count, so the state does not flap with each batch size.
//!
//! Only state changes are logged (one error line when writes start failing, one line when they
//! work again): a producer retrying against a full disk must not flood the log.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The probe file, removed right after it was written.
const PROBE_FILE: &str = ".fjord-write-probe";
/// Slack over the failed write's size: page rounding and file system metadata.
const PROBE_SLACK: u64 = 64 * 1024;
/// A huge failed write does not make every probe write that much.
const PROBE_MAX: u64 = 16 * 1024 * 1024;
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Why the log directory does not count as writable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("log dir {} cannot be written ({failed_writes} failed writes): {error}", .dir.display())]
pub struct LogDirFailed {
    pub dir: PathBuf,
    pub failed_writes: u64,
    #[source]
    pub error: Arc<io::Error>,
}

struct Failure {
    error: Arc<io::Error>,
    since: Instant,
    failed_writes: u64,
    /// Size of the largest write that failed.
    failed_bytes: u64,
    last_probe: Option<Instant>,
}

pub struct LogDirHealth {
    dir: PathBuf,
    /// Mirrors `failure.is_some()`, so a successful append does not take the lock.
    failed: AtomicBool,
    failure: Mutex<Option<Failure>>,
}

impl LogDirHealth {
    pub fn new(dir: &Path) -> LogDirHealth {
        LogDirHealth {
            dir: std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A write of `bytes` into the directory failed with `error`.
    pub fn record_failure(&self, error: io::Error, bytes: usize) {
        let mut failure = self.failure.lock();
        match failure.as_mut() {
            Some(f) => {
                f.failed_writes += 1;
                f.failed_bytes = f.failed_bytes.max(bytes as u64);
                tracing::debug!(log_dir = %self.dir.display(), %error, "log dir write failed again");
                f.error = Arc::new(error);
            }
            None => {
                tracing::error!(
                    log_dir = %self.dir.display(),
                    %error,
                    bytes,
                    "log dir write failed: produce answers KAFKA_STORAGE_ERROR and /v1/ready \
                     answers 503 until a write there succeeds again"
                );
                *failure = Some(Failure {
                    error: Arc::new(error),
                    since: Instant::now(),
                    failed_writes: 1,
                    failed_bytes: bytes as u64,
                    last_probe: None,
                });
                self.failed.store(true, Ordering::Release);
            }
        }
    }

    /// A write of `bytes` into the directory succeeded.
    pub fn record_success(&self, bytes: usize) {
        if !self.failed.load(Ordering::Acquire) {
            return;
        }
        let mut failure = self.failure.lock();
        if failure
            .as_ref()
            .is_some_and(|f| (bytes as u64) < f.failed_bytes)
        {
            return;
        }
        if let Some(f) = failure.take() {
            self.failed.store(false, Ordering::Release);
            tracing::warn!(
                log_dir = %self.dir.display(),
                failed_writes = f.failed_writes,
                failed_for_ms = f.since.elapsed().as_millis() as u64,
                "log dir is writable again"
            );
        }
    }

    /// Ok while writes work. While they fail, probes the directory (blocking file I/O, at most
    /// once per [`PROBE_INTERVAL`]) and reports the failure unless the probe succeeded.
    pub fn check(&self) -> Result<(), LogDirFailed> {
        if !self.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        let probe_bytes = {
            let mut failure = self.failure.lock();
            let Some(f) = failure.as_mut() else {
                return Ok(());
            };
            if f.last_probe.is_some_and(|t| t.elapsed() < PROBE_INTERVAL) {
                return Err(self.failed_state(f));
            }
            f.last_probe = Some(Instant::now());
            (f.failed_bytes + PROBE_SLACK).min(PROBE_MAX)
        };
        // Without the lock: appends may record outcomes meanwhile.
        match self.probe(probe_bytes) {
            Ok(()) => {
                self.record_success(usize::MAX);
                Ok(())
            }
            Err(e) => {
                tracing::debug!(log_dir = %self.dir.display(), error = %e, "write probe failed");
                match self.failure.lock().as_ref() {
                    Some(f) => Err(self.failed_state(f)),
                    None => Ok(()),
                }
            }
        }
    }

    fn failed_state(&self, f: &Failure) -> LogDirFailed {
        LogDirFailed {
            dir: self.dir.clone(),
            failed_writes: f.failed_writes,
            error: f.error.clone(),
        }
    }

    /// Writes and syncs `bytes` bytes into a scratch file, then removes it either way.
    fn probe(&self, bytes: u64) -> io::Result<()> {
        let path = self.dir.join(PROBE_FILE);
        let written = std::fs::File::create(&path).and_then(|mut file| {
            let chunk = vec![0u8; 64 * 1024];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                file.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            file.sync_data()
        });
        let removed = std::fs::remove_file(&path);
        written?;
        removed
    }
}

/// (total, usable) bytes of the file system holding `dir`, as Java's `FileStore` reports them.
pub fn disk_space(dir: &Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` is a valid, writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &raw mut st) } != 0 {
        return None;
    }
    // The field types are platform aliases (u64 on 64-bit Linux, u32 on some 32-bit targets).
    let block = st.f_frsize as u64;
    let bytes = |blocks: u64| i64::try_from(blocks.saturating_mul(block)).unwrap_or(i64::MAX);
    Some((bytes(st.f_blocks as u64), bytes(st.f_bavail as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_reported_until_a_write_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let health = LogDirHealth::new(dir.path());
        assert!(health.check().is_ok());
        health.record_failure(io::Error::from_raw_os_error(libc::ENOSPC), 1000);
        health.record_failure(io::Error::from_raw_os_error(libc::ENOSPC), 1000);
        // Nothing was probed yet, so this check probes; the dir is writable, which clears it.
        let first = health.check();
        assert!(
            first.is_ok(),
            "a writable dir recovers on the probe: {first:?}"
        );
        assert!(
            !dir.path().join(PROBE_FILE).exists(),
            "the probe file is removed"
        );

        health.record_failure(io::Error::from_raw_os_error(libc::ENOSPC), 1000);
        health.record_success(999);
        assert!(
            health.failed.load(Ordering::Acquire),
            "a smaller write proves nothing"
        );
        health.record_success(1000);
        assert!(health.check().is_ok());
    }

    #[test]
    fn a_failed_probe_keeps_the_failure_with_dir_and_error() {
        let dir = tempfile::tempdir().unwrap();
        // The probe cannot create its file under a path that is a regular file.
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, b"x").unwrap();
        let health = LogDirHealth::new(&not_a_dir);
        health.record_failure(io::Error::from_raw_os_error(libc::ENOSPC), 1000);
        health.record_failure(io::Error::from_raw_os_error(libc::EIO), 10);
        let err = health.check().unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&not_a_dir.display().to_string()), "{text}");
        assert!(text.contains("2 failed writes"), "{text}");
        assert_eq!(
            err.error.raw_os_error(),
            Some(libc::EIO),
            "the latest error"
        );
        // Within the probe interval the answer comes without probing, and stays failed.
        assert!(health.check().is_err());
        health.record_success(1000);
        assert!(health.check().is_ok());
    }
}
