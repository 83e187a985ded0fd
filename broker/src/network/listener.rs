//! What every connection of one listener shares: its security settings, the reloading TLS
//! acceptor, authentication counters (`kafka_server_socket_server_metrics_*_authentication_total`)
//! and the failed-authentication delay per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use crate::auth::tls::{ReloadingTls, TlsError};
use crate::config::security::ListenerSecurity;

/// Authentication outcome counters for one listener.
pub struct AuthCounters {
    pub failed: IntCounter,
    pub successful: IntCounter,
}

/// Registers the authentication counters (labelled by listener) in `registry`.
pub fn register_auth_metrics(registry: &Registry) -> Option<(IntCounterVec, IntCounterVec)> {
    let failed = IntCounterVec::new(
        Opts::new(
            "kafka_server_socket_server_metrics_failed_authentication_total",
            "Failed SASL authentications and TLS handshakes, by listener",
        ),
        &["listener"],
    )
    .ok()?;
    let ok = IntCounterVec::new(
        Opts::new(
            "kafka_server_socket_server_metrics_successful_authentication_total",
            "Successful SASL authentications and TLS client-certificate handshakes, by listener",
        ),
        &["listener"],
    )
    .ok()?;
    registry.register(Box::new(failed.clone())).ok()?;
    registry.register(Box::new(ok.clone())).ok()?;
    Some((failed, ok))
}

/// Recent authentication failures per client address, for the doubling delay.
#[derive(Default)]
pub struct FailureTracker {
    recent: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// Failures older than this are forgotten.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// At most this many addresses are tracked (beyond it, new addresses get the base delay).
const MAX_TRACKED: usize = 4096;
/// The delay never exceeds this.
const MAX_DELAY: Duration = Duration::from_secs(5);

impl FailureTracker {
    /// Records a failure from `ip` and returns how long to wait before answering it:
    /// `base`, doubled for every other failure from the same address in the last minute.
    pub fn record(&self, ip: IpAddr, base: Duration) -> Duration {
        let now = Instant::now();
        let mut recent = self.recent.lock();
        if recent.len() >= MAX_TRACKED {
            recent.retain(|_, (_, at)| now.duration_since(*at) < FAILURE_WINDOW);
        }
        let tracked = recent.len();
        let count = match recent.get(&ip) {
            Some((n, at)) if now.duration_since(*at) < FAILURE_WINDOW => n.saturating_add(1),
            Some(_) => 1,
            None if tracked < MAX_TRACKED => 1,
            None => return base,
        };
        recent.insert(ip, (count, now));
        let factor = 1u32 << (count - 1).min(16);
        base.saturating_mul(factor).min(MAX_DELAY.max(base))
    }
}

/// Shared state of one listener.
pub struct ListenerRuntime {
    pub security: ListenerSecurity,
    pub tls: Option<ReloadingTls>,
    pub counters: OnceLock<AuthCounters>,
    pub failures: FailureTracker,
    pub failed_auth_delay: Duration,
}

impl ListenerRuntime {
    /// Loads the TLS files of a TLS listener (errors describe what is wrong with them).
    pub fn new(security: ListenerSecurity, failed_auth_delay: Duration) -> Result<Self, TlsError> {
        let tls = match &security.tls {
            Some(t) => Some(ReloadingTls::new(t.clone())?),
            None => None,
        };
        Ok(ListenerRuntime {
            security,
            tls,
            counters: OnceLock::new(),
            failures: FailureTracker::default(),
            failed_auth_delay,
        })
    }

    pub fn count_failure(&self) {
        if let Some(c) = self.counters.get() {
            c.failed.inc();
        }
    }

    pub fn count_success(&self) {
        if let Some(c) = self.counters.get() {
            c.successful.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_per_address_and_is_capped() {
        let t = FailureTracker::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let base = Duration::from_millis(100);
        assert_eq!(t.record(a, base), base);
        assert_eq!(t.record(a, base), base * 2);
        assert_eq!(t.record(a, base), base * 4);
        assert_eq!(t.record(b, base), base);
        for _ in 0..40 {
            t.record(a, base);
        }
        assert_eq!(t.record(a, base), MAX_DELAY);
        assert_eq!(t.record(a, Duration::ZERO), Duration::ZERO);
    }
}
