//! Metadata-quorum configuration: `controller.quorum.voters`, `process.roles` and
//! `controller.listener.names`. Every broker runs the metadata quorum. With no voters
//! configured the node is the quorum's only voter: a controller listener is synthesized on
//! loopback (`127.0.0.1:0`, bound to an ephemeral port, never advertised), as in Kafka's
//! combined mode with a single controller.
//! With voters, a `broker,controller` node is a voter of the metadata quorum, and a `broker`
//! node (not among the voters) is a Raft learner: it receives the metadata log but never
//! votes. Both serve fjord-quorum RPC on their controller listener instead of the Kafka
//! protocol — unlike Kafka, a broker-only node needs one too, because the log is pushed to it.
//! A learner's quorum address is its advertised controller listener if there is one, else
//! its controller listener's host (or, when that is a wildcard, its first advertised host).

use std::collections::BTreeMap;

use crate::config::{ConfigError, Listener};

/// What the cluster keys resolved to.
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    /// Voter id -> `host:port` of its quorum listener. With no voters configured: this node
    /// alone, on its synthesized loopback listener (port filled in once bound).
    pub voters: BTreeMap<i32, String>,
    /// This node's quorum listener (taken out of `listeners`, or synthesized).
    pub controller_listener: Option<Listener>,
    /// No voters were configured: this node is the only voter and its controller listener is
    /// the synthesized loopback one, known to nobody else.
    pub local_controller: bool,
    /// Where other quorum members reach this node (used by broker-only learners).
    pub controller_address: String,
    /// The controller listener's security (PLAINTEXT, or SSL: mutual TLS between members).
    pub controller_security: Option<crate::config::security::ListenerSecurity>,
    /// The listener followers fetch from (`inter.broker.listener.name`; the first advertised
    /// one by default).
    pub inter_broker_listener: String,
    /// Credentials followers use on a SASL inter-broker listener.
    pub inter_broker_sasl: Option<fjord_client::SaslSettings>,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    pub replica_lag_time_max_ms: i64,
    /// `replica.fetch.max.bytes`: what one partition brings per follower fetch (at least one
    /// batch).
    pub replica_fetch_max_bytes: i32,
    /// `replica.fetch.response.max.bytes`: what one follower fetch brings over all partitions.
    pub replica_fetch_response_max_bytes: i32,
    pub replica_fetch_wait_max_ms: i32,
    /// `broker.session.timeout.ms`: a broker silent this long is fenced by the controller.
    pub broker_session_timeout_ms: u64,
    pub broker_heartbeat_interval_ms: u64,
    /// `controlled.shutdown.timeout.ms`: how long SIGTERM waits for leaderships to move.
    pub controlled_shutdown_timeout_ms: u64,
    /// `fjord.test.fault.hooks`: serve `/v1/test/fault` (tests only).
    pub fault_hooks: bool,
    /// `auto.leader.rebalance.enable` (Kafka's default: on): the active controller moves
    /// leaderships back to preferred replicas (see `cluster::rebalance`).
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds` (default 300).
    pub leader_imbalance_check_interval_seconds: u64,
    /// `leader.imbalance.per.broker.percentage` (default 10): a broker not leading more than
    /// this share of the partitions it prefers is rebalanced.
    pub leader_imbalance_per_broker_percentage: u32,
}

fn num<T: std::str::FromStr>(
    raw: &BTreeMap<String, String>,
    key: &str,
    default: T,
    valid: impl Fn(&T) -> bool,
) -> Result<T, ConfigError> {
    match raw.get(key) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<T>()
            .ok()
            .filter(|n| valid(n))
            .ok_or_else(|| err(key, format!("'{v}' is not a valid value"))),
    }
}

/// Name of the synthesized controller listener of a node without configured voters.
pub const LOCAL_CONTROLLER_LISTENER: &str = "FJORD_LOCAL_CONTROLLER";

impl ClusterConfig {
    /// The synthesized controller listener was bound to `addr`: this is where the only voter
    /// listens.
    pub fn local_controller_bound(&mut self, addr: std::net::SocketAddr) {
        if self.local_controller {
            self.controller_address = addr.to_string();
            for a in self.voters.values_mut() {
                *a = addr.to_string();
            }
        }
    }
}

/// The keys tuning replication, liveness and rebalancing (with Kafka's defaults).
fn with_tuning(
    raw: &BTreeMap<String, String>,
    base: ClusterConfig,
) -> Result<ClusterConfig, ConfigError> {
    Ok(ClusterConfig {
        replica_lag_time_max_ms: num(raw, "replica.lag.time.max.ms", 30_000, |n| *n > 0)?,
        replica_fetch_max_bytes: num(raw, "replica.fetch.max.bytes", 1 << 20, |n| *n > 0)?,
        replica_fetch_response_max_bytes: num(
            raw,
            "replica.fetch.response.max.bytes",
            10 << 20,
            |n| *n > 0,
        )?,
        replica_fetch_wait_max_ms: num(raw, "replica.fetch.wait.max.ms", 500, |n| *n >= 0)?,
        broker_session_timeout_ms: num(raw, "broker.session.timeout.ms", 9_000, |n| *n > 0)?,
        broker_heartbeat_interval_ms: num(raw, "broker.heartbeat.interval.ms", 2_000, |n| *n > 0)?,
        controlled_shutdown_timeout_ms: num(raw, "controlled.shutdown.timeout.ms", 30_000, |n| {
            *n > 0
        })?,
        fault_hooks: num(raw, "fjord.test.fault.hooks", false, |_| true)?,
        auto_leader_rebalance_enable: num(raw, "auto.leader.rebalance.enable", true, |_| true)?,
        leader_imbalance_check_interval_seconds: num(
            raw,
            "leader.imbalance.check.interval.seconds",
            300,
            |n| *n > 0,
        )?,
        leader_imbalance_per_broker_percentage: num(
            raw,
            "leader.imbalance.per.broker.percentage",
            10,
            |n| *n <= 100,
        )?,
        ..base
    })
}

fn err(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Parses `id@host:port,...`.
pub fn parse_voters(value: &str) -> Result<BTreeMap<i32, String>, ConfigError> {
    const KEY: &str = "controller.quorum.voters";
    let mut out = BTreeMap::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || err(KEY, format!("'{item}' is not id@host:port"));
        let (id, addr) = item.split_once('@').ok_or_else(bad)?;
        let id: i32 = id.trim().parse().map_err(|_| bad())?;
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        if id < 0 || host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad());
        }
        if out.insert(id, addr.to_string()).is_some() {
            return Err(err(KEY, format!("voter {id} appears twice")));
        }
    }
    Ok(out)
}

/// Validates the quorum keys and moves the controller listener out of `listeners` and
/// `advertised_listeners` (it is never advertised to clients). Without voters, this node is
/// the only voter on a synthesized loopback controller listener.
pub fn resolve(
    raw: &BTreeMap<String, String>,
    node_id: i32,
    listeners: &mut Vec<Listener>,
    advertised: &mut Vec<Listener>,
) -> Result<ClusterConfig, ConfigError> {
    let voters = parse_voters(raw.get("controller.quorum.voters").map_or("", |s| s))?;
    if voters.is_empty() {
        let local = Listener {
            name: LOCAL_CONTROLLER_LISTENER.into(),
            host: "127.0.0.1".into(),
            port: 0,
        };
        let address = format!("{}:{}", local.host, local.port);
        return with_tuning(
            raw,
            ClusterConfig {
                voters: BTreeMap::from([(node_id, address.clone())]),
                controller_listener: Some(local),
                local_controller: true,
                controller_address: address,
                inter_broker_listener: advertised
                    .first()
                    .map(|l| l.name.clone())
                    .unwrap_or_default(),
                ..ClusterConfig::default()
            },
        );
    }
    let roles: Vec<&str> = raw
        .get("process.roles")
        .map_or("", |s| s)
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let combined = roles.len() == 2 && roles.contains(&"broker") && roles.contains(&"controller");
    let broker_only = roles == ["broker"];
    if !combined && !broker_only {
        return Err(err(
            "process.roles",
            format!(
                "must be 'broker,controller' or 'broker' when controller.quorum.voters is set (controller-only nodes are not supported yet), not '{}'",
                roles.join(",")
            ),
        ));
    }
    if combined && !voters.contains_key(&node_id) {
        return Err(err(
            "controller.quorum.voters",
            format!(
                "node.id {node_id} is not one of the voters {:?}; a broker,controller node must be a voter",
                voters.keys().collect::<Vec<_>>()
            ),
        ));
    }
    if broker_only && voters.contains_key(&node_id) {
        return Err(err(
            "process.roles",
            format!("node.id {node_id} is a voter in controller.quorum.voters, so it must be 'broker,controller'"),
        ));
    }
    if raw.get("cluster.id").is_none_or(|c| c.trim().is_empty()) {
        return Err(err(
            "cluster.id",
            "must be set when controller.quorum.voters is set",
        ));
    }
    let names: Vec<&str> = raw
        .get("controller.listener.names")
        .map_or("", |s| s)
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let Some(name) = names.first() else {
        return Err(err(
            "controller.listener.names",
            "must name the quorum listener (one of listeners) when controller.quorum.voters is set",
        ));
    };
    let Some(pos) = listeners.iter().position(|l| l.name == *name) else {
        return Err(err(
            "controller.listener.names",
            format!("listener '{name}' is not in listeners"),
        ));
    };
    if listeners.len() < 2 {
        return Err(err(
            "listeners",
            "needs a Kafka listener besides the controller listener",
        ));
    }
    let controller = listeners.remove(pos);
    let wildcard = |h: &str| h.is_empty() || h == "0.0.0.0" || h == "::" || h == "[::]";
    let controller_address = advertised
        .iter()
        .find(|l| l.name == *name)
        .map(|l| format!("{}:{}", l.host, l.port));
    advertised.retain(|l| l.name != *name);
    if advertised.is_empty() {
        return Err(err(
            "advertised.listeners",
            "advertises only the controller listener",
        ));
    }
    let inter_broker_listener = match raw.get("inter.broker.listener.name") {
        Some(n) if !n.trim().is_empty() => {
            let n = n.trim().to_string();
            if !advertised.iter().any(|l| l.name == n) {
                return Err(err(
                    "inter.broker.listener.name",
                    format!("'{n}' is not an advertised listener"),
                ));
            }
            n
        }
        _ => advertised[0].name.clone(),
    };
    let controller_address = controller_address.unwrap_or_else(|| {
        let host = if wildcard(&controller.host) {
            advertised[0].host.clone()
        } else {
            controller.host.clone()
        };
        format!("{host}:{}", controller.port)
    });
    let inter_broker_sasl = super::inter_broker::sasl_settings(raw, &inter_broker_listener)?;
    with_tuning(
        raw,
        ClusterConfig {
            voters,
            inter_broker_sasl,
            controller_address,
            controller_listener: Some(controller),
            inter_broker_listener,
            ..ClusterConfig::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_listeners;

    fn resolve_with(extra: &[(&str, &str)]) -> Result<ClusterConfig, ConfigError> {
        let mut raw: BTreeMap<String, String> = [
            ("controller.quorum.voters", "1@127.0.0.1:9093"),
            ("process.roles", "broker,controller"),
            ("controller.listener.names", "CONTROLLER"),
            ("cluster.id", "c"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            raw.insert(k.to_string(), v.to_string());
        }
        let mut listeners = parse_listeners(
            "listeners",
            "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
        )?;
        let mut advertised = listeners.clone();
        resolve(&raw, 1, &mut listeners, &mut advertised)
    }

    #[test]
    fn without_voters_the_node_is_the_only_voter_on_a_loopback_listener() {
        let mut listeners = parse_listeners("listeners", "PLAINTEXT://0.0.0.0:9092").unwrap();
        let mut advertised = listeners.clone();
        let mut c = resolve(&BTreeMap::new(), 3, &mut listeners, &mut advertised).unwrap();
        assert!(c.local_controller);
        let l = c.controller_listener.clone().unwrap();
        assert_eq!((l.host.as_str(), l.port), ("127.0.0.1", 0));
        assert_eq!(listeners.len(), 1, "client listeners are left alone");
        assert_eq!(advertised.len(), 1);
        assert_eq!(c.inter_broker_listener, "PLAINTEXT");
        assert_eq!(c.broker_heartbeat_interval_ms, 2_000);
        c.local_controller_bound("127.0.0.1:40000".parse().unwrap());
        assert_eq!(
            c.voters,
            BTreeMap::from([(3, "127.0.0.1:40000".to_string())])
        );
        assert_eq!(c.controller_address, "127.0.0.1:40000");
        let configured = resolve_with(&[]).unwrap();
        assert!(!configured.local_controller);
    }

    #[test]
    fn leader_rebalance_keys_default_as_in_kafka_and_parse() {
        let c = resolve_with(&[]).unwrap();
        assert!(c.auto_leader_rebalance_enable);
        assert_eq!(c.leader_imbalance_check_interval_seconds, 300);
        assert_eq!(c.leader_imbalance_per_broker_percentage, 10);
        let c = resolve_with(&[
            ("auto.leader.rebalance.enable", "false"),
            ("leader.imbalance.check.interval.seconds", "2"),
            ("leader.imbalance.per.broker.percentage", "0"),
        ])
        .unwrap();
        assert!(!c.auto_leader_rebalance_enable);
        assert_eq!(c.leader_imbalance_check_interval_seconds, 2);
        assert_eq!(c.leader_imbalance_per_broker_percentage, 0);
        for bad in [
            ("leader.imbalance.check.interval.seconds", "0"),
            ("leader.imbalance.per.broker.percentage", "101"),
            ("auto.leader.rebalance.enable", "yes"),
        ] {
            assert_eq!(resolve_with(&[bad]).unwrap_err().key, bad.0);
        }
    }
}
