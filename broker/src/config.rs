//! Broker configuration: Kafka-style `server.properties` keys with embedded defaults.
//!
//! Values are read from an optional properties file and `--override key=value` flags (later wins).
//! Every known key is validated at start; an invalid value fails with the key and the reason, an
//! unknown key only warns (Kafka does the same, and operators often carry extra keys around).
//! Per-listener security (`security`) and connection limits (`limits`) are parsed by submodules.

pub mod limits;
pub mod security;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A listener as written in `listeners=NAME://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl Listener {
    pub fn bind_addr(&self) -> String {
        let host = if self.host.is_empty() {
            "0.0.0.0"
        } else {
            &self.host
        };
        format!("{host}:{}", self.port)
    }
}

/// Fully validated broker configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: i32,
    pub cluster_id: Option<String>,
    pub listeners: Vec<Listener>,
    pub advertised_listeners: Vec<Listener>,
    /// Security of each listener, in `listeners` order (protocol, SASL mechanisms, TLS files).
    pub listener_security: Vec<security::ListenerSecurity>,
    /// `connection.failed.authentication.delay.ms`: base delay before a failed authentication is
    /// answered (doubling per recent failure from the same address).
    pub failed_authentication_delay_ms: u64,
    pub admin_listener: SocketAddr,
    pub log_dirs: Vec<PathBuf>,
    pub num_partitions: i32,
    /// `num.io.threads`: the threads that do disk work (`tasks::DiskPool`).
    pub io_threads: usize,
    pub default_replication_factor: i16,
    pub auto_create_topics_enable: bool,
    pub socket_request_max_bytes: usize,
    /// `socket.send.buffer.bytes` / `socket.receive.buffer.bytes` (SO_SNDBUF / SO_RCVBUF of
    /// client connections); `None` (-1) leaves the operating system's size.
    pub socket_send_buffer_bytes: Option<usize>,
    pub socket_receive_buffer_bytes: Option<usize>,
    /// `max.connections`, `max.connections.per.ip` and its overrides.
    pub connection_limits: limits::LimitsConfig,
    pub group_initial_rebalance_delay_ms: u64,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// KIP-848 consumer groups: a member silent this long is removed.
    pub group_consumer_session_timeout_ms: u64,
    /// KIP-848 consumer groups: how often members heartbeat (told in every response).
    pub group_consumer_heartbeat_interval_ms: u64,
    pub offsets_retention_minutes: i64,
    /// `__consumer_offsets` (created on a group's first FindCoordinator; it holds no data,
    /// committed offsets live in the metadata quorum): partitions and replication factor.
    pub offsets_topic_num_partitions: i32,
    pub offsets_topic_replication_factor: i16,
    /// `__transaction_state` (created on a transactional id's first FindCoordinator), likewise.
    pub transaction_state_log_num_partitions: i32,
    pub transaction_state_log_replication_factor: i16,
    /// A transactional id idle this long (no transaction in flight) is forgotten.
    pub transactional_id_expiration_ms: i64,
    /// The longest transaction timeout a producer may ask for.
    pub transaction_max_timeout_ms: i32,
    /// How often the coordinator looks for transactions past their timeout.
    pub transaction_abort_timed_out_transaction_cleanup_interval_ms: u64,
    pub delete_topic_enable: bool,
    pub log_retention_check_interval_ms: u64,
    /// `log.cleaner.enable`: run compaction for `cleanup.policy=compact` topics.
    pub log_cleaner_enable: bool,
    /// `log.cleaner.backoff.ms`: the pause between compaction passes.
    pub log_cleaner_backoff_ms: u64,
    /// `log.cleaner.io.max.bytes.per.second`: compaction's read+write byte-rate limit.
    pub log_cleaner_io_max_bytes_per_second: f64,
    /// `log.cleaner.dedupe.buffer.size`: the most memory a compaction pass's key map takes.
    pub log_cleaner_dedupe_buffer_size: u64,
    pub broker_rack: Option<String>,
    /// `authorizer.class.name` names one of Kafka's ACL authorizers (empty = no authorization).
    pub authorizer_enabled: bool,
    /// `super.users`: principals every authorization check allows.
    pub super_users: Vec<String>,
    pub allow_everyone_if_no_acl_found: bool,
    /// Client quota rate windows: `quota.window.num` samples of `quota.window.size.seconds`.
    pub quota_window_num: u32,
    pub quota_window_size_seconds: u32,
    /// Topic-level defaults that topics inherit unless they override them (`log.*` broker keys
    /// mapped to topic keys such as `retention.ms`), as strings in topic-key form.
    pub topic_defaults: BTreeMap<String, String>,
    /// Cluster mode (`controller.quorum.voters`); disabled when no voters are configured.
    pub cluster: crate::cluster::config::ClusterConfig,
    /// Every key/value as given (after defaults), for DescribeConfigs.
    pub raw: BTreeMap<String, String>,
}

/// The embedded defaults: what `fjord-broker` runs with when no file is given.
pub const EMBEDDED_DEFAULTS: &str = "\
node.id=1
listeners=PLAINTEXT://127.0.0.1:9092
admin.listener=127.0.0.1:9644
log.dirs=./data
num.partitions=1
num.io.threads=2
default.replication.factor=1
auto.create.topics.enable=true
socket.request.max.bytes=104857600
socket.send.buffer.bytes=102400
socket.receive.buffer.bytes=102400
message.max.bytes=1048588
log.segment.bytes=1073741824
log.roll.hours=168
log.retention.hours=168
log.retention.bytes=-1
log.retention.check.interval.ms=300000
log.cleaner.enable=true
log.cleaner.backoff.ms=15000
log.cleaner.io.max.bytes.per.second=1.7976931348623157E308
log.cleaner.dedupe.buffer.size=134217728
log.index.interval.bytes=4096
log.cleanup.policy=delete
min.insync.replicas=1
compression.type=producer
log.message.timestamp.type=CreateTime
group.initial.rebalance.delay.ms=3000
group.min.session.timeout.ms=6000
group.max.session.timeout.ms=1800000
group.consumer.session.timeout.ms=45000
group.consumer.heartbeat.interval.ms=5000
offsets.retention.minutes=10080
transaction.max.timeout.ms=900000
transactional.id.expiration.ms=604800000
offsets.topic.num.partitions=50
offsets.topic.replication.factor=3
transaction.state.log.num.partitions=50
transaction.state.log.replication.factor=3
transaction.abort.timed.out.transaction.cleanup.interval.ms=10000
delete.topic.enable=true
authorizer.class.name=
super.users=
allow.everyone.if.no.acl.found=false
quota.window.num=11
quota.window.size.seconds=1
";

/// Mapping of broker keys to the topic-level key they provide the default for.
pub const BROKER_TO_TOPIC_KEYS: &[(&str, &str)] = &[
    ("log.segment.bytes", "segment.bytes"),
    ("log.retention.bytes", "retention.bytes"),
    ("log.index.interval.bytes", "index.interval.bytes"),
    ("log.cleanup.policy", "cleanup.policy"),
    ("message.max.bytes", "max.message.bytes"),
    ("min.insync.replicas", "min.insync.replicas"),
    ("compression.type", "compression.type"),
    ("log.message.timestamp.type", "message.timestamp.type"),
];

/// Dynamically alterable broker keys that are not topic defaults: the replication throttles
/// `kafka-reassign-partitions --throttle` sets and `--verify` removes (bytes/s, a long >= 0).
pub const DYNAMIC_BROKER_ONLY_KEYS: &[&str] = &[
    "leader.replication.throttled.rate",
    "follower.replication.throttled.rate",
    "replica.alter.log.dirs.io.max.bytes.per.second",
];

/// Is `key` one of [`DYNAMIC_BROKER_ONLY_KEYS`]?
pub fn is_dynamic_broker_only_key(key: &str) -> bool {
    DYNAMIC_BROKER_ONLY_KEYS.contains(&key)
}

/// Keys the broker understands (others warn).
const KNOWN_KEYS: &[&str] = &[
    "node.id",
    "broker.id",
    "cluster.id",
    "process.roles",
    "controller.quorum.voters",
    "controller.listener.names",
    "inter.broker.listener.name",
    "listener.security.protocol.map",
    "listeners",
    "advertised.listeners",
    "admin.listener",
    "log.dirs",
    "log.dir",
    "num.partitions",
    "default.replication.factor",
    "auto.create.topics.enable",
    "socket.request.max.bytes",
    "socket.send.buffer.bytes",
    "socket.receive.buffer.bytes",
    "message.max.bytes",
    "log.segment.bytes",
    "log.roll.hours",
    "log.roll.ms",
    "log.retention.hours",
    "log.retention.minutes",
    "log.retention.ms",
    "log.retention.bytes",
    "log.retention.check.interval.ms",
    "log.cleaner.enable",
    "log.cleaner.backoff.ms",
    "log.cleaner.io.max.bytes.per.second",
    "log.cleaner.dedupe.buffer.size",
    "log.index.interval.bytes",
    "log.cleanup.policy",
    "min.insync.replicas",
    "compression.type",
    "log.message.timestamp.type",
    "group.initial.rebalance.delay.ms",
    "group.min.session.timeout.ms",
    "group.max.session.timeout.ms",
    "group.consumer.session.timeout.ms",
    "group.consumer.heartbeat.interval.ms",
    "offsets.retention.minutes",
    "transaction.max.timeout.ms",
    "transactional.id.expiration.ms",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms",
    "offsets.topic.replication.factor",
    "offsets.topic.num.partitions",
    "transaction.state.log.num.partitions",
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
    "delete.topic.enable",
    "broker.rack",
    "num.network.threads",
    "num.io.threads",
    "authorizer.class.name",
    "super.users",
    "allow.everyone.if.no.acl.found",
    "quota.window.num",
    "quota.window.size.seconds",
    "replica.lag.time.max.ms",
    "replica.fetch.max.bytes",
    "replica.fetch.response.max.bytes",
    "replica.fetch.wait.max.ms",
    "broker.session.timeout.ms",
    "broker.heartbeat.interval.ms",
    "controlled.shutdown.enable",
    "controlled.shutdown.max.retries",
    "controlled.shutdown.timeout.ms",
    "unclean.leader.election.enable",
    "auto.leader.rebalance.enable",
    "leader.imbalance.check.interval.seconds",
    "leader.imbalance.per.broker.percentage",
    "fjord.test.fault.hooks",
    "ssl.endpoint.identification.algorithm",
];

/// `authorizer.class.name` values that turn ACL authorization on (Kafka's KRaft and ZooKeeper
/// authorizers; both read the ACLs this broker stores).
pub const AUTHORIZER_CLASSES: &[&str] = &[
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "kafka.security.authorizer.AclAuthorizer",
];

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

fn err(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// Parses Java-properties-style text (`key=value`, `#`/`!` comments, blank lines).
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .or_else(|| line.split_once(':'))
            .ok_or_else(|| err(line, format!("line {} is not key=value", n + 1)))?;
        out.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(out)
}

/// Parses `NAME://host:port,...`.
pub fn parse_listeners(key: &str, value: &str) -> Result<Vec<Listener>, ConfigError> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, rest) = item
            .split_once("://")
            .ok_or_else(|| err(key, format!("'{item}' is not NAME://host:port")))?;
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| err(key, format!("'{item}' has no port")))?;
        let port: u16 = port
            .parse()
            .map_err(|_| err(key, format!("'{port}' in '{item}' is not a port number")))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if out.iter().any(|l: &Listener| l.name == name) {
            return Err(err(key, format!("listener name '{name}' appears twice")));
        }
        out.push(Listener {
            name: name.to_string(),
            host,
            port,
        });
    }
    if out.is_empty() {
        return Err(err(key, "at least one listener is required"));
    }
    Ok(out)
}

fn parse_num<T: std::str::FromStr>(
    raw: &BTreeMap<String, String>,
    key: &str,
) -> Result<T, ConfigError> {
    let v = raw.get(key).ok_or_else(|| err(key, "missing"))?;
    v.parse()
        .map_err(|_| err(key, format!("'{v}' is not a valid number")))
}

/// A socket buffer size: bytes (at least 1), or -1 for the operating system's default.
fn parse_buffer_size(
    raw: &BTreeMap<String, String>,
    key: &str,
) -> Result<Option<usize>, ConfigError> {
    match parse_num::<i64>(raw, key)? {
        -1 => Ok(None),
        n if n >= 1 => Ok(usize::try_from(n).ok()),
        _ => Err(err(key, "must be -1 (the OS default) or at least 1")),
    }
}

fn parse_bool(raw: &BTreeMap<String, String>, key: &str) -> Result<bool, ConfigError> {
    match raw.get(key).map(|s| s.to_ascii_lowercase()).as_deref() {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(err(key, format!("'{v}' is not true or false"))),
        None => Err(err(key, "missing")),
    }
}

/// Effective retention in ms from the hours/minutes/ms family (most specific wins, like Kafka).
fn retention_ms(raw: &BTreeMap<String, String>) -> Result<i64, ConfigError> {
    if raw.contains_key("log.retention.ms") {
        return parse_num(raw, "log.retention.ms");
    }
    if raw.contains_key("log.retention.minutes") {
        let m: i64 = parse_num(raw, "log.retention.minutes")?;
        return Ok(if m < 0 { -1 } else { m * 60_000 });
    }
    let h: i64 = parse_num(raw, "log.retention.hours")?;
    Ok(if h < 0 { -1 } else { h * 3_600_000 })
}

fn roll_ms(raw: &BTreeMap<String, String>) -> Result<i64, ConfigError> {
    if raw.contains_key("log.roll.ms") {
        return parse_num(raw, "log.roll.ms");
    }
    let h: i64 = parse_num(raw, "log.roll.hours")?;
    Ok(h * 3_600_000)
}

/// `config.providers`: names of the config providers whose `${name:key}` placeholders values may
/// use (KIP-297; each needs `config.providers.<name>.class`).
pub const CONFIG_PROVIDERS_KEY: &str = "config.providers";
/// The only provider class the broker implements (KIP-887): `${env:NAME}` is the value of the
/// environment variable `NAME` of the broker process.
pub const ENV_VAR_CONFIG_PROVIDER: &str =
    "org.apache.kafka.common.config.provider.EnvVarConfigProvider";

fn is_config_provider_key(key: &str) -> bool {
    key == CONFIG_PROVIDERS_KEY
        || key
            .strip_prefix(CONFIG_PROVIDERS_KEY)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// One `${provider:[path:]key}` placeholder found in a value (Kafka's `ConfigTransformer` syntax).
struct Placeholder<'a> {
    /// Byte range of the whole `${...}` in the value.
    start: usize,
    end: usize,
    provider: &'a str,
    path: Option<&'a str>,
    key: &'a str,
}

/// The placeholders in `value`, left to right. Text that is not `${a:b}` or `${a:b:c}` (no colon,
/// no closing brace) is not a placeholder and stays as it is, as in Kafka.
fn placeholders(value: &str) -> Vec<Placeholder<'_>> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = value[from..].find("${").map(|i| from + i) {
        let body_start = open + 2;
        let Some(close) = value[body_start..].find('}').map(|i| body_start + i) else {
            break;
        };
        let body = &value[body_start..close];
        let parts: Vec<&str> = body.splitn(3, ':').collect();
        let parsed = match parts.as_slice() {
            [provider, key] => Some((*provider, None, *key)),
            [provider, path, key] => Some((*provider, Some(*path), *key)),
            _ => None,
        };
        match parsed {
            Some((provider, path, key)) if !provider.is_empty() => {
                out.push(Placeholder {
                    start: open,
                    end: close + 1,
                    provider,
                    path,
                    key,
                });
                from = close + 1;
            }
            _ => from = body_start,
        }
    }
    out
}

/// Replaces `${provider:key}` placeholders in every value with what the configured config
/// provider returns (Kafka's `config.providers`; only [`ENV_VAR_CONFIG_PROVIDER`] exists here).
/// `env` looks up an environment variable (the process environment in [`Config::load`]).
///
/// Unlike Kafka, which leaves a placeholder it cannot resolve in the value (a broker would then
/// advertise the literal `${env:X}`), an unset variable or an unconfigured provider is an error
/// naming the key.
pub fn resolve_config_variables(
    given: Vec<(String, String)>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    // The provider settings themselves are plain values (later entries win, as for any key).
    let mut settings: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in &given {
        if is_config_provider_key(k) {
            settings.insert(k, v);
        }
    }
    let names: Vec<&str> = settings
        .get(CONFIG_PROVIDERS_KEY)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    for name in &names {
        let class_key = format!("{CONFIG_PROVIDERS_KEY}.{name}.class");
        match settings.get(class_key.as_str()) {
            Some(class) if *class == ENV_VAR_CONFIG_PROVIDER => {}
            Some(class) => {
                return Err(err(
                    &class_key,
                    format!(
                        "config provider class '{class}' is not supported (only \
                         {ENV_VAR_CONFIG_PROVIDER})"
                    ),
                ))
            }
            None => {
                return Err(err(
                    &class_key,
                    format!(
                    "config provider '{name}' is listed in {CONFIG_PROVIDERS_KEY} but has no class"
                ),
                ))
            }
        }
    }
    let mut out = Vec::with_capacity(given.len());
    for (k, v) in &given {
        if is_config_provider_key(k) {
            out.push((k.clone(), v.clone()));
            continue;
        }
        let found = placeholders(v);
        if found.is_empty() {
            out.push((k.clone(), v.clone()));
            continue;
        }
        let mut resolved = String::with_capacity(v.len());
        let mut last = 0;
        for p in found {
            if !names.contains(&p.provider) {
                return Err(err(
                    k,
                    format!(
                        "'{}' refers to config provider '{}', which is not configured (set \
                         {CONFIG_PROVIDERS_KEY}={} and {CONFIG_PROVIDERS_KEY}.{}.class={ENV_VAR_CONFIG_PROVIDER})",
                        &v[p.start..p.end],
                        p.provider,
                        p.provider,
                        p.provider
                    ),
                ));
            }
            if p.path.is_some_and(|path| !path.is_empty()) {
                return Err(err(
                    k,
                    format!(
                        "'{}': the environment variable provider takes no path; write ${{{}:NAME}}",
                        &v[p.start..p.end],
                        p.provider
                    ),
                ));
            }
            let value = env(p.key).ok_or_else(|| {
                err(
                    k,
                    format!(
                        "'{}' refers to environment variable '{}', which is not set",
                        &v[p.start..p.end],
                        p.key
                    ),
                )
            })?;
            resolved.push_str(&v[last..p.start]);
            resolved.push_str(&value);
            last = p.end;
        }
        resolved.push_str(&v[last..]);
        out.push((k.clone(), resolved));
    }
    Ok(out)
}

impl Config {
    /// Builds a config from the embedded defaults, then `file` (if any), then `overrides`.
    /// Returns the config and warnings for unknown keys.
    pub fn load(
        file_text: Option<&str>,
        overrides: &[(String, String)],
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let mut raw: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in parse_properties(EMBEDDED_DEFAULTS)? {
            raw.insert(k, v);
        }
        let mut given = Vec::new();
        if let Some(text) = file_text {
            given.extend(parse_properties(text)?);
        }
        given.extend(overrides.iter().cloned());
        let given = resolve_config_variables(given, &|name| std::env::var(name).ok())?;
        let mut warnings = Vec::new();
        for (k, v) in given {
            if !KNOWN_KEYS.contains(&k.as_str())
                && !is_topic_key(&k)
                && !is_config_provider_key(&k)
                && !security::is_known_key(&k)
                && !limits::KEYS.contains(&k.as_str())
            {
                warnings.push(format!("unknown configuration key '{k}' (ignored)"));
            }
            raw.insert(k, v);
        }
        if let Some(b) = raw.get("broker.id").cloned() {
            raw.entry("node.id".into()).and_modify(|v| *v = b.clone());
        }
        if let Some(d) = raw.get("log.dir").cloned() {
            if !raw.contains_key("log.dirs") {
                raw.insert("log.dirs".into(), d);
            }
        }
        Self::from_raw(raw).map(|c| (c, warnings))
    }

    fn from_raw(mut raw: BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let node_id: i32 = parse_num(&raw, "node.id")?;
        if node_id < 0 {
            return Err(err("node.id", "must be >= 0"));
        }
        let mut listeners = parse_listeners("listeners", &raw["listeners"])?;
        let mut advertised_listeners = match raw.get("advertised.listeners") {
            Some(v) => parse_listeners("advertised.listeners", v)?,
            None => listeners
                .iter()
                .map(|l| Listener {
                    host: if l.host.is_empty() || l.host == "0.0.0.0" {
                        "localhost".into()
                    } else {
                        l.host.clone()
                    },
                    ..l.clone()
                })
                .collect(),
        };
        let mut cluster = crate::cluster::config::resolve(
            &raw,
            node_id,
            &mut listeners,
            &mut advertised_listeners,
        )?;
        let listener_security = security::parse(&raw, &listeners)?;
        if let Some(c) = cluster
            .controller_listener
            .clone()
            .filter(|_| !cluster.local_controller)
        {
            // Only the listener's own keys matter here: the inter-broker listener is checked
            // against the client listeners above.
            let mut own = raw.clone();
            own.remove("inter.broker.listener.name");
            own.remove("security.inter.broker.protocol");
            let security = security::parse(&own, std::slice::from_ref(&c))?.pop();
            if security.as_ref().is_some_and(|s| s.protocol.uses_sasl()) {
                return Err(err(
                    "listener.security.protocol.map",
                    format!(
                        "the controller listener {} carries fjord-quorum RPC: map it to PLAINTEXT or SSL (mutual TLS), not SASL",
                        c.name
                    ),
                ));
            }
            cluster.controller_security = security;
        }
        let failed_authentication_delay_ms: u64 =
            match raw.get("connection.failed.authentication.delay.ms") {
                Some(_) => parse_num(&raw, "connection.failed.authentication.delay.ms")?,
                None => 100,
            };
        // Secrets (PLAIN passwords, inline keys) never reach DescribeConfigs.
        raw.retain(|k, _| !security::is_sensitive_key(k));
        let admin_listener: SocketAddr = raw["admin.listener"].parse().map_err(|_| {
            err(
                "admin.listener",
                format!("'{}' is not host:port", raw["admin.listener"]),
            )
        })?;
        let log_dirs: Vec<PathBuf> = raw["log.dirs"]
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        if log_dirs.is_empty() {
            return Err(err("log.dirs", "at least one directory is required"));
        }
        let num_partitions: i32 = parse_num(&raw, "num.partitions")?;
        if num_partitions < 1 {
            return Err(err("num.partitions", "must be >= 1"));
        }
        let io_threads: usize = parse_num(&raw, "num.io.threads")?;
        if !(1..=64).contains(&io_threads) {
            return Err(err("num.io.threads", "must be between 1 and 64"));
        }
        let default_replication_factor: i16 = parse_num(&raw, "default.replication.factor")?;
        if default_replication_factor < 1 {
            return Err(err("default.replication.factor", "must be >= 1"));
        }
        let socket_request_max_bytes: usize = parse_num(&raw, "socket.request.max.bytes")?;
        if socket_request_max_bytes < 1024 {
            return Err(err("socket.request.max.bytes", "must be >= 1024"));
        }
        let socket_send_buffer_bytes = parse_buffer_size(&raw, "socket.send.buffer.bytes")?;
        let socket_receive_buffer_bytes = parse_buffer_size(&raw, "socket.receive.buffer.bytes")?;
        let connection_limits = limits::LimitsConfig::parse(|k| raw.get(k).cloned())
            .map_err(|e| err(e.key, e.reason))?;
        let mut topic_defaults = BTreeMap::new();
        for (bk, tk) in BROKER_TO_TOPIC_KEYS {
            topic_defaults.insert(tk.to_string(), raw[*bk].clone());
        }
        topic_defaults.insert("retention.ms".into(), retention_ms(&raw)?.to_string());
        topic_defaults.insert("segment.ms".into(), roll_ms(&raw)?.to_string());
        for (k, v) in &topic_defaults {
            crate::topic_config::validate(k, v).map_err(|reason| {
                let broker_key = BROKER_TO_TOPIC_KEYS
                    .iter()
                    .find(|(_, t)| t == k)
                    .map(|(b, _)| *b)
                    .unwrap_or(k.as_str());
                err(broker_key, reason.to_string())
            })?;
        }
        let authorizer_enabled = match raw["authorizer.class.name"].trim() {
            "" => false,
            c if AUTHORIZER_CLASSES.contains(&c) => true,
            c => {
                return Err(err(
                    "authorizer.class.name",
                    format!(
                    "'{c}' is not supported; use one of {AUTHORIZER_CLASSES:?} or leave it empty"
                ),
                ))
            }
        };
        let quota_window_num: u32 = parse_num(&raw, "quota.window.num")?;
        if quota_window_num < 2 {
            return Err(err("quota.window.num", "must be >= 2"));
        }
        let quota_window_size_seconds: u32 = parse_num(&raw, "quota.window.size.seconds")?;
        if quota_window_size_seconds < 1 {
            return Err(err("quota.window.size.seconds", "must be >= 1"));
        }
        let cfg = Config {
            node_id,
            cluster_id: raw.get("cluster.id").cloned(),
            listeners,
            advertised_listeners,
            listener_security,
            failed_authentication_delay_ms,
            admin_listener,
            log_dirs,
            num_partitions,
            io_threads,
            default_replication_factor,
            auto_create_topics_enable: parse_bool(&raw, "auto.create.topics.enable")?,
            socket_request_max_bytes,
            socket_send_buffer_bytes,
            socket_receive_buffer_bytes,
            connection_limits,
            group_initial_rebalance_delay_ms: parse_num(&raw, "group.initial.rebalance.delay.ms")?,
            group_min_session_timeout_ms: parse_num(&raw, "group.min.session.timeout.ms")?,
            group_max_session_timeout_ms: parse_num(&raw, "group.max.session.timeout.ms")?,
            group_consumer_session_timeout_ms: parse_num(
                &raw,
                "group.consumer.session.timeout.ms",
            )?,
            group_consumer_heartbeat_interval_ms: parse_num(
                &raw,
                "group.consumer.heartbeat.interval.ms",
            )?,
            offsets_retention_minutes: parse_num(&raw, "offsets.retention.minutes")?,
            transaction_max_timeout_ms: parse_num(&raw, "transaction.max.timeout.ms")?,
            transactional_id_expiration_ms: parse_num(&raw, "transactional.id.expiration.ms")?,
            offsets_topic_num_partitions: parse_num(&raw, "offsets.topic.num.partitions")?,
            offsets_topic_replication_factor: parse_num(&raw, "offsets.topic.replication.factor")?,
            transaction_state_log_num_partitions: parse_num(
                &raw,
                "transaction.state.log.num.partitions",
            )?,
            transaction_state_log_replication_factor: parse_num(
                &raw,
                "transaction.state.log.replication.factor",
            )?,
            transaction_abort_timed_out_transaction_cleanup_interval_ms: parse_num(
                &raw,
                "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            )?,
            delete_topic_enable: parse_bool(&raw, "delete.topic.enable")?,
            log_retention_check_interval_ms: parse_num(&raw, "log.retention.check.interval.ms")?,
            log_cleaner_enable: parse_bool(&raw, "log.cleaner.enable")?,
            log_cleaner_backoff_ms: parse_num(&raw, "log.cleaner.backoff.ms")?,
            log_cleaner_io_max_bytes_per_second: parse_num(
                &raw,
                "log.cleaner.io.max.bytes.per.second",
            )?,
            log_cleaner_dedupe_buffer_size: parse_num(&raw, "log.cleaner.dedupe.buffer.size")?,
            broker_rack: raw.get("broker.rack").cloned(),
            authorizer_enabled,
            super_users: crate::auth::authorizer::parse_super_users(&raw["super.users"]),
            allow_everyone_if_no_acl_found: parse_bool(&raw, "allow.everyone.if.no.acl.found")?,
            quota_window_num,
            quota_window_size_seconds,
            topic_defaults,
            cluster,
            raw,
        };
        Ok(cfg)
    }

    /// The advertised address of `listener` (the first advertised listener when it has none).
    pub fn advertised_for(&self, listener: &str) -> &Listener {
        self.advertised_listeners
            .iter()
            .find(|l| l.name == listener)
            .unwrap_or(&self.advertised_listeners[0])
    }

    /// The first log directory (single-directory layout for now; JBOD spreads later).
    pub fn data_dir(&self) -> &PathBuf {
        &self.log_dirs[0]
    }
}

fn is_topic_key(k: &str) -> bool {
    crate::topic_config::is_known(k)
}

/// Maps a dynamically alterable broker key to the topic key it provides the default for.
pub fn broker_key_to_topic_key(key: &str) -> Option<&'static str> {
    if let Some((_, t)) = BROKER_TO_TOPIC_KEYS.iter().find(|(b, _)| *b == key) {
        return Some(t);
    }
    match key {
        "log.retention.ms" | "log.retention.minutes" | "log.retention.hours" => {
            Some("retention.ms")
        }
        "log.roll.ms" | "log.roll.hours" => Some("segment.ms"),
        _ => None,
    }
}

/// Converts hour/minute-valued broker keys to the millisecond value of their topic key.
pub fn dynamic_value_in_topic_units(
    key: &str,
    value: &str,
) -> Result<String, crate::topic_config::ConfigValueError> {
    let factor = match key {
        "log.retention.hours" | "log.roll.hours" => 3_600_000,
        "log.retention.minutes" => 60_000,
        _ => return Ok(value.to_string()),
    };
    let v: i64 = value
        .trim()
        .parse()
        .map_err(|_| crate::topic_config::ConfigValueError::invalid(key, value))?;
    Ok(if v < 0 {
        "-1".to_string()
    } else {
        (v * factor).to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_load() {
        let (c, w) = Config::load(None, &[]).unwrap();
        assert!(w.is_empty());
        assert_eq!(c.node_id, 1);
        assert_eq!(c.listeners[0].port, 9092);
        assert_eq!(
            c.topic_defaults["retention.ms"],
            (168 * 3_600_000i64).to_string()
        );
        assert!(c.auto_create_topics_enable);
    }

    #[test]
    fn overrides_win_and_unknown_keys_warn() {
        let file = "num.partitions=3\nfoo.bar=1\n";
        let (c, w) = Config::load(Some(file), &[("num.partitions".into(), "6".into())]).unwrap();
        assert_eq!(c.num_partitions, 6);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("foo.bar"));
    }

    #[test]
    fn invalid_value_names_the_key() {
        let e = Config::load(None, &[("num.partitions".into(), "many".into())]).unwrap_err();
        assert_eq!(e.key, "num.partitions");
        let e = Config::load(None, &[("listeners".into(), "PLAINTEXT://x".into())]).unwrap_err();
        assert_eq!(e.key, "listeners");
        let e = Config::load(None, &[("log.cleanup.policy".into(), "shred".into())]).unwrap_err();
        assert_eq!(e.key, "log.cleanup.policy");
    }

    #[test]
    fn socket_buffer_sizes_default_like_kafka_and_minus_one_means_the_os_default() {
        let (c, _) = Config::load(None, &[]).unwrap();
        assert_eq!(c.socket_send_buffer_bytes, Some(102_400));
        assert_eq!(c.socket_receive_buffer_bytes, Some(102_400));
        let (c, _) = Config::load(
            None,
            &[
                ("socket.send.buffer.bytes".into(), "-1".into()),
                ("socket.receive.buffer.bytes".into(), "65536".into()),
            ],
        )
        .unwrap();
        assert_eq!(c.socket_send_buffer_bytes, None);
        assert_eq!(c.socket_receive_buffer_bytes, Some(65_536));
        for bad in ["0", "-2", "big"] {
            let e =
                Config::load(None, &[("socket.send.buffer.bytes".into(), bad.into())]).unwrap_err();
            assert_eq!(e.key, "socket.send.buffer.bytes", "{bad}");
        }
    }

    #[test]
    fn retention_most_specific_wins() {
        let (c, _) = Config::load(None, &[("log.retention.ms".into(), "1000".into())]).unwrap();
        assert_eq!(c.topic_defaults["retention.ms"], "1000");
        let (c, _) = Config::load(None, &[("log.retention.minutes".into(), "2".into())]).unwrap();
        assert_eq!(c.topic_defaults["retention.ms"], "120000");
    }

    #[test]
    fn authorizer_and_quota_keys() {
        let (c, _) = Config::load(None, &[]).unwrap();
        assert!(!c.authorizer_enabled && c.super_users.is_empty());
        assert_eq!((c.quota_window_num, c.quota_window_size_seconds), (11, 1));
        let (c, w) = Config::load(
            None,
            &[
                (
                    "authorizer.class.name".into(),
                    "org.apache.kafka.metadata.authorizer.StandardAuthorizer".into(),
                ),
                ("super.users".into(), "User:admin;User:ops".into()),
            ],
        )
        .unwrap();
        assert!(w.is_empty());
        assert!(c.authorizer_enabled);
        assert_eq!(c.super_users, vec!["User:admin", "User:ops"]);
        let e = Config::load(None, &[("authorizer.class.name".into(), "x.Y".into())]).unwrap_err();
        assert_eq!(e.key, "authorizer.class.name");
        let e = Config::load(None, &[("quota.window.num".into(), "1".into())]).unwrap_err();
        assert_eq!(e.key, "quota.window.num");
    }

    fn env_provider() -> Vec<(String, String)> {
        vec![
            ("config.providers".into(), "env".into()),
            (
                "config.providers.env.class".into(),
                ENV_VAR_CONFIG_PROVIDER.into(),
            ),
        ]
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "FJORD_NODE_ADDRESS" => Some("10.1.2.3".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn env_placeholders_resolve_in_any_value() {
        let mut given = env_provider();
        given.push((
            "advertised.listeners".into(),
            "EXTERNAL-9094://${env:FJORD_NODE_ADDRESS}:31234,X://${env:FJORD_NODE_ADDRESS}:1"
                .into(),
        ));
        given.push(("broker.rack".into(), "r${env:EMPTY}1".into()));
        given.push(("plain".into(), "no $ {placeholder} or ${here".into()));
        let out: BTreeMap<_, _> = resolve_config_variables(given, &env)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(
            out["advertised.listeners"],
            "EXTERNAL-9094://10.1.2.3:31234,X://10.1.2.3:1"
        );
        assert_eq!(out["broker.rack"], "r1");
        assert_eq!(out["plain"], "no $ {placeholder} or ${here");
        assert_eq!(out["config.providers"], "env");
    }

    #[test]
    fn unset_variables_and_unconfigured_providers_are_errors() {
        let mut given = env_provider();
        given.push(("broker.rack".into(), "${env:NOPE}".into()));
        let e = resolve_config_variables(given, &env).unwrap_err();
        assert_eq!(e.key, "broker.rack");
        assert!(
            e.reason.contains("'NOPE'") && e.reason.contains("not set"),
            "{e}"
        );

        let e = resolve_config_variables(
            vec![("broker.rack".into(), "${env:FJORD_NODE_ADDRESS}".into())],
            &env,
        )
        .unwrap_err();
        assert!(e.reason.contains("not configured"), "{e}");
        assert!(e.reason.contains("config.providers=env"), "{e}");

        let e = resolve_config_variables(vec![("config.providers".into(), "env".into())], &env)
            .unwrap_err();
        assert_eq!(e.key, "config.providers.env.class");

        let e = resolve_config_variables(
            vec![
                ("config.providers".into(), "file".into()),
                (
                    "config.providers.file.class".into(),
                    "org.apache.kafka.common.config.provider.FileConfigProvider".into(),
                ),
            ],
            &env,
        )
        .unwrap_err();
        assert!(e.reason.contains("not supported"), "{e}");

        let mut given = env_provider();
        given.push((
            "broker.rack".into(),
            "${env:some/path:FJORD_NODE_ADDRESS}".into(),
        ));
        let e = resolve_config_variables(given, &env).unwrap_err();
        assert!(e.reason.contains("no path"), "{e}");
    }

    #[test]
    fn config_load_resolves_from_the_process_environment() {
        // PATH is set in every test environment; provider keys do not warn.
        let path = std::env::var("PATH").unwrap();
        let mut overrides = env_provider();
        overrides.push(("broker.rack".into(), "${env:PATH}".into()));
        let (c, w) = Config::load(None, &overrides).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.broker_rack.as_deref(), Some(path.as_str()));
        let text = "config.providers=env\n\
                    config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider\n\
                    listeners=PLAINTEXT://0.0.0.0:9000\n\
                    advertised.listeners=PLAINTEXT://${env:FJORD_SURELY_UNSET_VARIABLE}:9000\n";
        let e = Config::load(Some(text), &[]).unwrap_err();
        assert_eq!(e.key, "advertised.listeners");
    }

    #[test]
    fn advertised_defaults_to_listeners() {
        let (c, _) = Config::load(
            None,
            &[("listeners".into(), "PLAINTEXT://0.0.0.0:9000".into())],
        )
        .unwrap();
        assert_eq!(c.advertised_listeners[0].host, "localhost");
        assert_eq!(c.advertised_listeners[0].port, 9000);
    }
}
