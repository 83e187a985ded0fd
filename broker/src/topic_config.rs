//! Topic-level configuration keys: which exist, how they are validated (throttled-replica lists
//! included), and how a topic's effective value is resolved (topic override, else the
//! broker-level default); topic name rules and [`TopicError`], the failure handed to clients.

use std::collections::BTreeMap;

use crate::protocol::errors::ErrorCode;

/// A topic-level failure with the message to show the client.
#[derive(Debug, Clone)]
pub struct TopicError {
    pub code: ErrorCode,
    pub message: String,
}

impl TopicError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        TopicError {
            code,
            message: message.into(),
        }
    }
}

/// Which replicas a `*.replication.throttled.replicas` value names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThrottledReplicas {
    All,
    Listed(Vec<(i32, i32)>),
}

impl ThrottledReplicas {
    pub fn contains(&self, partition: i32, broker: i32) -> bool {
        match self {
            ThrottledReplicas::All => true,
            ThrottledReplicas::Listed(l) => l.contains(&(partition, broker)),
        }
    }
}

/// An item of a throttled-replicas list that is not `partition:broker`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not partition:broker; the value must be '*' or a list of partitionId:brokerId")]
pub struct ThrottledReplicasError(pub String);

/// Parses `*` or `partition:broker,...` (empty = none), as Kafka's validator accepts them.
pub fn parse_replicas(value: &str) -> Result<ThrottledReplicas, ThrottledReplicasError> {
    let value = value.trim();
    if value == "*" {
        return Ok(ThrottledReplicas::All);
    }
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parsed = item.split_once(':').and_then(|(p, b)| {
            Some((p.trim().parse::<i32>().ok()?, b.trim().parse::<i32>().ok()?))
        });
        match parsed {
            Some((p, b)) if p >= 0 && b >= 0 => out.push((p, b)),
            _ => return Err(ThrottledReplicasError(item.to_string())),
        }
    }
    Ok(ThrottledReplicas::Listed(out))
}

/// Why a config value is refused (topic keys, and the broker keys that map onto them). The
/// message is Kafka's and is shown to the client; the code is INVALID_CONFIG.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigValueError {
    #[error("Unknown topic config name: {0}")]
    UnknownKey(String),
    #[error("Invalid value {value} for configuration {key}")]
    Invalid { key: String, value: String },
    #[error("Invalid value {value} for configuration {key}: Value must be at least {min}")]
    BelowMin {
        key: String,
        value: String,
        min: i64,
    },
    #[error("Invalid value {value} for configuration {key} (must be one of {})", .options.join(", "))]
    NotOneOf {
        key: String,
        value: String,
        options: &'static [&'static str],
    },
    #[error("Invalid value {value} for configuration {key}: {reason}")]
    ThrottledReplicas {
        key: String,
        value: String,
        reason: ThrottledReplicasError,
    },
    #[error("Invalid value {value} for configuration {key} (must be a list of delete, compact)")]
    CleanupPolicy { key: String, value: String },
}

impl ConfigValueError {
    /// `Invalid value ... for configuration ...` without a further reason.
    pub fn invalid(key: &str, value: &str) -> ConfigValueError {
        ConfigValueError::Invalid {
            key: key.into(),
            value: value.into(),
        }
    }

    /// The error code every refused value is answered with.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::InvalidConfig
    }
}

impl From<ConfigValueError> for TopicError {
    fn from(e: ConfigValueError) -> TopicError {
        TopicError::new(e.code(), e.to_string())
    }
}

/// How a topic config value is checked.
#[derive(Clone, Copy)]
enum Kind {
    Long {
        min: i64,
    },
    Int {
        min: i64,
    },
    Double,
    Bool,
    OneOf(&'static [&'static str]),
    CleanupPolicy,
    /// `*` or `partition:broker,...` (replication throttles).
    ThrottledReplicas,
}

/// Every topic key we accept. Keys we store but whose behaviour is not implemented yet (compaction)
/// are still accepted so standard tools and manifests work; DescribeConfigs reports them.
const TOPIC_KEYS: &[(&str, Kind, &str)] = &[
    ("cleanup.policy", Kind::CleanupPolicy, "delete"),
    (
        "compression.type",
        Kind::OneOf(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]),
        "producer",
    ),
    ("delete.retention.ms", Kind::Long { min: 0 }, "86400000"),
    ("file.delete.delay.ms", Kind::Long { min: 0 }, "60000"),
    (
        "flush.messages",
        Kind::Long { min: 1 },
        "9223372036854775807",
    ),
    ("flush.ms", Kind::Long { min: 0 }, "9223372036854775807"),
    ("index.interval.bytes", Kind::Int { min: 0 }, "4096"),
    (
        "max.compaction.lag.ms",
        Kind::Long { min: 1 },
        "9223372036854775807",
    ),
    ("max.message.bytes", Kind::Int { min: 0 }, "1048588"),
    (
        "message.timestamp.type",
        Kind::OneOf(&["CreateTime", "LogAppendTime"]),
        "CreateTime",
    ),
    (
        "message.timestamp.after.max.ms",
        Kind::Long { min: 0 },
        "3600000",
    ),
    (
        "message.timestamp.before.max.ms",
        Kind::Long { min: 0 },
        "9223372036854775807",
    ),
    ("min.cleanable.dirty.ratio", Kind::Double, "0.5"),
    ("min.compaction.lag.ms", Kind::Long { min: 0 }, "0"),
    ("min.insync.replicas", Kind::Int { min: 1 }, "1"),
    ("preallocate", Kind::Bool, "false"),
    ("retention.bytes", Kind::Long { min: -1 }, "-1"),
    ("retention.ms", Kind::Long { min: -1 }, "604800000"),
    ("segment.bytes", Kind::Int { min: 14 }, "1073741824"),
    ("segment.index.bytes", Kind::Int { min: 4 }, "10485760"),
    ("segment.jitter.ms", Kind::Long { min: 0 }, "0"),
    ("segment.ms", Kind::Long { min: 1 }, "604800000"),
    ("unclean.leader.election.enable", Kind::Bool, "false"),
    (
        "leader.replication.throttled.replicas",
        Kind::ThrottledReplicas,
        "",
    ),
    (
        "follower.replication.throttled.replicas",
        Kind::ThrottledReplicas,
        "",
    ),
];

/// True when `key` is a topic-level config key.
pub fn is_known(key: &str) -> bool {
    TOPIC_KEYS.iter().any(|(k, _, _)| *k == key)
}

/// All topic keys in a stable order.
pub fn all_keys() -> impl Iterator<Item = &'static str> {
    TOPIC_KEYS.iter().map(|(k, _, _)| *k)
}

/// The built-in default for a topic key when the broker config says nothing.
pub fn builtin_default(key: &str) -> Option<&'static str> {
    TOPIC_KEYS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, _, d)| *d)
}

/// Checks one key/value; the error's message is a sentence for the client.
pub fn validate(key: &str, value: &str) -> Result<(), ConfigValueError> {
    let kind = TOPIC_KEYS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, kind, _)| *kind)
        .ok_or_else(|| ConfigValueError::UnknownKey(key.into()))?;
    let bad = || ConfigValueError::invalid(key, value);
    match kind {
        Kind::Long { min } | Kind::Int { min } => {
            let v: i64 = value.trim().parse().map_err(|_| bad())?;
            if matches!(kind, Kind::Int { .. }) && i32::try_from(v).is_err() {
                return Err(bad());
            }
            if v < min {
                return Err(ConfigValueError::BelowMin {
                    key: key.into(),
                    value: value.into(),
                    min,
                });
            }
        }
        Kind::Double => {
            value.trim().parse::<f64>().map_err(|_| bad())?;
        }
        Kind::Bool => {
            if !matches!(value.trim().to_ascii_lowercase().as_str(), "true" | "false") {
                return Err(bad());
            }
        }
        Kind::OneOf(options) => {
            if !options.is_empty() && !options.contains(&value.trim()) {
                return Err(ConfigValueError::NotOneOf {
                    key: key.into(),
                    value: value.into(),
                    options,
                });
            }
        }
        Kind::ThrottledReplicas => {
            parse_replicas(value).map_err(|reason| ConfigValueError::ThrottledReplicas {
                key: key.into(),
                value: value.into(),
                reason,
            })?;
        }
        Kind::CleanupPolicy => {
            for part in value.split(',').map(str::trim) {
                if !matches!(part, "delete" | "compact") {
                    return Err(ConfigValueError::CleanupPolicy {
                        key: key.into(),
                        value: value.into(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// The effective, typed settings of one topic that the log and produce path use.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSettings {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub index_interval_bytes: u64,
    pub max_message_bytes: usize,
    pub log_append_time: bool,
    pub min_insync_replicas: i32,
    /// `cleanup.policy` holds `compact`: the log cleaner keeps the latest record per key.
    pub compact: bool,
    /// `cleanup.policy` holds `delete`: retention by time and size deletes old segments.
    pub delete: bool,
    /// How long a tombstone (a record without value) stays after compaction reaches it.
    pub delete_retention_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
    /// Records younger than this are never compacted.
    pub min_compaction_lag_ms: i64,
    /// A log whose oldest uncleaned record is older than this is cleaned whatever its ratio.
    pub max_compaction_lag_ms: i64,
}

impl TopicSettings {
    /// Resolves each key from the topic's overrides, then the broker defaults, then built-ins.
    pub fn resolve(
        overrides: &BTreeMap<String, String>,
        defaults: &BTreeMap<String, String>,
    ) -> Self {
        let get = |k: &str| -> String {
            overrides
                .get(k)
                .or_else(|| defaults.get(k))
                .cloned()
                .unwrap_or_else(|| builtin_default(k).unwrap_or("0").to_string())
        };
        let num = |k: &str| -> i64 { get(k).trim().parse().unwrap_or(0) };
        TopicSettings {
            retention_ms: num("retention.ms"),
            retention_bytes: num("retention.bytes"),
            segment_bytes: num("segment.bytes").max(1024) as u64,
            segment_ms: num("segment.ms").max(1),
            index_interval_bytes: num("index.interval.bytes").max(1) as u64,
            max_message_bytes: num("max.message.bytes").max(0) as usize,
            log_append_time: get("message.timestamp.type") == "LogAppendTime",
            min_insync_replicas: num("min.insync.replicas") as i32,
            compact: get("cleanup.policy")
                .split(',')
                .any(|p| p.trim() == "compact"),
            delete: get("cleanup.policy")
                .split(',')
                .any(|p| p.trim() == "delete"),
            delete_retention_ms: num("delete.retention.ms"),
            min_cleanable_dirty_ratio: get("min.cleanable.dirty.ratio")
                .trim()
                .parse()
                .unwrap_or(0.5),
            min_compaction_lag_ms: num("min.compaction.lag.ms"),
            max_compaction_lag_ms: num("max.compaction.lag.ms"),
        }
    }
}

/// Kafka's ConfigType code for DescribeConfigs v3+ (BOOLEAN 1, STRING 2, INT 3, LONG 5, DOUBLE 6, LIST 7).
pub fn type_code(key: &str) -> i8 {
    match TOPIC_KEYS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, kind, _)| *kind)
    {
        Some(Kind::Bool) => 1,
        Some(Kind::OneOf(_)) => 2,
        Some(Kind::Int { .. }) => 3,
        Some(Kind::Long { .. }) => 5,
        Some(Kind::Double) => 6,
        Some(Kind::CleanupPolicy | Kind::ThrottledReplicas) => 7,
        None => 0,
    }
}

/// Whether a key holds a comma-separated list (APPEND/SUBTRACT apply to these only).
pub fn is_list(key: &str) -> bool {
    matches!(
        TOPIC_KEYS
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, kind, _)| *kind),
        Some(Kind::CleanupPolicy)
    ) || key.ends_with(".throttled.replicas")
}

/// Kafka's internal topics: the group coordinator's and the transaction coordinator's.
pub const GROUP_METADATA_TOPIC: &str = "__consumer_offsets";
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Is `name` one of Kafka's internal topics (Metadata's `is_internal`)?
pub fn is_internal(name: &str) -> bool {
    name == GROUP_METADATA_TOPIC || name == TRANSACTION_STATE_TOPIC
}

/// Kafka's rules for topic names: 1..249 chars of [a-zA-Z0-9._-], not "." or "..".
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let bad = |why: &str| {
        Err(TopicError::new(
            ErrorCode::InvalidTopicException,
            format!("Topic name \"{name}\" is illegal, {why}"),
        ))
    };
    if name.is_empty() {
        return bad("it can't be empty");
    }
    if name == "." || name == ".." {
        return bad("it can't be '.' or '..'");
    }
    if name.len() > 249 {
        return bad("it can't be longer than 249 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    {
        return bad("it contains a character other than ASCII alphanumerics, '.', '_' and '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_replica_lists() {
        assert_eq!(parse_replicas("*"), Ok(ThrottledReplicas::All));
        let l = parse_replicas("0:1, 1:2,").unwrap();
        assert!(l.contains(0, 1) && l.contains(1, 2) && !l.contains(0, 2));
        assert_eq!(parse_replicas(""), Ok(ThrottledReplicas::Listed(vec![])));
        assert!(parse_replicas("0-1").is_err());
        assert_eq!(
            parse_replicas("0:1,a:1").unwrap_err().to_string(),
            "'a:1' is not partition:broker; the value must be '*' or a list of partitionId:brokerId"
        );
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn validation_rejects_bad_values() {
        assert!(validate("retention.ms", "1000").is_ok());
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("retention.ms", "soon").is_err());
        assert!(validate("cleanup.policy", "compact,delete").is_ok());
        assert!(validate("cleanup.policy", "shred").is_err());
        assert_eq!(
            validate("no.such.key", "1").unwrap_err().to_string(),
            "Unknown topic config name: no.such.key"
        );
        assert_eq!(
            validate("retention.ms", "soon").unwrap_err().to_string(),
            "Invalid value soon for configuration retention.ms"
        );
        assert_eq!(
            validate("compression.type", "brotli")
                .unwrap_err()
                .to_string(),
            "Invalid value brotli for configuration compression.type \
             (must be one of producer, uncompressed, gzip, snappy, lz4, zstd)"
        );
        assert_eq!(
            validate("follower.replication.throttled.replicas", "0;1")
                .unwrap_err()
                .to_string(),
            "Invalid value 0;1 for configuration follower.replication.throttled.replicas: \
             '0;1' is not partition:broker; the value must be '*' or a list of partitionId:brokerId"
        );
        let e: TopicError = validate("cleanup.policy", "shred").unwrap_err().into();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert_eq!(
            e.message,
            "Invalid value shred for configuration cleanup.policy (must be a list of delete, compact)"
        );
        assert!(validate("segment.bytes", "99999999999").is_err());
        assert!(validate("leader.replication.throttled.replicas", "0:1,1:2").is_ok());
        assert!(validate("follower.replication.throttled.replicas", "*").is_ok());
        assert!(validate("follower.replication.throttled.replicas", "").is_ok());
        assert!(validate("follower.replication.throttled.replicas", "0;1").is_err());
    }

    #[test]
    fn resolve_prefers_override_then_default() {
        let mut defaults = BTreeMap::new();
        defaults.insert("retention.ms".to_string(), "5000".to_string());
        let mut overrides = BTreeMap::new();
        assert_eq!(
            TopicSettings::resolve(&overrides, &defaults).retention_ms,
            5000
        );
        overrides.insert("retention.ms".to_string(), "7".to_string());
        assert_eq!(
            TopicSettings::resolve(&overrides, &defaults).retention_ms,
            7
        );
        assert_eq!(
            TopicSettings::resolve(&overrides, &defaults).retention_bytes,
            -1
        );
    }
}
