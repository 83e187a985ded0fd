//! Connection limits as Kafka names them: `max.connections` (broker-wide) and
//! `max.connections.per.ip` with `max.connections.per.ip.overrides` (`host:count,…`), enforced
//! here after `config::limits` parsed them.
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

use crate::config::limits::LimitsConfig;

/// Minimum time between two "rejected connection" log lines.
const LOG_EVERY: Duration = Duration::from_secs(10);

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
    use crate::config::limits::LimitsError;

    fn config(pairs: &[(&str, &str)]) -> Result<LimitsConfig, LimitsError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        LimitsConfig::parse(|k| map.get(k).cloned())
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
