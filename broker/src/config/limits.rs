//! The connection-limit keys as Kafka names them: `max.connections` (broker-wide) and
//! `max.connections.per.ip` with `max.connections.per.ip.overrides` (`host:count,…`), parsed
//! into [`LimitsConfig`]. `network::limits` enforces them.

use std::collections::HashMap;
use std::net::IpAddr;

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

    pub(crate) fn limit_for(&self, ip: IpAddr) -> usize {
        self.per_ip_overrides
            .get(&ip)
            .copied()
            .unwrap_or(self.max_per_ip)
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
}
