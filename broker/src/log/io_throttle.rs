//! A byte-rate limit for background disk work (Kafka's `Throttler`), so compaction
//! (`log.cleaner.io.max.bytes.per.second`) cannot take the disk from produce and fetch. The
//! caller reports bytes as it reads and writes them, on a blocking thread; when the rate since
//! the start runs ahead of the limit, it sleeps until the average is back at the limit.

use std::time::{Duration, Instant};

/// How much has to be done before the rate is checked (tiny sleeps cost more than they save).
const CHECK_EVERY_BYTES: u64 = 256 * 1024;

#[derive(Debug)]
pub struct IoThrottle {
    /// Bytes per second; infinite (or not positive) means no limit.
    limit: f64,
    started: Instant,
    bytes: u64,
    unchecked: u64,
    /// Total time spent sleeping, for the pass's log line.
    pub slept: Duration,
}

/// How long to sleep so that `bytes` done `elapsed` after the start average `limit` bytes/s.
pub fn delay(bytes: u64, elapsed: Duration, limit: f64) -> Duration {
    if !limit.is_finite() || limit <= 0.0 {
        return Duration::ZERO;
    }
    let due = Duration::from_secs_f64(bytes as f64 / limit);
    due.saturating_sub(elapsed)
}

impl IoThrottle {
    pub fn new(limit: f64) -> IoThrottle {
        IoThrottle {
            limit,
            started: Instant::now(),
            bytes: 0,
            unchecked: 0,
            slept: Duration::ZERO,
        }
    }

    /// No limit.
    pub fn unlimited() -> IoThrottle {
        IoThrottle::new(f64::INFINITY)
    }

    /// Reports `n` bytes read or written; sleeps when ahead of the limit.
    pub fn consume(&mut self, n: u64) {
        self.bytes += n;
        self.unchecked += n;
        if self.unchecked < CHECK_EVERY_BYTES {
            return;
        }
        self.unchecked = 0;
        let wait = delay(self.bytes, self.started.elapsed(), self.limit);
        if !wait.is_zero() {
            std::thread::sleep(wait);
            self.slept += wait;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_brings_the_average_back_to_the_limit() {
        // 10 MB in 1 s at 5 MB/s: 1 s more.
        assert_eq!(
            delay(10_000_000, Duration::from_secs(1), 5_000_000.0),
            Duration::from_secs(1)
        );
        // Behind the limit: no sleep.
        assert_eq!(
            delay(1_000_000, Duration::from_secs(1), 5_000_000.0),
            Duration::ZERO
        );
        // No limit.
        assert_eq!(
            delay(u64::MAX, Duration::ZERO, f64::INFINITY),
            Duration::ZERO
        );
        assert_eq!(delay(10, Duration::ZERO, 0.0), Duration::ZERO);
    }

    #[test]
    fn small_amounts_are_not_checked() {
        let mut t = IoThrottle::new(1.0);
        t.consume(CHECK_EVERY_BYTES - 1);
        assert_eq!(
            t.slept,
            Duration::ZERO,
            "below the check interval nothing sleeps"
        );
    }
}
