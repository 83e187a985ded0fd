//! Connection limits as Kafka names them: `max.connections` (broker-wide) and
//! `max.connections.per.ip` with `max.connections.per.ip.overrides` (`host:count,…`).
//!
//! They exist so one misbehaving client (a connection leak, a retry storm) cannot exhaust the
//! broker's file descriptors and starve everyone else. As in Kafka, a connection over its
//! address's limit is closed right after accept, and when the broker-wide limit is reached the
//! accept loops of client listeners wait for a slot (the kernel's backlog holds new connections)
//! while the inter-broker listener keeps accepting, so replication never starves.
//! Rejections are logged at most once per [`LOG_EVERY`] with a count, not once per connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Minimum time between two "rejected connection" log lines.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The configuration keys this module owns.
pub const KEYS: &[&str] = &[
    "max.connections",
    "max.connections.per.ip",
    "max.connections.per.ip.overrides",
];

/// Parsed limits (`usize::MAX` = unlimited, Kafka's default of `Int.MaxValue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    pub max_connections: usize,
    pub max_per_ip: usize,
    pub per_ip_overrides: HashMap<IpAddr, usize>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: usize::MAX,
            max_per_ip: usize::MAX,
            per_ip_overrides: HashMap::new(),
        }
    }
}

/// A limit key with a value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct LimitsError {
    pub key: &'static str,
    pub reason: String,
}

impl LimitsConfig {
    /// Reads the keys from `get` (absent keys keep Kafka's defaults).
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<LimitsConfig, LimitsError> {
        let count = |key: &'static str, v: &str| -> Result<usize, LimitsError> {
            let n: i64 = v.trim().parse().map_err(|_| LimitsError {
                key,
                reason: format!("'{v}' is not a number"),
            })?;
            usize::try_from(n).map_err(|_| LimitsError {
                key,
                reason: format!("{n} is negative"),
            })
        };
        let mut out = LimitsConfig::default();
        if let Some(v) = get("max.connections") {
            out.max_connections = count("max.connections", &v)?;
        }
        if let Some(v) = get("max.connections.per.ip") {
            out.max_per_ip = count("max.connections.per.ip", &v)?;
        }
        let key = "max.connections.per.ip.overrides";
        for entry in get(key).unwrap_or_default().split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            // IPv6 addresses contain ':', so the count is after the last one.
            let Some((host, n)) = entry.rsplit_once(':') else {
                return Err(LimitsError {
                    key,
                    reason: format!("'{entry}' is not host:count"),
                });
            };
            let host = host.trim().trim_start_matches('[').trim_end_matches(']');
            let ip: IpAddr = host.parse().map_err(|_| LimitsError {
                key,
                reason: format!("'{host}' is not an IP address"),
            })?;
            out.per_ip_overrides.insert(ip, count(key, n)?);
        }
        if out.max_per_ip == 0 && out.per_ip_overrides.is_empty() {
            return Err(LimitsError {
                key: "max.connections.per.ip",
                reason: "0 is only allowed with max.connections.per.ip.overrides".into(),
            });
        }
        Ok(out)
    }

    fn limit_for(&self, ip: IpAddr) -> usize {
        self.per_ip_overrides
            .get(&ip)
            .copied()
            .unwrap_or(self.max_per_ip)
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ip} already has the configured maximum of {limit} connections")]
pub struct TooManyFromAddress {
    pub ip: IpAddr,
    pub limit: usize,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    rejected_since_log: u64,
    last_log: Option<Instant>,
}

/// Live connection counts, shared by every listener.
pub struct ConnectionLimits {
    config: LimitsConfig,
    counts: Mutex<Counts>,
    slot_freed: Notify,
}

/// One admitted connection; dropping it releases its slot.
pub struct Admitted {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut c = self.limits.counts.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
        drop(c);
        self.limits.slot_freed.notify_waiters();
    }
}

impl ConnectionLimits {
    pub fn new(config: LimitsConfig) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            config,
            counts: Mutex::default(),
            slot_freed: Notify::new(),
        })
    }

    /// Waits until the broker-wide limit leaves room for one more client connection.
    pub async fn wait_for_slot(&self) {
        loop {
            let freed = self.slot_freed.notified();
            if self.counts.lock().total < self.config.max_connections {
                return;
            }
            freed.await;
        }
    }

    /// Counts a connection from `ip`, or refuses it when `ip` is at its limit. Inter-broker
    /// connections are counted but never refused.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        inter_broker: bool,
    ) -> Result<Admitted, TooManyFromAddress> {
        let limit = self.config.limit_for(ip);
        let mut c = self.counts.lock();
        let from_ip = c.per_ip.get(&ip).copied().unwrap_or(0);
        if !inter_broker && from_ip >= limit {
            c.rejected_since_log += 1;
            let now = Instant::now();
            if c.last_log
                .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
            {
                tracing::warn!(
                    %ip,
                    limit,
                    rejected = c.rejected_since_log,
                    "rejected connection: the address already has the configured maximum of connections (max.connections.per.ip); count is of rejections since the last such line"
                );
                c.rejected_since_log = 0;
                c.last_log = Some(now);
            }
            return Err(TooManyFromAddress { ip, limit });
        }
        c.total += 1;
        *c.per_ip.entry(ip).or_default() += 1;
        Ok(Admitted {
            limits: self.clone(),
            ip,
        })
    }

    /// Connections currently open.
    pub fn open(&self) -> usize {
        self.counts.lock().total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<LimitsConfig, LimitsError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        LimitsConfig::parse(|k| map.get(k).cloned())
    }

    #[test]
    fn parses_kafka_keys_and_overrides() {
        let c = config(&[
            ("max.connections", "100"),
            ("max.connections.per.ip", "5"),
            ("max.connections.per.ip.overrides", "10.0.0.1:50, [::1]:7 ,"),
        ])
        .unwrap();
        assert_eq!(c.max_connections, 100);
        assert_eq!(c.limit_for("10.0.0.1".parse().unwrap()), 50);
        assert_eq!(c.limit_for("::1".parse().unwrap()), 7);
        assert_eq!(c.limit_for("10.0.0.2".parse().unwrap()), 5);
        assert_eq!(config(&[]).unwrap(), LimitsConfig::default());
    }

    #[test]
    fn rejects_unusable_values_naming_the_key() {
        let e = config(&[("max.connections", "-1")]).unwrap_err();
        assert_eq!(e.key, "max.connections");
        let e = config(&[("max.connections.per.ip.overrides", "localhost:3")]).unwrap_err();
        assert!(e.reason.contains("not an IP"), "{e}");
        assert!(config(&[("max.connections.per.ip", "0")]).is_err());
    }

    #[test]
    fn per_address_limit_refuses_clients_but_not_brokers_and_frees_on_drop() {
        let limits = ConnectionLimits::new(config(&[("max.connections.per.ip", "2")]).unwrap());
        let ip: IpAddr = "10.1.1.1".parse().unwrap();
        let a = limits.admit(ip, false).unwrap();
        let _b = limits.admit(ip, false).unwrap();
        assert_eq!(
            limits.admit(ip, false).err(),
            Some(TooManyFromAddress { ip, limit: 2 })
        );
        let _broker = limits
            .admit(ip, true)
            .expect("inter-broker is never refused");
        assert!(limits.admit("10.1.1.2".parse().unwrap(), false).is_ok());
        assert_eq!(limits.open(), 3);
        drop(a);
        assert_eq!(limits.open(), 2);
    }

    #[tokio::test]
    async fn the_broker_wide_limit_waits_for_a_slot() {
        let limits = ConnectionLimits::new(config(&[("max.connections", "1")]).unwrap());
        let first = limits.admit("10.1.1.1".parse().unwrap(), false).unwrap();
        let waiter = {
            let limits = limits.clone();
            tokio::spawn(async move { limits.wait_for_slot().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "no slot while the first is open");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken when the slot frees")
            .unwrap();
    }
}
