//! Replication throttles for reassignments (Kafka's replication quotas, KIP-73), as
//! `kafka-reassign-partitions --throttle` sets them:
//!
//! - the dynamic broker configs `leader.replication.throttled.rate` and
//!   `follower.replication.throttled.rate` (bytes/s, per broker or as the cluster default);
//! - the topic configs `leader.replication.throttled.replicas` and
//!   `follower.replication.throttled.replicas`: `*` or `partition:broker,...`.
//!
//! A follower fetching a partition listed for it in `follower.replication.throttled.replicas`,
//! while it is not in the ISR, draws on this broker's follower token bucket (one per broker,
//! shared by every throttled partition, as Kafka's quota is); an empty bucket delays the next
//! fetch (the bucket is the replica fetchers', `super::fetcher`). In-sync replicas are never
//! throttled, so a throttle cannot shrink the ISR. The leader side (`leader.*`) is validated
//! and stored but not applied yet: only followers throttle.

use std::collections::BTreeMap;

use crate::metadata::MetadataImage;
use crate::topic_config::{parse_replicas, ConfigValueError};

pub const LEADER_RATE: &str = "leader.replication.throttled.rate";
pub const FOLLOWER_RATE: &str = "follower.replication.throttled.rate";
pub const LEADER_REPLICAS: &str = "leader.replication.throttled.replicas";
pub const FOLLOWER_REPLICAS: &str = "follower.replication.throttled.replicas";

/// A token bucket refilled at `rate` bytes/s holding at most one second of tokens. It may go
/// into debt (a fetch returns what it returns); the debt is paid by waiting.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    last_ms: Option<i64>,
}

impl Default for TokenBucket {
    fn default() -> Self {
        Self::new()
    }
}

impl TokenBucket {
    pub fn new() -> Self {
        TokenBucket {
            tokens: 0.0,
            last_ms: None,
        }
    }

    fn refill(&mut self, rate: u64, now_ms: i64) {
        let rate = rate as f64;
        match self.last_ms {
            // A new bucket starts full.
            None => self.tokens = rate,
            Some(last) => {
                let elapsed = (now_ms - last).max(0) as f64 / 1000.0;
                self.tokens = (self.tokens + elapsed * rate).min(rate);
            }
        }
        self.last_ms = Some(now_ms);
    }

    /// How long to wait before fetching again (0 while tokens remain).
    pub fn wait_ms(&mut self, rate: u64, now_ms: i64) -> u64 {
        self.refill(rate, now_ms);
        if self.tokens > 0.0 {
            return 0;
        }
        if rate == 0 {
            // A zero rate stops throttled replication; look again in a second.
            return 1000;
        }
        ((-self.tokens) * 1000.0 / rate as f64).ceil() as u64 + 1
    }

    /// Takes `bytes` fetched at `now_ms`.
    pub fn consume(&mut self, rate: u64, bytes: usize, now_ms: i64) {
        self.refill(rate, now_ms);
        self.tokens -= bytes as f64;
    }
}

/// Checks a dynamic broker rate value (a long >= 0, as in Kafka).
pub fn validate_rate(key: &str, value: &str) -> Result<(), ConfigValueError> {
    match value.trim().parse::<i64>() {
        Ok(v) if v >= 0 => Ok(()),
        Ok(_) => Err(ConfigValueError::BelowMin {
            key: key.into(),
            value: value.into(),
            min: 0,
        }),
        Err(_) => Err(ConfigValueError::invalid(key, value)),
    }
}

/// The rate `key` in effect on broker `node` (its own value, else the cluster default), if any.
pub fn rate(image: &MetadataImage, node: i32, key: &str) -> Option<u64> {
    [Some(node), None]
        .iter()
        .find_map(|n| image.broker_configs.get(n).and_then(|m| m.get(key)))
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Is `broker`'s replica of `partition` listed in the topic config `key`?
pub fn listed(configs: &BTreeMap<String, String>, key: &str, partition: i32, broker: i32) -> bool {
    configs
        .get(key)
        .and_then(|v| parse_replicas(v).ok())
        .is_some_and(|r| r.contains(partition, broker))
}

/// The follower rate to apply when this broker (`me`) fetches `topic`/`partition` now: set
/// when the replica is listed as throttled, not in the ISR, and a rate is configured.
pub fn follower_rate(image: &MetadataImage, me: i32, topic: &str, partition: i32) -> Option<u64> {
    let t = image.topics.get(topic)?;
    let p = t.partitions.get(usize::try_from(partition).ok()?)?;
    if p.isr.contains(&me) || !listed(&t.configs, FOLLOWER_REPLICAS, partition, me) {
        return None;
    }
    rate(image, me, FOLLOWER_RATE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_second_of_bytes_then_makes_fetches_wait() {
        let mut b = TokenBucket::new();
        let rate = 1000;
        assert_eq!(b.wait_ms(rate, 0), 0, "a new bucket starts full");
        b.consume(rate, 1500, 0);
        // 500 bytes in debt at 1000 B/s: half a second.
        let w = b.wait_ms(rate, 0);
        assert!((500..=502).contains(&w), "{w}");
        assert!(b.wait_ms(rate, 250) > 0);
        assert_eq!(b.wait_ms(rate, 501), 0);
        // Idle time never stores more than one second of tokens.
        b.consume(rate, 0, 60_000);
        b.consume(rate, 1000, 60_000);
        assert!(b.wait_ms(rate, 60_000) > 0);
    }

    #[test]
    fn bucket_rate_limits_a_stream_of_fetches() {
        // 100 fetches of 10 kB at 50 kB/s take about 19 s (the first second is the burst).
        let (mut b, rate) = (TokenBucket::new(), 50_000);
        let mut now = 0i64;
        for _ in 0..100 {
            now += b.wait_ms(rate, now) as i64;
            b.consume(rate, 10_000, now);
        }
        assert!((18_000..=20_500).contains(&now), "{now}");
    }

    #[test]
    fn throttled_rates() {
        assert!(validate_rate(LEADER_RATE, "1024").is_ok());
        assert_eq!(
            validate_rate(LEADER_RATE, "-1").unwrap_err().to_string(),
            format!("Invalid value -1 for configuration {LEADER_RATE}: Value must be at least 0")
        );
        assert!(validate_rate(LEADER_RATE, "fast").is_err());
    }

    #[test]
    fn follower_rate_applies_to_listed_out_of_sync_replicas_only() {
        let mut img = MetadataImage::default();
        img.apply(&crate::metadata::MetadataRecord::CreateTopic {
            name: "t".into(),
            id: uuid::Uuid::new_v4(),
            replicas: vec![vec![0, 1]],
            configs: BTreeMap::from([(FOLLOWER_REPLICAS.to_string(), "0:2".to_string())]),
        });
        img.apply(&crate::metadata::MetadataRecord::AlterBrokerConfig {
            node: Some(2),
            changes: BTreeMap::from([(FOLLOWER_RATE.to_string(), Some("4096".to_string()))]),
        });
        assert_eq!(follower_rate(&img, 2, "t", 0), Some(4096));
        assert_eq!(follower_rate(&img, 1, "t", 0), None, "1 is in the ISR");
        assert_eq!(rate(&img, 1, FOLLOWER_RATE), None, "set for broker 2 only");
        img.apply(&crate::metadata::MetadataRecord::AlterBrokerConfig {
            node: None,
            changes: BTreeMap::from([(FOLLOWER_RATE.to_string(), Some("10".to_string()))]),
        });
        assert_eq!(
            rate(&img, 1, FOLLOWER_RATE),
            Some(10),
            "the cluster default"
        );
        assert_eq!(
            rate(&img, 2, FOLLOWER_RATE),
            Some(4096),
            "the broker's own wins"
        );
    }
}
