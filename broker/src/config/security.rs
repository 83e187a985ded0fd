//! Per-listener security settings from Kafka's keys: `listener.security.protocol.map`, SASL
//! mechanisms (`sasl.enabled.mechanisms`), PLAIN users (`sasl.plain.users`, a Fjord key) and TLS
//! (`ssl.*`), each overridable per listener with `listener.name.<name>.<key>` (the name in lower
//! case, as Kafka writes it; the exact case is accepted too).

use std::collections::BTreeMap;

use crate::auth::plain::PlainUsers;
use crate::auth::sasl::SaslMechanism;
use crate::auth::tls::{self, TlsSettings};
use crate::config::{ConfigError, Listener};

/// Kafka's security protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(s: &str) -> Option<SecurityProtocol> {
        match s {
            "PLAINTEXT" => Some(SecurityProtocol::Plaintext),
            "SSL" => Some(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Some(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// One listener's security.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSecurity {
    pub name: String,
    pub protocol: SecurityProtocol,
    /// Enabled SASL mechanisms, in configuration order (empty unless the protocol uses SASL).
    pub mechanisms: Vec<SaslMechanism>,
    pub plain_users: PlainUsers,
    pub tls: Option<TlsSettings>,
}

impl ListenerSecurity {
    /// A PLAINTEXT listener (tests, tools).
    pub fn plaintext(name: &str) -> ListenerSecurity {
        ListenerSecurity {
            name: name.to_string(),
            protocol: SecurityProtocol::Plaintext,
            mechanisms: Vec::new(),
            plain_users: PlainUsers::default(),
            tls: None,
        }
    }
}

/// Mechanisms enabled when `sasl.enabled.mechanisms` is not given. (Kafka's default is GSSAPI,
/// which Fjord does not implement.)
pub const DEFAULT_MECHANISMS: &str = "SCRAM-SHA-256,SCRAM-SHA-512";

/// Keys that may appear globally and as `listener.name.<name>.<key>`.
const LISTENER_KEYS: &[&str] = &[
    "sasl.enabled.mechanisms",
    "sasl.plain.users",
    "ssl.keystore.type",
    "ssl.keystore.location",
    "ssl.keystore.certificate.chain",
    "ssl.keystore.key",
    "ssl.keystore.password",
    "ssl.key.password",
    "ssl.truststore.type",
    "ssl.truststore.location",
    "ssl.truststore.certificates",
    "ssl.truststore.password",
    "ssl.client.auth",
    "ssl.enabled.protocols",
    "ssl.protocol",
    "ssl.endpoint.identification.algorithm",
    "ssl.principal.mapping.rules",
];

/// Global-only security keys.
const GLOBAL_KEYS: &[&str] = &[
    "connection.failed.authentication.delay.ms",
    "sasl.mechanism.inter.broker.protocol",
    "security.inter.broker.protocol",
    "sasl.jaas.config",
];

/// Whether `key` is a security key this module understands (so the loader does not warn).
pub fn is_known_key(key: &str) -> bool {
    if LISTENER_KEYS.contains(&key) || GLOBAL_KEYS.contains(&key) {
        return true;
    }
    let Some(rest) = key.strip_prefix("listener.name.") else {
        return false;
    };
    let Some((_, suffix)) = rest.split_once('.') else {
        return false;
    };
    // `listener.name.<l>.<mechanism>.sasl.jaas.config` is Kafka's JAAS key: accepted, unused.
    LISTENER_KEYS.contains(&suffix) || suffix.ends_with(".sasl.jaas.config")
}

/// Keys whose values are secrets: kept out of `Config::raw` (and so out of DescribeConfigs).
pub fn is_sensitive_key(key: &str) -> bool {
    let suffix = key
        .strip_prefix("listener.name.")
        .and_then(|r| r.split_once('.').map(|(_, s)| s))
        .unwrap_or(key);
    matches!(
        suffix,
        "sasl.plain.users"
            | "ssl.keystore.key"
            | "ssl.key.password"
            | "ssl.keystore.password"
            | "ssl.truststore.password"
            | "sasl.jaas.config"
    ) || suffix.ends_with(".sasl.jaas.config")
}

/// The value of `key` for `listener`: the listener override first, then the global key.
fn lookup(raw: &BTreeMap<String, String>, listener: &str, key: &str) -> Option<String> {
    let lower = format!("listener.name.{}.{key}", listener.to_ascii_lowercase());
    let exact = format!("listener.name.{listener}.{key}");
    raw.get(&lower)
        .or_else(|| raw.get(&exact))
        .or_else(|| raw.get(key))
        .cloned()
}

/// Key name as the user would write it for `listener` (for error messages).
fn key_for(raw: &BTreeMap<String, String>, listener: &str, key: &str) -> String {
    let lower = format!("listener.name.{}.{key}", listener.to_ascii_lowercase());
    let exact = format!("listener.name.{listener}.{key}");
    if raw.contains_key(&lower) {
        lower
    } else if raw.contains_key(&exact) {
        exact
    } else {
        key.to_string()
    }
}

fn err(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// Resolves every listener's security from the raw configuration.
pub fn parse(
    raw: &BTreeMap<String, String>,
    listeners: &[Listener],
) -> Result<Vec<ListenerSecurity>, ConfigError> {
    const MAP: &str = "listener.security.protocol.map";
    let mut map: BTreeMap<String, SecurityProtocol> = BTreeMap::new();
    if let Some(v) = raw.get(MAP) {
        for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, proto) = item
                .split_once(':')
                .ok_or_else(|| err(MAP, format!("'{item}' is not NAME:PROTOCOL")))?;
            let p = SecurityProtocol::parse(proto.trim()).ok_or_else(|| {
                err(
                    MAP,
                    format!("'{proto}' is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
                )
            })?;
            map.insert(name.trim().to_string(), p);
        }
    }
    let mut out = Vec::new();
    for l in listeners {
        let protocol = match map.get(&l.name) {
            Some(p) => *p,
            None => SecurityProtocol::parse(&l.name).ok_or_else(|| {
                err(
                    MAP,
                    format!("no security protocol defined for listener {}", l.name),
                )
            })?,
        };
        let get = |k: &str| lookup(raw, &l.name, k);
        let mut mechanisms = Vec::new();
        let mut plain_users = PlainUsers::default();
        if protocol.uses_sasl() {
            let key = key_for(raw, &l.name, "sasl.enabled.mechanisms");
            let value = get("sasl.enabled.mechanisms").unwrap_or(DEFAULT_MECHANISMS.into());
            for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let m = SaslMechanism::parse(name).ok_or_else(|| {
                    err(
                        &key,
                        format!(
                            "mechanism '{name}' is not supported (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"
                        ),
                    )
                })?;
                if !mechanisms.contains(&m) {
                    mechanisms.push(m);
                }
            }
            if mechanisms.is_empty() {
                return Err(err(
                    &key,
                    format!("listener {} uses SASL but enables no mechanism", l.name),
                ));
            }
            if mechanisms.contains(&SaslMechanism::Plain) {
                let key = key_for(raw, &l.name, "sasl.plain.users");
                plain_users = PlainUsers::parse(&get("sasl.plain.users").unwrap_or_default())
                    .map_err(|r| err(&key, r.to_string()))?;
                if plain_users.is_empty() {
                    return Err(err(
                        &key,
                        "PLAIN is enabled but no user is configured (user:password,...)",
                    ));
                }
            }
        }
        if let Some(rules) = get("ssl.principal.mapping.rules") {
            if rules.trim() != "DEFAULT" {
                return Err(err(
                    &key_for(raw, &l.name, "ssl.principal.mapping.rules"),
                    "only DEFAULT is supported",
                ));
            }
        }
        let tls = if protocol.uses_tls() {
            let settings = tls::parse_settings(&|k: &str| get(k)).map_err(|(k, r)| {
                err(
                    &key_for(raw, &l.name, &k),
                    format!("listener {}: {r}", l.name),
                )
            })?;
            Some(settings)
        } else {
            None
        };
        out.push(ListenerSecurity {
            name: l.name.clone(),
            protocol,
            mechanisms,
            plain_users,
            tls,
        });
    }
    validate_inter_broker(raw, &out)?;
    Ok(out)
}

/// `inter.broker.listener.name` must name a listener, and its SASL mechanism must be enabled
/// there. (Replication does not exist yet: this is validation only.)
fn validate_inter_broker(
    raw: &BTreeMap<String, String>,
    listeners: &[ListenerSecurity],
) -> Result<(), ConfigError> {
    const KEY: &str = "inter.broker.listener.name";
    let name = raw.get(KEY).map(|s| s.trim()).filter(|s| !s.is_empty());
    if name.is_some() && raw.contains_key("security.inter.broker.protocol") {
        return Err(err(
            KEY,
            "only one of inter.broker.listener.name and security.inter.broker.protocol may be set",
        ));
    }
    let Some(name) = name else {
        return Ok(());
    };
    let l = listeners
        .iter()
        .find(|l| l.name == name)
        .ok_or_else(|| err(KEY, format!("'{name}' is not a listener in listeners")))?;
    if l.protocol.uses_sasl() {
        let mech = raw
            .get("sasl.mechanism.inter.broker.protocol")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "GSSAPI".into());
        let enabled = SaslMechanism::parse(&mech).is_some_and(|m| l.mechanisms.contains(&m));
        if !enabled {
            return Err(err(
                "sasl.mechanism.inter.broker.protocol",
                format!("'{mech}' is not enabled on the inter-broker listener {name}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_listeners;

    fn run(pairs: &[(&str, &str)], listeners: &str) -> Result<Vec<ListenerSecurity>, ConfigError> {
        let raw = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(&raw, &parse_listeners("listeners", listeners).unwrap())
    }

    #[test]
    fn protocol_map_and_mechanisms() {
        let l = run(&[], "PLAINTEXT://:1,SASL_PLAINTEXT://:2").unwrap();
        assert_eq!(l[0].protocol, SecurityProtocol::Plaintext);
        assert_eq!(l[1].mechanisms.len(), 2);
        let e = run(&[], "CLIENT://:1").unwrap_err();
        assert_eq!(e.key, "listener.security.protocol.map");
        let l = run(
            &[
                (
                    "listener.security.protocol.map",
                    "CLIENT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
                ),
                ("sasl.enabled.mechanisms", "SCRAM-SHA-256"),
                (
                    "listener.name.client.sasl.enabled.mechanisms",
                    "PLAIN,SCRAM-SHA-512",
                ),
                ("sasl.plain.users", "a:b"),
            ],
            "CLIENT://:1",
        )
        .unwrap();
        assert_eq!(
            l[0].mechanisms,
            vec![
                SaslMechanism::Plain,
                SaslMechanism::parse("SCRAM-SHA-512").unwrap()
            ]
        );
        let e = run(&[("sasl.enabled.mechanisms", "GSSAPI")], "SASL_SSL://:1").unwrap_err();
        assert_eq!(e.key, "sasl.enabled.mechanisms");
        let e = run(
            &[("sasl.enabled.mechanisms", "PLAIN")],
            "SASL_PLAINTEXT://:1",
        )
        .unwrap_err();
        assert_eq!(e.key, "sasl.plain.users");
        let e = run(&[], "SSL://:1").unwrap_err();
        assert_eq!(e.key, "ssl.keystore.location");
        let e = run(
            &[
                ("listener.name.ssl.ssl.keystore.location", "/k"),
                ("listener.name.ssl.ssl.client.auth", "x"),
            ],
            "SSL://:1",
        )
        .unwrap_err();
        assert_eq!(e.key, "listener.name.ssl.ssl.client.auth");
    }

    #[test]
    fn inter_broker_listener_checks() {
        assert!(run(
            &[("inter.broker.listener.name", "PLAINTEXT")],
            "PLAINTEXT://:1"
        )
        .is_ok());
        let e = run(&[("inter.broker.listener.name", "NOPE")], "PLAINTEXT://:1").unwrap_err();
        assert_eq!(e.key, "inter.broker.listener.name");
        let e = run(
            &[("inter.broker.listener.name", "SASL_PLAINTEXT")],
            "SASL_PLAINTEXT://:1",
        )
        .unwrap_err();
        assert_eq!(e.key, "sasl.mechanism.inter.broker.protocol");
        assert!(run(
            &[
                ("inter.broker.listener.name", "SASL_PLAINTEXT"),
                ("sasl.mechanism.inter.broker.protocol", "SCRAM-SHA-512")
            ],
            "SASL_PLAINTEXT://:1"
        )
        .is_ok());
    }

    #[test]
    fn secrets_stay_out_of_raw_config() {
        let (c, warnings) = crate::config::Config::load(
            None,
            &[
                ("listeners".into(), "SASL_PLAINTEXT://:1".into()),
                ("sasl.enabled.mechanisms".into(), "PLAIN".into()),
                ("sasl.plain.users".into(), "alice:s3cret".into()),
                (
                    "listener.name.sasl_plaintext.plain.sasl.jaas.config".into(),
                    "x".into(),
                ),
            ],
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(!format!("{:?}", c.raw).contains("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(
            c.listener_security[0].mechanisms,
            vec![SaslMechanism::Plain]
        );
        assert_eq!(c.failed_authentication_delay_ms, 100);
    }

    #[test]
    fn known_and_sensitive_keys() {
        assert!(is_known_key("listener.name.client.ssl.keystore.location"));
        assert!(is_known_key(
            "listener.name.client.scram-sha-512.sasl.jaas.config"
        ));
        assert!(is_known_key("sasl.enabled.mechanisms"));
        assert!(!is_known_key("listener.name.client.bogus"));
        assert!(is_sensitive_key("sasl.plain.users"));
        assert!(is_sensitive_key("listener.name.x.sasl.plain.users"));
        assert!(is_sensitive_key("listener.name.x.plain.sasl.jaas.config"));
        assert!(!is_sensitive_key("ssl.keystore.location"));
    }
}
