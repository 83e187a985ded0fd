//! Progress for long multi-step commands: which step runs, how long it and the whole command
//! have taken, and a reminder every 30 s while a slow step (a cold build) is still going.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Progress {
    total: usize,
    done: usize,
    started: Instant,
    step_started: Instant,
    current: Option<(String, Arc<AtomicBool>)>,
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        Progress {
            total,
            done: 0,
            started: Instant::now(),
            step_started: Instant::now(),
            current: None,
        }
    }

    /// Ends the running step (printing its duration) and starts the next one.
    pub fn step(&mut self, what: &str) {
        self.end_current();
        self.done += 1;
        self.step_started = Instant::now();
        eprintln!(
            "==> [{}/{}] {what}   (total {})",
            self.done,
            self.total,
            clock(self.started.elapsed())
        );
        let running = Arc::new(AtomicBool::new(true));
        let flag = running.clone();
        let name = what.to_string();
        let since = self.step_started;
        std::thread::spawn(move || {
            let mut next = Duration::from_secs(30);
            while flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                if since.elapsed() >= next && flag.load(Ordering::Relaxed) {
                    eprintln!(
                        "    ... still on: {name} ({} so far)",
                        clock(since.elapsed())
                    );
                    next += Duration::from_secs(30);
                }
            }
        });
        self.current = Some((what.to_string(), running));
    }

    fn end_current(&mut self) {
        if let Some((what, running)) = self.current.take() {
            running.store(false, Ordering::Relaxed);
            eprintln!("    done: {what} in {}", clock(self.step_started.elapsed()));
        }
    }

    pub fn finish(&mut self) {
        self.end_current();
        eprintln!("==> finished in {}", clock(self.started.elapsed()));
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some((_, running)) = &self.current {
            running.store(false, Ordering::Relaxed);
        }
    }
}

/// `1m05s` / `42s`.
pub fn clock(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::clock;
    use std::time::Duration;

    #[test]
    fn clock_reads_like_a_stopwatch() {
        assert_eq!(clock(Duration::from_secs(42)), "42s");
        assert_eq!(clock(Duration::from_secs(65)), "1m05s");
        assert_eq!(clock(Duration::from_secs(3600)), "60m00s");
    }
}
